#include "../support.h"

#include <qkv/core/gradcheck.h>

using namespace qkv;
using test::leaf;
using Args = const nlohmann::json&;
using Ins = const std::vector<Tensor>&;

TEST_CASE("elementwise ops match torch and pass gradcheck (broadcasting included)") {
  const std::map<std::string, test::OpFn> ops = {
      {"add", [](Ins x, Args) { return x[0] + x[1]; }},
      {"sub", [](Ins x, Args) { return x[0] - x[1]; }},
      {"mul", [](Ins x, Args) { return x[0] * x[1]; }},
      {"div", [](Ins x, Args) { return x[0] / x[1]; }},
      {"add_scalar", [](Ins x, Args a) { return x[0] + a["s"].get<double>(); }},
      {"mul_scalar", [](Ins x, Args a) { return x[0] * a["s"].get<double>(); }},
      {"neg", [](Ins x, Args) { return -x[0]; }},
      {"pow", [](Ins x, Args a) { return pow(x[0], a["p"].get<double>()); }},
      {"exp", [](Ins x, Args) { return exp(x[0]); }},
      {"log", [](Ins x, Args) { return log(x[0]); }},
      {"sqrt", [](Ins x, Args) { return sqrt(x[0]); }},
      {"tanh", [](Ins x, Args) { return tanh(x[0]); }},
      {"sigmoid", [](Ins x, Args) { return sigmoid(x[0]); }},
      {"relu", [](Ins x, Args) { return relu(x[0]); }},
      {"gelu", [](Ins x, Args a) { return gelu(x[0], a["approximate"].get<bool>()); }},
  };
  CHECK(test::check_ops_against_torch(ops) == 19);
}

TEST_CASE("scalar operators on either side") {
  const Tensor a = leaf({2, 2}, 1);
  CHECK(gradcheck([](Ins x) { return 2.0 - x[0] / 3.0 + 1.0 / (x[0] * x[0] + 1.0); }, {a}));
}

TEST_CASE("broadcast_to and sum_to are each other's backward") {
  const Tensor a = leaf({3, 1}, 2);
  CHECK(gradcheck([](Ins x) { return broadcast_to(x[0], {2, 3, 4}); }, {a}));
  const Tensor b = leaf({2, 3, 4}, 3);
  CHECK(gradcheck([](Ins x) { return sum_to(x[0], {3, 1}); }, {b}));
  CHECK(broadcast_to(Tensor::from({1.0, 2.0}), {2, 2}).to_vector() == std::vector<double>{1, 2, 1, 2});
}

TEST_CASE("elementwise bad input names the op and both shapes") {
  const Tensor a = Tensor::ones({2, 3}), b = Tensor::ones({4});
  CHECK_ERROR(add(a, b), "add: shapes [2, 3] and [4] are not broadcastable");
  CHECK_ERROR(mul(a, Tensor::ones({3, 3})), "mul: shapes [2, 3] and [3, 3] are not broadcastable");
  CHECK_ERROR(add(a, Tensor::ones({2, 3}, kFloat64)), "add: mixed dtypes float32 (shape [2, 3]) and float64");
  CHECK_ERROR(exp(Tensor::zeros({2}, kInt64)), "exp: expected a float32 or float64 tensor, got int64");
  CHECK_ERROR(add(a, Tensor()), "add: argument 2 is an undefined tensor");
}
