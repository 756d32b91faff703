#include "../support.h"

#include <qkv/core/gradcheck.h>

#include <cmath>
#include <limits>
#include <set>

using namespace qkv;
using Args = const nlohmann::json&;
using Ins = const std::vector<Tensor>&;

TEST_CASE("sort and topk match torch; their values are differentiable") {
  const std::map<std::string, test::OpFn> ops = {
      {"sort", [](Ins x, Args a) { return sort(x[0], a["dim"], a["descending"]).values; }},
      {"sort_indices", [](Ins x, Args a) { return sort(x[0], a["dim"], a["descending"]).indices.to(x[0].dtype()); }},
      {"topk", [](Ins x, Args a) { return topk(x[0], a["k"], a["dim"], a["largest"]).values; }},
  };
  CHECK(test::check_ops_against_torch(ops, "ops_math") == 4);
}

TEST_CASE("sort: NaN last ascending, ties stable, int64 sorted too; topk bad input") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto s = sort(Tensor::from({2.0, nan, 1.0, 2.0}, kFloat64));
  CHECK(s.indices.to_vector() == std::vector<double>{2, 0, 3, 1});
  const auto d = sort(Tensor::from({2.0, nan, 1.0}, kFloat64), 0, /*descending=*/true);
  CHECK(d.indices.to_vector() == std::vector<double>{1, 0, 2});
  const auto ids = sort(Tensor::from(std::vector<std::int64_t>{5, -1, 3}, {3}));
  CHECK(ids.values.dtype() == kInt64);
  CHECK(ids.values.to_vector() == std::vector<double>{-1, 3, 5});
  CHECK_ERROR(topk(Tensor::ones({2, 3}), 4), "topk: k = 4 is out of range for dim 1 of size 3");
  CHECK_ERROR(sort(Tensor::ones({2}), 1), "sort: dim 1 is out of range");
}

TEST_CASE("randint, randperm and multinomial: seeded, in range, distributed as asked") {
  Generator g1(7), g2(7);
  const Tensor a = randint(-3, 5, {1000}, g1);
  CHECK(a.dtype() == kInt64);
  CHECK(a.to_vector() == randint(-3, 5, {1000}, g2).to_vector());  // one seed, one stream
  std::map<double, int> counts;
  for (double v : a.to_vector()) ++counts[v];
  CHECK(counts.size() == 8);
  CHECK(counts.begin()->first == -3);
  CHECK(counts.rbegin()->first == 4);
  for (const auto& [v, n] : counts) CHECK(std::abs(n - 125) < 50);  // 1000 draws over 8 values
  const auto perm = randperm(50, g1).to_vector();
  CHECK(std::set<double>(perm.begin(), perm.end()).size() == 50);
  CHECK(*std::max_element(perm.begin(), perm.end()) == 49);
  // Weights 1:3 (not normalised) and a zero that is never drawn.
  const Tensor w = Tensor::from(std::vector<double>{1, 0, 3}, {1, 3});
  const auto draws = multinomial(w, 4000, /*replacement=*/true, g1).to_vector();
  const auto twos = std::count(draws.begin(), draws.end(), 2.0);
  CHECK(std::count(draws.begin(), draws.end(), 1.0) == 0);
  CHECK(std::abs(double(twos) / 4000.0 - 0.75) < 0.03);
  const auto once = multinomial(Tensor::from({0.2, 0.3, 0.5}), 3, false, g1).to_vector();
  CHECK(std::set<double>(once.begin(), once.end()).size() == 3);  // without replacement: each category once
  CHECK_ERROR(randint(3, 3, {2}), "randint: expected low < high, got low = 3 and high = 3");
  CHECK_ERROR(randperm(-1), "randperm: n must be >= 0, got -1");
  CHECK_ERROR(multinomial(Tensor::from({0.5, -0.1}), 1), "multinomial: row 0: weight -0.1 at 1 is negative or not finite");
  CHECK_ERROR(multinomial(Tensor::from({0.5, 0.0}), 2), "multinomial: row 0 has 1 categories of positive weight, too few "
                                                        "to draw 2 without replacement");
  CHECK_ERROR(multinomial(Tensor::from({0.5}), 2), "cannot draw 2 samples without replacement from 1 categories");
}
