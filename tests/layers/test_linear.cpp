#include "../support.h"

#include <qkv/layers/linear.h>
#include <qkv/layers/transformer.h>

#include <cmath>

using namespace qkv;
using test::LayerRun;

TEST_CASE("Linear and Embedding match torch (weights loaded by name), gradients included") {
  const std::map<std::string, test::LayerSpec> specs = {
      {"linear",
       {[](const nlohmann::json& o) { return std::make_shared<Linear>(o["in"], o["out"], o["bias"].get<bool>()); },
        [](Module& m, const Tensor& x, const Tensor&) { return LayerRun{m.forward(x), {}}; }}},
      {"embedding",
       {[](const nlohmann::json& o) { return std::make_shared<Embedding>(o["num"], o["dim"]); },
        [](Module& m, const Tensor& x, const Tensor&) { return LayerRun{m.forward(x), {}}; }}},
  };
  CHECK(test::check_layers_against_torch(specs) == 3);
}

TEST_CASE("default inits follow torch: Linear U(-1/sqrt(in), 1/sqrt(in)), Embedding N(0, 1)") {
  Generator g(0);
  Linear lin(64, 200, true, g);
  const double bound = 1.0 / 8.0;
  double lo = 1, hi = -1;
  for (double v : lin.weight.to_vector()) lo = std::min(lo, v), hi = std::max(hi, v);
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(hi > 0.9 * bound);
  Embedding emb(100, 100, g);
  double s = 0, sq = 0;
  for (double v : emb.weight.to_vector()) s += v, sq += v * v;
  CHECK(std::abs(s / 10000) < 0.05);
  CHECK(std::abs(sq / 10000 - 1) < 0.05);
  Linear nb(3, 2, false);
  CHECK(!nb.bias.defined());
  CHECK(nb.named_parameters().size() == 1);
}

TEST_CASE("Linear bad input names the shapes") {
  Linear lin(4, 3);
  CHECK_ERROR(lin.forward(Tensor::ones({2, 5})), "linear: input shape [2, 5] does not end in in_features = 4 (weight [3, 4])");
  CHECK_ERROR(Linear(0, 3), "Linear: in_features and out_features must be positive, got 0 and 3");
  Embedding emb(5, 2);
  CHECK_ERROR(emb.forward(Tensor::from(std::vector<std::int64_t>{5}, {1})), "index 5 at position 0 is out of range for num_embeddings 5");
}

TEST_CASE("every layer takes an options struct; the positional forms build the same layer") {
  Generator a(1), b(1);
  const Linear named({.in_features = 3, .out_features = 2, .bias = false}, a), positional(3, 2, false, b);
  CHECK(named.weight.to_vector() == positional.weight.to_vector());
  CHECK(!named.bias.defined());
  CHECK(Embedding({.num_embeddings = 5, .embedding_dim = 4}, a).weight.shape() == Shape{5, 4});
  CHECK(MLP({.d = 4, .d_ff = 8}, a).fc1->weight.shape() == Shape{8, 4});
  LayerNorm ln({.d = 4, .eps = 1e-3});
  CHECK(ln.weight.shape() == Shape{4});
  Dropout drop({.p = 1.0});
  CHECK(sum(drop.forward(Tensor::ones({3}))).item() == 0.0);
  CHECK(MultiHeadSelfAttention({.d_model = 8, .heads = 2, .bias = true}, a).options().heads == 2);
  CHECK_ERROR(LayerNorm({.d = 4, .eps = 0.0}), "LayerNorm: eps must be positive, got 0");
  CHECK_ERROR(Dropout({.p = 1.5}), "Dropout: p must be in [0, 1], got 1.5");
}
