// Reductions. sum and mean are sum_to (the broadcast-reverse in elementwise.cpp) onto a keepdim shape, so they
// share its backward; max walks (outer, n, inner) and sends the gradient to the first maximal element.
#include "qkv/core/ops/kernel.h"

#include <algorithm>
#include <cmath>

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

  kernel::dispatch("sum", a.dtype(), [](auto) {});
  const auto [keep, drop] = reduced_shapes("sum", a.shape(), dims);
  Tensor out = sum_to(a, keep);
  return keepdim ? out : reshape(out, drop);
}

Tensor mean(const Tensor& a) {
  const kernel::OpScope op_scope("mean", {&a});

  QKV_CHECK(a.numel() > 0, "mean: tensor of shape {} is empty", a.shape().str());
  return mul(sum(a), 1.0 / static_cast<double>(a.numel()));
}

Tensor mean(const Tensor& a, const std::vector<int>& dims, bool keepdim) {
  const kernel::OpScope op_scope("mean", {&a});

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
  return reshape(max(reshape(a, Shape{-1}), 0), Shape{});
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
