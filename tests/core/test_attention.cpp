#include "../support.h"

#include <qkv/core/gradcheck.h>

#include <cmath>
#include <limits>

using namespace qkv;
using Ins = const std::vector<Tensor>&;

namespace {
// The composed reference: per head, softmax(q k^T / sqrt(d) + masks) v from primitive ops.
std::pair<Tensor, Tensor> reference(const Tensor& q, const Tensor& k, const Tensor& v, std::int64_t h, bool causal,
                                    const Tensor& pad) {
  const std::int64_t b = q.size(0), t = q.size(1), dk = q.size(2) / h, dv = v.size(2) / h;
  const auto split = [&](const Tensor& x, std::int64_t d) { return permute(reshape(x, {b, t, h, d}), {0, 2, 1, 3}); };
  Tensor s = matmul(split(q, dk), transpose(split(k, dk), -1, -2)) * (1.0 / std::sqrt(double(dk)));
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  if (causal) {
    Tensor m = Tensor::zeros({t, t});
    for (std::int64_t i = 0; i < t; ++i)
      for (std::int64_t j = i + 1; j < t; ++j) m.data<float>()[i * t + j] = 1;
    s = masked_fill(s, m, kNegInf);
  }
  if (pad.defined()) s = masked_fill(s, reshape(pad, {b, 1, 1, t}), kNegInf);
  const Tensor w = softmax(s, -1);
  return {reshape(permute(matmul(w, split(v, dv)), {0, 2, 1, 3}), {b, t, h * dv}), w};
}
}  // namespace

TEST_CASE("fused attention equals the composed ops: heads, causal, padding, float64 and float32") {
  const Tensor pad = Tensor::from(std::vector<double>{0, 0, 0, 1, 1, 0, 0, 0, 0, 0}, {2, 5});
  for (const std::int64_t heads : {1, 2}) {
    for (const bool causal : {false, true}) {
      for (const bool padded : {false, true}) {
        for (const DType dtype : {kFloat64, kFloat32}) {
          INFO("heads ", heads, " causal ", causal, " padded ", padded, " ", dtype_name(dtype));
          const Tensor q = test::leaf({2, 5, 6}, 1).to(dtype), k = test::leaf({2, 5, 6}, 2).to(dtype);
          const Tensor v = test::leaf({2, 5, 4}, 3).to(dtype);
          const Tensor mask = padded ? pad : Tensor();
          const auto [out, w] = attention(q, k, v, heads, causal, mask);
          const auto [ref_out, ref_w] = reference(q, k, v, heads, causal, mask);
          const double tol = dtype == kFloat64 ? 1e-12 : 1e-5;
          CHECK_CLOSE(out, ref_out, tol, tol);
          CHECK_CLOSE(w, ref_w, tol, tol);
          // The packed layout gives the same result.
          const Tensor qkv = concat({q, k, v}, -1);
          if (heads == 1) CHECK_CLOSE(attention_packed(qkv, 1, 6, 4, causal, mask).first, out, tol, tol);
        }
      }
    }
  }
}

TEST_CASE("fused attention gradients: gradcheck for separate and packed inputs") {
  const Tensor pad = Tensor::from(std::vector<double>{0, 0, 1, 0, 0, 0}, {2, 3});
  for (const bool causal : {false, true}) {
    const Tensor q = test::leaf({2, 3, 4}, 4), k = test::leaf({2, 3, 4}, 5), v = test::leaf({2, 3, 6}, 6);
    CHECK(gradcheck([&](Ins x) { return attention(x[0], x[1], x[2], 2, causal, pad).first; }, {q, k, v}));
    const Tensor packed = test::leaf({2, 3, 2 * (2 + 2 + 3)}, 7);
    CHECK(gradcheck([&](Ins x) { return attention_packed(x[0], 2, 2, 3, causal).first; }, {packed}));
  }
}

TEST_CASE("fused attention bad input") {
  const Tensor q = Tensor::ones({2, 3, 4});
  CHECK_ERROR(attention(q, Tensor::ones({2, 3, 5}), q, 1, false), "attention: q [2, 3, 4] and k [2, 3, 5] must match");
  CHECK_ERROR(attention(q, q, q, 3, false), "attention: heads = 3 must divide the widths of q (4) and v (4)");
  CHECK_ERROR(attention(q, q, q, 1, false, Tensor::zeros({2, 4})), "key_padding_mask must be (B, T) = (2, 3), got [2, 4]");
  CHECK_ERROR(attention_packed(q, 1, 2, 2, false), "packed qkv must be (B, T, H*(2*dk + dv)) = (B, T, 6), got [2, 3, 4]");
}
