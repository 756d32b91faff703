// A new model kind is one LanguageModel subclass and one register_model_kind call: with nothing else, the config,
// training, the memory estimate, model files (written and read back) and bench all take it.
#include "run_support.h"

#include <qkv/core/ops.h>
#include <qkv/layers/linear.h>
#include <qkv/layers/models.h>
#include <qkv/train/run/bench.h>
#include <qkv/train/run/memory.h>
#include <qkv/train/run/run.h>
#include <qkv/train/use/trained.h>

#include <filesystem>

using namespace qkv;
using namespace qkv::test;

namespace {

// The smallest language model: logits (B, T, V) = table[ids], a bigram table; its "attention" is each token on
// itself (one layer, one head), so the attention views have something to show.
class BigramModel : public LanguageModel {
 public:
  BigramModel(const ModelConfig& c, Generator& gen) : LanguageModel(c) {
    table = register_module("table", std::make_shared<Embedding>(c.vocab_size, c.vocab_size, gen));
    start_dropout_stream(gen);
  }
  AttentionResult attend(const Tensor& ids, const Tensor& = {}, bool need_weights = true) override {
    Tensor weights;
    if (need_weights) {
      const std::int64_t b = ids.size(0), t = ids.size(1);
      std::vector<float> eye(static_cast<std::size_t>(b * t * t), 0.0f);
      for (std::int64_t i = 0; i < b * t; ++i) eye[static_cast<std::size_t>(i * t + i % t)] = 1.0f;
      weights = Tensor::from(eye, {1, b, 1, t, t});
    }
    return {table->forward(ids), weights};
  }
  std::string name() const override { return "BigramModel"; }
  std::shared_ptr<Embedding> table;
};

// The one registry line (a built-in kind is the same entry in layers/models.cpp's registry()). Registered by the
// test case itself, so no other test sees a third kind.
bool register_bigram() {
  register_model_kind({
      .name = "bigram",
      .build = [](const ModelConfig& c, Generator& gen) -> std::shared_ptr<LanguageModel> {
        return std::make_shared<BigramModel>(c, gen);
      },
      .check = [](const ModelConfig&) {},
      .parameters = [](const ModelConfig& c) { return double(c.vocab_size) * double(c.vocab_size); },
      .flops_per_token = [](const ModelConfig&, std::int64_t) { return 0.0; },
      .activations_per_token = [](const ModelConfig& c) { return 2.0 * double(c.vocab_size); },
  });
  return true;
}

}  // namespace

TEST_CASE("a model kind registered in one place trains, is estimated, saved, loaded and benched") {
  REQUIRE(register_bigram());
  const auto kinds = model_kinds();
  CHECK(std::find(kinds.begin(), kinds.end(), "bigram") != kinds.end());
  const Config cfg = shipped("reverse", {"run.name=\"bigram\"", "model.kind=\"bigram\"", "train.steps=40",
                                         "train.target_accuracy=0", "optim.lr=0.1"});
  // The memory estimate asks the kind: 16 x 16 parameters, 2 x 16 floats per token.
  const MemoryEstimate e = estimate_memory(cfg, 16);
  CHECK(e.parameters == 256);
  CHECK(e.activation_bytes == 4 * 32 * double(cfg.train.batch_size * cfg.data.seq_len));
  const TrainResult r = train(cfg, quiet());
  CHECK(r.steps == 40);
  // Reversing needs attention: a bigram table can do no better than chance, but it trains.
  CHECK(std::isfinite(r.val.loss));
  CHECK(r.val.loss < std::log(16.0) + 0.1);
  const TrainedModel tm = load_trained(r.run_dir);  // the model file's metadata checked against the kind's count
  CHECK(tm.model->name() == "BigramModel");
  CHECK(tm.model->num_parameters() == 256);
  CHECK(bench(cfg, 2, 0).steps_per_s > 0);
  CHECK_ERROR(build_model({.kind = "bigramm", .vocab_size = 4}), "unknown kind 'bigramm' (expected seed or transformer or gpt2 or llama or bigram)");
}

TEST_CASE("register_model_kind refuses an entry with a field missing") {
  CHECK_ERROR(register_model_kind({.name = "half"}), "register_model_kind: 'half': every field");
}

TEST_CASE("a kind with decay_matrices_only (gpt2) trains with nanoGPT's groups: weight decay on matrices only") {
  const auto gpt2 = build_model({.kind = "gpt2", .vocab_size = 7, .seq_len = 4, .d_model = 4, .heads = 1, .causal = true});
  const ParamGroups groups = optimizer_groups(*gpt2);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].params.size() == 6);  // wte, wpe, c_attn, attn.c_proj, c_fc, mlp.c_proj
  for (const auto& name_p : groups[0].params) {
    const auto& name = name_p.first;
    const auto& p = name_p.second;
    CHECK_MESSAGE(p.dim() == 2, name);
  }
  CHECK(groups[1].params.size() == gpt2->named_parameters().size() - 6);
  for (const auto& name_p : groups[1].params) {
    const auto& name = name_p.first;
    const auto& p = name_p.second;
    CHECK_MESSAGE(p.dim() == 1, name);
  }
  AnyOptimizerOptions o;
  o.weight_decay = 0.1;
  const auto opt = make_optimizer("adamw", groups, o);
  CHECK(opt->group_weight_decay(0) == 0.1);
  CHECK(opt->group_weight_decay(1) == 0.0);
  // the other kinds decay everything, as torch does
  CHECK(optimizer_groups(*build_model({.kind = "transformer", .vocab_size = 7, .seq_len = 4, .d_model = 4})).size() == 1);
}
