#include "qkv/datasets/dataset.h"

#include <qkv/datasets/detail.h>

#include <qkv/core/errors.h>
#include <qkv/core/files.h>
#include <qkv/datasets/shards.h>
#include <qkv/core/hash.h>
#include <qkv/core/ops.h>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <limits>

namespace qkv {
namespace {

using datasets_detail::kTrainStream;
using datasets_detail::kValStream;

// ---- generated tasks --------------------------------------------------------------------------------------

// One example of a generated task: x (T) and y (T) from g, for vocabulary v and length t.
using ExampleFn = void (*)(std::int64_t v, std::int64_t t, Generator& g, std::int64_t* x, std::int64_t* y);
ExampleFn example_fn(const std::string& task);  // from the task registry at the end of this file

}  // namespace

void check_data_options(const DataOptions& o) {
  if (o.task != "recall") return;
  // P = T / 3 key-value pairs and their queries, the keys distinct in [0, V/2).
  QKV_CHECK(o.seq_len >= 3 && o.vocab_size >= 4 && o.vocab_size / 2 >= o.seq_len / 3,
            "data: recall needs data.seq_len >= 3, data.vocab_size >= 4 and data.vocab_size / 2 >= data.seq_len / 3 "
            "distinct keys (got vocab_size = {}, seq_len = {})",
            o.vocab_size, o.seq_len);
}

namespace {

class GeneratedTask : public Dataset {
 public:
  GeneratedTask(const DataOptions& o, std::uint64_t seed)
      : Dataset(seed, o.vocab_size, o.seq_len), task_(o.task), example_(example_fn(o.task)) {
    check_data_options(o);
    Generator val(seed ^ kValStream);
    validation_ = make(o.val_size, val);
  }
  Batch next_batch(std::int64_t batch_size) override { return make(batch_size, rng_); }

 private:
  Batch make(std::int64_t n, Generator& g) const {
    Batch b{Tensor::empty({n, seq_len_}, kInt64), Tensor::empty({n, seq_len_}, kInt64)};
    for (std::int64_t i = 0; i < n; ++i)
      example_(vocab_size_, seq_len_, g, b.inputs.data<std::int64_t>() + i * seq_len_,
               b.targets.data<std::int64_t>() + i * seq_len_);
    return b;
  }
  std::string task_;
  ExampleFn example_;
};

}  // namespace

Dataset::Dataset(std::uint64_t seed, std::int64_t vocab_size, std::int64_t seq_len)
    : rng_(seed ^ kTrainStream), vocab_size_(vocab_size), seq_len_(seq_len) {}

Batch Dataset::next_rows(std::int64_t batch_size, std::int64_t first, std::int64_t rows) {
  Batch b = next_batch(batch_size);
  if (first == 0 && rows == batch_size) return b;
  return {narrow(b.inputs, 0, first, rows).clone(), narrow(b.targets, 0, first, rows).clone()};
}

void Dataset::set_state(const DataState& s) {
  const std::int64_t limit = std::numeric_limits<std::int64_t>::max() / std::max<std::int64_t>(1, seq_len_);
  QKV_CHECK(s.position >= 0 && s.position <= limit, "data: the saved position {} is out of range (0 to {})",
            s.position, limit);
  rng_.set_state(s.rng);
  position_ = s.position;
}

std::string Dataset::decode(std::int64_t token) const { return std::to_string(token); }

std::vector<std::int64_t> Dataset::encode(const std::string& text) const { return encode_token_ids(text, vocab_size_); }

std::vector<std::int64_t> encode_token_ids(const std::string& text, std::int64_t vocab_size) {
  std::vector<std::int64_t> out;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    std::size_t used = 0;
    std::int64_t v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    QKV_CHECK(used == word.size(), "tokens: '{}' is not an integer token id", word);
    QKV_CHECK(v >= 0 && v < vocab_size, "tokens: token id {} is out of range for vocab_size = {}", v, vocab_size);
    out.push_back(v);
  }
  return out;
}

namespace {

std::int64_t draw(Generator& g, std::int64_t n) { return static_cast<std::int64_t>(g.randint(static_cast<std::uint64_t>(n))); }

// Multi-query associative recall: P key-value pairs (keys in [0, V/2), distinct; values in [V/2, V)), then
// T - 2P queries, each a key from the pairs, whose target is its value. Other positions are ignored.
void recall_example(std::int64_t v, std::int64_t t, Generator& g, std::int64_t* x, std::int64_t* y) {
  const std::int64_t pairs = std::max<std::int64_t>(1, t / 3), half = v / 2;
  std::vector<std::int64_t> keys(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i) keys[static_cast<std::size_t>(i)] = i;
  for (std::int64_t i = 0; i < pairs; ++i)  // partial Fisher-Yates: the first `pairs` keys are distinct
    std::swap(keys[static_cast<std::size_t>(i)], keys[static_cast<std::size_t>(i + draw(g, half - i))]);
  std::vector<std::int64_t> values(static_cast<std::size_t>(pairs));
  for (std::int64_t i = 0; i < pairs; ++i) {
    values[static_cast<std::size_t>(i)] = half + draw(g, v - half);
    x[2 * i] = keys[static_cast<std::size_t>(i)];
    x[2 * i + 1] = values[static_cast<std::size_t>(i)];
    y[2 * i] = y[2 * i + 1] = kIgnore;
  }
  for (std::int64_t q = 2 * pairs; q < t; ++q) {
    const std::int64_t k = draw(g, pairs);
    x[q] = keys[static_cast<std::size_t>(k)];
    y[q] = values[static_cast<std::size_t>(k)];
  }
}

// x uniform over the vocabulary, y = f(x).
template <void (*Target)(const std::int64_t*, std::int64_t, std::int64_t*)>
void uniform_example(std::int64_t v, std::int64_t t, Generator& g, std::int64_t* x, std::int64_t* y) {
  for (std::int64_t i = 0; i < t; ++i) x[i] = draw(g, v);
  Target(x, t, y);
}
void copy_of(const std::int64_t* x, std::int64_t t, std::int64_t* y) { std::copy_n(x, t, y); }
void reversal_of(const std::int64_t* x, std::int64_t t, std::int64_t* y) { std::reverse_copy(x, x + t, y); }
void sorted_of(const std::int64_t* x, std::int64_t t, std::int64_t* y) {
  std::copy_n(x, t, y);
  std::sort(y, y + t);
}

template <class D>
std::unique_ptr<Dataset> make(const DataOptions& o, std::uint64_t seed) {
  return std::make_unique<D>(o, seed);
}

struct Task {
  const char* name;
  std::unique_ptr<Dataset> (*make)(const DataOptions&, std::uint64_t);
  ExampleFn example;  // generated tasks only
  void (*check_input)(const DataOptions&) = nullptr;  // file tasks: the input is there (cheap, before a run starts)
};

void check_input_file(const DataOptions& o) {
  QKV_CHECK(!o.path.empty(), "data: data.path must name the data file for data.task = \"{}\"", o.task);
  check_regular_input(o.path, "data: data.path");
  if (!o.val_path.empty()) check_regular_input(o.val_path, "data: data.val_path");
}
void check_input_shards(const DataOptions& o) {
  QKV_CHECK(!o.path.empty(), "data: data.path must name a shard folder (made by qkv tokenize) for data.task = \"tokens\"");
  read_manifest(o.path);
}

// Task name -> dataset factory (and example generator): a new task is one function and one line here.
const std::vector<Task>& registry() {
  static const std::vector<Task> r = {
      {"copy", make<GeneratedTask>, uniform_example<copy_of>},
      {"reverse", make<GeneratedTask>, uniform_example<reversal_of>},
      {"sort", make<GeneratedTask>, uniform_example<sorted_of>},
      {"recall", make<GeneratedTask>, recall_example},
      {"text", datasets_detail::make_text_dataset, nullptr, check_input_file},
      {"jsonl", datasets_detail::make_jsonl_dataset, nullptr, check_input_file},
      {"tokens", datasets_detail::make_tokens_dataset, nullptr, check_input_shards},
  };
  return r;
}

const Task* find_task(const std::string& name) {
  for (const auto& t : registry())
    if (name == t.name) return &t;
  return nullptr;
}

ExampleFn example_fn(const std::string& task) {
  const Task* t = find_task(task);
  if (t == nullptr || t->example == nullptr) {
    std::vector<std::string> generated;
    for (const auto& r : registry())
      if (r.example != nullptr) generated.push_back(r.name);
    fail("data: unknown generated task '{}' (expected {})", task, fmt::join(generated, ", "));
  }
  return t->example;
}

}  // namespace

std::vector<std::string> task_names() {
  std::vector<std::string> names;
  for (const auto& t : registry()) names.push_back(t.name);
  return names;
}

void generate_example(const std::string& task, std::int64_t v, std::int64_t t, Generator& g, std::int64_t* x,
                      std::int64_t* y) {
  example_fn(task)(v, t, g, x, y);
}

void check_data_input(const DataOptions& o) {
  const Task* t = find_task(o.task);
  QKV_CHECK(t != nullptr, "data: unknown task '{}' (expected {})", o.task, fmt::join(task_names(), ", "));
  if (t->check_input != nullptr) t->check_input(o);
}

std::unique_ptr<Dataset> make_dataset(const DataOptions& o, std::uint64_t seed) {
  const Task* t = find_task(o.task);
  QKV_CHECK(t != nullptr, "data: unknown task '{}' (expected {})", o.task, fmt::join(task_names(), ", "));
  return t->make(o, seed);
}

}  // namespace qkv
