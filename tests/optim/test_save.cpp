#include "../support.h"

#include <qkv/core/ops.h>
#include <qkv/optim/save.h>

#include <filesystem>

using namespace qkv;

namespace {

struct Experiment {  // two parameters, AdamW with a cosine schedule, a fixed quadratic loss
  Tensor w = Tensor::from({0.5, -1.0, 2.0}).requires_grad_();
  Tensor b = Tensor::from({0.1}).requires_grad_();
  AdamW opt{{{"w", w}, {"b", b}}, {.lr = 0.05, .weight_decay = 0.1}};
  LRSchedule sched{opt, {.kind = "cosine", .warmup_steps = 2, .total_steps = 10}};

  void steps(int n, bool skip_b = false) {
    const Tensor x = Tensor::from({1.0, 2.0, -1.0});
    for (int i = 0; i < n; ++i) {
      opt.zero_grad();
      Tensor loss = sum(pow(w * x - 1.0, 2.0));
      if (!skip_b) loss = loss + sum(pow(b - 3.0, 2.0));
      loss.backward();
      opt.step();
      sched.step();
    }
  }
};


}  // namespace

TEST_CASE("optimizer and schedule state round-trip through a file: the resumed run is bit-identical") {
  Experiment a;
  a.steps(2, /*skip_b=*/true);  // b has no state yet, then its own step count
  a.steps(2);
  const std::string file = test::temp_file("optim.safetensors");
  save(a.opt, file, &a.sched);
  Experiment b;
  b.w.copy_(a.w);
  b.b.copy_(a.b);
  load(b.opt, file, &b.sched);
  CHECK(b.sched.steps() == 4);
  CHECK(b.opt.lr() == a.opt.lr());
  CHECK(b.opt.param_steps(0) == 4);
  CHECK(b.opt.param_steps(1) == 2);
  a.steps(3);
  b.steps(3);
  CHECK(b.w.to_vector() == a.w.to_vector());
  CHECK(b.b.to_vector() == a.b.to_vector());
}

TEST_CASE("optimizer state files: bad input") {
  Experiment a;
  a.steps(1);
  const std::string file = test::temp_file("optim_bad.safetensors");
  save(a.opt, file);  // no schedule
  Experiment b;
  CHECK_ERROR(load(b.opt, file, &b.sched), "holds no schedule state (it was saved without one)");
  const Tensor p = Tensor::zeros({3}).requires_grad_();
  Adam adam({{"w", p}}, {});
  CHECK_ERROR(load(adam, file), "holds the state of AdamW, not of Adam");
  const Tensor q = Tensor::zeros({4}).requires_grad_();
  AdamW other({{"w", q}, {"b", Tensor::zeros({1}).requires_grad_()}}, {});
  CHECK_ERROR(load(other, file), file);  // a shape mismatch, named with the file
  const std::string weights = test::temp_file("weights.safetensors");
  write_safetensors(weights, {{"w", a.w}}, {});
  CHECK_ERROR(load(b.opt, weights), "is not an optimizer state");
  write_safetensors(weights, {}, {{"qkv.kind", "optimizer"}, {"qkv.optimizer", "AdamW"}, {"optim.step", "x1"}});
  CHECK_ERROR(load(b.opt, weights), "metadata 'optim.step' = 'x1' is not a number");
}

TEST_CASE("an optimizer state without the moments of a parameter that took steps is refused, naming what is missing") {
  Experiment a;
  a.steps(3);
  OptimizerState st = a.opt.state_dict();
  st.tensors.erase("w.exp_avg_sq");
  Experiment b;
  CHECK_ERROR(b.opt.load_state_dict(st), "AdamW: load_state_dict: the state lacks 'w.exp_avg_sq' (parameter 'w' has taken 3 steps)");
  st.tensors.clear();  // no optimizer state at all
  CHECK_ERROR(b.opt.load_state_dict(st), "the state lacks 'w.exp_avg'");
  OptimizerState fresh = Experiment().opt.state_dict();  // a state before any step needs none
  CHECK_NOTHROW(b.opt.load_state_dict(fresh));
}
