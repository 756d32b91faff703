#include "qkv/layers/transformer.h"

#include <qkv/core/ops.h>

namespace qkv {

LayerNorm::LayerNorm(std::int64_t d, double eps) : d_(d), eps_(eps) {
  QKV_CHECK(d > 0, "LayerNorm: normalized size must be positive, got {}", d);
  QKV_CHECK(eps > 0, "LayerNorm: eps must be positive, got {}", eps);
  weight = register_parameter("weight", Tensor::ones({d}));
  bias = register_parameter("bias", Tensor::zeros({d}));
}

Tensor LayerNorm::forward(const Tensor& x) {
  // x is (..., D); statistics over the last dim
  QKV_CHECK(x.dim() >= 1 && x.size(-1) == d_, "LayerNorm: expected input (..., {}), got shape {}", d_, x.shape().str());
  return layer_norm(x, weight, bias, eps_);
}

Dropout::Dropout(double p, Generator& gen) : p_(p), gen_(std::make_shared<Generator>(gen)) {
  QKV_CHECK(p >= 0.0 && p <= 1.0, "Dropout: p must be in [0, 1], got {}", p);
}

void Dropout::set_generator(std::shared_ptr<Generator> gen) {
  QKV_CHECK(gen != nullptr, "Dropout: set_generator needs a generator");
  gen_ = std::move(gen);
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p_, is_training(), *gen_); }

MLP::MLP(std::int64_t d, std::int64_t d_ff, Generator& gen) {
  fc1 = register_module("fc1", std::make_shared<Linear>(d, d_ff, true, gen));
  fc2 = register_module("fc2", std::make_shared<Linear>(d_ff, d, true, gen));
}

Tensor MLP::forward(const Tensor& x) { return fc2->forward(gelu(fc1->forward(x))); }

TransformerBlock::TransformerBlock(TransformerBlockOptions o, Generator& gen) {
  const std::int64_t d_ff = o.d_ff == 0 ? 4 * o.d_model : o.d_ff;
  ln1 = register_module("ln1", std::make_shared<LayerNorm>(o.d_model));
  attn = register_module("attn", std::make_shared<MultiHeadSelfAttention>(o.d_model, o.heads, o.causal, o.attn_bias, gen));
  ln2 = register_module("ln2", std::make_shared<LayerNorm>(o.d_model));
  mlp = register_module("mlp", std::make_shared<MLP>(o.d_model, d_ff, gen));
  drop = register_module("drop", std::make_shared<Dropout>(o.dropout, gen));
}

Tensor TransformerBlock::forward(const Tensor& x, Tensor* attention, const Tensor& key_padding_mask) {
  auto [a, weights] = attn->attend(ln1->forward(x), key_padding_mask, attention != nullptr);
  if (attention != nullptr) *attention = weights;
  return residuals(x, a);
}

Tensor TransformerBlock::residuals(const Tensor& x, const Tensor& a) {
  const Tensor h = x + drop->forward(a);
  return h + drop->forward(mlp->forward(ln2->forward(h)));
}

Tensor TransformerBlock::forward_cached(const Tensor& x, KVCacheLayer& cache, std::int64_t past) {
  return residuals(x, attn->attend_cached(ln1->forward(x), cache, past));
}

}  // namespace qkv
