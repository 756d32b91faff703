#include "qkv/train/run/trainer.h"

#include <qkv/core/gemm.h>
#include <qkv/core/parallel.h>
#include <qkv/core/precision.h>
#include <qkv/train/dist/data_parallel.h>
#include <qkv/train/io/files.h>
#include <qkv/train/report/report.h>
#include <qkv/train/run/checkpoint.h>
#include <qkv/train/run/memory.h>
#include <qkv/train/run/model_file.h>
#include <qkv/train/run/run.h>
#include <qkv/train/run/run_dir.h>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <new>
#include <span>
#include <utility>

namespace qkv {
namespace fs = std::filesystem;

int thread_count(const Config& c) {
  if (c.train.threads > 0) return static_cast<int>(c.train.threads);
  // Under mpirun the ranks on one machine share its cores (OpenMPI says how many ranks it started here).
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks_here = local != nullptr ? std::max(1, std::atoi(local)) : 1;
  return std::max(1, available_cores() / ranks_here);
}

namespace {

std::string fmt_duration(double seconds) {
  const auto s = static_cast<long>(seconds);
  return fmt::format("{:02d}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

// A write (checkpoint, model) that fails while running is a runtime failure (exit 1), not a usage error.
template <class F>
void guarded_write(const char* what, std::int64_t step, const fs::path& dir, F&& write) {
  const auto failed = [&](const char* why) {
    return TrainingError(fmt::format("step {}: writing the {} failed: {} (earlier checkpoints in {} are intact)", step,
                                     what, why, (dir / "checkpoints").string()));
  };
  try {
    write();
  } catch (const Error& e) {
    throw failed(e.what());
  } catch (const fs::filesystem_error& e) {
    throw failed(e.what());
  }
}

// train.log through AppendFile: a failed write is retried, and one that keeps failing is kept (spdlog would
// only print it) so the run can stop instead of finishing with an incomplete log.
class AppendSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit AppendSink(const std::string& path) : file_(path) {}
  /// The first write that failed for good, or "".
  std::string failure() {
    std::lock_guard<std::mutex> lock(mutex_);
    return failure_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (!failure_.empty()) return;
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    try {
      file_.append(std::string(buf.data(), buf.size()));
    } catch (const Error& e) {
      failure_ = e.what();
    }
  }
  void flush_() override {}

 private:
  AppendFile file_;
  std::string failure_;
};

// One training run, in named steps: open (directory, log, model, optimizer, maybe a checkpoint), then per step
// train -> log -> validate -> checkpoint, then the final model.
class Trainer {
 public:
  Trainer(const Config& config, const TrainOptions& options);
  TrainResult run();

 private:
  void open_log();
  void build();
  void resume();
  /// Rank 0: loads the newest readable checkpoint and returns its bytes (its path in `source`).
  std::string load_newest_checkpoint(std::string& source);
  void log_progress(const StepStats& st);
  /// One metrics.jsonl line (rank 0). A write that fails even after retrying ends the run (exit 1): a run never
  /// finishes with its own records incomplete.
  void append_metrics(const nlohmann::json& line) { pending_metrics_ += line.dump() + "\n"; }
  /// After a step that logged: rank 0 appends the metrics lines and checks that train.log's were written; a
  /// failure ends every rank (collective).
  void write_records() {
    on_every_rank_agree(comm_, [&] {
      if (!comm_.lead()) return;
      guarded_write("run's records", r_.step, r_.dir, [&] { dir_->check_present(); });
      const std::string lines = std::exchange(pending_metrics_, {});
      guarded_write("records in metrics.jsonl", r_.step, r_.dir, [&] { metrics_.append(lines); });
      if (const std::string f = file_sink_->failure(); !f.empty())
        throw TrainingError(fmt::format("step {}: writing train.log failed: {} (earlier checkpoints in {} are intact)",
                                        r_.step, f, (r_.dir / "checkpoints").string()));
    });
  }
  void validate();
  void checkpoint() {
    const OptimizerState state = parallel_.optimizer_state(*r_.optimizer);
    on_every_rank_agree(comm_, [&] {
      if (comm_.lead()) guarded_write("checkpoint", r_.step, r_.dir, [&] {
        dir_->check_present();
        save_checkpoint(r_, state);
      });
    });
    report();
  }
  void log_sharded_state();
  void share_gradients() { parallel_.share_gradients(*r_.optimizer, r_.config.optim.shard, r_.config.train.bucket_mb); }
  void report();
  TrainResult interrupted(int sig);
  TrainResult finished();
  /// The signal options.stop holds (the CLI's SIGINT/SIGTERM handler sets it), or 0; on several ranks, the
  /// largest any rank holds, so every rank stops at the same step.
  int agreed_stop_signal() const {
    const int sig = opt_.stop != nullptr ? opt_.stop->load() : 0;
    return comm_.distributed() ? static_cast<int>(comm_.max(sig)) : sig;
  }
  [[noreturn]] void stop_non_finite(const char* what, double value) const;

  const TrainOptions& opt_;
  const Comm& comm_;  // rank 0 alone writes the run directory, logs and checkpoints
  DataParallel parallel_;
  Run r_;
  Precision precision_ = Precision::Float32;  // train.precision, which steps and validation run at
  std::unique_ptr<RunDir> dir_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<AppendSink> file_sink_;
  AppendFile metrics_;
  std::string pending_metrics_;  // lines of this step, written by write_records()
  bool tty_ = false;
  TrainResult result_;
  std::chrono::steady_clock::time_point start_time_, window_start_;
  std::int64_t window_tokens_ = 0, start_step_ = 0;
};

Trainer::Trainer(const Config& config, const TrainOptions& options)
    : opt_(options), comm_(Comm::world()), parallel_(comm_) {
  r_.config = config;
  precision_ = parse_precision(config.train.precision);
  const bool resuming = !options.resume_dir.empty();
  parallel_.check_ranks(to_toml(config), config.train.batch_size, config.train.grad_accum_steps);
  if (!resuming) check_run_name(config.run.name, "config");
  check_memory(config, config.data.task == "text" ? 0 : config.data.vocab_size);  // before anything is allocated
  check_data_input(config.data);  // a missing data file or folder leaves no run directory behind
  const fs::path dir = resuming ? fs::path(options.resume_dir) : fs::path(config.run.out_dir) / config.run.name;
  r_.dir = dir;
  on_every_rank_agree(comm_, [&] {  // only rank 0 has a run directory: other machines need no copy of it
    if (comm_.lead())
      dir_ = std::make_unique<RunDir>(dir, resuming ? RunDirMode::Resume
                                                    : options.force ? RunDirMode::Force : RunDirMode::Create);
    open_log();
  });
  if (dir_ && !dir_->note().empty()) log_->info("{}", dir_->note());
  build();
  if (resuming) {
    resume();
    share_gradients();  // the checkpoint held every parameter's state
  }
  result_ = TrainResult();
  result_.run_dir = r_.dir.string();
  result_.steps = r_.step;
}

void Trainer::open_log() {
  std::vector<spdlog::sink_ptr> sinks;  // none on ranks other than 0: their logger says nothing
  if (comm_.lead()) {
    file_sink_ = std::make_shared<AppendSink>((r_.dir / "train.log").string());
    sinks.push_back(file_sink_);
  }
  if (!opt_.quiet && comm_.lead()) sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  log_ = std::make_shared<spdlog::logger>("qkv", sinks.begin(), sinks.end());
  log_->set_pattern("[%H:%M:%S] %v");
  log_->flush_on(spdlog::level::info);
  tty_ = !opt_.quiet && comm_.lead() && ::isatty(STDERR_FILENO);
}

void Trainer::build() {
  on_every_rank_agree(comm_, [&] { set_up(r_); });  // a data file missing on one machine ends every rank
  parallel_.share_model(*r_.model, r_.config.train.batch_size);
  share_gradients();
  const Config& c = r_.config;
  if (opt_.resume_dir.empty())
    log_->info("run {}: {} model, {} parameters, task {} (vocab {}, seq_len {}), {} threads{}", r_.dir.string(),
               c.model.kind, r_.model->num_parameters(), c.data.task, r_.data->vocab_size(), c.data.seq_len,
               num_threads(),
               comm_.distributed() ? fmt::format(" on each of {} ranks ({} sequences each per step)", comm_.size(),
                                                 c.train.batch_size / comm_.size())
                                   : "");
  log_->info("{}", gemm_summary());
  if (precision_ == Precision::BFloat16) log_->info("precision: bf16 products, float32 weights; {}", bf16_summary());
}

// From the newest checkpoint that reads back whole; a damaged newer one is skipped, saying so. Rank 0 reads it
// and sends its bytes to the other ranks, so they need no copy of the run directory.
void Trainer::resume() {
  std::string bytes;
  std::string source;
  on_every_rank_agree(comm_, [&] {
    if (comm_.lead()) bytes = load_newest_checkpoint(source);
  });
  if (!comm_.distributed()) return;
  comm_.broadcast(bytes);
  comm_.broadcast(source);
  if (!comm_.lead())
    load_checkpoint(r_, parse_safetensors(std::as_bytes(std::span(bytes.data(), bytes.size())), source), source);
}

std::string Trainer::load_newest_checkpoint(std::string& source) {
  auto all = list_checkpoints(r_.dir / "checkpoints");
  QKV_CHECK(!all.empty(), "resume: {} has no checkpoints to resume from", r_.dir.string());
  std::string skipped;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    std::string bytes;
    try {
      bytes = read_file_bytes(it->string());
      load_checkpoint(r_, parse_safetensors(std::as_bytes(std::span(bytes.data(), bytes.size())), it->string()), *it);
    } catch (const Error& e) {
      log_->warn("resume: skipping {}: {}", it->filename().string(), e.what());
      skipped = e.what();
      continue;
    }
    truncate_metrics(r_.dir / "metrics.jsonl", r_.step);
    log_->info("resumed {} from {} (step {}){}", r_.dir.string(), it->filename().string(), r_.step,
               skipped.empty() ? "" : ", the newest intact checkpoint");
    source = it->string();
    return bytes;
  }
  fail("resume: no checkpoint of {} could be read (the newest: {})", r_.dir.string(), skipped);
}

// The optimizer state each rank holds, against the whole (collective: every rank calls it at the same step).
void Trainer::log_sharded_state() {
  const double mine = static_cast<double>(r_.optimizer->state_bytes());
  const double all = comm_.sum(mine);
  log_->info("optim.shard: optimizer state {:.2f} MB on rank 0, {:.2f} MB over all {} ranks ({:.0f}% here)",
             mine / 1e6, all / 1e6, comm_.size(), 100.0 * mine / all);
}

void Trainer::log_progress(const StepStats& st) {
  const auto now = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(now - window_start_).count();
  const double tps = secs > 0 ? double(window_tokens_) / secs : 0.0;
  window_start_ = now;
  window_tokens_ = 0;
  append_metrics({{"step", r_.step}, {"split", "train"}, {"loss", st.loss}, {"lr", st.lr}, {"grad_norm", st.grad_norm},
                  {"tokens_per_s", tps}});
  const auto& tc = r_.config.train;
  const double elapsed = std::chrono::duration<double>(now - start_time_).count();
  const double eta = elapsed / double(r_.step - start_step_) * double(tc.steps - r_.step);
  const std::string line = fmt::format("step {}/{}  loss {:.4f}  lr {:.2e}  {:.0f} tok/s  ETA {}", r_.step, tc.steps,
                                       st.loss, st.lr, tps, fmt_duration(eta));
  if (!tty_) return log_->info("{}", line);
  fmt::print(stderr, "\r\033[K{}", line);  // a live progress line, redrawn in place
  std::fflush(stderr);
  file_sink_->log(spdlog::details::log_msg("qkv", spdlog::level::info, line));
}

void Trainer::validate() {
  const AutocastGuard precision(precision_);
  result_.val = evaluate(*r_.model, r_.data->validation(), r_.config.train.batch_size);
  const EvalResult& v = result_.val;
  append_metrics({{"step", r_.step}, {"split", "val"}, {"loss", v.loss}, {"token_acc", v.token_acc},
                  {"seq_acc", v.seq_acc}});
  if (tty_) fmt::print(stderr, "\r\033[K");
  log_->info("step {} validation: loss {:.4f}  token accuracy {:.4f}  sequence accuracy {:.4f}", r_.step, v.loss,
             v.token_acc, v.seq_acc);
  const double target = r_.config.train.target_accuracy;
  if (target > 0 && v.seq_acc >= target) {
    log_->info("reached target sequence accuracy {} at step {}", target, r_.step);
    result_.stopped_early = true;
    r_.reached_target = v.seq_acc;  // saved in the checkpoint: resuming it trains nothing
  }
}

void Trainer::stop_non_finite(const char* what, double value) const {
  const std::string newest = latest_checkpoint(r_.dir.string());
  throw TrainingError(fmt::format("step {}: the {} is {}; stopping ({})", r_.step + 1, what, value,
                                  newest.empty() ? "no checkpoint had been written yet"
                                                 : "the last good checkpoint is " + newest));
}

// The run's page, rewritten at every checkpoint so a long run can be watched by reloading it. It is a view of
// the run, so a failure to write it is a warning, never the end of training.
void Trainer::report() {
  if (!opt_.report || !comm_.lead()) return;
  try {
    write_report({r_.dir.string()});
  } catch (const std::exception& e) {
    log_->warn("report: not written: {}", e.what());
  }
}

TrainResult Trainer::interrupted(int sig) {
  if (tty_) fmt::print(stderr, "\n");
  log_->warn("{} at step {}: checkpoint written. Resume with: qkv train --resume {}",
             sig == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)", r_.step, shell_quote(r_.dir.string()));
  result_.steps = r_.step;
  result_.exit_code = sig == SIGINT ? 130 : 143;
  return result_;
}

TrainResult Trainer::finished() {
  if (tty_) fmt::print(stderr, "\n");
  const ModelConfig& mc = r_.model->config();
  on_every_rank_agree(comm_, [&] {
    if (!comm_.lead()) return;
    guarded_write("final model", r_.step, r_.dir, [&] {
      save(*r_.model, (r_.dir / "model.safetensors").string(), model_metadata(mc, r_.config, *r_.data));
    });
  });
  result_.steps = r_.step;
  report();
  log_->info("done: {} steps; outputs in {} (model.safetensors, metrics.jsonl, train.log, checkpoints/, report.html)",
             r_.step, r_.dir.string());
  // A signal that arrived at the end or during the final save ends the process with its code, after the save.
  if (const int sig = agreed_stop_signal(); sig != 0) {
    log_->warn("{} during the final save: the run is complete", sig == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)");
    result_.exit_code = sig == SIGINT ? 130 : 143;
  }
  return result_;
}

TrainResult Trainer::run() {
  const auto& tc = r_.config.train;
  // A finished run resumed without raising train.steps, or one that stopped at train.target_accuracy, unless
  // the target was raised or turned off.
  const bool at_target = r_.reached_target > 0 && tc.target_accuracy > 0 && r_.reached_target >= tc.target_accuracy;
  if (r_.step >= tc.steps || at_target) {
    // (rank 0 decides: only it has the directory)
    if (comm_.max(comm_.lead() && !fs::exists(r_.dir / "model.safetensors")) != 0) return finished();
    result_.finished_note =
        r_.step < tc.steps ? fmt::format("{} is already finished: it reached train.target_accuracy = {} (sequence accuracy "
                                "{:.4f}) at step {}; nothing to do. To train on: qkv train --resume {} "
                                "train.target_accuracy=0", r_.dir.string(), tc.target_accuracy, r_.reached_target,
                                r_.step, shell_quote(r_.dir.string()))
                  : fmt::format("{} is already finished: {} of train.steps = {} done; nothing to do. To train longer: "
                                "qkv train --resume {} train.steps=N", r_.dir.string(), r_.step, tc.steps,
                                shell_quote(r_.dir.string()));
    log_->info("{}", result_.finished_note);
    result_.already_finished = true;
    return result_;
  }
  on_every_rank_agree(comm_, [&] {
    if (!comm_.lead()) return;
    write_file_atomic((r_.dir / "config.toml").string(), to_toml(r_.config));
    metrics_ = AppendFile((r_.dir / "metrics.jsonl").string());
  });
  start_time_ = window_start_ = std::chrono::steady_clock::now();
  start_step_ = r_.step;
  while (r_.step < tc.steps) {
    const Batch batch = parallel_.next_batch(*r_.data, tc.batch_size);  // every rank draws the same
    StepStats st;
    try {
      const AutocastGuard precision(precision_);
      st = train_step(*r_.model, *r_.optimizer, *r_.schedule, batch,
                      {.clip_grad_norm = r_.config.optim.clip_grad_norm, .grad_accum_steps = tc.grad_accum_steps},
                      &parallel_);
    } catch (const std::bad_alloc& e) {
      const bool named = dynamic_cast<const OutOfMemoryError*>(&e) != nullptr;  // says which op and how much
      throw TrainingError(fmt::format("step {}: {} (lower train.batch_size, data.seq_len or the model size)",
                                      r_.step + 1, named ? e.what() : "out of memory"));
    }
    if (!std::isfinite(st.loss)) stop_non_finite("loss", st.loss);
    if (!std::isfinite(st.grad_norm)) stop_non_finite("gradient norm", st.grad_norm);
    ++r_.step;
    if (r_.step == start_step_ + 1 && parallel_.sharded()) log_sharded_state();
    window_tokens_ += batch.inputs.numel() * comm_.size();
    const bool last = r_.step == tc.steps;
    const bool log = r_.step % tc.log_every == 0 || last, eval = r_.step % tc.eval_every == 0 || last;
    if (log) log_progress(st);
    if (eval) validate();
    if (log || eval) write_records();
    if (opt_.on_step) opt_.on_step(r_.step);
    if (const int sig = agreed_stop_signal(); sig != 0 && !last) {  // on the last step, finished() saves first
      checkpoint();
      return interrupted(sig);
    }
    if (result_.stopped_early || last || (tc.checkpoint_every > 0 && r_.step % tc.checkpoint_every == 0)) checkpoint();
    if (result_.stopped_early) break;
  }
  return finished();
}

}  // namespace

TrainResult train(const Config& config, const TrainOptions& options) { return Trainer(config, options).run(); }

}  // namespace qkv
