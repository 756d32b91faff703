#include "run_support.h"

#include <qkv/core/parallel.h>
#include <qkv/datasets/bpe_train.h>
#include <qkv/datasets/shards.h>
#include <qkv/train/io/files.h>
#include <qkv/train/run/run_dir.h>
#include <qkv/layers/save.h>
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
using namespace qkv::test;

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
  SUBCASE("bf16 (train.precision): reverse >= 99% and sort >= 95%, as in float32") {
    const auto r = train(shipped("reverse", {"run.name=\"reverse_bf16\"", "train.precision=\"bf16\""}), quiet());
    CHECK(r.val.seq_acc >= 0.99);
    const auto s = train(shipped("sort", {"run.name=\"sort_bf16\"", "train.precision=\"bf16\"",
                                          "train.target_accuracy=0.95"}), quiet());
    CHECK(s.val.seq_acc >= 0.95);
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
  // sort with dropout (the data and dropout streams), text in file order (the data position decides a batch),
  // and random windows of token shards (the data stream draws them).
  const auto shards = (process_dir() / "resume_tokens").string();
  {
    std::string text;
    for (int i = 0; i < 300; ++i) text += "Token " + std::to_string(i) + " attends to every key; the values are summed.\n";
    std::ofstream(process_dir() / "resume_corpus.txt") << text;
    // a 300-token tokenizer learned from the corpus: GPT-2's 50 257 rows would make this test minutes under ASan
    BpeTrainOptions bpe;
    bpe.vocab_size = 300;
    const auto tokenizer_dir = (process_dir() / "resume_tokenizer").string();
    train_bpe({(process_dir() / "resume_corpus.txt").string()}, bpe).save(tokenizer_dir);
    TokenizeOptions o;
    o.tokenizer = tokenizer_dir;
    o.out = shards;
    o.val_fraction = 0.2;
    tokenize_files({(process_dir() / "resume_corpus.txt").string()}, o);
  }
  for (const auto& config_extra : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"sort", {"model.dropout=0.1"}},
           {"sort", {"model.dropout=0.1", "train.grad_accum_steps=4", "model.recompute=true", "train.precision=\"bf16\""}},
           {"text", {"data.shuffle=false"}},
           {"tokens", {"data.path=\"" + shards + "\"", "data.seq_len=16", "model.d_model=16", "model.heads=2",
                       "train.batch_size=4"}}}) {
    const auto& config = config_extra.first;
    const auto& extra = config_extra.second;
    INFO(config);
    auto overrides = extra;
    for (const char* o : {"run.name=\"resume_a\"", "train.steps=40", "train.eval_every=10", "train.log_every=5",
                          "train.checkpoint_every=20", "train.target_accuracy=0"})
      overrides.push_back(o);
    const auto cfg_a = shipped(config, overrides);
    auto cfg_b = cfg_a;
    cfg_b.run.name = "resume_b";
    const auto a = train(cfg_a, quiet());
    TrainOptions interrupt = quiet();
    std::atomic<int> stop{0};  // what the qkv program's SIGTERM handler sets (tests/train/cli/cli_faults.sh sends one)
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
    for (std::size_t i = 0; i < wa.tensors.size(); ++i)
      CHECK(wa.tensors[i].second.to_vector() == wb.tensors[i].second.to_vector());
    CHECK(metrics_of(a.run_dir) == metrics_of(b2.run_dir));
  }
}

TEST_CASE("a NaN loss stops the run naming the step; the last good checkpoint stays (float32 and bf16)") {
  for (const std::string precision : {"fp32", "bf16"}) {
    INFO(precision);
    const auto cfg = shipped("reverse", {"run.name=\"nan\"", "optim.name=sgd", "optim.lr=1000", "schedule.kind=constant",
                                         "schedule.warmup_steps=0", "train.checkpoint_every=1", "train.target_accuracy=0",
                                         "train.precision=\"" + precision + "\""});
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
}

TEST_CASE("an existing run directory is refused without --resume or --force") {
  const auto cfg = shipped("reverse", {"run.name=\"exists\"", "train.steps=5"});
  train(cfg, quiet());
  CHECK_ERROR(train(cfg, quiet(false)), "already exists (model.safetensors, 1 checkpoint (newest step_000000005.safetensors)); pass --resume");
  TrainOptions bad = quiet(false);
  bad.resume_dir = out_dir() + "/nope";
  CHECK_ERROR(train(cfg, bad), "resume:");
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
      // bf16 (products of 2^18 multiply-adds and more on oneDNN where the CPU has bf16 instructions), accumulation
      {"sort", {"train.steps=10", "model.dropout=0.1", "model.d_model=128", "train.precision=\"bf16\"",
                "train.grad_accum_steps=2"}},
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
