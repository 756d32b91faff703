#include "qkv/train/run/step.h"

#include <qkv/core/autograd.h>
#include <qkv/core/ops.h>
#include <qkv/train/dist/data_parallel.h>

#include <algorithm>
#include <cmath>

namespace qkv {
namespace {

// The step's loss: the mean over counted targets. On several ranks each holds a slice of the batch, so its sum
// is divided by the count over every rank (the global mean, however the ignored targets fall), and the gradients summed
// across ranks are the 1-process gradients. A batch whose targets are all ignored contributes zero loss and zero
// gradient (a plain mean would be 0/0 = NaN, as in torch).
Tensor step_loss(const Tensor& logits, const Batch& batch, const DataParallel* parallel, double& reported) {
  const std::int64_t v = logits.size(-1);
  const std::int64_t* y = batch.targets.data<std::int64_t>();
  const auto counted = std::count_if(y, y + batch.targets.numel(), [](std::int64_t t) { return t != kIgnore; });
  if (parallel == nullptr || !parallel->comm().distributed()) {
    const Tensor loss = cross_entropy(reshape(logits, {-1, v}), reshape(batch.targets, {-1}), kIgnore,
                                      counted > 0 ? Reduction::Mean : Reduction::Sum);
    reported = loss.item();
    return loss;
  }
  const double global = parallel->global_count(static_cast<double>(counted));
  Tensor loss = cross_entropy(reshape(logits, {-1, v}), reshape(batch.targets, {-1}), kIgnore, Reduction::Sum);
  if (global > 0) loss = loss * (1.0 / global);
  reported = parallel->comm().sum(loss.item());
  return loss;
}

}  // namespace

StepStats train_step(LanguageModel& model, Optimizer& optimizer, LRSchedule& schedule, const Batch& batch,
                     double clip_grad_norm_to, const DataParallel* parallel) {
  const Tensor logits = model.logits(batch.inputs);  // (B, T, V)
  StepStats st;
  const Tensor loss = step_loss(logits, batch, parallel, st.loss);
  st.lr = optimizer.lr();
  if (!std::isfinite(st.loss)) return st;  // the caller stops before touching the weights (every rank alike)
  optimizer.zero_grad();
  // The optimizer's cached list: model.parameters() would rebuild every dotted name on each step.
  const auto& params = optimizer.parameters();
  if (parallel != nullptr) {
    parallel->backward(loss);
    st.grad_norm = parallel->clip_or_norm(params, clip_grad_norm_to);
  } else {
    loss.backward();
    st.grad_norm = clip_grad_norm_to > 0 ? clip_grad_norm(params, clip_grad_norm_to) : grad_norm(params);
  }
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
