#include "../support.h"

#include <qkv/layers/models.h>

using namespace qkv;
using test::LayerRun;

namespace {
ModelConfig config_from(const nlohmann::json& o) {
  ModelConfig c;
  c.kind = o["kind"];
  c.vocab_size = o["vocab_size"];
  c.seq_len = o["seq_len"];
  c.d_model = o["d_model"];
  c.d_k = o.value("d_k", 0);
  c.d_v = o.value("d_v", 0);
  c.heads = o.value("heads", 1);
  c.layers = o.value("layers", 1);
  c.d_ff = o.value("d_ff", 0);
  c.causal = o["causal"];
  c.attn_bias = o["attn_bias"];
  return c;
}
}  // namespace

TEST_CASE("SeedModel and Transformer match their torch twins, parameter names included") {
  const std::map<std::string, test::LayerSpec> specs = {
      {"model",
       {[](const nlohmann::json& o) -> std::shared_ptr<Module> { return build_model(config_from(o)); },
        [](Module& m, const Tensor& ids, const Tensor&) {
          std::vector<Tensor> maps;
          Tensor out = static_cast<LanguageModel&>(m).logits(ids, &maps);
          return LayerRun{out, maps.at(0)};
        }}}};
  CHECK(test::check_layers_against_torch(specs) == 2);
}

TEST_CASE("state-dict names are the contract") {
  ModelConfig seed{.kind = "seed", .vocab_size = 8, .seq_len = 4, .d_model = 6};
  std::vector<std::string> names;
  for (auto& [n, t] : build_model(seed)->named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"tok_emb.weight", "pos_emb.weight", "attn.w_q.weight", "attn.w_k.weight",
                                          "attn.w_v.weight", "head.weight", "head.bias"});
  seed.attn_bias = true;
  CHECK(build_model(seed)->named_parameters().size() == 10);
  ModelConfig tr{.kind = "transformer", .vocab_size = 8, .seq_len = 4, .d_model = 8, .heads = 2, .layers = 2};
  const auto params = build_model(tr)->named_parameters();
  CHECK(params[2].first == "blocks.0.ln1.weight");
  CHECK(params[6].first == "blocks.0.attn.w_v.weight");
  CHECK(params[params.size() - 4].first == "ln_f.weight");
  CHECK(params.back().first == "head.bias");
}

TEST_CASE("models: bad input names the numbers") {
  auto m = build_model({.kind = "seed", .vocab_size = 8, .seq_len = 4, .d_model = 6});
  const auto ids = [](std::vector<std::int64_t> v, Shape s) { return Tensor::from(v, s); };
  CHECK_ERROR(m->forward(ids({1, 2, 3, 4, 5}, {1, 5})),
              "SeedModel: sequence length 5 exceeds the positional table (seq_len = 4)");
  CHECK_ERROR(m->forward(ids({1, 9}, {1, 2})),
              "SeedModel: token id 9 at (batch 0, position 1) is out of range for vocab_size = 8");
  CHECK_ERROR(m->forward(Tensor::ones({1, 2})), "SeedModel: expected int64 token ids (B, T), got float32");
  CHECK_ERROR(build_model({.kind = "transformer", .d_model = 10, .heads = 4}),
              "model: d_model = 10 is not divisible by heads = 4");
  CHECK_ERROR(build_model({.kind = "rnn"}), "model: unknown kind 'rnn'");
}

TEST_CASE("parameter_count matches what build_model creates, without building it") {
  for (const ModelConfig& c : {ModelConfig{.kind = "seed", .vocab_size = 7, .seq_len = 5, .d_model = 8},
                               ModelConfig{.kind = "seed", .vocab_size = 7, .seq_len = 5, .d_model = 8, .d_k = 3, .d_v = 5,
                                           .attn_bias = true},
                               ModelConfig{.kind = "transformer", .vocab_size = 11, .seq_len = 6, .d_model = 8, .heads = 2,
                                           .layers = 3},
                               ModelConfig{.kind = "transformer", .vocab_size = 11, .seq_len = 6, .d_model = 8, .heads = 4,
                                           .layers = 1, .d_ff = 5, .attn_bias = true}})
    CHECK(parameter_count(c) == double(build_model(c)->num_parameters()));
}
