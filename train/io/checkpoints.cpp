#include "qkv/train/io/checkpoints.h"

#include <qkv/train/io/gpt2_files.h>
#include <qkv/train/io/llama_files.h>

#include <fmt/ranges.h>

namespace qkv {
namespace {

FieldCheckpoint read_gpt2(const std::string& path, std::int64_t heads) {
  GPT2Checkpoint ck = read_gpt2_checkpoint(path, heads);
  return {std::move(ck.config), std::move(ck.weights), std::move(ck.tokenizer), std::move(ck.weights_path), ""};
}

FieldCheckpoint read_llama(const std::string& path, std::int64_t) {
  LlamaCheckpoint ck = read_llama_folder(path);
  return {std::move(ck.config), std::move(ck.weights), std::move(ck.tokenizer), std::move(ck.weights_path),
          std::move(ck.generation_config)};
}

// Llama first: GPT-2's rule takes any folder with a config.json.
const std::vector<CheckpointFormat>& formats() {
  static const std::vector<CheckpointFormat> all = {
      {"llama", "llama", is_llama_folder, read_llama,
       [](const LanguageModel& m, const BpeTokenizer* tok, const std::string& dir, StorageType st, const std::string& gen) {
         return write_hf_llama(m, tok, dir, st, gen);
       }},
      {"gpt2", "gpt2", is_gpt2_checkpoint, read_gpt2,
       [](const LanguageModel& m, const BpeTokenizer* tok, const std::string& dir, StorageType st, const std::string&) {
         return write_hf_gpt2(m, tok, dir, st);
       }},
  };
  return all;
}

}  // namespace

const CheckpointFormat* checkpoint_format(const std::string& path) {
  for (const CheckpointFormat& f : formats())
    if (f.claims(path)) return &f;
  return nullptr;
}

FieldCheckpoint read_field_checkpoint(const std::string& path, std::int64_t heads) {
  const CheckpointFormat* f = checkpoint_format(path);
  QKV_CHECK(f != nullptr, "{}: not a checkpoint qkv reads (a Hugging Face GPT-2 or llama-family folder, a nanoGPT file)",
            path);
  return f->read(path, heads);
}

const CheckpointFormat& hf_format_of_kind(const std::string& kind) {
  std::vector<std::string> kinds;
  for (const CheckpointFormat& f : formats()) {
    if (f.kind == kind) return f;
    kinds.push_back(f.kind);
  }
  fail("export --format hf: the model is of kind \"{}\"; Hugging Face folders hold models of kind {}", kind,
       fmt::join(kinds, " or "));
}

}  // namespace qkv
