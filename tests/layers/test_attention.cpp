#include "../support.h"

#include <qkv/layers/attention.h>

using namespace qkv;
using test::LayerRun;

namespace {
const test::LayerSpec kSelfAttention = {
    [](const nlohmann::json& o) {
      return std::make_shared<SelfAttention>(SelfAttentionOptions{.d_model = o["d_model"],
                                                                  .d_k = o["d_k"],
                                                                  .d_v = o["d_v"],
                                                                  .bias = o["bias"],
                                                                  .causal = o["causal"]});
    },
    [](Module& m, const Tensor& x, const Tensor& mask) {
      auto [out, w] = static_cast<SelfAttention&>(m).attend(x, mask);
      return LayerRun{out, w};
    }};
const test::LayerSpec kMultiHead = {
    [](const nlohmann::json& o) {
      return std::make_shared<MultiHeadSelfAttention>(MultiHeadSelfAttentionOptions{
          .d_model = o["d_model"], .heads = o["heads"], .bias = o["bias"], .causal = o["causal"]});
    },
    [](Module& m, const Tensor& x, const Tensor& mask) {
      auto [out, w] = static_cast<MultiHeadSelfAttention&>(m).attend(x, mask);
      return LayerRun{out, w};
    }};
}  // namespace

TEST_CASE("SelfAttention matches the explicit W^Q/W^K/W^V math in torch (causal, bias, padding)") {
  CHECK(test::check_layers_against_torch({{"self_attention", kSelfAttention}}) == 6);
}

TEST_CASE("MultiHeadSelfAttention matches nn.MultiheadAttention with split weights") {
  CHECK(test::check_layers_against_torch({{"multi_head_self_attention", kMultiHead}}) == 3);
}

TEST_CASE("causal rows put exactly zero weight above the diagonal; rows sum to one") {
  Generator g(1);
  SelfAttention sa({.d_model = 8, .causal = true}, g);
  MultiHeadSelfAttention mh({.d_model = 8, .heads = 2, .causal = true}, g);
  const Tensor x = Tensor::randn({2, 5, 8}, g);
  for (const Tensor& w : {sa.attend(x).weights, reshape(mh.attend(x).weights, {4, 5, 5})}) {
    const auto v = w.to_vector();
    for (std::int64_t b = 0; b < w.size(0); ++b)
      for (int i = 0; i < 5; ++i) {
        double row = 0;
        for (int j = 0; j < 5; ++j) {
          const double wij = v[static_cast<std::size_t>(b * 25 + i * 5 + j)];
          if (j > i) CHECK(wij == 0.0);
          row += wij;
        }
        CHECK(row == doctest::Approx(1.0).epsilon(1e-6));
      }
  }
}

TEST_CASE("d_k, d_v default to d_model; names are w_q, w_k, w_v") {
  SelfAttention sa({.d_model = 6, .d_v = 2});
  CHECK(sa.options().d_k == 6);
  CHECK(sa.w_v->weight.shape() == Shape{2, 6});
  CHECK(sa.forward(Tensor::ones({1, 3, 6})).shape() == Shape{1, 3, 2});
  std::vector<std::string> names;
  for (auto& [n, t] : sa.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"w_q.weight", "w_k.weight", "w_v.weight"});
}

TEST_CASE("attention bad input") {
  SelfAttention sa({.d_model = 4});
  CHECK_ERROR(sa.forward(Tensor::ones({2, 3, 5})), "SelfAttention: expected input (B, T, 4), got shape [2, 3, 5]");
  CHECK_ERROR(sa.attend(Tensor::ones({2, 3, 4}), Tensor::zeros({2, 4})),
              "SelfAttention: key_padding_mask must be (B, T) = (2, 3), got shape [2, 4]");
  CHECK_ERROR(MultiHeadSelfAttention({.d_model = 10, .heads = 3}), "MultiHeadSelfAttention: d_model = 10 is not divisible by heads = 3");
  MultiHeadSelfAttention mh({.d_model = 8, .heads = 2});
  CHECK_ERROR(mh.forward(Tensor::ones({3, 8})), "MultiHeadSelfAttention: expected input (B, T, 8), got shape [3, 8]");
  mh.to(kFloat64);  // a float32 input after module.to(kFloat64): named at the layer, not at an internal product
  CHECK_ERROR(mh.forward(Tensor::ones({1, 3, 8})), "MultiHeadSelfAttention: input is float32 but the parameters "
                                                   "(w_q.weight, ...) are float64");
  CHECK_ERROR(sa.forward(Tensor()), "SelfAttention: the input is an undefined tensor");
}

TEST_CASE("attention weights handed out for inspection never change a gradient") {
  const auto input_grad = [](bool write_weights) {
    Generator gen(3);
    SelfAttention attn({.d_model = 6, .d_k = 4, .d_v = 4, .causal = true}, gen);
    attn.to(kFloat64);
    const Tensor x = Tensor::randn({2, 5, 6}, gen, kFloat64).requires_grad_();
    const auto [out, weights] = attn.attend(x);
    REQUIRE(weights.defined());
    CHECK(!weights.requires_grad());
    if (write_weights) weights.fill_(0.0);
    sum(out * out).backward();
    return x.grad().to_vector();
  };
  CHECK(input_grad(true) == input_grad(false));
}
