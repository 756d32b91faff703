#pragma once
// Datasets: batches of int64 token ids (B, T) with targets (B, T), where -100 marks a position the loss ignores.
// Everything is deterministic given the seed; the validation set comes from its own random stream.
#include <qkv/core/tensor.h>

#include <cstdint>
#include <memory>
#include <string>

namespace qkv {

class BpeTokenizer;

/// The [data] section of a config.
struct DataOptions {
  std::string task = "reverse";  ///< copy | reverse | sort | recall | text | jsonl | tokens
  std::int64_t vocab_size = 16;
  std::int64_t seq_len = 12;
  std::int64_t val_size = 512;
  std::string path{};
  std::string val_path{};
  bool shuffle = true;
};

struct Batch {
  Tensor inputs;   ///< (B, T) int64
  Tensor targets;  ///< (B, T) int64, -100 = ignored
};

/// Where a dataset's training stream is: restored from a checkpoint, it continues exactly.
struct DataState {
  Generator::State rng;
  std::int64_t position = 0;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  /// The next training batch.
  virtual Batch next_batch(std::int64_t batch_size) = 0;
  /// Rows [first, first + rows) of the next training batch of `batch_size` (a data-parallel rank's share); the
  /// stream moves on as for the whole batch. By default the whole batch, sliced; tokens reads only these rows.
  virtual Batch next_rows(std::int64_t batch_size, std::int64_t first, std::int64_t rows);
  /// The tokenizer a tokens dataset was encoded with (it travels with the model); nullptr for the others.
  virtual std::shared_ptr<const BpeTokenizer> tokenizer() const { return nullptr; }
  /// The whole validation set, (N, T) inputs and targets.
  const Batch& validation() const { return validation_; }
  std::int64_t vocab_size() const { return vocab_size_; }
  std::int64_t seq_len() const { return seq_len_; }
  /// How a token prints (characters for text, numbers otherwise).
  virtual std::string decode(std::int64_t token) const;
  /// Token ids of a text (text datasets map characters; others parse space-separated integers).
  virtual std::vector<std::int64_t> encode(const std::string& text) const;
  /// The text vocabulary as UTF-8 (one character per id), or "" for token datasets.
  virtual std::string vocab() const { return ""; }
  /// A hash of the examples a file dataset read (jsonl), so a resumed run can tell that its data changed; "" for
  /// generated tasks (the config makes them) and text (whose vocabulary is compared instead).
  virtual std::string fingerprint() const { return ""; }
  DataState state() const { return {rng_.state(), position_}; }
  /// Restores a state read from a checkpoint; throws qkv::Error when its position is negative or so large that
  /// position x seq_len would overflow (a crafted file must not index outside the data).
  void set_state(const DataState& s);

 protected:
  Dataset(std::uint64_t seed, std::int64_t vocab_size, std::int64_t seq_len);
  Generator rng_;              ///< the training stream
  std::int64_t position_ = 0;  ///< file datasets: the next example when not shuffling
  Batch validation_;
  std::int64_t vocab_size_, seq_len_;
};

/// A character vocabulary: id i is the i-th character of `chars` (UTF-8, sorted, distinct), as text datasets
/// build it and exported text models store it ("qkv.vocab").
class CharVocab {
 public:
  CharVocab() = default;
  explicit CharVocab(const std::string& chars);
  /// From any text: its distinct characters, sorted.
  static CharVocab from_text(const std::string& text, const std::string& source);
  std::int64_t size() const { return static_cast<std::int64_t>(chars_.size()); }
  /// Ids of each character; throws naming a character outside the vocabulary.
  std::vector<std::int64_t> encode(const std::string& text) const;
  std::string decode(std::int64_t id) const;
  /// The characters as one UTF-8 string.
  std::string str() const;

 private:
  std::vector<char32_t> chars_;
};

/// Space-separated integer token ids, each checked against [0, vocab_size).
std::vector<std::int64_t> encode_token_ids(const std::string& text, std::int64_t vocab_size);

/// The dataset `options.task` names; throws qkv::Error naming the config key or the file and line at fault.
std::unique_ptr<Dataset> make_dataset(const DataOptions& options, std::uint64_t seed);
/// Throws what make_dataset would for input that is not there (a missing file or shard folder), without reading the
/// data: what a run checks before it makes its run directory.
void check_data_input(const DataOptions& options);
/// The rules a task makes of its options before reading or generating anything (recall: enough distinct keys
/// for its pairs); make_dataset and configs ask it. Throws qkv::Error naming the keys.
void check_data_options(const DataOptions& options);
/// The tasks make_dataset knows (its registry): copy, reverse, sort, recall (generated), text, jsonl (files).
std::vector<std::string> task_names();

/// One example of a generated task, for tests and demos: fills x (T) and y (T) from `gen`.
void generate_example(const std::string& task, std::int64_t vocab_size, std::int64_t seq_len, Generator& gen,
                      std::int64_t* x, std::int64_t* y);

}  // namespace qkv
