#pragma once
// The two models the trainer builds. Their parameter names are a contract: exported files use them.
// Legend: B batch, T sequence, D d_model, V vocabulary, H heads.
#include <qkv/layers/transformer.h>

#include <string>

namespace qkv {

/// Everything needed to rebuild a model (it is what exported files carry in their metadata).
struct ModelConfig {
  std::string kind = "seed";  ///< "seed" or "transformer"
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
};

/// A model from int64 token ids (B, T) to logits (B, T, V).
class LanguageModel : public Module {
 public:
  explicit LanguageModel(ModelConfig config) : config_(std::move(config)) {}
  /// ids (B, T) -> logits (B, T, V); `attention`, when given, receives one (B, H, T, T) tensor per layer.
  virtual Tensor logits(const Tensor& ids, std::vector<Tensor>* attention = nullptr) = 0;
  Tensor forward(const Tensor& ids) override { return logits(ids); }
  const ModelConfig& config() const { return config_; }

 protected:
  /// tok_emb(ids) + pos_emb(0..T-1), after checking ids against the vocabulary and the positional table.
  Tensor embed(Embedding& tok, Embedding& pos, const Tensor& ids) const;

 private:
  ModelConfig config_;
};

/// tok_emb + pos_emb -> attn (SelfAttention) -> head (Linear d_v -> V).
class SeedModel : public LanguageModel {
 public:
  explicit SeedModel(const ModelConfig& config, Generator& gen = default_generator());
  Tensor logits(const Tensor& ids, std::vector<Tensor>* attention = nullptr) override;
  std::string name() const override { return "SeedModel"; }

  std::shared_ptr<Embedding> tok_emb, pos_emb;
  std::shared_ptr<SelfAttention> attn;
  std::shared_ptr<Linear> head;
};

/// tok_emb + pos_emb -> blocks -> ln_f -> head.
class Transformer : public LanguageModel {
 public:
  explicit Transformer(const ModelConfig& config, Generator& gen = default_generator());
  Tensor logits(const Tensor& ids, std::vector<Tensor>* attention = nullptr) override;
  std::string name() const override { return "Transformer"; }

  std::shared_ptr<Embedding> tok_emb, pos_emb;
  std::shared_ptr<ModuleList<TransformerBlock>> blocks;
  std::shared_ptr<LayerNorm> ln_f;
  std::shared_ptr<Linear> head;
};

/// The number of parameters build_model(config) would create, computed without building it (as a double: a
/// crafted config may ask for more than fits in memory, and callers compare before allocating).
double parameter_count(const ModelConfig& config);

/// Forward FLOPs per token for a sequence of length t (multiply-adds count 2; training is about 3x this).
double flops_per_token(const ModelConfig& config, std::int64_t t);

/// Builds the model `config.kind` names; throws for an unknown kind or inconsistent sizes.
std::shared_ptr<LanguageModel> build_model(const ModelConfig& config, Generator& gen = default_generator());

}  // namespace qkv
