#include "../support.h"

#include <qkv/core/gradcheck.h>

using namespace qkv;
using Args = const nlohmann::json&;
using Ins = const std::vector<Tensor>&;

TEST_CASE("matmul matches torch: 2-D, batched, broadcast batch dims, 1-D operands") {
  const std::map<std::string, test::OpFn> ops = {{"matmul", [](Ins x, Args) { return matmul(x[0], x[1]); }}};
  CHECK(test::check_ops_against_torch(ops) == 6);
}

TEST_CASE("matmul values by hand") {
  const Tensor a = Tensor::from(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = Tensor::from(std::vector<double>{7, 8, 9, 10, 11, 12}, {3, 2});
  CHECK(matmul(a, b).to_vector() == std::vector<double>{58, 64, 139, 154});
}

TEST_CASE("matmul gradcheck when only one side requires grad, and with a shared operand") {
  const Tensor a = test::leaf({2, 3, 4}, 1);
  const Tensor b = Tensor::randn({4, 2}, default_generator(), kFloat64);
  CHECK(gradcheck([](Ins x) { return matmul(x[0], x[1]); }, {a, b}));
  CHECK(gradcheck([](Ins x) { return matmul(x[0], transpose(x[0], -1, -2)); }, {a}));
}

TEST_CASE("matmul bad input") {
  CHECK_ERROR(matmul(Tensor::ones({2, 3}), Tensor::ones({4, 5})),
              "matmul: shapes [2, 3] and [4, 5] cannot be multiplied (2x3 and 4x5)");
  CHECK_ERROR(matmul(Tensor::ones({2, 2, 3}), Tensor::ones({3, 3, 4})), "matmul: shapes [2] and [3] are not broadcastable");
  CHECK_ERROR(matmul(Tensor::scalar(1), Tensor::ones({2})), "matmul: both operands need at least one dim");
  CHECK_ERROR(matmul(Tensor::ones({2, 2}), Tensor::ones({2, 2}, kFloat64)), "matmul: mixed dtypes");
}
