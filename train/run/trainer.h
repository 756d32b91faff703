#pragma once
// The training loop as a library, so tests drive the same code the CLI runs:
// batch -> forward -> loss -> zero_grad -> backward -> clip -> step -> schedule, with evaluation, logging,
// metrics.jsonl, atomic checkpoints and bit-exact resume.
#include <qkv/train/run/config.h>
#include <qkv/train/run/step.h>

#include <atomic>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>

namespace qkv {

/// A failure while training (NaN loss, I/O): the CLI exits 1 for these, 2 for qkv::Error.
class TrainingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TrainOptions {
  std::string resume_dir{};  ///< continue this run from its latest checkpoint
  bool force = false;      ///< replace an existing run directory
  bool quiet = false;      ///< no console output (tests)
  bool report = true;      ///< write RUN_DIR/report.html at each checkpoint and at the end
  /// Called after every step (tests use it to stop a run).
  std::function<void(std::int64_t step)> on_step{};
  /// When it holds a signal number (SIGINT, SIGTERM), the run finishes its step, checkpoints and returns exit code
  /// 128 + that number; at the last step it saves the final model first. The library installs no signal
  /// handler: the qkv program does, and points this at what its handler sets.
  const std::atomic<int>* stop = nullptr;
};

/// The thread count train.threads asks for (0 = every core, divided among the ranks mpirun started on this
/// machine). train() and bench() use the process's
/// num_threads(); the qkv program sets it from this (a process-wide setting is the program's to make).
int thread_count(const Config& config);

struct TrainResult {
  std::string run_dir;
  std::int64_t steps = 0;  ///< steps completed
  EvalResult val;          ///< the last evaluation
  bool stopped_early = false;
  bool already_finished = false;  ///< a resumed run was done (train.steps, or its target): nothing was trained
  std::string finished_note;      ///< then why, and the command that trains on
  int exit_code = 0;  ///< 0, or 130 / 143 when interrupted by SIGINT / SIGTERM
};

/// Runs the config's training job in run.out_dir/run.name (or options.resume_dir), holding that directory's lock.
/// Throws qkv::Error for usage, config and input problems (before training starts) and TrainingError for
/// failures during training (non-finite loss, out of memory, a checkpoint that cannot be written).
TrainResult train(const Config& config, const TrainOptions& options = {});

}  // namespace qkv
