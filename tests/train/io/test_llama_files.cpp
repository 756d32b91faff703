#include <qkv/core/ops.h>
#include <qkv/datasets/bpe_train.h>
#include <qkv/datasets/shards.h>
#include <qkv/datasets/tokenizer_json.h>
#include <qkv/layers/llama.h>
#include <qkv/train/io/checkpoints.h>
#include <qkv/train/io/llama_files.h>
#include <qkv/train/use/generate.h>
#include <qkv/train/use/trained.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io_support.h"

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
    for (const auto& named : back.weights.tensors) CHECK_CLOSE(named.second, tm.model->parameter(named.first), 0, 0);
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

TEST_CASE("a llama folder with tokenizer.json: text in and out, tokenize with it, fine-tune from it, export back") {
  // a corpus, a 300-token tokenizer learned from it and given Llama 3's rules (its regex, a BOS template)
  const auto dir = scratch_dir("llama_text");
  std::string text;
  for (int i = 0; i < 400; ++i)
    text += "the key " + std::to_string(i % 17) + " opens door " + std::to_string(i % 17) + ".\n";
  std::ofstream(dir / "corpus.txt") << text;
  BpeTrainOptions bpe;
  bpe.vocab_size = 300;
  const BpeTokenizer plain = train_bpe({(dir / "corpus.txt").string()}, bpe);
  json tj = json::parse(plain.tokenizer_json());
  const auto bos = plain.vocab_size();
  tj["added_tokens"].push_back({{"id", bos}, {"content", "<|begin_of_text|>"}, {"special", true}, {"normalized", false}});
  tj["model"]["vocab"]["<|begin_of_text|>"] = bos;
  tj["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Split"}, {"behavior", "Isolated"}, {"invert", false},
      {"pattern", {{"Regex", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}}},
      {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  tj["post_processor"] = {{"type", "TemplateProcessing"}, {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
                          {"special_tokens", {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {bos}}}}}}};
  const BpeTokenizer tok = BpeTokenizer::from_tokenizer_json(tj.dump(), "test");
  REQUIRE(tok.rules() != nullptr);
  CHECK(tok.document_separator() == plain.eot());  // <|endoftext|> first
  // a small llama with that tokenizer, padded by 3 rows, as a Hugging Face folder
  ModelConfig c{.kind = "llama", .vocab_size = tok.vocab_size() + 3, .seq_len = 64, .d_model = 16, .heads = 4,
                .layers = 2, .d_ff = 32, .causal = true};
  c.options["kv_heads"] = std::int64_t{2};
  Generator g(3);
  auto base = build_model(c, g);
  write_hf_llama(*base, &tok, (dir / "hf").string());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors"})
    CHECK(fs::exists(dir / "hf" / f));
  const TrainedModel tm = load_trained((dir / "hf").string());
  REQUIRE(tm.tokenizer);
  CHECK(tm.tokenizer->hash() == tok.hash());
  CHECK(tm.parse_tokens("the key", "test").front() == bos);  // the template's BOS
  CHECK(tm.usable_vocab() == tok.vocab_size());
  // the CLI: tokenizer encode with the folder, sample text
  std::ofstream(dir / "line.txt") << "the key 3";
  const auto enc = run_cli_captured({"qkv", "tokenizer", "encode", (dir / "line.txt").string(), "--tokenizer",
                                     (dir / "hf").string(), "--json"}, dir.string());
  REQUIRE(enc.code == 0);
  auto want = tok.encode("the key 3");
  want.insert(want.begin(), bos);
  CHECK(json::parse(enc.out).get<std::vector<BpeTokenizer::Id>>() == want);
  CHECK(run_cli_captured({"qkv", "sample", (dir / "hf").string(), "--prompt", "the key", "--length", "5"},
                         dir.string()).code == 0);
  // shards made with the folder's tokenizer, then a fine-tune from the folder lowers the validation loss
  TokenizeOptions o;
  o.tokenizer = (dir / "hf").string();
  o.out = (dir / "shards").string();
  o.val_fraction = 0.2;
  tokenize_files({(dir / "corpus.txt").string()}, o);
  CHECK(read_manifest(o.out).tokenizer_hash == tok.hash());
  std::vector<std::string> overrides = {"data.path=\"" + o.out + "\"", "data.seq_len=16", "model.positions=64",
                                        "model.d_model=16", "model.heads=4", "model.kv_heads=2", "model.layers=2",
                                        "model.d_ff=32", "model.tie_embeddings=true", "model.norm_eps=1e-5",
                                        "model.rope_theta=10000.0", "train.batch_size=8", "optim.lr=3e-3",
                                        "train.steps=40", "train.eval_every=40", "run.name=\"llama_tuned\"",
                                        "model.init=\"" + (dir / "hf").string() + "\""};
  auto first = overrides;
  for (const char* o2 : {"train.steps=1", "train.eval_every=1", "optim.lr=1e-9", "run.name=\"llama_zero\""}) first.push_back(o2);
  const auto before = train(shipped("llama", first), quiet());
  const auto after = train(shipped("llama", overrides), quiet());
  CHECK(after.exit_code == 0);
  CHECK(after.val.loss < before.val.loss - 0.5);
  const auto r = run_cli_captured({"qkv", "export", after.run_dir, "--format", "hf"}, dir.string());
  CHECK_MESSAGE(r.code == 0, r.err);
  const TrainedModel back = load_trained(after.run_dir + "/hf");
  REQUIRE(back.tokenizer);
  CHECK(back.tokenizer->hash() == tok.hash());
  // a tokenizer with more tokens than the embedding has rows is refused, naming the file
  ModelConfig narrow_vocab = c;
  narrow_vocab.vocab_size = tok.vocab_size() - 10;
  write_hf_llama(*build_model(narrow_vocab, g), &tok, (dir / "narrow").string());
  refused(dir / "narrow", "tokenizer.json: the tokenizer has " + std::to_string(tok.vocab_size()) + " tokens");
  // model.init with another kind's config names both
  auto wrong = overrides;
  wrong.push_back("model.kv_heads=4");
  CHECK_ERROR(train(shipped("llama", wrong), quiet()), "has another model.kv_heads than the config says");
}
