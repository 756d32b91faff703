#include "../support.h"

#include <qkv/core/gradcheck.h>

#include <limits>

using namespace qkv;
using Args = const nlohmann::json&;
using Ins = const std::vector<Tensor>&;

TEST_CASE("shape ops match torch") {
  const std::map<std::string, test::OpFn> ops = {
      {"transpose", [](Ins x, Args a) { return transpose(x[0], a["dim0"], a["dim1"]); }},
      {"permute", [](Ins x, Args a) { return permute(x[0], a["dims"].get<std::vector<int>>()); }},
      {"reshape", [](Ins x, Args a) { return reshape(x[0], Shape(a["shape"].get<std::vector<std::int64_t>>())); }},
      {"concat", [](Ins x, Args a) { return concat(x, a["dim"]); }},
      {"narrow", [](Ins x, Args a) { return narrow(x[0], a["dim"], a["start"], a["length"]); }},
      {"slice", [](Ins x, Args a) { return slice(x[0], a["dim"], a["start"], a["end"]); }},
  };
  CHECK(test::check_ops_against_torch(ops) == 6);
}

TEST_CASE("reshape shares storage; unsqueeze; int64 tensors move too") {
  Tensor a = Tensor::arange(6);
  Tensor r = reshape(a, {2, 3});
  a.fill_(7);
  CHECK(r.to_vector() == std::vector<double>(6, 7.0));
  CHECK(unsqueeze(r, 1).shape() == Shape{2, 1, 3});
  CHECK(unsqueeze(r, -1).shape() == Shape{2, 3, 1});
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(transpose(ids, 0, 1).to_vector() == std::vector<double>{1, 4, 2, 5, 3, 6});
  CHECK(narrow(ids, 1, 1, 2).to_vector() == std::vector<double>{2, 3, 5, 6});
  CHECK(concat({ids, ids}, 0).shape() == Shape{4, 3});
}

TEST_CASE("shape bad input") {
  const Tensor a = Tensor::ones({2, 3});
  CHECK_ERROR(reshape(a, {4, 2}), "reshape: shape [4, 2] is invalid for input of shape [2, 3] (6 elements)");
  CHECK_ERROR(reshape(a, {-1, -1}), "only one dim can be -1");
  CHECK_ERROR(transpose(a, 0, 2), "transpose: dim 2 is out of range for a tensor of rank 2");
  CHECK_ERROR(permute(a, {0}), "permute: 1 dims given for a tensor of rank 2");
  CHECK_ERROR(permute(a, {1, 1}), "permute: dim 1 appears twice");
  CHECK_ERROR(narrow(a, 1, 2, 2), "narrow: range [2, 4) is out of bounds for dim 1 of size 3");
  CHECK_ERROR(concat({a, Tensor::ones({3, 3})}, 1), "concat: tensor 1 has shape [3, 3], expected [2, 3] in every dim but 1");
  CHECK_ERROR(concat({}, 0), "concat: expected a non-empty list");
}

TEST_CASE("tril and triu match torch (the gradient masked alike); eye") {
  const std::map<std::string, test::OpFn> ops = {
      {"tril", [](Ins x, Args a) { return tril(x[0], a["k"]); }},
      {"triu", [](Ins x, Args a) { return triu(x[0], a["k"]); }},
  };
  CHECK(test::check_ops_against_torch(ops, "ops_math") == 2);
  CHECK(eye(2, 3).to_vector() == std::vector<double>{1, 0, 0, 0, 1, 0});
  CHECK(eye(2, -1, kInt64).dtype() == kInt64);
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4}, {2, 2});
  CHECK(triu(ids).to_vector() == std::vector<double>{1, 2, 0, 4});
  const double inf = std::numeric_limits<double>::infinity();
  CHECK(tril(Tensor::from(std::vector<double>{1, inf, 3, 4}, {2, 2})).to_vector() == std::vector<double>{1, 0, 3, 4});
  CHECK_ERROR(tril(Tensor::ones({3})), "tril: expected a tensor of at least 2 dims, got shape [3]");
  CHECK_ERROR(eye(-1), "eye: n must be >= 0, got -1");
}
