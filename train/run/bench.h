#pragma once
// qkv bench: the training step timed alone (no evaluation, logging or checkpoint I/O), with an op profile.
#include <qkv/train/run/config.h>

#include <cstdint>
#include <string>
#include <vector>

namespace qkv {

/// Where a step's time goes, by op family (`qkv bench --profile`): milliseconds per step.
struct ProfileRow {
  std::string family;
  double forward_ms = 0, backward_ms = 0;
};
struct BenchResult {
  double steps_per_s = 0, tokens_per_s = 0, gflops = 0, peak_rss_mb = 0;
  int ranks = 1;
  double comm_fraction = 0;  ///< share of a step spent waiting in collectives (under mpirun)
  std::int64_t buckets = 0, buckets_early = 0;  ///< gradient buckets, and those started during backward
  std::vector<ProfileRow> profile;  ///< with `profile`: the families, largest first, then "optimizer and the rest"
};
/// The most steps (and warmup steps) bench takes.
inline constexpr std::int64_t kMaxBenchSteps = 1'000'000;
/// Trains the config's model on its task for `steps` timed steps after `warmup` untimed ones, with no
/// evaluation, logging or checkpoint I/O. Under mpirun every rank takes its slice of each global batch; the
/// figures are global (tokens of the whole batch). With `profile`, also times every op (set_op_profiling), which
/// slows the steps a little.
BenchResult bench(const Config& config, std::int64_t steps, std::int64_t warmup, bool profile = false);

}  // namespace qkv
