#include "qkv/train/io/gpt2_files.h"

#include <fmt/ranges.h>
#include <qkv/core/ops.h>
#include <qkv/datasets/tokenizer_json.h>
#include <qkv/train/io/files.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace qkv {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kPrefix = "transformer.";

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const std::string& e) {
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

/// The weights Hugging Face's Conv1D stores (in, out): every projection inside a block.
bool is_conv1d_weight(const std::string& name) {
  return ends_with(name, ".attn.c_attn.weight") || ends_with(name, ".attn.c_proj.weight") ||
         ends_with(name, ".mlp.c_fc.weight") || ends_with(name, ".mlp.c_proj.weight");
}

/// Hugging Face's attention buffers (the causal mask, masked_bias) and nanoGPT's mask: not weights.
bool is_buffer(const std::string& name) {
  return ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias");
}

/// What config.json says (Hugging Face's GPT2Config keys, or nanoGPT's GPTConfig names).
struct SizesFromConfig {
  ModelConfig model;
  bool has_bias = false;  ///< the file said whether there are biases (nanoGPT's "bias")
  bool has_activation = false;  ///< the file named its activation (Hugging Face's activation_function)
};

std::int64_t int_key(const json& j, const std::string& file, std::initializer_list<const char*> names, double max) {
  for (const char* k : names) {
    if (!j.contains(k)) continue;
    const json& v = j[k];
    QKV_CHECK(v.is_number_integer() && v.get<double>() >= 1 && v.get<double>() <= max,
              "{}: \"{}\" must be a whole number from 1 to {}, got {}", file, k, max, v.dump());
    return v.get<std::int64_t>();
  }
  fail("{}: has no \"{}\" (the GPT-2 config needs it)", file, *names.begin());
}

bool bool_key(const json& j, const std::string& file, const char* k, bool fallback) {
  if (!j.contains(k) || j[k].is_null()) return fallback;
  QKV_CHECK(j[k].is_boolean(), "{}: \"{}\" must be true or false, got {}", file, k, j[k].dump());
  return j[k].get<bool>();
}

/// Refuses what qkv's GPT-2 cannot compute the same way, naming the key.
void check_unsupported(const json& j, const std::string& file, std::int64_t d) {
  if (j.contains("model_type"))
    QKV_CHECK(j["model_type"] == "gpt2", "{}: \"model_type\" is {}; qkv reads GPT-2 models only (\"gpt2\")", file,
              j["model_type"].dump());
  QKV_CHECK(!j.contains("activation_function") || j["activation_function"].is_string(),
            "{}: \"activation_function\" must be a string, got {}", file, j.value("activation_function", json()).dump());
  const std::string act = j.value("activation_function", std::string("gelu_new"));
  QKV_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu",
            "{}: \"activation_function\" = \"{}\" is not supported: qkv's GPT-2 has the tanh GELU (\"gelu_new\", "
            "\"gelu_pytorch_tanh\") and the exact one (\"gelu\")", file, act);
  (void)d;
  for (const char* k : {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"})
    QKV_CHECK(!bool_key(j, file, k, false), "{}: \"{}\" = true is not supported by qkv's GPT-2", file, k);
  QKV_CHECK(bool_key(j, file, "scale_attn_weights", true),
            "{}: \"scale_attn_weights\" = false is not supported: qkv scales scores by 1/sqrt(head width)", file);
}

SizesFromConfig read_config_json(const std::string& file) {
  const json j = json::parse(read_file_bytes(file, "config.json", 1 << 20), nullptr, false);
  QKV_CHECK(!j.is_discarded() && j.is_object(), "{}: is not a JSON object", file);
  SizesFromConfig s;
  ModelConfig& m = s.model;
  m.kind = "gpt2";
  m.causal = true;
  m.d_model = int_key(j, file, {"n_embd"}, 1e5);
  m.heads = int_key(j, file, {"n_head"}, 1e4);
  m.layers = int_key(j, file, {"n_layer"}, 1e4);
  m.seq_len = int_key(j, file, {"n_positions", "block_size"}, 1e6);
  m.vocab_size = int_key(j, file, {"vocab_size"}, 2e6);
  if (j.contains("layer_norm_epsilon")) {
    const json& e = j["layer_norm_epsilon"];
    QKV_CHECK(e.is_number() && e.get<double>() > 0 && e.get<double>() <= 1,
              "{}: \"layer_norm_epsilon\" must be a number in (0, 1], got {}", file, e.dump());
    m.norm_eps = e.get<double>();
  }
  check_unsupported(j, file, m.d_model);
  s.has_activation = j.contains("activation_function");
  m.options["activation"] = std::string(j.value("activation_function", "") == "gelu" ? "gelu" : "gelu_new");
  if (j.contains("n_inner") && !j["n_inner"].is_null()) {  // GPT2Config's MLP width (null: 4 * n_embd)
    const std::int64_t inner = int_key(j, file, {"n_inner"}, 1e6);
    m.d_ff = inner == 4 * m.d_model ? 0 : inner;
  }
  m.tie_embeddings = bool_key(j, file, "tie_word_embeddings", true);
  s.has_bias = j.contains("bias");
  m.bias = bool_key(j, file, "bias", true);
  try {
    check_model_config(m);
  } catch (const Error& e) {
    fail("{}: {}", file, e.what());
  }
  return s;
}

/// The tensors a GPT-2 of `m` has, in qkv's names and shapes (nn.Linear layout).
std::vector<std::pair<std::string, Shape>> expected_tensors(const ModelConfig& m) {
  const std::int64_t d = m.d_model, dff = m.d_ff ? m.d_ff : 4 * d;
  std::vector<std::pair<std::string, Shape>> t = {{"transformer.wte.weight", {m.vocab_size, d}},
                                                  {"transformer.wpe.weight", {m.seq_len, d}}};
  const auto add = [&](const std::string& name, Shape w, std::int64_t bias) {
    t.emplace_back(name + ".weight", w);
    if (m.bias) t.emplace_back(name + ".bias", Shape{bias});
  };
  for (std::int64_t i = 0; i < m.layers; ++i) {
    const std::string b = fmt::format("transformer.h.{}.", i);
    add(b + "ln_1", {d}, d);
    add(b + "attn.c_attn", {3 * d, d}, 3 * d);
    add(b + "attn.c_proj", {d, d}, d);
    add(b + "ln_2", {d}, d);
    add(b + "mlp.c_fc", {dff, d}, dff);
    add(b + "mlp.c_proj", {d, dff}, d);
  }
  add("transformer.ln_f", {d}, d);
  if (!m.tie_embeddings) t.emplace_back("lm_head.weight", Shape{m.vocab_size, d});
  return t;
}

/// The file's tensors under qkv's names: "transformer." added where Hugging Face's GPT2Model left it off,
/// buffers dropped; refuses a file that spells some names one way and some the other.
std::vector<std::pair<std::string, Tensor>> qkv_names(const SafetensorsFile& f, const std::string& path) {
  std::vector<std::string> with, without;
  for (const auto& [name, t] : f.tensors)
    if (name != "lm_head.weight") (starts_with(name, kPrefix) ? with : without).push_back(name);
  QKV_CHECK(with.empty() || without.empty(),
            "{}: mixes two naming conventions: {} names start with \"transformer.\" (such as {}) and {} do not (such "
            "as {})",
            path, with.size(), with.front(), without.size(), without.front());
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : f.tensors)
    if (!is_buffer(name)) out.emplace_back(name == "lm_head.weight" || !with.empty() ? name : kPrefix + name, t);
  return out;
}

/// Hugging Face's Conv1D or nanoGPT's nn.Linear, from block 0's c_attn weight (d, 3d) or (3d, d).
GPT2Layout detect_layout(const std::vector<std::pair<std::string, Tensor>>& named, std::int64_t d,
                         const std::string& path) {
  for (const auto& [name, t] : named)
    if (name == "transformer.h.0.attn.c_attn.weight") {
      if (t.shape() == Shape{d, 3 * d}) return GPT2Layout::huggingface;
      if (t.shape() == Shape{3 * d, d}) return GPT2Layout::nanogpt;
      fail("{}: h.0.attn.c_attn.weight is {}: neither Hugging Face's Conv1D [{}, {}] nor nanoGPT's Linear [{}, {}]",
           path, t.shape().str(), d, 3 * d, 3 * d, d);
    }
  fail("{}: has no h.0.attn.c_attn.weight: not a GPT-2 checkpoint", path);
}

/// Sizes from the tensors alone (no config.json): V and d from wte, positions from wpe, the blocks counted
/// (read_block0 adds the biases and the MLP width, settle_head the head).
ModelConfig sizes_from_tensors(const std::vector<std::pair<std::string, Tensor>>& named, std::int64_t heads,
                               const std::string& path) {
  ModelConfig m;
  m.kind = "gpt2";
  m.causal = true;
  m.heads = heads;
  m.options["activation"] = std::string("gelu_new");
  std::set<std::string> blocks;
  for (const auto& [name, t] : named) {
    if (name == "transformer.wte.weight" && t.dim() == 2) m.vocab_size = t.size(0), m.d_model = t.size(1);
    if (name == "transformer.wpe.weight" && t.dim() == 1 + 1) m.seq_len = t.size(0);
    if (starts_with(name, "transformer.h.")) blocks.insert(name.substr(14, name.find('.', 14) - 14));
  }
  QKV_CHECK(m.vocab_size > 0 && m.seq_len > 0, "{}: has no transformer.wte.weight and wpe.weight of 2 dims", path);
  m.layers = static_cast<std::int64_t>(blocks.size());
  QKV_CHECK(heads > 0,
            "{}: no config.json beside it says how many heads the model has (n_head): put one there, "
            "such as {{\"n_head\": 12}}, or name the file as model.init with model.heads set",
            path);
  return m;
}

}  // namespace

namespace {

/// The head: a lm_head.weight equal to wte is the tied head written out (dropped); one that differs is an untied
/// head, which config.json must not contradict.
void settle_head(std::vector<std::pair<std::string, Tensor>>& named, ModelConfig& m, bool config_says,
                 const std::string& path) {
  Tensor wte, head;
  for (const auto& [name, t] : named) {
    if (name == "transformer.wte.weight") wte = t;
    if (name == "lm_head.weight") head = t;
  }
  if (!head.defined()) return;
  if (wte.defined() && head.shape() == wte.shape() && head.dtype() == wte.dtype() &&
      std::memcmp(head.raw_data(), wte.raw_data(), static_cast<std::size_t>(head.numel()) * itemsize(head.dtype())) == 0) {
    std::erase_if(named, [](const auto& nt) { return nt.first == "lm_head.weight"; });
    return;
  }
  QKV_CHECK(!config_says || !m.tie_embeddings,
            "{}: lm_head.weight differs from wte.weight, but config.json ties them (tie_word_embeddings)", path);
  m.tie_embeddings = false;
}

/// config.json says "bias": false (nanoGPT's key, which qkv's export writes) over a file with biases: Hugging
/// Face's GPT-2 always has them, so a bias-free model goes out with zeros. Zeros are dropped; anything else is an
/// error.
void drop_zero_biases(std::vector<std::pair<std::string, Tensor>>& named, const std::string& path) {
  for (const auto& [name, t] : named)
    if (const auto v = ends_with(name, ".bias") ? t.to_vector() : std::vector<double>{}; !v.empty())
      QKV_CHECK(std::all_of(v.begin(), v.end(), [](double x) { return x == 0; }),
                "{}: config.json says \"bias\": false, but {} is not zero", path, name);
  std::erase_if(named, [](const auto& nt) { return ends_with(nt.first, ".bias"); });
}

/// Every expected tensor present with its shape and nothing else: one error listing what is missing, extra or
/// of the wrong shape.
void check_tensors(const std::vector<std::pair<std::string, Tensor>>& named, const ModelConfig& m, GPT2Layout layout,
                   const std::string& path) {
  std::map<std::string, Shape> want;
  for (const auto& [name, shape] : expected_tensors(m)) want[name] = shape;
  std::vector<std::string> missing, extra, wrong;
  std::set<std::string> seen;
  for (const auto& [name, t] : named) {
    seen.insert(name);
    const auto it = want.find(name);
    if (it == want.end()) {
      extra.push_back(name);
      continue;
    }
    Shape expect = it->second;
    if (layout == GPT2Layout::huggingface && is_conv1d_weight(name)) expect = Shape{expect[1], expect[0]};
    if (t.shape() != expect) wrong.push_back(fmt::format("{} is {}, expected {}", name, t.shape().str(), expect.str()));
  }
  for (const auto& [name, shape] : want)
    if (!seen.count(name)) missing.push_back(name);
  if (missing.empty() && extra.empty() && wrong.empty()) return;
  std::string msg = fmt::format(
      "{}: is not the GPT-2 its sizes describe (n_embd {}, n_layer {}, vocab {}, {} "
      "positions, {}, {} layout):",
      path, m.d_model, m.layers, m.vocab_size, m.seq_len, m.bias ? "with biases" : "no biases",
      layout == GPT2Layout::huggingface ? "Hugging Face Conv1D" : "nanoGPT Linear");
  const auto list = [&](const char* what, const std::vector<std::string>& names) {
    if (names.empty()) return;
    msg += fmt::format(" {} {}: {}{};", names.size(), what,
                       fmt::join(names.begin(), names.begin() + std::min<std::size_t>(names.size(), 8), ", "),
                       names.size() > 8 ? ", ..." : "");
  };
  list("missing", missing);
  list("unexpected", extra);
  list("of the wrong shape", wrong);
  msg.pop_back();
  fail("{}", msg);
}

ModelConfig with_biases(ModelConfig m) {
  m.bias = true;
  return m;
}

/// Where the weights of `path` are, refusing a sharded checkpoint and a folder without config.json.
std::string weights_file(const fs::path& p) {
  if (!fs::is_directory(p)) return p.string();
  QKV_CHECK(!fs::exists(p / "model.safetensors.index.json"),
            "{}: model.safetensors.index.json: sharded checkpoints are not supported; save the model as one "
            "model.safetensors (save_pretrained(dir, max_shard_size=\"100GB\"))",
            p.string());
  QKV_CHECK(fs::exists(p / "config.json"), "{}: a Hugging Face GPT-2 folder needs config.json", p.string());
  QKV_CHECK(fs::exists(p / "model.safetensors"),
            "{}: has config.json but no model.safetensors (qkv reads safetensors, not pytorch_model.bin: save with "
            "save_pretrained(dir, safe_serialization=True))",
            p.string());
  return (p / "model.safetensors").string();
}

/// GPT2Config for `m`: what Hugging Face's from_pretrained reads (eos: <|endoftext|>'s id, or null).
json hf_config(const ModelConfig& m, const json& eos, StorageType storage) {
  return {{"architectures", {"GPT2LMHeadModel"}},
          {"model_type", "gpt2"},
          {"vocab_size", m.vocab_size},
          {"n_positions", m.seq_len},
          {"n_ctx", m.seq_len},
          {"n_embd", m.d_model},
          {"n_layer", m.layers},
          {"n_head", m.heads},
          {"n_inner", m.d_ff == 0 || m.d_ff == 4 * m.d_model ? json(nullptr) : json(m.d_ff)},
          {"activation_function", m.option<std::string>("activation")},
          {"layer_norm_epsilon", m.norm_eps},
          {"resid_pdrop", m.dropout},
          {"embd_pdrop", m.dropout},
          {"attn_pdrop", 0.0},
          {"initializer_range", 0.02},
          {"scale_attn_weights", true},
          {"scale_attn_by_inverse_layer_idx", false},
          {"reorder_and_upcast_attn", false},
          {"tie_word_embeddings", m.tie_embeddings},
          {"bias", m.bias},  // nanoGPT's key (Hugging Face keeps it as an attribute): false reads back bias-free
          {"use_cache", true},
          {"bos_token_id", eos},
          {"eos_token_id", eos},
          {"torch_dtype", storage == StorageType::F32    ? "float32"
                          : storage == StorageType::BF16 ? "bfloat16"
                                                         : "float16"}};
}

/// What block 0 shows that config.json may not say: the biases (unless its "bias" says, when zero biases are
/// dropped) and, without a config, the MLP width.
void read_block0(std::vector<std::pair<std::string, Tensor>>& named, ModelConfig& m, GPT2Layout layout,
                 const std::optional<SizesFromConfig>& cfg, const std::string& path) {
  bool biases = false;
  for (const auto& [name, t] : named) {
    if (name == "transformer.h.0.attn.c_attn.bias") biases = true;
    if (!cfg && name == "transformer.h.0.mlp.c_fc.weight" && t.dim() == 2) {
      const std::int64_t dff = layout == GPT2Layout::huggingface ? t.size(1) : t.size(0);
      m.d_ff = dff == 4 * m.d_model ? 0 : dff;
    }
  }
  if (!cfg || !cfg->has_bias) m.bias = biases;
  if (cfg && cfg->has_bias && !m.bias) drop_zero_biases(named, path);
}

}  // namespace

bool is_gpt2_checkpoint(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (fs::is_directory(p, ec))
    return !fs::exists(p / "config.toml", ec) &&
           (fs::exists(p / "config.json", ec) || fs::exists(p / "model.safetensors.index.json", ec));
  if (!fs::is_regular_file(p, ec)) return false;
  // only the header: an 8-byte length, then JSON whose names (wte.weight) and metadata (no qkv.model) tell
  std::ifstream in(path, std::ios::binary);
  unsigned char len[8] = {};
  if (!in.read(reinterpret_cast<char*>(len), 8)) return false;
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | len[i];
  if (n == 0 || n > (100u << 20)) return false;
  std::string header(n, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(n))) return false;
  const json j = json::parse(header, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  if (j.contains("__metadata__") && j["__metadata__"].is_object() && j["__metadata__"].contains("qkv.model"))
    return false;
  return j.contains("wte.weight") || j.contains("transformer.wte.weight");
}

GPT2Checkpoint read_gpt2_checkpoint(const std::string& path, std::int64_t heads) {
  GPT2Checkpoint ck;
  const fs::path p(path);
  ck.weights_path = weights_file(p);
  const fs::path folder = fs::is_directory(p) ? p : p.parent_path();
  std::optional<SizesFromConfig> cfg;
  if (fs::exists(folder / "config.json")) cfg = read_config_json((folder / "config.json").string());
  QKV_CHECK(fs::exists(folder / "tokenizer.json") || fs::exists(folder / "vocab.json") == fs::exists(folder / "merges.txt"),
            "{}: the folder has {} but not {}: a tokenizer needs both (or neither, for weights alone)", folder.string(),
            fs::exists(folder / "vocab.json") ? "vocab.json" : "merges.txt",
            fs::exists(folder / "vocab.json") ? "merges.txt" : "vocab.json");
  if (fs::exists(folder / "tokenizer.json") || (fs::exists(folder / "vocab.json") && fs::exists(folder / "merges.txt"))) {
    ck.tokenizer = std::make_shared<BpeTokenizer>(load_tokenizer(folder.string()));  // tokenizer.json first
    QKV_CHECK(!cfg || ck.tokenizer->vocab_size() <= cfg->model.vocab_size,
              "{}: the tokenizer (vocab.json, merges.txt) has {} tokens but config.json says vocab_size = {} (the "
              "embedding may have more rows than the tokenizer has tokens, as nanoGPT's 50304, never fewer)",
              folder.string(), ck.tokenizer->vocab_size(), cfg->model.vocab_size);
  }
  const SafetensorsFile f = read_safetensors(ck.weights_path);
  auto named = qkv_names(f, ck.weights_path);
  ModelConfig m = cfg ? cfg->model : sizes_from_tensors(named, heads, ck.weights_path);
  ck.layout = detect_layout(named, m.d_model, ck.weights_path);
  // nanoGPT's model.py has the exact GELU (nn.GELU()); a file in its layout that does not name one has it
  if (ck.layout == GPT2Layout::nanogpt && !(cfg && cfg->has_activation)) m.options["activation"] = std::string("gelu");
  read_block0(named, m, ck.layout, cfg, ck.weights_path);
  settle_head(named, m, cfg.has_value(), ck.weights_path);
  try {
    check_model_config(m);
  } catch (const Error& e) {
    fail("{}: {}", ck.weights_path, e.what());
  }
  check_tensors(named, m, ck.layout, ck.weights_path);
  QKV_CHECK(!ck.tokenizer || ck.tokenizer->vocab_size() <= m.vocab_size,
            "{}: the tokenizer (vocab.json, merges.txt) has {} tokens but the model's embedding has only {} rows",
            folder.string(), ck.tokenizer->vocab_size(), m.vocab_size);
  for (auto& [name, t] : named)
    if (ck.layout == GPT2Layout::huggingface && is_conv1d_weight(name)) t = transpose(t, 0, 1);
  ck.config = m;
  ck.weights.tensors = std::move(named);
  return ck;
}

std::vector<std::string> write_hf_gpt2(const LanguageModel& model, const BpeTokenizer* tokenizer, const std::string& dir,
                   StorageType storage) {
  const ModelConfig& m = model.config();
  QKV_CHECK(m.kind == "gpt2",
            "export --format hf: the model is of kind \"{}\"; Hugging Face's GPT-2 format holds "
            "model.kind = \"gpt2\" models",
            m.kind);
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : model.named_parameters()) {
    const Tensor w = t.to(kFloat32);
    out.emplace_back(name, is_conv1d_weight(name) ? transpose(w, 0, 1) : w);
  }
  if (!m.bias)  // Hugging Face's GPT-2 always has biases: zeros are the same function
    for (const auto& [name, shape] : expected_tensors(with_biases(m)))
      if (ends_with(name, ".bias")) out.emplace_back(name, Tensor::zeros(shape));
  fs::create_directories(dir);
  const int eot = tokenizer ? tokenizer->eot() : -1;
  const json eos = eot >= 0 ? json(eot) : json(nullptr);
  write_safetensors((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}}, storage);
  write_file_atomic((fs::path(dir) / "config.json").string(), hf_config(m, eos, storage).dump(2) + "\n");
  const json generation = {{"bos_token_id", eos}, {"eos_token_id", eos}};
  write_file_atomic((fs::path(dir) / "generation_config.json").string(), generation.dump(2) + "\n");
  if (tokenizer) tokenizer->save(dir);
  return remove_other_model_files(dir, tokenizer != nullptr);
}

}  // namespace qkv
