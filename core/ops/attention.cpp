// Fused multi-head scaled dot-product attention. Legend: B batch, T sequence, H heads, d head width.
// q, k are (B, T, H*dk) and v is (B, T, H*dv) exactly as the projections produce them: head h of batch b is a
// (T, d) block with row stride H*d, read through strided Eigen maps, so heads are never permuted into copies.
// Each (b, h) is independent, so forward and backward run one OpenMP loop over B*H, with Eigen GEMMs inside
// (Eigen does not nest threads inside a parallel region). Fused because the composed version spent its time
// in permute copies, a (B,H,T,T) masked_fill pass and per-op graph overhead.
#include "qkv/core/ops/kernel.h"

#include <Eigen/Core>

#include <cmath>
#include <limits>

namespace qkv {
namespace {

template <class T>
using MatR = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Strided = Eigen::Map<MatR<T>, 0, Eigen::OuterStride<>>;
template <class T>
using CStrided = Eigen::Map<const MatR<T>, 0, Eigen::OuterStride<>>;

struct Dims {
  std::int64_t b, t, h, dk, dv;
};

// Work below this many multiply-adds per call stays on one thread (a parallel region costs microseconds).
constexpr double kParallelWork = 1 << 18;

}  // namespace

std::pair<Tensor, Tensor> attention(const Tensor& q, const Tensor& k, const Tensor& v, std::int64_t heads, bool causal,
                                    const Tensor& key_padding_mask) {
  kernel::check_same_dtype("attention", q, k);
  kernel::check_same_dtype("attention", q, v);
  QKV_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "attention: q, k, v must be (B, T, H*d), got {}, {}, {}",
            q.shape().str(), k.shape().str(), v.shape().str());
  QKV_CHECK(q.shape() == k.shape() && v.size(0) == q.size(0) && v.size(1) == q.size(1),
            "attention: q {} and k {} must match, and v {} must share their (B, T)", q.shape().str(), k.shape().str(),
            v.shape().str());
  QKV_CHECK(heads > 0 && q.size(2) % heads == 0 && v.size(2) % heads == 0,
            "attention: heads = {} must divide the widths of q ({}) and v ({})", heads, q.size(2), v.size(2));
  const Dims d{q.size(0), q.size(1), heads, q.size(2) / heads, v.size(2) / heads};
  // Padding flags per (b, key), from any dtype.
  std::vector<unsigned char> pad;
  if (key_padding_mask.defined()) {
    QKV_CHECK(key_padding_mask.dim() == 2 && key_padding_mask.size(0) == d.b && key_padding_mask.size(1) == d.t,
              "attention: key_padding_mask must be (B, T) = ({}, {}), got {}", d.b, d.t,
              key_padding_mask.shape().str());
    for (double x : key_padding_mask.to_vector()) pad.push_back(x != 0.0);
  }
  Tensor out = Tensor::empty({d.b, d.t, d.h * d.dv}, q.dtype());
  Tensor weights = Tensor::empty({d.b, d.h, d.t, d.t}, q.dtype());
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.dk));
  const double work = double(d.b * d.h) * double(d.t * d.t) * double(d.dk + d.dv);
  kernel::dispatch("attention", q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pq = q.data<T>(), *pk = k.data<T>(), *pv = v.data<T>();
    T *po = out.data<T>(), *pw = weights.data<T>();
    const std::int64_t sq = d.h * d.dk, sv = d.h * d.dv;
#pragma omp parallel for schedule(static) if (work > kParallelWork)
    for (std::int64_t bh = 0; bh < d.b * d.h; ++bh) {
      const std::int64_t b = bh / d.h, h = bh % d.h;
      const CStrided<T> Q(pq + b * d.t * sq + h * d.dk, d.t, d.dk, Eigen::OuterStride<>(sq));
      const CStrided<T> K(pk + b * d.t * sq + h * d.dk, d.t, d.dk, Eigen::OuterStride<>(sq));
      const CStrided<T> V(pv + b * d.t * sv + h * d.dv, d.t, d.dv, Eigen::OuterStride<>(sv));
      Eigen::Map<MatR<T>> S(pw + bh * d.t * d.t, d.t, d.t);
      S.noalias() = Q * K.transpose();
      // Scale, mask (weight exactly 0 for masked keys), softmax per row; a fully masked row is NaN, as in torch.
      for (std::int64_t i = 0; i < d.t; ++i) {
        T* row = &S(i, 0);
        const std::int64_t visible = causal ? i + 1 : d.t;
        T m = -std::numeric_limits<T>::infinity();
        for (std::int64_t j = 0; j < visible; ++j)
          if (pad.empty() || !pad[static_cast<std::size_t>(b * d.t + j)]) m = std::max(m, row[j] * T(scale));
        T sum = 0;
        for (std::int64_t j = 0; j < d.t; ++j) {
          const bool masked = j >= visible || (!pad.empty() && pad[static_cast<std::size_t>(b * d.t + j)]);
          row[j] = masked ? T(0) : std::exp(row[j] * T(scale) - m);
          sum += row[j];
        }
        const T inv = T(1) / sum;
        for (std::int64_t j = 0; j < d.t; ++j) row[j] *= inv;
      }
      Strided<T> O(po + b * d.t * sv + h * d.dv, d.t, d.dv, Eigen::OuterStride<>(sv));
      O.noalias() = S * V;
    }
  });
  if (any_requires_grad({&q, &k, &v})) {
    record(out, "attention", {&q, &k, &v},
           [q = q.detach(), k = k.detach(), v = v.detach(), w = weights, d, scale, work](const Tensor& g) -> Grads {
             // Per (b, h), with S the softmax weights and dO = g:
             //   dV = S^T dO;  dP = dO V^T;  dZ = S * (dP - rowsum(dP * S)) * scale;  dQ = dZ K;  dK = dZ^T Q
             // Masked weights are 0, so their dZ is 0 too.
             Tensor dq = Tensor::empty(q.shape(), q.dtype()), dk = Tensor::empty(k.shape(), k.dtype());
             Tensor dv = Tensor::empty(v.shape(), v.dtype());
             kernel::dispatch("attention_backward", q.dtype(), [&](auto tag) {
               using T = decltype(tag);
               const T *pq = q.data<T>(), *pk = k.data<T>(), *pv = v.data<T>(), *pw = w.data<T>(), *pg = g.data<T>();
               T *pdq = dq.data<T>(), *pdk = dk.data<T>(), *pdv = dv.data<T>();
               const std::int64_t sq = d.h * d.dk, sv = d.h * d.dv;
#pragma omp parallel if (work > kParallelWork)
               {
                 MatR<T> dP(d.t, d.t);  // one scratch matrix per thread
#pragma omp for schedule(static)
                 for (std::int64_t bh = 0; bh < d.b * d.h; ++bh) {
                   const std::int64_t b = bh / d.h, h = bh % d.h;
                   const std::int64_t oq = b * d.t * sq + h * d.dk, ov = b * d.t * sv + h * d.dv;
                   const CStrided<T> Q(pq + oq, d.t, d.dk, Eigen::OuterStride<>(sq));
                   const CStrided<T> K(pk + oq, d.t, d.dk, Eigen::OuterStride<>(sq));
                   const CStrided<T> V(pv + ov, d.t, d.dv, Eigen::OuterStride<>(sv));
                   const CStrided<T> dO(pg + ov, d.t, d.dv, Eigen::OuterStride<>(sv));
                   const Eigen::Map<const MatR<T>> S(pw + bh * d.t * d.t, d.t, d.t);
                   Strided<T> dQ(pdq + oq, d.t, d.dk, Eigen::OuterStride<>(sq));
                   Strided<T> dK(pdk + oq, d.t, d.dk, Eigen::OuterStride<>(sq));
                   Strided<T> dV(pdv + ov, d.t, d.dv, Eigen::OuterStride<>(sv));
                   dV.noalias() = S.transpose() * dO;
                   dP.noalias() = dO * V.transpose();
                   for (std::int64_t i = 0; i < d.t; ++i) {
                     T dot = 0;
                     for (std::int64_t j = 0; j < d.t; ++j) dot += dP(i, j) * S(i, j);
                     for (std::int64_t j = 0; j < d.t; ++j) dP(i, j) = S(i, j) * (dP(i, j) - dot) * T(scale);
                   }
                   dQ.noalias() = dP * K;
                   dK.noalias() = dP.transpose() * Q;
                 }
               }
             });
             return {dq, dk, dv};
           });
  }
  return {out, weights};
}

}  // namespace qkv
