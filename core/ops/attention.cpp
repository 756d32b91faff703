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

namespace {

// Where q, k, v live: each is a (B, T, H*d) column range [offset, offset + H*d) of rows `stride` wide. Separate
// tensors have offset 0 and stride H*d; a packed [q | k | v] projection shares one buffer and one stride.
struct Layout {
  std::int64_t q_off, k_off, v_off, stride_q, stride_k, stride_v;
};

std::pair<Tensor, Tensor> attention_forward(const Tensor& tq, const Tensor& tk, const Tensor& tv, const Layout& L,
                                            const Dims& d, bool causal, const std::vector<unsigned char>& pad) {
  Tensor out = Tensor::empty({d.b, d.t, d.h * d.dv}, tq.dtype());
  Tensor weights = Tensor::empty({d.b, d.h, d.t, d.t}, tq.dtype());
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.dk));
  const double work = double(d.b * d.h) * double(d.t * d.t) * double(d.dk + d.dv);
  kernel::dispatch("attention", tq.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pq = tq.data<T>() + L.q_off, *pk = tk.data<T>() + L.k_off, *pv = tv.data<T>() + L.v_off;
    T *po = out.data<T>(), *pw = weights.data<T>();
    const std::int64_t so = d.h * d.dv;
    kernel::parallel_for(d.b * d.h, work > kParallelWork, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t bh = lo; bh < hi; ++bh) {
      const std::int64_t b = bh / d.h, h = bh % d.h;
      const CStrided<T> Q(pq + b * d.t * L.stride_q + h * d.dk, d.t, d.dk, Eigen::OuterStride<>(L.stride_q));
      const CStrided<T> K(pk + b * d.t * L.stride_k + h * d.dk, d.t, d.dk, Eigen::OuterStride<>(L.stride_k));
      const CStrided<T> V(pv + b * d.t * L.stride_v + h * d.dv, d.t, d.dv, Eigen::OuterStride<>(L.stride_v));
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
          row[j] = masked ? T(-std::numeric_limits<T>::infinity()) : row[j] * T(scale) - m;
        }
        Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> r(row, d.t);
        r = r.exp();  // vectorised; exp(-inf) = 0 for masked keys
        sum = r.sum();
        r *= T(1) / sum;
      }
      Strided<T> O(po + b * d.t * so + h * d.dv, d.t, d.dv, Eigen::OuterStride<>(so));
      O.noalias() = S * V;
    }
    });
  });
  return {out, weights};
}

// Writes dq, dk, dv into the buffers gq, gk, gv laid out as L describes (they may be one buffer).
void attention_backward(const Tensor& tq, const Tensor& tk, const Tensor& tv, const Tensor& w, const Tensor& g,
                        const Tensor& gq, const Tensor& gk, const Tensor& gv, const Layout& L, const Dims& d) {
  // Per (b, h), with S the softmax weights and dO = g:
  //   dV = S^T dO;  dP = dO V^T;  dZ = S * (dP - rowsum(dP * S)) * scale;  dQ = dZ K;  dK = dZ^T Q
  // Masked weights are 0, so their dZ is 0 too.
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.dk));
  const double work = double(d.b * d.h) * double(d.t * d.t) * double(d.dk + d.dv);
  kernel::dispatch("attention_backward", tq.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pq = tq.data<T>() + L.q_off, *pk = tk.data<T>() + L.k_off, *pv = tv.data<T>() + L.v_off;
    const T *pw = w.data<T>(), *pg = g.data<T>();
    T *pdq = gq.data<T>() + L.q_off, *pdk = gk.data<T>() + L.k_off, *pdv = gv.data<T>() + L.v_off;
    const std::int64_t so = d.h * d.dv;
    kernel::parallel_for(d.b * d.h, work > kParallelWork, [&](std::int64_t lo, std::int64_t hi) {
      MatR<T> dP(d.t, d.t);  // one scratch matrix per thread
      for (std::int64_t bh = lo; bh < hi; ++bh) {
        const std::int64_t b = bh / d.h, h = bh % d.h;
        const std::int64_t oq = b * d.t * L.stride_q + h * d.dk, ok = b * d.t * L.stride_k + h * d.dk;
        const std::int64_t ov = b * d.t * L.stride_v + h * d.dv;
        const CStrided<T> Q(pq + oq, d.t, d.dk, Eigen::OuterStride<>(L.stride_q));
        const CStrided<T> K(pk + ok, d.t, d.dk, Eigen::OuterStride<>(L.stride_k));
        const CStrided<T> V(pv + ov, d.t, d.dv, Eigen::OuterStride<>(L.stride_v));
        const CStrided<T> dO(pg + b * d.t * so + h * d.dv, d.t, d.dv, Eigen::OuterStride<>(so));
        const Eigen::Map<const MatR<T>> S(pw + bh * d.t * d.t, d.t, d.t);
        Strided<T> dQ(pdq + oq, d.t, d.dk, Eigen::OuterStride<>(L.stride_q));
        Strided<T> dK(pdk + ok, d.t, d.dk, Eigen::OuterStride<>(L.stride_k));
        Strided<T> dV(pdv + ov, d.t, d.dv, Eigen::OuterStride<>(L.stride_v));
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
    });
  });
}

std::vector<unsigned char> padding_flags(const Tensor& mask, const Dims& d) {
  std::vector<unsigned char> pad;
  if (!mask.defined()) return pad;
  QKV_CHECK(mask.dim() == 2 && mask.size(0) == d.b && mask.size(1) == d.t,
            "attention: key_padding_mask must be (B, T) = ({}, {}), got {}", d.b, d.t, mask.shape().str());
  for (double x : mask.to_vector()) pad.push_back(x != 0.0);
  return pad;
}

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
  const Layout L{0, 0, 0, q.size(2), k.size(2), v.size(2)};
  auto result = attention_forward(q, k, v, L, d, causal, padding_flags(key_padding_mask, d));
  if (any_requires_grad({&q, &k, &v}))
    record(result.first, "attention", {&q, &k, &v},
           [q = q.detach(), k = k.detach(), v = v.detach(), w = result.second, L, d](const Tensor& g) -> Grads {
             Tensor dq = Tensor::empty(q.shape(), q.dtype()), dk = Tensor::empty(k.shape(), k.dtype());
             Tensor dv = Tensor::empty(v.shape(), v.dtype());
             attention_backward(q, k, v, w, g, dq, dk, dv, L, d);
             return {dq, dk, dv};
           });
  return result;
}

std::pair<Tensor, Tensor> attention_packed(const Tensor& qkv, std::int64_t heads, std::int64_t dk, std::int64_t dv,
                                           bool causal, const Tensor& key_padding_mask) {
  QKV_CHECK(heads > 0 && dk > 0 && dv > 0, "attention: heads, dk and dv must be positive, got {}, {}, {}", heads, dk,
            dv);
  const std::int64_t width = heads * (2 * dk + dv);
  QKV_CHECK(qkv.dim() == 3 && qkv.size(2) == width,
            "attention: packed qkv must be (B, T, H*(2*dk + dv)) = (B, T, {}), got {}", width, qkv.shape().str());
  const Dims d{qkv.size(0), qkv.size(1), heads, dk, dv};
  const Layout L{0, heads * dk, 2 * heads * dk, width, width, width};
  auto result = attention_forward(qkv, qkv, qkv, L, d, causal, padding_flags(key_padding_mask, d));
  if (any_requires_grad({&qkv}))
    record(result.first, "attention", {&qkv}, [x = qkv.detach(), w = result.second, L, d](const Tensor& g) -> Grads {
      Tensor dx = Tensor::empty(x.shape(), x.dtype());  // every column is written: q, k and v ranges tile it
      attention_backward(x, x, x, w, g, dx, dx, dx, L, d);
      return {dx};
    });
  return result;
}

}  // namespace qkv
