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
  CHECK(cli({"train", "--resume", tmp_dir() + "/cli_ok", "train.steps=120"}) == 0);
  std::ofstream(tmp_dir() + "/garbage.safetensors") << "not a safetensors file";
  CHECK(cli({"eval", tmp_dir() + "/garbage.safetensors"}) == 2);
}
