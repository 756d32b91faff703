#include "../support.h"

#include <qkv/train/cli.h>

#include <filesystem>
#include <fstream>

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
  const auto d = fs::temp_directory_path() / "qkv_tests" / "cli";
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
