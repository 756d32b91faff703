#include "../../support.h"

#include <qkv/train/run/run_dir.h>
#include <qkv/train/run/trainer.h>

#include <filesystem>
#include <fstream>

using namespace qkv;
namespace fs = std::filesystem;

namespace {
// A fresh sandbox: out_dir "runs" beside a folder of the user's that must survive everything.
fs::path sandbox(const std::string& name) {
  const auto dir = test::process_dir() / "run_dir" / name;
  fs::remove_all(dir);
  fs::create_directories(dir / "runs");
  fs::create_directories(dir / "precious");
  std::ofstream(dir / "precious" / "thesis.txt") << "years of work";
  std::ofstream(dir / "runs" / "notes.txt") << "the user's notes beside the runs";
  return dir;
}
Config tiny(const fs::path& out_dir, const std::string& name) {
  Config c;
  c.run.out_dir = out_dir.string();
  c.run.name = name;
  c.train.steps = 3;
  c.train.eval_every = 3;
  c.data.val_size = 8;
  return c;
}
TrainOptions forced() {
  TrainOptions o;
  o.force = true;
  o.quiet = true;
  return o;
}
bool intact(const fs::path& box) {
  std::ifstream a(box / "precious" / "thesis.txt"), b(box / "runs" / "notes.txt");
  std::string x, y;
  std::getline(a, x);
  std::getline(b, y);
  return x == "years of work" && y == "the user's notes beside the runs";
}
}  // namespace

TEST_CASE("run.name must be one plain path component (B1)") {
  for (const std::string& bad : std::vector<std::string>{"", ".", "..", "a/b", "../precious", "/tmp/x", std::string("a\0b", 3), "a\\b"})
    CHECK_ERROR(check_run_name(bad, "test.toml:2:8"), "test.toml:2:8: run.name:");
  CHECK_NOTHROW(check_run_name("reverse-2", "x"));
  CHECK_NOTHROW(check_run_name("..hidden", "x"));  // only "." and ".." themselves are special
}

TEST_CASE("--force with a hostile run.name never deletes outside a qkv run directory (B1)") {
  const fs::path box = sandbox("force");
  // The names that wiped folders in 0.1: each is refused before anything is touched.
  for (const std::string& name : std::vector<std::string>{"", "..", "../precious", (box / "precious").string(), "."}) {
    CHECK_ERROR(train(tiny(box / "runs", name), forced()), "run.name:");
    CHECK(intact(box));
  }
  // A user's folder where a run would go is not a qkv run: --force refuses it.
  fs::create_directories(box / "runs" / "mine");
  std::ofstream(box / "runs" / "mine" / "data.csv") << "1,2,3";
  CHECK_ERROR(train(tiny(box / "runs", "mine"), forced()), "is not a qkv run directory");
  CHECK(fs::exists(box / "runs" / "mine" / "data.csv"));
  // A symlink to a run is not replaced either (it would delete through the link).
  const auto real = train(tiny(box / "runs", "real"), forced());
  fs::create_directory_symlink(box / "runs" / "real", box / "runs" / "link");
  CHECK_ERROR(train(tiny(box / "runs", "link"), forced()), "is a symbolic link: a new run never replaces or writes through one");
  CHECK(fs::exists(box / "runs" / "real" / "model.safetensors"));
  // A qkv run is replaced, and only its own directory.
  CHECK(fs::exists(box / "runs" / "real" / ".qkv-run"));
  std::ofstream(box / "runs" / "real" / "stale.txt") << "from the old run";
  train(tiny(box / "runs", "real"), forced());
  CHECK_FALSE(fs::exists(box / "runs" / "real" / "stale.txt"));
  CHECK(fs::exists(box / "runs" / "real" / "model.safetensors"));
  CHECK(intact(box));
  std::ifstream log(box / "runs" / "real" / "train.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK(text.find("--force: replaced the earlier run in") != std::string::npos);
}

TEST_CASE("a run directory of qkv 0.1 (no marker) is recognised by its contents") {
  const fs::path box = sandbox("legacy");
  const fs::path run = box / "runs" / "old";
  fs::create_directories(run / "checkpoints");
  for (const char* f : {"config.toml", "train.log", "metrics.jsonl", "model.safetensors", "checkpoints/step_000000010.safetensors"})
    std::ofstream(run / f) << "x";
  CHECK(is_run_dir(run));
  std::ofstream(run / "paper.tex") << "not qkv's";
  CHECK_FALSE(is_run_dir(run));  // anything qkv did not write makes it the user's folder
  fs::remove(run / "paper.tex");
  std::ofstream(run / "draft.tmp.tex") << "a user's, though its name holds .tmp.";  // qkv's start with '.'
  CHECK_FALSE(is_run_dir(run));
  fs::remove(run / "draft.tmp.tex");
  std::ofstream(run / ".model.safetensors.tmp.77") << "qkv's, left by a kill";
  CHECK(is_run_dir(run));
  std::ofstream(run / "checkpoints" / "step_12.txt") << "not a checkpoint";
  CHECK_FALSE(is_run_dir(run));
}

TEST_CASE("a run directory is locked while a run holds it") {
  const fs::path box = sandbox("lock");
  const fs::path dir = box / "runs" / "busy";
  RunDir held(dir, RunDirMode::Create);
  CHECK(fs::exists(dir / ".qkv-run"));
  // A second writer (flock conflicts between separate opens, even in one process) is refused, naming the holder.
  const std::string pid = "process " + std::to_string(::getpid());
  CHECK_ERROR(RunDir(dir, RunDirMode::Resume), "is in use by " + pid);
  CHECK_ERROR(RunDir(dir, RunDirMode::Force), "is in use by " + pid);
  CHECK_ERROR(train(tiny(box / "runs", "busy"), forced()), "is in use by " + pid);
}

TEST_CASE("a failed start leaves an empty run that a plain rerun reuses; stale temporaries are removed") {
  const fs::path box = sandbox("failed_start");
  Config bad = tiny(box / "runs", "r");
  bad.model.init = (box / "missing.safetensors").string();
  TrainOptions plain;
  plain.quiet = true;
  CHECK_ERROR(train(bad, plain), "missing.safetensors");
  REQUIRE(fs::exists(box / "runs" / "r" / "train.log"));  // the failed start left its log
  std::ofstream(box / "runs" / "r" / ".model.safetensors.tmp.4242") << "partial";
  const auto r = train(tiny(box / "runs", "r"), plain);  // no --force needed: nothing of value was there
  CHECK(r.steps == 3);
  CHECK_FALSE(fs::exists(box / "runs" / "r" / ".model.safetensors.tmp.4242"));
  // Now it holds a trained model: a plain rerun is refused again.
  CHECK_ERROR(train(tiny(box / "runs", "r"), plain), "already exists");
}

TEST_CASE("a symbolic link to a run: resumed where it leads; a new run onto a link is refused saying so") {
  const fs::path box = sandbox("link");
  const fs::path dir = box / "runs" / "real";
  { RunDir made(dir, RunDirMode::Create); }
  fs::create_directory_symlink(dir, box / "runs" / "latest");
  RunDir resumed(box / "runs" / "latest", RunDirMode::Resume);
  CHECK(resumed.path() == fs::canonical(dir));
  CHECK_ERROR(RunDir(box / "runs" / "latest", RunDirMode::Force), "is a symbolic link: a new run never replaces or writes through one");
  fs::create_directory_symlink(box / "nowhere", box / "runs" / "dangling");
  CHECK_ERROR(RunDir(box / "runs" / "dangling", RunDirMode::Resume), "does not exist (it is a symbolic link to nothing)");
  CHECK(fs::is_symlink(box / "runs" / "latest"));
}

TEST_CASE("a run whose data file or shard folder is missing leaves no run directory behind") {
  const fs::path box = sandbox("no_data");
  Config c = tiny(box / "runs", "t");
  c.data.task = "tokens";
  c.data.path = (box / "no-shards").string();
  CHECK_ERROR(train(c, forced()), "has no manifest.json");
  c.data.task = "text";
  CHECK_ERROR(train(c, forced()), "no-shards");
  CHECK_FALSE(fs::exists(box / "runs" / "t"));
}
