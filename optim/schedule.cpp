#include "qkv/optim/schedule.h"

#include <qkv/core/errors.h>

#include <cmath>
#include <numbers>

namespace qkv {

LRSchedule::LRSchedule(Optimizer& optimizer, ScheduleOptions o)
    : optimizer_(optimizer), options_(std::move(o)), base_lr_(optimizer.lr()) {
  const auto& k = options_.kind;
  QKV_CHECK(k == "constant" || k == "cosine" || k == "linear" || k == "step",
            "schedule: unknown kind '{}' (expected constant, cosine, linear or step)", k);
  QKV_CHECK(options_.warmup_steps >= 0, "schedule: invalid warmup_steps = {} (must be >= 0)", options_.warmup_steps);
  QKV_CHECK(options_.min_lr >= 0.0, "schedule: invalid min_lr = {} (must be >= 0)", options_.min_lr);
  if (k == "cosine" || k == "linear")
    QKV_CHECK(options_.total_steps > options_.warmup_steps,
              "schedule: {} needs total_steps ({}) larger than warmup_steps ({})", k, options_.total_steps,
              options_.warmup_steps);
  if (k == "step") {
    QKV_CHECK(options_.step_size > 0, "schedule: invalid step_size = {} (must be > 0)", options_.step_size);
    QKV_CHECK(options_.gamma > 0.0, "schedule: invalid gamma = {} (must be > 0)", options_.gamma);
  }
  optimizer_.set_lr(lr_at(0));
}

double LRSchedule::lr_at(std::int64_t s) const {
  const auto& o = options_;
  const std::int64_t w = o.warmup_steps;
  if (s < w) return base_lr_ * static_cast<double>(s + 1) / static_cast<double>(w);
  const auto t = static_cast<double>(s - w);
  const auto span = static_cast<double>(o.total_steps - w);
  if (o.kind == "cosine") {
    const double tc = std::min(t, span);
    return o.min_lr + (base_lr_ - o.min_lr) * (1.0 + std::cos(std::numbers::pi * tc / span)) / 2.0;
  }
  if (o.kind == "linear") return base_lr_ + (o.min_lr - base_lr_) * std::min(t, span) / span;
  if (o.kind == "step") return base_lr_ * std::pow(o.gamma, std::floor(t / static_cast<double>(o.step_size)));
  return base_lr_;
}

void LRSchedule::step() {
  ++step_;
  optimizer_.set_lr(lr_at(step_));
}

void LRSchedule::save(OptimizerState& state) const {
  state.scalars["schedule.step"] = static_cast<double>(step_);
  state.scalars["schedule.base_lr"] = base_lr_;
}

void LRSchedule::load(const OptimizerState& state) {
  QKV_CHECK(state.scalars.count("schedule.step") && state.scalars.count("schedule.base_lr"),
            "schedule: state lacks 'schedule.step' or 'schedule.base_lr'");
  step_ = static_cast<std::int64_t>(state.scalars.at("schedule.step"));
  base_lr_ = state.scalars.at("schedule.base_lr");
  optimizer_.set_lr(lr_at(step_));
}

}  // namespace qkv
