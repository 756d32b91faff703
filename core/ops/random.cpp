// Sampling: random integers, permutations, categorical draws, and sorting (sort, topk). Every draw comes from a
// qkv Generator, so a seed gives the same numbers on every machine (not torch's numbers: its generator differs).
#include "qkv/core/ops/kernel.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace qkv {
namespace {

// A uniform integer in [0, n) without modulo bias (rejection on the top of the 64-bit range).
std::uint64_t below(Generator& gen, std::uint64_t n) {
  const std::uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  for (;;)
    if (const std::uint64_t r = gen.next_u64(); r < limit) return r % n;
}

}  // namespace

Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape, Generator& gen) {
  QKV_CHECK(low < high, "randint: expected low < high, got low = {} and high = {}", low, high);
  Tensor out = Tensor::empty(shape, kInt64);
  std::int64_t* p = out.data<std::int64_t>();
  const auto range = static_cast<std::uint64_t>(high) - static_cast<std::uint64_t>(low);
  for (std::int64_t i = 0; i < out.numel(); ++i)
    p[i] = static_cast<std::int64_t>(static_cast<std::uint64_t>(low) + below(gen, range));
  return out;
}

Tensor randperm(std::int64_t n, Generator& gen) {
  QKV_CHECK(n >= 0, "randperm: n must be >= 0, got {}", n);
  Tensor out = Tensor::empty({n}, kInt64);
  std::int64_t* p = out.data<std::int64_t>();
  std::iota(p, p + n, std::int64_t{0});
  for (std::int64_t i = n - 1; i > 0; --i)  // Fisher-Yates
    std::swap(p[i], p[static_cast<std::int64_t>(below(gen, static_cast<std::uint64_t>(i) + 1))]);
  return out;
}

Tensor multinomial(const Tensor& probs, std::int64_t num_samples, bool replacement, Generator& gen) {
  const kernel::OpScope op_scope("multinomial", {&probs});
  QKV_CHECK(probs.dim() == 1 || probs.dim() == 2, "multinomial: expected probabilities (N) or (B, N), got shape {}",
            probs.shape().str());
  const std::int64_t rows = probs.dim() == 1 ? 1 : probs.size(0), n = probs.size(-1);
  QKV_CHECK(num_samples > 0, "multinomial: num_samples must be positive, got {}", num_samples);
  QKV_CHECK(replacement || num_samples <= n,
            "multinomial: cannot draw {} samples without replacement from {} categories", num_samples, n);
  const std::vector<double> w = probs.to_vector();
  Tensor out = Tensor::empty(probs.dim() == 1 ? Shape{num_samples} : Shape{rows, num_samples}, kInt64);
  std::int64_t* po = out.data<std::int64_t>();
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<double> row(w.begin() + r * n, w.begin() + (r + 1) * n);
    std::int64_t positive = 0;
    for (std::int64_t j = 0; j < n; ++j) {
      const double v = row[static_cast<std::size_t>(j)];
      QKV_CHECK(std::isfinite(v) && v >= 0, "multinomial: row {}: weight {:g} at {} is negative or not finite", r, v, j);
      positive += v > 0;
    }
    QKV_CHECK(positive >= (replacement ? 1 : num_samples),
              "multinomial: row {} has {} categories of positive weight, too few to draw {} {}", r, positive,
              num_samples, replacement ? "with replacement" : "without replacement");
    for (std::int64_t s = 0; s < num_samples; ++s) {
      const double total = std::accumulate(row.begin(), row.end(), 0.0);
      double u = gen.uniform() * total;
      std::int64_t pick = n - 1;
      for (std::int64_t j = 0; j < n; ++j) {
        const double v = row[static_cast<std::size_t>(j)];
        if (v > 0 && u < v) {
          pick = j;
          break;
        }
        u -= v;
      }
      while (row[static_cast<std::size_t>(pick)] <= 0) --pick;  // rounding at the end lands on a real category
      po[r * num_samples + s] = pick;
      if (!replacement) row[static_cast<std::size_t>(pick)] = 0;
    }
  }
  return out;
}

SortResult sort(const Tensor& a, int dim, bool descending) {
  const kernel::OpScope op_scope("sort", {&a});
  const int d = normalize_dim("sort", dim, std::max(a.dim(), 1));
  const Tensor x = a.dim() == 0 ? reshape(a, {1}) : a;
  const auto sp = kernel::split_at(x.shape(), d);
  Tensor index = Tensor::empty(x.shape(), kInt64);
  kernel::dispatch<Dtypes::Any>("sort", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = x.data<T>();
    std::int64_t* pi = index.data<std::int64_t>();
    std::vector<std::int64_t> order(static_cast<std::size_t>(sp.n));
    kernel::for_each_line(sp, [&](std::int64_t base, std::int64_t st) {
      const auto at = [&](std::int64_t j) { return pa[base + j * st]; };
      std::iota(order.begin(), order.end(), std::int64_t{0});
      // NaN sorts above everything, as torch's; ties keep their order (a stable sort).
      std::stable_sort(order.begin(), order.end(), [&](std::int64_t l, std::int64_t r) {
        const T vl = at(l), vr = at(r);
        const bool nl = vl != vl, nr = vr != vr;
        if (nl || nr) return descending ? nl && !nr : !nl && nr;
        return descending ? vl > vr : vl < vr;
      });
      for (std::int64_t j = 0; j < sp.n; ++j) pi[base + j * st] = order[static_cast<std::size_t>(j)];
    });
  });
  Tensor values = gather(x, d, index);  // differentiable: the gradient goes back to where each value came from
  if (a.dim() == 0) return {reshape(values, {}), reshape(index, {})};
  return {values, index};
}

SortResult topk(const Tensor& a, std::int64_t k, int dim, bool largest) {
  const kernel::OpScope op_scope("topk", {&a});
  const int d = normalize_dim("topk", dim, std::max(a.dim(), 1));
  const std::int64_t n = a.dim() == 0 ? 1 : a.size(d);
  QKV_CHECK(k >= 0 && k <= n, "topk: k = {} is out of range for dim {} of size {}", k, d, n);
  const SortResult all = sort(a, dim, /*descending=*/largest);
  if (a.dim() == 0) return all;
  return {narrow(all.values, d, 0, k), narrow(all.indices, d, 0, k)};
}

}  // namespace qkv
