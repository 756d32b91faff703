#include "../support.h"

#include <qkv/core/gradcheck.h>

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
