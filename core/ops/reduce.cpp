// Reductions. sum and mean are sum_to (the broadcast-reverse in elementwise.cpp) onto a keepdim shape, so they
// share its backward; max walks (outer, n, inner) and sends the gradient to the first maximal element.
#include "qkv/core/ops/kernel.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace qkv {
namespace {

// a's shape with each of `dims` set to 1, plus the same without those dims.
std::pair<Shape, Shape> reduced_shapes(const char* op, const Shape& s, const std::vector<int>& dims) {
  Shape keep = s;
  std::vector<bool> reduce(static_cast<std::size_t>(s.rank()), false);
  for (int d : dims) {
    const int nd = normalize_dim(op, d, s.rank());
    QKV_CHECK(!reduce[nd], "{}: dim {} appears twice", op, nd);
    reduce[nd] = true;
    keep[nd] = 1;
  }
  Shape drop;
  for (int d = 0; d < s.rank(); ++d)
    if (!reduce[d]) drop.push_back(s[d]);
  return {keep, drop};
}

}  // namespace

Tensor sum(const Tensor& a) {
  const kernel::OpScope op_scope("sum", {&a});
  return sum_to(a, Shape{});
}

Tensor sum(const Tensor& a, const std::vector<int>& dims, bool keepdim) {
  const kernel::OpScope op_scope("sum", {&a});

  kernel::dispatch<Dtypes::Any>("sum", a.dtype(), [](auto) {});  // int64 sums stay int64, as torch's
  const auto [keep, drop] = reduced_shapes("sum", a.shape(), dims);
  Tensor out = sum_to(a, keep);
  return keepdim ? out : reshape(out, drop);
}

Tensor mean(const Tensor& a) {
  const kernel::OpScope op_scope("mean", {&a});
  kernel::dispatch("mean", a.dtype(), [](auto) {});  // torch too refuses an int64 mean
  QKV_CHECK(a.numel() > 0, "mean: tensor of shape {} is empty", a.shape().str());
  return mul(sum(a), 1.0 / static_cast<double>(a.numel()));
}

Tensor mean(const Tensor& a, const std::vector<int>& dims, bool keepdim) {
  const kernel::OpScope op_scope("mean", {&a});
  kernel::dispatch("mean", a.dtype(), [](auto) {});
  Tensor s = sum(a, dims, keepdim);
  QKV_CHECK(s.numel() > 0 && a.numel() > 0, "mean: tensor of shape {} is empty", a.shape().str());
  return mul(s, static_cast<double>(s.numel()) / static_cast<double>(a.numel()));
}

namespace {
// Values and flat source offsets of the maxima along `dim`.
std::pair<Tensor, std::vector<std::int64_t>> max_along(const char* op, const Tensor& a, int dim, bool keepdim) {
  const int d = normalize_dim(op, dim, a.dim());
  const auto sp = kernel::split_at(a.shape(), d);
  QKV_CHECK(sp.n > 0, "{}: cannot reduce over dim {} of size 0 (shape {})", op, d, a.shape().str());
  const auto [keep, drop] = reduced_shapes(op, a.shape(), {d});
  Tensor out = Tensor::empty(keepdim ? keep : drop, a.dtype());
  std::vector<std::int64_t> where(static_cast<std::size_t>(sp.outer * sp.inner));
  kernel::dispatch(op, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    for (std::int64_t o = 0; o < sp.outer; ++o)
      for (std::int64_t i = 0; i < sp.inner; ++i) {
        std::int64_t best = o * sp.n * sp.inner + i;
        for (std::int64_t j = 1; j < sp.n; ++j) {
          const std::int64_t at = (o * sp.n + j) * sp.inner + i;
          if (pa[at] > pa[best] || (std::isnan(pa[at]) && !std::isnan(pa[best]))) best = at;  // NaN wins, like torch
        }
        po[o * sp.inner + i] = pa[best];
        where[static_cast<std::size_t>(o * sp.inner + i)] = best;
      }
  });
  return {out, where};
}
}  // namespace

Tensor max(const Tensor& a, int dim, bool keepdim) {
  const kernel::OpScope op_scope("max", {&a});

  auto [out, where] = max_along("max", a, dim, keepdim);
  if (any_requires_grad({&a}))
    record(out, "max", {&a}, [as = a.shape(), where = std::move(where)](const Tensor& g) -> Grads {
      Tensor da = Tensor::zeros(as, g.dtype());
      kernel::dispatch("max_backward", g.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* pg = g.data<T>();
        T* pd = da.data<T>();
        for (std::size_t i = 0; i < where.size(); ++i) pd[where[i]] += pg[i];
      });
      return {da};
    });
  return out;
}

Tensor max(const Tensor& a) {
  const kernel::OpScope op_scope("max", {&a});

  QKV_CHECK(a.numel() > 0, "max: tensor of shape {} is empty", a.shape().str());
  Tensor out;
  {
    NoGradGuard values_only;
    out = reshape(max(reshape(a, Shape{-1}), 0), Shape{});
  }
  // d max / d a_i = [a_i = max] / #{j : a_j = max}: ties share the gradient evenly, as torch's
  // evenly_distribute_backward (a NaN maximum: the NaNs share it). max(a, dim) instead picks one index, as torch's.
  if (any_requires_grad({&a}))
    record(out, "max", {&a}, [a = a.detach(), m = out.detach()](const Tensor& g) -> Grads {
      const bool nan = std::isnan(m.item());
      const Tensor hit = nan ? ne(a, a) : eq(a, m);
      return {where(hit, broadcast_to(g / sum(hit.to(g.dtype())), a.shape()), Tensor::zeros(a.shape(), g.dtype()))};
    }, {&a});
  return out;
}

Tensor argmax(const Tensor& a, int dim, bool keepdim) {
  const kernel::OpScope op_scope("argmax", {&a});

  const int d = normalize_dim("argmax", dim, a.dim());
  const auto sp = kernel::split_at(a.shape(), d);
  auto [values, where] = max_along("argmax", a, d, keepdim);
  Tensor out = Tensor::empty(values.shape(), kInt64);
  auto* po = out.data<std::int64_t>();
  for (std::size_t i = 0; i < where.size(); ++i) po[i] = (where[i] / sp.inner) % sp.n;
  return out;
}

}  // namespace qkv

namespace qkv {

namespace {
std::vector<int> all_dims(const Tensor& a) {  // 0, 1, ..., rank - 1: a whole-tensor reduction
  std::vector<int> dims(static_cast<std::size_t>(a.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  return dims;
}
}  // namespace

// ---- statistics: composites of the differentiable ops above, so their gradients come from those ----

Tensor min(const Tensor& a, int dim, bool keepdim) {
  const kernel::OpScope op_scope("min", {&a});
  return neg(max(neg(a), dim, keepdim));
}

Tensor min(const Tensor& a) {
  const kernel::OpScope op_scope("min", {&a});
  QKV_CHECK(a.numel() > 0, "min: tensor of shape {} is empty", a.shape().str());
  return neg(max(neg(a)));
}

Tensor var(const Tensor& a, const std::vector<int>& dims, std::int64_t correction, bool keepdim) {
  const kernel::OpScope op_scope("var", {&a});
  kernel::dispatch("var", a.dtype(), [](auto) {});
  const auto [keep, drop] = reduced_shapes("var", a.shape(), dims);
  const std::int64_t n = keep.numel() == 0 ? 0 : a.numel() / keep.numel();
  QKV_CHECK(correction >= 0, "var: correction must be >= 0, got {}", correction);
  const Tensor centred = a - mean(a, dims, /*keepdim=*/true);
  // n <= correction: torch gives inf or NaN (a division by zero or less); so does this.
  const Tensor out = sum(centred * centred, dims, keepdim) / static_cast<double>(n - correction);
  return out;
}

Tensor var(const Tensor& a, std::int64_t correction) {
  const kernel::OpScope op_scope("var", {&a});
  return var(a, all_dims(a), correction, false);
}

Tensor std(const Tensor& a, const std::vector<int>& dims, std::int64_t correction, bool keepdim) {
  const kernel::OpScope op_scope("std", {&a});
  return sqrt(var(a, dims, correction, keepdim));
}

Tensor std(const Tensor& a, std::int64_t correction) {
  const kernel::OpScope op_scope("std", {&a});
  return sqrt(var(a, correction));
}

Tensor logsumexp(const Tensor& a, int dim, bool keepdim) {
  const kernel::OpScope op_scope("logsumexp", {&a});
  const int d = normalize_dim("logsumexp", dim, a.dim());
  QKV_CHECK(a.size(d) > 0, "logsumexp: cannot reduce over dim {} of size 0 (shape {})", d, a.shape().str());
  // Shifted by the (detached) maximum so exp never overflows. An infinite maximum shifts by 0, as torch's: a row
  // that is all -inf stays -inf, and one holding +inf is +inf (shifting by +inf would make inf - inf = NaN).
  Tensor m = max(a.detach(), d, /*keepdim=*/true);
  m = where(eq(abs(m), std::numeric_limits<double>::infinity()), Tensor::zeros(m.shape(), m.dtype()), m);
  const Tensor out = log(sum(exp(a - m), {d}, /*keepdim=*/true)) + m;
  return keepdim ? out : reshape(out, reduced_shapes("logsumexp", a.shape(), {d}).second);
}

Tensor cumsum(const Tensor& a, int dim) {
  const kernel::OpScope op_scope("cumsum", {&a});
  const int d = normalize_dim("cumsum", dim, a.dim());
  const auto sp = kernel::split_at(a.shape(), d);
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  kernel::dispatch("cumsum", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    kernel::for_each_line(sp, [&](std::int64_t base, std::int64_t st) {
      T run = 0;
      for (std::int64_t j = 0; j < sp.n; ++j) po[base + j * st] = run += pa[base + j * st];
    });
  });
  if (any_requires_grad({&a}))  // each input reaches every later output: the reversed running sum of g
    record(out, "cumsum", {&a}, [d](const Tensor& g) -> Grads { return {flip(cumsum(flip(g, {d}), d), {d})}; });
  return out;
}

Tensor norm(const Tensor& a, double p, const std::vector<int>& dims, bool keepdim) {
  const kernel::OpScope op_scope("norm", {&a});
  QKV_CHECK(std::isfinite(p) && p >= 1, "norm: p must be a finite number >= 1, got {}", p);
  const Tensor x = a.detach();
  const Tensor kept = p == 2 ? sqrt(sum(x * x, dims, true)) : pow(sum(pow(abs(x), p), dims, true), 1.0 / p);
  const auto [keep, drop] = reduced_shapes("norm", a.shape(), dims);
  Tensor out = keepdim ? kept.clone() : reshape(kept, drop).clone();
  if (any_requires_grad({&a}))  // d|x|_p / dx = sign(x) |x|^(p-1) / |x|_p^(p-1), and 0 where the norm is 0 (torch's)
    record(out, "norm", {&a}, [x, kept, p, keep = keep](const Tensor& g) -> Grads {
      const Tensor gk = reshape(g, keep);
      const Tensor scale = where(eq(kept, 0.0), Tensor::zeros(kept.shape(), kept.dtype()), gk / pow(kept, p - 1));
      const Tensor dir = p == 1 ? sign(x) : sign(x) * pow(abs(x), p - 1);
      return {dir * scale};
    }, {&a});
  return out;
}

Tensor norm(const Tensor& a, double p) {
  const kernel::OpScope op_scope("norm", {&a});
  return norm(a, p, all_dims(a), false);
}

}  // namespace qkv
