#include "../support.h"

#include <qkv/core/gradcheck.h>

using namespace qkv;
using Args = const nlohmann::json&;
using Ins = const std::vector<Tensor>&;

TEST_CASE("reductions match torch") {
  const std::map<std::string, test::OpFn> ops = {
      {"sum", [](Ins x, Args) { return sum(x[0]); }},
      {"sum_dims", [](Ins x, Args a) { return sum(x[0], a["dims"].get<std::vector<int>>(), a["keepdim"]); }},
      {"mean", [](Ins x, Args) { return mean(x[0]); }},
      {"mean_dims", [](Ins x, Args a) { return mean(x[0], a["dims"].get<std::vector<int>>(), a["keepdim"]); }},
      {"max_dim", [](Ins x, Args a) { return max(x[0], a["dim"], a["keepdim"]); }},
      {"max", [](Ins x, Args) { return max(x[0]); }},
  };
  CHECK(test::check_ops_against_torch(ops) == 8);
}

TEST_CASE("max sends the gradient to the first maximum; argmax") {
  const Tensor a = Tensor::from({1.0, 3.0, 3.0, 2.0}, kFloat64).requires_grad_();
  max(a).backward();
  CHECK(a.grad().to_vector() == std::vector<double>{0, 1, 0, 0});
  const Tensor b = Tensor::from(std::vector<double>{1, 5, 2, 7, 0, 3}, {2, 3});
  CHECK(argmax(b, 1).to_vector() == std::vector<double>{1, 0});
  CHECK(argmax(b, 0, true).shape() == Shape{1, 3});
  CHECK(argmax(b, 0).dtype() == kInt64);
}

TEST_CASE("reduction bad input") {
  const Tensor a = Tensor::ones({2, 3});
  CHECK_ERROR(sum(a, {2}), "sum: dim 2 is out of range for a tensor of rank 2");
  CHECK_ERROR(sum(a, {1, -1}), "sum: dim 1 appears twice");
  CHECK_ERROR(max(a, -3), "max: dim -3 is out of range");
  CHECK_ERROR(max(Tensor::ones({0})), "max: tensor of shape [0] is empty");
  CHECK_ERROR(mean(Tensor::ones({0, 2})), "mean: tensor of shape [0, 2] is empty");
}
