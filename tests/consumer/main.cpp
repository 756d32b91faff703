// A C++ experiment outside qkv, as docs/cpp-api.md's tour shows it: one include, a training loop with AdamW, a
// schedule and an EMA copy, a checkpoint saved and loaded in a few lines, a forward hook and grad() of an
// intermediate, then cached generation. ctest builds it against the installed package and the source tree.
#include <qkv/qkv.h>

#include <cstdio>
#include <vector>

using namespace qkv;

// README.md's C++ tour, verbatim between the markers (tests/layers/test_module.cpp checks it).
void readme_tour() {
  // [readme]
  Generator gen(42);
  SelfAttention attn({.d_model = 8, .d_k = 4, .d_v = 4, .causal = true}, gen);
  Tensor x = Tensor::randn({2, 5, 8}, gen).requires_grad_();
  auto [out, weights] = attn.attend(x);                // (2, 5, 4) and the (2, 5, 5) attention weights
  sum(out).backward();                                 // attn.w_q->weight.grad() holds d sum / d W^Q
  Tensor s = einsum("bqd,bkd->bqk", x, x) * rsqrt(Tensor::scalar(8.0));   // and sin, clamp, logsumexp, sort, ...
  Tensor best = topk(softmax(s, -1), 2).indices;        // (2, 5, 2) int64

  auto model = build_model({.kind = "transformer", .vocab_size = 64, .seq_len = 64, .d_model = 128,
                            .heads = 4, .layers = 2, .causal = true}, gen);
  AdamW opt(model->named_parameters(), {.lr = 3e-4, .weight_decay = 0.1});
  Tensor ids = Tensor::from(std::vector<std::int64_t>{3, 1, 4, 1, 5}, {1, 5});
  Tensor loss = cross_entropy(reshape(model->logits(ids), {-1, 64}), reshape(ids, {-1}));
  opt.zero_grad(); loss.backward(); clip_grad_norm(model->parameters(), 1.0); opt.step();
  save(*model, "model.safetensors"); save(opt, "optim.safetensors");   // load(...) resumes bit-identically

  auto& block0 = *(*dynamic_cast<Transformer&>(*model).blocks)[0].attn;
  Tensor a;                                            // block 0's attention output, kept by a forward hook
  HookHandle keep = block0.register_forward_hook([&](Module&, const Tensor&, const Tensor& o) { a = o; return Tensor(); });
  Tensor l2 = cross_entropy(reshape(model->logits(ids), {-1, 64}), reshape(ids, {-1}));
  Tensor d_a = grad({l2}, {a})[0];                     // d loss / d a, no .grad() touched
  // [/readme]
  if (!d_a.defined() || best.dtype() != kInt64) throw Error("readme tour: no gradient");
}

namespace {

// Next-token loss on one fixed sequence: 1 2 3 4 5 -> 2 3 4 5 6.
Tensor loss_of(LanguageModel& m) {
  const Tensor inputs = Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4, 5}, {1, 5});
  const Tensor targets = Tensor::from(std::vector<std::int64_t>{2, 3, 4, 5, 6}, {1, 5});
  return cross_entropy(reshape(m.logits(inputs), {-1, 8}), reshape(targets, {-1}));
}

// 20 AdamW steps on a cosine schedule, an EMA copy following the weights; true when the loss fell.
bool train_with_ema(LanguageModel& model, AdamW& opt, LRSchedule& sched) {
  auto ema = clone(model);  // std::shared_ptr<LanguageModel>, sharing nothing with model
  const double first = loss_of(model).item();
  for (int step = 0; step < 20; ++step) {
    Tensor loss = loss_of(model);
    opt.zero_grad();
    loss.backward();
    opt.step();
    sched.step();
    auto e = ema->parameters(), p = model.parameters();
    NoGradGuard no_grad;
    for (std::size_t i = 0; i < e.size(); ++i) e[i].copy_(e[i] * 0.9 + p[i] * 0.1);
  }
  return loss_of(model).item() < first;
}

// Checkpoint and resume: weights, optimizer and schedule state; true when the resumed schedule is where it was.
bool checkpoint_and_resume(LanguageModel& model, const AdamW& opt, const LRSchedule& sched) {
  save(model, "consumer_model.safetensors");
  save(opt, "consumer_optim.safetensors", &sched);
  auto resumed = clone(model);
  AdamW opt2(resumed->named_parameters(), {.lr = 1e-2});
  LRSchedule sched2(opt2, {.kind = "cosine", .warmup_steps = 2, .total_steps = 20});
  load(*resumed, "consumer_model.safetensors");
  load(opt2, "consumer_optim.safetensors", &sched2);
  return sched2.steps() == sched.steps() && opt2.lr() == opt.lr();
}

// A forward hook keeps block 0's attention output; grad() gives d loss / d that output, touching no .grad().
bool hook_and_grad(LanguageModel& model) {
  MultiHeadSelfAttention& attn = *(*dynamic_cast<Transformer&>(model).blocks)[0].attn;
  Tensor attn_out;
  HookHandle keep = attn.register_forward_hook([&](Module&, const Tensor&, const Tensor& out) {
    attn_out = out;
    return Tensor();
  });
  const Tensor loss = loss_of(model);
  keep.remove();
  const std::vector<Tensor> d = grad({loss}, {attn_out});
  return d[0].shape() == attn_out.shape();
}

}  // namespace

int main() {
  readme_tour();
  set_num_threads(1);
  Generator gen(0);
  auto model = build_model({.kind = "transformer", .vocab_size = 8, .seq_len = 6, .d_model = 8, .heads = 2,
                            .causal = true}, gen);
  AdamW opt(model->named_parameters(), {.lr = 1e-2});
  LRSchedule sched(opt, {.kind = "cosine", .warmup_steps = 2, .total_steps = 20});
  const double first = loss_of(*model).item();
  if (!train_with_ema(*model, opt, sched) || !checkpoint_and_resume(*model, opt, sched) || !hook_and_grad(*model))
    return 1;
  KVCache cache = model->make_cache(1);  // cached generation
  model->logits(Tensor::from(std::vector<std::int64_t>{1, 2}, {1, 2}), cache);
  if (cache.length != 2) return 1;
  std::printf("consumer ok: %lld parameters, loss %.3f -> %.3f\n", static_cast<long long>(model->num_parameters()),
              first, loss_of(*model).item());
  return 0;
}
