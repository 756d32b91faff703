#pragma once
// Checkpoints of the field, whichever format: the registry of the readers and writers of train/io (GPT-2 folders
// and nanoGPT files, llama-family folders). Commands ask here; a new format is its own files plus one entry.
#include <qkv/datasets/bpe.h>
#include <qkv/layers/models.h>
#include <qkv/layers/save.h>

#include <memory>
#include <string>
#include <vector>

namespace qkv {

/// A checkpoint read from outside into a qkv model kind.
struct FieldCheckpoint {
  ModelConfig config;
  SafetensorsFile weights;                        ///< the model's names and layout, float32
  std::shared_ptr<const BpeTokenizer> tokenizer;  ///< the tokenizer beside it, or null
  std::string weights_path;                       ///< the file read (a sharded folder: its index)
  std::string generation_config;                  ///< generation_config.json's text, or ""
};

/// One format of the field.
struct CheckpointFormat {
  std::string name;  ///< "gpt2", "llama"
  std::string kind;  ///< the model kind it reads into and writes
  /// True when `path` is this format's checkpoint (a folder or file, never a qkv model file or run).
  bool (*claims)(const std::string& path) = nullptr;
  /// Reads it; `heads` helps a file without config.json (GPT-2's), 0 when unknown.
  FieldCheckpoint (*read)(const std::string& path, std::int64_t heads) = nullptr;
  /// Writes a Hugging Face folder; returns other models' files it removed from `dir`.
  std::vector<std::string> (*write_hf)(const LanguageModel& model, const BpeTokenizer* tokenizer, const std::string& dir,
                                       StorageType storage, const std::string& generation_config) = nullptr;
};

/// The format claiming `path`, or null (a qkv model file, a run directory, anything else).
const CheckpointFormat* checkpoint_format(const std::string& path);
/// True when some format claims `path`.
inline bool is_field_checkpoint(const std::string& path) { return checkpoint_format(path) != nullptr; }
/// Reads `path` with the format that claims it; throws naming the path when none does.
FieldCheckpoint read_field_checkpoint(const std::string& path, std::int64_t heads = 0);
/// The format that writes Hugging Face folders of model kind `kind`; throws naming the kinds that have one.
const CheckpointFormat& hf_format_of_kind(const std::string& kind);

}  // namespace qkv
