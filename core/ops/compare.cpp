// Comparisons, where, all and any. A comparison returns a 1/0 mask in the floating dtype of its operands
// (float32 for int64 ones), like torch's `(a == b).float()`, so `mean(eq(pred, y))` is an accuracy. Masks never
// require grad; where() passes gradients to the branch each element came from.
#include "qkv/core/ops/kernel.h"

namespace qkv {
namespace {

enum class Cmp { Eq, Ne, Lt, Le, Gt, Ge };

template <class T>
bool holds(Cmp c, T x, T y) {
  switch (c) {
    case Cmp::Eq: return x == y;
    case Cmp::Ne: return x != y;
    case Cmp::Lt: return x < y;
    case Cmp::Le: return x <= y;
    case Cmp::Gt: return x > y;
    case Cmp::Ge: return x >= y;
  }
  return false;
}

DType mask_dtype(DType d) { return is_floating(d) ? d : kFloat32; }

Tensor compare(const char* op, const Tensor& a, const Tensor& b, Cmp c) {
  const kernel::OpScope op_scope(op, {&a, &b});
  kernel::check_same_dtype(op, a, b);
  const Shape s = broadcast_shapes(op, a.shape(), b.shape());
  Tensor out = Tensor::empty(s, mask_dtype(a.dtype()));
  const Shape sa = kernel::broadcast_strides(a.shape(), s), sb = kernel::broadcast_strides(b.shape(), s);
  kernel::dispatch<Dtypes::Any>(op, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    kernel::dispatch(op, out.dtype(), [&](auto otag) {
      using O = decltype(otag);
      O* po = out.data<O>();
      kernel::for_each2(s, sa, sb, [&](std::int64_t i, std::int64_t oa, std::int64_t ob) {
        po[i] = holds(c, pa[oa], pb[ob]) ? O(1) : O(0);
      });
    });
  });
  return out;
}

Tensor compare(const char* op, const Tensor& a, double s, Cmp c) {
  const kernel::OpScope op_scope(op, {&a});
  return compare(op, a, Tensor::scalar(s, a.dtype()), c);
}

}  // namespace

Tensor eq(const Tensor& a, const Tensor& b) { return compare("eq", a, b, Cmp::Eq); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare("ne", a, b, Cmp::Ne); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare("lt", a, b, Cmp::Lt); }
Tensor le(const Tensor& a, const Tensor& b) { return compare("le", a, b, Cmp::Le); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare("gt", a, b, Cmp::Gt); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare("ge", a, b, Cmp::Ge); }
Tensor eq(const Tensor& a, double s) { return compare("eq", a, s, Cmp::Eq); }
Tensor ne(const Tensor& a, double s) { return compare("ne", a, s, Cmp::Ne); }
Tensor lt(const Tensor& a, double s) { return compare("lt", a, s, Cmp::Lt); }
Tensor le(const Tensor& a, double s) { return compare("le", a, s, Cmp::Le); }
Tensor gt(const Tensor& a, double s) { return compare("gt", a, s, Cmp::Gt); }
Tensor ge(const Tensor& a, double s) { return compare("ge", a, s, Cmp::Ge); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  const kernel::OpScope op_scope("where", {&cond, &a, &b});
  kernel::check_same_dtype("where", a, b);
  const Shape s = broadcast_shapes("where", broadcast_shapes("where", cond.shape(), a.shape()), b.shape());
  // Broadcasting the branches first lets broadcast_to's backward sum each gradient back to its own shape.
  const Tensor c = broadcast_to(ne(cond, 0.0), s).to(a.dtype());
  const Tensor x = broadcast_to(a, s), y = broadcast_to(b, s);
  Tensor out = Tensor::empty(s, a.dtype());
  kernel::dispatch<Dtypes::Any>("where", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pc = c.data<T>(), *px = x.data<T>(), *py = y.data<T>();
    T* po = out.data<T>();
    for (std::int64_t i = 0, n = out.numel(); i < n; ++i) po[i] = pc[i] != T(0) ? px[i] : py[i];
  });
  if (any_requires_grad({&x, &y}))
    record(out, "where", {&x, &y}, [c](const Tensor& g) -> Grads {
      const Tensor zero = Tensor::zeros(Shape{}, g.dtype());
      return {where(c, g, zero), where(c, zero, g)};
    });
  return out;
}

Tensor any(const Tensor& a) {
  const kernel::OpScope op_scope("any", {&a});
  if (a.numel() == 0) return Tensor::scalar(0.0, mask_dtype(a.dtype()));
  return max(ne(a, 0.0));
}

Tensor all(const Tensor& a) {
  const kernel::OpScope op_scope("all", {&a});
  if (a.numel() == 0) return Tensor::scalar(1.0, mask_dtype(a.dtype()));
  return 1.0 - max(eq(a, 0.0));
}

Tensor any(const Tensor& a, int dim, bool keepdim) {
  const kernel::OpScope op_scope("any", {&a});
  return max(ne(a, 0.0), normalize_dim("any", dim, a.dim()), keepdim);
}

Tensor all(const Tensor& a, int dim, bool keepdim) {
  const kernel::OpScope op_scope("all", {&a});
  return 1.0 - max(eq(a, 0.0), normalize_dim("all", dim, a.dim()), keepdim);
}

}  // namespace qkv
