#include <qkv/core/gradcheck.h>
#include <qkv/layers/llama_layers.h>

#include <cmath>

#include "../support.h"

using namespace qkv;
using Ins = const std::vector<Tensor>&;

namespace {
void widen(Module& m, Generator& g) {  // away from small inits, so every path carries gradient
  m.to(kFloat64);
  NoGradGuard ng;
  for (const auto& p : m.parameters()) p.copy_(p + Tensor::randn(p.shape(), g, kFloat64) * 0.3);
}
}  // namespace

TEST_CASE("RMSNorm: weight only, ones at init, gradients pass gradcheck") {
  RMSNorm norm(6, 1e-5);
  CHECK(norm.named_parameters().size() == 1);
  CHECK(norm.weight.to_vector() == std::vector<double>(6, 1.0));
  Generator g(1);
  widen(norm, g);
  const Tensor x = test::leaf({2, 3, 6}, 2);
  CHECK(gradcheck([&](Ins in) { return norm(in[0]); }, {x, norm.weight}));
  CHECK_ERROR(norm(test::leaf({2, 5}, 1)), "RMSNorm: expected input (..., 6), got shape [2, 5]");
}

TEST_CASE("RotaryEmbedding: Hugging Face's frequencies, linear and llama3 scaling, positions from an offset") {
  RotaryEmbedding plain({.head_dim = 8, .theta = 10000});
  const auto& f = plain.inv_freq();
  REQUIRE(f.size() == 4);
  CHECK(f[0] == 1.0);
  CHECK(f[1] == doctest::Approx(0.1).epsilon(1e-6));
  CHECK(f[3] == doctest::Approx(0.001).epsilon(1e-6));
  RotaryEmbedding linear({.head_dim = 8, .theta = 10000, .scaling = "linear", .factor = 4});
  for (std::size_t i = 0; i < 4; ++i) CHECK(linear.inv_freq()[i] == doctest::Approx(f[i] / 4).epsilon(1e-6));
  // llama3, original context 16 (wavelengths 4 and 16 bound the band): 2 pi lies in the band and is interpolated,
  // 62.8 and up are long and divided by the factor
  RotaryEmbedding l3({.head_dim = 8, .theta = 10000, .scaling = "llama3", .factor = 8, .low_freq_factor = 1,
                      .high_freq_factor = 4, .original_max_positions = 16});
  const double smooth = (16 / (2 * M_PI) - 1) / 3;
  CHECK(l3.inv_freq()[0] == doctest::Approx((1 - smooth) / 8 + smooth).epsilon(1e-6));
  for (std::size_t i = 1; i < 4; ++i) CHECK(l3.inv_freq()[i] == doctest::Approx(f[i] / 8).epsilon(1e-6));
  // apply at an offset equals the same rows of a longer sequence
  const Tensor x = test::leaf({1, 7, 2 * 8}, 3);
  const Tensor whole = l3.apply(x, 2);
  CHECK_CLOSE(l3.apply(narrow(x, 1, 3, 4).clone(), 2, 3), narrow(whole, 1, 3, 4), 1e-15, 1e-15);
  // position 0 is the identity
  CHECK_CLOSE(narrow(whole, 1, 0, 1), narrow(x, 1, 0, 1), 0, 0);
  CHECK_THROWS_WITH_AS(RotaryEmbedding({.head_dim = 8, .scaling = "yarn"}), doctest::Contains("rope_scaling type 'yarn' is not supported"), Error);
  CHECK_THROWS_WITH_AS(RotaryEmbedding({.head_dim = 7}), doctest::Contains("head_dim must be even, got 7"), Error);
}

TEST_CASE("GroupedQueryAttention: Hugging Face's names, Hkv-wide k/v projections, gradcheck, cached rows equal") {
  Generator g(4);
  GroupedQueryAttention attn({.d_model = 8, .heads = 4, .kv_heads = 2, .head_dim = 3 * 2, .qkv_bias = true,
                              .rope = {.theta = 100}}, g);
  const auto named = attn.named_parameters();
  REQUIRE(named.size() == 7);  // q, k, v with biases, o without
  CHECK(attn.q_proj->weight.shape() == Shape{24, 8});
  CHECK(attn.k_proj->weight.shape() == Shape{12, 8});
  CHECK(attn.v_proj->weight.shape() == Shape{12, 8});
  CHECK(attn.o_proj->weight.shape() == Shape{8, 24});
  CHECK(!attn.o_proj->bias.defined());
  widen(attn, g);
  const Tensor x = test::leaf({2, 5, 8}, 5);
  CHECK(gradcheck([&](Ins in) { return attn(in[0]); }, {x, attn.q_proj->weight, attn.k_proj->bias, attn.v_proj->weight}));
  // each query head really reads its group's key/value head: a 1-key/value-head layer with equal weights differs
  NoGradGuard ng;
  const Tensor whole = attn.attend(x, {}, false).out;
  KVCacheLayer cache{Tensor::zeros({2, 9, 12}, kFloat64), Tensor::zeros({2, 9, 12}, kFloat64)};
  std::int64_t past = 0;
  for (const std::int64_t n : {2, 1, 2}) {
    CHECK_CLOSE(attn.attend_cached(narrow(x, 1, past, n).clone(), cache, past), narrow(whole, 1, past, n), 1e-12, 1e-12);
    past += n;
  }
  CHECK_THROWS_WITH_AS(GroupedQueryAttention({.d_model = 8, .heads = 4, .kv_heads = 3}),
                       doctest::Contains("kv_heads = 3 must divide heads = 4"), Error);
}

TEST_CASE("SwiGLU: down(silu(gate(x)) * up(x)), gradcheck") {
  Generator g(6);
  SwiGLU mlp({.d = 4, .d_ff = 6}, g);
  widen(mlp, g);
  const Tensor x = test::leaf({3, 4}, 7);
  const Tensor ref = (*mlp.down_proj)(silu((*mlp.gate_proj)(x)) * (*mlp.up_proj)(x));
  CHECK_CLOSE(mlp(x), ref, 0, 0);
  CHECK(gradcheck([&](Ins in) { return mlp(in[0]); }, {x, mlp.gate_proj->weight, mlp.up_proj->weight, mlp.down_proj->weight}));
  CHECK(mlp.named_parameters().size() == 3);  // no biases by default
}
