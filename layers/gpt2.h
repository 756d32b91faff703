#pragma once
// The GPT-2 family (model.kind = "gpt2"): GPT-2 as OpenAI published it and nanoGPT writes it. Legend: B batch,
// T sequence, D d_model, V vocabulary, L layers.
// Parameter names are nanoGPT's state-dict names (transformer.h.0.attn.c_attn.weight, nn.Linear layout (out, in)),
// so a qkv model file of this kind is a nanoGPT state dict; train/io/gpt2_files.h reads and writes Hugging Face's.
#include <qkv/layers/models.h>

namespace qkv {

/// The sizes and switches of one GPT-2 block.
struct GPT2BlockOptions {
  std::int64_t d_model = 0;
  std::int64_t heads = 1;
  std::int64_t d_ff = 0;     ///< 0 means 4 * d_model (GPT-2's n_inner)
  bool bias = true;          ///< biases in every Linear and LayerNorm (nanoGPT's bias = False turns them off)
  double eps = 1e-5;         ///< LayerNorm eps
  double dropout = 0.0;      ///< residual dropout (before each residual add)
  bool exact_gelu = false;   ///< the exact (erf) GELU, as nanoGPT's model.py; false: the tanh one (GPT-2's gelu_new)
};

/// Causal self-attention with one fused projection: c_attn (D -> 3D, [q | k | v]), then c_proj (D -> D).
/// Attention-weight dropout (GPT-2's attn_pdrop) is not applied: the fused kernel never forms the weights.
class GPT2Attention : public Module {
 public:
  explicit GPT2Attention(const GPT2BlockOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override { return attend(x, {}, false).out; }
  /// x (B, T, D) -> (B, T, D) and, when need_weights, the (B, H, T, T) weights (detached).
  AttentionResult attend(const Tensor& x, const Tensor& key_padding_mask = {}, bool need_weights = true);
  /// Cached generation step: x (B, n, D) after `past` tokens in `cache`.
  Tensor attend_cached(const Tensor& x, KVCacheLayer& cache, std::int64_t past);
  std::string name() const override { return "GPT2Attention"; }
  std::shared_ptr<Linear> c_attn, c_proj;

 private:
  std::int64_t d_, heads_;
};

/// c_fc (D -> d_ff), GELU (tanh-approximated, GPT-2's "gelu_new", or exact, nanoGPT's), c_proj (d_ff -> D).
class GPT2MLP : public Module {
 public:
  explicit GPT2MLP(const GPT2BlockOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "GPT2MLP"; }
  std::shared_ptr<Linear> c_fc, c_proj;

 private:
  bool exact_gelu_ = false;
};

/// Pre-LN block: x = x + drop(attn(ln_1(x))); x = x + drop(mlp(ln_2(x))).
class GPT2Block : public Module {
 public:
  explicit GPT2Block(const GPT2BlockOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override { return attend(x, {}, false).out; }
  AttentionResult attend(const Tensor& x, const Tensor& key_padding_mask = {}, bool need_weights = true);
  Tensor forward_cached(const Tensor& x, KVCacheLayer& cache, std::int64_t past);
  std::string name() const override { return "GPT2Block"; }

  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<GPT2Attention> attn;
  std::shared_ptr<GPT2MLP> mlp;
  std::shared_ptr<Dropout> drop;

 private:
  Tensor residuals(const Tensor& x, const Tensor& a);
};

/// The trunk, nanoGPT's `transformer` ModuleDict: wte, wpe, drop, h, ln_f.
class GPT2Trunk : public Module {
 public:
  std::string name() const override { return "GPT2Trunk"; }
  std::shared_ptr<Embedding> wte, wpe;
  std::shared_ptr<Dropout> drop;
  std::shared_ptr<ModuleList<GPT2Block>> h;
  std::shared_ptr<LayerNorm> ln_f;

  /// Registers a part (the constructor of GPT2 fills the trunk).
  template <class M>
  std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> m) { return register_module(name, std::move(m)); }
};

/// GPT-2: wte + wpe -> drop -> h -> ln_f -> lm_head. The head is wte itself unless config.tie_embeddings is false
/// (one tensor: its gradient sums both uses), then its own lm_head.weight (V, D), without bias, as nanoGPT's.
/// Initialised as GPT-2: every weight N(0, 0.02), the residual projections (attn.c_proj, mlp.c_proj)
/// N(0, 0.02 / sqrt(2 L)), biases 0, LayerNorms 1 and 0. Always causal (config.causal must be true).
class GPT2 : public LanguageModel {
 public:
  explicit GPT2(const ModelConfig& config, Generator& gen = default_generator());
  AttentionResult attend(const Tensor& ids, const Tensor& key_padding_mask = {}, bool need_weights = true) override;
  std::string name() const override { return "GPT2"; }

  std::shared_ptr<GPT2Trunk> transformer;
  std::shared_ptr<Linear> lm_head;  ///< null when tied to transformer.wte

 protected:
  Tensor logits_cached(const Tensor& ids, KVCache& cache) override;
  std::vector<std::pair<std::int64_t, std::int64_t>> cache_widths() const override;
  DType param_dtype() const override { return transformer->wte->weight.dtype(); }

 private:
  Tensor head(const Tensor& h) const;
};

/// The "gpt2" entry of the model kind registry (layers/models.cpp lists it).
const ModelKind& gpt2_model_kind();

}  // namespace qkv
