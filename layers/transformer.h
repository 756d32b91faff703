#pragma once
// The pieces of a pre-LN transformer. Legend: B batch, T sequence, D d_model.
#include <qkv/layers/attention.h>

namespace qkv {

struct LayerNormOptions {
  std::int64_t d = 0;  ///< the normalised (last) dim
  double eps = 1e-5;
  bool bias = true;  ///< false: no bias parameter (torch.nn.LayerNorm(bias=False)); the shift is 0
};

struct DropoutOptions {
  double p = 0.5;
};

struct MLPOptions {
  std::int64_t d = 0;     ///< input and output width
  std::int64_t d_ff = 0;  ///< hidden width
};

/// Normalises the last dim: (x - mean) / sqrt(var + eps) * weight + bias (biased variance, as torch).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(LayerNormOptions options);
  explicit LayerNorm(std::int64_t d, double eps = 1e-5) : LayerNorm(LayerNormOptions{d, eps, true}) {}
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "LayerNorm"; }
  std::shared_ptr<Module> fresh() const override;
  Tensor weight, bias;  ///< bias undefined when options.bias is false (the shift is 0)

 private:
  std::int64_t d_;
  double eps_;
};

/// Zeroes inputs with probability p in training mode (scaling the rest by 1/(1-p)); identity in eval mode.
/// Masks come from a stream the layer owns (shared with the layers given the same one by set_generator, as the
/// models do), never from a caller's object: it starts as a copy of `gen`'s state at construction.
class Dropout : public Module {
 public:
  explicit Dropout(DropoutOptions options, Generator& gen = default_generator());
  explicit Dropout(double p = 0.5, Generator& gen = default_generator()) : Dropout(DropoutOptions{p}, gen) {}
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "Dropout"; }
  std::shared_ptr<Module> fresh() const override;
  Generator& generator() { return *gen_; }
  void set_generator(std::shared_ptr<Generator> gen);
  /// Data parallel training: the input is rows [first, first + B) of a global batch of `total` rows, and the
  /// masks are those rows of the masks one process would draw for the whole batch (the stream skips the other
  /// rows' draws). (0, 0), the default: the input is the whole batch.
  void set_batch_slice(std::int64_t first, std::int64_t total);

 private:
  double p_;
  std::shared_ptr<Generator> gen_;
  std::int64_t slice_first_ = 0, slice_total_ = 0;
};

/// fc1 (D -> d_ff), exact GELU, fc2 (d_ff -> D).
class MLP : public Module {
 public:
  explicit MLP(MLPOptions options, Generator& gen = default_generator());
  MLP(std::int64_t d, std::int64_t d_ff, Generator& gen = default_generator()) : MLP(MLPOptions{d, d_ff}, gen) {}
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "MLP"; }
  std::shared_ptr<Module> fresh() const override;
  std::shared_ptr<Linear> fc1, fc2;
};

struct TransformerBlockOptions {
  std::int64_t d_model = 0;
  std::int64_t heads = 1;
  std::int64_t d_ff = 0;  ///< 0 means 4 * d_model
  bool causal = false;
  bool attn_bias = false;
  double dropout = 0.0;  ///< on the attention and MLP outputs, before each residual add
};

/// Pre-LN block: x = x + attn(ln1(x)); x = x + mlp(ln2(x)).
class TransformerBlock : public Module {
 public:
  explicit TransformerBlock(TransformerBlockOptions options, Generator& gen = default_generator());
  /// x is (B, T, D); key_padding_mask (B, T), nonzero where a key is padding (optional). Returns (B, T, D).
  Tensor forward(const Tensor& x) override { return attend(x, {}, false).out; }
  Tensor forward(const Tensor& x, const Tensor& key_padding_mask) { return attend(x, key_padding_mask, false).out; }
  /// The output and, when need_weights, the attention's (B, H, T, T) weights (detached).
  AttentionResult attend(const Tensor& x, const Tensor& key_padding_mask = {}, bool need_weights = true);
  /// Causal generation step: x (B, n, D) after `past` tokens whose keys and values are in `cache`.
  Tensor forward_cached(const Tensor& x, KVCacheLayer& cache, std::int64_t past);
  std::string name() const override { return "TransformerBlock"; }
  std::shared_ptr<Module> fresh() const override;

  std::shared_ptr<LayerNorm> ln1, ln2;
  std::shared_ptr<MultiHeadSelfAttention> attn;
  std::shared_ptr<MLP> mlp;
  std::shared_ptr<Dropout> drop;

 private:
  TransformerBlockOptions options_;
  /// x + drop(a), then the MLP half with its residual: the block after its attention output a.
  Tensor residuals(const Tensor& x, const Tensor& a);
};

}  // namespace qkv
