#include "qkv/layers/attention.h"

#include <qkv/core/ops.h>


namespace qkv {
namespace {

// One GEMM for the three projections: x (B, T, D) against [W^Q; W^K; W^V] gives [q | k | v] (B, T, 2dk + dv).
// The weights stay three parameters (their names are the contract); concatenating them per call is cheap.
Tensor project_qkv(const Tensor& x, const Linear& q, const Linear& k, const Linear& v) {
  const Tensor w = concat({q.weight, k.weight, v.weight}, 0);
  const Tensor b = q.bias.defined() ? concat({q.bias, k.bias, v.bias}, 0) : Tensor();
  return linear(x, w, b);
}

void check_input(const char* layer, const Tensor& x, std::int64_t d_model, const Tensor& key_padding_mask,
                 const Tensor& w_q) {
  QKV_CHECK(x.defined(), "{}: the input is an undefined tensor", layer);
  QKV_CHECK(x.dim() == 3 && x.size(-1) == d_model, "{}: expected input (B, T, {}), got shape {}", layer, d_model,
            x.shape().str());
  // Named here, not as a mixed-dtype error from the internal [W^Q; W^K; W^V] product.
  QKV_CHECK(x.dtype() == w_q.dtype(), "{}: input is {} but the parameters (w_q.weight, ...) are {}; convert one with "
            ".to() (module.to(dtype) converts every parameter)", layer, dtype_name(x.dtype()),
            dtype_name(w_q.dtype()));
  if (key_padding_mask.defined())
    QKV_CHECK(key_padding_mask.dim() == 2 && key_padding_mask.size(0) == x.size(0) &&
                  key_padding_mask.size(1) == x.size(1),
              "{}: key_padding_mask must be (B, T) = ({}, {}), got shape {}", layer, x.size(0), x.size(1),
              key_padding_mask.shape().str());
}

void check_cached(const char* layer, bool causal, const Tensor& x, std::int64_t d_model, const Tensor& w_q) {
  QKV_CHECK(causal, "{}: cached attention needs a causal layer (a token's keys must not depend on later tokens)",
            layer);
  check_input(layer, x, d_model, {}, w_q);
}

}  // namespace

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

AttentionResult SelfAttention::attend(const Tensor& x_in, const Tensor& key_padding_mask, bool need_weights) {
  return hooked(x_in, [&](const Tensor& x) -> AttentionResult {
    // x is (B, T, D); q, k are (B, T, d_k); v is (B, T, d_v); the padding mask (B, T) becomes (B, 1, T)
    check_input("SelfAttention", x, options_.d_model, key_padding_mask, w_q->weight);
    auto [out, weights] = attention_packed(project_qkv(x, *w_q, *w_k, *w_v), 1, options_.d_k, options_.d_v,
                                           options_.causal, key_padding_mask, need_weights);
    return {out, need_weights ? reshape(weights, {x.size(0), x.size(1), x.size(1)}) : Tensor()};
  });
}

Tensor SelfAttention::attend_cached(const Tensor& x_in, KVCacheLayer& cache, std::int64_t past) {
  return hooked(x_in, [&](const Tensor& x) -> Tensor {
    check_cached("SelfAttention", options_.causal, x, options_.d_model, w_q->weight);
    return attention_cached(project_qkv(x, *w_q, *w_k, *w_v), cache.k, cache.v, past, 1, options_.d_k, options_.d_v);
  });
}

void check_heads(const char* who, std::int64_t d_model, std::int64_t heads) {
  QKV_CHECK(d_model > 0 && heads > 0, "{}: d_model and heads must be positive, got {} and {}", who, d_model, heads);
  QKV_CHECK(d_model % heads == 0, "{}: d_model = {} is not divisible by heads = {}", who, d_model, heads);
}

MultiHeadSelfAttention::MultiHeadSelfAttention(MultiHeadSelfAttentionOptions o, Generator& gen) : options_(o) {
  check_heads("MultiHeadSelfAttention", o.d_model, o.heads);
  w_q = register_module("w_q", std::make_shared<Linear>(o.d_model, o.d_model, o.bias, gen));
  w_k = register_module("w_k", std::make_shared<Linear>(o.d_model, o.d_model, o.bias, gen));
  w_v = register_module("w_v", std::make_shared<Linear>(o.d_model, o.d_model, o.bias, gen));
  w_o = register_module("w_o", std::make_shared<Linear>(o.d_model, o.d_model, o.bias, gen));
}

AttentionResult MultiHeadSelfAttention::attend(const Tensor& x_in, const Tensor& key_padding_mask, bool need_weights) {
  return hooked(x_in, [&](const Tensor& x) -> AttentionResult {
    // x is (B, T, D); per head (B, H, T, D/H); the padding mask (B, T) becomes (B, 1, 1, T)
    check_input("MultiHeadSelfAttention", x, options_.d_model, key_padding_mask, w_q->weight);
    const std::int64_t hd = options_.d_model / options_.heads;
    auto [merged, weights] = attention_packed(project_qkv(x, *w_q, *w_k, *w_v), options_.heads, hd, hd,
                                              options_.causal, key_padding_mask, need_weights);
    return {(*w_o)(merged), weights};
  });
}

Tensor MultiHeadSelfAttention::attend_cached(const Tensor& x_in, KVCacheLayer& cache, std::int64_t past) {
  return hooked(x_in, [&](const Tensor& x) -> Tensor {
    check_cached("MultiHeadSelfAttention", options_.causal, x, options_.d_model, w_q->weight);
    const std::int64_t hd = options_.d_model / options_.heads;
    return (*w_o)(
        attention_cached(project_qkv(x, *w_q, *w_k, *w_v), cache.k, cache.v, past, options_.heads, hd, hd));
  });
}

std::shared_ptr<Module> SelfAttention::fresh() const {
  Generator throwaway;
  return std::make_shared<SelfAttention>(options_, throwaway);
}

std::shared_ptr<Module> MultiHeadSelfAttention::fresh() const {
  Generator throwaway;
  return std::make_shared<MultiHeadSelfAttention>(options_, throwaway);
}

}  // namespace qkv
