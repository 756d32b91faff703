#pragma once
// The training loop as a library, so tests drive the same code the CLI runs:
// batch -> forward -> loss -> zero_grad -> backward -> clip -> step -> schedule, with evaluation, logging,
// metrics.jsonl, atomic checkpoints and bit-exact resume.
#include <qkv/train/config.h>
#include <qkv/train/files.h>
#include <qkv/train/safetensors.h>

#include <atomic>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>

namespace qkv {

class Comm;
class Shard;
class GradientBuckets;
class Dataset;
class LRSchedule;
class Optimizer;

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

struct EvalResult {
  double loss = 0, token_acc = 0, seq_acc = 0;
};

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

/// Validation loss (mean over non-ignored targets), token accuracy and sequence accuracy (every non-ignored
/// position right), in eval mode without a graph.
EvalResult evaluate(LanguageModel& model, const Batch& data, std::int64_t batch_size);

/// Everything in a model file's metadata: "format", "qkv.version", "qkv.model" (ModelConfig JSON), and for
/// text models "qkv.vocab"; "qkv.data" carries the data options so `qkv eval` can rebuild the validation set.
std::map<std::string, std::string> model_metadata(const ModelConfig& model, const Config& config,
                                                  const Dataset& data);
/// The newest checkpoint of a run directory (RUN_DIR/checkpoints/step_*.safetensors), or "" when it has none.
std::string latest_checkpoint(const std::string& run_dir);
/// A checkpoint's model weights under their own names ("model." stripped) and its metadata without the
/// training state: what a model file holds.
SafetensorsFile checkpoint_model(const SafetensorsFile& checkpoint);

/// ModelConfig from the "qkv.model" JSON, every size checked (integer, in range); `source` names the file in errors.
ModelConfig model_config_from_json(const std::string& json, const std::string& source = "qkv.model");

/// What a training run of a config will hold in memory, estimated up front (float32; Adam's state counted).
struct MemoryEstimate {
  double parameters = 0, parameter_bytes = 0, activation_bytes = 0, data_bytes = 0;
  double total() const { return parameter_bytes + activation_bytes + data_bytes; }
};
MemoryEstimate estimate_memory(const Config& config, std::int64_t vocab_size);

/// An attention matrix (T, T) as text: one row per query, one shaded cell per key (" .:-=+*#%@"), with tokens.
std::string render_attention(const Tensor& weights, const std::vector<std::string>& tokens);
/// The rows of (..., T) attention weights that are not distributions: a value not finite, or a sum off 1 by more
/// than 1e-3 (finite inputs whose scores overflow float32 give such rows; render_attention marks them).
std::vector<std::int64_t> rows_not_distributions(const Tensor& weights);

struct StepStats {
  double loss = 0, grad_norm = 0, lr = 0;
};
/// One training step: forward, cross-entropy, zero_grad, backward, clip (when clip_grad_norm_to > 0), optimizer
/// step, schedule step. Stops before updating anything when the loss or gradient norm is not finite.
/// With a distributed `comm`, `batch` is this rank's slice of the global batch: the loss is normalised by the
/// targets counted on every rank and the gradients are summed across ranks before clipping.
/// With a `shard` (optim.shard), gradients are reduce-scattered and each rank updates its own parameters; with
/// `buckets`, they are summed in buckets while backward runs (else in one all-reduce after it).
StepStats train_step(LanguageModel& model, Optimizer& optimizer, LRSchedule& schedule, const Batch& batch,
                     double clip_grad_norm_to, const Comm* comm = nullptr, const Shard* shard = nullptr,
                     GradientBuckets* buckets = nullptr);

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
/// Trains the config's model on its task for `steps` timed steps after `warmup` untimed ones, with no
/// evaluation, logging or checkpoint I/O. Under mpirun every rank takes its slice of each global batch; the
/// figures are global (tokens of the whole batch). With `profile`, also times every op (set_op_profiling), which
/// slows the steps a little.
BenchResult bench(const Config& config, std::int64_t steps, std::int64_t warmup, bool profile = false);

/// The weights a run of `config` starts from (run.seed's initialisation, or model.init's weights) written to `path`
/// with a trained model's full metadata, so another framework can start from exactly qkv's initialisation.
/// Returns the number of parameters.
std::int64_t write_initial_model(const Config& config, const std::string& path);

/// qkv's version string.
const char* version();

}  // namespace qkv
