#include "../support.h"

using namespace qkv;
using Ins = const std::vector<Tensor>&;
using Args = const nlohmann::json&;

TEST_CASE("gather, index_select, flip and stack match torch, with gradcheck") {
  const std::map<std::string, test::OpFn> ops = {
      {"gather", [](Ins x, Args a) { return gather(x[0], a["dim"], x[1]); }},
      {"index_select", [](Ins x, Args a) { return index_select(x[0], a["dim"], x[1]); }},
      {"flip", [](Ins x, Args a) { return flip(x[0], a["dims"].get<std::vector<int>>()); }},
      {"stack", [](Ins x, Args a) { return stack(x, a["dim"]); }},
  };
  CHECK(test::check_ops_against_torch(ops, "compare_index") == 9);
}

TEST_CASE("indexing ops on int64 tensors and edge shapes") {
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(flip(ids, {1}).to_vector() == std::vector<double>{3, 2, 1, 6, 5, 4});
  CHECK(flip(ids, {}).to_vector() == ids.to_vector());
  const Tensor i = Tensor::from(std::vector<std::int64_t>{2, 2}, {2});
  CHECK(index_select(Tensor::from({1.0, 2.0, 3.0}), 0, i).to_vector() == std::vector<double>{3, 3});
  const Tensor rows = index_select(ids, 1, i);  // an int64 table, as torch's
  CHECK(rows.dtype() == kInt64);
  CHECK(rows.to_vector() == std::vector<double>{3, 3, 6, 6});
  CHECK(stack({Tensor::scalar(1.0), Tensor::scalar(2.0)}).shape() == Shape{2});
  // A repeated index adds its gradients, as torch's index_add does.
  const Tensor x = Tensor::from({1.0, 2.0, 3.0}, kFloat64).requires_grad_();
  sum(index_select(x, 0, i)).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{0, 0, 2});
}

TEST_CASE("index bad input") {
  const Tensor a = Tensor::ones({2, 3});
  const Tensor bad = Tensor::from(std::vector<std::int64_t>{0, 3}, {1, 2});
  CHECK_ERROR(gather(a, 1, bad), "gather: index 3 at position 1 is out of range for dim 1 of size 3 (expected 0 to 2)");
  CHECK_ERROR(gather(a, 1, Tensor::ones({1, 2})), "gather: index must be an int64 tensor, got float32");
  CHECK_ERROR(gather(a, 1, Tensor::from(std::vector<std::int64_t>{0, 1, 2}, {3, 1})),
              "gather: index of shape [3, 1] does not fit input of shape [2, 3]");
  const Tensor neg = Tensor::from(std::vector<std::int64_t>{-1}, {1});
  CHECK_ERROR(index_select(a, 0, neg), "index_select: index -1 at position 0 is out of range for dim 0 of size 2");
  CHECK_ERROR(index_select(a, 0, bad), "index_select: index must be 0-D or 1-D, got shape [1, 2]");
  CHECK_ERROR(flip(a, {0, -2}), "flip: dim 0 appears twice");
  CHECK_ERROR(flip(a, {2}), "flip: dim 2 is out of range for a tensor of rank 2");
  CHECK_ERROR(stack({a, Tensor::ones({3, 2})}), "stack: tensor 1 has shape [3, 2], expected [2, 3]");
  CHECK_ERROR(stack({}), "stack: expected a non-empty list");
  CHECK_ERROR(stack({a, Tensor()}), "stack: tensor 1 of 2 is undefined");
  CHECK_ERROR(gather(Tensor(), 0, bad), "gather: argument 1 is an undefined tensor");
}
