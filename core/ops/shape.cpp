// Shape ops: reshape shares storage; the others copy into a fresh contiguous tensor. They move bytes, so they
// work for every dtype (int64 ids included); only floating tensors carry gradients.
#include "qkv/core/ops/kernel.h"

#include <cstring>
#include <numeric>

namespace qkv {

Tensor reshape(const Tensor& a, const Shape& shape) {
  const kernel::OpScope op_scope("reshape", {&a});

  Shape s = shape;
  int infer = -1;
  std::int64_t known = 1;
  for (int d = 0; d < s.rank(); ++d) {
    if (s[d] == -1) {
      QKV_CHECK(infer < 0, "reshape: only one dim can be -1, got shape {}", shape.str());
      infer = d;
    } else {
      QKV_CHECK(!__builtin_mul_overflow(known, s[d], &known),
                "reshape: shape {}: the element count overflows int64 (more than 2^63 - 1 elements)", shape.str());
    }
  }
  if (infer >= 0) {
    QKV_CHECK(known != 0 && a.numel() % known == 0, "reshape: shape {} is invalid for input of shape {} ({} elements)",
              shape.str(), a.shape().str(), a.numel());
    s[infer] = a.numel() / known;
  }
  QKV_CHECK(s.numel() == a.numel(), "reshape: shape {} is invalid for input of shape {} ({} elements)", shape.str(),
            a.shape().str(), a.numel());
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = s;
  impl->dtype = a.dtype();
  impl->storage = a.impl()->storage;
  Tensor out(std::move(impl));
  if (any_requires_grad({&a}))
    record(out, "reshape", {&a}, [as = a.shape()](const Tensor& g) -> Grads { return {reshape(g, as)}; });
  return out;
}

Tensor unsqueeze(const Tensor& a, int dim) {
  const kernel::OpScope op_scope("unsqueeze", {&a});

  Shape s = a.shape();
  s.insert(normalize_dim("unsqueeze", dim, a.dim() + 1), 1);
  return reshape(a, s);
}

Tensor permute(const Tensor& a, const std::vector<int>& dims) {
  const kernel::OpScope op_scope("permute", {&a});

  const int r = a.dim();
  QKV_CHECK(static_cast<int>(dims.size()) == r, "permute: {} dims given for a tensor of rank {} (shape {})",
            dims.size(), r, a.shape().str());
  std::vector<int> perm(dims.size());
  std::vector<bool> seen(dims.size(), false);
  const Shape in_strides = contiguous_strides(a.shape());
  Shape out_shape, read_strides;
  for (int i = 0; i < r; ++i) {
    perm[i] = normalize_dim("permute", dims[i], r);
    QKV_CHECK(!seen[perm[i]], "permute: dim {} appears twice", perm[i]);
    seen[perm[i]] = true;
    out_shape.push_back(a.shape()[perm[i]]);
    read_strides.push_back(in_strides[perm[i]]);
  }
  Tensor out = Tensor::empty(out_shape, a.dtype());
  kernel::dispatch<Dtypes::Any>("shape", a.dtype(), [&](auto tag) {
    using W = decltype(tag);
    const W* pa = static_cast<const W*>(a.raw_data());
    W* po = static_cast<W*>(out.raw_data());
    kernel::for_each2(out_shape, read_strides, read_strides,
                      [&](std::int64_t i, std::int64_t o, std::int64_t) { po[i] = pa[o]; });
  });
  if (any_requires_grad({&a})) {
    std::vector<int> inverse(perm.size());
    for (int i = 0; i < r; ++i) inverse[perm[i]] = i;
    record(out, "permute", {&a}, [inverse](const Tensor& g) -> Grads { return {permute(g, inverse)}; });
  }
  return out;
}

Tensor transpose(const Tensor& a, int dim0, int dim1) {
  const kernel::OpScope op_scope("transpose", {&a});

  std::vector<int> dims(static_cast<std::size_t>(a.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_dim("transpose", dim0, a.dim())], dims[normalize_dim("transpose", dim1, a.dim())]);
  return permute(a, dims);
}

Tensor concat(const std::vector<Tensor>& tensors, int dim) {
  for (std::size_t i = 0; i < tensors.size(); ++i)
    QKV_CHECK(tensors[i].defined(), "concat: tensor {} of {} is undefined", i, tensors.size());
  QKV_CHECK(!tensors.empty(), "concat: expected a non-empty list of tensors");
  const Tensor& first = tensors[0];
  const int d = normalize_dim("concat", dim, first.dim());
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    kernel::check_same_dtype("concat", first, t);
    bool ok = t.dim() == first.dim();
    for (int j = 0; ok && j < t.dim(); ++j) ok = j == d || t.shape()[j] == first.shape()[j];
    QKV_CHECK(ok, "concat: tensor {} has shape {}, expected {} in every dim but {}", i, t.shape().str(),
              first.shape().str(), d);
    out_shape[d] += t.shape()[d];
  }
  Tensor out = Tensor::empty(out_shape, first.dtype());
  const auto split = kernel::split_at(out_shape, d);
  const std::size_t isz = itemsize(first.dtype());
  auto* po = static_cast<char*>(out.raw_data());
  std::int64_t col = 0;  // running offset along d
  for (const Tensor& t : tensors) {
    const std::int64_t chunk = t.shape()[d] * split.inner;
    const auto* pt = static_cast<const char*>(t.raw_data());
    for (std::int64_t o = 0; o < split.outer; ++o)
      std::memcpy(po + (o * split.n * split.inner + col * split.inner) * isz, pt + o * chunk * isz,
                  static_cast<std::size_t>(chunk) * isz);
    col += t.shape()[d];
  }
  if (any_requires_grad(tensors)) {
    std::vector<std::int64_t> sizes;
    for (const Tensor& t : tensors) sizes.push_back(t.shape()[d]);
    record(out, "concat", tensors, [sizes, d](const Tensor& g) {
      Grads grads;
      std::int64_t start = 0;
      for (auto s : sizes) {
        grads.push_back(narrow(g, d, start, s));
        start += s;
      }
      return grads;
    });
  }
  return out;
}

Tensor narrow(const Tensor& a, int dim, std::int64_t start, std::int64_t length) {
  const kernel::OpScope op_scope("narrow", {&a});

  const int d = normalize_dim("narrow", dim, a.dim());
  const std::int64_t size = a.dim() == 0 ? 1 : a.shape()[d];
  QKV_CHECK(start >= 0 && length >= 0 && start + length <= size,
            "narrow: range [{}, {}) is out of bounds for dim {} of size {} (shape {})", start, start + length, d, size,
            a.shape().str());
  Shape out_shape = a.shape();
  out_shape[d] = length;
  Tensor out = Tensor::empty(out_shape, a.dtype());
  const auto split = kernel::split_at(a.shape(), d);
  const std::size_t isz = itemsize(a.dtype());
  const auto* pa = static_cast<const char*>(a.raw_data());
  auto* po = static_cast<char*>(out.raw_data());
  for (std::int64_t o = 0; o < split.outer; ++o)
    std::memcpy(po + o * length * split.inner * isz, pa + (o * split.n + start) * split.inner * isz,
                static_cast<std::size_t>(length * split.inner) * isz);
  if (any_requires_grad({&a}))
    record(out, "narrow", {&a}, [as = a.shape(), d, start, length](const Tensor& g) -> Grads {
      // Scatter g back into zeros of a's shape.
      Tensor da = Tensor::zeros(as, g.dtype());
      const auto sp = kernel::split_at(as, d);
      const std::size_t sz = itemsize(g.dtype());
      for (std::int64_t o = 0; o < sp.outer; ++o)
        std::memcpy(static_cast<char*>(da.raw_data()) + (o * sp.n + start) * sp.inner * sz,
                    static_cast<const char*>(g.raw_data()) + o * length * sp.inner * sz,
                    static_cast<std::size_t>(length * sp.inner) * sz);
      return {da};
    });
  return out;
}

Tensor slice(const Tensor& a, int dim, std::int64_t start, std::int64_t end) {
  const kernel::OpScope op_scope("slice", {&a});

  const int d = normalize_dim("slice", dim, a.dim());
  const std::int64_t size = a.shape()[d];
  if (start < 0) start += size;
  if (end < 0) end += size;
  start = std::clamp<std::int64_t>(start, 0, size);  // like Python slicing: out-of-range ends clamp
  end = std::clamp<std::int64_t>(end, start, size);
  return narrow(a, d, start, end - start);
}

}  // namespace qkv

namespace qkv {

Tensor eye(std::int64_t n, std::int64_t m, DType dtype) {
  if (m < 0) m = n;
  QKV_CHECK(n >= 0, "eye: n must be >= 0, got {}", n);
  Tensor out = Tensor::zeros({n, m}, dtype);
  for (std::int64_t i = 0; i < std::min(n, m); ++i)
    kernel::dispatch<Dtypes::Any>("eye", dtype, [&](auto tag) { out.data<decltype(tag)>()[i * m + i] = 1; });
  return out;
}

namespace {
// tril (lower = true) or triu: a where the 0/1 mask of its last two dims keeps j - i <= k (tril) or >= k, else 0.
Tensor triangle(const char* op, const Tensor& a, std::int64_t k, bool lower) {
  const kernel::OpScope op_scope(op, {&a});
  QKV_CHECK(a.dim() >= 2, "{}: expected a tensor of at least 2 dims, got shape {}", op, a.shape().str());
  const std::int64_t rows = a.size(-2), cols = a.size(-1);
  Tensor mask = Tensor::zeros({rows, cols}, a.dtype());
  kernel::dispatch<Dtypes::Any>(op, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* pm = mask.data<T>();
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j) pm[i * cols + j] = (lower ? j - i <= k : j - i >= k) ? T(1) : T(0);
  });
  return where(mask, a, Tensor::zeros(Shape{}, a.dtype()));  // the gradient is masked the same way
}
}  // namespace

Tensor tril(const Tensor& a, std::int64_t k) { return triangle("tril", a, k, true); }
Tensor triu(const Tensor& a, std::int64_t k) { return triangle("triu", a, k, false); }

}  // namespace qkv
