#include "qkv/train/use/trained.h"

#include <qkv/train/io/safetensors.h>
#include <qkv/train/run/checkpoint.h>
#include <qkv/train/run/model_file.h>

#include <filesystem>

namespace qkv {
namespace fs = std::filesystem;

TrainedModel load_trained(const std::string& target) {
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
  Generator g(0);
  tm.model = build_model(mc, g);
  load(*tm.model, f, tm.path, /*strict=*/true);
  tm.model->eval();
  return tm;
}

std::vector<std::int64_t> TrainedModel::parse_tokens(const std::string& text, const char* what) const {
  const auto ids = this->text() ? vocab.encode(text) : encode_token_ids(text, model->config().vocab_size);
  QKV_CHECK(!ids.empty(), "{}: no tokens given", what);
  return ids;
}

std::string TrainedModel::token_text(std::int64_t id) const { return text() ? vocab.decode(id) : std::to_string(id); }

std::string TrainedModel::token_label(std::int64_t id) const {
  const std::string s = token_text(id);
  return s == " " ? "\u2423" : s == "\n" ? "\u23ce" : s;
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
