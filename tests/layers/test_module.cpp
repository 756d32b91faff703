#include "../support.h"

#include <qkv/layers/models.h>

using namespace qkv;

namespace {
struct Pair : Module {
  Pair() {
    a = register_module("a", std::make_shared<Linear>(3, 2));
    scale = register_parameter("scale", Tensor::ones({2}));
    b = register_module("b", std::make_shared<Linear>(2, 1, false));
  }
  std::string name() const override { return "Pair"; }
  Tensor forward(const Tensor& x) override { return b->forward(a->forward(x) * scale); }
  std::shared_ptr<Linear> a, b;
  Tensor scale;
};
}  // namespace

TEST_CASE("named_parameters: dotted names in registration order, depth first") {
  Pair p;
  std::vector<std::string> names;
  for (auto& [n, t] : p.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"scale", "a.weight", "a.bias", "b.weight"});
  CHECK(p.num_parameters() == 2 + 6 + 2 + 2);
  CHECK(p.parameter("a.bias").shape() == Shape{2});
  CHECK(p.parameters().size() == 4);
  for (auto& t : p.parameters()) CHECK(t.requires_grad());
  CHECK_ERROR(p.parameter("c.weight"), "Pair: no parameter named 'c.weight'");
}

TEST_CASE("a submodule registered twice is one set of parameters, under its first name (torch's remove_duplicate)") {
  struct Shared : Module {
    Shared() {
      inner = register_module("encoder", std::make_shared<Linear>(3, 3));
      register_module("decoder", inner);
    }
    std::string name() const override { return "Shared"; }
    std::shared_ptr<Linear> inner;
  } s;
  std::vector<std::string> names;
  for (auto& [n, t] : s.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"encoder.weight", "encoder.bias"});
  CHECK(s.num_parameters() == 12);
  CHECK_ERROR(s.to(kInt64), "Shared.to: parameters must be floating point (float32 or float64), got int64");
  CHECK(s.inner->weight.dtype() == kFloat32);
}

TEST_CASE("train/eval recurse; to(dtype) keeps the layers' handles valid; zero_grad") {
  Pair p;
  p.eval();
  CHECK(!p.a->is_training());
  p.train();
  CHECK(p.b->is_training());
  p.to(kFloat64);
  CHECK(p.a->weight.dtype() == kFloat64);
  CHECK(p.parameter("a.weight").dtype() == kFloat64);
  const Tensor y = p.forward(Tensor::ones({4, 3}, kFloat64));
  CHECK(y.shape() == Shape{4, 1});
  sum(y).backward();
  CHECK(p.a->weight.grad().defined());
  p.zero_grad();
  CHECK(!p.a->weight.grad().defined());
}

TEST_CASE("summary lists each parameter and the total") {
  Pair p;
  const std::string s = p.summary();
  CHECK(s.find("a.weight") != std::string::npos);
  CHECK(s.find("[2, 3]") != std::string::npos);
  CHECK(s.find("total") != std::string::npos);
  CHECK(s.find("12") != std::string::npos);
}

TEST_CASE("Sequential and ModuleList name children by index") {
  Sequential seq({std::make_shared<Linear>(4, 3), std::make_shared<Linear>(3, 2)});
  CHECK(seq.named_parameters()[2].first == "1.weight");
  CHECK(seq.forward(Tensor::ones({5, 4})).shape() == Shape{5, 2});
  ModuleList<Linear> list;
  list.push_back(std::make_shared<Linear>(2, 2));
  list.push_back(std::make_shared<Linear>(2, 2));
  CHECK(list.size() == 2);
  CHECK(list.named_parameters().back().first == "1.bias");
}

TEST_CASE("registration mistakes") {
  struct Bad : Module {
    std::string name() const override { return "Bad"; }
    void twice() {
      register_parameter("w", Tensor::ones({1}));
      register_parameter("w", Tensor::ones({1}));
    }
    void dotted() { register_parameter("a.b", Tensor::ones({1})); }
  };
  Bad b;
  CHECK_ERROR(b.twice(), "register_parameter: 'w' is already registered");
  CHECK_ERROR(b.dotted(), "name 'a.b' must be non-empty and contain no '.'");
  CHECK_ERROR(b.forward(Tensor::ones({1})), "Bad: this module does not take a single tensor input");
}
