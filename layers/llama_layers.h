#pragma once
// The Llama family's layers, each a reusable module named as Hugging Face's modeling_llama names it: RMSNorm,
// the rotary position embedding, grouped-query attention (q_proj, k_proj, v_proj, o_proj) and the SwiGLU MLP
// (gate_proj, up_proj, down_proj). Legend: B batch, T sequence, D d_model, H query heads, Hkv key/value heads,
// hd head width.
#include <qkv/layers/attention.h>

namespace qkv {

struct RMSNormOptions {
  std::int64_t d = 0;  ///< the normalised (last) dim
  double eps = 1e-6;   ///< Hugging Face's rms_norm_eps default
};

/// x / sqrt(mean(x^2) + eps) * weight over the last dim (LlamaRMSNorm); weight (D) starts at ones, no bias.
class RMSNorm : public Module {
 public:
  explicit RMSNorm(RMSNormOptions options);
  explicit RMSNorm(std::int64_t d, double eps = 1e-6) : RMSNorm(RMSNormOptions{d, eps}) {}
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "RMSNorm"; }
  std::shared_ptr<Module> fresh() const override;
  Tensor weight;

 private:
  RMSNormOptions options_;
};

/// The rotary embedding's frequencies, as Hugging Face's rope_theta and rope_scaling give them.
struct RopeOptions {
  std::int64_t head_dim = 0;  ///< even; each head's pairs (j, j + hd/2) rotate by position * inv_freq[j]
  double theta = 10000.0;     ///< rope_theta: inv_freq[j] = theta^(-2j / hd)
  /// rope_scaling's rope_type: "" (none), "linear" (inv_freq / factor) or "llama3" (Llama 3.1's: long
  /// wavelengths divided by factor, short ones kept, the band between interpolated). Others are refused by name.
  std::string scaling;
  double factor = 1.0;              ///< linear, llama3
  double low_freq_factor = 1.0;     ///< llama3
  double high_freq_factor = 4.0;    ///< llama3
  std::int64_t original_max_positions = 8192;  ///< llama3: original_max_position_embeddings
  bool operator==(const RopeOptions&) const = default;
};

/// The angles of the rotary embedding: cos and sin tables (T, hd/2) for positions start..start+T-1, computed in
/// float32 as Hugging Face computes them (then converted), so rotated queries match its to the last bit but one.
/// Holds no parameters; the attention applies it with the rope op (core/ops.h).
class RotaryEmbedding : public Module {
 public:
  explicit RotaryEmbedding(RopeOptions options);
  /// inv_freq (hd/2), float64, after any scaling: for tests and the export.
  const std::vector<double>& inv_freq() const { return inv_freq_; }
  /// (cos, sin), each (T, hd/2) in `dtype`, for positions [start, start + t).
  std::pair<Tensor, Tensor> angles(std::int64_t start, std::int64_t t, DType dtype) const;
  /// x (B, T, H*hd) at positions start.. rotated: rope(x, cos, sin, heads).
  Tensor apply(const Tensor& x, std::int64_t heads, std::int64_t start = 0) const;
  Tensor forward(const Tensor& x) override { return apply(x, x.size(2) / options_.head_dim); }
  std::string name() const override { return "RotaryEmbedding"; }
  std::shared_ptr<Module> fresh() const override;
  const RopeOptions& options() const { return options_; }

 private:
  RopeOptions options_;
  std::vector<double> inv_freq_;  // float32 values, as Hugging Face's inv_freq buffer holds them
};

struct GroupedQueryAttentionOptions {
  std::int64_t d_model = 0;
  std::int64_t heads = 1;     ///< query heads
  std::int64_t kv_heads = 0;  ///< key/value heads, dividing heads (0 = heads: multi-head; 1: multi-query)
  std::int64_t head_dim = 0;  ///< 0 = d_model / heads
  bool qkv_bias = false;      ///< biases on q_proj, k_proj, v_proj (Qwen2; Llama's attention_bias also sets o_bias)
  bool o_bias = false;        ///< a bias on o_proj
  bool causal = true;
  RopeOptions rope;           ///< its head_dim is this layer's; theta 0 turns the rotation off
};

/// Grouped-query self-attention with rotary positions: q = rope(q_proj(x)) (H heads), k = rope(k_proj(x)) and
/// v = v_proj(x) (Hkv heads each), query head i attending with key/value head i / (H / Hkv), then o_proj. The
/// KV cache holds the Hkv heads only, keys already rotated.
class GroupedQueryAttention : public Module {
 public:
  explicit GroupedQueryAttention(GroupedQueryAttentionOptions options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override { return attend(x, {}, false).out; }
  /// x (B, T, D) -> (B, T, D) and, when need_weights, the (B, H, T, T) weights (detached).
  AttentionResult attend(const Tensor& x, const Tensor& key_padding_mask = {}, bool need_weights = true);
  /// Cached generation step: x (B, n, D) after `past` tokens whose keys and values are in `cache`
  /// ((B, C, Hkv*hd) each).
  Tensor attend_cached(const Tensor& x, KVCacheLayer& cache, std::int64_t past);
  std::string name() const override { return "GroupedQueryAttention"; }
  std::shared_ptr<Module> fresh() const override;
  const GroupedQueryAttentionOptions& options() const { return options_; }
  /// Key (= value) width of one token in the cache: Hkv * hd.
  std::int64_t kv_width() const { return options_.kv_heads * options_.head_dim; }

  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;
  std::shared_ptr<RotaryEmbedding> rotary;  ///< not a registered child: it holds no state

 private:
  GroupedQueryAttentionOptions options_;
};

struct SwiGLUOptions {
  std::int64_t d = 0;     ///< input and output width
  std::int64_t d_ff = 0;  ///< hidden width (intermediate_size)
  bool bias = false;      ///< Hugging Face's mlp_bias
};

/// down_proj(silu(gate_proj(x)) * up_proj(x)): Llama's MLP.
class SwiGLU : public Module {
 public:
  explicit SwiGLU(SwiGLUOptions options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "SwiGLU"; }
  std::shared_ptr<Module> fresh() const override;
  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;

 private:
  SwiGLUOptions options_;
};

}  // namespace qkv
