#pragma once
// The Llama family (model.kind = "llama"): Hugging Face's LlamaForCausalLM, and the same architecture as
// Qwen2ForCausalLM (biases on q, k, v) and MistralForCausalLM (without a sliding window). Legend: B batch,
// T sequence, D d_model, V vocabulary, L layers.
// Parameter names are Hugging Face's state-dict names (model.layers.0.self_attn.q_proj.weight, nn.Linear layout
// (out, in)), so a qkv model file of this kind is a Hugging Face state dict; train/io/llama_files.h reads and
// writes the folders.
#include <qkv/layers/llama_layers.h>
#include <qkv/layers/models.h>

namespace qkv {

/// The sizes and switches of one Llama block.
struct LlamaBlockOptions {
  GroupedQueryAttentionOptions attention;
  std::int64_t d_ff = 0;  ///< intermediate_size
  bool mlp_bias = false;
  double eps = 1e-6;  ///< rms_norm_eps
};

/// Pre-norm block: h = x + self_attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h)).
class LlamaBlock : public Module {
 public:
  explicit LlamaBlock(const LlamaBlockOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override { return attend(x, {}, false).out; }
  AttentionResult attend(const Tensor& x, const Tensor& key_padding_mask = {}, bool need_weights = true);
  Tensor forward_cached(const Tensor& x, KVCacheLayer& cache, std::int64_t past);
  std::string name() const override { return "LlamaBlock"; }

  std::shared_ptr<RMSNorm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<GroupedQueryAttention> self_attn;
  std::shared_ptr<SwiGLU> mlp;
};

/// The trunk, Hugging Face's LlamaModel: embed_tokens, layers, norm.
class LlamaTrunk : public Module {
 public:
  std::string name() const override { return "LlamaTrunk"; }
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList<LlamaBlock>> layers;
  std::shared_ptr<RMSNorm> norm;

  template <class M>
  std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> m) { return register_module(name, std::move(m)); }
};

/// model.embed_tokens -> model.layers -> model.norm -> lm_head. The head is embed_tokens itself when
/// config.tie_embeddings (one tensor), else lm_head.weight (V, D) without bias. No positional table: positions
/// enter through the rotary embedding, and config.seq_len bounds a sequence (and sizes the KV cache).
/// Initialised as Hugging Face's _init_weights: every Linear and the embedding N(0, 0.02), biases 0, norms 1.
class Llama : public LanguageModel {
 public:
  explicit Llama(const ModelConfig& config, Generator& gen = default_generator());
  AttentionResult attend(const Tensor& ids, const Tensor& key_padding_mask = {}, bool need_weights = true) override;
  std::string name() const override { return "Llama"; }

  std::shared_ptr<LlamaTrunk> model;
  std::shared_ptr<Linear> lm_head;  ///< null when tied to model.embed_tokens

 protected:
  Tensor logits_cached(const Tensor& ids, KVCache& cache) override;
  std::vector<std::pair<std::int64_t, std::int64_t>> cache_widths() const override;
  DType param_dtype() const override { return model->embed_tokens->weight.dtype(); }

 private:
  Tensor head(const Tensor& h) const;
};

/// The block options a llama ModelConfig describes (its kind options resolved: kv_heads, head_dim, rope).
LlamaBlockOptions llama_block_options(const ModelConfig& config);
/// The "llama" entry of the model kind registry (layers/models.cpp lists it).
const ModelKind& llama_model_kind();

}  // namespace qkv
