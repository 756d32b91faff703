#pragma once
// Data parallelism as a training step sees it: under mpirun each rank takes its slice of every global batch,
// starts from rank 0's weights, and has its gradients summed before the optimizer step, either by all-reduce
// buckets that overlap backward or by ZeRO-1's reduce-scatter to each parameter's owner (optim.shard). For a job
// of one rank every call here does what a single process does, so the trainer reads the same either way.
#include <qkv/datasets/dataset.h>
#include <qkv/optim/optimizer.h>
#include <qkv/train/dist/comm.h>
#include <qkv/train/dist/gradients.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qkv {

class LanguageModel;

class DataParallel {
 public:
  explicit DataParallel(const Comm& comm) : comm_(comm) {}
  const Comm& comm() const { return comm_; }

  /// Every rank must run the same config (its TOML text) with the same program, and split the global batch of
  /// `batch_size` sequences evenly, and each rank's slice into `grad_accum_steps` micro-batches; otherwise
  /// qkv::Error naming the odd ranks or the key.
  void check_ranks(const std::string& config_toml, std::int64_t batch_size, std::int64_t grad_accum_steps = 1) const;
  /// This rank's rows of a global batch: rank r of N takes rows [r B/N, (r + 1) B/N).
  Batch slice(const Batch& global) const;
  /// This rank's rows of the dataset's next global batch, reading only those rows where the dataset can.
  Batch next_batch(Dataset& data, std::int64_t batch_size) const;
  /// Rank 0's weights on every rank (checked by hashing them), and each rank's Dropouts drawing the masks of its
  /// own rows of the global batch, so N ranks follow the 1-process run.
  void share_model(LanguageModel& model, std::int64_t batch_size) const;
  /// How gradients are shared from now on: `shard` (ZeRO-1: each rank keeps only its own parameters' optimizer
  /// state) or all-reduce buckets of about `bucket_mb` MB. Call again after loading a full optimizer state.
  void share_gradients(Optimizer& optimizer, bool shard, double bucket_mb);

  /// The count of non-ignored targets over every rank (the loss's divisor).
  double global_count(double counted) const { return comm_.distributed() ? comm_.sum(counted) : counted; }
  /// loss.backward(), with the gradients then summed over ranks (or reduce-scattered to their owners).
  void backward(const Tensor& loss) const;
  /// The global gradient norm, after clipping it to `clip` when clip > 0 (as clip_grad_norm does).
  double clip_or_norm(const std::vector<Tensor>& params, double clip) const;
  /// After the optimizer step: a sharded run gathers every rank's updated parameters.
  void after_step() const;

  /// The optimizer's whole state: a sharded run's pieces gathered on rank 0 (collective; other ranks get theirs).
  OptimizerState optimizer_state(const Optimizer& optimizer) const;
  bool sharded() const { return shard_ != nullptr; }
  /// The gradient buckets (not for a sharded run or a job of one): null or theirs.
  const GradientBuckets* buckets() const { return buckets_.get(); }

 private:
  const Comm& comm_;
  std::unique_ptr<Shard> shard_;
  std::unique_ptr<GradientBuckets> buckets_;
};

}  // namespace qkv
