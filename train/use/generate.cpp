#include "qkv/train/use/generate.h"

#include <qkv/core/autograd.h>
#include <qkv/core/ops.h>

#include <algorithm>
#include <cmath>

namespace qkv {
namespace {

// The logits of the token after `ids`, given its last model.positions tokens (ModelConfig::seq_len, the table). With the cache only
// the tokens it has not seen run. When the window slides, every token's position changes (the positions are
// learned absolute embeddings), so the cache is refilled over the new window (its buffers are reused): past the
// table, a cached token costs as much as an uncached one.
class NextLogits {
 public:
  NextLogits(LanguageModel& model, bool cached) : model_(model), cached_(cached) {}
  Tensor operator()(const std::vector<std::int64_t>& ids) {
    const auto window = static_cast<std::size_t>(model_.config().seq_len);
    const std::size_t first = ids.size() > window ? ids.size() - window : 0;
    if (!cached_) return model_.logits(ids_tensor(slice(ids, first)));
    if (cache_.layers.empty()) cache_ = model_.make_cache(1);
    if (first != first_) {  // the window slid: refill from its start, overwriting the rows
      cache_.length = 0;
      first_ = first;
    }
    return model_.logits(ids_tensor(slice(ids, first_ + static_cast<std::size_t>(cache_.length))), cache_);
  }

 private:
  static std::vector<std::int64_t> slice(const std::vector<std::int64_t>& ids, std::size_t from) {
    return {ids.begin() + static_cast<std::ptrdiff_t>(from), ids.end()};
  }
  LanguageModel& model_;
  bool cached_;
  KVCache cache_;
  std::size_t first_ = 0;  // the index in ids of the cache's first token
};

// Greedy at temperature 0, else a draw from softmax(logits / temperature).
std::int64_t pick_token(const std::vector<double>& logits, double temperature, Generator& gen) {
  if (temperature == 0) return std::max_element(logits.begin(), logits.end()) - logits.begin();
  const double m = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double total = 0;
  for (std::size_t i = 0; i < p.size(); ++i) total += p[i] = std::exp((logits[i] - m) / temperature);
  double u = gen.uniform() * total;
  std::int64_t next = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    next = static_cast<std::int64_t>(i);
    if ((u -= p[i]) < 0) break;
  }
  return next;
}

}  // namespace

std::vector<std::int64_t> sample_tokens(const TrainedModel& tm, std::vector<std::int64_t> ids, std::int64_t length,
                                        double temperature, std::uint64_t seed,
                                        const std::function<void(std::int64_t)>& on_token, bool cached) {
  QKV_CHECK(tm.model->config().causal,
            "sample: {} is not a causal model; sampling needs one trained with model.causal = true", tm.path);
  QKV_CHECK(temperature >= 0, "sample: --temperature must be >= 0, got {}", temperature);
  QKV_CHECK(!ids.empty(), "sample: no prompt tokens given");
  Generator gen(seed);
  NoGradGuard no_grad;
  NextLogits next_logits(*tm.model, cached);
  std::vector<std::int64_t> out;
  for (std::int64_t n = 0; n < length; ++n) {
    const Tensor logits = next_logits(ids);  // (1, n, V): the last row predicts the next token
    check_finite_output(logits, "sample", tm.path);
    const std::int64_t v = logits.size(2), rows = logits.size(1);
    std::vector<double> last = narrow(reshape(logits, {-1, v}), 0, rows - 1, 1).to_vector();
    last.resize(static_cast<std::size_t>(tm.usable_vocab()));  // never an id past the tokenizer's (padding rows)
    const std::int64_t next = pick_token(last, temperature, gen);
    ids.push_back(next);
    out.push_back(next);
    if (on_token) on_token(next);
  }
  return out;
}

}  // namespace qkv
