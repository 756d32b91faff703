#include "../support.h"

#include <qkv/core/autograd.h>
#include <qkv/core/gradcheck.h>

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

using namespace qkv;
using Ins = const std::vector<Tensor>&;

TEST_CASE("gradients accumulate across backward calls until zero_grad") {
  const Tensor x = Tensor::from({1.0, 2.0}, kFloat64).requires_grad_();
  sum(x * x).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{2, 4});
  sum(x * 3.0).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{5, 7});
  x.zero_grad();
  CHECK(!x.grad().defined());
}

TEST_CASE("a tensor used twice gets both contributions") {
  const Tensor x = Tensor::from({3.0}, kFloat64).requires_grad_();
  const Tensor y = x * x + x;  // dy/dx = 2x + 1
  y.backward(Tensor::ones({1}, kFloat64));
  CHECK(x.grad().item() == 7.0);
}

TEST_CASE("explicit output gradient for non-scalars") {
  const Tensor x = Tensor::from({1.0, 2.0, 3.0}, kFloat64).requires_grad_();
  const Tensor y = x * 2.0;
  y.backward(Tensor::from({1.0, 10.0, 100.0}, kFloat64));
  CHECK(x.grad().to_vector() == std::vector<double>{2, 20, 200});
}

TEST_CASE("detach and NoGradGuard record nothing") {
  const Tensor x = Tensor::ones({2}).requires_grad_();
  CHECK(!(x * 2.0).detach().requires_grad());
  {
    NoGradGuard guard;
    CHECK(!grad_mode_enabled());
    const Tensor y = x * 2.0;
    CHECK(!y.requires_grad());
    CHECK(!y.grad_fn());
  }
  CHECK(grad_mode_enabled());
  CHECK((x * 2.0).grad_fn() != nullptr);
  CHECK(std::string((x * 2.0).grad_fn()->name) == "mul_scalar");
}

TEST_CASE("retain_graph allows a second backward; without it the graph is freed") {
  const Tensor x = Tensor::from({2.0}, kFloat64).requires_grad_();
  const Tensor y = sum(exp(x));
  y.backward({}, /*retain_graph=*/true);
  y.backward();
  CHECK(x.grad().item() == doctest::Approx(2 * std::exp(2.0)));
  CHECK_ERROR(y.backward(), "backward: trying to backward through the graph a second time (through `sum_to`)");
}

TEST_CASE("backward bad input") {
  const Tensor x = Tensor::ones({2, 2}).requires_grad_();
  CHECK_ERROR((x * 2.0).backward(), "grad can be implicitly created only for scalar outputs; got shape [2, 2]");
  CHECK_ERROR(Tensor::ones({1}).backward(), "does not require grad");
  CHECK_ERROR((x * 2.0).backward(Tensor::ones({3})), "gradient shape [3] does not match tensor shape [2, 2]");
  CHECK_ERROR((x * 2.0).backward(Tensor::ones({2, 2}, kFloat64)), "gradient dtype float64 does not match");
  CHECK_ERROR((x * 2.0).requires_grad_(false), "only leaf tensors can change requires_grad");
}

TEST_CASE("the graph frees itself: no node outlives its output") {
  std::weak_ptr<Node> node;
  std::weak_ptr<TensorImpl> saved;
  {
    const Tensor x = Tensor::randn({3, 3}).requires_grad_();
    Tensor h = tanh(matmul(x, x));
    saved = h.impl_ptr();
    const Tensor y = sum(exp(h));
    node = y.grad_fn();
    CHECK(!node.expired());
  }
  CHECK(node.expired());
  CHECK(saved.expired());
  // after backward too
  const Tensor x = Tensor::randn({3}).requires_grad_();
  {
    const Tensor y = sum(sigmoid(x) * x);
    node = y.grad_fn();
    y.backward();
  }
  CHECK(node.expired());
}

TEST_CASE("leaf gradients do not alias each other") {
  const Tensor a = Tensor::ones({2}).requires_grad_(), b = Tensor::ones({2}).requires_grad_();
  sum(a + b).backward();
  add_(a.impl()->grad, Tensor::ones({2}));
  CHECK(b.grad().to_vector() == std::vector<double>{1, 1});
}

TEST_CASE("to(dtype) and clone are differentiable") {
  const Tensor x = test::leaf({3}, 4);
  CHECK(gradcheck([](Ins xs) { return xs[0].clone().to(kFloat32).to(kFloat64) * 2.0; }, {x},
                  GradcheckOptions{.eps = 1e-3, .atol = 1e-4, .rtol = 1e-3}));
  CHECK(gradcheck([](Ins xs) { return xs[0].clone() * xs[0]; }, {x}));
}

// Random compositions: expression trees over unary and binary ops with broadcasting, checked by gradcheck.
TEST_CASE("random compositions of ops pass gradcheck") {
  Generator g(2024);
  const auto pick = [&](int n) { return static_cast<int>(g.randint(static_cast<std::uint64_t>(n))); };
  for (int trial = 0; trial < 40; ++trial) {
    const Shape shapes[] = {{2, 3}, {3}, {2, 1}, {1, 3}};
    std::vector<Tensor> inputs;
    for (int i = 0; i < 3; ++i) inputs.push_back(test::leaf(shapes[pick(4)], 100 + trial * 3 + i));
    const std::uint64_t seed = g.next_u64();
    const auto f = [seed](Ins xs) {
      Generator r(seed);  // the same tree on every call
      const auto choose = [&](int n) { return static_cast<int>(r.randint(static_cast<std::uint64_t>(n))); };
      Tensor acc = xs[0];
      for (int step = 0; step < 5; ++step) {
        const Tensor& other = xs[static_cast<std::size_t>(choose(3))];
        switch (choose(9)) {
          case 0: acc = acc + other; break;
          case 1: acc = acc * other; break;
          case 2: acc = acc - tanh(other); break;
          case 3: acc = acc / (other * other + 1.0); break;
          case 4: acc = sigmoid(acc); break;
          case 5: acc = gelu(acc); break;
          case 6: acc = exp(acc * 0.3); break;
          case 7: acc = softmax(acc * other, -1); break;
          case 8: acc = sqrt(acc * acc + 0.5); break;
        }
      }
      return sum(acc, {-1}, true) * acc;
    };
    const auto err = gradcheck_error(f, inputs);
    CHECK_MESSAGE(err.empty(), "trial ", trial, ": ", err);
  }
}

TEST_CASE("a saved tensor written in place makes backward throw, naming the op") {
  const Tensor a = Tensor::from({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor h = a * 1.0;  // mul_scalar saves nothing, so writing h is fine for it
  const Tensor y = sum(h * h);
  const std::uint64_t before = h.version();
  h.fill_(3.0);
  CHECK(h.version() == before + 1);
  CHECK(h.detach().version() == h.version());  // detach and reshape share the counter with the storage
  const std::string msg = test::error_of([&] { y.backward(); });
  CHECK(msg.find("backward of `mul`: one of the tensors needed for gradient computation (saved tensor 0") == 0);
  CHECK(msg.find("modified by an in-place operation: it is at version 1, expected version 0") != std::string::npos);

  // The output of exp is saved: writing it is caught too; copy_ and add_ bump like fill_ and zero_.
  const Tensor e = exp(a);
  const Tensor z = sum(e);
  e.copy_(Tensor::from({0.0, 0.0}, kFloat64));
  CHECK_ERROR(z.backward(), "backward of `exp`");
  Tensor acc = Tensor::zeros({2}, kFloat64);
  add_(acc, a.detach());
  CHECK(acc.version() == 1);
  acc.zero_();
  CHECK(acc.version() == 2);

  // Writes before the op saves are fine; so is a clone written after.
  Tensor w = a * 1.0;
  w.fill_(2.0);
  const Tensor c = w.clone();
  const Tensor v = sum(w * w);
  c.fill_(0.0);
  v.backward();
  CHECK(a.grad().to_vector() == std::vector<double>{4.0, 4.0});
}

TEST_CASE("an optimizer step between two backwards through a retained graph is caught") {
  const Tensor w = Tensor::from({1.0, -1.0}, kFloat64).requires_grad_();
  const Tensor loss = sum(w * w);
  loss.backward({}, /*retain_graph=*/true);
  w.bump_version();  // what Optimizer::step does after writing a parameter
  CHECK_ERROR(loss.backward(), "backward of `mul`");
}

TEST_CASE("custom ops: the node owns its name; wrong gradient count, shape or dtype names the op") {
  const Tensor x = Tensor::from({1.0, 2.0}, kFloat64).requires_grad_();
  const auto op = [&](std::string name, SavedBackwardFn fn) {
    Tensor out = x.detach().clone();
    record(out, std::move(name), {x}, {x}, std::move(fn));
    return out;
  };
  const Tensor twice = op(std::string("twice_") + "op", [](const Tensor& g, const std::vector<Tensor>& s) -> Grads {
    CHECK(s.size() == 1);
    CHECK(!s[0].requires_grad());  // saved tensors come back detached
    return {g * 2.0};
  });
  CHECK(twice.grad_fn()->name == "twice_op");
  CHECK(twice.str().find("grad_fn=<twice_op>") != std::string::npos);
  sum(twice).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, 2.0});

  const auto none = [](const Tensor&, const std::vector<Tensor>&) -> Grads { return {}; };
  CHECK_ERROR(sum(op("count", none)).backward(), "backward of `count` returned 0 gradients for 1 inputs");
  const auto shape = [](const Tensor& g, const std::vector<Tensor>&) -> Grads { return {sum(g)}; };
  CHECK_ERROR(sum(op("shape", shape)).backward(),
              "backward of `shape`: the gradient for input 0 has shape [] and dtype float64; expected the input's "
              "shape [2] and dtype float64");
  const auto dtype = [](const Tensor& g, const std::vector<Tensor>&) -> Grads { return {g.to(kFloat32)}; };
  CHECK_ERROR(sum(op("dtype", dtype)).backward(), "dtype float32; expected the input's shape [2] and dtype float64");

  Tensor out = x.detach().clone();
  CHECK_ERROR(record(out, "undef", {Tensor()}, {}, none), "record `undef`: input 0 is undefined");
  CHECK_ERROR(record(out, "empty", {x}, {}, SavedBackwardFn()), "record `empty`: the backward function is empty");
}

TEST_CASE("docs/cpp-api.md's custom-op block is examples/custom_op.cpp's, which ctest builds and runs") {
  const std::string example = test::read_source("examples/custom_op.cpp"), readme = test::read_source("docs/cpp-api.md");
  const auto begin = example.find("// [readme]\n"), end = example.find("// [/readme]");
  REQUIRE(begin != std::string::npos);
  REQUIRE(end != std::string::npos);
  std::string block;  // the doc shows it inside a list item: each non-empty line indented by two spaces
  std::istringstream lines(example.substr(begin + 12, end - begin - 12));
  for (std::string line; std::getline(lines, line);) block += (line.empty() ? "" : "  ") + line + "\n";
  CHECK_MESSAGE(readme.find(block) != std::string::npos, "docs/cpp-api.md lacks the block between the readme markers of "
                                                          "examples/custom_op.cpp; copy it into its custom ops item");
}

TEST_CASE("op profile: forward and backward time summed by op name while on, nothing while off") {
  reset_op_profile();
  const Tensor a = Tensor::randn({64, 64}).requires_grad_(), b = Tensor::randn({64, 64}).requires_grad_();
  sum(matmul(a, b)).backward();
  CHECK(op_profile().empty());  // off by default

  set_op_profiling(true);
  for (int i = 0; i < 3; ++i) {
    profile_mark();
    sum(gelu(matmul(a, b))).backward();
  }
  set_op_profiling(false);
  const auto ops = op_profile();
  std::map<std::string, OpTime> by_name;
  for (const OpTime& t : ops) by_name[t.name] = t;
  REQUIRE(by_name.count("matmul") == 1);
  CHECK(by_name["matmul"].calls == 3);
  CHECK(by_name["gelu"].calls == 3);
  CHECK(by_name["matmul"].forward_s > 0);
  CHECK(by_name["matmul"].backward_s > 0);
  CHECK(by_name["gelu"].backward_s > 0);
  CHECK(by_name.count("(autograd)") == 1);
  for (std::size_t i = 1; i < ops.size(); ++i)  // largest total first
    CHECK(ops[i - 1].forward_s + ops[i - 1].backward_s >= ops[i].forward_s + ops[i].backward_s);
  reset_op_profile();
  CHECK(op_profile().empty());
}

TEST_CASE("LeafGradHook: each leaf once per sweep, when its gradient is final, in the order backward ends it") {
  // y = sum(w_late * (w_twice * x + w_twice)): backward finishes w_late first; w_twice feeds two nodes.
  const Tensor x = Tensor::from({1.0, 2.0}, kFloat64);
  const Tensor w_twice = Tensor::from({3.0, 4.0}, kFloat64).requires_grad_();
  const Tensor w_late = Tensor::from({5.0, 6.0}, kFloat64).requires_grad_();
  const Tensor unused = Tensor::from({7.0}, kFloat64).requires_grad_();
  std::vector<std::pair<const TensorImpl*, std::vector<double>>> seen;
  {
    LeafGradHook hook([&](const Tensor& leaf) { seen.emplace_back(leaf.impl(), leaf.grad().to_vector()); });
    sum(w_late * (w_twice * x + w_twice)).backward();
  }
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].first == w_late.impl());
  CHECK(seen[0].second == std::vector<double>{6, 12});  // w_twice * x + w_twice
  CHECK(seen[1].first == w_twice.impl());
  CHECK(seen[1].second == std::vector<double>{10, 18});  // w_late * (x + 1), both contributions in
  CHECK(seen[1].second == w_twice.grad().to_vector());

  seen.clear();  // the hook has ended: nothing reported
  sum(w_late * 2.0).backward();
  CHECK(seen.empty());

  std::vector<std::string> order;  // nested hooks: the inner one replaces the outer until it ends
  LeafGradHook outer([&](const Tensor&) { order.push_back("outer"); });
  {
    LeafGradHook inner([&](const Tensor&) { order.push_back("inner"); });
    sum(unused * 1.0).backward();
    unused.backward(Tensor::ones({1}, kFloat64));  // a leaf as the root is final at once
  }
  sum(unused * 1.0).backward();
  CHECK(order == std::vector<std::string>{"inner", "inner", "outer"});
}

TEST_CASE("retained gradients accumulate over backward calls, as torch's; a starting gradient of another shape is refused") {
  const Tensor x = Tensor::from({1.0, 2.0}, kFloat64).requires_grad_();
  const Tensor h = x * 3.0;
  h.retain_grad();
  const Tensor loss = sum(h * h);
  loss.backward(Tensor(), /*retain_graph=*/true);
  loss.backward();
  CHECK(h.grad().to_vector() == std::vector<double>{12, 24});  // 2 h, twice
  const Tensor y = reshape(x, {2, 1}) * 1.0;
  CHECK_ERROR(y.backward(Tensor::ones({2}, kFloat64)), "backward: gradient shape [2] does not match tensor shape [2, 1]");
}

TEST_CASE("grad(): an input the graph reaches but sends no gradient gets zeros") {
  const Tensor x = Tensor::from({1.0, 2.0}, kFloat64).requires_grad_();
  Tensor out = Tensor::from({5.0}, kFloat64);
  record(out, "no_grad_op", {x}, {}, [](const Tensor&, const std::vector<Tensor>&) { return Grads{Tensor()}; });
  const auto g = grad({sum(out)}, {x});
  REQUIRE(g[0].defined());
  CHECK(g[0].to_vector() == std::vector<double>{0, 0});
}
