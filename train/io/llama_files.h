#pragma once
// Hugging Face folders of the Llama family (docs/export.md#llama-family-folders): config.json of LlamaForCausalLM,
// Qwen2ForCausalLM or MistralForCausalLM, model.safetensors or model.safetensors.index.json with its shards
// (float32, bfloat16 or float16), generation_config.json where present. Read into a model.kind = "llama" model
// and written back. The tensor names are the model's own (model.layers.0.self_attn.q_proj.weight).
#include <qkv/datasets/bpe.h>
#include <qkv/layers/models.h>
#include <qkv/layers/save.h>

#include <memory>
#include <string>
#include <vector>

namespace qkv {

/// A llama-family folder read from outside.
struct LlamaCheckpoint {
  ModelConfig config;
  SafetensorsFile weights;  ///< exactly the model's tensors, float32
  std::shared_ptr<const BpeTokenizer> tokenizer;  ///< tokenizer.json beside it, or null
  std::string weights_path;       ///< model.safetensors or the index
  std::string generation_config;  ///< generation_config.json's text, or ""
};

/// True when `path` is a folder whose config.json names a llama-family model_type (llama, qwen2, mistral).
bool is_llama_folder(const std::string& path);

/// config.json as a llama ModelConfig: every key qkv honours read, the ones that change nothing qkv computes
/// (ids, dtype, versions, initializer_range, use_cache) skipped, and any other key an error naming the file and the
/// key, as are contradictions (heads not dividing the width, kv_heads not dividing heads, a rope_scaling type qkv
/// lacks, a sliding window, an activation other than silu).
ModelConfig read_llama_config(const std::string& config_json);

/// Reads the folder: config, weights (one file or shards; every tensor the model has, once, and nothing else but
/// Hugging Face's rotary inv_freq buffers), tokenizer.json (no more tokens than embedding rows),
/// generation_config.json.
LlamaCheckpoint read_llama_folder(const std::string& dir);

/// The shard size write_hf_llama starts a new shard above (Hugging Face's save_pretrained default, 5 GB).
inline constexpr std::int64_t kDefaultShardBytes = 5'000'000'000;

/// Writes `model` (kind llama) as a Hugging Face folder that LlamaForCausalLM.from_pretrained (Qwen2's, Mistral's:
/// model.arch) loads: config.json, model.safetensors (or, above max_shard_bytes, model-0000i-of-0000n.safetensors
/// and model.safetensors.index.json), generation_config.json (the one read with the model, when it came from a
/// folder) and, with a tokenizer, tokenizer.json (+ vocab.json, merges.txt) and tokenizer_config.json. Returns the
/// names of other models' files removed from `dir`.
std::vector<std::string> write_hf_llama(const LanguageModel& model, const BpeTokenizer* tokenizer, const std::string& dir,
                                        StorageType storage = StorageType::F32,
                                        const std::string& generation_config = "",
                                        std::int64_t max_shard_bytes = kDefaultShardBytes);

}  // namespace qkv
