#pragma once
// Learning-rate schedules as closed forms of the step, each equal to a torch.optim.lr_scheduler composition:
//   warmup (W steps)   LinearLR(start_factor = 1/W, end_factor = 1, total_iters = W - 1): lr * (s + 1) / W
//   constant           after warmup, lr
//   cosine             CosineAnnealingLR(T_max = total - W, eta_min = min_lr) after warmup
//   linear             LinearLR(1, min_lr / lr, total_iters = total - W) after warmup
//   step               StepLR(step_size, gamma) after warmup
// Warmup composes with each (SequentialLR with milestone W).
#include <qkv/optim/optimizer.h>

#include <string>
#include <vector>

namespace qkv {

struct ScheduleOptions {
  std::string kind = "constant";  ///< constant | cosine | linear | step
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 0;  ///< needed by cosine and linear
  double min_lr = 0.0;           ///< floor for cosine and linear
  std::int64_t step_size = 1000;  ///< step: decay every step_size steps
  double gamma = 0.1;             ///< step: multiply by gamma
};

/// The kinds LRSchedule knows (its registry): "constant", "cosine", "linear", "step".
std::vector<std::string> schedule_kinds();

/// Drives an optimizer's lr: call step() after each optimizer step.
/// The checks LRSchedule makes of its options (kind, warmup < total steps where the kind needs a total, ...),
/// without an optimizer: configs ask it early. Throws qkv::Error naming the option.
void check_schedule_options(const ScheduleOptions& options);

class LRSchedule {
 public:
  LRSchedule(Optimizer& optimizer, ScheduleOptions options);
  /// The lr for the update with 0-based index `step`.
  double lr_at(std::int64_t step) const;
  /// Advances one step and sets the optimizer's lr for the next update.
  void step();
  std::int64_t steps() const { return step_; }
  double base_lr() const { return base_lr_; }
  /// Adds "schedule.step" and "schedule.base_lr" to an optimizer state.
  void save(OptimizerState& state) const;
  /// Restores them and the optimizer's lr.
  void load(const OptimizerState& state);

 private:
  Optimizer& optimizer_;
  ScheduleOptions options_;
  double base_lr_;
  std::int64_t step_ = 0;
};

}  // namespace qkv
