#include "../support.h"

using namespace qkv;
using Ins = const std::vector<Tensor>&;
using Args = const nlohmann::json&;

TEST_CASE("comparisons, where, all and any match torch") {
  const std::map<std::string, test::OpFn> ops = {
      {"eq", [](Ins x, Args) { return eq(x[0], x[1]); }},
      {"ne", [](Ins x, Args) { return ne(x[0], x[1]); }},
      {"lt", [](Ins x, Args) { return lt(x[0], x[1]); }},
      {"le", [](Ins x, Args) { return le(x[0], x[1]); }},
      {"gt", [](Ins x, Args) { return gt(x[0], x[1]); }},
      {"ge", [](Ins x, Args) { return ge(x[0], x[1]); }},
      {"eq_scalar", [](Ins x, Args a) { return eq(x[0], a["s"].get<double>()); }},
      {"ne_scalar", [](Ins x, Args a) { return ne(x[0], a["s"].get<double>()); }},
      {"lt_scalar", [](Ins x, Args a) { return lt(x[0], a["s"].get<double>()); }},
      {"le_scalar", [](Ins x, Args a) { return le(x[0], a["s"].get<double>()); }},
      {"gt_scalar", [](Ins x, Args a) { return gt(x[0], a["s"].get<double>()); }},
      {"ge_scalar", [](Ins x, Args a) { return ge(x[0], a["s"].get<double>()); }},
      {"where", [](Ins x, Args) { return where(x[0], x[1], x[2]); }},
      {"all", [](Ins x, Args) { return all(x[0]); }},
      {"any", [](Ins x, Args) { return any(x[0]); }},
      {"all_dim", [](Ins x, Args a) { return all(x[0], a["dim"], a["keepdim"]); }},
      {"any_dim", [](Ins x, Args a) { return any(x[0], a["dim"], a["keepdim"]); }},
  };
  CHECK(test::check_ops_against_torch(ops, "compare_index") == 22);
}

TEST_CASE("masks: the operands' float dtype (float32 for int64), never requiring grad; an accuracy in one line") {
  const Tensor x = Tensor::from({1.0, 2.0, 3.0}, kFloat64).requires_grad_();
  const Tensor m = gt(x, 1.5);
  CHECK(m.dtype() == kFloat64);
  CHECK(!m.requires_grad());
  CHECK(m.to_vector() == std::vector<double>{0, 1, 1});

  const Tensor logits = Tensor::from(std::vector<double>{0.1, 0.9, 0.8, 0.2, 0.3, 0.7}, {3, 2});
  const Tensor targets = Tensor::from(std::vector<std::int64_t>{1, 0, 0}, {3});
  const Tensor hit = eq(argmax(logits, -1), targets);
  CHECK(hit.dtype() == kFloat32);
  CHECK(mean(hit).item() == doctest::Approx(2.0 / 3.0));

  CHECK(all(Tensor::zeros({0})).item() == 1.0);
  CHECK(any(Tensor::zeros({0})).item() == 0.0);
  CHECK(any(Tensor::from(std::vector<std::int64_t>{0, 0, 5}, {3})).item() == 1.0);
}

TEST_CASE("where takes its value from one branch only: inf and nan in the other never leak") {
  const Tensor a = Tensor::from({1.0, std::numeric_limits<double>::infinity()}, kFloat64).requires_grad_();
  const Tensor b = Tensor::from({std::nan(""), 4.0}, kFloat64).requires_grad_();
  const Tensor cond = Tensor::from({1.0, 0.0}, kFloat64);
  const Tensor out = where(cond, a, b);
  CHECK(out.to_vector() == std::vector<double>{1.0, 4.0});
  sum(out).backward();
  CHECK(a.grad().to_vector() == std::vector<double>{1.0, 0.0});
  CHECK(b.grad().to_vector() == std::vector<double>{0.0, 1.0});
}

TEST_CASE("compare bad input") {
  const Tensor a = Tensor::ones({2, 3});
  CHECK_ERROR(eq(a, Tensor::ones({4})), "eq: shapes [2, 3] and [4] are not broadcastable");
  CHECK_ERROR(lt(a, Tensor::ones({3}, kFloat64)), "lt: mixed dtypes float32 (shape [2, 3]) and float64");
  CHECK_ERROR(ge(Tensor(), 1.0), "ge: argument 1 is an undefined tensor");
  CHECK_ERROR(where(a, a, Tensor::ones({3}, kFloat64)), "where: mixed dtypes");
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 2}, {2});
  const Tensor picked = where(Tensor::from({1.0, 0.0}), ids, Tensor::from(std::vector<std::int64_t>{-100}, {1}));
  CHECK(picked.dtype() == kInt64);  // int64 branches, as torch's (masking targets with ignore_index)
  CHECK(picked.to_vector() == std::vector<double>{1, -100});
  CHECK_ERROR(where(Tensor::ones({3}), a, Tensor::ones({2, 1, 4})), "where: shapes");
  CHECK_ERROR(all(a, 2), "all: dim 2 is out of range");
  CHECK_ERROR(any(Tensor()), "any: argument 1 is an undefined tensor");
}
