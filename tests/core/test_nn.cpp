#include "../support.h"

#include <qkv/core/gradcheck.h>

#include <cmath>

using namespace qkv;
using Args = const nlohmann::json&;
using Ins = const std::vector<Tensor>&;

namespace {
Reduction reduction_of(const std::string& s) {
  return s == "mean" ? Reduction::Mean : s == "sum" ? Reduction::Sum : Reduction::None;
}
}  // namespace

TEST_CASE("nn ops match torch: softmax, log_softmax, cross_entropy, masked_fill, embedding") {
  const std::map<std::string, test::OpFn> ops = {
      {"softmax", [](Ins x, Args a) { return softmax(x[0], a["dim"]); }},
      {"log_softmax", [](Ins x, Args a) { return log_softmax(x[0], a["dim"]); }},
      {"cross_entropy",
       [](Ins x, Args a) {
         return cross_entropy(x[0], x[1], a["ignore_index"], reduction_of(a["reduction"]));
       }},
      {"masked_fill", [](Ins x, Args a) { return masked_fill(x[0], x[1], a["value"]); }},
      {"embedding", [](Ins x, Args) { return embedding(x[0], x[1]); }},
  };
  CHECK(test::check_ops_against_torch(ops) == 11);
}

TEST_CASE("softmax is stable for large logits; cross_entropy too") {
  const Tensor big = Tensor::from({1000.0, 1001.0, 1002.0});
  const auto p = softmax(big, 0).to_vector();
  CHECK(std::isfinite(p[0]));
  CHECK(std::abs(p[0] + p[1] + p[2] - 1.0) < 1e-6);
  const Tensor logits = reshape(Tensor::from({1000.0, -1000.0}), {1, 2});
  const Tensor t = Tensor::from(std::vector<std::int64_t>{1}, {1});
  CHECK(cross_entropy(logits, t).item() == doctest::Approx(2000.0));
}

TEST_CASE("cross_entropy with every target ignored is NaN, like torch") {
  const Tensor logits = Tensor::zeros({2, 3});
  const Tensor t = Tensor::from(std::vector<std::int64_t>{-100, -100}, {2});
  CHECK(std::isnan(cross_entropy(logits, t).item()));
  CHECK(cross_entropy(logits, t, -100, Reduction::Sum).item() == 0.0);
}

TEST_CASE("dropout: identity in eval, seeded, scaled, gradient through the same mask") {
  const Tensor a = Tensor::ones({1000}, kFloat64);
  CHECK(dropout(a, 0.5, false).impl() == a.impl());
  Generator g1(5), g2(5);
  const auto d1 = dropout(a, 0.3, true, g1).to_vector(), d2 = dropout(a, 0.3, true, g2).to_vector();
  CHECK(d1 == d2);
  int zeros = 0;
  for (double v : d1) {
    CHECK((v == 0.0 || std::abs(v - 1.0 / 0.7) < 1e-12));
    zeros += v == 0.0;
  }
  CHECK(zeros > 230);
  CHECK(zeros < 370);
  const Tensor x = test::leaf({4, 5}, 9);
  CHECK(gradcheck([](Ins xs) { Generator g(3); return dropout(xs[0], 0.4, true, g); }, {x}));
  CHECK(dropout(a, 1.0, true).to_vector() == std::vector<double>(1000, 0.0));
}

TEST_CASE("causal mask puts exactly zero weight above the diagonal") {
  const Tensor scores = Tensor::randn({3, 3});
  Tensor mask = Tensor::zeros({3, 3});
  for (int i = 0; i < 3; ++i)
    for (int j = i + 1; j < 3; ++j) mask.data<float>()[i * 3 + j] = 1;
  const auto w = softmax(masked_fill(scores, mask, -INFINITY), -1).to_vector();
  CHECK(w[1] == 0.0f);
  CHECK(w[2] == 0.0f);
  CHECK(w[5] == 0.0f);
  CHECK(w[0] == 1.0f);
}

TEST_CASE("nn bad input names the index and the size") {
  const Tensor w = Tensor::ones({5, 3});
  CHECK_ERROR(embedding(w, Tensor::from(std::vector<std::int64_t>{1, 7}, {2})),
              "embedding: index 7 at position 1 is out of range for num_embeddings 5");
  CHECK_ERROR(embedding(w, Tensor::from(std::vector<std::int64_t>{-1}, {1})), "index -1 at position 0 is out of range");
  CHECK_ERROR(embedding(w, Tensor::ones({2})), "embedding: ids must be int64, got float32");
  const Tensor logits = Tensor::zeros({2, 3});
  CHECK_ERROR(cross_entropy(logits, Tensor::from(std::vector<std::int64_t>{0, 3}, {2})),
              "cross_entropy: target 3 at position 1 is out of range for 3 classes");
  CHECK_ERROR(cross_entropy(logits, Tensor::from(std::vector<std::int64_t>{0}, {1})),
              "cross_entropy: targets must be (N) = (2) for logits [2, 3], got shape [1]");
  CHECK_ERROR(cross_entropy(Tensor::zeros({2, 3, 4}), Tensor::zeros({2}, kInt64)), "logits must be (N, C), got shape [2, 3, 4]");
  CHECK_ERROR(masked_fill(logits, Tensor::ones({3, 3}), 0), "masked_fill: shapes [2, 3] and [3, 3] are not broadcastable");
  CHECK_ERROR(softmax(logits, 2), "softmax: dim 2 is out of range for a tensor of rank 2");
  CHECK_ERROR(dropout(logits, 1.5, true), "dropout: p must be in [0, 1], got 1.5");
}

TEST_CASE("layer_norm without a bias (torch's bias=None) is the one with a zero bias, gradients included") {
  Generator g(7);
  const Tensor x = Tensor::randn({2, 3, 5}, g, kFloat64).requires_grad_();
  const Tensor w = Tensor::randn({5}, g, kFloat64).requires_grad_();
  CHECK_CLOSE(layer_norm(x, w, {}), layer_norm(x, w, Tensor::zeros({5}, kFloat64)), 0, 0);
  CHECK(gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], {}); }, {x, w}));
  CHECK_ERROR(layer_norm(x, w, Tensor::zeros({4}, kFloat64)), "layer_norm: weight [5] and bias [4] must be (D)");
}
