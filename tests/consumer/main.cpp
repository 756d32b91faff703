// Uses the public API the way a C++ experiment would: build attention, run it, take a gradient, generate.
#include <qkv/core/ops.h>
#include <qkv/layers/models.h>

#include <vector>

#include <cstdio>

int main() {
  qkv::set_num_threads(1);  // reachable from ops.h
  qkv::Generator gen(0);
  qkv::SelfAttention attn({.d_model = 8, .d_k = 4, .causal = true}, gen);
  const qkv::Tensor x = qkv::Tensor::randn({2, 5, 8}, gen);
  qkv::sum(attn.forward(x)).backward();
  if (!attn.w_q->weight.grad().defined()) return 1;
  // Cached generation through the installed headers.
  auto model = qkv::build_model(
      {.kind = "transformer", .vocab_size = 8, .seq_len = 6, .d_model = 8, .heads = 2, .causal = true}, gen);
  qkv::KVCache cache = model->make_cache(1);
  model->logits(qkv::Tensor::from(std::vector<std::int64_t>{1, 2}, {1, 2}), cache);
  if (cache.length != 2) return 1;
  std::printf("consumer ok: %lld parameters\n", static_cast<long long>(attn.num_parameters()));
  return 0;
}
