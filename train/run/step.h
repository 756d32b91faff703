#pragma once
// One training step and one evaluation: the two things every loop over a model does.
#include <qkv/datasets/dataset.h>
#include <qkv/layers/models.h>
#include <qkv/optim/optimizer.h>
#include <qkv/optim/schedule.h>

#include <cstdint>

namespace qkv {

class DataParallel;

struct StepStats {
  double loss = 0, grad_norm = 0, lr = 0;
};
/// How a step runs: the clipping and the micro-batches.
struct StepOptions {
  double clip_grad_norm = 0;  ///< clip the global gradient norm to this (0 = off)
  /// Split the batch into this many micro-batches, run forward and backward on each, and sum their gradients
  /// before the one optimizer step (gradient accumulation). It must divide the batch's rows. The loss is still
  /// normalised by the count of targets in the whole (global) batch, and Dropout draws each micro-batch's rows of
  /// the masks the whole batch would draw, so the step equals one over the whole batch (to rounding).
  std::int64_t grad_accum_steps = 1;
};
/// One training step: forward, cross-entropy (mean over targets that are not kIgnore), zero_grad, backward, clip
/// (when clip_grad_norm > 0), optimizer step, schedule step. Stops before updating anything when the loss or
/// gradient norm is not finite. Under data parallelism `batch` is this rank's slice of the global batch: the loss
/// is normalised by the targets counted on every rank and `parallel` sums the gradients across ranks, once per
/// step (after the last micro-batch's backward).
StepStats train_step(LanguageModel& model, Optimizer& optimizer, LRSchedule& schedule, const Batch& batch,
                     const StepOptions& options, const DataParallel* parallel = nullptr);

struct EvalResult {
  double loss = 0, token_acc = 0, seq_acc = 0;
};
/// Validation loss (mean over non-ignored targets), token accuracy and sequence accuracy (every non-ignored
/// position right), in eval mode without a graph.
EvalResult evaluate(LanguageModel& model, const Batch& data, std::int64_t batch_size);

}  // namespace qkv
