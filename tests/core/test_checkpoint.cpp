#include "../support.h"

#include <qkv/core/gradcheck.h>
#include <qkv/core/precision.h>

using namespace qkv;
using Ins = const std::vector<Tensor>&;

namespace {
// A small block: tanh(x W1) W2 + x, with a dropout drawn from `gen`.
Tensor block(const Tensor& x, const Tensor& w1, const Tensor& w2, Generator& gen, double p) {
  return matmul(dropout(tanh(matmul(x, w1)), p, true, gen), w2) + x;
}
}  // namespace

TEST_CASE("checkpoint gradcheck: input and parameters, float64") {
  const Tensor x = test::leaf({3, 4}, 1), w1 = test::leaf({4, 5}, 2), w2 = test::leaf({5, 4}, 3);
  CHECK(gradcheck(
      [](Ins in) {
        const Tensor a = in[1], b = in[2];
        Generator g(0);
        return checkpoint([a, b](const Tensor& h) { return tanh(matmul(tanh(matmul(h, a)), b)); }, in[0], {a, b});
      },
      {x, w1, w2}));
}

TEST_CASE("checkpoint gives the gradients a plain backward gives, bit for bit, with the same dropout masks") {
  const Tensor x0 = Tensor::randn({6, 8}, default_generator(), kFloat32);
  const auto run = [&](bool recompute) {
    Generator init(7);
    const Tensor w1 = Tensor::randn({8, 16}, init, kFloat32).requires_grad_();
    const Tensor w2 = Tensor::randn({16, 8}, init, kFloat32).requires_grad_();
    const Tensor x = x0.clone().requires_grad_();
    auto gen = std::make_shared<Generator>(3);
    Tensor h = x;
    for (int layer = 0; layer < 3; ++layer) {
      const auto f = [&, w1, w2](const Tensor& in) { return block(in, w1, w2, *gen, 0.25); };
      h = recompute ? checkpoint(f, h, {w1, w2}, {gen}) : f(h);
    }
    sum(h * h).backward();
    return std::vector<Tensor>{h.detach(), x.grad(), w1.grad(), w2.grad(), Tensor::from(std::vector<double>{double(gen->state().s[0] % 1000003)}, {1})};
  };
  const auto plain = run(false), again = run(true);
  for (std::size_t i = 0; i < plain.size(); ++i) {
    INFO("tensor ", i);
    CHECK_CLOSE(again[i].to(kFloat64), plain[i].to(kFloat64), 0, 0);
  }
}

TEST_CASE("checkpoint outside grad mode is the function itself, and bad input") {
  const Tensor x = Tensor::ones({2, 2});
  {
    NoGradGuard no_grad;
    const Tensor w = Tensor::ones({2, 2}).requires_grad_();
    const Tensor y = checkpoint([w](const Tensor& h) { return matmul(h, w); }, x, {w});
    CHECK(!y.requires_grad());
    CHECK(y.to_vector() == std::vector<double>{2, 2, 2, 2});
  }
  CHECK_ERROR(checkpoint([](const Tensor& h) { return h; }, Tensor(), {}), "checkpoint: the input is undefined");
  const Tensor w = Tensor::ones({2, 2}).requires_grad_();
  int calls = 0;
  const Tensor y = checkpoint([&calls, w](const Tensor& h) { return ++calls == 1 ? matmul(h, w) : sum(h); }, x, {w});
  CHECK_ERROR(sum(y).backward(), "checkpoint: the recompute returned shape [], the forward [2, 2]");
}

namespace {
// Three blocks on x, each checkpointed or not; the parameters are fresh leaves from a fixed seed.
struct Net {
  Tensor x, w1, w2, h;
  std::shared_ptr<Generator> gen = std::make_shared<Generator>(3);
  explicit Net(bool recompute, DType dtype = kFloat32) {
    Generator init(7);
    x = Tensor::randn({6, 8}, init, dtype).requires_grad_();
    w1 = Tensor::randn({8, 16}, init, dtype).requires_grad_();
    w2 = Tensor::randn({16, 8}, init, dtype).requires_grad_();
    h = x * 2.0;  // a computed input, so hooks and retain_grad on non-leaves are exercised too
    for (int layer = 0; layer < 3; ++layer) {
      const auto f = [this](const Tensor& in) { return block(in, w1, w2, *gen, 0.25); };
      h = recompute ? checkpoint(f, h, {w1, w2}, {gen}) : f(h);
    }
  }
  Tensor loss() const { return sum(h * h); }
};
}  // namespace

TEST_CASE("checkpoint under grad(): the gradients of a plain graph, and no .grad() touched") {
  std::vector<Tensor> got[2];
  for (const bool recompute : {false, true}) {
    Net n(recompute);
    got[recompute] = grad({n.loss()}, {n.w1, n.w2, n.x});
    CHECK(!n.w1.grad().defined());
    CHECK(!n.w2.grad().defined());
    CHECK(!n.x.grad().defined());
  }
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(sum(abs(got[1][i])).item() > 0.0);
    CHECK_CLOSE(got[1][i], got[0][i], 0, 0);
  }
}

TEST_CASE("checkpoint: retain_grad, tensor hooks and LeafGradHook see what they see without it") {
  struct Seen {
    Tensor out_grad, in_grad, w1_hooked;
    int w1_calls = 0, in_calls = 0;
    std::vector<const TensorImpl*> final_order;
  } seen[2];
  for (const bool recompute : {false, true}) {
    Seen& s = seen[recompute];
    Net n(recompute);
    n.h.retain_grad();
    const HookHandle a = n.w1.register_hook([&s](const Tensor& g) { s.w1_hooked = g.clone(), ++s.w1_calls; return g * 2.0; });
    const Tensor in = n.h;  // the last block's output: hooks on a computed tensor
    const HookHandle b = in.register_hook([&s](const Tensor& g) { ++s.in_calls; return g; });
    {
      LeafGradHook ready([&s](const Tensor& leaf) { s.final_order.push_back(leaf.impl()); });
      n.loss().backward();
    }
    s.out_grad = n.h.grad();
    s.in_grad = n.w1.grad();
    CHECK(s.final_order.size() == 3);  // x, w1, w2, each reported once
  }
  CHECK(seen[1].w1_calls == 1);  // the leaf's hook sees the sum over the three blocks, once
  CHECK(seen[0].w1_calls == 1);
  CHECK(seen[1].in_calls == seen[0].in_calls);
  CHECK_CLOSE(seen[1].out_grad, seen[0].out_grad, 0, 0);
  CHECK_CLOSE(seen[1].w1_hooked, seen[0].w1_hooked, 0, 0);
  CHECK_CLOSE(seen[1].in_grad, seen[0].w1_hooked * 2.0, 0, 0);  // the hook's replacement went into .grad()
}

TEST_CASE("checkpoint: anomaly mode names the op inside the block, with and without recompute") {
  for (const bool recompute : {false, true}) {
    const Tensor w = Tensor::from(std::vector<double>{0, 1, 4, 9}, {4}).requires_grad_();
    const Tensor x = Tensor::ones({4}, kFloat64).requires_grad_();
    const auto f = [w](const Tensor& in) { return sqrt(in * w); };
    const Tensor y = recompute ? checkpoint(f, x, {w}) : f(x);
    DetectAnomalyGuard anomaly;
    CHECK_ERROR(sum(y).backward(), "the backward of `sqrt` returned");
  }
}

TEST_CASE("checkpoint in bf16: the gradients of a plain bf16 backward, bit for bit") {
  std::vector<Tensor> got[2];
  for (const bool recompute : {false, true}) {
    AutocastGuard bf16;
    Net n(recompute);
    n.loss().backward();
    got[recompute] = {n.x.grad(), n.w1.grad(), n.w2.grad()};
  }
  std::vector<Tensor> fp32;
  {
    Net n(false);
    n.loss().backward();
    fp32 = {n.x.grad(), n.w1.grad(), n.w2.grad()};
  }
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK_CLOSE(got[1][i], got[0][i], 0, 0);
    CHECK(test::compare(got[0][i], fp32[i], 0, 0) != "");  // the bf16 products did run
  }
}

TEST_CASE("checkpoint refuses a computed tensor among its parameters") {
  const Tensor w = Tensor::ones({2, 2}).requires_grad_();
  const Tensor w2 = w * 2.0;
  CHECK_ERROR(checkpoint([w2](const Tensor& h) { return matmul(h, w2); }, Tensor::ones({2, 2}), {w2}),
              "checkpoint: params[0] (shape [2, 2]) is computed, not a leaf");
}

TEST_CASE("grad() runs no hook of a leaf it was not asked about, as torch's autograd.grad") {
  const Tensor a = Tensor::from({1.0, 2.0}, kFloat64).requires_grad_(), b = Tensor::from({3.0, 4.0}, kFloat64).requires_grad_();
  int b_calls = 0;
  const HookHandle h = b.register_hook([&b_calls](const Tensor& g) { ++b_calls; return g; });
  const auto g = grad({sum(a * b)}, {a});
  CHECK(g[0].to_vector() == std::vector<double>{3, 4});
  CHECK(b_calls == 0);
}

TEST_CASE("checkpoint's forward records no graph; its recompute does") {
  std::vector<bool> recording;
  const Tensor w = Tensor::ones({2, 2}).requires_grad_();
  const Tensor y = checkpoint([&recording, w](const Tensor& h) { recording.push_back(grad_mode_enabled()); return matmul(h, w); },
                              Tensor::ones({2, 2}), {w});
  sum(y).backward();
  CHECK(recording == std::vector<bool>{false, true});
}
