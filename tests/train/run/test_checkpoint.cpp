#include "run_support.h"

#include <qkv/train/io/files.h>
#include <qkv/layers/save.h>
#include <qkv/train/run/checkpoint.h>
#include <qkv/train/run/memory.h>
#include <qkv/train/run/model_file.h>
#include <qkv/train/run/run_dir.h>
#include <qkv/train/run/step.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>

using namespace qkv;
using namespace qkv::test;
namespace fs = std::filesystem;

TEST_CASE("an interrupted checkpoint write leaves the previous checkpoint loadable") {
  const auto cfg = shipped("reverse", {"run.name=\"crash\"", "train.steps=20", "train.checkpoint_every=10",
                                       "train.target_accuracy=0", "train.keep_checkpoints=5"});
  const auto r = train(cfg, quiet());
  const std::string ck = r.run_dir + "/checkpoints/";
  // What a crash during the step-30 write leaves: a partial temporary file (the rename never happened).
  std::ofstream(ck + ".step_000000030.safetensors.tmp.999") << "partial";
  TrainOptions resume = quiet(false);
  resume.resume_dir = r.run_dir;
  auto more = cfg;
  more.train.steps = 30;
  const auto r2 = train(more, resume);
  CHECK(r2.steps == 30);
  CHECK(fs::exists(ck + "step_000000030.safetensors"));
  CHECK(read_safetensors(ck + "step_000000020.safetensors").tensors.size() > 0);
}

TEST_CASE("keep_checkpoints deletes the oldest") {
  const auto r = train(shipped("reverse", {"run.name=\"keep\"", "train.steps=50", "train.checkpoint_every=10",
                                           "train.keep_checkpoints=2", "train.target_accuracy=0"}),
                       quiet());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(r.run_dir + "/checkpoints")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"step_000000040.safetensors", "step_000000050.safetensors"});
}

TEST_CASE("resume skips a damaged newest checkpoint and falls back to the intact one before it") {
  const auto cfg = shipped("reverse", {"run.name=\"fallback\"", "train.steps=20", "train.checkpoint_every=10",
                                       "train.target_accuracy=0"});
  const auto r = train(cfg, quiet());
  const std::string newest = r.run_dir + "/checkpoints/step_000000020.safetensors";
  fs::resize_file(newest, fs::file_size(newest) / 2);  // truncated, as a full disk or a bad copy leaves it
  TrainOptions resume = quiet(false);
  resume.resume_dir = r.run_dir;
  const auto r2 = train(cfg, resume);
  CHECK(r2.steps == 20);  // steps 11-20 again, from step 10's checkpoint
  CHECK_NOTHROW(read_safetensors(newest));
  std::ifstream log(r.run_dir + "/train.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK(text.find("resume: skipping step_000000020.safetensors") != std::string::npos);
  CHECK(text.find("from step_000000010.safetensors (step 10), the newest intact checkpoint") != std::string::npos);
}

TEST_CASE("malformed checkpoint metadata is an error naming the file, not a JSON library message") {
  const auto cfg = shipped("reverse", {"run.name=\"bad_ck\"", "train.steps=5", "train.target_accuracy=0"});
  const auto r = train(cfg, quiet());
  const std::string ck = r.run_dir + "/checkpoints/step_000000005.safetensors";
  auto f = read_safetensors(ck);
  f.metadata["qkv.checkpoint"] = R"({"step": "five"})";
  write_safetensors(ck, f.tensors, f.metadata);
  TrainOptions resume = quiet(false);
  resume.resume_dir = r.run_dir;
  CHECK_ERROR(train(cfg, resume), "no checkpoint of " + r.run_dir + " could be read (the newest: resume: " + ck +
                                      ": the qkv.checkpoint metadata is incomplete or malformed");
}

namespace {
// Rewrites one checkpoint with `edit` applied to its qkv.checkpoint JSON and tensors.
void craft_checkpoint(const std::string& path, const std::function<void(nlohmann::json&, SafetensorsFile&)>& edit) {
  auto f = read_safetensors(path);
  auto ck = nlohmann::json::parse(f.metadata.at("qkv.checkpoint"));
  edit(ck, f);
  f.metadata["qkv.checkpoint"] = ck.dump();
  write_safetensors(path, f.tensors, f.metadata);
}
std::string resume_error(const Config& cfg, const std::string& run_dir) {
  TrainOptions resume = quiet(false);
  resume.resume_dir = run_dir;
  return test::error_of([&] { train(cfg, resume); });
}
}  // namespace

// A negative or huge data_position read outside the dataset (heap bytes as token ids, or SIGSEGV); a NaN lr or a
// negative second moment trained on silently.
TEST_CASE("every field a checkpoint gives is checked against the data and the model before use") {
  const auto cfg = shipped("reverse", {"run.name=\"crafted\"", "train.steps=4", "train.target_accuracy=0"});
  const auto r = train(cfg, quiet());
  const std::string ck = r.run_dir + "/checkpoints/step_000000004.safetensors";
  const std::string good = read_file_bytes(ck);
  const auto restore = [&] { write_file_atomic(ck, good); };
  const std::vector<std::pair<std::function<void(nlohmann::json&, SafetensorsFile&)>, std::string>> cases = {
      {[](nlohmann::json& j, SafetensorsFile&) { j["data_position"] = -5; }, "data: the saved position -5 is out of range"},
      {[](nlohmann::json& j, SafetensorsFile&) { j["data_position"] = 1LL << 62; }, "data: the saved position 4611686018427387904 is out"},
      {[](nlohmann::json& j, SafetensorsFile&) { j["optim_scalars"]["lr"] = -1.0; }, "'lr' = -1 is not a finite number >= 0"},
      {[](nlohmann::json& j, SafetensorsFile&) { j["optim_scalars"]["step"] = 2.5; }, "'step' = 2.5 is not a count"},
      {[](nlohmann::json& j, SafetensorsFile&) { j["optim_scalars"]["schedule.step"] = -3.0; }, "'schedule.step' = -3 is not a count"},
      {[](nlohmann::json&, SafetensorsFile& f) {
         for (auto& [n, t] : f.tensors)
           if (n.find("exp_avg_sq") != std::string::npos) t.data<float>()[0] = -1.f;
       }, "has negative values (a second moment cannot)"},
      {[](nlohmann::json&, SafetensorsFile& f) {
         for (auto& [n, t] : f.tensors)
           if (n.find(".exp_avg") != std::string::npos && n.find("_sq") == std::string::npos) t.data<float>()[0] = NAN;
       }, "exp_avg' has 1 value that is not finite"},
  };
  for (const auto& [edit, message] : cases) {
    craft_checkpoint(ck, edit);
    const std::string err = resume_error(cfg, r.run_dir);
    CHECK_MESSAGE(err.find(message) != std::string::npos, err);
    restore();
  }
}

TEST_CASE("checkpoints are ordered by their step as a number, past step 999,999,999") {
  const fs::path dir = test::scratch_dir("ck_order");
  for (const char* n : {"step_1000000000.safetensors", "step_999999999.safetensors", "step_000000005.safetensors",
                        ".step_000000007.safetensors.tmp.1", "step_x.safetensors", "step_5.txt", "step_-1.safetensors"})
    std::ofstream(dir / n) << "x";
  std::vector<std::string> names;
  for (const auto& p : list_checkpoints(dir)) names.push_back(p.filename().string());
  CHECK(names == std::vector<std::string>{"step_000000005.safetensors", "step_999999999.safetensors",
                                          "step_1000000000.safetensors"});
  CHECK(checkpoint_step(checkpoint_name(1'000'000'000)) == 1'000'000'000);
  CHECK(checkpoint_step("step_.safetensors") == -1);
  CHECK(checkpoint_step("step_12x.safetensors") == -1);  // digits, then something else: not a checkpoint
  CHECK(checkpoint_step("step_-3.safetensors") == -1);
  CHECK(checkpoint_step("step_99999999999999999999.safetensors") == -1);  // beyond int64
}

// A run that stopped at train.target_accuracy trained on when resumed, and replaced its model.
TEST_CASE("resuming a run that reached its target accuracy trains nothing, unless the target is lifted") {
  const auto cfg = shipped("reverse", {"run.name=\"at_target\"", "train.steps=2000", "train.eval_every=20",
                                       "train.target_accuracy=0.3"});
  const auto r = train(cfg, quiet());
  REQUIRE(r.stopped_early);
  const auto model_time = fs::last_write_time(r.run_dir + "/model.safetensors");
  TrainOptions resume = quiet(false);
  resume.resume_dir = r.run_dir;
  const auto again = train(cfg, resume);
  CHECK(again.already_finished);
  CHECK(again.steps == r.steps);
  CHECK(again.finished_note.find("it reached train.target_accuracy = 0.3") != std::string::npos);
  CHECK(again.finished_note.find("train.target_accuracy=0") != std::string::npos);
  CHECK(fs::last_write_time(r.run_dir + "/model.safetensors") == model_time);
  Config lifted = cfg;
  lifted.train.target_accuracy = 0;
  lifted.train.steps = r.steps + 3;
  const auto on = train(lifted, resume);
  CHECK_FALSE(on.already_finished);
  CHECK(on.steps == r.steps + 3);
}

// A text file whose vocabulary changed (same size, e -> é) resumed with every id meaning another character.
TEST_CASE("a resumed run refuses data that changed: a text vocabulary, jsonl examples") {
  const fs::path box = test::scratch_dir("changed_data");
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the quick brown fox jumps over the lazy dog. ";
  std::ofstream(box / "a.txt") << text;
  auto cfg = load_config(std::string(QKV_SOURCE_DIR) + "/configs/reverse.toml",
                         {"run.out_dir=\"" + box.string() + "\"", "run.name=\"text\"", "data.task=\"text\"",
                          "data.path=\"" + (box / "a.txt").string() + "\"", "model.causal=true", "train.steps=3",
                          "schedule.warmup_steps=0", "train.target_accuracy=0"});
  const auto r = train(cfg, quiet());
  std::string changed = text;
  for (auto pos = changed.find('e'); pos != std::string::npos; pos = changed.find('e', pos)) changed.replace(pos, 1, "é");
  std::ofstream(box / "a.txt") << changed;
  const std::string err = resume_error(cfg, r.run_dir);
  CHECK_MESSAGE(err.find("the data's vocabulary changed since this checkpoint (28 characters then, 28 now; id 6 was "
                         "'e', is 'f')") != std::string::npos, err);

  std::ofstream j1(box / "a.jsonl");
  for (int i = 0; i < 20; ++i) j1 << "{\"input\": [1, 2, 3], \"target\": [3, 2, " << (i % 4) << "]}\n";
  j1.close();
  auto jcfg = load_config(std::string(QKV_SOURCE_DIR) + "/configs/reverse.toml",
                          {"run.out_dir=\"" + box.string() + "\"", "run.name=\"jsonl\"", "data.task=\"jsonl\"",
                           "data.path=\"" + (box / "a.jsonl").string() + "\"", "data.seq_len=3", "data.vocab_size=4",
                           "train.steps=3", "schedule.warmup_steps=0", "train.target_accuracy=0"});
  const auto rj = train(jcfg, quiet());
  std::ofstream(box / "a.jsonl", std::ios::app) << "{\"input\": [0, 0, 0], \"target\": [0, 0, 0]}\n";
  const std::string jerr = resume_error(jcfg, rj.run_dir);
  CHECK_MESSAGE(jerr.find("the data changed since this checkpoint (its examples' fingerprint was jsonl:18+2:") !=
                    std::string::npos, jerr);
}

TEST_CASE("a resumed run's metrics keep every line up to its checkpoint's step, the step's own lines included") {
  const fs::path dir = test::scratch_dir("truncate_metrics");
  const fs::path path = dir / "metrics.jsonl";
  std::ofstream(path) << R"({"step":5,"split":"train"})" "\n" R"({"step":10,"split":"train"})" "\n"
                      << R"({"step":10,"split":"val"})" "\n" R"({"step":15,"split":"train"})" "\n" << "not json\n";
  truncate_metrics(path, 10);
  std::ifstream in(path);
  const std::string kept(std::istreambuf_iterator<char>(in), {});
  CHECK(kept == R"({"step":5,"split":"train"})" "\n" R"({"step":10,"split":"train"})" "\n" R"({"step":10,"split":"val"})" "\n");
}
