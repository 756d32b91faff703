#include "qkv/layers/attention.h"

#include <qkv/core/ops.h>

#include <cmath>
#include <limits>

namespace qkv {
namespace {

// (T, T) with ones strictly above the diagonal: the keys a causal query must not see.
Tensor causal_mask(std::int64_t t) {
  Tensor m = Tensor::zeros({t, t});
  float* p = m.data<float>();
  for (std::int64_t i = 0; i < t; ++i)
    for (std::int64_t j = i + 1; j < t; ++j) p[i * t + j] = 1.0f;
  return m;
}

void check_input(const char* layer, const Tensor& x, std::int64_t d_model, const Tensor& key_padding_mask) {
  QKV_CHECK(x.dim() == 3 && x.size(-1) == d_model, "{}: expected input (B, T, {}), got shape {}", layer, d_model,
            x.shape().str());
  if (key_padding_mask.defined())
    QKV_CHECK(key_padding_mask.dim() == 2 && key_padding_mask.size(0) == x.size(0) &&
                  key_padding_mask.size(1) == x.size(1),
              "{}: key_padding_mask must be (B, T) = ({}, {}), got shape {}", layer, x.size(0), x.size(1),
              key_padding_mask.shape().str());
}

}  // namespace

AttentionResult scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                             const Tensor& key_padding_mask) {
  // q, k are (..., T, d_k), v is (..., T, d_v); scores and weights are (..., T, T)
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  Tensor scores = matmul(q, transpose(k, -1, -2)) * scale;
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  if (causal) scores = masked_fill(scores, causal_mask(q.size(-2)), kNegInf);
  if (key_padding_mask.defined()) scores = masked_fill(scores, key_padding_mask, kNegInf);
  Tensor weights = softmax(scores, -1);
  return {matmul(weights, v), weights};
}

SelfAttention::SelfAttention(SelfAttentionOptions options, Generator& gen) : options_(options) {
  QKV_CHECK(options_.d_model > 0, "SelfAttention: d_model must be positive, got {}", options_.d_model);
  QKV_CHECK(options_.d_k >= 0 && options_.d_v >= 0, "SelfAttention: d_k and d_v must be positive, got {} and {}",
            options_.d_k, options_.d_v);
  if (options_.d_k == 0) options_.d_k = options_.d_model;
  if (options_.d_v == 0) options_.d_v = options_.d_model;
  w_q = register_module("w_q", std::make_shared<Linear>(options_.d_model, options_.d_k, options_.bias, gen));
  w_k = register_module("w_k", std::make_shared<Linear>(options_.d_model, options_.d_k, options_.bias, gen));
  w_v = register_module("w_v", std::make_shared<Linear>(options_.d_model, options_.d_v, options_.bias, gen));
}

AttentionResult SelfAttention::attend(const Tensor& x, const Tensor& key_padding_mask) {
  // x is (B, T, D); q, k are (B, T, d_k); v is (B, T, d_v); the padding mask (B, T) becomes (B, 1, T)
  check_input("SelfAttention", x, options_.d_model, key_padding_mask);
  const Tensor pad = key_padding_mask.defined() ? unsqueeze(key_padding_mask, 1) : Tensor();
  return scaled_dot_product_attention(w_q->forward(x), w_k->forward(x), w_v->forward(x), options_.causal, pad);
}

MultiHeadSelfAttention::MultiHeadSelfAttention(std::int64_t d_model, std::int64_t heads, bool causal, bool bias,
                                               Generator& gen)
    : d_model_(d_model), heads_(heads), causal_(causal) {
  QKV_CHECK(d_model > 0 && heads > 0, "MultiHeadSelfAttention: d_model and heads must be positive, got {} and {}",
            d_model, heads);
  QKV_CHECK(d_model % heads == 0, "MultiHeadSelfAttention: d_model = {} is not divisible by heads = {}", d_model,
            heads);
  w_q = register_module("w_q", std::make_shared<Linear>(d_model, d_model, bias, gen));
  w_k = register_module("w_k", std::make_shared<Linear>(d_model, d_model, bias, gen));
  w_v = register_module("w_v", std::make_shared<Linear>(d_model, d_model, bias, gen));
  w_o = register_module("w_o", std::make_shared<Linear>(d_model, d_model, bias, gen));
}

AttentionResult MultiHeadSelfAttention::attend(const Tensor& x, const Tensor& key_padding_mask) {
  // x is (B, T, D); per head (B, H, T, D/H); the padding mask (B, T) becomes (B, 1, 1, T)
  check_input("MultiHeadSelfAttention", x, d_model_, key_padding_mask);
  const std::int64_t b = x.size(0), t = x.size(1), hd = d_model_ / heads_;
  const auto split_heads = [&](const Tensor& y) { return permute(reshape(y, {b, t, heads_, hd}), {0, 2, 1, 3}); };
  const Tensor pad = key_padding_mask.defined() ? reshape(key_padding_mask, {b, 1, 1, t}) : Tensor();
  auto [heads_out, weights] = scaled_dot_product_attention(split_heads(w_q->forward(x)), split_heads(w_k->forward(x)),
                                                           split_heads(w_v->forward(x)), causal_, pad);
  const Tensor merged = reshape(permute(heads_out, {0, 2, 1, 3}), {b, t, d_model_});
  return {w_o->forward(merged), weights};
}

}  // namespace qkv
