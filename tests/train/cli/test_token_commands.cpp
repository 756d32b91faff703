// qkv tokenize, qkv tokenizer train|encode|decode, and the model commands on a model trained on tokens.
#include "../../support.h"

#include <qkv/core/files.h>
#include <qkv/datasets/bpe.h>
#include <qkv/layers/save.h>
#include <qkv/train/use/trained.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

using namespace qkv;
namespace fs = std::filesystem;

namespace {
std::string dir() {
  const auto d = test::process_dir() / "token_cli";
  fs::create_directories(d);
  return d.string();
}
test::CliOutput capture(std::vector<std::string> args) {
  args.insert(args.begin(), "qkv");
  return test::run_cli_captured(args, dir());
}
std::string put(const std::string& name, const std::string& bytes) {
  const auto path = dir() + "/" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}
std::string corpus() {
  std::string s;
  for (int i = 0; i < 300; ++i)
    s += "The query of token " + std::to_string(i % 17) + " attends to every key; its value is summed.\n";
  return s;
}
// A tiny causal model trained on GPT-2 tokens of corpus(), once per process.
const std::string& tokens_model() {
  static const std::string run = [] {
    const auto text = put("corpus.txt", corpus());
    REQUIRE(capture({"tokenize", text, "--out", dir() + "/shards", "--val-fraction", "0.2"}).code == 0);
    const auto r = capture({"train", std::string(QKV_SOURCE_DIR) + "/configs/tokens.toml", "data.path=\"" + dir() + "/shards\"",
                            "run.out_dir=\"" + dir() + "\"", "data.seq_len=16", "model.d_model=16", "model.heads=2",
                            "train.steps=4", "train.batch_size=4", "train.eval_every=4", "schedule.warmup_steps=0",
                            "--force"});
    REQUIRE_MESSAGE(r.code == 0, r.err);
    return dir() + "/tokens";
  }();
  return run;
}
}  // namespace

TEST_CASE("qkv tokenizer encode and decode: ids out, text back, as JSON too") {
  const auto text = put("hello.txt", "Hello world <|endoftext|> 日本\n");
  const auto plain = capture({"tokenizer", "encode", text});
  CHECK(plain.code == 0);
  CHECK(plain.out.rfind("15496 995 1279 91 437 1659 5239 91 29", 0) == 0);
  const auto special = capture({"tokenizer", "encode", text, "--json", "--allow-special"});
  const auto ids = nlohmann::json::parse(special.out);
  CHECK(ids == nlohmann::json({15496, 995, 220, 50256, 10545, 245, 98, 17312, 105, 198}));
  const auto back = capture({"tokenizer", "decode", put("ids.json", special.out)});
  CHECK(back.code == 0);
  CHECK(back.out == "Hello world <|endoftext|> 日本\n");
  CHECK(capture({"tokenizer", "decode", put("ids.txt", plain.out)}).out == "Hello world <|endoftext|> 日本\n");
}

TEST_CASE("qkv tokenizer train writes vocab.json and merges.txt that load and encode") {
  const auto text = put("train.txt", corpus());
  const auto r = capture({"tokenizer", "train", text, "--vocab-size", "300", "--out", dir() + "/mine"});
  CHECK(r.code == 0);
  CHECK(r.out.find("300 tokens (43 merges, 1 special)") != std::string::npos);
  const auto tok = BpeTokenizer::load(dir() + "/mine");
  CHECK(tok.vocab_size() == 300);
  const auto e = capture({"tokenizer", "encode", text, "--tokenizer", dir() + "/mine"});
  CHECK(e.code == 0);
  CHECK(capture({"tokenizer", "decode", put("mine.ids", e.out), "--tokenizer", dir() + "/mine"}).out == corpus());
}

TEST_CASE("qkv tokenize: shards, a second run that writes nothing") {
  const auto text = put("docs.txt", corpus());
  const auto first = capture({"tokenize", text, "--out", dir() + "/t1", "--shard-tokens", "2000"});
  CHECK(first.code == 0);
  CHECK_MESSAGE(first.out.find(" shards (gpt2 tokenizer, uint16)") != std::string::npos, first.out);
  const auto m = nlohmann::json::parse(std::ifstream(dir() + "/t1/manifest.json"));
  CHECK(m["shards"].size() >= 3);
  CHECK(first.out.find(fmt::format("wrote {}/t1: {} training and {} validation tokens in {} shards", dir(),
                                   m["tokens"]["train"].get<int>(), m["tokens"]["val"].get<int>(),
                                   m["shards"].size())) == 0);
  const auto again = capture({"tokenize", text, "--out", dir() + "/t1", "--shard-tokens", "2000"});
  CHECK(again.out.find("is up to date") != std::string::npos);
}

TEST_CASE("token commands: bad input exits 2 with one message naming what is wrong") {
  for (const auto& args_message : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"tokenize", put("empty.txt", ""), "--out", dir() + "/e"}, "the input has no text to train on"},
           {{"tokenize", dir() + "/none.txt", "--out", dir() + "/e"}, "none.txt"},
           {{"tokenize", put("v.txt", "x"), "--out", dir() + "/e", "--val-fraction", "2"}, "--val-fraction 2"},
           {{"tokenizer", "train", put("t.txt", "x"), "--vocab-size", "100", "--out", dir() + "/x"}, "--vocab-size 100 is below"},
           {{"tokenizer", "encode", put("bad.txt", "ok\xC0\xAF")}, "bad.txt: invalid UTF-8 at byte 2"},
           {{"tokenizer", "encode", put("x.txt", "x"), "--tokenizer", dir() + "/no_such"}, "no_such"},
           {{"tokenizer", "decode", put("bad.ids", "1 2 50257")}, "id 2 is \"50257\" (expected an integer in [0, 50257))"},
           {{"tokenizer", "decode", put("word.ids", "1 two")}, "id 1 is \"two\""},
           {{"tokenizer", "decode", put("open.ids", "[31373, 995")}, "the JSON array is not closed"},
           {{"tokenizer", "decode", put("nested.ids", "[[31373], 995]")}, "no nested arrays"},
           {{"tokenizer", "decode", put("after.ids", "[31373] 995")}, "text after the array's end"},
           {{"tokenizer", "decode", put("comma.ids", "31373, 995")}, "',' outside a JSON array"},
           {{"tokenizer", "train", put("t2.txt", "some text"), "--vocab-size", "300", "--out", ""}, "the folder to save to is an empty name"},
           {{"tokenizer"}, "A subcommand is required"}}) {
    const auto& args = args_message.first;
    const auto& message = args_message.second;
    INFO(args[0] << " " << args[1]);
    const auto r = capture(args);
    CHECK(r.code == 2);
    CHECK(r.err.find(message) != std::string::npos);
    CHECK(r.out.empty());
  }
}

TEST_CASE("a model trained on tokens carries its tokenizer: predict, sample, attention, eval read and write text") {
  const auto& run = tokens_model();
  const auto file = read_safetensors(run + "/model.safetensors");
  CHECK(file.metadata.count("qkv.tokenizer.vocab") == 1);
  CHECK(file.metadata.at("qkv.tokenizer.hash") == BpeTokenizer::load("gpt2").hash());
  const auto p = capture({"predict", run, "--tokens", "The query of"});
  CHECK(p.code == 0);
  CHECK(p.out.find("\u2423query") != std::string::npos);  // " query", its space shown
  const auto ids = capture({"predict", run, "--ids", "464 12405 286", "--json"});
  CHECK(nlohmann::json::parse(ids.out)["tokens"] == nlohmann::json({464, 12405, 286}));
  const auto s = capture({"sample", run, "--prompt", "The query", "--length", "5", "--temperature", "0"});
  CHECK(s.code == 0);
  CHECK(s.out.rfind("The query", 0) == 0);
  const auto a = capture({"attention", run, "--tokens", "The key", "--json"});
  CHECK(nlohmann::json::parse(a.out)["tokens"] == nlohmann::json({"The", "\u2423key"}));
  CHECK(capture({"eval", run}).code == 0);
  CHECK(capture({"report", run}).code == 0);
  // Evaluated on shards of another tokenizer: an error naming both.
  REQUIRE(capture({"tokenizer", "train", put("other.txt", corpus()), "--vocab-size", "300", "--out", dir() + "/other"}).code == 0);
  REQUIRE(capture({"tokenize", put("c2.txt", corpus()), "--tokenizer", dir() + "/other", "--out", dir() + "/shards",
                   "--val-fraction", "0.2"}).code == 0);
  const auto e = capture({"eval", run});
  CHECK(e.code == 2);
  CHECK(e.err.find("is not the one " + dir() + "/shards was tokenized with") != std::string::npos);
}

TEST_CASE("a full disk during qkv tokenize is a write failure, exit 1, and the folder keeps what it had") {
  const std::string qkv = std::string(QKV_BINARY_DIR) + "/bin/qkv";
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "the quick brown fox " + std::to_string(i) + " jumps\n";
  const std::string file = put("big.txt", text), out = dir() + "/full_disk";
  // ulimit -f 64: files of at most 64 KiB (the shard needs more); qkv ignores SIGXFSZ, so the write fails (EFBIG).
  const int rc = std::system(("bash -c 'ulimit -f 64; exec " + qkv + " tokenize " + file + " --out " + out + "' > /dev/null 2> " +
                              dir() + "/full_disk.err").c_str());
  CHECK(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 1);
  std::ifstream err(dir() + "/full_disk.err");
  const std::string message{std::istreambuf_iterator<char>(err), {}};
  CHECK(message.find("qkv: failed: write:") != std::string::npos);
  CHECK_FALSE(fs::exists(fs::path(out) / "manifest.json"));
  for (const auto& e : fs::directory_iterator(out)) CHECK_FALSE(is_temporary_name(e.path().filename().string()));
}
