#include "qkv/train/run/bench.h"

#include <qkv/core/autograd.h>
#include <qkv/core/precision.h>
#include <qkv/train/dist/data_parallel.h>
#include <qkv/train/run/run.h>
#include <qkv/train/run/step.h>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

namespace qkv {
namespace {

// The op families of a profile: what a user tuning a model would look at.
std::string op_family(const std::string& op) {
  static const std::map<std::string, std::string> family = {
      {"linear", "GEMM (linear, matmul)"}, {"matmul", "GEMM (linear, matmul)"}, {"attention", "attention"},
      {"layer_norm", "LayerNorm"}, {"gelu", "GELU"}, {"relu", "activations"}, {"tanh", "activations"},
      {"sigmoid", "activations"}, {"softmax", "softmax"}, {"log_softmax", "softmax"},
      {"cross_entropy", "cross-entropy"}, {"embedding", "embedding"}, {"dropout", "dropout"},
      {"(autograd)", "autograd bookkeeping"}};
  if (const auto it = family.find(op); it != family.end()) return it->second;
  static const std::set<std::string> shape = {"reshape", "permute", "narrow", "concat", "broadcast_to", "flip",
                                              "gather", "index_select", "clone", "to"};
  return shape.count(op) != 0 ? "shape and copies" : "elementwise and reductions";
}

std::vector<ProfileRow> profile_rows(const std::vector<OpTime>& ops, double step_seconds, std::int64_t steps) {
  std::map<std::string, ProfileRow> by_family;
  double accounted = 0;
  for (const OpTime& op : ops) {
    ProfileRow& row = by_family[op_family(op.name)];
    row.forward_ms += 1e3 * op.forward_s / double(steps);
    row.backward_ms += 1e3 * op.backward_s / double(steps);
    accounted += op.forward_s + op.backward_s;
  }
  std::vector<ProfileRow> rows;
  for (auto& [family, row] : by_family) {
    row.family = family;
    rows.push_back(row);
  }
  std::sort(rows.begin(), rows.end(), [](const ProfileRow& a, const ProfileRow& b) {
    return a.forward_ms + a.backward_ms > b.forward_ms + b.backward_ms;
  });
  rows.push_back({"optimizer, clipping and the rest", 1e3 * (step_seconds - accounted / double(steps)), 0});
  return rows;
}


}  // namespace

BenchResult bench(const Config& c, std::int64_t steps, std::int64_t warmup, bool profile) {
  QKV_CHECK(steps > 0 && steps <= kMaxBenchSteps && warmup >= 0 && warmup <= kMaxBenchSteps,
            "bench: --steps must be 1 to {} and --warmup 0 to {}, got {} and {}", kMaxBenchSteps, kMaxBenchSteps, steps,
            warmup);
  const Comm& comm = Comm::world();
  DataParallel parallel(comm);
  parallel.check_ranks(to_toml(c), c.train.batch_size, c.train.grad_accum_steps);
  Run r;
  r.config = c;
  set_up(r);
  parallel.share_model(*r.model, c.train.batch_size);
  parallel.share_gradients(*r.optimizer, c.optim.shard, c.train.bucket_mb);
  auto& model = r.model;
  const ModelConfig mc = model->config();
  // Batches are drawn up front so the timed loop measures the model, not the data generator.
  std::vector<Batch> batches;
  for (std::int64_t i = 0; i < std::min<std::int64_t>(steps + warmup, 64); ++i)
    batches.push_back(parallel.next_batch(*r.data, c.train.batch_size));
  const Precision precision_of_run = parse_precision(c.train.precision);
  const auto step = [&](std::int64_t i) {
    const AutocastGuard precision(precision_of_run);
    train_step(*model, *r.optimizer, *r.schedule, batches[static_cast<std::size_t>(i) % batches.size()],
               {.clip_grad_norm = c.optim.clip_grad_norm, .grad_accum_steps = c.train.grad_accum_steps}, &parallel);
  };
  for (std::int64_t i = 0; i < warmup; ++i) step(i);
  comm.take_comm_seconds();
  reset_op_profile();
  set_op_profiling(profile);
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < steps; ++i) {
    profile_mark();
    step(warmup + i);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  set_op_profiling(false);
  BenchResult b;
  if (profile) b.profile = profile_rows(op_profile(), secs / double(steps), steps);
  b.ranks = comm.size();
  b.comm_fraction = comm.take_comm_seconds() / secs;
  if (const GradientBuckets* buckets = parallel.buckets()) {
    b.buckets = static_cast<std::int64_t>(buckets->size());
    b.buckets_early = static_cast<std::int64_t>(buckets->started_early());
  }
  b.steps_per_s = double(steps) / secs;
  b.tokens_per_s = b.steps_per_s * double(c.train.batch_size * c.data.seq_len);
  b.gflops = 3.0 * flops_per_token(mc, c.data.seq_len) * b.tokens_per_s / 1e9;  // forward + backward (2x forward)
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  b.peak_rss_mb = double(ru.ru_maxrss) / 1024.0;
  return b;
}

}  // namespace qkv
