// Elementwise ops with NumPy broadcasting. Each forward is followed by its backward closure; a broadcast
// operand's gradient is summed back to its own shape (sum_to).
#include "qkv/core/ops/kernel.h"

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include <cmath>
#include <numbers>

namespace qkv {
using kernel::binary;
using kernel::unary;

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  const int r = std::max(a.rank(), b.rank());
  Shape out;
  for (int i = 0; i < r; ++i) {
    const int ia = a.rank() - r + i, ib = b.rank() - r + i;
    const std::int64_t da = ia < 0 ? 1 : a[ia], db = ib < 0 ? 1 : b[ib];
    QKV_CHECK(da == db || da == 1 || db == 1,
              "{}: shapes {} and {} are not broadcastable (dim {}: {} vs {})", op, a.str(), b.str(), i, da, db);
    out.push_back(da == 1 ? db : da);
  }
  return out;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  const kernel::OpScope op_scope("sum_to", {&g});

  if (g.shape() == shape) return g;
  QKV_CHECK(broadcast_shapes("sum_to", shape, g.shape()) == g.shape(), "sum_to: cannot sum shape {} down to {}",
            g.shape().str(), shape.str());
  Tensor out = Tensor::zeros(shape, g.dtype());
  kernel::dispatch<Dtypes::Any>("sum_to", g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pg = g.data<T>();
    T* po = out.data<T>();
    const std::int64_t n = g.numel(), w = shape.numel();
    if (kernel::is_suffix(shape, g.shape())) {
      // Summing over the leading dims (bias and positional gradients): a row-wise accumulation that vectorises.
      for (std::int64_t r = 0; r < n / w; ++r)
        for (std::int64_t j = 0; j < w; ++j) po[j] += pg[r * w + j];
    } else {
      kernel::for_each2(g.shape(), kernel::broadcast_strides(shape, g.shape()), contiguous_strides(g.shape()),
                        [&](std::int64_t, std::int64_t oo, std::int64_t og) { po[oo] += pg[og]; });
    }
  });
  if (any_requires_grad({&g}))
    record(out, "sum_to", {&g}, [gs = g.shape()](const Tensor& d) -> Grads { return {broadcast_to(d, gs)}; });
  return out;
}

// Copies a into the broadcast shape (a strided read, no arithmetic); backward sums back.
Tensor broadcast_to(const Tensor& a, const Shape& shape) {
  const kernel::OpScope op_scope("broadcast_to", {&a});

  if (a.shape() == shape) return a;
  QKV_CHECK(broadcast_shapes("broadcast_to", a.shape(), shape) == shape, "broadcast_to: cannot broadcast shape {} to {}",
            a.shape().str(), shape.str());
  Tensor out = Tensor::empty(shape, a.dtype());
  kernel::dispatch<Dtypes::Any>("broadcast_to", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    const Shape sa = kernel::broadcast_strides(a.shape(), shape);
    kernel::for_each2(shape, sa, sa, [&](std::int64_t i, std::int64_t oa, std::int64_t) { po[i] = pa[oa]; });
  });
  if (any_requires_grad({&a}))
    record(out, "broadcast_to", {&a}, [as = a.shape()](const Tensor& g) -> Grads { return {sum_to(g, as)}; });
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) {
  const kernel::OpScope op_scope("add", {&a, &b});

  Tensor out = binary("add", a, b, [](auto x, auto y) { return x + y; });
  if (any_requires_grad({&a, &b}))
    record(out, "add", {&a, &b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) -> Grads {
      return {sum_to(g, sa), sum_to(g, sb)};
    });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  const kernel::OpScope op_scope("sub", {&a, &b});

  Tensor out = binary("sub", a, b, [](auto x, auto y) { return x - y; });
  if (any_requires_grad({&a, &b}))
    record(out, "sub", {&a, &b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) -> Grads {
      return {sum_to(g, sa), sum_to(neg(g), sb)};
    });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  const kernel::OpScope op_scope("mul", {&a, &b});

  Tensor out = binary("mul", a, b, [](auto x, auto y) { return x * y; });
  if (any_requires_grad({&a, &b})) {
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    record(out, "mul", {&a, &b}, [a = a.detach(), b = b.detach(), ga, gb](const Tensor& g) -> Grads {
      return {ga ? sum_to(mul(g, b), a.shape()) : Tensor(), gb ? sum_to(mul(g, a), b.shape()) : Tensor()};
    }, {&a, &b});
  }
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  const kernel::OpScope op_scope("div", {&a, &b});

  Tensor out = binary("div", a, b, [](auto x, auto y) { return x / y; });
  if (any_requires_grad({&a, &b})) {
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    record(out, "div", {&a, &b}, [a = a.detach(), b = b.detach(), ga, gb](const Tensor& g) -> Grads {
      // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
      Tensor da = ga ? sum_to(div(g, b), a.shape()) : Tensor();
      Tensor db = gb ? sum_to(neg(div(mul(g, a), mul(b, b))), b.shape()) : Tensor();
      return {da, db};
    }, {&a, &b});
  }
  return out;
}

Tensor add(const Tensor& a, double s) {
  const kernel::OpScope op_scope("add", {&a});

  Tensor out = kernel::dispatch("add", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    return unary("add", a, [y = static_cast<T>(s)](T x) { return x + y; });
  });
  if (any_requires_grad({&a})) record(out, "add_scalar", {&a}, [](const Tensor& g) -> Grads { return {g}; });
  return out;
}

Tensor mul(const Tensor& a, double s) {
  const kernel::OpScope op_scope("mul", {&a});

  Tensor out = kernel::dispatch("mul", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    return unary("mul", a, [y = static_cast<T>(s)](T x) { return x * y; });
  });
  if (any_requires_grad({&a})) record(out, "mul_scalar", {&a}, [s](const Tensor& g) -> Grads { return {mul(g, s)}; });
  return out;
}

Tensor neg(const Tensor& a) {
  const kernel::OpScope op_scope("neg", {&a});

  Tensor out = unary("neg", a, [](auto x) { return -x; });
  if (any_requires_grad({&a})) record(out, "neg", {&a}, [](const Tensor& g) -> Grads { return {neg(g)}; });
  return out;
}

Tensor pow(const Tensor& a, double p) {
  const kernel::OpScope op_scope("pow", {&a});

  Tensor out = unary("pow", a, [p](auto x) { return static_cast<decltype(x)>(std::pow(x, p)); });
  if (any_requires_grad({&a}))
    record(out, "pow", {&a}, [a = a.detach(), p](const Tensor& g) -> Grads {
      // d(x^p) = p x^(p-1)
      return {binary("pow_backward", g, a, [p](auto gi, auto x) {
        return static_cast<decltype(x)>(gi * p * std::pow(x, p - 1));
      })};
    }, {&a});
  return out;
}

Tensor exp(const Tensor& a) {
  const kernel::OpScope op_scope("exp", {&a});

  Tensor out = unary("exp", a, [](auto x) { return std::exp(x); });
  if (any_requires_grad({&a}))
    record(out, "exp", {&a}, [y = out.detach()](const Tensor& g) -> Grads { return {mul(g, y)}; }, {&out});
  return out;
}

Tensor log(const Tensor& a) {
  const kernel::OpScope op_scope("log", {&a});

  Tensor out = unary("log", a, [](auto x) { return std::log(x); });
  if (any_requires_grad({&a}))
    record(out, "log", {&a}, [a = a.detach()](const Tensor& g) -> Grads { return {div(g, a)}; }, {&a});
  return out;
}

Tensor sqrt(const Tensor& a) {
  const kernel::OpScope op_scope("sqrt", {&a});

  Tensor out = unary("sqrt", a, [](auto x) { return std::sqrt(x); });
  if (any_requires_grad({&a}))
    record(out, "sqrt", {&a}, [y = out.detach()](const Tensor& g) -> Grads {
      return {binary("sqrt_backward", g, y, [](auto gi, auto yi) { return gi / (yi + yi); })};
    }, {&out});
  return out;
}

Tensor tanh(const Tensor& a) {
  const kernel::OpScope op_scope("tanh", {&a});

  Tensor out = unary("tanh", a, [](auto x) { return std::tanh(x); });
  if (any_requires_grad({&a}))
    record(out, "tanh", {&a}, [y = out.detach()](const Tensor& g) -> Grads {
      return {binary("tanh_backward", g, y, [](auto gi, auto yi) { return gi * (1 - yi * yi); })};
    }, {&out});
  return out;
}

Tensor sigmoid(const Tensor& a) {
  const kernel::OpScope op_scope("sigmoid", {&a});

  Tensor out = unary("sigmoid", a, [](auto x) { return 1 / (1 + std::exp(-x)); });
  if (any_requires_grad({&a}))
    record(out, "sigmoid", {&a}, [y = out.detach()](const Tensor& g) -> Grads {
      return {binary("sigmoid_backward", g, y, [](auto gi, auto yi) { return gi * yi * (1 - yi); })};
    }, {&out});
  return out;
}

Tensor relu(const Tensor& a) {
  const kernel::OpScope op_scope("relu", {&a});

  Tensor out = unary("relu", a, [](auto x) { return x > 0 ? x : decltype(x){0}; });
  if (any_requires_grad({&a}))
    record(out, "relu", {&a}, [a = a.detach()](const Tensor& g) -> Grads {
      return {binary("relu_backward", g, a, [](auto gi, auto x) { return x > 0 ? gi : decltype(x){0}; })};
    }, {&a});
  return out;
}

namespace {
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluCoeff = 0.044715;
}  // namespace

namespace {
// Exact (erf) GELU and its derivative over Eigen arrays: for float, Eigen's packet erf and exp vectorise
// (glibc's scalar erff/expf were a third of a small transformer's step); chunks run on all threads.
// Eigen computes an array's unaligned head and its tail with the scalar erf/exp, which round differently from
// the packet ones; so chunks start on 64-element boundaries (storage is 64-byte aligned), and every element
// takes the same path for any thread count.
template <class F>
void chunked(std::int64_t n, F&& f) {
  constexpr std::int64_t kAlign = 64;
  kernel::parallel_for((n + kAlign - 1) / kAlign, parallel_worth(Work::Elementwise, double(n) / 2), [&](std::int64_t lo, std::int64_t hi) {
    f(lo * kAlign, std::min(n, hi * kAlign) - lo * kAlign);
  });
}

template <class T>
using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;

Tensor gelu_exact(const Tensor& a) {
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  kernel::dispatch("gelu", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    chunked(a.numel(), [&](std::int64_t s0, std::int64_t len) {
      const Eigen::Map<const Arr<T>> x(pa + s0, len);
      Eigen::Map<Arr<T>>(po + s0, len) = T(0.5) * x * (T(1) + (x * T(kInvSqrt2)).erf());
    });
  });
  return out;
}

// d/dx [x Phi(x)] = Phi(x) + x phi(x), times the incoming gradient.
Tensor gelu_exact_backward(const Tensor& g, const Tensor& a) {
  Tensor dx = Tensor::empty(a.shape(), a.dtype());
  kernel::dispatch("gelu_backward", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pa = a.data<T>(), *pg = g.data<T>();
    T* pd = dx.data<T>();
    chunked(a.numel(), [&](std::int64_t s0, std::int64_t len) {
      const Eigen::Map<const Arr<T>> x(pa + s0, len), gi(pg + s0, len);
      Eigen::Map<Arr<T>>(pd + s0, len) =
          gi * (T(0.5) * (T(1) + (x * T(kInvSqrt2)).erf()) + x * T(kInvSqrt2Pi) * (T(-0.5) * x.square()).exp());
    });
  });
  return dx;
}
}  // namespace

Tensor gelu(const Tensor& a, bool approximate) {
  const kernel::OpScope op_scope("gelu", {&a});

  Tensor out = approximate ? unary("gelu", a, [](auto x) {
    using T = decltype(x);
    return T(0.5) * x * (1 + std::tanh(T(kSqrt2OverPi) * (x + T(kGeluCoeff) * x * x * x)));
  })
                           : gelu_exact(a);
  if (any_requires_grad({&a}))
    record(out, "gelu", {&a}, [a = a.detach(), approximate](const Tensor& g) -> Grads {
      if (!approximate) return {gelu_exact_backward(g, a)};
      // y = x/2 (1 + tanh u), u = c (x + k x^3): dy/dx = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) c (1 + 3k x^2)
      return {binary("gelu_backward", g, a, [](auto gi, auto x) {
        using T = decltype(x);
        const T t = std::tanh(T(kSqrt2OverPi) * (x + T(kGeluCoeff) * x * x * x));
        return gi * (T(0.5) * (1 + t) + T(0.5) * x * (1 - t * t) * T(kSqrt2OverPi) * (1 + 3 * T(kGeluCoeff) * x * x));
      })};
    }, {&a});
  return out;
}

void add_(Tensor& a, const Tensor& b) {
  kernel::check_same_dtype("add_", a, b);
  QKV_CHECK(broadcast_shapes("add_", a.shape(), b.shape()) == a.shape(),
            "add_: cannot add shape {} into shape {} in place", b.shape().str(), a.shape().str());
  a.bump_version();
  kernel::dispatch("add_", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* pa = a.data<T>();
    const T* pb = b.data<T>();
    if (a.shape() == b.shape()) {
      for (std::int64_t i = 0, n = a.numel(); i < n; ++i) pa[i] += pb[i];
    } else {
      kernel::for_each2(a.shape(), contiguous_strides(a.shape()), kernel::broadcast_strides(b.shape(), a.shape()),
                        [&](std::int64_t, std::int64_t oa, std::int64_t ob) { pa[oa] += pb[ob]; });
    }
  });
}

}  // namespace qkv
