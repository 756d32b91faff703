#include "../support.h"

#include <qkv/core/autograd.h>
#include <qkv/core/ops.h>

using namespace qkv;

namespace {
// The fixture's graph: h = tanh(x @ w), y = sum(h * h) + 0.5 * sum(x * x).
struct HookGraph {
  Tensor x, w, h, y;
  HookGraph() {
    const auto& f = test::fixture("autograd");
    x = test::tensor_from(f["x"]).requires_grad_();
    w = test::tensor_from(f["w"]).requires_grad_();
    h = tanh(matmul(x, w));
    y = sum(h * h) + sum(x * x) * 0.5;
  }
};
}  // namespace

TEST_CASE("register_hook and retain_grad match torch: a hook may replace the gradient; a leaf's sees the sum once") {
  const auto& f = test::fixture("autograd")["hooks"];
  HookGraph g;
  int h_calls = 0, x_calls = 0;
  g.h.register_hook([&](const Tensor& grad) { ++h_calls; return grad * 2.0; });
  g.h.retain_grad();
  g.x.register_hook([&](const Tensor& grad) { ++x_calls; return grad * grad; });
  g.y.backward();
  CHECK(h_calls == 1);
  CHECK(x_calls == 1);  // two paths into x, one call with their sum
  CHECK_CLOSE(g.x.grad(), test::tensor_from(f["x_grad"]), 1e-12, 1e-12);
  CHECK_CLOSE(g.w.grad(), test::tensor_from(f["w_grad"]), 1e-12, 1e-12);
  CHECK_CLOSE(g.h.grad(), test::tensor_from(f["h_grad"]), 1e-12, 1e-12);
}

TEST_CASE("hooks: observing, removing, and mistakes") {
  HookGraph g;
  Tensor seen;
  HookHandle handle = g.h.register_hook([&](const Tensor& grad) { seen = grad.clone(); return Tensor(); });
  const HookGraph plain;
  Tensor y2 = g.y;
  y2.backward(Tensor(), /*retain_graph=*/true);
  REQUIRE(seen.defined());
  CHECK(seen.shape() == Shape({3, 2}));
  handle.remove();
  handle.remove();  // twice: nothing
  seen = Tensor();
  g.x.zero_grad();
  g.y.backward();
  CHECK_FALSE(seen.defined());
  CHECK_FALSE(g.h.grad().defined());  // not retained: no .grad() on a computed tensor
  const Tensor c = Tensor::ones({2});
  CHECK_ERROR(c.register_hook([](const Tensor& gr) { return gr; }),
              "register_hook: cannot register a hook on a tensor that does not require grad (shape [2])");
  HookGraph bad;
  bad.h.register_hook([](const Tensor&) { return Tensor::ones({5}, kFloat64); });
  CHECK_ERROR(bad.y.backward(), "register_hook: a hook on the output of `tanh` returned a gradient of shape [5] and "
                                "dtype float64; expected shape [3, 2] and dtype float64");
}

TEST_CASE("grad(outputs, inputs) matches torch.autograd.grad and leaves every .grad() alone") {
  const auto& f = test::fixture("autograd");
  HookGraph g;
  const auto d = grad({g.y}, {g.h, g.x, g.w}, {}, /*retain_graph=*/true);
  REQUIRE(d.size() == 3);
  CHECK_CLOSE(d[0], test::tensor_from(f["grad"]["h"]), 1e-12, 1e-12);
  CHECK_CLOSE(d[1], test::tensor_from(f["grad"]["x"]), 1e-12, 1e-12);
  CHECK_CLOSE(d[2], test::tensor_from(f["grad"]["w"]), 1e-12, 1e-12);
  CHECK_FALSE(g.x.grad().defined());
  CHECK_FALSE(g.w.grad().defined());
  const auto dx = grad({g.h}, {g.x}, {test::tensor_from(f["cotangent"])});
  CHECK_CLOSE(dx[0], test::tensor_from(f["grad_h_x"]), 1e-12, 1e-12);
  // Only the part of the graph between outputs and inputs runs: d y / d h needs no node below h.
  HookGraph g2;
  const std::shared_ptr<Node> below = g2.h.grad_fn()->next[0].fn;
  REQUIRE(below->name == "matmul");
  const auto dh = grad({g2.y}, {g2.h});
  CHECK_CLOSE(dh[0], test::tensor_from(f["grad"]["h"]), 1e-12, 1e-12);
  CHECK_FALSE(below->released);  // tanh's backward did not run, so matmul's node never got a gradient
}

TEST_CASE("grad bad input") {
  HookGraph g;
  const Tensor unused = Tensor::ones({2}, kFloat64).requires_grad_();
  CHECK_ERROR(grad({g.y}, {g.x, unused}, {}, true),
              "grad: input 1 (shape [2]) was not used to compute the outputs (pass allow_unused = true");
  const auto d = grad({g.y}, {g.x, unused}, {}, true, /*allow_unused=*/true);
  CHECK(d[0].defined());
  CHECK_FALSE(d[1].defined());
  CHECK_ERROR(grad({g.y}, {Tensor::ones({2})}, {}, true), "grad: input 0 (shape [2]) does not require grad");
  CHECK_ERROR(grad({g.h}, {g.x}, {}, true), "grad: grad can be implicitly created only for scalar outputs");
  CHECK_ERROR(grad({g.y}, {g.x}, {Tensor::ones({2}, kFloat64), Tensor()}, true), "grad: 2 grad_outputs for 1 outputs");
  CHECK_ERROR(grad({}, {g.x}), "grad: no outputs given");
  (void)grad({g.y}, {g.x});  // frees the graph
  CHECK_ERROR(g.y.backward(), "trying to backward through the graph a second time");
}

TEST_CASE("a retry after a failed backward says the first one failed") {
  const Tensor x = Tensor::from({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor out = x.detach().clone();
  record(out, "flaky", {x}, {}, [](const Tensor&, const std::vector<Tensor>&) -> Grads { fail("flaky: boom"); });
  const Tensor loss = sum(exp(out) * 2.0);
  CHECK_ERROR(loss.backward(), "flaky: boom");
  CHECK_ERROR(loss.backward(), "backward: an earlier backward through this graph failed (in the backward of `flaky`) "
                               "and left it half run: compute the forward again");
}

TEST_CASE("detect_anomaly names the op whose backward made a NaN; off, the NaN spreads silently") {
  const Tensor x = Tensor::from({0.0, 4.0}, kFloat64).requires_grad_();
  sum(sqrt(x) * 3.0).backward();  // d sqrt(x) / dx at 0 is inf
  CHECK(x.grad().count_non_finite() == 1);
  x.zero_grad();
  {
    DetectAnomalyGuard anomaly;
    CHECK(anomaly_detection_enabled());
    CHECK_ERROR(sum(sqrt(x) * 3.0).backward(),
                "detect_anomaly: the backward of `sqrt` returned 1 NaN or infinite value in the gradient for its "
                "input 0 (shape [2], a leaf); the forward op was `sqrt`");
  }
  CHECK_FALSE(anomaly_detection_enabled());
}
