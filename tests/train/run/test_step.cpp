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

namespace {
// 20 steps of a small causal transformer with dropout, batch 8, in `k` micro-batches; the final weights.
std::vector<Tensor> accumulated_run(std::int64_t k, bool recompute, std::int64_t steps = 20,
                                    const std::string& kind = "transformer") {
  ModelConfig mc{.kind = kind, .vocab_size = 11, .seq_len = 6, .d_model = 16, .heads = 2, .layers = 2,
                 .causal = true, .dropout = 0.2, .recompute = recompute};
  Generator init(5);
  auto model = build_model(mc, init);
  auto opt = make_optimizer("adamw", model->named_parameters(), AnyOptimizerOptions{.lr = 1e-2});
  LRSchedule sched(*opt, ScheduleOptions{.kind = "constant", .total_steps = steps});
  Generator data(9);
  for (std::int64_t s = 0; s < steps; ++s) {
    Tensor x = randint(0, 11, {8, 6}, data), y = randint(0, 11, {8, 6}, data);
    y.data<std::int64_t>()[s % 48] = kIgnore;  // ignored targets fall unevenly across the micro-batches
    y.data<std::int64_t>()[(7 * s) % 48] = kIgnore;
    const StepStats st = train_step(*model, *opt, sched, {x, y}, {.clip_grad_norm = 1.0, .grad_accum_steps = k});
    REQUIRE(std::isfinite(st.loss));
  }
  return model->parameters();
}
}  // namespace

TEST_CASE("grad_accum_steps: k micro-batches give the step one whole batch gives (dropout and ignored targets)") {
  const auto whole = accumulated_run(1, false);
  for (const std::int64_t k : {2, 4, 8}) {
    INFO("grad_accum_steps ", k);
    const auto parts = accumulated_run(k, false);
    for (std::size_t i = 0; i < whole.size(); ++i) {  // within 1e-6 of each tensor's norm (Adam divides by ~0 here and there)
      const double diff = norm(parts[i].to(kFloat64) - whole[i].to(kFloat64)).item(), size = norm(whole[i].to(kFloat64)).item();
      CHECK(diff <= 1e-6 * size);
    }
  }
  Generator g;
  auto model = build_model({.kind = "seed", .vocab_size = 4, .seq_len = 3, .d_model = 8}, g);
  auto opt = make_optimizer("sgd", model->named_parameters(), AnyOptimizerOptions{.lr = 0.1});
  LRSchedule sched(*opt, ScheduleOptions{.total_steps = 10});
  const Tensor ids = Tensor::zeros({6, 3}, kInt64);
  CHECK_ERROR(train_step(*model, *opt, sched, {ids, ids}, {.grad_accum_steps = 4}),
              "train.grad_accum_steps = 4 does not divide this rank's batch of 6 sequences");
}

TEST_CASE("model.recompute: training is bit-identical to keeping the activations, with accumulation too") {
  const auto kept = accumulated_run(1, false, 6), again = accumulated_run(1, true, 6);
  for (std::size_t i = 0; i < kept.size(); ++i) CHECK_CLOSE(again[i].to(kFloat64), kept[i].to(kFloat64), 0, 0);
  const auto kept2 = accumulated_run(2, false, 6), again2 = accumulated_run(2, true, 6);
  for (std::size_t i = 0; i < kept2.size(); ++i) CHECK_CLOSE(again2[i].to(kFloat64), kept2[i].to(kFloat64), 0, 0);
  const auto gpt2 = accumulated_run(1, false, 6, "gpt2"), gpt2_again = accumulated_run(1, true, 6, "gpt2");
  for (std::size_t i = 0; i < gpt2.size(); ++i) CHECK_CLOSE(gpt2_again[i].to(kFloat64), gpt2[i].to(kFloat64), 0, 0);
}
