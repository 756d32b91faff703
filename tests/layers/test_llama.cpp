#include <qkv/core/gradcheck.h>
#include <qkv/layers/llama.h>

#include <cmath>

#include "../support.h"

using namespace qkv;

namespace {

ModelConfig small(std::int64_t kv = 2, bool tie = false) {
  ModelConfig c{.kind = "llama", .vocab_size = 13, .seq_len = 16, .d_model = 8, .heads = 4, .layers = 2, .d_ff = 12,
                .causal = true, .tie_embeddings = tie};
  c.options["kv_heads"] = kv;
  return c;
}

Tensor some_ids(std::int64_t b, std::int64_t t, std::int64_t vocab) {
  std::vector<std::int64_t> v;
  for (std::int64_t i = 0; i < b * t; ++i) v.push_back((i * 7 + 3) % vocab);
  return Tensor::from(v, {b, t});
}

}  // namespace

TEST_CASE("llama: Hugging Face's names, its initialisation, and SmolLM2-135M's parameter count") {
  Generator g(0);
  auto model = build_model(small(), g);
  const auto named = model->named_parameters();
  CHECK(named.front().first == "model.embed_tokens.weight");
  CHECK(model->parameter("model.layers.1.self_attn.k_proj.weight").shape() == Shape{4, 8});  // 2 kv heads of 2
  CHECK(model->parameter("model.layers.0.mlp.gate_proj.weight").shape() == Shape{12, 8});
  CHECK(model->parameter("model.layers.0.post_attention_layernorm.weight").to_vector() == std::vector<double>(8, 1.0));
  CHECK(named.back().first == "lm_head.weight");
  CHECK(double(model->num_parameters()) == parameter_count(small()));
  CHECK(double(build_model(small(1, true), g)->num_parameters()) == parameter_count(small(1, true)));
  ModelConfig smol{.kind = "llama", .vocab_size = 49152, .seq_len = 8192, .d_model = 576, .heads = 9, .layers = 30,
                   .d_ff = 1536, .causal = true, .tie_embeddings = true, .norm_eps = 1e-5};
  smol.options = {{"kv_heads", std::int64_t{3}}, {"rope_theta", 100000.0}};
  CHECK(parameter_count(smol) == 134515008.0);  // SmolLM2-135M as Hugging Face counts it
}

TEST_CASE("llama: gradients of every parameter (float64 finite differences), GQA and MQA, tied and untied") {
  for (const std::int64_t kv : {1, 2})
    for (const bool tie : {true, false}) {
      INFO("kv " << kv << ", tie " << tie);
      ModelConfig c = small(kv, tie);
      c.vocab_size = 5, c.layers = 1, c.d_ff = 6;
      c.options["qkv_bias"] = true;
      c.options["rope_scaling"] = std::string("linear");
      c.options["rope_factor"] = 2.0;
      Generator g(3);
      auto model = build_model(c, g);
      model->to(kFloat64);
      for (const auto& p : model->parameters()) {
        NoGradGuard ng;
        p.copy_(p + Tensor::randn(p.shape(), g, kFloat64) * 0.3);
      }
      const Tensor ids = some_ids(2, 4, c.vocab_size);
      CHECK(gradcheck_error([&](const std::vector<Tensor>&) { return model->logits(ids); }, model->parameters()) == "");
    }
}

TEST_CASE("llama: cached greedy generation equals uncached; recompute gives the same gradients") {
  Generator g(5);
  auto model = build_model(small(), g);
  model->to(kFloat64);
  model->eval();
  const Tensor ids = some_ids(2, 11, 13);
  const Tensor whole = model->logits(ids);
  KVCache cache = model->make_cache(2);
  CHECK(cache.layers[0].k.shape() == Shape{2, 16, 4});  // key/value heads only: 2 of width 2
  for (const std::int64_t n : {4, 1, 1, 5}) {
    const std::int64_t past = cache.length;
    CHECK_CLOSE(model->logits(narrow(ids, 1, past, n).clone(), cache), narrow(whole, 1, past, n), 1e-12, 1e-12);
  }
  ModelConfig rc = small();
  rc.recompute = true;
  Generator g1(7), g2(7);
  auto plain = build_model(small(), g1), again = build_model(rc, g2);
  sum(plain->logits(ids)).backward();
  sum(again->logits(ids)).backward();
  for (const auto& named : plain->named_parameters())
    CHECK_CLOSE(again->parameter(named.first).grad(), named.second.grad(), 0, 0);
}

TEST_CASE("llama: bad configs name the key") {
  ModelConfig c = small(3);
  CHECK_ERROR(build_model(c), "kv_heads = 3 must divide heads = 4");
  c = small();
  c.causal = false;
  CHECK_ERROR(build_model(c), "kind \"llama\" is a causal language model");
  c = small();
  c.options["rope_scaling"] = std::string("dynamic");
  CHECK_ERROR(build_model(c), "rope_scaling = \"dynamic\" is not supported");
  c = small();
  c.options["bias"] = true;
  CHECK_ERROR(build_model(c), "'bias' is not an option of kind \"llama\"");
  c = small();
  c.dropout = 0.1;
  CHECK_ERROR(build_model(c), "kind \"llama\" has no dropout");
  c = small();
  c.heads = 3;
  CHECK_ERROR(build_model(c), "heads");
  ModelConfig gpt{.kind = "gpt2", .vocab_size = 5, .seq_len = 4, .d_model = 4, .heads = 1, .causal = true};
  gpt.options["kv_heads"] = std::int64_t{1};
  CHECK_ERROR(build_model(gpt), "'kv_heads' is not an option of kind \"gpt2\" (it is one of llama)");
}
