#pragma once
// GPT-2 checkpoints of the field (docs/export.md#gpt-2-checkpoints): a Hugging Face folder (config.json,
// model.safetensors with Conv1D weights stored (in, out), vocab.json, merges.txt) or a nanoGPT state dict in a
// safetensors file (nn.Linear weights (out, in)), read into a model.kind = "gpt2" model and written back.
#include <qkv/datasets/bpe.h>
#include <qkv/layers/models.h>
#include <qkv/layers/save.h>
#include <qkv/train/io/files.h>  // remove_other_model_files

#include <memory>
#include <optional>
#include <string>

namespace qkv {

/// How a file lays out GPT-2's weights.
enum class GPT2Layout {
  huggingface,  ///< Conv1D: c_attn, c_proj and c_fc weights stored (in, out)
  nanogpt,      ///< nn.Linear: (out, in), as qkv's own gpt2 models
};

/// A GPT-2 checkpoint read from outside, in qkv's names (transformer.h.0.attn.c_attn.weight) and layout.
struct GPT2Checkpoint {
  ModelConfig config;
  SafetensorsFile weights;                        ///< qkv names and layout, float32, exactly the model's tensors
  std::shared_ptr<const BpeTokenizer> tokenizer;  ///< vocab.json + merges.txt beside it, when both are there
  GPT2Layout layout = GPT2Layout::huggingface;
  std::string weights_path;                       ///< the safetensors file read
};

/// True when `path` is a GPT-2 checkpoint of the field rather than a qkv model file or run: a folder with
/// config.json and no config.toml, or a .safetensors file without qkv's "qkv.model" metadata.
bool is_gpt2_checkpoint(const std::string& path);

/// Reads a Hugging Face folder or a safetensors file of either layout (detected from the names and shapes; a
/// file that mixes naming conventions or layouts, or misses or adds tensors, is an error listing them). The sizes
/// come from config.json (in the folder, or beside the file: Hugging Face's keys or nanoGPT's GPTConfig names);
/// without one, from the tensors' shapes and `heads` (0: none known, an error). The GELU is the one config.json
/// names (activation_function: gelu_new or gelu), else nanoGPT's exact one for its layout and GPT-2's tanh one for
/// Hugging Face's; n_inner sets the MLP width. The embedding may have more rows than the tokenizer has tokens
/// (nanoGPT pads 50257 to 50304). Anything qkv cannot honour (another activation,
/// scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn, a sharded checkpoint) is an error naming the file and
/// key, raised before any tensor is read.
GPT2Checkpoint read_gpt2_checkpoint(const std::string& path, std::int64_t heads = 0);

/// Writes `model` (kind gpt2) as a Hugging Face folder: config.json, model.safetensors (Hugging Face's names and
/// Conv1D layout, `storage` f32/f16/bf16, metadata format "pt"), generation_config.json and, with a tokenizer,
/// vocab.json + merges.txt. A model without biases (model.bias = false) is written with zero biases, which is the
/// same function. Each file is written atomically; `dir` is created.
std::vector<std::string> write_hf_gpt2(const LanguageModel& model, const BpeTokenizer* tokenizer, const std::string& dir,
                   StorageType storage = StorageType::F32);

}  // namespace qkv
