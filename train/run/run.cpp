#include "qkv/train/run/run.h"

#include <qkv/train/io/checkpoints.h>
#include <qkv/train/run/memory.h>
#include <qkv/train/run/model_file.h>

#include <optional>

namespace qkv {
namespace {

// Seeds of the independent streams derived from run.seed.
constexpr std::uint64_t kInitStream = 0x696e6974ULL;

/// model.init naming a checkpoint of the field: the config must describe the same model (what the tensors cannot
/// show is compared here; the strict load names every tensor that differs).
void load_field_init(LanguageModel& model, const FieldCheckpoint& ck, const std::string& path) {
  const ModelConfig& m = model.config();
  const auto same = [&](const char* key, auto theirs, auto ours) {
    QKV_CHECK(theirs == ours, "model.init: {} has {} = {}, but the config says model.{} = {}", path, key, theirs, key,
              ours);
  };
  same("heads", ck.config.heads, m.heads);
  same("layers", ck.config.layers, m.layers);
  same("d_model", ck.config.d_model, m.d_model);
  if (ck.weights.find("transformer.wpe.weight").defined()) same("positions", ck.config.seq_len, m.seq_len);  // a table
  same("vocab_size", ck.config.vocab_size, m.vocab_size);
  same("bias", ck.config.bias, m.bias);
  same("tie_embeddings", ck.config.tie_embeddings, m.tie_embeddings);
  same("norm_eps", ck.config.norm_eps, m.norm_eps);
  const ModelConfig mine = m.with_defaults();
  for (const auto& [name, value] : ck.config.with_defaults().options)
    QKV_CHECK(mine.options.at(name) == value, "model.init: {} has another model.{} than the config says", path, name);
  load(model, ck.weights, path, /*strict=*/true);
}

}  // namespace

ParamGroups optimizer_groups(const LanguageModel& model) {
  if (!model_kind(model.config().kind).decay_matrices_only) return {{model.named_parameters()}};
  ParamGroup matrices, others{.weight_decay = 0.0};
  for (auto& [name, p] : model.named_parameters()) (p.dim() >= 2 ? matrices : others).params.emplace_back(name, p);
  return {matrices, others};
}

void set_up(Run& r) {
  const Config& c = r.config;
  r.data = make_dataset(c.data, c.run.seed);
  check_memory(c, r.data->vocab_size());
  Generator init(c.run.seed ^ kInitStream);  // then the model's dropout stream continues it
  const CheckpointFormat* format = c.model.init.empty() ? nullptr : checkpoint_format(c.model.init);
  std::optional<FieldCheckpoint> ck;
  std::int64_t rows = r.data->vocab_size();
  if (format) {
    QKV_CHECK(c.model.kind == format->kind, "model.init: {} is a {} checkpoint; set model.kind = \"{}\" (now \"{}\")",
              c.model.init, format->name, format->kind, c.model.kind);
    ck = format->read(c.model.init, c.model.heads);
    // an embedding padded beyond the data's tokenizer (nanoGPT's 50304 rows) keeps its rows
    if (ck->config.vocab_size > rows) rows = ck->config.vocab_size;
  }
  r.model = build_model(c.model_config(rows), init);
  if (!c.model.init.empty()) {
    if (ck) load_field_init(*r.model, *ck, c.model.init);
    else load(*r.model, c.model.init, /*strict=*/true);
    check_finite_weights(*r.model, "model.init: " + c.model.init, "training cannot start from it");
  }
  r.model->train();
  r.optimizer = make_optimizer(c.optim.name, optimizer_groups(*r.model), optimizer_options(c));
  r.schedule = std::make_unique<LRSchedule>(*r.optimizer, schedule_options(c));
}

std::int64_t write_initial_model(const Config& config, const std::string& path) {
  Run r;
  r.config = config;
  set_up(r);
  save(*r.model, path, model_metadata(r.model->config(), config, *r.data));
  return r.model->num_parameters();
}

}  // namespace qkv
