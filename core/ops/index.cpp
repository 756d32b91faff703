// Indexing ops: gather, index_select, flip and stack, with torch's shapes and rules. Indices are int64 and must
// lie in [0, size) (torch rejects negative ones here too); each backward scatters or flips the gradient back.
#include "qkv/core/ops/kernel.h"

namespace qkv {
namespace {

void check_index(const char* op, const Tensor& index) {
  QKV_CHECK(index.dtype() == kInt64, "{}: index must be an int64 tensor, got {} (shape {})", op,
            dtype_name(index.dtype()), index.shape().str());
}

std::int64_t checked(const char* op, std::int64_t v, std::int64_t i, std::int64_t size, int dim) {
  QKV_CHECK(v >= 0 && v < size, "{}: index {} at position {} is out of range for dim {} of size {} (expected 0 to {})",
            op, v, i, dim, size, size - 1);
  return v;
}

// gather's forward (scatter = false: out[i] = src[at(i)]) and backward (scatter = true: dst[at(i)] += g[i]).
void gather_scatter(const Tensor& src_or_dst, const Tensor& index, const Tensor& flat, int d, bool scatter) {
  const Tensor& big = src_or_dst;
  Shape st = contiguous_strides(big.shape());
  const std::int64_t along = st[d];
  st[d] = 0;
  const std::int64_t* pi = index.data<std::int64_t>();
  const std::int64_t size = big.size(d);
  kernel::dispatch<Dtypes::Any>("gather", big.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* pb = big.data<T>();
    T* pf = flat.data<T>();
    kernel::for_each2(index.shape(), st, contiguous_strides(index.shape()),
                      [&](std::int64_t i, std::int64_t ob, std::int64_t oi) {
                        const std::int64_t at = ob + checked("gather", pi[oi], i, size, d) * along;
                        if (scatter) pb[at] += pf[i];
                        else pf[i] = pb[at];
                      });
  });
}

}  // namespace

Tensor gather(const Tensor& a, int dim, const Tensor& index) {
  const kernel::OpScope op_scope("gather", {&a, &index});
  check_index("gather", index);
  const int d = normalize_dim("gather", dim, a.dim());
  bool fits = index.dim() == a.dim();
  for (int j = 0; fits && j < a.dim(); ++j) fits = j == d || index.size(j) <= a.size(j);
  QKV_CHECK(fits, "gather: index of shape {} does not fit input of shape {} (same rank, and no larger in every dim "
            "but {})", index.shape().str(), a.shape().str(), d);
  Tensor out = Tensor::empty(index.shape(), a.dtype());
  gather_scatter(a, index, out, d, false);
  if (any_requires_grad({&a}))
    record(out, "gather", {&a}, [as = a.shape(), index, d](const Tensor& g) -> Grads {
      Tensor da = Tensor::zeros(as, g.dtype());
      gather_scatter(da, index, g, d, true);
      return {da};
    }, {&index});
  return out;
}

Tensor index_select(const Tensor& a, int dim, const Tensor& index) {
  const kernel::OpScope op_scope("index_select", {&a, &index});
  check_index("index_select", index);
  QKV_CHECK(index.dim() <= 1, "index_select: index must be 0-D or 1-D, got shape {}", index.shape().str());
  const int d = normalize_dim("index_select", dim, a.dim());
  const auto sp = kernel::split_at(a.shape(), d);
  const std::int64_t n = index.numel(), size = a.dim() == 0 ? 1 : a.size(d);
  std::vector<std::int64_t> rows(static_cast<std::size_t>(n));
  const std::int64_t* pi = index.data<std::int64_t>();
  for (std::int64_t j = 0; j < n; ++j) rows[static_cast<std::size_t>(j)] = checked("index_select", pi[j], j, size, d);
  Shape s = a.shape();
  if (s.rank() > 0) s[d] = n;
  // (outer, size, inner) -> (outer, n, inner); backward adds rows back (an index may repeat).
  const auto copy_rows = [sp, rows, size](const Tensor& from, const Tensor& to, bool add) {
    kernel::dispatch<Dtypes::Any>("index_select", from.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* pf = from.data<T>();
      T* pt = to.data<T>();
      const std::int64_t n = static_cast<std::int64_t>(rows.size()), in = sp.inner;
      for (std::int64_t o = 0; o < sp.outer; ++o)
        for (std::int64_t j = 0; j < n; ++j) {
          const std::int64_t r = rows[static_cast<std::size_t>(j)];
          for (std::int64_t k = 0; k < in; ++k) {
            if (add) pt[(o * size + r) * in + k] += pf[(o * n + j) * in + k];
            else pt[(o * n + j) * in + k] = pf[(o * size + r) * in + k];
          }
        }
    });
  };
  Tensor out = Tensor::empty(s, a.dtype());
  copy_rows(a, out, false);
  if (any_requires_grad({&a}))
    record(out, "index_select", {&a}, [as = a.shape(), copy_rows](const Tensor& g) -> Grads {
      Tensor da = Tensor::zeros(as, g.dtype());
      copy_rows(g, da, true);
      return {da};
    });
  return out;
}

Tensor flip(const Tensor& a, const std::vector<int>& dims) {
  const kernel::OpScope op_scope("flip", {&a});
  Shape st = contiguous_strides(a.shape());
  std::int64_t base = 0;
  std::vector<bool> seen(static_cast<std::size_t>(std::max(a.dim(), 1)), false);
  for (int dim : dims) {
    const int d = normalize_dim("flip", dim, a.dim());
    QKV_CHECK(!seen[static_cast<std::size_t>(d)], "flip: dim {} appears twice in the dims given", d);
    seen[static_cast<std::size_t>(d)] = true;
    if (a.dim() == 0 || a.size(d) == 0) continue;
    base += (a.size(d) - 1) * st[d];
    st[d] = -st[d];
  }
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  kernel::dispatch<Dtypes::Any>("flip", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>() + base;
    T* po = out.data<T>();
    kernel::for_each2(a.shape(), st, st, [&](std::int64_t i, std::int64_t oa, std::int64_t) { po[i] = pa[oa]; });
  });
  if (any_requires_grad({&a}))
    record(out, "flip", {&a}, [dims](const Tensor& g) -> Grads { return {flip(g, dims)}; });
  return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int dim) {
  QKV_CHECK(!tensors.empty(), "stack: expected a non-empty list of tensors");
  std::vector<Tensor> parts;
  parts.reserve(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    QKV_CHECK(tensors[i].defined(), "stack: tensor {} of {} is undefined", i, tensors.size());
    QKV_CHECK(tensors[i].shape() == tensors[0].shape(), "stack: tensor {} has shape {}, expected {} (every tensor "
              "the same shape)", i, tensors[i].shape().str(), tensors[0].shape().str());
    parts.push_back(unsqueeze(tensors[i], normalize_dim("stack", dim, tensors[0].dim() + 1)));
  }
  return concat(parts, normalize_dim("stack", dim, tensors[0].dim() + 1));
}

}  // namespace qkv
