#include "../support.h"

#include <qkv/core/gradcheck.h>
#include <qkv/core/ops/kernel.h>

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
          const auto out_w = attention(q, k, v, heads, causal, mask);  // (named: clang 14 lets no lambda capture a structured binding)
          const auto& out = out_w.first;
          const auto& w = out_w.second;
          const auto ref_out_ref_w = reference(q, k, v, heads, causal, mask);  // (named: clang 14 lets no lambda capture a structured binding)
          const auto& ref_out = ref_out_ref_w.first;
          const auto& ref_w = ref_out_ref_w.second;
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
  CHECK_ERROR(attention(q, Tensor::ones({2, 3, 5}), q, 1, false), "attention: k's width 5 must be a number of key/value heads of q's head width 4");
  CHECK_ERROR(attention(q, q, q, 3, false), "attention: heads = 3 must divide the width of q (4)");
  CHECK_ERROR(attention(q, q, q, 1, false, Tensor::zeros({2, 4})), "key_padding_mask must be (B, T) = (2, 3), got [2, 4]");
  CHECK_ERROR(attention_packed(q, 1, 2, 2, false), "packed qkv must be (B, T, H*(2*dk + dv)) = (B, T, 6), got [2, 3, 4]");
}

namespace {
// Small blocks for the duration of a scope, so a short sequence spans several query and key blocks.
struct SmallBlocks {
  SmallBlocks(std::int64_t q, std::int64_t k) { kernel::set_attention_blocks(q, k); }
  ~SmallBlocks() { kernel::set_attention_blocks(0, 0); }
};
}  // namespace

TEST_CASE("blocked attention (online softmax over key blocks, causal blocks skipped) equals the composed ops") {
  // T = 19 with query blocks of 4 and key blocks of 8: partial blocks at both ends, diagonal blocks, and (causal)
  // key blocks wholly above the diagonal that forward and backward skip.
  const SmallBlocks small(4, 8);
  Tensor pad = Tensor::zeros({2, 19});
  for (int j : {3, 5, 6, 17}) pad.data<float>()[19 + j] = 1;  // batch 1 hides keys 3, 5, 6 and 17
  for (const bool causal : {false, true}) {
    for (const bool padded : {false, true}) {
      INFO("causal ", causal, " padded ", padded);
      const Tensor q = test::leaf({2, 19, 6}, 11), k = test::leaf({2, 19, 6}, 12), v = test::leaf({2, 19, 4}, 13);
      const Tensor mask = padded ? pad : Tensor();
      const auto ref_out_ref_w = reference(q, k, v, 2, causal, mask);  // (named: clang 14 lets no lambda capture a structured binding)
      const auto& ref_out = ref_out_ref_w.first;
      const auto& ref_w = ref_out_ref_w.second;
      const Tensor r = test::leaf(ref_out.shape(), 14);
      auto grads = [&](const Tensor& out) {
        for (const Tensor* x : {&q, &k, &v}) x->grad().defined() ? (void)x->grad().zero_() : (void)0;
        sum(out * r).backward();
        return std::vector<Tensor>{q.grad().clone(), k.grad().clone(), v.grad().clone()};
      };
      const auto ref_g = grads(ref_out);
      const auto out_w = attention(q, k, v, 2, causal, mask);  // (named: clang 14 lets no lambda capture a structured binding)
      const auto& out = out_w.first;
      const auto& w = out_w.second;
      const auto g = grads(out);
      CHECK_CLOSE(out, ref_out, 1e-12, 1e-12);
      CHECK_CLOSE(w, ref_w, 1e-12, 1e-12);
      for (int i = 0; i < 3; ++i) CHECK_CLOSE(g[static_cast<std::size_t>(i)], ref_g[static_cast<std::size_t>(i)], 1e-11, 1e-11);
    }
  }
  const Tensor q = test::leaf({1, 11, 4}, 15), k = test::leaf({1, 11, 4}, 16), v = test::leaf({1, 11, 6}, 17);
  for (const bool causal : {false, true})
    CHECK(gradcheck([&](Ins x) { return attention(x[0], x[1], x[2], 2, causal).first; }, {q, k, v}));
  const Tensor packed = test::leaf({1, 11, 2 * (2 + 2 + 3)}, 18);
  CHECK(gradcheck([&](Ins x) { return attention_packed(x[0], 2, 2, 3, true).first; }, {packed}));
}

TEST_CASE("attention weights are computed on request and detached: changing them cannot change a gradient") {
  const Tensor q = test::leaf({1, 4, 4}, 21), k = test::leaf({1, 4, 4}, 22), v = test::leaf({1, 4, 4}, 23);
  CHECK_FALSE(attention(q, k, v, 1, false, {}, /*need_weights=*/false).second.defined());
  auto [out, w] = attention(q, k, v, 1, false);
  CHECK_FALSE(w.requires_grad());
  sum(out).backward();
  const auto before = q.grad().to_vector();
  q.grad().zero_();
  auto [out2, w2] = attention(q, k, v, 1, false);
  w2.fill_(0.0);  // in 0.1 the weights shared storage with what backward used
  sum(out2).backward();
  CHECK(q.grad().to_vector() == before);
}

TEST_CASE("a row whose every key is hidden outputs NaN, as torch does, and passes no gradient") {
  const Tensor q = test::leaf({1, 3, 2}, 31), k = test::leaf({1, 3, 2}, 32), v = test::leaf({1, 3, 2}, 33);
  const Tensor out = attention(q, k, v, 1, false, Tensor::ones({1, 3})).first;
  for (double x : out.to_vector()) CHECK(std::isnan(x));
  // Causal, key 0 hidden: query 0 sees nothing; queries 1 and 2 see keys 1 and 2 as usual.
  const Tensor hide0 = Tensor::from(std::vector<double>{1, 0, 0}, {1, 3});
  const Tensor o = attention(q, k, v, 1, true, hide0).first;  // (not a structured binding: clang 14 lets no lambda capture one)
  const auto ov = o.to_vector();
  CHECK(std::isnan(ov[0]));
  CHECK(std::isfinite(ov[2]));
  CHECK(std::isfinite(ov[4]));
  sum(narrow(o, 1, 1, 2)).backward();  // the loss reads only the finite rows
  const auto gq = q.grad().to_vector(), gk = k.grad().to_vector(), gv = v.grad().to_vector();
  CHECK(gq[0] == 0.0);
  CHECK(gq[1] == 0.0);
  for (double x : gq) CHECK(std::isfinite(x));
  for (double x : gk) CHECK(std::isfinite(x));
  for (double x : gv) CHECK(std::isfinite(x));
  // Everything else is as if position 0 did not exist: the composed ops on positions 1 and 2 alone.
  const auto tail = [](const Tensor& x) { return narrow(x.detach(), 1, 1, 2).clone().requires_grad_(); };
  const Tensor q2 = tail(q), k2 = tail(k), v2 = tail(v);
  const Tensor ref = reference(q2, k2, v2, 1, true, {}).first;
  CHECK_CLOSE(narrow(o, 1, 1, 2), ref, 1e-12, 1e-12);
  sum(ref).backward();
  CHECK_CLOSE(narrow(q.grad(), 1, 1, 2), q2.grad(), 1e-12, 1e-12);
  CHECK_CLOSE(narrow(k.grad(), 1, 1, 2), k2.grad(), 1e-12, 1e-12);
  CHECK_CLOSE(narrow(v.grad(), 1, 1, 2), v2.grad(), 1e-12, 1e-12);
  CHECK(gk[0] == 0.0);  // the hidden key gets nothing
  CHECK(gv[0] == 0.0);
}

TEST_CASE("hidden keys get exactly zero weight in float32 and float64") {
  // Eigen's packet exp of -inf is ~5.6e-309 for doubles, not 0: a hidden key (a future token) kept a sliver of
  // weight. Score blocks of 9 to 1600 values cover full packets, narrower tails and scalar ends.
  for (const DType dtype : {kFloat64, kFloat32}) {
    for (const std::int64_t t : {3, 12, 27, 40}) {
      INFO("T = ", t, " ", dtype_name(dtype));
      const Tensor q = test::leaf({1, t, 8}, 41).to(dtype), k = test::leaf({1, t, 8}, 42).to(dtype);
      const Tensor v = test::leaf({1, t, 8}, 43).to(dtype);
      Tensor pad = Tensor::zeros({1, t});
      pad.data<float>()[1] = 1;
      const auto w = attention(q, k, v, 1, true, pad).second.to_vector();
      for (std::int64_t i = 0; i < t; ++i)
        for (std::int64_t j = 0; j < t; ++j)
          if (j == 1 || j > i) CHECK(w[static_cast<std::size_t>(i * t + j)] == 0.0);  // padded or in the future
    }
  }
}

TEST_CASE("cached attention: new rows over the cached keys equal the same rows of the whole causal sequence") {
  // T = 19 in steps of 5, 1, 1, 7, 5 tokens, with blocks small enough that the steps cross block edges.
  const SmallBlocks small(4, 8);
  const std::int64_t h = 2, dk = 3, dv = 2, t = 19, width = h * (2 * dk + dv);
  const Tensor qkv = test::leaf({2, t, width}, 51);
  NoGradGuard no_grad;
  const Tensor whole = attention_packed(qkv, h, dk, dv, true, {}, false).first;
  const Tensor kc = Tensor::zeros({2, 24, h * dk}, kFloat64), vc = Tensor::zeros({2, 24, h * dv}, kFloat64);
  std::int64_t past = 0;
  for (const std::int64_t n : {5, 1, 1, 7, 5}) {
    INFO("past ", past, " n ", n);
    const Tensor out = attention_cached(narrow(qkv, 1, past, n).clone(), kc, vc, past, h, dk, dv);
    CHECK_CLOSE(out, narrow(whole, 1, past, n), 1e-12, 1e-12);
    past += n;
  }
  CHECK_CLOSE(narrow(kc, 1, 0, t), narrow(qkv, 2, h * dk, h * dk), 0, 0);  // the cache holds the keys
}

TEST_CASE("cached attention bad input") {
  const Tensor qkv = Tensor::ones({1, 2, 8}, kFloat64);
  const Tensor kc = Tensor::zeros({1, 4, 3}, kFloat64), vc = Tensor::zeros({1, 4, 2}, kFloat64);
  NoGradGuard no_grad;
  CHECK_ERROR(attention_cached(qkv, kc, vc, 3, 1, 3, 2), "attention_cached: 3 cached + 2 new tokens do not fit a cache of 4 positions");
  CHECK_ERROR(attention_cached(qkv, kc, vc, 0, 1, 2, 2), "packed qkv must be (B, n, H*(2*dk + dv)) = (B, n, 6), got [1, 2, 8]");
  CHECK_ERROR(attention_cached(qkv, vc, kc, 0, 1, 3, 2), "caches must be (B, C, Hkv*dk) = (1, C, 3) and (B, C, Hkv*dv) = (1, C, 2), got [1, 4, 2] and [1, 4, 3]");
  CHECK_ERROR(attention_cached(qkv, kc.to(kFloat32), vc, 0, 1, 3, 2), "attention_cached: mixed dtypes");
}

TEST_CASE("cached attention is inference only") {
  const Tensor qkv = test::leaf({1, 2, 8}, 52);
  const Tensor kc = Tensor::zeros({1, 4, 3}, kFloat64), vc = Tensor::zeros({1, 4, 2}, kFloat64);
  CHECK_ERROR(attention_cached(qkv, kc, vc, 0, 1, 3, 2), "attention_cached: inference only");
}

namespace {
// k (B, T, Hkv*d) with each key/value head repeated for the H / Hkv query heads that share it (repeat_kv).
Tensor repeat_kv(const Tensor& k, std::int64_t heads, std::int64_t kv_heads) {
  const std::int64_t d = k.size(2) / kv_heads;
  std::vector<Tensor> parts;
  for (std::int64_t h = 0; h < heads; ++h) parts.push_back(narrow(k, 2, (h / (heads / kv_heads)) * d, d));
  return concat(parts, 2);
}
}  // namespace

TEST_CASE("grouped-query attention equals multi-head attention over repeated key/value heads, both ways") {
  const SmallBlocks small(4, 8);  // several blocks each way
  for (const std::int64_t kv : {1, 2, 4}) {
    for (const bool causal : {false, true}) {
      INFO("kv_heads ", kv, " causal ", causal);
      const std::int64_t h = 4, dk = 3, dv = 2, t = 11;
      const Tensor q = test::leaf({2, t, h * dk}, 60), k = test::leaf({2, t, kv * dk}, 61);
      const Tensor v = test::leaf({2, t, kv * dv}, 62), g = test::leaf({2, t, h * dv}, 63);
      Tensor pad = Tensor::zeros({2, t}, kFloat64);
      pad.data<double>()[t + 3] = 1;  // a padded key in batch 1
      // (not structured bindings: clang 14 cannot capture them in doctest's lambdas)
      const auto got = attention(q, k, v, h, causal, pad, true);
      const auto want_ = attention(q, repeat_kv(k, h, kv), repeat_kv(v, h, kv), h, causal, pad, true);
      const Tensor out = got.first, ref = want_.first;
      CHECK_CLOSE(out, ref, 1e-12, 1e-12);
      CHECK_CLOSE(got.second, want_.second, 1e-12, 1e-12);
      const auto grads = grad({sum(out * g)}, {q, k, v});
      const auto want = grad({sum(ref * g)}, {q, k, v});
      for (std::size_t i = 0; i < 3; ++i) CHECK_CLOSE(grads[i], want[i], 1e-12, 1e-12);
    }
  }
  const Tensor q = test::leaf({1, 5, 4 * 2}, 64), k = test::leaf({1, 5, 2}, 65), v = test::leaf({1, 5, 3}, 66);
  CHECK(gradcheck([&](Ins x) { return attention(x[0], x[1], x[2], 4, true).first; }, {q, k, v}));
  CHECK_ERROR(attention(q, test::leaf({1, 5, 6}, 1), v, 4, true), "attention: k's width 6 must be a number of key/value heads of q's head width 2 (q is 8 = 4 heads) that divides the 4 query heads");
  CHECK_ERROR(attention(q, test::leaf({1, 4, 2}, 1), v, 4, true), "must share their (B, T)");
}

TEST_CASE("cached grouped-query attention: the caches hold the key/value heads only, rows equal the whole sequence") {
  const SmallBlocks small(4, 8);
  const std::int64_t h = 6, kv = 2, dk = 4, dv = 3, t = 13;
  const Tensor q = test::leaf({2, t, h * dk}, 70), k = test::leaf({2, t, kv * dk}, 71), v = test::leaf({2, t, kv * dv}, 72);
  NoGradGuard no_grad;
  const Tensor whole = attention(q, k, v, h, true, {}, false).first;
  const Tensor kc = Tensor::zeros({2, 16, kv * dk}, kFloat64), vc = Tensor::zeros({2, 16, kv * dv}, kFloat64);
  std::int64_t past = 0;
  for (const std::int64_t n : {4, 1, 1, 7}) {
    INFO("past ", past, " n ", n);
    const Tensor out = attention_cached(narrow(q, 1, past, n).clone(), narrow(k, 1, past, n).clone(),
                                        narrow(v, 1, past, n).clone(), kc, vc, past, h);
    CHECK_CLOSE(out, narrow(whole, 1, past, n), 1e-12, 1e-12);
    past += n;
  }
  CHECK_CLOSE(narrow(vc, 1, 0, t), v, 0, 0);
  CHECK_ERROR(attention_cached(q, k, v, kc, vc, 10, h), "attention_cached: 10 cached + 13 new tokens do not fit a cache of 16 positions");
}
