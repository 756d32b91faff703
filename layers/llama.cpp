#include "qkv/layers/llama.h"

#include <qkv/core/ops.h>

namespace qkv {
namespace {

constexpr double kInitStd = 0.02;  // Hugging Face's initializer_range

void init_normal(const Tensor& t, Generator& gen) {
  if (NoInitGuard::active()) return;  // weights a file is about to replace
  NoGradGuard no_grad;
  t.copy_(Tensor::randn(t.shape(), gen) * kInitStd);
}

void init_linear(Linear& l, Generator& gen) {
  init_normal(l.weight, gen);
  if (l.bias.defined()) l.bias.zero_();
}

}  // namespace

LlamaBlock::LlamaBlock(const LlamaBlockOptions& o, Generator& gen) {
  const std::int64_t d = o.attention.d_model;
  input_layernorm = register_module("input_layernorm", std::make_shared<RMSNorm>(RMSNormOptions{d, o.eps}));
  self_attn = register_module("self_attn", std::make_shared<GroupedQueryAttention>(o.attention, gen));
  post_attention_layernorm =
      register_module("post_attention_layernorm", std::make_shared<RMSNorm>(RMSNormOptions{d, o.eps}));
  mlp = register_module("mlp", std::make_shared<SwiGLU>(SwiGLUOptions{d, o.d_ff, o.mlp_bias}, gen));
}

AttentionResult LlamaBlock::attend(const Tensor& x_in, const Tensor& key_padding_mask, bool need_weights) {
  return hooked(x_in, [&](const Tensor& x) -> AttentionResult {
    auto [a, weights] = self_attn->attend((*input_layernorm)(x), key_padding_mask, need_weights);
    const Tensor h = x + a;
    return {h + (*mlp)((*post_attention_layernorm)(h)), weights};
  });
}

Tensor LlamaBlock::forward_cached(const Tensor& x_in, KVCacheLayer& cache, std::int64_t past) {
  return hooked(x_in, [&](const Tensor& x) -> Tensor {
    const Tensor h = x + self_attn->attend_cached((*input_layernorm)(x), cache, past);
    return h + (*mlp)((*post_attention_layernorm)(h));
  });
}

LlamaBlockOptions llama_block_options(const ModelConfig& c) {
  const std::int64_t kv = c.option<std::int64_t>("kv_heads"), hd = c.option<std::int64_t>("head_dim");
  const std::string scaling = c.option<std::string>("rope_scaling");
  return {.attention = {.d_model = c.d_model,
                        .heads = c.heads,
                        .kv_heads = kv == 0 ? c.heads : kv,
                        .head_dim = hd == 0 ? c.d_model / c.heads : hd,
                        .qkv_bias = c.option<bool>("qkv_bias"),
                        .o_bias = c.option<bool>("o_bias"),
                        .causal = true,
                        .rope = {.head_dim = hd == 0 ? c.d_model / c.heads : hd,
                                 .theta = c.option<double>("rope_theta"),
                                 .scaling = scaling,
                                 .factor = c.option<double>("rope_factor"),
                                 .low_freq_factor = c.option<double>("rope_low_freq_factor"),
                                 .high_freq_factor = c.option<double>("rope_high_freq_factor"),
                                 .original_max_positions = c.option<std::int64_t>("rope_original_positions")}},
          .d_ff = c.d_ff == 0 ? 4 * c.d_model : c.d_ff,
          .mlp_bias = c.option<bool>("mlp_bias"),
          .eps = c.norm_eps};
}

Llama::Llama(const ModelConfig& c, Generator& gen) : LanguageModel(c) {
  const LlamaBlockOptions block = llama_block_options(c);
  model = register_module("model", std::make_shared<LlamaTrunk>());
  auto& m = *model;
  m.embed_tokens = m.add("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.d_model, gen));
  init_normal(m.embed_tokens->weight, gen);
  m.layers = m.add("layers", std::make_shared<ModuleList<LlamaBlock>>());
  for (std::int64_t i = 0; i < c.layers; ++i) {
    auto b = std::make_shared<LlamaBlock>(block, gen);
    for (Linear* l : {b->self_attn->q_proj.get(), b->self_attn->k_proj.get(), b->self_attn->v_proj.get(),
                      b->self_attn->o_proj.get(), b->mlp->gate_proj.get(), b->mlp->up_proj.get(),
                      b->mlp->down_proj.get()})
      init_linear(*l, gen);
    m.layers->push_back(std::move(b));
  }
  m.norm = m.add("norm", std::make_shared<RMSNorm>(RMSNormOptions{c.d_model, c.norm_eps}));
  if (!c.tie_embeddings) {
    lm_head = register_module("lm_head", std::make_shared<Linear>(c.d_model, c.vocab_size, false, gen));
    init_linear(*lm_head, gen);
  }
  start_dropout_stream(gen);  // no dropout; kept so every model saves the same state
}

Tensor Llama::head(const Tensor& h) const {
  return linear((*model->norm)(h), lm_head ? lm_head->weight : model->embed_tokens->weight);
}

AttentionResult Llama::attend(const Tensor& ids, const Tensor& key_padding_mask, bool need_weights) {
  check_ids(ids);
  auto [h, weights] = attend_blocks(*model->layers, (*model->embed_tokens)(ids), key_padding_mask, need_weights);
  return {head(h), weights};
}

Tensor Llama::logits_cached(const Tensor& ids, KVCache& cache) {
  check_ids(ids);
  return head(forward_blocks_cached(*model->layers, (*model->embed_tokens)(ids), cache));
}

std::vector<std::pair<std::int64_t, std::int64_t>> Llama::cache_widths() const {
  const std::int64_t w = (*model->layers)[0].self_attn->kv_width();
  return std::vector<std::pair<std::int64_t, std::int64_t>>(static_cast<std::size_t>(config().layers), {w, w});
}

namespace {

struct Sizes {
  double d, v, h, kv, hd, dff;
};
Sizes sizes(const ModelConfig& c) {
  const LlamaBlockOptions o = llama_block_options(c);
  return {double(c.d_model), double(c.vocab_size), double(o.attention.heads), double(o.attention.kv_heads),
          double(o.attention.head_dim), double(o.d_ff)};
}

void check_llama(const ModelConfig& c) {
  QKV_CHECK(c.causal, "model: kind \"llama\" is a causal language model: set model.causal = true");
  QKV_CHECK(c.heads > 0, "model: heads must be positive, got {}", c.heads);
  QKV_CHECK(c.dropout == 0, "model: kind \"llama\" has no dropout (Hugging Face's Llama has none in its blocks), got "
            "model.dropout = {}", c.dropout);
  QKV_CHECK(c.norm_eps > 0, "model: norm_eps must be positive, got {}", c.norm_eps);
  const std::int64_t kv = c.option<std::int64_t>("kv_heads"), hd = c.option<std::int64_t>("head_dim");
  if (hd == 0) check_heads("model", c.d_model, c.heads);
  QKV_CHECK(kv == 0 || c.heads % kv == 0, "model: kv_heads = {} must divide heads = {}", kv, c.heads);
  QKV_CHECK((hd == 0 ? c.d_model / c.heads : hd) % 2 == 0, "model: the head width must be even for the rotary "
            "embedding, got {}", hd == 0 ? c.d_model / c.heads : hd);
  const std::string scaling = c.option<std::string>("rope_scaling");
  QKV_CHECK(scaling.empty() || scaling == "linear" || scaling == "llama3",
            "model: rope_scaling = \"{}\" is not supported (expected \"\", \"linear\" or \"llama3\")", scaling);
  const std::string arch = c.option<std::string>("arch");
  QKV_CHECK(arch == "llama" || arch == "qwen2" || arch == "mistral",
            "model: arch = \"{}\" is not a llama-family architecture qkv writes (expected llama, qwen2 or mistral)",
            arch);
  RotaryEmbedding check(llama_block_options(c).attention.rope);  // the rope's own rules (factors)
}

}  // namespace

const ModelKind& llama_model_kind() {
  static const ModelKind kind{
      .name = "llama",
      .build = [](const ModelConfig& c, Generator& gen) -> std::shared_ptr<LanguageModel> {
        return std::make_shared<Llama>(c, gen);
      },
      .check = check_llama,
      .parameters =
          [](const ModelConfig& c) {
            const Sizes s = sizes(c);
            const double qkv_b = c.option<bool>("qkv_bias") ? (s.h + 2 * s.kv) * s.hd : 0;
            const double o_b = c.option<bool>("o_bias") ? s.d : 0, mlp_b = c.option<bool>("mlp_bias") ? 2 * s.dff + s.d : 0;
            const double block = 2 * s.d + s.d * (s.h + 2 * s.kv) * s.hd + qkv_b + s.h * s.hd * s.d + o_b +
                                 3 * s.d * s.dff + mlp_b;
            return s.v * s.d + double(c.layers) * block + s.d + (c.tie_embeddings ? 0 : s.d * s.v);
          },
      .flops_per_token =
          [](const ModelConfig& c, std::int64_t t) {
            const Sizes s = sizes(c);
            const double per_layer = 2 * s.d * (s.h + 2 * s.kv) * s.hd + 2 * s.h * s.hd * s.d +
                                     2 * 2 * double(t) * s.h * s.hd + 2 * 3 * s.d * s.dff;
            return double(c.layers) * per_layer + 2 * s.d * s.v;
          },
      .activations_per_token =
          [](const ModelConfig& c) {
            const Sizes s = sizes(c);
            const double block = 8 * s.d + 3 * (s.h + 2 * s.kv) * s.hd + 5 * s.dff + 2 * s.h;
            const double trunk = c.recompute ? double(c.layers) * s.d + block : double(c.layers) * block;
            return trunk + 4 * s.d + 4 * s.v;
          },
      .decay_matrices_only = true,
      .can_recompute = true,
      .options =
          {
              {"kv_heads", std::int64_t{0}, 0, 1e4,
               "llama: key/value heads shared by groups of query heads (0 = heads; 1 = multi-query)"},
              {"head_dim", std::int64_t{0}, 0, 1e5, "llama: width of each head (0 = d_model / heads)"},
              {"rope_theta", 10000.0, 1e-3, 1e12, "llama: the rotary embedding's base (rope_theta)"},
              {"rope_scaling", std::string(), 0, 0, "llama: rope_scaling's type: \"\" (none), \"linear\" or \"llama3\""},
              {"rope_factor", 1.0, 1, 1e6, "llama: rope_scaling's factor"},
              {"rope_low_freq_factor", 1.0, 1e-6, 1e6, "llama: rope_scaling llama3's low_freq_factor"},
              {"rope_high_freq_factor", 4.0, 1e-6, 1e6, "llama: rope_scaling llama3's high_freq_factor"},
              {"rope_original_positions", std::int64_t{8192}, 1, 1e9,
               "llama: rope_scaling llama3's original_max_position_embeddings"},
              {"qkv_bias", false, 0, 0, "llama: biases on q_proj, k_proj, v_proj (Qwen2)"},
              {"o_bias", false, 0, 0, "llama: a bias on o_proj (with qkv_bias: Llama's attention_bias)"},
              {"mlp_bias", false, 0, 0, "llama: biases on gate_proj, up_proj, down_proj (Llama's mlp_bias)"},
              {"arch", std::string("llama"), 0, 0,
               "llama: the Hugging Face architecture its folders name: llama, qwen2 or mistral"},
          },
  };
  return kind;
}

}  // namespace qkv
