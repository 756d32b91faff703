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
          auto [out, maps] = static_cast<LanguageModel&>(m).attend(ids);
          return LayerRun{out, reshape(narrow(maps, 0, 0, 1), {-1, maps.size(2), maps.size(3), maps.size(4)})};
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

TEST_CASE("cached generation: each step's logits equal the same rows of a forward over the whole sequence") {
  // Float64, so the comparison is tight; steps of 4, 1, 1, 3 and 1 tokens fill the positional table (seq_len 10).
  for (const ModelConfig& c :
       {ModelConfig{.kind = "seed", .vocab_size = 9, .seq_len = 10, .d_model = 8, .d_k = 4, .d_v = 6, .causal = true},
        ModelConfig{.kind = "transformer", .vocab_size = 9, .seq_len = 10, .d_model = 8, .heads = 2, .layers = 2,
                    .causal = true, .attn_bias = true}}) {
    INFO(c.kind);
    Generator g(5);
    auto model = build_model(c, g);
    model->to(kFloat64);
    model->eval();
    std::vector<std::int64_t> ids_v;
    for (std::int64_t i = 0; i < 2 * 10; ++i) ids_v.push_back((i * 7 + 3) % 9);
    const Tensor ids = Tensor::from(ids_v, {2, 10});
    const Tensor whole = model->logits(ids);
    KVCache cache = model->make_cache(2);
    for (const std::int64_t n : {4, 1, 1, 3, 1}) {
      const std::int64_t past = cache.length;
      const Tensor step = model->logits(narrow(ids, 1, past, n).clone(), cache);
      CHECK_FALSE(step.requires_grad());
      CHECK_CLOSE(step, narrow(whole, 1, past, n), 1e-12, 1e-12);
    }
    CHECK(cache.length == 10);
    CHECK_ERROR(model->logits(narrow(ids, 1, 0, 1).clone(), cache),
                "cached step: 10 tokens seen + 1 new exceed the positional table (seq_len = 10)");
    KVCache one = model->make_cache(1);
    CHECK_ERROR(model->logits(ids, one), "cached step: expected token ids (B, n) with B = 1 as the cache, got shape [2, 10]");
    KVCache empty;
    CHECK_ERROR(model->logits(ids, empty), "the cache was not made by this model's make_cache");
  }
  auto bidirectional = build_model(ModelConfig{.kind = "transformer", .vocab_size = 9, .seq_len = 4, .d_model = 8});
  CHECK_ERROR(bidirectional->make_cache(1), "Transformer: cached generation needs a causal model (model.causal = true)");
}

TEST_CASE("dropout draws from a stream the model owns, not from the caller's generator") {
  const ModelConfig c{.kind = "transformer", .vocab_size = 9, .seq_len = 6, .d_model = 8, .heads = 2, .layers = 2,
                      .dropout = 0.5};
  const auto build = [&] {
    Generator local(3);  // gone when build returns: 0.1's Dropout kept a pointer to it
    return build_model(c, local);
  };
  auto a = build(), b = build();
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4}, {1, 4});
  const auto before = a->dropout_generator().state();
  const Tensor la = a->logits(ids), lb = b->logits(ids);  // training mode: masks drawn
  CHECK(la.to_vector() == lb.to_vector());                 // the same stream in both models
  CHECK_FALSE(a->dropout_generator().state().s == before.s);  // every block's Dropout advanced the model's stream
  a->dropout_generator().set_state(before);
  CHECK(a->logits(ids).to_vector() == la.to_vector());  // restoring it replays the masks (what resume does)
  a->eval();
  const Tensor e1 = a->logits(ids), e2 = a->logits(ids);
  CHECK(e1.to_vector() == e2.to_vector());
}

TEST_CASE("a key_padding_mask through logits: real tokens see only real tokens, for both model kinds") {
  for (const std::string kind : {"seed", "transformer"}) {
    INFO(kind);
    Generator gen(5);
    auto model = build_model({.kind = kind, .vocab_size = 7, .seq_len = 6, .d_model = 8, .heads = 2, .layers = 2},
                             gen);
    model->to(kFloat64);
    // Two sequences, the second padded after 3 tokens: its first 3 rows must equal those of the 3-token sequence.
    const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 3, 1, 4, 0, 0, 0}, {2, 6});
    const Tensor mask = Tensor::from(std::vector<double>{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1}, {2, 6});
    const Tensor padded = model->logits(ids, mask);
    const Tensor alone = model->logits(Tensor::from(std::vector<std::int64_t>{3, 1, 4}, {1, 3}));
    CHECK_CLOSE(narrow(narrow(padded, 0, 1, 1), 1, 0, 3), alone, 1e-12, 1e-12);
    CHECK(!test::compare(narrow(padded, 0, 1, 1), narrow(model->logits(ids), 0, 1, 1), 1e-6, 1e-6).empty());
    // Every layer's weights put zero on the padded keys; attend gives them as one (L, B, H, T, T) tensor.
    const Tensor w = model->attend(ids, mask).weights;
    CHECK(w.shape() == Shape{kind == "seed" ? 1 : 2, 2, kind == "seed" ? 1 : 2, 6, 6});
    CHECK(sum(narrow(narrow(w, 1, 1, 1), 4, 3, 3)).item() == 0.0);
    CHECK_ERROR(model->logits(ids, Tensor::zeros({2, 5})), "key_padding_mask must be (B, T) = (2, 6), got shape [2, 5]");
  }
}

namespace {
// A model of one's own with cached generation: three overrides (logits_cached, cache_widths, param_dtype) beside
// attend. Token and position embeddings, one pre-LN block whose attention is a SelfAttention with d_k = 4 and d_v = 6
// (a cache row is 4 keys and 6 values wide), a head. The example docs/architecture.md points to.
class OneBlock : public LanguageModel {
 public:
  OneBlock(const ModelConfig& c, Generator& gen) : LanguageModel(c) {
    tok = register_module("tok", std::make_shared<Embedding>(c.vocab_size, c.d_model, gen));
    pos = register_module("pos", std::make_shared<Embedding>(c.seq_len, c.d_model, gen));
    attn = register_module("attn", std::make_shared<SelfAttention>(
                                       SelfAttentionOptions{.d_model = c.d_model, .d_k = 4, .d_v = 6, .causal = true}, gen));
    head = register_module("head", std::make_shared<Linear>(6, c.vocab_size, true, gen));
    start_dropout_stream(gen);
  }
  AttentionResult attend(const Tensor& ids, const Tensor& mask = {}, bool need_weights = true) override {
    auto [h, w] = attn->attend(embed(*tok, *pos, ids), mask, need_weights);
    return {(*head)(h), need_weights ? unsqueeze(unsqueeze(w, 1), 0) : Tensor()};
  }
  std::string name() const override { return "OneBlock"; }
  std::shared_ptr<Embedding> tok, pos;
  std::shared_ptr<SelfAttention> attn;
  std::shared_ptr<Linear> head;

 protected:
  // ids (B, n) after cache.length cached tokens: positions continue from there; the layer appends its keys and values.
  Tensor logits_cached(const Tensor& ids, KVCache& cache) override {
    return (*head)(attn->attend_cached(embed(*tok, *pos, ids, cache.length), cache.layers[0], cache.length));
  }
  std::vector<std::pair<std::int64_t, std::int64_t>> cache_widths() const override { return {{4, 6}}; }
  DType param_dtype() const override { return tok->weight.dtype(); }
};
}  // namespace

TEST_CASE("a model of one's own gets cached generation from three overrides") {
  Generator g(2);
  OneBlock model({.kind = "mine", .vocab_size = 7, .seq_len = 8, .d_model = 8, .causal = true}, g);
  model.to(kFloat64);
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 5, 2, 6, 3, 0, 4, 1}, {1, 8});
  const Tensor whole = model.logits(ids);
  KVCache cache = model.make_cache(1);
  CHECK(cache.layers[0].k.shape() == Shape({1, 8, 4}));
  CHECK(cache.layers[0].v.dtype() == kFloat64);
  for (const std::int64_t n : {3, 1, 4}) {
    const std::int64_t past = cache.length;
    CHECK_CLOSE(model.logits(narrow(ids, 1, past, n).clone(), cache), narrow(whole, 1, past, n), 1e-12, 1e-12);
  }
  CHECK(cache.length == 8);
}
