#include "../support.h"

#include <qkv/core/gradcheck.h>

#include <cmath>
#include <limits>

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

TEST_CASE("statistics match torch: min, var, std, logsumexp, cumsum, norm") {
  const auto dims = [](const nlohmann::json& a) { return a.get<std::vector<int>>(); };
  const std::map<std::string, test::OpFn> ops = {
      {"min", [](Ins x, Args) { return min(x[0]); }},
      {"min_dim", [](Ins x, Args a) { return min(x[0], a["dim"], a["keepdim"]); }},
      {"var", [dims](Ins x, Args a) { return var(x[0], dims(a["dims"]), a["correction"], a["keepdim"]); }},
      {"std", [dims](Ins x, Args a) { return qkv::std(x[0], dims(a["dims"]), a["correction"], a["keepdim"]); }},
      {"logsumexp", [](Ins x, Args a) { return logsumexp(x[0], a["dim"], a["keepdim"]); }},
      {"cumsum", [](Ins x, Args a) { return cumsum(x[0], a["dim"]); }},
      {"norm", [dims](Ins x, Args a) {
         return a["dims"].is_null() ? norm(x[0], a["p"]) : norm(x[0], a["p"], dims(a["dims"]), a["keepdim"]);
       }},
  };
  CHECK(test::check_ops_against_torch(ops, "ops_math") == 10);
}

TEST_CASE("int64 sums stay int64, exactly; an int64 mean is refused, as torch's") {
  const std::int64_t big = (std::int64_t{1} << 53) + 1;  // not a double
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{big, 1, 2, 3}, {2, 2});
  const Tensor total = sum(ids);
  CHECK(total.dtype() == kInt64);
  CHECK(total.data<std::int64_t>()[0] == big + 6);
  CHECK(sum(ids, {0}).to_vector() == std::vector<double>{double(big + 2), 4});
  CHECK_ERROR(mean(ids), "mean: expected a float32 or float64 tensor, got int64");
}

TEST_CASE("statistics at their edges, and bad input") {
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor rows = Tensor::from(std::vector<double>{-inf, -inf, 1000.0, 1000.0}, {2, 2});
  const auto lse = logsumexp(rows, 1).to_vector();
  CHECK(lse[0] == -inf);                                   // an all -inf row, as torch
  CHECK(lse[1] == doctest::Approx(1000.0 + std::log(2.0)));  // no overflow
  const Tensor z = Tensor::zeros({3}, kFloat64).requires_grad_();
  norm(z).backward();
  CHECK(z.grad().to_vector() == std::vector<double>{0, 0, 0});  // torch's subgradient at 0, not NaN
  CHECK(var(Tensor::from({1.0, 2.0, 3.0, 4.0}, kFloat64)).item() == doctest::Approx(5.0 / 3.0));
  CHECK(var(Tensor::from({1.0, 2.0, 3.0, 4.0}, kFloat64), 0).item() == doctest::Approx(1.25));
  CHECK(gradcheck([](Ins x) { return cumsum(x[0], 0); }, {test::leaf({4, 2}, 3)}));
  CHECK_ERROR(norm(z, 0.5), "norm: p must be a finite number >= 1, got 0.5");
  CHECK_ERROR(var(z, -1), "var: correction must be >= 0, got -1");
  CHECK_ERROR(cumsum(z, 2), "cumsum: dim 2 is out of range");
  CHECK_ERROR(logsumexp(Tensor::zeros({2, 0}), 1), "logsumexp: cannot reduce over dim 1 of size 0");
  CHECK_ERROR(min(Tensor::zeros({0})), "min: tensor of shape [0] is empty");
}

TEST_CASE("ties and infinities: max, min and logsumexp give torch's gradients (fixture ops_edges)") {
  int ran = 0;
  for (const auto& c : test::fixture("ops_edges")["cases"]) {
    const std::string op = c["op"];
    for (const DType dtype : {kFloat64, kFloat32}) {
      INFO(op, " of ", c["inputs"][0].dump(), " in ", dtype_name(dtype));
      const Tensor x = test::tensor_from(c["inputs"][0], dtype).requires_grad_();
      const Tensor out = op == "max" ? max(x) : op == "min" ? min(x) : logsumexp(x, c["args"]["dim"], c["args"]["keepdim"]);
      CHECK_CLOSE(out, test::tensor_from(c["out"], dtype), 1e-6, 0);
      out.backward(test::tensor_from(c["cotangent"], dtype));
      CHECK_CLOSE(x.grad(), test::tensor_from(c["grads"][0], dtype), 1e-6, 0);
    }
    ++ran;
  }
  CHECK(ran == 18);
}

TEST_CASE("max of a whole tensor splits the gradient among ties, max along a dim picks the first; argmax") {
  const Tensor a = Tensor::from({1.0, 3.0, 3.0, 2.0}, kFloat64).requires_grad_();
  max(a).backward();
  CHECK(a.grad().to_vector() == std::vector<double>{0, 0.5, 0.5, 0});
  const Tensor d = Tensor::from({1.0, 3.0, 3.0, 2.0}, kFloat64).requires_grad_();
  max(d, 0).backward();
  CHECK(d.grad().to_vector() == std::vector<double>{0, 1, 0, 0});  // torch's max(dim) backward: the index it returns
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
