#include <qkv/core/ops.h>
#include <qkv/layers/llama.h>
#include <qkv/train/io/checkpoints.h>
#include <qkv/train/io/llama_files.h>
#include <qkv/train/use/generate.h>
#include <qkv/train/use/trained.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../run/run_support.h"

using namespace qkv;
using namespace qkv::test;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kFixtures = QKV_FIXTURES_DIR;

const json& parity() {
  static const json j = json::parse(std::ifstream(kFixtures + "/llama_parity.json"));
  return j;
}

double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff = std::max(diff, std::abs(a[i] - b[i])), scale = std::max(scale, std::abs(b[i]));
  return diff / scale;
}

fs::path copy_of(const std::string& fixture, const std::string& name) {
  const fs::path dir = scratch_dir(name);
  for (const auto& e : fs::directory_iterator(kFixtures + "/" + fixture)) fs::copy_file(e.path(), dir / e.path().filename());
  return dir;
}

void edit_json(const fs::path& file, const std::function<void(json&)>& edit) {
  json j = json::parse(std::ifstream(file));
  edit(j);
  std::ofstream(file) << j.dump();
}

void refused(const fs::path& dir, const std::string& what) {
  const auto r = run_cli_captured({"qkv", "predict", dir.string(), "--ids", "1 2"}, scratch_dir("cli").string());
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find(what) != std::string::npos, r.err);
}

}  // namespace

TEST_CASE("llama-family folders: logits and 24 greedy tokens equal the PyTorch reference (GQA, MQA, biases; f32, "
          "bf16 sharded, f16)") {
  for (const char* name : {"llama_gqa", "qwen2_mqa", "llama_bias"}) {
    INFO(name);
    const std::string path = kFixtures + "/" + name;
    const json& c = parity()[name];
    REQUIRE(checkpoint_format(path) != nullptr);
    CHECK(checkpoint_format(path)->name == "llama");
    const TrainedModel tm = load_trained(path);
    CHECK(tm.model->config().kind == "llama");
    const Tensor ids = Tensor::from(c["ids"].get<std::vector<std::int64_t>>(), {c["shape"][0], c["shape"][1]});
    const Tensor logits = tm.model->logits(ids);
    CHECK(logits.shape() == Shape{c["shape"][0], c["shape"][1], c["shape"][2]});
    CHECK(relative_error(logits.to_vector(), c["logits"].get<std::vector<double>>()) < 1e-5);
    const auto want = c["greedy"].get<std::vector<std::int64_t>>();
    for (const bool cached : {true, false})
      CHECK(sample_tokens(tm, c["prompt"].get<std::vector<std::int64_t>>(), 24, 0.0, 0, {}, cached) == want);
  }
  const ModelConfig q = read_llama_config(kFixtures + "/qwen2_mqa/config.json");
  CHECK(q.option<std::string>("arch") == "qwen2");
  CHECK(q.option<bool>("qkv_bias"));
  CHECK(!q.option<bool>("o_bias"));
  CHECK(q.option<std::int64_t>("kv_heads") == 1);
  CHECK(q.option<std::int64_t>("head_dim") == 12);
  CHECK(q.option<std::string>("rope_scaling") == "linear");
  CHECK(q.tie_embeddings);
  CHECK(load_trained(kFixtures + "/llama_bias").metadata.count("qkv.generation_config"));
}

TEST_CASE("export --format hf of a llama and back: the same tensors bit for bit, sharded above the size given") {
  const TrainedModel tm = load_trained(kFixtures + "/llama_gqa");
  const fs::path one = scratch_dir("llama_one"), many = scratch_dir("llama_many");
  write_hf_llama(*tm.model, nullptr, one.string());
  write_hf_llama(*tm.model, nullptr, many.string(), StorageType::F32, "", 20000);
  CHECK(fs::exists(one / "model.safetensors"));
  CHECK(!fs::exists(one / "model.safetensors.index.json"));
  CHECK(fs::exists(many / "model.safetensors.index.json"));
  CHECK(!fs::exists(many / "model.safetensors"));
  int shards = 0;
  for (const auto& e : fs::directory_iterator(many)) shards += e.path().filename().string().rfind("model-", 0) == 0;
  CHECK(shards > 2);
  for (const fs::path& dir : {one, many}) {
    const LlamaCheckpoint back = read_llama_folder(dir.string());
    CHECK(back.config == tm.model->config().with_defaults());
    for (const auto& [name, t] : back.weights.tensors) CHECK_CLOSE(t, tm.model->parameter(name), 0, 0);
  }
  // writing the single file over the sharded folder removes the index and its shards
  const auto removed = write_hf_llama(*tm.model, nullptr, many.string());
  CHECK(!fs::exists(many / "model.safetensors.index.json"));
  CHECK(removed.size() == std::size_t(shards + 1));
  // bf16: the weights rounded, the model the same
  const fs::path bf = scratch_dir("llama_bf16");
  write_hf_llama(*tm.model, nullptr, bf.string(), StorageType::BF16);
  CHECK(read_llama_folder(bf.string()).config == tm.model->config().with_defaults());
  // the CLI: export --format hf of the folder itself, then predict from the export
  const fs::path exported = scratch_dir("cli_export") / "q";
  const auto r = run_cli_captured({"qkv", "export", kFixtures + "/qwen2_mqa", "--format", "hf", "--out",
                                   exported.string()}, scratch_dir("cli").string());
  CHECK_MESSAGE(r.code == 0, r.err);
  const json cfg = json::parse(std::ifstream(exported / "config.json"));
  CHECK(cfg["architectures"][0] == "Qwen2ForCausalLM");
  CHECK(cfg["rope_scaling"]["rope_type"] == "linear");
}

TEST_CASE("llama-family folders: contradictions, unknown keys and broken indexes exit 2 naming the file and key") {
  const auto spoiled = [](const char* what, const std::function<void(json&)>& edit) {
    const fs::path d = copy_of("llama_gqa", "spoil");
    edit_json(d / "config.json", edit);
    refused(d, what);
  };
  spoiled("unknown key \"fancy_attention\"", [](json& j) { j["fancy_attention"] = true; });
  spoiled("\"num_attention_heads\" = 3 does not divide \"hidden_size\" = 32", [](json& j) {
    j["num_attention_heads"] = 3;
    j.erase("head_dim");
    j["num_key_value_heads"] = 3;
  });
  spoiled("\"num_key_value_heads\" = 3 does not divide \"num_attention_heads\" = 4", [](json& j) { j["num_key_value_heads"] = 3; });
  spoiled("rope_type \"yarn\" is not supported", [](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 2.0}}; });
  spoiled("\"sliding_window\" = 4096: qkv has no sliding-window attention", [](json& j) { j["sliding_window"] = 4096; });
  spoiled("\"hidden_act\" = \"gelu\"", [](json& j) { j["hidden_act"] = "gelu"; });
  spoiled("config.json: has no \"hidden_size\"", [](json& j) { j.erase("hidden_size"); });
  spoiled("'model.layers.0.self_attn.q_proj.weight' is [32, 32], but config.json makes it [64, 32]", [](json& j) { j["head_dim"] = 16; });
  {
    const fs::path d = copy_of("qwen2_mqa", "index_missing");
    edit_json(d / "model.safetensors.index.json", [](json& j) { j["weight_map"]["model.norm.weight"] = "model-9.safetensors"; });
    refused(d, "weight_map[\"model.norm.weight\"] names");
    const fs::path d2 = copy_of("qwen2_mqa", "index_twice");
    std::string text;
    {
      std::ifstream in(d2 / "model.safetensors.index.json");
      text.assign(std::istreambuf_iterator<char>(in), {});
    }
    const auto at = text.find("\"weight_map\": {") + std::string("\"weight_map\": {").size();
    text.insert(at, "\n    \"model.norm.weight\": \"model-00001-of-00002.safetensors\",");
    std::ofstream(d2 / "model.safetensors.index.json") << text;
    refused(d2, "\"weight_map\" names tensor 'model.norm.weight' twice");
    const fs::path d3 = copy_of("qwen2_mqa", "index_escape");
    edit_json(d3 / "model.safetensors.index.json", [](json& j) { j["weight_map"]["model.norm.weight"] = "../x.safetensors"; });
    refused(d3, "is not a file in the folder");
  }
}
