#pragma once
// The models the trainer builds (GPT-2 is in layers/gpt2.h). Their parameter names are a contract: exported files
// use them.
// Legend: B batch, T sequence, D d_model, V vocabulary, H heads.
#include <qkv/core/ops.h>  // stack, for attend_blocks
#include <qkv/layers/transformer.h>

#include <map>
#include <string>
#include <variant>

namespace qkv {

/// The value of one of a kind's own options (ModelKind::options).
using ModelOption = std::variant<std::int64_t, double, bool, std::string>;

/// Everything needed to rebuild a model (it is what exported files carry in their metadata): the sizes every kind
/// has, the older kinds' switches, and `options`, the keys a kind declares for itself (ModelKind::options: the
/// llama kind's kv_heads, rope_theta, ...), so adding a kind does not add members here.
struct ModelConfig {
  std::string kind = "seed";  ///< "seed", "transformer", "gpt2" or "llama"
  std::int64_t vocab_size = 16;
  std::int64_t seq_len = 12;  ///< size of the positional table: the longest sequence the model accepts
  std::int64_t d_model = 32;
  std::int64_t d_k = 0;  ///< seed model: query/key width (0 = d_model)
  std::int64_t d_v = 0;  ///< seed model: value width (0 = d_model)
  std::int64_t heads = 1;
  std::int64_t layers = 1;
  std::int64_t d_ff = 0;  ///< transformer MLP width (0 = 4 * d_model)
  bool causal = false;
  bool attn_bias = false;
  double dropout = 0.0;
  bool bias = true;            ///< gpt2: biases in every Linear and LayerNorm (nanoGPT's bias)
  bool tie_embeddings = true;  ///< gpt2: the head is the token embedding (one tensor)
  double norm_eps = 1e-5;      ///< gpt2: LayerNorm eps (GPT-2's layer_norm_epsilon)
  bool recompute = false;      ///< transformer, gpt2: keep each block's input only and recompute the rest in backward
  /// The kind's own options by name; one not set here takes the kind's default (with_defaults() fills them in).
  std::map<std::string, ModelOption> options = {};
  /// Option `name` of this config's kind: its value here or the kind's default; T must be its type (int64_t,
  /// double, bool or std::string). Throws naming the kind when it has no such option.
  template <class T>
  T option(const std::string& name) const;
  /// This config with every option of its kind present (defaults filled in) and none of another kind's.
  ModelConfig with_defaults() const;
  bool operator==(const ModelConfig&) const = default;
};

/// One option a model kind declares: its key (model.<name> in configs, a "qkv.model" field in files), its default
/// (which also gives its type), its range (numbers) and meaning.
struct ModelOptionSpec {
  std::string name;
  ModelOption default_value;
  double min = 0, max = 0;
  std::string doc;
};

/// One field of ModelConfig, described once: its key in exported files' "qkv.model" metadata and (all but
/// vocab_size and seq_len, which the data decides) in the config's [model] section, with its range and meaning.
/// The metadata writer and reader, the config key table, `qkv info --keys` and the README reference read it.
struct ModelField {
  using Member = std::variant<std::string ModelConfig::*, std::int64_t ModelConfig::*, bool ModelConfig::*,
                              double ModelConfig::*>;
  const char* name;
  Member member;
  double min = 0, max = 0;  ///< numbers: the allowed range
  const char* doc = "";
  bool in_config = true;  ///< false for vocab_size and seq_len (set from [data])
};
/// Every field of ModelConfig, in declaration order.
const std::vector<ModelField>& model_fields();

/// What a causal model has seen, for generating a token at a time without re-running the prefix: each attention
/// layer's keys and values (room for config().seq_len tokens) and how many tokens they hold.
struct KVCache {
  std::vector<KVCacheLayer> layers;
  std::int64_t length = 0;
};

/// A model from int64 token ids (B, T) to logits (B, T, V).
class LanguageModel : public Module {
 public:
  explicit LanguageModel(ModelConfig config) : config_(std::move(config)) {}
  /// ids (B, T) -> logits (B, T, V) in .out and, when need_weights, every layer's attention weights in
  /// .weights (L, B, H, T, T), detached. key_padding_mask (B, T), nonzero where a token is padding, hides those
  /// keys from every attention layer (optional).
  virtual AttentionResult attend(const Tensor& ids, const Tensor& key_padding_mask = {}, bool need_weights = true) = 0;
  /// ids (B, T) -> logits (B, T, V).
  Tensor logits(const Tensor& ids, const Tensor& key_padding_mask = {}) {
    return attend(ids, key_padding_mask, false).out;
  }
  /// Cached generation (causal models): ids (B, n) are the n tokens after the cache.length ones the cache holds.
  /// Returns their logits (B, n, V), the same values logits() gives those rows of the whole sequence, and adds
  /// their keys and values to the cache. Inference only (no graph). The positional table bounds the total:
  /// cache.length + n <= config().seq_len; beyond it, start a new cache on the last tokens (a sliding window).
  Tensor logits(const Tensor& ids, KVCache& cache);
  /// An empty cache for `batch` sequences, in the dtype of the parameters.
  KVCache make_cache(std::int64_t batch = 1) const;
  Tensor forward(const Tensor& ids) override { return logits(ids); }
  /// build_model(config()) of the model's kind, its dropout stream at this one's position.
  std::shared_ptr<Module> fresh() const override;
  const ModelConfig& config() const { return config_; }
  /// The one stream every Dropout of the model draws from, owned by the model: it continues the generator the
  /// model was initialised from (checkpoints save its state, so a resumed run draws the same masks).
  Generator& dropout_generator() { return *dropout_stream_; }
  /// The dropout stream's position: save(model) keeps it, load(model) restores it.
  std::string extra_state() const override;
  void set_extra_state(const std::string& state) override;
  /// Under data parallelism: every Dropout of the model takes its inputs as rows [first, first + B) of a global
  /// batch of `total` rows (Dropout::set_batch_slice), so N ranks draw the masks one process draws.
  void set_batch_slice(std::int64_t first, std::int64_t total);

 protected:
  /// tok_emb(ids) + pos_emb(start..start+T-1), after checking ids against the vocabulary and the positional table.
  Tensor embed(Embedding& tok, Embedding& pos, const Tensor& ids, std::int64_t start = 0) const;
  /// Throws unless ids is int64 (B, T) with T within config().seq_len and every id within the vocabulary.
  void check_ids(const Tensor& ids) const;
  /// The model's part of logits(ids, cache), after the checks: ids (B, n) after cache.length cached tokens.
  /// A model of your own that does not override these three has no cached generation (a clear error).
  virtual Tensor logits_cached(const Tensor& ids, KVCache& cache);
  /// (key width, value width) of each attention layer's cache rows, and the parameters' dtype.
  virtual std::vector<std::pair<std::int64_t, std::int64_t>> cache_widths() const { return {}; }
  virtual DType param_dtype() const { return kFloat32; }
  /// Throws unless the model is causal and implements cached generation.
  void check_cached_generation() const;
  /// h (B, T, D) through every block (each with attend and forward_cached, as TransformerBlock), collecting the
  /// blocks' attention weights as (L, B, H, T, T) when need_weights: the trunk of the transformer kinds. With
  /// config().recompute, while grad mode is on, each block is a checkpoint (core/autograd.h): it keeps only its
  /// input, and its backward recomputes its activations, drawing the same dropout masks.
  template <class Block>
  AttentionResult attend_blocks(const ModuleList<Block>& blocks, Tensor h, const Tensor& key_padding_mask,
                                bool need_weights);
  /// The same for a cached generation step: h (B, n, D) after cache.length tokens.
  template <class Block>
  static Tensor forward_blocks_cached(const ModuleList<Block>& blocks, Tensor h, KVCache& cache);
  /// config().layers attention layers whose keys and values are d_model wide (the transformer kinds' cache).
  std::vector<std::pair<std::int64_t, std::int64_t>> model_wide_cache() const;
  /// For constructors, once every layer is initialised: the dropout stream continues from gen's state.
  std::shared_ptr<Generator> start_dropout_stream(const Generator& gen);

 private:
  ModelConfig config_;
  std::shared_ptr<Generator> dropout_stream_ = std::make_shared<Generator>();
};

template <class Block>
AttentionResult LanguageModel::attend_blocks(const ModuleList<Block>& blocks, Tensor h, const Tensor& key_padding_mask,
                                             bool need_weights) {
  std::vector<Tensor> weights;
  const bool recompute = config_.recompute && grad_mode_enabled() && !need_weights;  // weights: an inspection
  for (const auto& block : blocks) {
    if (recompute) {
      Block* b = block.get();
      h = checkpoint([b, key_padding_mask](const Tensor& x) { return b->attend(x, key_padding_mask, false).out; }, h,
                     b->parameters(), {dropout_stream_});
      continue;
    }
    auto [out, w] = block->attend(h, key_padding_mask, need_weights);
    h = out;
    if (need_weights) weights.push_back(w);
  }
  return {h, need_weights ? stack(weights, 0) : Tensor()};
}

template <class Block>
Tensor LanguageModel::forward_blocks_cached(const ModuleList<Block>& blocks, Tensor h, KVCache& cache) {
  std::size_t i = 0;
  for (const auto& block : blocks) h = block->forward_cached(h, cache.layers[i++], cache.length);
  return h;
}

/// tok_emb + pos_emb -> attn (SelfAttention) -> head (Linear d_v -> V).
class SeedModel : public LanguageModel {
 public:
  explicit SeedModel(const ModelConfig& config, Generator& gen = default_generator());
  AttentionResult attend(const Tensor& ids, const Tensor& key_padding_mask = {}, bool need_weights = true) override;
  std::string name() const override { return "SeedModel"; }

  std::shared_ptr<Embedding> tok_emb, pos_emb;
  std::shared_ptr<SelfAttention> attn;
  std::shared_ptr<Linear> head;

 protected:
  Tensor logits_cached(const Tensor& ids, KVCache& cache) override;
  std::vector<std::pair<std::int64_t, std::int64_t>> cache_widths() const override;
  DType param_dtype() const override { return tok_emb->weight.dtype(); }
};

/// tok_emb + pos_emb -> blocks -> ln_f -> head.
class Transformer : public LanguageModel {
 public:
  explicit Transformer(const ModelConfig& config, Generator& gen = default_generator());
  AttentionResult attend(const Tensor& ids, const Tensor& key_padding_mask = {}, bool need_weights = true) override;
  std::string name() const override { return "Transformer"; }

  std::shared_ptr<Embedding> tok_emb, pos_emb;
  std::shared_ptr<ModuleList<TransformerBlock>> blocks;
  std::shared_ptr<LayerNorm> ln_f;
  std::shared_ptr<Linear> head;

 protected:
  Tensor logits_cached(const Tensor& ids, KVCache& cache) override;
  std::vector<std::pair<std::int64_t, std::int64_t>> cache_widths() const override;
  DType param_dtype() const override { return tok_emb->weight.dtype(); }
};

/// A model kind: how to build it and what it costs, known without building it. A new model is a LanguageModel
/// subclass and one register_model_kind call (the built-in kinds are three entries in layers/models.cpp); the
/// config's model.kind, model files, `qkv info`, the memory estimate and bench all read these.
struct ModelKind {
  std::string name;
  std::shared_ptr<LanguageModel> (*build)(const ModelConfig&, Generator&) = nullptr;
  /// Throws qkv::Error naming what does not fit together (heads that do not divide d_model, ...); build_model,
  /// configs and model files' metadata call it before anything is allocated.
  void (*check)(const ModelConfig&) = nullptr;
  /// The number of parameters build would create (a double: a crafted config may ask for more than fits).
  double (*parameters)(const ModelConfig&) = nullptr;
  /// Forward FLOPs per token for a sequence of length t (multiply-adds count 2; training is about 3x this).
  double (*flops_per_token)(const ModelConfig&, std::int64_t t) = nullptr;
  /// Floats forward keeps per token for backward (the memory estimate; generous).
  double (*activations_per_token)(const ModelConfig&) = nullptr;
  /// Training's default optimizer grouping: true puts weight decay on parameters of 2 or more dims only (not
  /// biases, LayerNorm weights) as nanoGPT's configure_optimizers does; false decays every parameter as torch.
  bool decay_matrices_only = false;
  /// True when ModelConfig::recompute works for the kind (its trunk runs through attend_blocks); configs and model
  /// files refuse recompute for the others.
  bool can_recompute = false;
  /// The kind's own keys (ModelConfig::options), each with a default; configs take them as model.<name> when
  /// model.kind names this kind, and refuse them otherwise.
  std::vector<ModelOptionSpec> options = {};
};
/// The kinds that declare option `name`, as "llama" (empty when none does).
std::string kinds_with_option(const std::string& name);
/// The kinds whose can_recompute is set, as "transformer, gpt2".
std::string recompute_kinds();
/// Adds a kind (or replaces one of the same name); every field must be set.
void register_model_kind(const ModelKind& kind);
/// The kind `name`; throws qkv::Error listing the known kinds for an unknown one.
const ModelKind& model_kind(const std::string& name);
/// The kinds build_model knows, in registration order: "seed", "transformer", "gpt2", then any registered.
std::vector<std::string> model_kinds();

/// model_kind(config.kind).parameters(config) after the kind's checks.
double parameter_count(const ModelConfig& config);
/// model_kind(config.kind).flops_per_token(config, t).
double flops_per_token(const ModelConfig& config, std::int64_t t);
/// Checks the sizes every kind needs and the kind's own rules (ModelKind::check).
void check_model_config(const ModelConfig& config);
/// Builds the model `config.kind` names; throws for an unknown kind or inconsistent sizes.
std::shared_ptr<LanguageModel> build_model(const ModelConfig& config, Generator& gen = default_generator());

}  // namespace qkv
