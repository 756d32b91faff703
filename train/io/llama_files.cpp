#include "qkv/train/io/llama_files.h"

#include <qkv/layers/llama.h>
#include <qkv/datasets/tokenizer_json.h>
#include <qkv/train/io/files.h>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <set>

namespace qkv {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr std::size_t kMaxJsonBytes = 64 << 20;

json read_json(const fs::path& p, const char* what) {
  json j = json::parse(read_file_bytes(p.string(), what, kMaxJsonBytes), nullptr, false);
  QKV_CHECK(!j.is_discarded() && j.is_object(), "{}: not a JSON object", p.string());
  return j;
}

std::string model_type_of(const json& j) { return j.contains("model_type") && j["model_type"].is_string() ? j["model_type"].get<std::string>() : ""; }

const std::set<std::string> kFamily = {"llama", "qwen2", "mistral"};
const std::map<std::string, std::string> kArchitecture = {
    {"llama", "LlamaForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}, {"mistral", "MistralForCausalLM"}};

// Keys that change nothing qkv computes: ids (the tokenizer's business), dtypes, versions, init, caching.
const std::set<std::string> kIgnored = {
    "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype", "transformers_version",
    "initializer_range", "use_cache", "_name_or_path", "is_llama_config", "output_attentions",
    "output_hidden_states", "return_dict", "_from_model_config", "tokenizer_class", "_attn_implementation"};

// A reader of config.json's keys that remembers which it read, so the rest can be refused by name.
struct Keys {
  const json& j;
  std::string file;
  std::set<std::string> seen;

  bool has(const char* k) {
    seen.insert(k);
    return j.contains(k) && !j[k].is_null();
  }
  std::int64_t integer(const char* k, double lo, double hi, std::int64_t fallback, bool required = false) {
    if (!has(k)) {
      QKV_CHECK(!required, "{}: has no \"{}\" (a {} config needs it)", file, k, model_type_of(j));
      return fallback;
    }
    const json& v = j[k];
    QKV_CHECK(v.is_number_integer() && v.get<double>() >= lo && v.get<double>() <= hi,
              "{}: \"{}\" must be a whole number from {} to {}, got {}", file, k, lo, hi, v.dump());
    return v.get<std::int64_t>();
  }
  double number(const char* k, double lo, double hi, double fallback) {
    if (!has(k)) return fallback;
    const json& v = j[k];
    QKV_CHECK(v.is_number() && v.get<double>() >= lo && v.get<double>() <= hi,
              "{}: \"{}\" must be a number from {} to {}, got {}", file, k, lo, hi, v.dump());
    return v.get<double>();
  }
  bool boolean(const char* k, bool fallback) {
    if (!has(k)) return fallback;
    QKV_CHECK(j[k].is_boolean(), "{}: \"{}\" must be true or false, got {}", file, k, j[k].dump());
    return j[k].get<bool>();
  }
};

void read_rope_scaling(Keys& keys, ModelConfig& m) {
  if (!keys.has("rope_scaling")) return;
  const json& r = keys.j["rope_scaling"];
  const std::string at = keys.file + ": \"rope_scaling\"";
  QKV_CHECK(r.is_object(), "{} must be an object or null, got {}", at, r.dump());
  const json& type = r.contains("rope_type") ? r["rope_type"] : r.contains("type") ? r["type"] : json();
  QKV_CHECK(type.is_string(), "{} has no \"rope_type\"", at);
  const std::string t = type.get<std::string>();
  if (t == "default") return;
  QKV_CHECK(t == "linear" || t == "llama3",
            "{}: rope_type \"{}\" is not supported (qkv has linear and llama3)", at, t);
  const auto num = [&](const char* k, double fallback, bool required) {
    QKV_CHECK(!required || r.contains(k), "{}: {} scaling needs \"{}\"", at, t, k);
    if (!r.contains(k)) return fallback;
    QKV_CHECK(r[k].is_number() && r[k].get<double>() > 0, "{}: \"{}\" must be a positive number, got {}", at, k,
              r[k].dump());
    return r[k].get<double>();
  };
  m.options["rope_scaling"] = t;
  m.options["rope_factor"] = num("factor", 1.0, true);
  if (t == "llama3") {
    m.options["rope_low_freq_factor"] = num("low_freq_factor", 1.0, true);
    m.options["rope_high_freq_factor"] = num("high_freq_factor", 4.0, true);
    const double orig = num("original_max_position_embeddings", 8192, true);
    QKV_CHECK(orig == double(std::int64_t(orig)) && orig <= 1e9,
              "{}: \"original_max_position_embeddings\" must be a whole number, got {}", at, orig);
    m.options["rope_original_positions"] = std::int64_t(orig);
  }
  for (const auto& [k, v] : r.items())
    QKV_CHECK(k == "rope_type" || k == "type" || k == "factor" || k == "low_freq_factor" || k == "high_freq_factor" ||
                  k == "original_max_position_embeddings",
              "{}: key \"{}\" is not one qkv reads for {} scaling", at, k, t);
}

// Each tensor the llama config's model has, with its shape.
std::vector<std::pair<std::string, Shape>> expected_tensors(const ModelConfig& m) {
  const LlamaBlockOptions o = llama_block_options(m);
  const std::int64_t d = m.d_model, q = o.attention.heads * o.attention.head_dim,
                     kv = o.attention.kv_heads * o.attention.head_dim;
  std::vector<std::pair<std::string, Shape>> out = {{"model.embed_tokens.weight", {m.vocab_size, d}}};
  for (std::int64_t i = 0; i < m.layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    const auto linear = [&](const std::string& name, std::int64_t in, std::int64_t outw, bool bias) {
      out.push_back({p + name + ".weight", {outw, in}});
      if (bias) out.push_back({p + name + ".bias", {outw}});
    };
    out.push_back({p + "input_layernorm.weight", {d}});
    linear("self_attn.q_proj", d, q, o.attention.qkv_bias);
    linear("self_attn.k_proj", d, kv, o.attention.qkv_bias);
    linear("self_attn.v_proj", d, kv, o.attention.qkv_bias);
    linear("self_attn.o_proj", q, d, o.attention.o_bias);
    out.push_back({p + "post_attention_layernorm.weight", {d}});
    linear("mlp.gate_proj", d, o.d_ff, o.mlp_bias);
    linear("mlp.up_proj", d, o.d_ff, o.mlp_bias);
    linear("mlp.down_proj", o.d_ff, d, o.mlp_bias);
  }
  out.push_back({"model.norm.weight", {d}});
  if (!m.tie_embeddings) out.push_back({"lm_head.weight", {m.vocab_size, d}});
  return out;
}

bool ends_with(const std::string& s, const std::string& e) {
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

// The weight files and which tensors each holds: model.safetensors alone, or the index's weight_map (a tensor
// named twice in it, a file outside the folder or missing, is an error naming the index).
std::map<std::string, std::set<std::string>> weight_files(const fs::path& dir, std::string& weights_path) {
  std::map<std::string, std::set<std::string>> files;
  const fs::path index = dir / "model.safetensors.index.json";
  if (!fs::exists(index)) {
    QKV_CHECK(fs::exists(dir / "model.safetensors"),
              "{}: has config.json but neither model.safetensors nor model.safetensors.index.json (qkv reads "
              "safetensors, not pytorch_model.bin: save with save_pretrained(dir, safe_serialization=True))",
              dir.string());
    weights_path = (dir / "model.safetensors").string();
    files["model.safetensors"] = {};
    return files;
  }
  weights_path = index.string();
  const std::string text = read_file_bytes(index.string(), "index", kMaxJsonBytes);
  std::set<std::string> names;
  std::string twice;
  // A JSON object keeps one value per key: a tensor the index names twice is caught while parsing.
  const json j = json::parse(text, [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 2 && event == json::parse_event_t::key && parsed.is_string() &&
        !names.insert(parsed.get<std::string>()).second && twice.empty())
      twice = parsed.get<std::string>();
    return true;
  }, false);
  QKV_CHECK(!j.is_discarded() && j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
            "{}: expected a JSON object with a \"weight_map\" object", index.string());
  QKV_CHECK(twice.empty(), "{}: \"weight_map\" names tensor '{}' twice", index.string(), twice);
  for (const auto& [tensor, file] : j["weight_map"].items()) {
    QKV_CHECK(file.is_string(), "{}: weight_map[\"{}\"] must be a file name, got {}", index.string(), tensor, file.dump());
    const std::string f = file.get<std::string>();
    QKV_CHECK(!f.empty() && fs::path(f).filename() == fs::path(f) && f != "." && f != "..",
              "{}: weight_map[\"{}\"] = \"{}\" is not a file in the folder", index.string(), tensor, f);
    QKV_CHECK(fs::is_regular_file(dir / f), "{}: weight_map[\"{}\"] names {}, which does not exist", index.string(),
              tensor, (dir / f).string());
    files[f].insert(tensor);
  }
  QKV_CHECK(!files.empty(), "{}: \"weight_map\" is empty", index.string());
  return files;
}

// The keys that ask for what qkv's llama does not compute: refused naming the key.
void check_unsupported(Keys& keys, const std::string& type) {
  const json& j = keys.j;
  const std::string& path = keys.file;
  if (keys.has("hidden_act"))
    QKV_CHECK(j["hidden_act"] == "silu", "{}: \"hidden_act\" = {}: qkv's llama MLP is SwiGLU with silu", path,
              j["hidden_act"].dump());
  QKV_CHECK(keys.number("attention_dropout", 0, 1, 0) == 0,
            "{}: \"attention_dropout\" = {}: qkv's llama has no attention dropout", path, j["attention_dropout"].dump());
  QKV_CHECK(keys.integer("pretraining_tp", 1, 1e4, 1) == 1, "{}: \"pretraining_tp\" must be 1", path);
  QKV_CHECK(!keys.boolean("rope_interleaved", false),
            "{}: \"rope_interleaved\" = true: qkv applies Hugging Face's rotate-half pairing only", path);
  if (type == "qwen2") {
    QKV_CHECK(!keys.boolean("use_sliding_window", false),
              "{}: \"use_sliding_window\" = true: qkv has no sliding-window attention", path);
    keys.seen.insert("sliding_window");
    keys.seen.insert("max_window_layers");
    if (keys.has("layer_types"))
      for (const auto& t : j["layer_types"])
        QKV_CHECK(t == "full_attention", "{}: \"layer_types\" holds {}: qkv has full attention only", path, t.dump());
  } else {
    QKV_CHECK(!keys.has("sliding_window"), "{}: \"sliding_window\" = {}: qkv has no sliding-window attention", path,
              j["sliding_window"].dump());
  }
}

// config.json of LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM for `m` (model.arch); refuses a model
// whose biases its architecture's config cannot say.
json hf_llama_config(const ModelConfig& m, StorageType storage) {
  const std::string arch = m.option<std::string>("arch");
  const bool qkv_bias = m.option<bool>("qkv_bias"), o_bias = m.option<bool>("o_bias"), mlp_bias = m.option<bool>("mlp_bias");
  if (arch == "llama")
    QKV_CHECK(qkv_bias == o_bias, "export --format hf: Llama's attention_bias puts biases on q, k, v and o together; "
              "this model has qkv_bias = {} and o_bias = {} (q/k/v biases alone are Qwen2's: model.arch = \"qwen2\")",
              qkv_bias, o_bias);
  if (arch == "qwen2")
    QKV_CHECK(qkv_bias && !o_bias && !mlp_bias, "export --format hf: Qwen2 has biases on q, k, v only; this model has "
              "qkv_bias = {}, o_bias = {}, mlp_bias = {}", qkv_bias, o_bias, mlp_bias);
  if (arch == "mistral")
    QKV_CHECK(!qkv_bias && !o_bias && !mlp_bias, "export --format hf: Mistral has no biases; this model has some");
  const LlamaBlockOptions o = llama_block_options(m);
  json config = {{"architectures", {kArchitecture.at(arch)}},
                 {"model_type", arch},
                 {"vocab_size", m.vocab_size},
                 {"hidden_size", m.d_model},
                 {"intermediate_size", o.d_ff},
                 {"num_hidden_layers", m.layers},
                 {"num_attention_heads", m.heads},
                 {"num_key_value_heads", o.attention.kv_heads},
                 {"head_dim", o.attention.head_dim},
                 {"max_position_embeddings", m.seq_len},
                 {"rms_norm_eps", m.norm_eps},
                 {"rope_theta", m.option<double>("rope_theta")},
                 {"rope_scaling", nullptr},
                 {"hidden_act", "silu"},
                 {"tie_word_embeddings", m.tie_embeddings},
                 {"attention_dropout", 0.0},
                 {"initializer_range", 0.02},
                 {"use_cache", true},
                 {"torch_dtype", storage == StorageType::F32 ? "float32" : storage == StorageType::BF16 ? "bfloat16" : "float16"}};
  if (arch == "llama") config["attention_bias"] = qkv_bias, config["mlp_bias"] = mlp_bias, config["pretraining_tp"] = 1;
  if (arch == "qwen2") config["use_sliding_window"] = false, config["sliding_window"] = nullptr, config["max_window_layers"] = m.layers;
  if (arch == "mistral") config["sliding_window"] = nullptr;
  const std::string scaling = m.option<std::string>("rope_scaling");
  if (scaling == "linear") config["rope_scaling"] = {{"rope_type", "linear"}, {"factor", m.option<double>("rope_factor")}};
  if (scaling == "llama3")
    config["rope_scaling"] = {{"rope_type", "llama3"},
                              {"factor", m.option<double>("rope_factor")},
                              {"low_freq_factor", m.option<double>("rope_low_freq_factor")},
                              {"high_freq_factor", m.option<double>("rope_high_freq_factor")},
                              {"original_max_position_embeddings", m.option<std::int64_t>("rope_original_positions")}};
  return config;
}

}  // namespace

bool is_llama_folder(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (!fs::is_directory(p, ec) || fs::exists(p / "config.toml", ec) || !fs::is_regular_file(p / "config.json", ec))
    return false;
  try {
    return kFamily.count(model_type_of(read_json(p / "config.json", "config.json"))) > 0;
  } catch (const Error&) {
    return false;  // the GPT-2 reader reports what is wrong with it
  }
}

ModelConfig read_llama_config(const std::string& path) {
  const json j = read_json(path, "config.json");
  Keys keys{j, path, {}};
  const std::string type = model_type_of(j);
  keys.seen.insert("model_type");
  QKV_CHECK(kFamily.count(type), "{}: model_type \"{}\" is not a llama-family model (llama, qwen2, mistral)", path, type);
  if (keys.has("architectures")) {
    const json& a = j["architectures"];
    QKV_CHECK(a.is_array() && a.size() == 1 && a[0].is_string() && a[0].get<std::string>() == kArchitecture.at(type),
              "{}: \"architectures\" must be [\"{}\"] for model_type \"{}\", got {}", path, kArchitecture.at(type), type,
              a.dump());
  }
  ModelConfig m;
  m.kind = "llama";
  m.causal = true;
  m.options["arch"] = type;
  m.vocab_size = keys.integer("vocab_size", 1, 2e6, 0, true);
  m.d_model = keys.integer("hidden_size", 1, 1e5, 0, true);
  m.d_ff = keys.integer("intermediate_size", 1, 1e6, 0, true);
  m.layers = keys.integer("num_hidden_layers", 1, 1e4, 0, true);
  m.heads = keys.integer("num_attention_heads", 1, 1e4, 0, true);
  const std::int64_t kv = keys.integer("num_key_value_heads", 1, 1e4, m.heads);
  QKV_CHECK(m.heads % kv == 0, "{}: \"num_key_value_heads\" = {} does not divide \"num_attention_heads\" = {}", path, kv,
            m.heads);
  m.options["kv_heads"] = kv == m.heads ? std::int64_t{0} : kv;
  const std::int64_t hd = keys.integer("head_dim", 1, 1e5, 0);
  QKV_CHECK(hd != 0 || m.d_model % m.heads == 0,
            "{}: \"num_attention_heads\" = {} does not divide \"hidden_size\" = {} (and there is no \"head_dim\")", path,
            m.heads, m.d_model);
  m.options["head_dim"] = hd == m.d_model / m.heads && m.d_model % m.heads == 0 ? std::int64_t{0} : hd;
  m.seq_len = keys.integer("max_position_embeddings", 1, 1e7, 0, true);
  m.norm_eps = keys.number("rms_norm_eps", 1e-12, 1, 1e-6);
  m.options["rope_theta"] = keys.number("rope_theta", 1e-3, 1e12, 10000.0);
  m.tie_embeddings = keys.boolean("tie_word_embeddings", false);
  m.dropout = 0;
  const bool bias = type == "llama" && keys.boolean("attention_bias", false);
  m.options["qkv_bias"] = type == "qwen2" || bias;  // Qwen2 always has q/k/v biases
  m.options["o_bias"] = bias;
  m.options["mlp_bias"] = type == "llama" && keys.boolean("mlp_bias", false);
  read_rope_scaling(keys, m);
  check_unsupported(keys, type);
  for (const auto& [k, v] : j.items())
    QKV_CHECK(keys.seen.count(k) || kIgnored.count(k),
              "{}: unknown key \"{}\" (qkv reads {}'s keys and refuses what it could not honour)", path, k, type);
  try {
    check_model_config(m.with_defaults());
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }
  return m.with_defaults();
}

LlamaCheckpoint read_llama_folder(const std::string& dir_name) {
  const fs::path dir(dir_name);
  LlamaCheckpoint ck;
  ck.config = read_llama_config((dir / "config.json").string());
  const auto files = weight_files(dir, ck.weights_path);
  const auto expected = expected_tensors(ck.config);
  std::map<std::string, Shape> want(expected.begin(), expected.end());
  std::map<std::string, Tensor> got;
  for (const auto& [file, listed] : files) {
    SafetensorsFile f = read_safetensors((dir / file).string());
    for (auto& [name, t] : f.tensors) {
      const bool indexed = files.size() > 1 || !listed.empty();
      QKV_CHECK(!indexed || listed.count(name), "{}: holds '{}', which the index does not place in it", (dir / file).string(),
                name);
      if (ends_with(name, ".rotary_emb.inv_freq")) continue;  // a buffer older versions saved
      if (name == "lm_head.weight" && ck.config.tie_embeddings) continue;  // tied: the embedding is the head
      QKV_CHECK(want.count(name), "{}: '{}' is not a tensor of this {} model (config.json)", (dir / file).string(), name,
                ck.config.option<std::string>("arch"));
      QKV_CHECK(t.shape() == want.at(name), "{}: '{}' is {}, but config.json makes it {}", (dir / file).string(), name,
                t.shape().str(), want.at(name).str());
      QKV_CHECK(got.emplace(name, t).second, "{}: '{}' is held twice", ck.weights_path, name);
    }
    for (const auto& name : listed)
      QKV_CHECK(got.count(name) || ends_with(name, ".rotary_emb.inv_freq") ||
                    (name == "lm_head.weight" && ck.config.tie_embeddings),
                "{}: the index places '{}' in {}, which does not hold it", ck.weights_path, name, file);
  }
  std::vector<std::string> missing;
  for (const auto& [name, shape] : expected)
    if (!got.count(name)) missing.push_back(name);
  QKV_CHECK(missing.empty(), "{}: missing {} tensor(s): {}", ck.weights_path, missing.size(), fmt::join(missing, ", "));
  for (const auto& [name, shape] : expected) ck.weights.tensors.emplace_back(name, got.at(name));
  if (fs::exists(dir / "tokenizer.json")) {
    ck.tokenizer = std::make_shared<BpeTokenizer>(load_tokenizer(dir.string()));
    QKV_CHECK(ck.tokenizer->vocab_size() <= ck.config.vocab_size,
              "{}: the tokenizer has {} tokens (ids up to {}) but config.json says vocab_size = {}: the embedding has no "
              "row for its last ids", (dir / "tokenizer.json").string(), ck.tokenizer->vocab_size(),
              ck.tokenizer->vocab_size() - 1, ck.config.vocab_size);
  }
  if (fs::exists(dir / "generation_config.json"))
    ck.generation_config = read_json(dir / "generation_config.json", "generation_config.json").dump(2) + "\n";
  return ck;
}

std::vector<std::string> write_hf_llama(const LanguageModel& model, const BpeTokenizer* tokenizer,
                                        const std::string& dir, StorageType storage,
                                        const std::string& generation_config, std::int64_t max_shard_bytes) {
  const ModelConfig m = model.config().with_defaults();
  QKV_CHECK(m.kind == "llama", "export --format hf: write_hf_llama takes a model of kind \"llama\", got \"{}\"", m.kind);
  const json config = hf_llama_config(m, storage);
  fs::create_directories(dir);
  const std::int64_t elem = storage == StorageType::F32 ? 4 : 2;
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  std::int64_t in_shard = 0, total = 0;
  for (const auto& [name, t] : model.named_parameters()) {
    const std::int64_t bytes = t.numel() * elem;
    if (in_shard > 0 && in_shard + bytes > max_shard_bytes) shards.emplace_back(), in_shard = 0;
    shards.back().emplace_back(name, t.to(kFloat32));
    in_shard += bytes;
    total += bytes;
  }
  // first what another model left that loaders would read with this one (its index and shards, its tokenizer)
  std::vector<std::string> removed = remove_other_model_files(dir, tokenizer != nullptr);
  if (shards.size() == 1) {
    write_safetensors((fs::path(dir) / "model.safetensors").string(), shards[0], {{"format", "pt"}}, storage);
  } else {
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", json::object()}};
    for (std::size_t s = 0; s < shards.size(); ++s) {
      const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
      write_safetensors((fs::path(dir) / file).string(), shards[s], {{"format", "pt"}}, storage);
      for (const auto& [name, t] : shards[s]) index["weight_map"][name] = file;
    }
    std::error_code ec;  // a single file left beside the index would be read instead of it
    if (fs::remove(fs::path(dir) / "model.safetensors", ec)) removed.push_back("model.safetensors");
    write_file_atomic((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
  }
  write_file_atomic((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
  write_file_atomic((fs::path(dir) / "generation_config.json").string(),
                    generation_config.empty() ? json({{"_from_model_config", true}}).dump(2) + "\n" : generation_config);
  if (tokenizer) {
    tokenizer->save(dir);  // tokenizer.json, and vocab.json + merges.txt
    json tc = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"clean_up_tokenization_spaces", false},
               {"model_max_length", m.seq_len}};
    if (const TokenizerRules* r = tokenizer->rules(); r && !r->prefix.empty())
      tc["bos_token"] = tokenizer->token_bytes(r->prefix.front());
    if (tokenizer->eot() >= 0) tc["eos_token"] = "<|endoftext|>";
    write_file_atomic((fs::path(dir) / "tokenizer_config.json").string(), tc.dump(2) + "\n");
  }
  return removed;
}

}  // namespace qkv
