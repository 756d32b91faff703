#pragma once
// Optimizer (and learning-rate schedule) state to and from a safetensors file, so an experiment outside the CLI
// checkpoints in three lines (the model's half is layers/save.h):
//   qkv::save(model, "model.safetensors");
//   qkv::save(opt, "optim.safetensors", &schedule);
//   ... later: qkv::load(model, "model.safetensors"); qkv::load(opt, "optim.safetensors", &schedule);
// The file holds state_dict()'s tensors under their keys ("<parameter>.<slot>") and its scalars (step counts, lrs,
// weight decays, the schedule's position) as metadata strings that read back to the same doubles, with
// "qkv.kind" = "optimizer" and "qkv.optimizer" = "Adam" / "AdamW" / "SGD".
#include <qkv/core/safetensors.h>
#include <qkv/optim/optimizer.h>
#include <qkv/optim/schedule.h>

#include <string>

namespace qkv {

/// Writes `optimizer`'s state (and `schedule`'s when given) atomically to `path`.
void save(const Optimizer& optimizer, const std::string& path, const LRSchedule* schedule = nullptr);
/// Restores what save() wrote. Throws qkv::Error naming the file when it is not an optimizer state, was written by
/// another kind of optimizer, lacks the schedule asked for, or does not match the optimizer's parameters.
void load(Optimizer& optimizer, const std::string& path, LRSchedule* schedule = nullptr);

}  // namespace qkv
