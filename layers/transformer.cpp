#include "qkv/layers/transformer.h"

#include <qkv/core/ops.h>

namespace qkv {

LayerNorm::LayerNorm(LayerNormOptions o) : d_(o.d), eps_(o.eps) {
  QKV_CHECK(o.d > 0, "LayerNorm: normalized size must be positive, got {}", o.d);
  QKV_CHECK(o.eps > 0, "LayerNorm: eps must be positive, got {}", o.eps);
  weight = register_parameter("weight", Tensor::ones({o.d}));
  if (o.bias) bias = register_parameter("bias", Tensor::zeros({o.d}));
}

Tensor LayerNorm::forward(const Tensor& x) {
  // x is (..., D); statistics over the last dim
  QKV_CHECK(x.dim() >= 1 && x.size(-1) == d_, "LayerNorm: expected input (..., {}), got shape {}", d_, x.shape().str());
  return layer_norm(x, weight, bias, eps_);
}

Dropout::Dropout(DropoutOptions o, Generator& gen) : p_(o.p), gen_(std::make_shared<Generator>(gen)) {
  QKV_CHECK(o.p >= 0.0 && o.p <= 1.0, "Dropout: p must be in [0, 1], got {}", o.p);
}

void Dropout::set_generator(std::shared_ptr<Generator> gen) {
  QKV_CHECK(gen != nullptr, "Dropout: set_generator needs a generator");
  gen_ = std::move(gen);
}

void Dropout::set_batch_slice(std::int64_t first, std::int64_t total) {
  QKV_CHECK(first >= 0 && total >= 0 && first <= total, "Dropout: batch slice from row {} of {} is not a slice", first,
            total);
  slice_first_ = first;
  slice_total_ = total;
}

Tensor Dropout::forward(const Tensor& x) {
  if (slice_total_ == 0 || !is_training() || p_ == 0.0) return dropout(x, p_, is_training(), *gen_);
  // x (b, ...) holds rows [first, first + b) of (total, ...): draws in row-major order, as one process would.
  const std::int64_t rows = x.dim() > 0 ? x.size(0) : 1, per_row = x.numel() / std::max<std::int64_t>(1, rows);
  QKV_CHECK(slice_first_ + rows <= slice_total_, "Dropout: {} rows from row {} do not fit the batch slice of {} rows",
            rows, slice_first_, slice_total_);
  gen_->discard(static_cast<std::uint64_t>(slice_first_ * per_row));
  Tensor out = dropout(x, p_, true, *gen_);
  gen_->discard(static_cast<std::uint64_t>((slice_total_ - slice_first_ - rows) * per_row));
  return out;
}

MLP::MLP(MLPOptions o, Generator& gen) {
  fc1 = register_module("fc1", std::make_shared<Linear>(o.d, o.d_ff, true, gen));
  fc2 = register_module("fc2", std::make_shared<Linear>(o.d_ff, o.d, true, gen));
}

Tensor MLP::forward(const Tensor& x) { return (*fc2)(gelu((*fc1)(x))); }

TransformerBlock::TransformerBlock(TransformerBlockOptions o, Generator& gen) : options_(o) {
  const std::int64_t d_ff = o.d_ff == 0 ? 4 * o.d_model : o.d_ff;
  ln1 = register_module("ln1", std::make_shared<LayerNorm>(o.d_model));
  attn = register_module("attn", std::make_shared<MultiHeadSelfAttention>(
                                     MultiHeadSelfAttentionOptions{.d_model = o.d_model,
                                                                   .heads = o.heads,
                                                                   .bias = o.attn_bias,
                                                                   .causal = o.causal},
                                     gen));
  ln2 = register_module("ln2", std::make_shared<LayerNorm>(o.d_model));
  mlp = register_module("mlp", std::make_shared<MLP>(o.d_model, d_ff, gen));
  drop = register_module("drop", std::make_shared<Dropout>(o.dropout, gen));
}

AttentionResult TransformerBlock::attend(const Tensor& x_in, const Tensor& key_padding_mask, bool need_weights) {
  return hooked(x_in, [&](const Tensor& x) -> AttentionResult {
    auto [a, weights] = attn->attend((*ln1)(x), key_padding_mask, need_weights);
    return {residuals(x, a), weights};
  });
}

Tensor TransformerBlock::residuals(const Tensor& x, const Tensor& a) {
  const Tensor h = x + (*drop)(a);
  return h + (*drop)((*mlp)((*ln2)(h)));
}

Tensor TransformerBlock::forward_cached(const Tensor& x_in, KVCacheLayer& cache, std::int64_t past) {
  return hooked(x_in, [&](const Tensor& x) -> Tensor {
    return residuals(x, attn->attend_cached((*ln1)(x), cache, past));
  });
}

std::shared_ptr<Module> LayerNorm::fresh() const {
  return std::make_shared<LayerNorm>(LayerNormOptions{d_, eps_, bias.defined()});
}

std::shared_ptr<Module> Dropout::fresh() const {  // its stream continues from where this one's is
  return std::make_shared<Dropout>(DropoutOptions{p_}, *gen_);
}

std::shared_ptr<Module> MLP::fresh() const {
  Generator throwaway;
  return std::make_shared<MLP>(MLPOptions{fc1->weight.size(1), fc1->weight.size(0)}, throwaway);
}

std::shared_ptr<Module> TransformerBlock::fresh() const {
  Generator throwaway;
  return std::make_shared<TransformerBlock>(options_, throwaway);
}

}  // namespace qkv
