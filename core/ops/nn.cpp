// Neural-network ops. softmax/log_softmax walk (outer, n, inner) with the max subtracted first; cross_entropy
// fuses log_softmax and the NLL pick so it never forms log(softmax) (stable, one pass, one saved scalar per row).
#include "qkv/core/ops/kernel.h"

#include <Eigen/Core>

#include <cmath>
#include <limits>

namespace qkv {
namespace {

}  // namespace

Tensor softmax(const Tensor& a, int dim) {
  const kernel::OpScope op_scope("softmax", {&a});

  const int d = normalize_dim("softmax", dim, a.dim());
  const auto sp = kernel::split_at(a.shape(), d);
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  kernel::dispatch("softmax", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    kernel::for_each_line(sp, [&](std::int64_t base, std::int64_t st) {
      T m = -std::numeric_limits<T>::infinity();
      for (std::int64_t j = 0; j < sp.n; ++j) m = std::max(m, pa[base + j * st]);
      if (m == -std::numeric_limits<T>::infinity()) m = 0;  // a fully masked row gives NaN as in torch (0/0)
      T s = 0;
      for (std::int64_t j = 0; j < sp.n; ++j) s += po[base + j * st] = std::exp(pa[base + j * st] - m);
      const T inv = T(1) / s;
      for (std::int64_t j = 0; j < sp.n; ++j) po[base + j * st] *= inv;
    });
  });
  if (any_requires_grad({&a}))
    record(out, "softmax", {&a}, [y = out.detach(), sp](const Tensor& g) -> Grads {
      // dx_j = y_j (g_j - sum_k g_k y_k)
      Tensor dx = Tensor::empty(y.shape(), y.dtype());
      kernel::dispatch("softmax_backward", y.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T *py = y.data<T>(), *pg = g.data<T>();
        T* pd = dx.data<T>();
        kernel::for_each_line(sp, [&](std::int64_t base, std::int64_t st) {
          T dot = 0;
          for (std::int64_t j = 0; j < sp.n; ++j) dot += pg[base + j * st] * py[base + j * st];
          for (std::int64_t j = 0; j < sp.n; ++j) pd[base + j * st] = py[base + j * st] * (pg[base + j * st] - dot);
        });
      });
      return {dx};
    }, {&out});
  return out;
}

Tensor log_softmax(const Tensor& a, int dim) {
  const kernel::OpScope op_scope("log_softmax", {&a});

  const int d = normalize_dim("log_softmax", dim, a.dim());
  const auto sp = kernel::split_at(a.shape(), d);
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  kernel::dispatch("log_softmax", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    kernel::for_each_line(sp, [&](std::int64_t base, std::int64_t st) {
      T m = -std::numeric_limits<T>::infinity();
      for (std::int64_t j = 0; j < sp.n; ++j) m = std::max(m, pa[base + j * st]);
      T s = 0;
      for (std::int64_t j = 0; j < sp.n; ++j) s += std::exp(pa[base + j * st] - m);
      const T lse = m + std::log(s);
      for (std::int64_t j = 0; j < sp.n; ++j) po[base + j * st] = pa[base + j * st] - lse;
    });
  });
  if (any_requires_grad({&a}))
    record(out, "log_softmax", {&a}, [y = out.detach(), sp](const Tensor& g) -> Grads {
      // dx_j = g_j - exp(y_j) sum_k g_k
      Tensor dx = Tensor::empty(y.shape(), y.dtype());
      kernel::dispatch("log_softmax_backward", y.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T *py = y.data<T>(), *pg = g.data<T>();
        T* pd = dx.data<T>();
        kernel::for_each_line(sp, [&](std::int64_t base, std::int64_t st) {
          T s = 0;
          for (std::int64_t j = 0; j < sp.n; ++j) s += pg[base + j * st];
          for (std::int64_t j = 0; j < sp.n; ++j)
            pd[base + j * st] = pg[base + j * st] - std::exp(py[base + j * st]) * s;
        });
      });
      return {dx};
    }, {&out});
  return out;
}

namespace {

// xhat = (x - mean) rstd; dy/dweight = sum_rows g xhat; dy/dbias = sum_rows g;
// dx = rstd (gw - mean(gw) - xhat mean(gw xhat)) with gw = g * weight. stats holds (mean, rstd) per row.
Grads layer_norm_backward(const Tensor& x, const Tensor& w, const Tensor& stats, const Tensor& g, std::int64_t rows,
                          std::int64_t d) {
  Tensor dx = Tensor::empty(x.shape(), x.dtype());
  Tensor dw = Tensor::zeros(w.shape(), w.dtype()), db = Tensor::zeros(w.shape(), w.dtype());
  kernel::dispatch("layer_norm_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *px = x.data<T>(), *pw = w.data<T>(), *pg = g.data<T>(), *ps = stats.data<T>();
    T *pdx = dx.data<T>(), *pdw = dw.data<T>(), *pdb = db.data<T>();
    kernel::parallel_for(rows, parallel_worth(Work::Elementwise, double(x.numel())), [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t r = lo; r < hi; ++r) {
        const T mean = ps[2 * r], rstd = ps[2 * r + 1];
        T sum_gw = 0, sum_gw_xhat = 0;
        for (std::int64_t j = 0; j < d; ++j) {
          const T xhat = (px[r * d + j] - mean) * rstd, gw = pg[r * d + j] * pw[j];
          sum_gw += gw;
          sum_gw_xhat += gw * xhat;
        }
        const T a = sum_gw / T(d), b = sum_gw_xhat / T(d);
        for (std::int64_t j = 0; j < d; ++j) {
          const T xhat = (px[r * d + j] - mean) * rstd;
          pdx[r * d + j] = rstd * (pg[r * d + j] * pw[j] - a - xhat * b);
        }
      }
    });
    for (std::int64_t r = 0; r < rows; ++r)  // serial: every row adds into the same (D) sums
      for (std::int64_t j = 0; j < d; ++j) {
        const T gj = pg[r * d + j];
        pdw[j] += gj * (px[r * d + j] - ps[2 * r]) * ps[2 * r + 1];
        pdb[j] += gj;
      }
  });
  return {dx, dw, db};
}

// d logits_ij = g_i * scale * (softmax_ij - [j == t_i]); zero for ignored rows.
Grads cross_entropy_backward(const Tensor& probs, const Tensor& t, const Tensor& g, std::int64_t ignore_index,
                             double scale, Reduction reduction) {
  Tensor dx = Tensor::empty(probs.shape(), probs.dtype());
  kernel::dispatch("cross_entropy_backward", probs.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const std::int64_t rows = probs.size(0), cols = probs.size(1);
    const T *pp = probs.data<T>(), *pg = g.data<T>();
    const std::int64_t* pt = t.data<std::int64_t>();
    T* pd = dx.data<T>();
    kernel::parallel_for(rows, parallel_worth(Work::Rows, double(rows * cols)), [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) {
        const bool ignored = pt[i] == ignore_index;
        const T gi = ignored ? T(0) : static_cast<T>(scale) * (reduction == Reduction::None ? pg[i] : pg[0]);
        for (std::int64_t j = 0; j < cols; ++j) pd[i * cols + j] = gi * pp[i * cols + j];
        if (!ignored) pd[i * cols + pt[i]] -= gi;
      }
    });
  });
  return {dx, Tensor()};
}

// The non-ignored targets, each checked against the C classes.
std::int64_t count_targets(const Tensor& targets, std::int64_t c, std::int64_t ignore_index) {
  const std::int64_t* pt = targets.data<std::int64_t>();
  std::int64_t count = 0;
  for (std::int64_t i = 0; i < targets.numel(); ++i) {
    if (pt[i] == ignore_index) continue;
    QKV_CHECK(pt[i] >= 0 && pt[i] < c, "cross_entropy: target {} at position {} is out of range for {} classes", pt[i],
              i, c);
    ++count;
  }
  return count;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index, Reduction reduction) {
  const kernel::OpScope op_scope("cross_entropy", {&logits, &targets});

  // logits is (N, C), targets is (N) int64
  QKV_CHECK(logits.dim() == 2, "cross_entropy: logits must be (N, C), got shape {} (reshape to (-1, C) first)",
            logits.shape().str());
  QKV_CHECK(targets.dtype() == kInt64, "cross_entropy: targets must be int64 class indices, got {}",
            dtype_name(targets.dtype()));
  const std::int64_t n = logits.size(0), c = logits.size(1);
  QKV_CHECK(targets.dim() == 1 && targets.size(0) == n,
            "cross_entropy: targets must be (N) = ({}) for logits {}, got shape {}", n, logits.shape().str(),
            targets.shape().str());
  const std::int64_t* pt = targets.data<std::int64_t>();
  const std::int64_t count = count_targets(targets, c, ignore_index);
  // One vectorised pass over the (N, C) block: row max, exp, row sum, log. The probabilities are kept for
  // backward, which then needs no exp at all.
  Tensor probs = Tensor::empty(logits.shape(), logits.dtype());
  Tensor losses = Tensor::zeros(Shape{n}, logits.dtype());
  kernel::dispatch("cross_entropy", logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using Row = Eigen::Array<T, Eigen::Dynamic, 1>;
    const T* px = logits.data<T>();
    T *pp = probs.data<T>(), *po = losses.data<T>();
    kernel::parallel_for(n, parallel_worth(Work::Rows, double(n * c)), [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) {  // contiguous rows, so Eigen's packet exp applies
      const Eigen::Map<const Row> x(px + i * c, c);
      Eigen::Map<Row> p(pp + i * c, c);
      const T m = x.maxCoeff();
      p = (x - m).exp();
      const T total = p.sum();
      p *= T(1) / total;
      if (pt[i] != ignore_index) po[i] = m + std::log(total) - x(pt[i]);  // log-sum-exp minus the target
    }
    });
  });
  // Mean over zero non-ignored targets is 0/0 = NaN, as in torch.
  const double scale = reduction == Reduction::Mean ? 1.0 / static_cast<double>(count) : 1.0;
  Tensor out = losses;
  if (reduction != Reduction::None) {
    NoGradGuard no_grad;
    out = mul(sum(losses), scale);
  }
  if (any_requires_grad({&logits}))
    record(out, "cross_entropy", {&logits, &targets},
           [probs, t = targets, ignore_index, scale, reduction](const Tensor& g) -> Grads {
             return cross_entropy_backward(probs, t, g, ignore_index, scale, reduction);
           }, {&targets});
  return out;
}

Tensor masked_fill(const Tensor& a, const Tensor& mask, double value) {
  const kernel::OpScope op_scope("masked_fill", {&a, &mask});

  QKV_CHECK(mask.defined(), "masked_fill: mask is undefined");
  QKV_CHECK(broadcast_shapes("masked_fill", a.shape(), mask.shape()) == a.shape(),
            "masked_fill: mask of shape {} does not broadcast to input shape {}", mask.shape().str(), a.shape().str());
  // The mask is small (T, T) or (B, 1, 1, T): turn it into flags once, then walk a with broadcast strides.
  std::vector<unsigned char> flags(static_cast<std::size_t>(mask.numel()));
  const auto mv = mask.to_vector();
  for (std::size_t i = 0; i < flags.size(); ++i) flags[i] = mv[i] != 0.0;
  const Shape mstrides = kernel::broadcast_strides(mask.shape(), a.shape());
  const auto apply = [flags = std::move(flags), mstrides](const Tensor& x, double v) {
    Tensor out = Tensor::empty(x.shape(), x.dtype());
    kernel::dispatch("masked_fill", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      T* po = out.data<T>();
      const T fill = static_cast<T>(v);
      kernel::for_each2(x.shape(), mstrides, mstrides,
                        [&](std::int64_t i, std::int64_t m, std::int64_t) { po[i] = flags[m] ? fill : px[i]; });
    });
    return out;
  };
  Tensor out = apply(a, value);
  if (any_requires_grad({&a}))
    record(out, "masked_fill", {&a}, [apply](const Tensor& g) -> Grads { return {apply(g, 0.0)}; });
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  const kernel::OpScope op_scope("embedding", {&weight, &ids});

  // weight is (V, D), ids is (...) int64, out is (..., D)
  QKV_CHECK(weight.dim() == 2, "embedding: weight must be (num_embeddings, dim), got shape {}", weight.shape().str());
  QKV_CHECK(ids.dtype() == kInt64, "embedding: ids must be int64, got {} (shape {})", dtype_name(ids.dtype()),
            ids.shape().str());
  const std::int64_t v = weight.size(0), d = weight.size(1), n = ids.numel();
  const std::int64_t* pi = ids.data<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i)
    QKV_CHECK(pi[i] >= 0 && pi[i] < v, "embedding: index {} at position {} is out of range for num_embeddings {}",
              pi[i], i, v);
  Shape out_shape = ids.shape();
  out_shape.push_back(d);
  Tensor out = Tensor::empty(out_shape, weight.dtype());
  kernel::dispatch("embedding", weight.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pw = weight.data<T>();
    T* po = out.data<T>();
    for (std::int64_t i = 0; i < n; ++i) std::copy_n(pw + pi[i] * d, d, po + i * d);
  });
  if (any_requires_grad({&weight}))
    record(out, "embedding", {&weight, &ids}, [ids, ws = weight.shape()](const Tensor& g) -> Grads {
      // Scatter-add: a row used k times receives the sum of its k output gradients.
      Tensor dw = Tensor::zeros(ws, g.dtype());
      kernel::dispatch("embedding_backward", g.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* pg = g.data<T>();
        T* pd = dw.data<T>();
        const std::int64_t* p = ids.data<std::int64_t>();
        const std::int64_t dim = ws[1];
        for (std::int64_t i = 0, m = ids.numel(); i < m; ++i)
          for (std::int64_t j = 0; j < dim; ++j) pd[p[i] * dim + j] += pg[i * dim + j];
      });
      return {dw, Tensor()};
    }, {&ids});
  return out;
}

Tensor dropout(const Tensor& a, double p, bool training, Generator& gen) {
  const kernel::OpScope op_scope("dropout", {&a});

  QKV_CHECK(p >= 0.0 && p <= 1.0, "dropout: p must be in [0, 1], got {}", p);
  if (!training || p == 0.0) return a;
  // mask holds 0 or 1/(1-p); p = 1 drops everything.
  Tensor mask = Tensor::empty(a.shape(), a.dtype());
  const double keep_scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
  kernel::dispatch("dropout", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* pm = mask.data<T>();
    for (std::int64_t i = 0, n = a.numel(); i < n; ++i) pm[i] = gen.uniform() < p ? T(0) : static_cast<T>(keep_scale);
  });
  Tensor out = kernel::binary("dropout", a, mask, [](auto x, auto m) { return x * m; });
  if (any_requires_grad({&a})) record(out, "dropout", {&a}, [mask](const Tensor& g) -> Grads { return {mul(g, mask)}; });
  return out;
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const kernel::OpScope op_scope("layer_norm", {&x, &weight});

  // x is (..., D); mean and 1/std are saved per row for backward. No bias: a shift of 0 (torch's bias=None).
  kernel::check_same_dtype("layer_norm", x, weight);
  if (bias.defined()) kernel::check_same_dtype("layer_norm", x, bias);
  const std::int64_t d = weight.numel();
  QKV_CHECK(weight.dim() == 1 && (!bias.defined() || bias.shape() == weight.shape()),
            "layer_norm: weight {} and bias {} must be (D)", weight.shape().str(),
            bias.defined() ? bias.shape().str() : "(none)");
  QKV_CHECK(x.dim() >= 1 && x.size(-1) == d, "layer_norm: expected input (..., {}), got shape {}", d, x.shape().str());
  const std::int64_t rows = x.numel() / std::max<std::int64_t>(d, 1);
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  Tensor stats = Tensor::empty({rows, 2}, x.dtype());  // mean, rstd
  kernel::dispatch("layer_norm", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *px = x.data<T>(), *pw = weight.data<T>(), *pb = bias.defined() ? bias.data<T>() : nullptr;
    T *po = out.data<T>(), *ps = stats.data<T>();
    kernel::parallel_for(rows, parallel_worth(Work::Elementwise, double(x.numel())), [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t r = lo; r < hi; ++r) {
      const T* xr = px + r * d;
      T mean = 0;
      for (std::int64_t j = 0; j < d; ++j) mean += xr[j];
      mean /= T(d);
      T var = 0;
      for (std::int64_t j = 0; j < d; ++j) var += (xr[j] - mean) * (xr[j] - mean);
      const T rstd = T(1) / std::sqrt(var / T(d) + T(eps));
      if (pb)
        for (std::int64_t j = 0; j < d; ++j) po[r * d + j] = (xr[j] - mean) * rstd * pw[j] + pb[j];
      else
        for (std::int64_t j = 0; j < d; ++j) po[r * d + j] = (xr[j] - mean) * rstd * pw[j];
      ps[2 * r] = mean;
      ps[2 * r + 1] = rstd;
    }
    });
  });
  if (any_requires_grad({&x, &weight, &bias}))
    record(out, "layer_norm", {&x, &weight, &bias},
           [x = x.detach(), w = weight.detach(), stats, rows, d, has_bias = bias.defined()](const Tensor& g) -> Grads {
             Grads grads = layer_norm_backward(x, w, stats, g, rows, d);
             if (!has_bias) grads[2] = Tensor();  // no bias, no gradient for it
             return grads;
           }, {&x, &weight});
  return out;
}

}  // namespace qkv
