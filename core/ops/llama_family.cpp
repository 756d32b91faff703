// The two ops the Llama family adds to a transformer: RMS normalisation and the rotary position embedding.
// Both are fused (one pass per row each way) and keep what backward needs small: rms_norm one 1/rms per row, rope
// nothing but the angle tables it was given.
#include "qkv/core/ops/kernel.h"

#include <cmath>

namespace qkv {

namespace {

// y = x r w with r = 1 / sqrt(mean(x^2) + eps): dw = sum_rows g x r;
// dx = r (g w - x r^2 mean(g w x)).
Grads rms_norm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& g, std::int64_t rows,
                        std::int64_t d) {
  Tensor dx = Tensor::empty(x.shape(), x.dtype());
  Tensor dw = Tensor::zeros(w.shape(), w.dtype());
  kernel::dispatch("rms_norm_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *px = x.data<T>(), *pw = w.data<T>(), *pg = g.data<T>(), *pr = rstd.data<T>();
    T *pdx = dx.data<T>(), *pdw = dw.data<T>();
    kernel::parallel_for(rows, parallel_worth(Work::Elementwise, double(x.numel())), [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t r = lo; r < hi; ++r) {
        const T* xr = px + r * d;
        const T* gr = pg + r * d;
        const T rs = pr[r];
        T dot = 0;
        for (std::int64_t j = 0; j < d; ++j) dot += gr[j] * pw[j] * xr[j];
        const T c = rs * rs * dot / T(d);
        for (std::int64_t j = 0; j < d; ++j) pdx[r * d + j] = rs * (gr[j] * pw[j] - xr[j] * c);
      }
    });
    for (std::int64_t r = 0; r < rows; ++r)  // serial: every row adds into the same (D) sums
      for (std::int64_t j = 0; j < d; ++j) pdw[j] += pg[r * d + j] * px[r * d + j] * pr[r];
  });
  return {dx, dw};
}

// out = rotate(x) by +angle (sign 1) or -angle (sign -1, the gradient): per head, pairs (j, j + d/2).
Tensor rotate(const char* op, const Tensor& x, const Tensor& cos, const Tensor& sin, std::int64_t heads, int sign) {
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  const std::int64_t b = x.size(0), t = x.size(1), width = x.size(2), half = width / heads / 2;
  kernel::dispatch(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *px = x.data<T>(), *pc = cos.data<T>(), *ps = sin.data<T>();
    T* po = out.data<T>();
    const T s = T(sign);
    kernel::parallel_for(b * t, parallel_worth(Work::Elementwise, double(x.numel())), [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t row = lo; row < hi; ++row) {
        const T* c = pc + (row % t) * half;
        const T* sn = ps + (row % t) * half;
        for (std::int64_t h = 0; h < heads; ++h) {
          const T* x1 = px + row * width + h * 2 * half;
          const T* x2 = x1 + half;
          T* o1 = po + row * width + h * 2 * half;
          T* o2 = o1 + half;
          for (std::int64_t i = 0; i < half; ++i) {
            o1[i] = x1[i] * c[i] - s * x2[i] * sn[i];
            o2[i] = x2[i] * c[i] + s * x1[i] * sn[i];
          }
        }
      }
    });
  });
  return out;
}

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  const kernel::OpScope op_scope("rms_norm", {&x, &weight});
  kernel::check_same_dtype("rms_norm", x, weight);
  const std::int64_t d = weight.numel();
  QKV_CHECK(weight.dim() == 1, "rms_norm: weight must be (D), got {}", weight.shape().str());
  QKV_CHECK(x.dim() >= 1 && x.size(-1) == d, "rms_norm: expected input (..., {}), got shape {}", d, x.shape().str());
  QKV_CHECK(eps >= 0, "rms_norm: eps must be >= 0, got {}", eps);
  const std::int64_t rows = x.numel() / std::max<std::int64_t>(d, 1);
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  Tensor rstd = Tensor::empty({rows}, x.dtype());
  kernel::dispatch("rms_norm", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pw = weight.data<T>();
    T *po = out.data<T>(), *pr = rstd.data<T>();
    kernel::parallel_for(rows, parallel_worth(Work::Elementwise, double(x.numel())), [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t r = lo; r < hi; ++r) {
        const T* xr = px + r * d;
        T ss = 0;
        for (std::int64_t j = 0; j < d; ++j) ss += xr[j] * xr[j];
        const T rs = T(1) / std::sqrt(ss / T(d) + T(eps));
        for (std::int64_t j = 0; j < d; ++j) po[r * d + j] = pw[j] * (xr[j] * rs);  // Hugging Face's order
        pr[r] = rs;
      }
    });
  });
  if (any_requires_grad({&x, &weight}))
    record(out, "rms_norm", {&x, &weight}, [x = x.detach(), w = weight.detach(), rstd, rows, d](const Tensor& g) -> Grads {
      return rms_norm_backward(x, w, rstd, g, rows, d);
    }, {&x, &weight});
  return out;
}

Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, std::int64_t heads) {
  const kernel::OpScope op_scope("rope", {&x, &cos, &sin});
  kernel::check_same_dtype("rope", x, cos);
  kernel::check_same_dtype("rope", x, sin);
  QKV_CHECK(x.dim() == 3 && heads > 0 && x.size(2) % (2 * heads) == 0,
            "rope: expected x (B, T, H*d) with H = {} heads of an even width d, got shape {}", heads,
            x.shape().str());
  const std::int64_t half = x.size(2) / heads / 2;
  QKV_CHECK(cos.dim() == 2 && cos.size(0) == x.size(1) && cos.size(1) == half && sin.shape() == cos.shape(),
            "rope: cos and sin must be (T, d/2) = ({}, {}) for x {}, got {} and {}", x.size(1), half,
            x.shape().str(), cos.shape().str(), sin.shape().str());
  QKV_CHECK(!cos.requires_grad() && !sin.requires_grad(),
            "rope: cos and sin are constants (no gradient flows to them); detach them");
  Tensor out = rotate("rope", x, cos, sin, heads, 1);
  if (any_requires_grad({&x}))
    record(out, "rope", {&x}, [cos, sin, heads](const Tensor& g) -> Grads {
      return {rotate("rope_backward", g, cos, sin, heads, -1)};
    });
  return out;
}

}  // namespace qkv
