#pragma once
// How gradients travel between ranks: all-reduce in buckets that start while backward runs (DDP's reducer), or
// ZeRO-1's reduce-scatter to each parameter's owner (optim.shard).
#include <qkv/train/dist/comm.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace qkv {

class Tensor;

/// ZeRO-1 (optim.shard): each parameter belongs to one rank (whole parameters, balanced by size), which alone
/// keeps its optimizer state and updates it. Per step: reduce-scatter the gradients (each rank receives the sums
/// of its own parameters and drops the others, so Optimizer::step skips them), the global norm from every rank's
/// part, the optimizer step on the shard, then all-gather the parameters.
class Shard {
 public:
  Shard(const std::vector<Tensor>& params, const Comm& comm);
  bool owns(std::size_t param) const { return owner_[param] == comm_.rank(); }
  void reduce_scatter_gradients() const;
  /// The L2 norm of all gradients (every rank's owned part), and clipping by it as clip_grad_norm does.
  double grad_norm() const;
  double clip_grad_norm(double max_norm) const;
  void all_gather_parameters() const;

 private:
  std::int64_t total_elements() const { return displs_.back() + counts_.back(); }
  template <class T>
  void exchange(bool gradients) const;
  const Comm& comm_;
  std::vector<Tensor> params_;
  std::vector<int> owner_;            // per parameter
  std::vector<Tensor> owned_;         // this rank's parameters, in order
  std::vector<std::size_t> order_;    // parameters grouped by owner, each owner's contiguous in the flat buffer
  std::vector<int> counts_, displs_;  // elements per rank and where they start
};

/// DDP's reducer: sums every rank's gradients in flat buckets of about `bucket_bytes`, each started as a
/// non-blocking all-reduce as soon as backward has made every gradient in it final and every earlier bucket has
/// started, so the sums travel while backward computes the rest. Buckets hold the parameters in reverse order
/// (backward reaches the last layers first) and one dtype each; they are the same on every rank and start in the
/// same order, as MPI requires. bucket_bytes = 0: one bucket per dtype, which starts when backward ends.
/// The time spent waiting in MPI (starting, polling, the final wait) counts into Comm::take_comm_seconds.
class GradientBuckets {
 public:
  GradientBuckets(const std::vector<Tensor>& params, const Comm& comm, std::size_t bucket_bytes);
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;
  /// loss.backward(), with every parameter's gradient then the sum over ranks (undefined ones count as zeros).
  void backward(const Tensor& loss);
  /// The same for gradients a backward without these buckets made: every bucket summed now.
  void sum();
  std::size_t size() const;
  /// Buckets of the last backward() that started before backward ended (the rest waited for its end).
  std::size_t started_early() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

/// Every rank's gradients summed in place, flattened into one buffer per dtype (GradientBuckets with bucket_bytes
/// 0: one all-reduce per dtype, not one per tensor); undefined gradients count as zeros.
void sum_gradients(const Comm& comm, const std::vector<Tensor>& params);

}  // namespace qkv
