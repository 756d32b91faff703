#pragma once
// Self-attention. Legend: B batch, T sequence, D d_model, H heads.
// Each token x_i is projected three ways, q_i = x_i W^Q, k_i = x_i W^K, v_i = x_i W^V; token i attends to j with
// weight softmax_j(q_i . k_j / sqrt(d_k)) and outputs the weighted sum of the v_j.
#include <qkv/layers/linear.h>

namespace qkv {

struct SelfAttentionOptions {
  std::int64_t d_model = 0;
  std::int64_t d_k = 0;  ///< query/key width; 0 means d_model
  std::int64_t d_v = 0;  ///< value width; 0 means d_model
  bool bias = false;     ///< biases on the three projections
  bool causal = false;   ///< token i sees only tokens j <= i
};

/// What attend() returns, on every module that has attention (the one way to get attention weights):
/// the output and, when need_weights, the weights, computed on request and detached, so inspecting or writing
/// them never changes a gradient.
struct AttentionResult {
  Tensor out;      ///< (B, T, d_v) or (B, T, D); a model's logits (B, T, V)
  Tensor weights;  ///< (B, T, T) SelfAttention, (B, H, T, T) multi-head layer and block, (L, B, H, T, T) model
};

/// The one rule for splitting d_model across heads: both positive and heads dividing d_model, else qkv::Error
/// naming `who` (the layer, or the config section whose sizes these are).
void check_heads(const char* who, std::int64_t d_model, std::int64_t heads);

struct MultiHeadSelfAttentionOptions {
  std::int64_t d_model = 0;
  std::int64_t heads = 1;  ///< must divide d_model; each head has width d_model / heads
  bool bias = false;       ///< biases on the four projections
  bool causal = false;     ///< token i sees only tokens j <= i
};

/// One attention layer's keys and values for the tokens already seen (cached generation): k (B, C, H*dk) and
/// v (B, C, H*dv) with room for C tokens. LanguageModel::make_cache makes them; the layers fill them.
struct KVCacheLayer {
  Tensor k, v;
};

/// Single-head scaled dot-product self-attention with learned W^Q, W^K, W^V (submodules w_q, w_k, w_v).
class SelfAttention : public Module {
 public:
  explicit SelfAttention(SelfAttentionOptions options, Generator& gen = default_generator());
  /// x is (B, T, d_model); key_padding_mask (B, T), nonzero where a key is padding (optional). Returns (B, T, d_v).
  Tensor forward(const Tensor& x) override { return attend(x, {}, false).out; }
  Tensor forward(const Tensor& x, const Tensor& key_padding_mask) { return attend(x, key_padding_mask, false).out; }
  /// The output and, when need_weights, the (B, T, T) attention weights: computed on request, detached (for
  /// inspection; training keeps only O(B*T) per layer, see core/ops.h attention).
  AttentionResult attend(const Tensor& x, const Tensor& key_padding_mask = {}, bool need_weights = true);
  /// Causal generation step: x (B, n, d_model) are the n tokens after the `past` ones in `cache` (whose keys and
  /// values they join); returns (B, n, d_v), the rows attend() gives for the whole sequence. Inference only.
  Tensor attend_cached(const Tensor& x, KVCacheLayer& cache, std::int64_t past);
  std::string name() const override { return "SelfAttention"; }
  std::shared_ptr<Module> fresh() const override;
  const SelfAttentionOptions& options() const { return options_; }

  std::shared_ptr<Linear> w_q, w_k, w_v;

 private:
  SelfAttentionOptions options_;
};

/// Multi-head self-attention: w_q, w_k, w_v, w_o (each D -> D), head_dim = D / H; the same math as
/// torch.nn.MultiheadAttention with separate projection weights.
class MultiHeadSelfAttention : public Module {
 public:
  explicit MultiHeadSelfAttention(MultiHeadSelfAttentionOptions options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override { return attend(x, {}, false).out; }
  Tensor forward(const Tensor& x, const Tensor& key_padding_mask) { return attend(x, key_padding_mask, false).out; }
  /// x is (B, T, D); returns (B, T, D) and, when need_weights, per-head weights (B, H, T, T), detached.
  AttentionResult attend(const Tensor& x, const Tensor& key_padding_mask = {}, bool need_weights = true);
  /// Causal generation step, as SelfAttention::attend_cached: x (B, n, D) after `past` cached tokens -> (B, n, D).
  Tensor attend_cached(const Tensor& x, KVCacheLayer& cache, std::int64_t past);
  std::string name() const override { return "MultiHeadSelfAttention"; }
  std::shared_ptr<Module> fresh() const override;
  const MultiHeadSelfAttentionOptions& options() const { return options_; }
  std::int64_t heads() const { return options_.heads; }

  std::shared_ptr<Linear> w_q, w_k, w_v, w_o;

 private:
  MultiHeadSelfAttentionOptions options_;
};

}  // namespace qkv
