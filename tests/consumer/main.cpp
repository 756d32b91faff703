// Uses the public API the way a C++ experiment would: build attention, run it, take a gradient.
#include <qkv/core/ops.h>
#include <qkv/layers/attention.h>

#include <cstdio>

int main() {
  qkv::Generator gen(0);
  qkv::SelfAttention attn({.d_model = 8, .d_k = 4, .causal = true}, gen);
  const qkv::Tensor x = qkv::Tensor::randn({2, 5, 8}, gen);
  qkv::sum(attn.forward(x)).backward();
  if (!attn.w_q->weight.grad().defined()) return 1;
  std::printf("consumer ok: %lld parameters\n", static_cast<long long>(attn.num_parameters()));
  return 0;
}
