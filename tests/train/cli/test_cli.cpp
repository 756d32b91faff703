#include "../../support.h"

#include <qkv/train/cli/cli.h>
#include <qkv/train/use/trained.h>
#include <qkv/layers/save.h>

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

using namespace qkv;
namespace fs = std::filesystem;

namespace {
int cli(std::vector<std::string> args) {
  args.insert(args.begin(), "qkv");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  return run_cli(static_cast<int>(argv.size()), argv.data());
}
std::string tmp_dir() {
  const auto d = test::process_dir() / "cli";
  fs::create_directories(d);
  return d.string();
}
const std::string kReverse = std::string(QKV_SOURCE_DIR) + "/configs/reverse.toml";
}  // namespace

TEST_CASE("exit codes: 0 ok, 2 usage/config/input, 1 runtime failure") {
  CHECK(cli({"--version"}) == 0);
  CHECK(cli({"train", "--help"}) == 0);
  CHECK(cli({}) == 2);                                  // no subcommand
  CHECK(cli({"frobnicate"}) == 2);                      // unknown subcommand
  CHECK(cli({"train", kReverse, "--bogus"}) == 2);      // unknown option
  CHECK(cli({"train", "/nonexistent.toml"}) == 2);      // unreadable config
  CHECK(cli({"info", kReverse, "train.stepz=3"}) == 2);  // unknown key
  CHECK(cli({"eval", "/nonexistent"}) == 2);
  CHECK(cli({"info", kReverse}) == 0);
  CHECK(cli({"info", "--keys"}) == 0);
  const std::string out = "run.out_dir=\"" + tmp_dir() + "\"";
  CHECK(cli({"train", kReverse, out, "run.name=\"cli_nan\"", "optim.name=sgd", "optim.lr=1000", "schedule.warmup_steps=0",
             "schedule.kind=constant", "train.target_accuracy=0", "--force"}) == 1);
  CHECK(cli({"train", kReverse, out, "run.name=\"cli_ok\"", "train.steps=100", "--force"}) == 0);
  CHECK(cli({"eval", tmp_dir() + "/cli_ok"}) == 0);
  CHECK(cli({"eval", tmp_dir() + "/cli_ok/model.safetensors", "--json"}) == 0);
  CHECK(cli({"train", kReverse, out, "run.name=\"cli_ok\""}) == 2);  // exists
  CHECK(cli({"train", "--resume", tmp_dir() + "/cli_ok", "train.steps=120", "train.target_accuracy=0"}) == 0);
  CHECK(fs::exists(tmp_dir() + "/cli_ok/checkpoints/step_000000120.safetensors"));  // the overrides applied
  CHECK(cli({"train", kReverse, "--resume", tmp_dir() + "/cli_ok"}) == 2);  // CONFIG and --resume together
  std::ofstream(tmp_dir() + "/garbage.safetensors") << "not a safetensors file";
  CHECK(cli({"eval", tmp_dir() + "/garbage.safetensors"}) == 2);
}

TEST_CASE("export, predict, attention, sample: outputs and bad input") {
  const std::string out = "run.out_dir=\"" + tmp_dir() + "\"";
  REQUIRE(cli({"train", kReverse, out, "run.name=\"cli_io\"", "--force"}) == 0);
  const std::string run = tmp_dir() + "/cli_io";
  CHECK(cli({"export", run, "--dtype", "f16", "--out", run + "/m16.safetensors"}) == 0);
  CHECK(fs::file_size(run + "/m16.safetensors") < fs::file_size(run + "/model.safetensors"));
  CHECK(cli({"export", run, "--dtype", "f8"}) == 2);
  CHECK(cli({"predict", run + "/m16.safetensors", "--tokens", "1 2 3"}) == 0);
  CHECK(cli({"predict", run, "--tokens", "1 2 3", "--json"}) == 0);
  CHECK(cli({"predict", run, "--tokens", "1 2 99"}) == 2);              // token id out of range
  CHECK(cli({"predict", run, "--tokens", "1 2 x"}) == 2);               // not a token id
  CHECK(cli({"predict", run, "--tokens", "1 2 3 4 5 6 7 8 9 10 11 12 13"}) == 2);  // longer than the positions
  CHECK(cli({"predict", run}) == 2);                                     // --tokens missing
  const std::string svg = tmp_dir() + "/att.svg";
  CHECK(cli({"attention", run, "--tokens", "5 6 7", "--svg", svg}) == 0);
  std::ifstream in(svg);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(text.find("<svg") == 0);
  CHECK(text.find(">7</text>") != std::string::npos);  // tokens as axis labels
  CHECK(cli({"attention", run, "--tokens", "5 6 7", "--layer", "1"}) == 2);
  CHECK(cli({"attention", run, "--tokens", "5 6 7", "--head", "2"}) == 2);
  CHECK(cli({"sample", run, "--prompt", "1 2"}) == 2);  // not causal
  // A causal token model samples.
  CHECK(cli({"train", kReverse, out, "run.name=\"cli_causal\"", "model.causal=true", "train.steps=20",
             "schedule.warmup_steps=0", "--force"}) == 0);
  CHECK(cli({"sample", tmp_dir() + "/cli_causal", "--prompt", "1 2", "--length", "20", "--temperature", "0.5"}) == 0);
  CHECK(cli({"sample", tmp_dir() + "/cli_causal", "--prompt", "1 2", "--temperature", "-1"}) == 2);
}

TEST_CASE("an unfinished run is read from its latest checkpoint") {
  const std::string out = "run.out_dir=\"" + tmp_dir() + "\"";
  REQUIRE(cli({"train", kReverse, out, "run.name=\"cli_partial\"", "train.steps=20", "train.checkpoint_every=10",
               "schedule.warmup_steps=0", "--force"}) == 0);
  const std::string run = tmp_dir() + "/cli_partial";
  fs::remove(run + "/model.safetensors");  // as if training had stopped before the end
  CHECK(load_trained(run).path == run + "/checkpoints/step_000000020.safetensors");
  CHECK(cli({"predict", run, "--tokens", "1 2 3"}) == 0);
  fs::remove_all(run + "/checkpoints");
  CHECK_ERROR(load_trained(run), "has neither model.safetensors nor checkpoints");
}

namespace {
// Runs the CLI with stdout and stderr captured.
test::CliOutput capture(std::vector<std::string> args) {
  args.insert(args.begin(), "qkv");
  return test::run_cli_captured(args, tmp_dir());
}
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return {(std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()};
}
// A copy of a trained model file with its tensors or metadata changed.
std::string craft(const std::string& from, const std::string& name,
                  const std::function<void(SafetensorsFile&)>& change) {
  SafetensorsFile f = read_safetensors(from);
  change(f);
  const std::string path = tmp_dir() + "/" + name + ".safetensors";
  write_safetensors(path, f.tensors, f.metadata);
  return path;
}
void set_model_field(SafetensorsFile& f, const std::string& key, const nlohmann::json& value) {
  auto j = nlohmann::json::parse(f.metadata.at("qkv.model"));
  j[key] = value;
  f.metadata["qkv.model"] = j.dump();
}
std::string trained_reverse() {
  static const std::string run = [] {
    const std::string out = "run.out_dir=\"" + tmp_dir() + "\"";
    REQUIRE(cli({"train", kReverse, out, "run.name=\"cli_hostile\"", "train.steps=100", "schedule.warmup_steps=0", "--force"}) == 0);
    return tmp_dir() + "/cli_hostile";
  }();
  return run;
}
}  // namespace

TEST_CASE("a directory as CONFIG is exit 2 for train and info (B2)") {
  const std::string configs = std::string(QKV_SOURCE_DIR) + "/configs";
  const auto t = capture({"train", configs});
  CHECK(t.code == 2);
  CHECK(t.err.find("is a directory, not a config file") != std::string::npos);
  CHECK(capture({"info", configs}).code == 2);
}

TEST_CASE("outputs carry the numbers: predict's tokens, eval's metrics, info's parameter count") {
  const std::string run = trained_reverse();
  const auto info = capture({"info", kReverse});
  CHECK(info.code == 0);
  CHECK(info.out.find("parameters: 15120\n") != std::string::npos);
  const auto p = capture({"predict", run, "--tokens", "1 2 3 4 5 6 7 8 9 10 11 12"});
  CHECK(p.out.find("       0      1         12\n") != std::string::npos);  // reversed: position 0 predicts 12
  const auto e = capture({"eval", run, "--json"});
  const auto j = nlohmann::json::parse(e.out);
  CHECK(j["examples"] == 512);
  CHECK(j["seq_acc"].get<double>() >= 0.99);
}

TEST_CASE("eval and predict accept a checkpoint file") {
  const std::string run = trained_reverse();
  const std::string ck = run + "/checkpoints/step_000000100.safetensors";
  const auto e = capture({"eval", ck});
  CHECK(e.code == 0);
  CHECK(e.out.find("sequence accuracy") != std::string::npos);
  CHECK(capture({"predict", ck, "--tokens", "1 2 3"}).code == 0);
}

TEST_CASE("crafted model metadata is checked against the tensors before anything is built (B7)") {
  const std::string model = trained_reverse() + "/model.safetensors";
  struct Case {
    const char* key;
    nlohmann::json value;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"d_model", 6000, "the qkv.model metadata says vocab_size = 16 and d_model = 6000, but tok_emb.weight is [16, 64]"},
      {"layers", 1000000, "\"layers\" = 1000000 is out of range (expected 1 to 10000)"},
      {"layers", 1e6, "\"layers\" must be an integer, got 1000000.0"},
      {"d_model", 16.5, "\"d_model\" must be an integer, got 16.5"},
      {"d_model", -3, "\"d_model\" = -3 is out of range"},
      {"vocab_size", 18446744073709551615ULL, "\"vocab_size\" = 18446744073709551615 is out of range"},
      {"seq_len", 13, "describes a seed model of 15184 parameters, but the file's tensors hold 15120"},
      {"kind", "transformer", "describes a transformer model of"},
      {"kind", 7, "\"kind\" must be a string"},
      {"causal", "yes", "\"causal\" must be true or false"},
  };
  for (const auto& c : cases) {
    const auto path = craft(model, "crafted", [&](SafetensorsFile& f) { set_model_field(f, c.key, c.value); });
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = capture({"predict", path, "--tokens", "1 2 3"});
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK_MESSAGE(r.code == 2, c.key);
    CHECK_MESSAGE(r.err.find(c.message) != std::string::npos, r.err);
    CHECK(secs < 2.0);  // 0.1 spent 11 s (and 3.4 GB) building d_model = 6000 first
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  CHECK(ru.ru_maxrss < 1024 * 1024);  // KB: nothing above allocated a GB
  // Malformed qkv.data and qkv.vocab metadata name the file, not a JSON library error.
  const auto bad_data = craft(model, "bad_data", [](SafetensorsFile& f) { f.metadata["qkv.data"] = R"({"seq_len": "x"})"; });
  const auto r = capture({"eval", bad_data});
  CHECK(r.code == 2);
  CHECK(r.err.find(bad_data + ": qkv.data: data.seq_len: expected an integer, got a string") != std::string::npos);
  const auto huge_data = craft(model, "huge_data", [](SafetensorsFile& f) { f.metadata["qkv.data"] = R"({"val_size": 1000000000})"; });
  CHECK(capture({"eval", huge_data}).err.find(huge_data + ": qkv.data: data.val_size: value 1000000000 is out of range") !=
        std::string::npos);
  // Within the key's range but beyond what validation may cost: 1e7 examples of 20 tokens.
  const auto long_eval = craft(model, "long_eval", [](SafetensorsFile& f) {
    f.metadata["qkv.data"] = R"({"task": "reverse", "val_size": 10000000, "seq_len": 20, "vocab_size": 16})";
  });
  const auto le = capture({"eval", long_eval});
  CHECK(le.code == 2);
  CHECK(le.err.find(long_eval + ": qkv.data: data.val_size x data.seq_len = 10000000 x 20 is more than 134217728") !=
        std::string::npos);
  const auto bad_vocab = craft(model, "bad_vocab", [](SafetensorsFile& f) { f.metadata["qkv.vocab"] = "ba"; });
  CHECK(capture({"eval", bad_vocab}).err.find(bad_vocab + ": the qkv.vocab metadata is invalid") != std::string::npos);
}

TEST_CASE("a model file that names a data file says so before reading it") {
  const std::string model = trained_reverse() + "/model.safetensors";
  const auto path = craft(model, "names_data", [](SafetensorsFile& f) {
    f.metadata["qkv.data"] = R"({"task": "text", "path": "/etc/hostname", "seq_len": 12})";
  });
  const auto r = capture({"eval", path});
  CHECK(r.err.find("names its data file /etc/hostname (qkv.data metadata); reading it to evaluate") != std::string::npos);
}

TEST_CASE("non-finite weights are refused naming the tensor; overflowing attention is rendered, not a crash (B5)") {
  const std::string model = trained_reverse() + "/model.safetensors";
  const auto nan = craft(model, "nan", [](SafetensorsFile& f) {
    for (auto& [n, t] : f.tensors)
      if (n == "attn.w_k.weight") t.data<float>()[3] = std::nanf("");
  });
  for (const auto& args : std::vector<std::vector<std::string>>{{"predict", nan, "--tokens", "1 2"},
                                                                {"eval", nan},
                                                                {"attention", nan, "--tokens", "1 2"}}) {
    const auto r = capture(args);
    CHECK(r.code == 2);
    CHECK(r.err.find("tensor 'attn.w_k.weight' has 1 value that is not finite") != std::string::npos);
  }
  // Finite weights whose scores overflow float32: q.k ~ 1e60.
  const auto huge = craft(model, "huge", [](SafetensorsFile& f) {
    for (auto& [n, t] : f.tensors)
      if (n == "attn.w_q.weight" || n == "attn.w_k.weight")
        for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] *= 1e30f;
  });
  const std::string svg = tmp_dir() + "/huge.svg";
  const auto a = capture({"attention", huge, "--tokens", "1 2 3", "--svg", svg});
  CHECK(a.code == 0);
  // Scores beyond float32 give rows that are NaN or all 0 (which, depends on the GEMM's summation order): every
  // such row is flagged, never shown under "each row sums to 1" unmarked.
  CHECK(a.err.find("rows 0, 1, 2 of the attention weights do not sum to 1") != std::string::npos);
  CHECK(a.out.find("<- does not sum to 1") != std::string::npos);
  CHECK(slurp(svg).find("does not sum to 1") != std::string::npos);
  const auto p = capture({"predict", huge, "--tokens", "1 2 3"});
  CHECK(p.code == 2);
  CHECK(p.err.find("values of the model's output are not finite") != std::string::npos);
}

TEST_CASE("output paths that are directories are refused before any work; sample lengths are bounded") {
  const std::string run = trained_reverse();
  const auto a = capture({"attention", run, "--tokens", "1 2", "--svg", tmp_dir()});
  CHECK(a.code == 2);
  CHECK(a.err.find("is a directory; give a file name inside it") != std::string::npos);
  CHECK(capture({"export", run, "--out", tmp_dir() + "/"}).code == 2);
  CHECK(capture({"export", run, "--out", tmp_dir() + "/no/such/folder/m.safetensors"}).err.find("does not exist") !=
        std::string::npos);
  CHECK_FALSE(fs::exists("/.qkv_tests.tmp"));
  const std::string out = "run.out_dir=\"" + tmp_dir() + "\"";
  REQUIRE(cli({"train", kReverse, out, "run.name=\"cli_causal2\"", "model.causal=true", "train.steps=5", "schedule.warmup_steps=0", "--force"}) == 0);
  const auto s = capture({"sample", tmp_dir() + "/cli_causal2", "--prompt", "1 2", "--length", "2000000"});
  CHECK(s.code == 2);
  CHECK(s.err.find("--length must be 0 to 1000000, got 2000000") != std::string::npos);
  const auto ok = capture({"sample", tmp_dir() + "/cli_causal2", "--prompt", "1 2", "--length", "5", "--temperature", "0"});
  CHECK(ok.code == 0);
  CHECK(std::count(ok.out.begin(), ok.out.end(), ' ') == 7);  // prompt and 5 tokens, each followed by a space
}

TEST_CASE("sample with the key/value cache prints the same text as --no-cache, past the positional table too") {
  // seq_len 12: a 3-token prompt and 40 new tokens slide the window 31 times; both model kinds.
  const std::string out = "run.out_dir=\"" + tmp_dir() + "\"";
  for (const std::string kind : {"seed", "transformer"}) {
    INFO(kind);
    const std::string name = "cli_cache_" + kind;
    REQUIRE(cli({"train", kReverse, out, "run.name=\"" + name + "\"", "model.kind=\"" + kind + "\"", "model.causal=true",
                 "model.layers=2", "model.heads=2", "train.steps=20", "schedule.warmup_steps=0", "--force"}) == 0);
    for (const std::string temperature : {"0", "1"}) {
      const std::vector<std::string> args = {"sample", tmp_dir() + "/" + name, "--prompt", "1 2 3", "--length", "40",
                                             "--temperature", temperature, "--seed", "7"};
      const auto cached = capture(args);
      auto no_cache_args = args;
      no_cache_args.push_back("--no-cache");
      const auto uncached = capture(no_cache_args);
      CHECK(cached.code == 0);
      CHECK(std::count(cached.out.begin(), cached.out.end(), ' ') == 43);
      CHECK(cached.out == uncached.out);
    }
  }
}

TEST_CASE("resuming a finished run says it is finished") {
  const std::string run = trained_reverse();
  const auto r = capture({"train", "--resume", run});
  CHECK(r.code == 0);
  CHECK(r.out.find("is already finished: 100 of train.steps = 100 done; nothing to do") != std::string::npos);
  CHECK(r.out.find("validation loss 0.0000") == std::string::npos);
}

TEST_CASE("qkv init writes the weights a run starts from, with full metadata") {
  const std::string out = "run.out_dir=\"" + tmp_dir() + "\"";
  const std::string init = tmp_dir() + "/reverse.init.safetensors";
  const auto w = capture({"init", kReverse, "model.d_model=32", "--out", init});
  CHECK(w.code == 0);
  CHECK(w.out.find("(4496 parameters, before any training step)") != std::string::npos);
  // A run of the same config with lr 0 leaves its initial weights unchanged: they are what init wrote.
  REQUIRE(cli({"train", kReverse, out, "run.name=\"cli_init\"", "model.d_model=32", "train.steps=1", "optim.lr=0",
               "schedule.kind=\"constant\"", "schedule.warmup_steps=0", "--force"}) == 0);
  const auto a = read_safetensors(init), b = read_safetensors(tmp_dir() + "/cli_init/model.safetensors");
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    CHECK(a.tensors[i].first == b.tensors[i].first);
    CHECK(a.tensors[i].second.to_vector() == b.tensors[i].second.to_vector());
  }
  CHECK(a.metadata.at("qkv.model") == b.metadata.at("qkv.model"));
  CHECK(capture({"eval", init}).code == 0);  // the metadata rebuilds model and data
  CHECK(capture({"init", kReverse}).code == 2);  // --out is required
  CHECK(capture({"init", kReverse, "--out", tmp_dir()}).err.find("is a directory") != std::string::npos);
}

TEST_CASE("the end-of-training attention picture is printed only while it fits a terminal line") {
  const std::string out = "run.out_dir=\"" + tmp_dir() + "\"";
  const auto narrow_run = capture({"train", kReverse, out, "run.name=\"cli_pic12\"", "train.steps=2",
                                   "schedule.warmup_steps=0", "--force"});
  CHECK(narrow_run.out.find("Learned attention (layer 0, head 0)") != std::string::npos);
  CHECK(std::count(narrow_run.out.begin(), narrow_run.out.end(), '|') == 12);  // one row per query of 12 tokens
  const auto wide_run = capture({"train", kReverse, out, "run.name=\"cli_pic64\"", "data.seq_len=64", "train.steps=2",
                                 "schedule.warmup_steps=0", "--force"});
  CHECK(wide_run.code == 0);
  CHECK(wide_run.out.find("a 64x64 map per layer and head, too wide to print here") != std::string::npos);
  CHECK(std::count(wide_run.out.begin(), wide_run.out.end(), '\n') < 20);
}

TEST_CASE("qkv --help is a man page that stays accurate: every command, documented, the exit codes") {
  const auto help = capture({"--help"});
  CHECK(help.code == 0);
  std::string docs;  // README and docs/*.md: every command is shown somewhere
  for (const auto& f : std::filesystem::directory_iterator(std::string(QKV_SOURCE_DIR) + "/docs"))
    if (f.path().extension() == ".md") docs += slurp(f.path().string());
  docs += slurp(std::string(QKV_SOURCE_DIR) + "/README.md");
  REQUIRE(command_names().size() == 12);
  for (const std::string& command : command_names()) {
    INFO(command);
    CHECK(help.out.find("\n  " + command + " ") != std::string::npos);
    CHECK(docs.find("qkv " + command + " ") != std::string::npos);
    CHECK(capture({command, "--help"}).code == 0);
  }
  // The exit codes it lists are the ones this file's other cases see.
  for (const char* line : {"  0    success", "  1    runtime failure", "  2    usage, config or input error",
                           "  130  stopped by SIGINT"})
    CHECK(help.out.find(line) != std::string::npos);
  CHECK(capture({"frobnicate"}).code == 2);
}

TEST_CASE("qkv bench --profile prints where a step's time goes, by op family, shares adding up to the step") {
  const auto b = capture({"bench", kReverse, "--steps", "20", "--warmup", "2", "--profile"});
  REQUIRE(b.code == 0);
  CHECK(b.out.rfind("steps_per_s=", 0) == 0);
  for (const char* family : {"GEMM (linear, matmul)", "attention", "cross-entropy", "embedding",
                             "autograd bookkeeping", "optimizer, clipping and the rest"})
    CHECK_MESSAGE(b.out.find(std::string("\n") + family + " ") != std::string::npos, family);
  double share = 0;  // the last column of every family row
  std::istringstream lines(b.out);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line.back() == '%' && line.find("share") == std::string::npos)
      share += std::stod(line.substr(line.rfind(' ') + 1));
  CHECK(share == doctest::Approx(100.0).epsilon(0.01));
  CHECK(capture({"bench", kReverse, "--steps", "2"}).out.find("op family") == std::string::npos);  // only on request
}

TEST_CASE("nothing lost to a full stdout: every command that prints data exits 1 when its output cannot be written") {
  const std::string out = "run.out_dir=\"" + tmp_dir() + "\"";
  REQUIRE(cli({"train", kReverse, out, "run.name=\"cli_full\"", "train.steps=20", "model.causal=true", "schedule.warmup_steps=0", "train.target_accuracy=0", "--force"}) == 0);
  const std::string qkv = std::string(QKV_BINARY_DIR) + "/bin/qkv", run = tmp_dir() + "/cli_full";
  const std::string text = tmp_dir() + "/full.txt";
  std::ofstream(text) << "Hello world, this is a text.\n";
  const auto status = [&](const std::string& args) {
    const std::string err = tmp_dir() + "/full.err";
    const int rc = std::system((qkv + " " + args + " > /dev/full 2> " + err).c_str());
    std::ifstream in(err);
    const std::string message{std::istreambuf_iterator<char>(in), {}};
    INFO(args, ": ", message);
    CHECK(message.find("qkv: failed: writing to standard output: No space left on device") != std::string::npos);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  CHECK(status("tokenizer encode " + text) == 1);
  CHECK(status("tokenizer encode " + text + " --json") == 1);
  CHECK(status("tokenizer decode --help > /dev/null; echo '[31373, 995]' | " + qkv + " tokenizer decode -") == 1);
  CHECK(status("sample " + run + " --prompt '1 2 3' --length 5") == 1);
  CHECK(status("eval " + run + " --json") == 1);
  CHECK(status("info " + kReverse) == 1);
  CHECK(status("predict " + run + " --tokens '3 1 4 1 5 9 2 6 5 3 5 8'") == 1);
}

TEST_CASE("eval --val-size evaluates on that many examples of the model's own data") {
  const std::string out = "run.out_dir=\"" + tmp_dir() + "\"";
  REQUIRE(cli({"train", kReverse, out, "run.name=\"cli_valsize\"", "train.steps=20", "schedule.warmup_steps=0", "train.target_accuracy=0", "--force"}) == 0);
  const auto r = test::run_cli_captured({"qkv", "eval", tmp_dir() + "/cli_valsize", "--val-size", "16", "--json"}, tmp_dir());
  CHECK(r.code == 0);
  CHECK(nlohmann::json::parse(r.out)["examples"] == 16);
  CHECK(cli({"eval", tmp_dir() + "/cli_valsize", "--val-size", "0"}) == 2);
}
