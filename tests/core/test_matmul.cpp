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

TEST_CASE("einsum matches torch for two-operand contractions: batch, contracted, outer and summed-out letters") {
  const std::map<std::string, test::OpFn> ops = {
      {"einsum", [](Ins x, Args a) { return einsum(a["equation"].get<std::string>(), x[0], x[1]); }}};
  CHECK(test::check_ops_against_torch(ops, "ops_math") == 7);
}

TEST_CASE("einsum bad input names the equation and the operand") {
  const Tensor a = Tensor::ones({2, 3}), b = Tensor::ones({3, 4});
  CHECK_ERROR(einsum("ij,jk", a, b), "einsum: expected two operands and an explicit output, as 'ij,jk->ik', got 'ij,jk'");
  CHECK_ERROR(einsum("ij->i", a, b), "einsum: expected two operands");
  CHECK_ERROR(einsum("ijk,jk->ik", a, b), "einsum: operand 0 has 3 subscripts ('ijk') for a tensor of rank 2 (shape [2, 3])");
  CHECK_ERROR(einsum("ii,jk->ik", a, b), "einsum: subscript 'i' repeats in operand 0 ('ii'): diagonals are not supported");
  CHECK_ERROR(einsum("ij,jk->iz", a, b), "einsum: output subscript 'z' is in neither operand");
  CHECK_ERROR(einsum("ij,ik->jk", a, b), "einsum: subscript 'i' is 2 in operand 0 (shape [2, 3]) but 3 in operand 1");
  CHECK_ERROR(einsum("i1,jk->ik", a, b), "einsum: '1' in operand 0 is not a letter");
}
