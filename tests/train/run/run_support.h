#pragma once
// Shared by the tests of train/run: run directories under this test process's folder, the shipped configs, quiet
// training options, and metrics without their timing.
#include "../../support.h"

#include <qkv/train/run/config.h>
#include <qkv/train/run/trainer.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace qkv::test {

inline std::string out_dir() {
  const auto dir = process_dir() / "runs";
  std::filesystem::create_directories(dir);
  return dir.string();
}
/// A shipped config (configs/NAME.toml) writing under out_dir(), with no warmup so any step count is valid.
inline Config shipped(const std::string& name, std::vector<std::string> overrides) {
  overrides.push_back("run.out_dir=\"" + out_dir() + "\"");
  overrides.push_back("schedule.warmup_steps=0");
  return load_config(std::string(QKV_SOURCE_DIR) + "/configs/" + name + ".toml", overrides);
}
inline TrainOptions quiet(bool force = true) {
  TrainOptions o;
  o.force = force;
  o.quiet = true;
  return o;
}
/// metrics.jsonl without the timing field, which no two runs share.
inline std::vector<std::string> metrics_of(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    j.erase("tokens_per_s");
    out.push_back(j.dump());
  }
  return out;
}

}  // namespace qkv::test
