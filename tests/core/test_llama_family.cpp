#include "../support.h"

#include <qkv/core/gradcheck.h>

#include <cmath>

using namespace qkv;
using Ins = const std::vector<Tensor>&;

TEST_CASE("rms_norm equals x / sqrt(mean(x^2) + eps) * weight, and its gradients pass gradcheck") {
  const Tensor x = test::leaf({2, 3, 5}, 1), w = test::leaf({5}, 2);
  const Tensor ref = x * rsqrt(mean(x * x, {-1}, true) + 1e-5) * w;
  CHECK_CLOSE(rms_norm(x, w, 1e-5), ref, 1e-13, 1e-13);
  CHECK(gradcheck([](Ins in) { return rms_norm(in[0], in[1], 1e-5); }, {x, w}));
  const auto g = test::leaf({2, 3, 5}, 3);
  const auto got = grad({sum(rms_norm(x, w, 1e-5) * g)}, {x, w});
  const auto want = grad({sum(ref * g)}, {x, w});
  CHECK_CLOSE(got[0], want[0], 1e-12, 1e-12);
  CHECK_CLOSE(got[1], want[1], 1e-12, 1e-12);
  // float32 agrees with float64 to float32's precision
  CHECK_CLOSE(rms_norm(x.to(kFloat32), w.to(kFloat32), 1e-5).to(kFloat64), ref, 1e-5, 1e-6);
  CHECK_ERROR(rms_norm(x, test::leaf({4}, 1)), "rms_norm: expected input (..., 4), got shape [2, 3, 5]");
  CHECK_ERROR(rms_norm(x, test::leaf({5, 1}, 1)), "rms_norm: weight must be (D), got [5, 1]");
  CHECK_ERROR(rms_norm(x, w.to(kFloat32)), "rms_norm: mixed dtypes");
}

TEST_CASE("rope rotates each head's pairs (j, j + d/2) by its angle, as Hugging Face's rotate_half") {
  const std::int64_t heads = 2, d = 4, t = 3;
  const Tensor x = test::leaf({1, t, heads * d}, 4);
  std::vector<double> angle(static_cast<std::size_t>(t * d / 2));
  for (std::size_t i = 0; i < angle.size(); ++i) angle[i] = 0.3 * double(i) - 0.5;
  std::vector<double> c, s;
  for (double a : angle) c.push_back(std::cos(a)), s.push_back(std::sin(a));
  const Tensor cs = Tensor::from(c, {t, d / 2}), sn = Tensor::from(s, {t, d / 2});
  const Tensor out = rope(x, cs, sn, heads);
  // x * cat(cos, cos) + rotate_half(x) * cat(sin, sin), rotate_half(x) = cat(-x2, x1), head by head
  std::vector<Tensor> heads_out;
  for (std::int64_t h = 0; h < heads; ++h) {
    const Tensor x1 = narrow(x, 2, h * d, d / 2), x2 = narrow(x, 2, h * d + d / 2, d / 2);
    heads_out.push_back(concat({x1 * cs - x2 * sn, x2 * cs + x1 * sn}, 2));
  }
  CHECK_CLOSE(out, concat(heads_out, 2), 1e-14, 1e-14);
  // a rotation keeps each pair's length
  CHECK(sum(out * out).item() == doctest::Approx(sum(x * x).item()).epsilon(1e-12));
  CHECK(gradcheck([&](Ins in) { return rope(in[0], cs, sn, heads); }, {x}));
  CHECK_ERROR(rope(x, cs, sn, 3), "rope: expected x (B, T, H*d) with H = 3 heads of an even width d, got shape [1, 3, 8]");
  CHECK_ERROR(rope(x, narrow(cs, 0, 0, 2), narrow(sn, 0, 0, 2), heads), "rope: cos and sin must be (T, d/2) = (3, 2)");
  CHECK_ERROR(rope(x, test::leaf({t, d / 2}, 9), sn, heads), "rope: cos and sin are constants");
}
