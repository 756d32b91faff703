#include "qkv/train/run/step.h"

#include <qkv/core/autograd.h>
#include <qkv/core/ops.h>
#include <qkv/train/dist/data_parallel.h>

#include <algorithm>
#include <cmath>

namespace qkv {
namespace {

std::int64_t count_targets(const Tensor& targets) {
  const std::int64_t* y = targets.data<std::int64_t>();
  return std::count_if(y, y + targets.numel(), [](std::int64_t t) { return t != kIgnore; });
}

// A micro-batch's part of the step's loss: the mean over the step's counted targets. When the step is split
// (ranks, micro-batches) each part's sum is divided by the count over the whole global batch, so the parts add up
// to the global mean however the ignored targets fall, and so do their gradients. A batch whose targets are all
// ignored contributes zero loss and zero gradient (a plain mean would be 0/0 = NaN, as in torch). One whole batch
// on one process takes torch's mean itself.
Tensor part_loss(const Tensor& logits, const Tensor& targets, double global, bool whole) {
  const Tensor flat = reshape(logits, {-1, logits.size(-1)}), y = reshape(targets, {-1});
  if (whole) return cross_entropy(flat, y, kIgnore, global > 0 ? Reduction::Mean : Reduction::Sum);
  const Tensor loss = cross_entropy(flat, y, kIgnore, Reduction::Sum);
  return global > 0 ? loss * (1.0 / global) : loss;
}

// The rows of this rank's batch that micro-batch j of k takes.
Batch micro_batch(const Batch& batch, std::int64_t j, std::int64_t k) {
  if (k == 1) return batch;
  const std::int64_t rows = batch.inputs.size(0) / k;
  return {narrow(batch.inputs, 0, j * rows, rows).clone(), narrow(batch.targets, 0, j * rows, rows).clone()};
}

// Forward and backward over the micro-batches, gradients summed into .grad(); returns the step's loss (summed
// over ranks), or a non-finite one before the last backward.
double accumulate_gradients(LanguageModel& model, const Batch& batch, std::int64_t k, const DataParallel* parallel) {
  const bool distributed = parallel != nullptr && parallel->comm().distributed();
  const std::int64_t rows = batch.inputs.size(0), micro = rows / k;
  const std::int64_t ranks = distributed ? parallel->comm().size() : 1;
  const std::int64_t first = distributed ? parallel->comm().rank() * rows : 0;
  const double global = parallel != nullptr ? parallel->global_count(double(count_targets(batch.targets)))
                                            : double(count_targets(batch.targets));
  Generator& masks = model.dropout_generator();
  const Generator::State at_start = masks.state();
  double local = 0;
  for (std::int64_t j = 0; j < k; ++j) {
    if (k > 1) {  // each micro-batch draws its rows of the whole batch's dropout masks
      masks.set_state(at_start);
      model.set_batch_slice(first + j * micro, rows * ranks);
    }
    const Batch part = micro_batch(batch, j, k);
    const Tensor loss = part_loss(model.logits(part.inputs), part.targets, global, !distributed && k == 1);
    local += loss.item();
    const bool last = j == k - 1;
    if (last) {
      local = distributed ? parallel->comm().sum(local) : local;
      if (!std::isfinite(local)) break;  // the caller stops before touching the weights (every rank alike)
    }
    // (a recomputed block draws its masks again in backward, so the slice stays until then)
    if (last && parallel != nullptr) parallel->backward(loss);  // the one sum across ranks, after the last part
    else loss.backward();
  }
  if (k > 1) model.set_batch_slice(first, distributed ? rows * ranks : 0);  // back to the rank's whole slice
  return local;
}

}  // namespace

StepStats train_step(LanguageModel& model, Optimizer& optimizer, LRSchedule& schedule, const Batch& batch,
                     const StepOptions& options, const DataParallel* parallel) {
  const std::int64_t k = options.grad_accum_steps, rows = batch.inputs.size(0);
  QKV_CHECK(k >= 1 && rows % k == 0,
            "train_step: train.grad_accum_steps = {} does not divide this rank's batch of {} sequences", k, rows);
  StepStats st;
  st.lr = optimizer.lr();
  optimizer.zero_grad();
  st.loss = accumulate_gradients(model, batch, k, parallel);
  if (!std::isfinite(st.loss)) return st;
  // The optimizer's cached list: model.parameters() would rebuild every dotted name on each step.
  const auto& params = optimizer.parameters();
  const double clip = options.clip_grad_norm;
  if (parallel != nullptr) st.grad_norm = parallel->clip_or_norm(params, clip);
  else st.grad_norm = clip > 0 ? clip_grad_norm(params, clip) : grad_norm(params);
  if (!std::isfinite(st.grad_norm)) return st;
  optimizer.step();  // a sharded run: only this rank's parameters have gradients
  if (parallel != nullptr) parallel->after_step();
  schedule.step();
  return st;
}

EvalResult evaluate(LanguageModel& model, const Batch& data, std::int64_t batch_size) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const std::int64_t n = data.inputs.size(0), t = data.inputs.size(1);
  double loss_sum = 0;
  std::int64_t tokens = 0, right = 0, seqs_right = 0, seqs = 0;  // seqs: those with a target to get right
  for (std::int64_t start = 0; start < n; start += batch_size) {
    const std::int64_t len = std::min(batch_size, n - start);
    const Tensor x = narrow(data.inputs, 0, start, len), y = narrow(data.targets, 0, start, len);
    const Tensor logits = model.logits(x);
    const std::int64_t v = logits.size(-1);
    loss_sum += cross_entropy(reshape(logits, {-1, v}), reshape(y, {-1}), kIgnore, Reduction::Sum).item();
    const Tensor pred = argmax(logits, -1);
    const auto* pp = pred.data<std::int64_t>();
    const auto* py = y.data<std::int64_t>();
    for (std::int64_t s = 0; s < len; ++s) {
      bool all = true, any = false;
      for (std::int64_t i = s * t; i < (s + 1) * t; ++i) {
        if (py[i] == kIgnore) continue;
        ++tokens;
        any = true;
        const bool ok = pp[i] == py[i];
        right += ok;
        all = all && ok;
      }
      seqs += any;  // a sequence with no target is neither right nor wrong
      seqs_right += any && all;
    }
  }
  if (was_training) model.train();
  return {tokens ? loss_sum / double(tokens) : 0.0, tokens ? double(right) / double(tokens) : 0.0,
          seqs ? double(seqs_right) / double(seqs) : 0.0};
}

}  // namespace qkv
