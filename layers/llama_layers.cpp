#include "qkv/layers/llama_layers.h"

#include <qkv/core/ops.h>

#include <cmath>
#include <numbers>

namespace qkv {

RMSNorm::RMSNorm(RMSNormOptions o) : options_(o) {
  QKV_CHECK(o.d > 0, "RMSNorm: normalized size must be positive, got {}", o.d);
  QKV_CHECK(o.eps >= 0, "RMSNorm: eps must be >= 0, got {}", o.eps);
  weight = register_parameter("weight", Tensor::ones({o.d}));
}

Tensor RMSNorm::forward(const Tensor& x) {
  QKV_CHECK(x.dim() >= 1 && x.size(-1) == options_.d, "RMSNorm: expected input (..., {}), got shape {}", options_.d,
            x.shape().str());
  return rms_norm(x, weight, options_.eps);
}

std::shared_ptr<Module> RMSNorm::fresh() const { return std::make_shared<RMSNorm>(options_); }

namespace {

// Hugging Face's inv_freq in float32 arithmetic (modeling_rope_utils: the default, linear and llama3 rules).
std::vector<double> rope_frequencies(const RopeOptions& o) {
  const std::int64_t half = o.head_dim / 2;
  std::vector<double> out(static_cast<std::size_t>(half));
  for (std::int64_t j = 0; j < half; ++j) {
    const float exponent = float(2 * j) / float(o.head_dim);
    float inv = 1.0f / float(std::pow(o.theta, double(exponent)));
    if (o.scaling == "linear") inv = inv / float(o.factor);
    if (o.scaling == "llama3") {
      const float factor = float(o.factor), low = float(o.low_freq_factor), high = float(o.high_freq_factor);
      const float old_len = float(o.original_max_positions);
      const float low_wavelen = old_len / low, high_wavelen = old_len / high;
      const float wavelen = float(2 * std::numbers::pi) / inv;
      const float scaled = wavelen > low_wavelen ? inv / factor : inv;
      if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {  // the band between: interpolated
        const float smooth = (old_len / wavelen - low) / (high - low);
        inv = (1 - smooth) * scaled / factor + smooth * scaled;
      } else {
        inv = scaled;
      }
    }
    out[static_cast<std::size_t>(j)] = double(inv);
  }
  return out;
}

}  // namespace

RotaryEmbedding::RotaryEmbedding(RopeOptions o) : options_(std::move(o)) {
  QKV_CHECK(options_.head_dim > 0 && options_.head_dim % 2 == 0, "RotaryEmbedding: head_dim must be even, got {}",
            options_.head_dim);
  QKV_CHECK(options_.theta > 0, "RotaryEmbedding: rope_theta must be positive, got {}", options_.theta);
  QKV_CHECK(options_.scaling.empty() || options_.scaling == "linear" || options_.scaling == "llama3",
            "RotaryEmbedding: rope_scaling type '{}' is not supported (expected linear or llama3)", options_.scaling);
  if (!options_.scaling.empty())
    QKV_CHECK(options_.factor >= 1, "RotaryEmbedding: rope_scaling factor must be >= 1, got {}", options_.factor);
  if (options_.scaling == "llama3")
    QKV_CHECK(options_.high_freq_factor > options_.low_freq_factor && options_.low_freq_factor > 0 &&
                  options_.original_max_positions > 0,
              "RotaryEmbedding: llama3 scaling needs 0 < low_freq_factor < high_freq_factor and "
              "original_max_position_embeddings > 0, got {}, {} and {}",
              options_.low_freq_factor, options_.high_freq_factor, options_.original_max_positions);
  inv_freq_ = rope_frequencies(options_);
}

std::pair<Tensor, Tensor> RotaryEmbedding::angles(std::int64_t start, std::int64_t t, DType dtype) const {
  const std::int64_t half = options_.head_dim / 2;
  std::vector<double> c(static_cast<std::size_t>(t * half)), s(c.size());
  for (std::int64_t p = 0; p < t; ++p)
    for (std::int64_t j = 0; j < half; ++j) {
      // float32 as Hugging Face: the product rounded to float, its cos and sin correctly rounded
      const float angle = float(inv_freq_[static_cast<std::size_t>(j)]) * float(start + p);
      const auto k = static_cast<std::size_t>(p * half + j);
      c[k] = double(float(std::cos(double(angle))));
      s[k] = double(float(std::sin(double(angle))));
    }
  return {Tensor::from(c, {t, half}).to(dtype), Tensor::from(s, {t, half}).to(dtype)};
}

Tensor RotaryEmbedding::apply(const Tensor& x, std::int64_t heads, std::int64_t start) const {
  const auto [c, s] = angles(start, x.dim() == 3 ? x.size(1) : 0, x.dtype());
  return rope(x, c, s, heads);
}

std::shared_ptr<Module> RotaryEmbedding::fresh() const { return std::make_shared<RotaryEmbedding>(options_); }

namespace {

GroupedQueryAttentionOptions resolved(GroupedQueryAttentionOptions o) {
  QKV_CHECK(o.d_model > 0 && o.heads > 0, "GroupedQueryAttention: d_model and heads must be positive, got {} and {}",
            o.d_model, o.heads);
  if (o.kv_heads == 0) o.kv_heads = o.heads;
  if (o.head_dim == 0) {
    check_heads("GroupedQueryAttention", o.d_model, o.heads);
    o.head_dim = o.d_model / o.heads;
  }
  QKV_CHECK(o.kv_heads > 0 && o.heads % o.kv_heads == 0,
            "GroupedQueryAttention: kv_heads = {} must divide heads = {}", o.kv_heads, o.heads);
  QKV_CHECK(o.head_dim > 0 && o.head_dim % 2 == 0, "GroupedQueryAttention: head_dim must be even, got {}", o.head_dim);
  o.rope.head_dim = o.head_dim;
  return o;
}

}  // namespace

GroupedQueryAttention::GroupedQueryAttention(GroupedQueryAttentionOptions o, Generator& gen) : options_(resolved(o)) {
  const auto& r = options_;
  q_proj = register_module("q_proj", std::make_shared<Linear>(r.d_model, r.heads * r.head_dim, r.qkv_bias, gen));
  k_proj = register_module("k_proj", std::make_shared<Linear>(r.d_model, kv_width(), r.qkv_bias, gen));
  v_proj = register_module("v_proj", std::make_shared<Linear>(r.d_model, kv_width(), r.qkv_bias, gen));
  o_proj = register_module("o_proj", std::make_shared<Linear>(r.heads * r.head_dim, r.d_model, r.o_bias, gen));
  if (r.rope.theta > 0) rotary = std::make_shared<RotaryEmbedding>(r.rope);
}

AttentionResult GroupedQueryAttention::attend(const Tensor& x_in, const Tensor& key_padding_mask, bool need_weights) {
  return hooked(x_in, [&](const Tensor& x) -> AttentionResult {
    QKV_CHECK(x.dim() == 3 && x.size(2) == options_.d_model,
              "GroupedQueryAttention: expected input (B, T, {}), got shape {}", options_.d_model, x.shape().str());
    Tensor q = (*q_proj)(x), k = (*k_proj)(x);
    if (rotary) {
      q = rotary->apply(q, options_.heads);
      k = rotary->apply(k, options_.kv_heads);
    }
    auto [out, weights] = attention(q, k, (*v_proj)(x), options_.heads, options_.causal, key_padding_mask, need_weights);
    return {(*o_proj)(out), weights};
  });
}

Tensor GroupedQueryAttention::attend_cached(const Tensor& x_in, KVCacheLayer& cache, std::int64_t past) {
  return hooked(x_in, [&](const Tensor& x) -> Tensor {
    QKV_CHECK(options_.causal, "GroupedQueryAttention: cached generation needs causal attention");
    QKV_CHECK(x.dim() == 3 && x.size(2) == options_.d_model,
              "GroupedQueryAttention: expected input (B, n, {}), got shape {}", options_.d_model, x.shape().str());
    Tensor q = (*q_proj)(x), k = (*k_proj)(x);
    if (rotary) {
      q = rotary->apply(q, options_.heads, past);
      k = rotary->apply(k, options_.kv_heads, past);
    }
    return (*o_proj)(attention_cached(q, k, (*v_proj)(x), cache.k, cache.v, past, options_.heads));
  });
}

std::shared_ptr<Module> GroupedQueryAttention::fresh() const {
  Generator throwaway;
  return std::make_shared<GroupedQueryAttention>(options_, throwaway);
}

SwiGLU::SwiGLU(SwiGLUOptions o, Generator& gen) : options_(o) {
  QKV_CHECK(o.d > 0 && o.d_ff > 0, "SwiGLU: widths must be positive, got d = {} and d_ff = {}", o.d, o.d_ff);
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(o.d, o.d_ff, o.bias, gen));
  up_proj = register_module("up_proj", std::make_shared<Linear>(o.d, o.d_ff, o.bias, gen));
  down_proj = register_module("down_proj", std::make_shared<Linear>(o.d_ff, o.d, o.bias, gen));
}

Tensor SwiGLU::forward(const Tensor& x) { return (*down_proj)(silu((*gate_proj)(x)) * (*up_proj)(x)); }

std::shared_ptr<Module> SwiGLU::fresh() const {
  Generator throwaway;
  return std::make_shared<SwiGLU>(options_, throwaway);
}

}  // namespace qkv
