// Gradient norms and clipping (declared in optimizer.h), as torch.nn.utils' clip_grad_norm_ / clip_grad_value_.
#include "qkv/optim/optimizer.h"

#include <qkv/core/dispatch.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace qkv {

// Calls f(data, n) with every defined gradient, typed as its float type.
template <class F>
void each_grad(const std::vector<Tensor>& params, F&& f) {
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    dispatch("optimizer", g.dtype(), [&](auto tag) { f(g.data<decltype(tag)>(), g.numel()); });
  }
}

double grad_sq_sum(const std::vector<Tensor>& params) {
  double sq = 0.0;
  each_grad(params, [&](auto* pg, std::int64_t n) {
    using T = std::remove_pointer_t<decltype(pg)>;
    const T* __restrict g = pg;
    // Each tensor's sum of squares in its own precision (vectorised, as torch's float32 norm), then in double.
    T part = 0;
#pragma omp simd reduction(+ : part)
    for (std::int64_t i = 0; i < n; ++i) part += g[i] * g[i];
    sq += double(part);
  });
  return sq;
}

double grad_norm(const std::vector<Tensor>& params) { return std::sqrt(grad_sq_sum(params)); }

void clip_to_norm(const std::vector<Tensor>& params, double norm, double max_norm) {
  QKV_CHECK(max_norm > 0.0, "clip_grad_norm: invalid max_norm = {} (must be > 0)", max_norm);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_grads(params, coef);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  QKV_CHECK(max_norm > 0.0, "clip_grad_norm: invalid max_norm = {} (must be > 0)", max_norm);
  const double norm = grad_norm(params);
  clip_to_norm(params, norm, max_norm);
  return norm;
}

void scale_grads(const std::vector<Tensor>& params, double factor) {
  each_grad(params, [&](auto* pg, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) pg[i] *= static_cast<std::remove_pointer_t<decltype(pg)>>(factor);
  });
}

void clip_grad_value(const std::vector<Tensor>& params, double clip_value) {
  QKV_CHECK(clip_value > 0.0, "clip_grad_value: invalid clip_value = {} (must be > 0)", clip_value);
  each_grad(params, [&](auto* pg, std::int64_t n) {
    using T = std::remove_pointer_t<decltype(pg)>;
    for (std::int64_t i = 0; i < n; ++i) pg[i] = std::clamp(pg[i], T(-clip_value), T(clip_value));
  });
}

}  // namespace qkv
