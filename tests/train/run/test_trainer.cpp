#include "../../support.h"

#include <qkv/core/parallel.h>
#include <qkv/train/io/files.h>
#include <qkv/train/run/run_dir.h>
#include <qkv/train/io/safetensors.h>
#include <qkv/train/run/trainer.h>
#include <qkv/train/run/memory.h>
#include <qkv/train/run/model_file.h>
#include <qkv/train/run/run.h>
#include <qkv/train/use/attention_view.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>

using namespace qkv;
namespace fs = std::filesystem;

namespace {
std::string out_dir() {
  const auto dir = test::process_dir() / "runs";
  fs::create_directories(dir);
  return dir.string();
}
Config shipped(const std::string& name, std::vector<std::string> overrides) {
  overrides.push_back("run.out_dir=\"" + out_dir() + "\"");
  overrides.push_back("schedule.warmup_steps=0");  // short runs: no warmup, so any step count is valid
  return load_config(std::string(QKV_SOURCE_DIR) + "/configs/" + name + ".toml", overrides);
}
TrainOptions quiet(bool force = true) {
  TrainOptions o;
  o.force = force;
  o.quiet = true;
  return o;
}
// metrics.jsonl without the timing field, which no two runs share.
std::vector<std::string> metrics_of(const std::string& run_dir) {
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
}  // namespace

TEST_CASE("shipped configs reach their accuracy (short runs)") {
  SUBCASE("reverse, the make train default: >= 99% validation sequence accuracy") {
    const auto r = train(shipped("reverse", {}), quiet());
    CHECK(r.val.seq_acc >= 0.99);
    CHECK(fs::exists(r.run_dir + "/model.safetensors"));
    CHECK(fs::exists(r.run_dir + "/config.toml"));
    CHECK(fs::exists(r.run_dir + "/train.log"));
  }
  SUBCASE("sort, 2-layer transformer: >= 95%") {
    const auto r = train(shipped("sort", {"train.target_accuracy=0.95"}), quiet());
    CHECK(r.val.seq_acc >= 0.95);
  }
  SUBCASE("recall: >= 95%") {
    const auto r = train(shipped("recall", {}), quiet());
    CHECK(r.val.seq_acc >= 0.95);
  }
  SUBCASE("text: validation loss falls well below uniform guessing") {
    const auto r = train(shipped("text", {"train.steps=150", "train.eval_every=150"}), quiet());
    CHECK(r.val.loss < 2.8);  // uniform over the ~76 characters would be ln 76 = 4.3
  }
}

TEST_CASE("resume after SIGTERM is bit-identical to an uninterrupted run") {
  const auto cfg_a = shipped("sort", {"run.name=\"resume_a\"", "train.steps=40", "train.eval_every=10",
                                      "train.log_every=5", "train.checkpoint_every=20", "train.target_accuracy=0",
                                      "model.dropout=0.1"});
  auto cfg_b = cfg_a;
  cfg_b.run.name = "resume_b";
  const auto a = train(cfg_a, quiet());
  TrainOptions interrupt = quiet();
  std::atomic<int> stop{0};  // what the qkv program's SIGTERM handler sets (tests/train/cli_faults.sh sends one)
  interrupt.stop = &stop;
  interrupt.on_step = [&](std::int64_t step) {
    if (step == 27) stop = SIGTERM;  // finish the step, checkpoint, exit 143
  };
  const auto b1 = train(cfg_b, interrupt);
  CHECK(b1.exit_code == 143);
  CHECK(b1.steps == 27);
  CHECK(fs::exists(b1.run_dir + "/checkpoints/step_000000027.safetensors"));
  TrainOptions resume = quiet(false);
  resume.resume_dir = b1.run_dir;
  const auto b2 = train(cfg_b, resume);
  CHECK(b2.exit_code == 0);
  CHECK(b2.steps == 40);
  const auto wa = read_safetensors(a.run_dir + "/model.safetensors");
  const auto wb = read_safetensors(b2.run_dir + "/model.safetensors");
  REQUIRE(wa.tensors.size() == wb.tensors.size());
  for (std::size_t i = 0; i < wa.tensors.size(); ++i) CHECK(wa.tensors[i].second.to_vector() == wb.tensors[i].second.to_vector());
  CHECK(metrics_of(a.run_dir) == metrics_of(b2.run_dir));
}

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

TEST_CASE("a NaN loss stops the run naming the step; the last good checkpoint stays") {
  const auto cfg = shipped("reverse", {"run.name=\"nan\"", "optim.name=sgd", "optim.lr=1000", "schedule.kind=constant",
                                       "schedule.warmup_steps=0", "train.checkpoint_every=1", "train.target_accuracy=0"});
  std::string msg;
  try {
    train(cfg, quiet());
  } catch (const TrainingError& e) {
    msg = e.what();
  }
  CHECK(msg.find("step ") == 0);
  CHECK((msg.find("the loss is nan") != std::string::npos || msg.find("the gradient norm is") != std::string::npos ||
         msg.find("the loss is inf") != std::string::npos));
  const std::string ck = out_dir() + "/nan/checkpoints";
  REQUIRE(fs::exists(ck));
  for (const auto& e : fs::directory_iterator(ck)) CHECK_NOTHROW(read_safetensors(e.path().string()));
}

TEST_CASE("an existing run directory is refused without --resume or --force") {
  const auto cfg = shipped("reverse", {"run.name=\"exists\"", "train.steps=5"});
  train(cfg, quiet());
  CHECK_ERROR(train(cfg, quiet(false)), "already exists (model.safetensors, 1 checkpoint (newest step_000000005.safetensors)); pass --resume");
  TrainOptions bad = quiet(false);
  bad.resume_dir = out_dir() + "/nope";
  CHECK_ERROR(train(cfg, bad), "resume:");
}

TEST_CASE("evaluate counts tokens and whole sequences, skipping ignored positions") {
  auto model = build_model({.kind = "seed", .vocab_size = 4, .seq_len = 3, .d_model = 8});
  Batch b{Tensor::from(std::vector<std::int64_t>{0, 1, 2, 3, 2, 1}, {2, 3}),
          Tensor::from(std::vector<std::int64_t>{-100, -100, -100, -100, -100, -100}, {2, 3})};
  const auto e = evaluate(*model, b, 1);
  CHECK(e.token_acc == 0.0);
  CHECK(e.seq_acc == 0.0);  // no sequence has a target: none is counted right (it was 1.0)
}

namespace {
// Predicts its input token (logit 10 there, 0 elsewhere): evaluate() then scores hand-made predictions.
class EchoModel : public LanguageModel {
 public:
  EchoModel() : LanguageModel({.vocab_size = 4, .seq_len = 3}) {}
  AttentionResult attend(const Tensor& ids, const Tensor& = {}, bool = true) override {
    std::vector<float> v(static_cast<std::size_t>(ids.numel() * 4), 0.0f);
    for (std::int64_t i = 0; i < ids.numel(); ++i) v[static_cast<std::size_t>(i * 4 + ids.data<std::int64_t>()[i])] = 10;
    return {Tensor::from(v, {ids.size(0), ids.size(1), 4}), Tensor()};
  }
  std::string name() const override { return "EchoModel"; }
};
}  // namespace

TEST_CASE("evaluate scores hand-made predictions: token and sequence accuracy, ignored targets, the loss") {
  // Predictions (the inputs) against targets, one sequence per row:
  //   [0 1 2] vs [0 1 2]           3 of 3 right, sequence right
  //   [1 1 1] vs [1 2 -100]        1 of 2 right, sequence wrong
  //   [3 0 0] vs [-100 0 -100]     1 of 1 right, sequence right
  //   [2 2 2] vs [-100 -100 -100]  nothing counted, and not a sequence that counts
  EchoModel model;
  const Batch b{Tensor::from(std::vector<std::int64_t>{0, 1, 2, 1, 1, 1, 3, 0, 0, 2, 2, 2}, {4, 3}),
                Tensor::from(std::vector<std::int64_t>{0, 1, 2, 1, 2, -100, -100, 0, -100, -100, -100, -100}, {4, 3})};
  const double right = std::log1p(3 * std::exp(-10.0)), wrong = std::log(std::exp(10.0) + 3);  // cross-entropies
  for (const std::int64_t batch : {1, 3, 4}) {
    INFO("batch ", batch);
    const auto e = evaluate(model, b, batch);
    CHECK(e.token_acc == doctest::Approx(5.0 / 6.0));
    CHECK(e.seq_acc == doctest::Approx(2.0 / 3.0));
    CHECK(e.loss == doctest::Approx((5 * right + wrong) / 6).epsilon(1e-6));
  }
}

TEST_CASE("render_attention shades each row") {
  const Tensor w = Tensor::from(std::vector<float>{0, 1, 1, 0}, {2, 2});
  const std::string s = render_attention(w, {"a", "b"});
  CHECK(s.find("a |    @\n") != std::string::npos);
  CHECK(s.find("b |  @  \n") != std::string::npos);
  CHECK_ERROR(render_attention(Tensor::ones({1, 2, 2}), {"a", "b"}), "render_attention: expected (2, 2) weights for 2 "
                                                                     "tokens, got shape [1, 2, 2]");
  // A row of zeros (scores that overflowed to -inf) or NaN is not a distribution: marked.
  const Tensor odd = Tensor::from(std::vector<float>{0, 0, 0.5f, 0.5f, std::nanf(""), 1}, {3, 2});
  CHECK(rows_not_distributions(odd) == std::vector<std::int64_t>{0, 2});
  const std::string m = render_attention(Tensor::from(std::vector<float>{0, 0, 0, 1}, {2, 2}), {"a", "b"});
  const auto mark = m.find("<- does not sum to 1\n");
  CHECK((mark != std::string::npos && m.find("a |") < mark && mark < m.find("b |")));
  CHECK(m.find("b |    @\n") != std::string::npos);
}

TEST_CASE("model.init loads initial weights by name, strictly") {
  const auto first = train(shipped("reverse", {"run.name=\"init_src\"", "train.steps=30"}), quiet());
  // Starting from those weights with lr 0 leaves them unchanged: they were really loaded.
  const auto cfg = shipped("reverse", {"run.name=\"init_dst\"", "train.steps=1", "optim.lr=0",
                                       "model.init=\"" + first.run_dir + "/model.safetensors\""});
  const auto second = train(cfg, quiet());
  const auto a = read_safetensors(first.run_dir + "/model.safetensors");
  const auto b = read_safetensors(second.run_dir + "/model.safetensors");
  for (std::size_t i = 0; i < a.tensors.size(); ++i) CHECK(a.tensors[i].second.to_vector() == b.tensors[i].second.to_vector());
  // A file for another model is refused, naming what does not fit.
  const auto bad = shipped("reverse", {"run.name=\"init_bad\"", "model.d_model=16",
                                       "model.init=\"" + first.run_dir + "/model.safetensors\""});
  CHECK_ERROR(train(bad, quiet()), "shape mismatches: tok_emb.weight (file [16, 64], model [16, 16])");
  // A NaN weight is refused before training (and before qkv init would copy it), naming the tensor.
  auto f = read_safetensors(first.run_dir + "/model.safetensors");
  f.tensors[1].second.data<float>()[2] = NAN;
  const std::string nan_path = first.run_dir + "/nan.safetensors";
  write_safetensors(nan_path, f.tensors, f.metadata);
  const auto nan = shipped("reverse", {"run.name=\"init_nan\"", "model.init=\"" + nan_path + "\""});
  CHECK_ERROR(train(nan, quiet()), "model.init: " + nan_path + ": tensor '" + f.tensors[1].first +
                                       "' has 1 value that is not finite");
  CHECK_ERROR(write_initial_model(nan, first.run_dir + "/init_out.safetensors"), "is not finite");
  CHECK_FALSE(fs::exists(first.run_dir + "/init_out.safetensors"));
}

TEST_CASE("a batch whose targets are all -100 adds zero loss and zero gradient, not NaN (B3)") {
  const std::string path = out_dir() + "/all_ignored.jsonl";
  {
    // In file order, the 4 steps' batches of 4 are the first 16 lines, all ignored; the last 4 have targets (a
    // file with none at all is refused at load).
    std::ofstream f(path);
    for (int i = 0; i < 16; ++i) f << R"({"input": [1, 2, 3], "target": [-100, -100, -100]})" << "\n";
    for (int i = 0; i < 4; ++i) f << R"({"input": [1, 2, 3], "target": [3, 2, 1]})" << "\n";
  }
  auto cfg = shipped("reverse", {"run.name=\"all_ignored\"", "data.task=\"jsonl\"", "data.path=\"" + path + "\"",
                                 "data.seq_len=3", "train.steps=4", "train.batch_size=4", "train.target_accuracy=0",
                                 "data.shuffle=false"});
  const auto r = train(cfg, quiet());
  CHECK(r.steps == 4);
  int train_lines = 0;
  for (const auto& line : metrics_of(r.run_dir)) {
    const auto j = nlohmann::json::parse(line);
    if (j["split"] != "train") continue;
    ++train_lines;
    CHECK(j["loss"].get<double>() == 0.0);
    CHECK(j["grad_norm"].get<double>() == 0.0);
  }
  CHECK(train_lines > 0);
}

TEST_CASE("a non-finite loss before any checkpoint names no checkpoint file (B3)") {
  const auto cfg = shipped("reverse", {"run.name=\"nan_early\"", "optim.name=sgd", "optim.lr=1000",
                                       "schedule.kind=constant", "train.checkpoint_every=0", "train.target_accuracy=0"});
  std::string msg;
  try {
    train(cfg, quiet());
  } catch (const TrainingError& e) {
    msg = e.what();
  }
  CHECK(msg.find("no checkpoint had been written yet") != std::string::npos);
  CHECK_FALSE(fs::exists(out_dir() + "/nan_early/checkpoints"));
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

TEST_CASE("resuming a finished run says so and trains nothing") {
  const auto cfg = shipped("reverse", {"run.name=\"finished\"", "train.steps=10", "train.target_accuracy=0"});
  const auto r = train(cfg, quiet());
  TrainOptions resume = quiet(false);
  resume.resume_dir = r.run_dir;
  const auto again = train(cfg, resume);
  CHECK(again.already_finished);
  CHECK(again.steps == 10);
  // If it stopped between its last checkpoint and the final save, resuming writes the final model.
  fs::remove(r.run_dir + "/model.safetensors");
  const auto healed = train(cfg, resume);
  CHECK(fs::exists(r.run_dir + "/model.safetensors"));
  CHECK(healed.exit_code == 0);
}

TEST_CASE("a signal at the last step still writes the final model, then exits 130") {
  const auto cfg = shipped("reverse", {"run.name=\"late_signal\"", "train.steps=6", "train.target_accuracy=0"});
  TrainOptions o = quiet();
  std::atomic<int> stop{0};
  o.stop = &stop;
  o.on_step = [&](std::int64_t step) {
    if (step == 6) stop = SIGINT;
  };
  const auto r = train(cfg, o);
  CHECK(r.exit_code == 130);
  CHECK(fs::exists(r.run_dir + "/model.safetensors"));
  CHECK(fs::exists(r.run_dir + "/checkpoints/step_000000006.safetensors"));
}

TEST_CASE("a checkpoint that cannot be written is a training failure (exit 1), not a usage error") {
  auto cfg = shipped("reverse", {"run.name=\"unwritable\"", "train.steps=6", "train.checkpoint_every=3",
                                 "train.target_accuracy=0"});
  TrainOptions o = quiet();
  o.on_step = [&](std::int64_t step) {
    // The checkpoints folder becomes a file: every write into it fails (even for root, unlike chmod).
    if (step == 1) std::ofstream(out_dir() + "/unwritable/checkpoints") << "in the way";
  };
  std::string msg;
  try {
    train(cfg, o);
  } catch (const TrainingError& e) {
    msg = e.what();
  }
  CHECK(msg.find("step 3: writing the checkpoint failed") == 0);
}

TEST_CASE("the memory estimate refuses what cannot fit, naming the keys; shipped configs fit") {
  for (const char* name : {"reverse", "sort", "recall"}) {
    const Config c = shipped(name, {});
    CHECK(estimate_memory(c, c.data.vocab_size).total() < 1e9);
  }
  CHECK_ERROR(train(shipped("reverse", {"run.name=\"huge\"", "model.d_model=100000"}), quiet()),
              "parameters and optimizer state");
  CHECK_ERROR(train(shipped("sort", {"run.name=\"huge\"", "model.layers=10000", "model.d_model=1024"}), quiet()),
              "model.layers");
  CHECK_ERROR(train(shipped("reverse", {"run.name=\"huge\"", "train.batch_size=10000000", "data.seq_len=100000"}), quiet()),
              "train.batch_size x data.seq_len");
  CHECK_ERROR(train(shipped("reverse", {"run.name=\"huge\"", "data.val_size=10000000", "data.seq_len=100000"}), quiet()),
              "data.val_size x data.seq_len");
  CHECK_FALSE(fs::exists(out_dir() + "/huge"));  // refused before the run directory was made
  // A data file counts: its bytes and the ids made from them (a 197 MB text was estimated at 1 MB).
  const fs::path box = test::scratch_dir("estimate");
  std::ofstream(box / "t.txt") << std::string(1 << 20, 'a');
  const Config text = shipped("reverse", {"data.task=\"text\"", "model.causal=true",
                                          "data.path=\"" + (box / "t.txt").string() + "\""});
  CHECK(estimate_memory(text, 1).data_bytes >= 5 * (1 << 20));
  CHECK(estimate_memory(shipped("reverse", {}), 16).data_bytes < (1 << 20));
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

TEST_CASE("the same run gives bit-identical weights and metrics for 1, 2, 3, 5 and 8 threads") {
  struct Case {
    const char* config;
    std::vector<std::string> overrides;
  };
  const std::vector<Case> cases = {
      {"reverse", {"train.steps=40"}},                                             // the seed model
      {"sort", {"train.steps=20", "model.dropout=0.1"}},                            // a transformer with dropout
      {"text", {"train.steps=8", "train.eval_every=8", "data.val_size=16"}},       // the causal text model
      {"sort", {"train.steps=20", "optim.clip_grad_norm=0.5", "model.d_model=96", "model.heads=3"}},  // clipping
  };
  const int default_threads = num_threads();
  for (const auto& c : cases) {
    std::vector<std::vector<double>> first_weights;
    std::vector<std::string> first_metrics;
    for (int threads : {1, 2, 3, 5, 8}) {
      auto overrides = c.overrides;
      overrides.push_back("run.name=\"threads_" + std::to_string(threads) + "\"");
      overrides.push_back("train.target_accuracy=0");
      set_num_threads(threads);  // what the qkv program does with train.threads
      const auto r = train(shipped(c.config, overrides), quiet());
      set_num_threads(default_threads);
      std::vector<std::vector<double>> weights;
      for (const auto& [name, t] : read_safetensors(r.run_dir + "/model.safetensors").tensors) weights.push_back(t.to_vector());
      if (threads == 1) {
        first_weights = weights;
        first_metrics = metrics_of(r.run_dir);
        continue;
      }
      CHECK_MESSAGE(weights == first_weights, std::string(c.config) << " " << c.overrides.back() << ": weights differ at " << threads << " threads");
      CHECK_MESSAGE(metrics_of(r.run_dir) == first_metrics, std::string(c.config) << ": metrics differ at " << threads << " threads");
    }
  }
}

TEST_CASE("every ModelConfig field round-trips through a model file's metadata") {
  const ModelConfig m{.kind = "transformer", .vocab_size = 19, .seq_len = 33, .d_model = 24, .d_k = 5, .d_v = 7,
                      .heads = 3, .layers = 4, .d_ff = 40, .causal = true, .attn_bias = true, .dropout = 0.25};
  for (const ModelField& f : model_fields())  // each field differs from its default, so a dropped one shows
    std::visit([&](auto member) { CHECK_MESSAGE(m.*member != ModelConfig{}.*member, f.name); }, f.member);
  const Config c;
  const auto data = make_dataset(c.data, 0);
  const auto meta = model_metadata(m, c, *data);
  CHECK(model_config_from_json(meta.at("qkv.model")) == m);
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
