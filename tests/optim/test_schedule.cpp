#include "../support.h"

#include <qkv/optim/schedule.h>

using namespace qkv;

TEST_CASE("schedules equal torch.optim.lr_scheduler value by value") {
  int n = 0;
  for (const auto& s : test::fixture("optim")["schedules"]) {
    INFO(s["kind"].get<std::string>(), " warmup ", s["warmup_steps"].get<int>());
    const Tensor p = Tensor::zeros({1}).requires_grad_();
    SGD opt({{"p", p}}, {.lr = s["base_lr"]});
    LRSchedule sched(opt, {.kind = s["kind"], .warmup_steps = s["warmup_steps"], .total_steps = s["total_steps"],
                           .min_lr = s["min_lr"], .step_size = s["step_size"], .gamma = s["gamma"]});
    for (const auto& lr : s["lrs"]) {
      CHECK(opt.lr() == doctest::Approx(lr.get<double>()).epsilon(1e-9));
      sched.step();
    }
    ++n;
  }
  CHECK(n == 6);
}

// A run resumed with more train.steps than the schedule was made for steps past its end: cosine and linear hold
// min_lr there (torch's cosine would rise again; qkv's never does).
TEST_CASE("cosine and linear hold min_lr past total_steps") {
  for (const char* kind : {"cosine", "linear"}) {
    const Tensor p = Tensor::zeros({1}).requires_grad_();
    SGD opt({{"p", p}}, {.lr = 0.1});
    LRSchedule sched(opt, {.kind = kind, .warmup_steps = 2, .total_steps = 10, .min_lr = 0.01});
    for (int i = 0; i < 10; ++i) sched.step();
    CHECK(opt.lr() == doctest::Approx(0.01));
    for (int i = 0; i < 7; ++i) {
      sched.step();
      CHECK(opt.lr() == doctest::Approx(0.01));
    }
  }
}

TEST_CASE("schedule state is saved with the optimizer's") {
  const Tensor p = Tensor::zeros({1}).requires_grad_();
  SGD a({{"p", p}}, {.lr = 0.1}), b({{"p", p}}, {.lr = 0.1});
  LRSchedule sa(a, {.kind = "cosine", .warmup_steps = 3, .total_steps = 20});
  for (int i = 0; i < 7; ++i) sa.step();
  OptimizerState st = a.state_dict();
  sa.save(st);
  LRSchedule sb(b, {.kind = "cosine", .warmup_steps = 3, .total_steps = 20});
  b.load_state_dict(st);
  sb.load(st);
  CHECK(sb.steps() == 7);
  CHECK(b.lr() == a.lr());
  sa.step();
  sb.step();
  CHECK(b.lr() == a.lr());
}

TEST_CASE("schedule bad input") {
  const Tensor p = Tensor::zeros({1}).requires_grad_();
  SGD opt({{"p", p}}, {.lr = 0.1});
  CHECK_ERROR(LRSchedule(opt, {.kind = "exp"}), "schedule: unknown kind 'exp' (expected constant, cosine, linear, step)");
  CHECK_ERROR(LRSchedule(opt, {.kind = "cosine", .warmup_steps = 10, .total_steps = 10}),
              "schedule: cosine needs total_steps (10) larger than warmup_steps (10)");
  CHECK_ERROR(LRSchedule(opt, {.warmup_steps = -1}), "schedule: invalid warmup_steps = -1");
  CHECK_ERROR(LRSchedule(opt, {.min_lr = -1}), "schedule: invalid min_lr = -1");
  CHECK_ERROR(LRSchedule(opt, {.kind = "step", .step_size = 0}), "schedule: invalid step_size = 0");
}
