#pragma once
// Using a trained model: one rebuilt from a run directory or a model file, and its tokens as text.
#include <qkv/datasets/bpe.h>
#include <qkv/datasets/dataset.h>
#include <qkv/layers/models.h>
#include <qkv/train/run/config.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace qkv {

/// A model rebuilt from a run directory (its model.safetensors and config.toml) or from a weight file alone.
struct TrainedModel {
  std::shared_ptr<LanguageModel> model;
  std::map<std::string, std::string> metadata;
  Config config;      ///< the run's config (data section from the file's "qkv.data" when there is no run dir)
  CharVocab vocab;    ///< character models: one character per id (empty for the others)
  std::shared_ptr<const BpeTokenizer> tokenizer;  ///< models trained on tokens: their tokenizer ("qkv.tokenizer.*")
  /// Reads and writes text: characters, or a tokenizer's tokens.
  bool text() const { return vocab.size() > 0 || tokenizer != nullptr; }
  /// The ids a prediction or a sample may be: the tokenizer's (an embedding padded beyond it, as nanoGPT's 50304
  /// rows for GPT-2's 50257 tokens, never yields the padding ids), else every row of the model's vocabulary.
  std::int64_t usable_vocab() const;
  std::string path;   ///< the weight file read
  bool data_from_metadata = false;  ///< the data section came from the file's "qkv.data", not a run's config.toml

  /// Token ids of a command's text: the tokenizer's tokens (special tokens allowed), characters for character
  /// models, space-separated ids otherwise or when `raw_ids` (`what` names the option in errors; no tokens is an
  /// error).
  std::vector<std::int64_t> parse_tokens(const std::string& text, const char* what, bool raw_ids = false) const;
  /// The run's data (its validation set): for a model trained on tokens, the shard folder must have been made
  /// with the model's tokenizer (an error naming both hashes otherwise).
  std::unique_ptr<Dataset> data() const;
  /// A token as text: its bytes (tokenizer) or character, or its id for models without text.
  std::string token_text(std::int64_t id) const;
  /// A display label for pictures and tables: token_text with blanks shown as '␣', newlines as '⏎' and bytes
  /// that are part of a character as U+FFFD.
  std::string token_label(std::int64_t id) const;
};
/// Loads a run directory (its model.safetensors, else its newest checkpoint's weights) or a model file, checking
/// the metadata against the tensors before building anything (check_model_file).
TrainedModel load_trained(const std::string& run_dir_or_file);

/// ids as a (1, T) int64 tensor.
Tensor ids_tensor(const std::vector<std::int64_t>& ids);
/// Refuses outputs that are not finite (finite but huge weights can overflow the activations): `what` is the
/// command, `path` the model file.
void check_finite_output(const Tensor& t, const char* what, const std::string& path);

}  // namespace qkv
