#pragma once
// The pieces of a pre-LN transformer. Legend: B batch, T sequence, D d_model.
#include <qkv/layers/attention.h>

namespace qkv {

/// Normalises the last dim: (x - mean) / sqrt(var + eps) * weight + bias (biased variance, as torch).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(std::int64_t d, double eps = 1e-5);
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "LayerNorm"; }
  Tensor weight, bias;

 private:
  std::int64_t d_;
  double eps_;
};

/// Zeroes inputs with probability p in training mode (scaling the rest by 1/(1-p)); identity in eval mode.
/// Masks come from a stream the layer owns (shared with the layers given the same one by set_generator, as the
/// models do), never from a caller's object: it starts as a copy of `gen`'s state at construction.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "Dropout"; }
  Generator& generator() { return *gen_; }
  void set_generator(std::shared_ptr<Generator> gen);

 private:
  double p_;
  std::shared_ptr<Generator> gen_;
};

/// fc1 (D -> d_ff), exact GELU, fc2 (d_ff -> D).
class MLP : public Module {
 public:
  MLP(std::int64_t d, std::int64_t d_ff, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "MLP"; }
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
  Tensor forward(const Tensor& x) override { return forward(x, nullptr); }
  /// x is (B, T, D); when attention is non-null it receives the (B, H, T, T) weights.
  Tensor forward(const Tensor& x, Tensor* attention, const Tensor& key_padding_mask = {});
  /// Causal generation step: x (B, n, D) after `past` tokens whose keys and values are in `cache`.
  Tensor forward_cached(const Tensor& x, KVCacheLayer& cache, std::int64_t past);
  std::string name() const override { return "TransformerBlock"; }

  std::shared_ptr<LayerNorm> ln1, ln2;
  std::shared_ptr<MultiHeadSelfAttention> attn;
  std::shared_ptr<MLP> mlp;
  std::shared_ptr<Dropout> drop;

 private:
  /// x + drop(a), then the MLP half with its residual: the block after its attention output a.
  Tensor residuals(const Tensor& x, const Tensor& a);
};

}  // namespace qkv
