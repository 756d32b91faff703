// matmul: a is (..., N, K), b is (..., K, M), out is (..., N, M) with the batch dims broadcast. Every product is
// one Eigen GEMM on row-major maps of our storage; no copies, no transposes materialised.
#include "qkv/core/ops/kernel.h"

#include <Eigen/Core>

namespace qkv {
namespace {

template <class T>
using MatR = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// C (n, m) = or += op(A) op(B); A is stored (n, k) or, when ta, (k, n); B is stored (k, m) or, when tb, (m, k).
template <class T>
void gemm(const T* a, bool ta, const T* b, bool tb, T* c, std::int64_t n, std::int64_t k, std::int64_t m,
          bool accumulate) {
  using Map = Eigen::Map<const MatR<T>>;
  Eigen::Map<MatR<T>> C(c, n, m);
  const Map A(a, ta ? k : n, ta ? n : k), B(b, tb ? m : k, tb ? k : m);
  const auto run = [&](const auto& lhs, const auto& rhs) {
    if (accumulate) C.noalias() += lhs * rhs;
    else C.noalias() = lhs * rhs;
  };
  if (!ta && !tb) run(A, B);
  else if (ta && !tb) run(A.transpose(), B);
  else if (!ta && tb) run(A, B.transpose());
  else run(A.transpose(), B.transpose());
}

Shape batch_of(const Shape& s) {
  Shape b = s;
  b.erase(b.rank() - 1);
  b.erase(b.rank() - 1);
  return b;
}

// Calls f(ia, ib, io) with the matrix index into a, b and out for each element of the broadcast batch.
template <class F>
void for_each_batch(const Shape& ba, const Shape& bb, const Shape& batch, F&& f) {
  kernel::for_each2(batch, kernel::broadcast_strides(ba, batch), kernel::broadcast_strides(bb, batch), f);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  kernel::check_same_dtype("matmul", a, b);
  QKV_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both operands need at least one dim, got shapes {} and {}",
            a.shape().str(), b.shape().str());
  if (a.dim() == 1) {  // (K) @ (..., K, M): treat a as (1, K) and drop that dim
    Tensor out = matmul(unsqueeze(a, 0), b);
    Shape s = out.shape();
    s.erase(s.rank() - 2);
    return reshape(out, s);
  }
  if (b.dim() == 1) {  // (..., N, K) @ (K): treat b as (K, 1) and drop that dim
    Tensor out = matmul(a, unsqueeze(b, 1));
    Shape s = out.shape();
    s.erase(s.rank() - 1);
    return reshape(out, s);
  }
  const std::int64_t n = a.size(-2), k = a.size(-1), m = b.size(-1);
  QKV_CHECK(b.size(-2) == k, "matmul: shapes {} and {} cannot be multiplied ({}x{} and {}x{})", a.shape().str(),
            b.shape().str(), n, k, b.size(-2), m);
  const Shape ba = batch_of(a.shape()), bb = batch_of(b.shape());
  Shape out_shape = broadcast_shapes("matmul", ba, bb);
  const Shape batch = out_shape;
  out_shape.push_back(n);
  out_shape.push_back(m);
  Tensor out = Tensor::empty(out_shape, a.dtype());
  // When b has no batch dims, (..., N, K) @ (K, M) is one GEMM with all batch rows stacked.
  const bool flat = bb.rank() == 0;
  kernel::dispatch("matmul", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pa = a.data<T>(), *pb = b.data<T>();
    T* po = out.data<T>();
    if (flat) {
      gemm(pa, false, pb, false, po, a.numel() / k, k, m, false);
      return;
    }
    for_each_batch(ba, bb, batch, [&](std::int64_t io, std::int64_t ia, std::int64_t ib) {
      gemm(pa + ia * n * k, false, pb + ib * k * m, false, po + io * n * m, n, k, m, false);
    });
  });
  if (any_requires_grad({&a, &b})) {
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    record(out, "matmul", {&a, &b}, [a = a.detach(), b = b.detach(), ga, gb, flat, batch, n, k, m](const Tensor& g) {
      // dA = dC B^T, dB = A^T dC; a broadcast operand accumulates over the batch elements that read it.
      Tensor da = ga ? Tensor::zeros(a.shape(), a.dtype()) : Tensor();
      Tensor db = gb ? Tensor::zeros(b.shape(), b.dtype()) : Tensor();
      kernel::dispatch("matmul_backward", a.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T *pa = a.data<T>(), *pb = b.data<T>(), *pg = g.data<T>();
        if (flat) {
          const std::int64_t rows = a.numel() / k;
          if (ga) gemm(pg, false, pb, true, da.data<T>(), rows, m, k, false);
          if (gb) gemm(pa, true, pg, false, db.data<T>(), k, rows, m, false);
          return;
        }
        for_each_batch(batch_of(a.shape()), batch_of(b.shape()), batch,
                       [&](std::int64_t io, std::int64_t ia, std::int64_t ib) {
                         const T* gi = pg + io * n * m;
                         if (ga) gemm(gi, false, pb + ib * k * m, true, da.data<T>() + ia * n * k, n, m, k, true);
                         if (gb) gemm(pa + ia * n * k, true, gi, false, db.data<T>() + ib * k * m, k, n, m, true);
                       });
      });
      return Grads{da, db};
    });
  }
  return out;
}

}  // namespace qkv
