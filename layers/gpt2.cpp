#include "qkv/layers/gpt2.h"

#include <qkv/core/ops.h>

#include <cmath>

namespace qkv {
namespace {

constexpr double kInitStd = 0.02;  // GPT-2's initializer_range

/// Overwrites t with N(0, std) draws from gen (GPT-2's initialisation, after the layer's own).
void init_normal(const Tensor& t, double std, Generator& gen) {
  if (NoInitGuard::active()) return;  // weights a file is about to replace
  NoGradGuard no_grad;
  t.copy_(Tensor::randn(t.shape(), gen) * std);
}

std::shared_ptr<Linear> gpt2_linear(std::int64_t in, std::int64_t out, bool bias, double std, Generator& gen) {
  auto l = std::make_shared<Linear>(in, out, bias, gen);
  init_normal(l->weight, std, gen);
  if (bias) l->bias.zero_();
  return l;
}

double residual_std(std::int64_t layers) { return kInitStd / std::sqrt(2.0 * double(layers)); }

}  // namespace

GPT2Attention::GPT2Attention(const GPT2BlockOptions& o, Generator& gen) : d_(o.d_model), heads_(o.heads) {
  check_heads("GPT2Attention", o.d_model, o.heads);
  c_attn = register_module("c_attn", gpt2_linear(o.d_model, 3 * o.d_model, o.bias, kInitStd, gen));
  c_proj = register_module("c_proj", std::make_shared<Linear>(o.d_model, o.d_model, o.bias, gen));
}

AttentionResult GPT2Attention::attend(const Tensor& x_in, const Tensor& key_padding_mask, bool need_weights) {
  return hooked(x_in, [&](const Tensor& x) -> AttentionResult {
    QKV_CHECK(x.dim() == 3 && x.size(2) == d_, "GPT2Attention: expected input (B, T, {}), got shape {}", d_,
              x.shape().str());
    const std::int64_t hd = d_ / heads_;
    auto [merged, weights] =
        attention_packed((*c_attn)(x), heads_, hd, hd, /*causal=*/true, key_padding_mask, need_weights);
    return {(*c_proj)(merged), weights};
  });
}

Tensor GPT2Attention::attend_cached(const Tensor& x_in, KVCacheLayer& cache, std::int64_t past) {
  return hooked(x_in, [&](const Tensor& x) -> Tensor {
    QKV_CHECK(x.dim() == 3 && x.size(2) == d_, "GPT2Attention: expected input (B, n, {}), got shape {}", d_,
              x.shape().str());
    const std::int64_t hd = d_ / heads_;
    return (*c_proj)(attention_cached((*c_attn)(x), cache.k, cache.v, past, heads_, hd, hd));
  });
}

GPT2MLP::GPT2MLP(const GPT2BlockOptions& o, Generator& gen) : exact_gelu_(o.exact_gelu) {
  const std::int64_t d_ff = o.d_ff == 0 ? 4 * o.d_model : o.d_ff;
  c_fc = register_module("c_fc", gpt2_linear(o.d_model, d_ff, o.bias, kInitStd, gen));
  c_proj = register_module("c_proj", std::make_shared<Linear>(d_ff, o.d_model, o.bias, gen));
}

Tensor GPT2MLP::forward(const Tensor& x) { return (*c_proj)(gelu((*c_fc)(x), /*approximate=*/!exact_gelu_)); }

GPT2Block::GPT2Block(const GPT2BlockOptions& o, Generator& gen) {
  ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(LayerNormOptions{o.d_model, o.eps, o.bias}));
  attn = register_module("attn", std::make_shared<GPT2Attention>(o, gen));
  ln_2 = register_module("ln_2", std::make_shared<LayerNorm>(LayerNormOptions{o.d_model, o.eps, o.bias}));
  mlp = register_module("mlp", std::make_shared<GPT2MLP>(o, gen));
  drop = register_module("drop", std::make_shared<Dropout>(o.dropout, gen));
}

AttentionResult GPT2Block::attend(const Tensor& x_in, const Tensor& key_padding_mask, bool need_weights) {
  return hooked(x_in, [&](const Tensor& x) -> AttentionResult {
    auto [a, weights] = attn->attend((*ln_1)(x), key_padding_mask, need_weights);
    return {residuals(x, a), weights};
  });
}

Tensor GPT2Block::forward_cached(const Tensor& x_in, KVCacheLayer& cache, std::int64_t past) {
  return hooked(x_in, [&](const Tensor& x) -> Tensor {
    return residuals(x, attn->attend_cached((*ln_1)(x), cache, past));
  });
}

Tensor GPT2Block::residuals(const Tensor& x, const Tensor& a) {
  const Tensor h = x + (*drop)(a);
  return h + (*drop)((*mlp)((*ln_2)(h)));
}

GPT2::GPT2(const ModelConfig& c, Generator& gen) : LanguageModel(c) {
  const GPT2BlockOptions block{
      .d_model = c.d_model, .heads = c.heads, .d_ff = c.d_ff, .bias = c.bias, .eps = c.norm_eps, .dropout = c.dropout,
      .exact_gelu = c.option<std::string>("activation") == "gelu"};
  transformer = register_module("transformer", std::make_shared<GPT2Trunk>());
  auto& t = *transformer;
  t.wte = t.add("wte", std::make_shared<Embedding>(c.vocab_size, c.d_model, gen));
  t.wpe = t.add("wpe", std::make_shared<Embedding>(c.seq_len, c.d_model, gen));
  init_normal(t.wte->weight, kInitStd, gen);
  init_normal(t.wpe->weight, kInitStd, gen);
  t.drop = t.add("drop", std::make_shared<Dropout>(c.dropout, gen));
  t.h = t.add("h", std::make_shared<ModuleList<GPT2Block>>());
  for (std::int64_t i = 0; i < c.layers; ++i) {
    auto b = std::make_shared<GPT2Block>(block, gen);
    for (const auto& proj : {b->attn->c_proj, b->mlp->c_proj}) {  // the residual projections
      init_normal(proj->weight, residual_std(c.layers), gen);
      if (proj->bias.defined()) proj->bias.zero_();
    }
    t.h->push_back(std::move(b));
  }
  t.ln_f = t.add("ln_f", std::make_shared<LayerNorm>(LayerNormOptions{c.d_model, c.norm_eps, c.bias}));
  if (!c.tie_embeddings)
    lm_head = register_module("lm_head", gpt2_linear(c.d_model, c.vocab_size, false, kInitStd, gen));
  const auto stream = start_dropout_stream(gen);
  t.drop->set_generator(stream);
  for (const auto& b : *t.h) b->drop->set_generator(stream);
}

Tensor GPT2::head(const Tensor& h) const {
  return linear((*transformer->ln_f)(h), lm_head ? lm_head->weight : transformer->wte->weight);
}

AttentionResult GPT2::attend(const Tensor& ids, const Tensor& key_padding_mask, bool need_weights) {
  const auto& t = *transformer;
  auto [h, weights] = attend_blocks(*t.h, (*t.drop)(embed(*t.wte, *t.wpe, ids)), key_padding_mask, need_weights);
  return {head(h), weights};  // weights (L, B, H, T, T)
}

Tensor GPT2::logits_cached(const Tensor& ids, KVCache& cache) {
  const auto& t = *transformer;
  return head(forward_blocks_cached(*t.h, embed(*t.wte, *t.wpe, ids, cache.length), cache));
}

std::vector<std::pair<std::int64_t, std::int64_t>> GPT2::cache_widths() const { return model_wide_cache(); }

namespace {

double gpt2_dff(const ModelConfig& c) { return double(c.d_ff ? c.d_ff : 4 * c.d_model); }

}  // namespace

const ModelKind& gpt2_model_kind() {
  static const ModelKind kind{
      .name = "gpt2",
      .build = [](const ModelConfig& c, Generator& gen) -> std::shared_ptr<LanguageModel> {
        return std::make_shared<GPT2>(c, gen);
      },
      .check =
          [](const ModelConfig& c) {
            check_heads("model", c.d_model, c.heads);
            QKV_CHECK(c.causal, "model: kind \"gpt2\" is a causal language model: set model.causal = true");
            QKV_CHECK(c.norm_eps > 0, "model: norm_eps must be positive, got {}", c.norm_eps);
            const std::string act = c.option<std::string>("activation");
            QKV_CHECK(act == "gelu_new" || act == "gelu",
                      "model: activation = \"{}\" is not a GPT-2 activation (expected gelu_new, the tanh GELU, or "
                      "gelu, the exact one)", act);
          },
      .parameters =
          [](const ModelConfig& c) {
            const double d = double(c.d_model), v = double(c.vocab_size), dff = gpt2_dff(c), b = c.bias ? 1 : 0;
            const double norm = d * (1 + b);
            const double block =
                norm + (3 * d * d + b * 3 * d) + (d * d + b * d) + norm + (d * dff + b * dff) + (dff * d + b * d);
            return double(c.vocab_size + c.seq_len) * d + double(c.layers) * block + norm +
                   (c.tie_embeddings ? 0 : d * v);
          },
      // the products and activations of the pre-LN transformer, whose shape this is (plus the embedding dropout)
      .flops_per_token = [](const ModelConfig& c,
                            std::int64_t t) { return model_kind("transformer").flops_per_token(c, t); },
      .activations_per_token =
          [](const ModelConfig& c) { return model_kind("transformer").activations_per_token(c) + double(c.d_model); },
      .decay_matrices_only = true,
      .can_recompute = true,
      .options = {{"activation", std::string("gelu_new"), 0, 0,
                   "gpt2: the MLP's GELU: gelu_new (tanh, GPT-2's and Hugging Face's) or gelu (exact erf, nanoGPT's)"}},
  };
  return kind;
}

}  // namespace qkv
