// Pointwise math beyond the arithmetic in elementwise.cpp: sin, cos, abs, rsqrt, erf, log1p, silu, clamp, and the
// binary minimum and maximum (broadcasting). Gradients as torch defines them at the kinks: abs' is 0 at 0, clamp
// passes the gradient where min <= x <= max, and minimum/maximum split it evenly between tied inputs.
#include "qkv/core/ops/kernel.h"

#include <cmath>
#include <limits>
#include <numbers>

namespace qkv {
using kernel::binary;
using kernel::unary;

namespace {

// A unary op whose derivative is a function of its input: out = f(x), d out / dx = df(x).
template <class F, class D>
Tensor pointwise(const char* name, const char* backward_name, const Tensor& a, F f, D df) {
  const kernel::OpScope op_scope(name, {&a});
  Tensor out = unary(name, a, f);
  if (any_requires_grad({&a}))
    record(out, name, {&a}, [x = a.detach(), backward_name, df](const Tensor& g) -> Grads {
      return {binary(backward_name, g, x, [df](auto gi, auto xi) { return gi * df(xi); })};
    }, {&a});
  return out;
}

}  // namespace

Tensor sin(const Tensor& a) {
  return pointwise("sin", "sin_backward", a, [](auto x) { return std::sin(x); }, [](auto x) { return std::cos(x); });
}

Tensor cos(const Tensor& a) {
  return pointwise("cos", "cos_backward", a, [](auto x) { return std::cos(x); }, [](auto x) { return -std::sin(x); });
}

Tensor abs(const Tensor& a) {
  return pointwise("abs", "abs_backward", a, [](auto x) { return std::abs(x); }, [](auto x) {
    using T = decltype(x);
    return x > 0 ? T(1) : x < 0 ? T(-1) : T(0);
  });
}

Tensor sign(const Tensor& a) {
  const kernel::OpScope op_scope("sign", {&a});
  Tensor out = unary("sign", a, [](auto x) {
    using T = decltype(x);
    return x > 0 ? T(1) : x < 0 ? T(-1) : x;  // 0 and NaN stay
  });
  if (any_requires_grad({&a}))  // zero almost everywhere, as torch's
    record(out, "sign", {&a}, [shape = a.shape(), dtype = a.dtype()](const Tensor&) -> Grads {
      return {Tensor::zeros(shape, dtype)};
    });
  return out;
}

Tensor rsqrt(const Tensor& a) {
  return pointwise("rsqrt", "rsqrt_backward", a, [](auto x) { return 1 / std::sqrt(x); }, [](auto x) {
    using T = decltype(x);
    return T(-0.5) / (x * std::sqrt(x));
  });
}

Tensor erf(const Tensor& a) {
  return pointwise("erf", "erf_backward", a, [](auto x) { return std::erf(x); }, [](auto x) {
    using T = decltype(x);
    return T(2 / std::sqrt(std::numbers::pi)) * std::exp(-x * x);
  });
}

Tensor log1p(const Tensor& a) {
  return pointwise("log1p", "log1p_backward", a, [](auto x) { return std::log1p(x); }, [](auto x) { return 1 / (1 + x); });
}

Tensor silu(const Tensor& a) {
  return pointwise("silu", "silu_backward", a, [](auto x) { return x / (1 + std::exp(-x)); }, [](auto x) {
    using T = decltype(x);
    const T s = 1 / (1 + std::exp(-x));
    return s * (1 + x * (1 - s));
  });
}

Tensor clamp(const Tensor& a, std::optional<double> min, std::optional<double> max) {
  const kernel::OpScope op_scope("clamp", {&a});
  QKV_CHECK(min || max, "clamp: at least one of min and max must be given");
  QKV_CHECK(!min || !max || *min <= *max, "clamp: min = {} is greater than max = {}", *min, *max);
  const double lo = min.value_or(-std::numeric_limits<double>::infinity());
  const double hi = max.value_or(std::numeric_limits<double>::infinity());
  Tensor out = unary("clamp", a, [lo, hi](auto x) {
    using T = decltype(x);
    return x < T(lo) ? T(lo) : x > T(hi) ? T(hi) : x;  // NaN stays NaN
  });
  if (any_requires_grad({&a}))
    record(out, "clamp", {&a}, [x = a.detach(), lo, hi](const Tensor& g) -> Grads {
      return {binary("clamp_backward", g, x, [lo, hi](auto gi, auto xi) {
        using T = decltype(xi);
        return xi >= T(lo) && xi <= T(hi) ? gi : T(0);
      })};
    }, {&a});
  return out;
}

namespace {

// maximum (larger = true) or minimum: NaN wins, as torch's; backward gives each input the gradient where it was
// chosen and half of it where the two were equal.
Tensor extremum(const char* name, const Tensor& a, const Tensor& b, bool larger) {
  const kernel::OpScope op_scope(name, {&a, &b});
  Tensor out = binary(name, a, b, [larger](auto x, auto y) {
    if (x != x) return x;
    if (y != y) return y;
    return (larger ? x > y : x < y) ? x : y;
  });
  if (any_requires_grad({&a, &b}))
    record(out, name, {&a, &b}, [x = a.detach(), y = b.detach(), larger](const Tensor& g) -> Grads {
      const Tensor wins_a = larger ? gt(x, y) : lt(x, y), wins_b = larger ? gt(y, x) : lt(y, x);
      const Tensor half = eq(x, y) * 0.5;
      return {sum_to(g * (wins_a + half), x.shape()), sum_to(g * (wins_b + half), y.shape())};
    }, {&a, &b});
  return out;
}

}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) { return extremum("maximum", a, b, true); }
Tensor minimum(const Tensor& a, const Tensor& b) { return extremum("minimum", a, b, false); }

}  // namespace qkv
