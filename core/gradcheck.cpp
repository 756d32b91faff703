#include "qkv/core/gradcheck.h"

#include "qkv/core/autograd.h"

#include <cmath>

namespace qkv {

std::string gradcheck_error(const GradcheckFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  for (std::size_t i = 0; i < inputs.size(); ++i)
    QKV_CHECK(!inputs[i].requires_grad() || inputs[i].dtype() == kFloat64,
              "gradcheck: input {} requires grad but is {}; finite differences need float64", i,
              dtype_name(inputs[i].dtype()));
  const Tensor out = f(inputs);
  QKV_CHECK(out.dtype() == kFloat64, "gradcheck: the function returned {}, expected float64", dtype_name(out.dtype()));
  const std::int64_t n_out = out.numel();

  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    const std::int64_t n_in = x.numel();
    // analytic[o * n_in + j] = d out_o / d x_j, one backward per output element through a retained graph.
    std::vector<double> analytic(static_cast<std::size_t>(n_out * n_in), 0.0);
    for (std::int64_t o = 0; o < n_out && out.requires_grad(); ++o) {
      for (const Tensor& t : inputs)
        if (t.requires_grad()) t.zero_grad();
      Tensor seed = Tensor::zeros(out.shape(), kFloat64);
      seed.data<double>()[o] = 1.0;
      out.backward(seed, /*retain_graph=*/true);
      if (x.grad().defined()) {
        const double* g = x.grad().data<double>();
        for (std::int64_t j = 0; j < n_in; ++j) analytic[static_cast<std::size_t>(o * n_in + j)] = g[j];
      }
    }
    // numeric: perturb each input element both ways in place.
    double* px = x.data<double>();
    for (std::int64_t j = 0; j < n_in; ++j) {
      const double v = px[j];
      std::vector<double> plus, minus;
      {
        NoGradGuard no_grad;
        px[j] = v + opt.eps;
        plus = f(inputs).to_vector();
        px[j] = v - opt.eps;
        minus = f(inputs).to_vector();
        px[j] = v;
      }
      for (std::int64_t o = 0; o < n_out; ++o) {
        const double num = (plus[static_cast<std::size_t>(o)] - minus[static_cast<std::size_t>(o)]) / (2 * opt.eps);
        const double ana = analytic[static_cast<std::size_t>(o * n_in + j)];
        if (!(std::abs(ana - num) <= opt.atol + opt.rtol * std::abs(num)))
          return fmt::format("gradcheck: input {} (shape {}), output element {}, input element {}: analytic {:.10g} vs "
                             "numeric {:.10g}",
                             i, x.shape().str(), o, j, ana, num);
      }
    }
  }
  for (const Tensor& t : inputs)
    if (t.requires_grad()) t.zero_grad();
  return {};
}

}  // namespace qkv
