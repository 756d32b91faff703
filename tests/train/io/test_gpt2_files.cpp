#include <qkv/core/ops.h>
#include <qkv/datasets/bpe_train.h>
#include <qkv/datasets/shards.h>
#include <qkv/layers/gpt2.h>
#include <qkv/train/io/files.h>
#include <qkv/train/io/gpt2_files.h>
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
  static const json j = json::parse(std::ifstream(kFixtures + "/gpt2_parity.json"));
  return j;
}

/// A copy of the Hugging Face fixture folder to spoil.
fs::path hf_copy(const std::string& name) {
  const fs::path dir = scratch_dir(name);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(kFixtures + "/gpt2_hf/" + f, dir / f);
  return dir;
}

void edit_config(const fs::path& dir, const std::function<void(json&)>& edit) {
  json j = json::parse(std::ifstream(dir / "config.json"));
  edit(j);
  std::ofstream(dir / "config.json") << j.dump();
}

void edit_tensors(const fs::path& dir, const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
  auto f = read_safetensors((dir / "model.safetensors").string());
  edit(f.tensors);
  write_safetensors((dir / "model.safetensors").string(), f.tensors, f.metadata);
}

}  // namespace

TEST_CASE("GPT-2 checkpoints: logits and 64 greedy tokens equal the reference, Hugging Face and nanoGPT layouts") {
  for (const auto& layout_path : {std::pair<std::string, std::string>{"huggingface", kFixtures + "/gpt2_hf"},
                                     {"nanogpt", kFixtures + "/gpt2_nanogpt/model.safetensors"}}) {
    const auto& layout = layout_path.first;
    const auto& path = layout_path.second;
    INFO(layout);
    const json& c = parity()[layout];
    CHECK(is_gpt2_checkpoint(path));
    const TrainedModel tm = load_trained(path);
    CHECK(tm.model->config().kind == "gpt2");
    CHECK(tm.model->config().bias == (layout == "huggingface"));
    const Tensor ids = Tensor::from(c["ids"].get<std::vector<std::int64_t>>(), {c["shape"][0], c["shape"][1]});
    const Tensor logits = tm.model->logits(ids);
    CHECK(logits.shape() == Shape{c["shape"][0], c["shape"][1], c["shape"][2]});
    CHECK(relative_error(logits.to_vector(), c["logits"].get<std::vector<double>>()) < 1e-5);
    const auto want = c["greedy"].get<std::vector<std::int64_t>>();
    for (const bool cached : {true, false})
      CHECK(sample_tokens(tm, c["prompt"].get<std::vector<std::int64_t>>(), 64, 0.0, 0, {}, cached) == want);
  }
  CHECK_FALSE(is_gpt2_checkpoint(kFixtures + "/gpt2"));  // a tokenizer folder
}

TEST_CASE("export --format hf and back: the same tensors, bit for bit, and the tokenizer") {
  const auto dir = scratch_dir("gpt2_roundtrip");
  for (const std::string& from : {kFixtures + "/gpt2_hf", kFixtures + "/gpt2_nanogpt/model.safetensors"}) {
    INFO(from);
    const TrainedModel a = load_trained(from);
    const auto out = (dir / fs::path(from).filename()).string();
    const auto r = run_cli_captured({"qkv", "export", from, "--format", "hf", "--out", out}, dir.string());
    REQUIRE(r.code == 0);
    for (const char* f : {"config.json", "model.safetensors", "generation_config.json"})
      CHECK(fs::exists(out + "/" + f));
    const GPT2Checkpoint ck = read_gpt2_checkpoint(out);
    CHECK(ck.layout == GPT2Layout::huggingface);
    const TrainedModel b = load_trained(out);
    // nanoGPT's exact GELU goes out as activation_function "gelu" and comes back
    CHECK(b.model->config().option<std::string>("activation") == a.model->config().option<std::string>("activation"));
    const auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
    REQUIRE(pa.size() == pb.size());
    for (std::size_t i = 0; i < pa.size(); ++i) {
      CHECK(pa[i].first == pb[i].first);
      CHECK(pa[i].second.to_vector() == pb[i].second.to_vector());
    }
  }
  // Hugging Face's names and layout on disk: Conv1D (in, out), GPT2LMHeadModel's "transformer." names, no lm_head
  const auto f = read_safetensors((dir / "gpt2_hf/model.safetensors").string());
  CHECK(f.metadata.at("format") == "pt");
  CHECK(f.find("transformer.h.0.attn.c_attn.weight").shape() == Shape{32, 96});
  CHECK(f.find("transformer.h.1.mlp.c_proj.weight").shape() == Shape{128, 32});
  CHECK_FALSE(f.find("lm_head.weight").defined());
  // nanoGPT's bias=False model goes out with zero biases (Hugging Face's GPT-2 has them), the same function
  const auto nano = read_safetensors((dir / "model.safetensors/model.safetensors").string());
  CHECK(nano.find("transformer.h.0.ln_1.bias").to_vector() == std::vector<double>(32, 0.0));

  // an untied model with a tokenizer, in bf16 too
  BpeTokenizer tok = BpeTokenizer::from_merges({}, {"<|endoftext|>"});
  ModelConfig c{.kind = "gpt2",
                .vocab_size = tok.vocab_size(),
                .seq_len = 8,
                .d_model = 8,
                .heads = 2,
                .layers = 1,
                .causal = true,
                .tie_embeddings = false};
  Generator g(1);
  auto model = build_model(c, g);
  write_hf_gpt2(*model, &tok, (dir / "untied").string());
  const json config = json::parse(std::ifstream(dir / "untied/config.json"));
  CHECK(config["tie_word_embeddings"] == false);
  CHECK(config["eos_token_id"] == 256);
  const TrainedModel back = load_trained((dir / "untied").string());
  CHECK_FALSE(back.model->config().tie_embeddings);
  REQUIRE(back.tokenizer);
  CHECK(back.tokenizer->hash() == tok.hash());
  CHECK(back.model->parameter("lm_head.weight").to_vector() == model->parameter("lm_head.weight").to_vector());
  write_hf_gpt2(*model, &tok, (dir / "bf16").string(), StorageType::BF16);
  const TrainedModel half = load_trained((dir / "bf16").string());
  CHECK_CLOSE(half.model->parameter("transformer.h.0.mlp.c_fc.weight"),
              model->parameter("transformer.h.0.mlp.c_fc.weight"), 1e-2, 1e-3);
  CHECK(json::parse(std::ifstream(dir / "bf16/config.json"))["torch_dtype"] == "bfloat16");
  // only gpt2 models have Hugging Face's GPT-2 format
  auto other = build_model({.kind = "transformer", .vocab_size = 5, .seq_len = 4, .d_model = 4, .heads = 1});
  CHECK_ERROR(write_hf_gpt2(*other, nullptr, (dir / "no").string()), "the model is of kind \"transformer\"");
}

TEST_CASE("GPT-2 checkpoints: what qkv cannot honour, and broken files, exit 2 naming the file and key") {
  const auto key = [](const std::string& name, const std::function<void(json&)>& edit, const std::string& what) {
    INFO(name);
    const auto dir = hf_copy(name);
    edit_config(dir, edit);
    refused(dir, what);
  };
  key("act_type", [](json& j) { j["activation_function"] = 3; }, "\"activation_function\" must be a string, got 3");
  key("layers_type", [](json& j) { j["n_layer"] = "12"; }, "\"n_layer\" must be a whole number from 1 to");
  key(
      "act", [](json& j) { j["activation_function"] = "relu"; }, "\"activation_function\" = \"relu\" is not supported");
  key(
      "inner", [](json& j) { j["n_inner"] = 64; }, "transformer.h.0.mlp.c_fc.weight is [32, 128], expected [32, 64]");
  key(
      "layer_idx", [](json& j) { j["scale_attn_by_inverse_layer_idx"] = true; },
      "\"scale_attn_by_inverse_layer_idx\" = true is not supported");
  key(
      "upcast", [](json& j) { j["reorder_and_upcast_attn"] = true; },
      "\"reorder_and_upcast_attn\" = true is not supported");
  key(
      "vocab", [](json& j) { j["vocab_size"] = 97; }, "transformer.wte.weight is [96, 32], expected [97, 32]");
  key(
      "type", [](json& j) { j["model_type"] = "llama"; }, "\"architectures\" must be [\"LlamaForCausalLM\"] for model_type \"llama\"");
  key(
      "heads", [](json& j) { j["n_head"] = 5; }, "d_model = 32 is not divisible by heads = 5");
  key(
      "no_embd", [](json& j) { j.erase("n_embd"); }, "config.json: has no \"n_embd\"");
  {
    const auto dir = hf_copy("tokenizer");
    BpeTokenizer::from_merges({}, {"<|endoftext|>"}).save(dir.string());
    refused(dir, "the tokenizer (vocab.json, merges.txt) has 257 tokens but config.json says vocab_size = 96");
  }
  {
    const auto dir = hf_copy("vocab_alone");  // a tokenizer half there is refused, not dropped
    std::ofstream(dir / "vocab.json") << R"({"a": 0})";
    fs::remove(dir / "merges.txt");
    refused(dir, "the folder has vocab.json but not merges.txt");
  }
  {
    const auto dir = hf_copy("missing");
    edit_tensors(dir, [](auto& t) { std::erase_if(t, [](const auto& nt) { return nt.first == "h.1.ln_2.weight"; }); });
    refused(dir, "1 missing: transformer.h.1.ln_2.weight");
  }
  {
    const auto dir = hf_copy("shape");
    edit_tensors(dir, [](auto& t) {
      for (auto& [n, x] : t)
        if (n == "h.0.mlp.c_fc.weight") x = Tensor::zeros({32, 64});
    });
    refused(dir, "transformer.h.0.mlp.c_fc.weight is [32, 64], expected [32, 128]");
  }
  {
    const auto dir = hf_copy("extra");
    edit_tensors(dir, [](auto& t) { t.emplace_back("h.0.attn.rotary.weight", Tensor::zeros({2})); });
    refused(dir, "1 unexpected: transformer.h.0.attn.rotary.weight");
  }
  {
    const auto dir = hf_copy("mixed");
    edit_tensors(dir, [](auto& t) {
      for (auto& [n, x] : t)
        if (n == "ln_f.weight") n = "transformer.ln_f.weight";
    });
    refused(dir, "mixes two naming conventions");
  }
  {
    const auto dir = hf_copy("untie");
    edit_tensors(dir, [](auto& t) { t.emplace_back("lm_head.weight", Tensor::zeros({96, 32})); });
    refused(dir, "lm_head.weight differs from wte.weight, but config.json ties them");
  }
  {
    const auto dir = hf_copy("sharded");
    std::ofstream(dir / "model.safetensors.index.json") << "{}";
    fs::remove(dir / "model.safetensors");
    refused(dir, "sharded checkpoints are not supported");
  }
  {
    const auto dir = hf_copy("no_weights");
    fs::remove(dir / "model.safetensors");
    refused(dir, "has config.json but no model.safetensors");
  }
  {  // a nanoGPT file with no config.json beside it: the sizes from its tensors, but never a guess at the heads
    const auto dir = scratch_dir("bare");
    fs::copy_file(kFixtures + "/gpt2_nanogpt/model.safetensors", dir / "nano.safetensors");
    refused(dir / "nano.safetensors", "no config.json beside it says how many heads");
    const GPT2Checkpoint ck = read_gpt2_checkpoint((dir / "nano.safetensors").string(), 4);
    CHECK(ck.layout == GPT2Layout::nanogpt);
    CHECK(ck.config.layers == 2);
    CHECK(ck.config.seq_len == 80);
    CHECK_FALSE(ck.config.bias);
    CHECK(ck.config.tie_embeddings);  // its lm_head.weight is wte's values
  }
}

TEST_CASE("fine-tuning from a GPT-2 folder (model.init) lowers validation loss and exports back") {
  // a corpus, a 300-token tokenizer learned from it, shards, and a small GPT-2 with that tokenizer as a HF folder
  const auto dir = scratch_dir("finetune");
  std::string text;
  for (int i = 0; i < 400; ++i)
    text += "the key " + std::to_string(i % 17) + " opens door " + std::to_string(i % 17) + ".\n";
  std::ofstream(dir / "corpus.txt") << text;
  BpeTrainOptions bpe;
  bpe.vocab_size = 300;
  const BpeTokenizer tok = train_bpe({(dir / "corpus.txt").string()}, bpe);
  tok.save((dir / "tokenizer").string());
  TokenizeOptions o;
  o.tokenizer = (dir / "tokenizer").string();
  o.out = (dir / "shards").string();
  o.val_fraction = 0.2;
  tokenize_files({(dir / "corpus.txt").string()}, o);
  const std::vector<std::string> sizes = {"data.path=\"" + o.out + "\"",
                                          "data.seq_len=16",
                                          "model.positions=32",
                                          "model.d_model=16",
                                          "model.heads=2",
                                          "model.layers=2",
                                          "train.batch_size=8",
                                          "optim.lr=3e-3",
                                          "train.steps=40",
                                          "train.eval_every=40"};
  Generator g(2);
  auto base = build_model(shipped("gpt2", sizes).model_config(tok.vocab_size()), g);
  write_hf_gpt2(*base, &tok, (dir / "hf").string());

  auto overrides = sizes;
  overrides.push_back("model.init=\"" + (dir / "hf").string() + "\"");
  overrides.push_back("run.name=\"finetune\"");
  const auto before = train(shipped("gpt2",
                                    [&] {
                                      auto o2 = overrides;
                                      o2.push_back("train.steps=1");
                                      o2.push_back("train.eval_every=1");
                                      o2.push_back("optim.lr=1e-9");
                                      return o2;
                                    }()),
                            quiet());
  const auto after = train(shipped("gpt2", overrides), quiet());
  CHECK(after.exit_code == 0);
  CHECK(after.val.loss < before.val.loss - 0.5);
  const auto r = run_cli_captured({"qkv", "export", after.run_dir, "--format", "hf"}, dir.string());
  CHECK(r.code == 0);
  CHECK_FALSE(is_gpt2_checkpoint(after.run_dir));  // a run, and a qkv model file, are qkv's own
  CHECK_FALSE(is_gpt2_checkpoint(after.run_dir + "/model.safetensors"));
  // a checkpoint carries no data: eval takes token shards
  CHECK(run_cli_captured({"qkv", "eval", after.run_dir + "/hf", "--tokens", o.out}, dir.string()).code == 0);
  const auto no_data = run_cli_captured({"qkv", "eval", after.run_dir + "/hf"}, dir.string());
  CHECK(no_data.code == 2);
  CHECK(no_data.err.find("is a checkpoint of the field, which carries no data") != std::string::npos);
  const TrainedModel back = load_trained(after.run_dir + "/hf");
  REQUIRE(back.tokenizer);
  CHECK(back.tokenizer->hash() == tok.hash());

  // the config must describe the same GPT-2: what the tensors cannot show is compared by key
  auto wrong = overrides;
  wrong.push_back("model.heads=4");
  CHECK_ERROR(train(shipped("gpt2", wrong), quiet()), "has heads = 2, but the config says model.heads = 4");
  wrong = overrides;
  wrong.push_back("model.kind=\"transformer\"");
  CHECK_ERROR(train(shipped("gpt2", wrong), quiet()), "is a gpt2 checkpoint; set model.kind = \"gpt2\"");
}

TEST_CASE("export --format hf onto another model's folder removes the files loaders would read with the new one") {
  const auto dir = scratch_dir("gpt2_over");
  const auto out = dir / "out";
  fs::create_directories(out);
  std::ofstream(out / "model.safetensors.index.json") << R"({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})";
  for (const char* f : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tokenizer.json",
                        "vocab.json", "merges.txt", "notes.txt"})
    std::ofstream(out / f) << "another model's";
  const auto r = run_cli_captured({"qkv", "export", kFixtures + "/gpt2_hf", "--format", "hf", "--out", out.string()}, dir.string());
  REQUIRE(r.code == 0);
  for (const char* gone : {"model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "tokenizer.json", "vocab.json", "merges.txt"})
    CHECK_MESSAGE(!fs::exists(out / gone), gone);  // the fixture has no tokenizer: neither does the export
  CHECK(fs::exists(out / "notes.txt"));  // the user's own
  CHECK(r.err.find("qkv: note: removed model-00001-of-00002.safetensors, model-00002-of-00002.safetensors, model.safetensors.index.json") != std::string::npos);
  CHECK(read_gpt2_checkpoint(out.string()).layout == GPT2Layout::huggingface);
}

TEST_CASE("nanoGPT's padded embedding and GPT2Config's n_inner: read, written, and padding ids never come out") {
  const BpeTokenizer tok = BpeTokenizer::from_merges({}, {"<|endoftext|>"});  // 257 tokens
  const std::int64_t v = tok.vocab_size();
  ModelConfig c{.kind = "gpt2", .vocab_size = v + 7, .seq_len = 8, .d_model = 8, .heads = 2, .layers = 1, .d_ff = 24,
                .causal = true};
  c.options["activation"] = std::string("gelu");
  Generator g(2);
  auto model = build_model(c, g);
  model->eval();
  const Tensor prompt = Tensor::from(std::vector<std::int64_t>{1, 2}, {1, 2});
  {  // the padding rows: ten times the row of the token greedy picks, so their logits beat it
    NoGradGuard ng;
    const Tensor last = narrow(model->logits(prompt), 1, 1, 1);
    const auto best = static_cast<std::int64_t>(argmax(narrow(last, -1, 0, v), -1).item());
    const Tensor w = model->parameter("transformer.wte.weight");
    auto rows = w.to_vector();
    for (std::int64_t r = v; r < v + 7; ++r)
      for (std::int64_t j = 0; j < 8; ++j) rows[std::size_t(r * 8 + j)] = 10 * rows[std::size_t(best * 8 + j)];
    w.copy_(Tensor::from(rows, w.shape()).to(w.dtype()));
    CHECK(argmax(narrow(model->logits(prompt), 1, 1, 1), -1).item() >= double(v));  // unmasked, padding would win
  }
  const auto dir = scratch_dir("padded");
  write_hf_gpt2(*model, &tok, (dir / "hf").string());
  const json config = json::parse(std::ifstream(dir / "hf/config.json"));
  CHECK(config["vocab_size"] == v + 7);
  CHECK(config["n_inner"] == 24);
  CHECK(config["activation_function"] == "gelu");
  const TrainedModel back = load_trained((dir / "hf").string());
  CHECK(back.model->config().vocab_size == v + 7);
  CHECK(back.model->config().d_ff == 24);
  CHECK(back.model->config().option<std::string>("activation") == "gelu");
  CHECK(back.usable_vocab() == v);
  for (const double temperature : {0.0, 1.0, 5.0})
    for (const std::int64_t id : sample_tokens(back, {1, 2}, 12, temperature, 3, {}, true)) CHECK(id < v);
  const auto r = run_cli_captured({"qkv", "predict", (dir / "hf").string(), "--ids", "1 2", "--json"}, dir.string());
  REQUIRE(r.code == 0);
  const json printed = json::parse(r.out);  // (a range over a temporary's member would outlive it)
  for (const auto& p : printed["predictions"]) CHECK(p.get<std::int64_t>() < v);
}
