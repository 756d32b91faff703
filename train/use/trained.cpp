#include "qkv/train/use/trained.h"

#include <qkv/train/io/checkpoints.h>
#include <qkv/layers/save.h>
#include <qkv/train/run/checkpoint.h>
#include <qkv/train/run/model_file.h>

#include <qkv/datasets/tokenizer_json.h>
#include <qkv/datasets/utf8.h>

#include <nlohmann/json.hpp>

#include <algorithm>

#include <filesystem>

namespace qkv {
namespace fs = std::filesystem;

namespace {

/// A checkpoint of the field (train/io/checkpoints.h): its weights, tokenizer and a qkv model file's metadata for
/// them (no data section).
TrainedModel load_field(const std::string& target) {
  FieldCheckpoint ck = read_field_checkpoint(target);
  check_finite_tensors(ck.weights.tensors, ck.weights_path, "this model cannot be used");
  TrainedModel tm;
  tm.path = ck.weights_path;
  tm.tokenizer = ck.tokenizer;
  tm.metadata = model_metadata(ck.config, ck.tokenizer.get());
  if (!ck.generation_config.empty()) tm.metadata["qkv.generation_config"] = ck.generation_config;
  tm.data_from_metadata = true;
  Generator g(0);
  {
    const NoInitGuard read_not_drawn;  // the file's weights replace these
    tm.model = build_model(ck.config, g);
  }
  load(*tm.model, std::move(ck.weights), tm.path, /*strict=*/true);
  tm.model->eval();
  return tm;
}

/// The tokenizer a model file carries (qkv.tokenizer.*), checked against its hash and the model's vocabulary.
std::shared_ptr<BpeTokenizer> tokenizer_of(const std::map<std::string, std::string>& meta, const std::string& path,
                                           std::int64_t vocab_size) {
  if (const auto it = meta.find("qkv.tokenizer.json"); it != meta.end()) {  // a tokenizer.json tokenizer
    auto tok = std::make_shared<BpeTokenizer>(BpeTokenizer::from_tokenizer_json(it->second, path + " (qkv.tokenizer.json)"));
    QKV_CHECK(!meta.count("qkv.tokenizer.hash") || tok->hash() == meta.at("qkv.tokenizer.hash"),
              "{}: its tokenizer hashes to {}, but qkv.tokenizer.hash says {}", path, tok->hash(),
              meta.at("qkv.tokenizer.hash"));
    QKV_CHECK(tok->vocab_size() <= vocab_size, "{}: the tokenizer has {} tokens but the model's vocab_size is only {}",
              path, tok->vocab_size(), vocab_size);
    return tok;
  }
  QKV_CHECK(meta.count("qkv.tokenizer.merges") && meta.count("qkv.tokenizer.hash"),
            "{}: the metadata has qkv.tokenizer.vocab but not qkv.tokenizer.merges and qkv.tokenizer.hash", path);
  std::vector<std::string> declared;
  if (const auto it = meta.find("qkv.tokenizer.specials"); it != meta.end()) {
    const auto j = nlohmann::json::parse(it->second, nullptr, false);
    QKV_CHECK(!j.is_discarded() && j.is_array() && std::all_of(j.begin(), j.end(), [](const auto& v) { return v.is_string(); }),
              "{}: the metadata qkv.tokenizer.specials is not a JSON array of strings", path);
    declared = j.get<std::vector<std::string>>();
  }
  auto tok = std::make_shared<BpeTokenizer>(BpeTokenizer::parse(meta.at("qkv.tokenizer.vocab"), meta.at("qkv.tokenizer.merges"),
                                                                path + " (qkv.tokenizer.vocab)",
                                                                path + " (qkv.tokenizer.merges)", declared));
  QKV_CHECK(tok->hash() == meta.at("qkv.tokenizer.hash"), "{}: its tokenizer hashes to {}, but qkv.tokenizer.hash "
            "says {}", path, tok->hash(), meta.at("qkv.tokenizer.hash"));
  QKV_CHECK(tok->vocab_size() <= vocab_size, "{}: the tokenizer has {} tokens but the model's vocab_size is only {}", path,
            tok->vocab_size(), vocab_size);
  return tok;
}

}  // namespace

std::int64_t TrainedModel::usable_vocab() const {
  return tokenizer ? std::min<std::int64_t>(tokenizer->vocab_size(), model->config().vocab_size)
                   : model->config().vocab_size;
}

TrainedModel load_trained(const std::string& target) {
  if (is_field_checkpoint(target)) return load_field(target);
  TrainedModel tm;
  const fs::path p(target);
  fs::path file = p;
  bool run_dir = false;
  SafetensorsFile f;
  if (fs::is_directory(p)) {
    run_dir = true;
    file = p / "model.safetensors";
    if (!fs::exists(file)) {  // an unfinished run: its latest checkpoint's weights
      file = latest_checkpoint(target);
      QKV_CHECK(!file.empty(), "{} has neither model.safetensors nor checkpoints", target);
      f = checkpoint_model(read_safetensors(file.string()));
    }
  }
  QKV_CHECK(fs::exists(file), "{}: no such file or run directory", target);
  tm.path = file.string();
  if (f.tensors.empty()) f = read_safetensors(tm.path);
  if (f.metadata.count("qkv.checkpoint")) f = checkpoint_model(f);  // a checkpoint holds a model too
  tm.metadata = f.metadata;
  QKV_CHECK(f.metadata.count("qkv.model"), "{}: not a qkv model file (its metadata has no qkv.model)", tm.path);
  const ModelConfig mc = model_config_from_json(f.metadata.at("qkv.model"), tm.path);
  check_model_file(mc, f, tm.path);
  tm.data_from_metadata = !(run_dir && fs::exists(p / "config.toml"));
  tm.config = tm.data_from_metadata ? config_from_metadata(f.metadata, tm.path) : load_config((p / "config.toml").string());
  if (f.metadata.count("qkv.vocab")) {
    try {
      tm.vocab = CharVocab(f.metadata.at("qkv.vocab"));
    } catch (const Error& e) {
      fail("{}: the qkv.vocab metadata is invalid: {}", tm.path, e.what());
    }
    QKV_CHECK(tm.vocab.size() == mc.vocab_size, "{}: qkv.vocab has {} characters but the model's vocab_size is {}",
              tm.path, tm.vocab.size(), mc.vocab_size);
  }
  if (f.metadata.count("qkv.tokenizer.vocab") || f.metadata.count("qkv.tokenizer.json")) tm.tokenizer = tokenizer_of(f.metadata, tm.path, mc.vocab_size);
  Generator g(0);
  {
    const NoInitGuard read_not_drawn;  // the file's weights replace these
    tm.model = build_model(mc, g);
  }
  load(*tm.model, std::move(f), tm.path, /*strict=*/true);
  tm.model->eval();
  return tm;
}

std::vector<std::int64_t> TrainedModel::parse_tokens(const std::string& text, const char* what, bool raw_ids) const {
  std::vector<std::int64_t> ids;
  if (raw_ids || !this->text()) {
    ids = encode_token_ids(text, model->config().vocab_size);
  } else if (tokenizer) {
    std::vector<BpeTokenizer::Id> t;
    tokenizer->encode(text, t, /*allow_special=*/true, what);
    if (const TokenizerRules* r = tokenizer->rules()) ids.assign(r->prefix.begin(), r->prefix.end());  // e.g. BOS
    ids.insert(ids.end(), t.begin(), t.end());
  } else {
    ids = vocab.encode(text);
  }
  QKV_CHECK(!ids.empty(), "{}: no tokens given", what);
  return ids;
}

std::unique_ptr<Dataset> TrainedModel::data() const {
  auto d = make_dataset(config.data, config.run.seed);
  const auto theirs = d->tokenizer();
  QKV_CHECK(!tokenizer || !theirs || theirs->hash() == tokenizer->hash(),
            "{}: the model's tokenizer (hash {}) is not the one {} was tokenized with (hash {}): evaluate it on shards "
            "made with its tokenizer", path, tokenizer ? tokenizer->hash() : "", config.data.path,
            theirs ? theirs->hash() : "");
  return d;
}

std::string TrainedModel::token_text(std::int64_t id) const {
  if (tokenizer) return tokenizer->token_bytes(static_cast<BpeTokenizer::Id>(id));
  return text() ? vocab.decode(id) : std::to_string(id);
}

std::string TrainedModel::token_label(std::int64_t id) const {
  const std::string s = token_text(id);
  if (!tokenizer) return s == " " ? "\u2423" : s == "\n" ? "\u23ce" : s;
  std::string label;
  for (char c : displayable_utf8(s)) label += c == ' ' ? "\u2423" : c == '\n' ? "\u23ce" : std::string(1, c);
  return label;
}

Tensor ids_tensor(const std::vector<std::int64_t>& ids) {
  return Tensor::from(ids, {1, static_cast<std::int64_t>(ids.size())});
}

void check_finite_output(const Tensor& t, const char* what, const std::string& path) {
  const auto bad = t.count_non_finite();
  QKV_CHECK(bad == 0, "{}: {} of {} values of the model's output are not finite (NaN or inf): the weights in {} are "
            "finite but its activations overflow", what, bad, t.numel(), path);
}

}  // namespace qkv
