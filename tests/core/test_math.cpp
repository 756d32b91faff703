#include "../support.h"

#include <qkv/core/gradcheck.h>

#include <cmath>
#include <limits>

using namespace qkv;
using Args = const nlohmann::json&;
using Ins = const std::vector<Tensor>&;

TEST_CASE("pointwise math matches torch and passes gradcheck (ties and kinks included)") {
  const auto opt = [](const nlohmann::json& v) { return v.is_null() ? std::nullopt : std::optional<double>(v.get<double>()); };
  const std::map<std::string, test::OpFn> ops = {
      {"sin", [](Ins x, Args) { return sin(x[0]); }},
      {"cos", [](Ins x, Args) { return cos(x[0]); }},
      {"abs", [](Ins x, Args) { return abs(x[0]); }},
      {"sign", [](Ins x, Args) { return sign(x[0]); }},
      {"rsqrt", [](Ins x, Args) { return rsqrt(x[0]); }},
      {"erf", [](Ins x, Args) { return erf(x[0]); }},
      {"log1p", [](Ins x, Args) { return log1p(x[0]); }},
      {"silu", [](Ins x, Args) { return silu(x[0]); }},
      {"clamp", [opt](Ins x, Args a) { return clamp(x[0], opt(a["min"]), opt(a["max"])); }},
      {"maximum", [](Ins x, Args) { return maximum(x[0], x[1]); }},
      {"minimum", [](Ins x, Args) { return minimum(x[0], x[1]); }},
  };
  CHECK(test::check_ops_against_torch(ops, "ops_math") == 13);
}

TEST_CASE("pointwise math: NaN, zero and bad input") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor x = Tensor::from({nan, 1.0, -2.0}, kFloat64);
  CHECK(std::isnan(maximum(x, Tensor::from({0.0, 0.0, 0.0}, kFloat64)).to_vector()[0]));
  CHECK(std::isnan(minimum(Tensor::from({0.0, 0.0, 0.0}, kFloat64), x).to_vector()[0]));
  CHECK(std::isnan(clamp(x, 0.0, 1.0).to_vector()[0]));
  CHECK(clamp(x, 0.0, 1.0).to_vector()[2] == 0.0);
  const Tensor z = Tensor::from({0.0, 2.0}, kFloat64).requires_grad_();
  sum(abs(z)).backward();
  CHECK(z.grad().to_vector() == std::vector<double>{0.0, 1.0});  // torch: abs' at 0 is 0
  CHECK_ERROR(clamp(x, std::nullopt, std::nullopt), "clamp: at least one of min and max must be given");
  CHECK_ERROR(clamp(x, 2.0, 1.0), "clamp: min = 2 is greater than max = 1");
  CHECK_ERROR(maximum(Tensor::ones({2, 3}), Tensor::ones({4})), "maximum: shapes [2, 3] and [4] are not broadcastable");
  CHECK_ERROR(sin(Tensor::zeros({2}, kInt64)), "sin: expected a float32 or float64 tensor, got int64");
  CHECK_ERROR(silu(Tensor()), "silu: argument 1 is an undefined tensor");
}
