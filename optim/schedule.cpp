#include "qkv/optim/schedule.h"

#include <qkv/core/errors.h>

#include <cmath>
#include <numbers>

#include <fmt/ranges.h>

namespace qkv {
namespace {

// The lr after warmup: t steps past it, of span = total_steps - warmup_steps, from base.
using Formula = double (*)(const ScheduleOptions& o, double base, double t, double span);
struct Kind {
  const char* name;
  Formula lr;
  bool needs_total;  // cosine and linear run to total_steps
};

// Schedule kind -> formula: a new schedule is one line here.
const std::vector<Kind>& registry() {
  static const std::vector<Kind> r = {
      {"constant", [](const ScheduleOptions&, double base, double, double) { return base; }, false},
      {"cosine",
       [](const ScheduleOptions& o, double base, double t, double span) {
         return o.min_lr + (base - o.min_lr) * (1.0 + std::cos(std::numbers::pi * std::min(t, span) / span)) / 2.0;
       },
       true},
      {"linear",
       [](const ScheduleOptions& o, double base, double t, double span) {
         return base + (o.min_lr - base) * std::min(t, span) / span;
       },
       true},
      {"step",
       [](const ScheduleOptions& o, double base, double t, double) {
         return base * std::pow(o.gamma, std::floor(t / static_cast<double>(o.step_size)));
       },
       false},
  };
  return r;
}

const Kind* find_kind(const std::string& name) {
  for (const auto& k : registry())
    if (name == k.name) return &k;
  return nullptr;
}

}  // namespace

std::vector<std::string> schedule_kinds() {
  std::vector<std::string> names;
  for (const auto& k : registry()) names.push_back(k.name);
  return names;
}

void check_schedule_options(const ScheduleOptions& o) {
  const auto& k = o.kind;
  const Kind* kind = find_kind(k);
  QKV_CHECK(kind != nullptr, "schedule: unknown kind '{}' (expected {})", k, fmt::join(schedule_kinds(), ", "));
  QKV_CHECK(o.warmup_steps >= 0, "schedule: invalid warmup_steps = {} (must be >= 0)", o.warmup_steps);
  QKV_CHECK(o.min_lr >= 0.0, "schedule: invalid min_lr = {} (must be >= 0)", o.min_lr);
  if (kind->needs_total)
    QKV_CHECK(o.total_steps > o.warmup_steps,
              "schedule: {} needs total_steps ({}) larger than warmup_steps ({})", k, o.total_steps,
              o.warmup_steps);
  if (k == "step") {
    QKV_CHECK(o.step_size > 0, "schedule: invalid step_size = {} (must be > 0)", o.step_size);
    QKV_CHECK(o.gamma > 0.0, "schedule: invalid gamma = {} (must be > 0)", o.gamma);
  }
}

LRSchedule::LRSchedule(Optimizer& optimizer, ScheduleOptions o)
    : optimizer_(optimizer), options_(std::move(o)), base_lr_(optimizer.lr()) {
  check_schedule_options(options_);
  optimizer_.set_lr(lr_at(0));
}

double LRSchedule::lr_at(std::int64_t s) const {
  const auto& o = options_;
  const std::int64_t w = o.warmup_steps;
  if (s < w) return base_lr_ * static_cast<double>(s + 1) / static_cast<double>(w);
  const auto t = static_cast<double>(s - w);
  const auto span = static_cast<double>(o.total_steps - w);
  return find_kind(o.kind)->lr(o, base_lr_, t, span);
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
  const double step = state.scalars.at("schedule.step"), base_lr = state.scalars.at("schedule.base_lr");
  QKV_CHECK(std::isfinite(step) && step >= 0 && step == std::floor(step) && step <= 9007199254740992.0,
            "schedule: 'schedule.step' = {} is not a count (a whole number from 0 to 2^53)", step);
  QKV_CHECK(std::isfinite(base_lr) && base_lr >= 0, "schedule: 'schedule.base_lr' = {} is not a finite number >= 0",
            base_lr);
  step_ = static_cast<std::int64_t>(step);
  base_lr_ = base_lr;
  optimizer_.set_lr(lr_at(step_));
}

}  // namespace qkv
