#include <qkv/core/gradcheck.h>
#include <qkv/layers/gpt2.h>

#include <cmath>

#include "../support.h"

using namespace qkv;

namespace {

ModelConfig small(bool bias = true, bool tie = true) {
  return {.kind = "gpt2",
          .vocab_size = 11,
          .seq_len = 9,
          .d_model = 8,
          .heads = 2,
          .layers = 2,
          .causal = true,
          .bias = bias,
          .tie_embeddings = tie};
}

Tensor some_ids(std::int64_t b, std::int64_t t, std::int64_t vocab) {
  std::vector<std::int64_t> v;
  for (std::int64_t i = 0; i < b * t; ++i) v.push_back((i * 7 + 3) % vocab);
  return Tensor::from(v, {b, t});
}

double std_of(const Tensor& t) {
  const auto v = t.to_vector();
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s / double(v.size()));
}

}  // namespace

TEST_CASE("gpt2: nanoGPT's parameter names, GPT-2's initialisation, and 124M parameters for GPT-2 small") {
  Generator g(0);
  auto model = std::dynamic_pointer_cast<GPT2>(build_model(small(), g));
  REQUIRE(model);
  const auto named = model->named_parameters();
  CHECK(named.front().first == "transformer.wte.weight");
  CHECK(model->parameter("transformer.h.1.attn.c_attn.weight").shape() == Shape{24, 8});
  CHECK(model->parameter("transformer.h.0.mlp.c_proj.weight").shape() == Shape{8, 32});
  CHECK(named.back().first == "transformer.ln_f.bias");
  CHECK(model->lm_head == nullptr);  // tied: no lm_head.weight
  CHECK(double(model->num_parameters()) == parameter_count(small()));
  CHECK(double(build_model(small(false, false), g)->num_parameters()) == parameter_count(small(false, false)));
  CHECK_THROWS_WITH_AS(build_model(small(false, false))->parameter("transformer.ln_f.bias"),
                       doctest::Contains("ln_f.bias"), Error);

  // the standard deviations GPT-2 draws (a wide layer, so the estimate is close): 0.02, and 0.02 / sqrt(2 L)
  Generator g2(1);
  ModelConfig wide{
      .kind = "gpt2", .vocab_size = 64, .seq_len = 16, .d_model = 256, .heads = 4, .layers = 8, .causal = true};
  auto w = build_model(wide, g2);
  CHECK(std_of(w->parameter("transformer.wte.weight")) == doctest::Approx(0.02).epsilon(0.03));
  CHECK(std_of(w->parameter("transformer.h.3.attn.c_attn.weight")) == doctest::Approx(0.02).epsilon(0.03));
  CHECK(std_of(w->parameter("transformer.h.3.mlp.c_proj.weight")) == doctest::Approx(0.02 / 4).epsilon(0.03));
  CHECK(std_of(w->parameter("transformer.h.3.attn.c_proj.weight")) == doctest::Approx(0.02 / 4).epsilon(0.03));
  CHECK(w->parameter("transformer.h.3.attn.c_attn.bias").to_vector() == std::vector<double>(768, 0.0));

  ModelConfig gpt2_small{
      .kind = "gpt2", .vocab_size = 50257, .seq_len = 1024, .d_model = 768, .heads = 12, .layers = 12, .causal = true};
  CHECK(parameter_count(gpt2_small) == 124439808.0);  // GPT-2 small as OpenAI and Hugging Face count it
}

TEST_CASE("gpt2: gradients of every parameter (float64 finite differences), tied and untied, with and without biases") {
  for (const bool bias : {true, false})
    for (const bool tie : {true, false}) {
      INFO("bias " << bias << ", tie " << tie);
      ModelConfig c = small(bias, tie);
      c.vocab_size = 5, c.seq_len = 4, c.d_model = 4, c.layers = 1;
      Generator g(3);
      auto model = build_model(c, g);
      model->to(kFloat64);
      for (const auto& p : model->parameters()) {  // away from GPT-2's tiny init, so every path carries gradient
        NoGradGuard ng;
        p.copy_(p + Tensor::randn(p.shape(), g, kFloat64) * 0.3);
      }
      const Tensor ids = some_ids(2, 4, c.vocab_size);
      CHECK(gradcheck_error([&](const std::vector<Tensor>&) { return model->logits(ids); }, model->parameters()) == "");
    }
}

TEST_CASE("gpt2: the tied head is one tensor whose gradient sums both uses") {
  Generator g(4);
  auto model = build_model(small(), g);
  model->to(kFloat64);
  const Tensor ids = some_ids(1, 5, 11);
  sum(model->logits(ids)).backward();
  const Tensor both = model->parameter("transformer.wte.weight").grad().clone();
  CHECK(both.shape() == Shape{11, 8});
  // the head's share, d/dW_v of sum over t of h_t . W_v, is the same for every row v; an id that is never an
  // input gets only that: equal rows for ids 1 and 4 (the input ids are 3, 10, 6, 2, 9)
  const auto used = ids.to_vector();
  CHECK(std::find(used.begin(), used.end(), 1.0) == used.end());
  CHECK(std::find(used.begin(), used.end(), 4.0) == used.end());
  CHECK(narrow(both, 0, 1, 1).to_vector() == narrow(both, 0, 4, 1).to_vector());
  CHECK(narrow(both, 0, 1, 1).to_vector() != std::vector<double>(8, 0.0));
  // and an input id's row differs from them by its embedding gradient
  CHECK(narrow(both, 0, 3, 1).to_vector() != narrow(both, 0, 1, 1).to_vector());
}

TEST_CASE("gpt2: the KV cache gives the full forward's logits, and dropout is off in eval") {
  ModelConfig c = small();
  c.dropout = 0.2;
  Generator g(5);
  auto model = build_model(c, g);
  model->to(kFloat64);
  model->eval();
  const Tensor ids = some_ids(2, 9, 11);
  const Tensor whole = model->logits(ids);
  KVCache cache = model->make_cache(2);
  for (const std::int64_t n : {3, 1, 4, 1}) {
    const std::int64_t past = cache.length;
    CHECK_CLOSE(model->logits(narrow(ids, 1, past, n).clone(), cache), narrow(whole, 1, past, n), 1e-12, 1e-12);
  }
  model->train();  // embedding and residual dropout now change the logits
  CHECK(!test::compare(model->logits(ids), whole, 1e-6, 1e-6).empty());
}

TEST_CASE("gpt2: bad configs name the key") {
  ModelConfig c = small();
  c.causal = false;
  CHECK_ERROR(build_model(c), "kind \"gpt2\" is a causal language model: set model.causal = true");
  c = small();
  c.heads = 3;
  CHECK_ERROR(build_model(c), "d_model = 8 is not divisible by heads = 3");
  CHECK_ERROR(build_model(small())->logits(some_ids(1, 10, 11)), "sequence length 10 exceeds the positional table");
}
