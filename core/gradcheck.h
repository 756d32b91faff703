#pragma once
// gradcheck: the analytic Jacobian (one backward per output element) against central differences, with
// torch.autograd.gradcheck's defaults. Inputs must be float64; only those requiring grad are checked.
#include "qkv/core/tensor.h"

#include <functional>
#include <string>
#include <vector>

namespace qkv {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;

/// Empty when every Jacobian entry agrees (|analytic - numeric| <= atol + rtol |numeric|); otherwise a message
/// naming the first disagreeing input, output element, input element and both values.
std::string gradcheck_error(const GradcheckFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& opt = {});

/// True when gradcheck_error finds nothing.
inline bool gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& opt = {}) {
  return gradcheck_error(f, inputs, opt).empty();
}

}  // namespace qkv
