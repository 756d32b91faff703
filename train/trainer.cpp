#include "qkv/train/trainer.h"

#include <qkv/core/autograd.h>
#include <qkv/core/ops.h>
#include <qkv/datasets/dataset.h>
#include <qkv/optim/schedule.h>
#include <qkv/train/safetensors.h>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

namespace qkv {
namespace fs = std::filesystem;
namespace {

// Seeds of the independent streams derived from run.seed.
constexpr std::uint64_t kInitStream = 0x696e6974ULL;

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

// Installs SIGINT/SIGTERM handlers for the duration of a run and restores the previous ones after.
class SignalScope {
 public:
  SignalScope() {
    g_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

nlohmann::json gen_to_json(const Generator::State& s) {
  return {{"s", s.s}, {"spare", s.spare_normal}, {"has_spare", s.has_spare}};
}
Generator::State gen_from_json(const nlohmann::json& j) {
  Generator::State s;
  s.s = j.at("s").get<std::array<std::uint64_t, 4>>();
  s.spare_normal = j.at("spare").get<double>();
  s.has_spare = j.at("has_spare").get<bool>();
  return s;
}

std::string checkpoint_name(std::int64_t step) { return fmt::format("step_{:09d}.safetensors", step); }

// Checkpoints in step order (temporary files from an interrupted write start with '.' and are ignored).
std::vector<fs::path> list_checkpoints(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto name = e.path().filename().string();
    if (name.rfind("step_", 0) == 0 && e.path().extension() == ".safetensors") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::unique_ptr<Optimizer> make_optimizer(const Config& c, NamedParameters params) {
  const auto& o = c.optim;
  if (o.name == "sgd")
    return std::make_unique<SGD>(params, SGDOptions{.lr = o.lr, .momentum = o.momentum, .nesterov = o.nesterov,
                                                    .weight_decay = o.weight_decay});
  const AdamOptions ao{.lr = o.lr, .beta1 = o.betas[0], .beta2 = o.betas[1], .eps = o.eps,
                       .weight_decay = o.weight_decay};
  if (o.name == "adamw") return std::make_unique<AdamW>(params, ao);
  return std::make_unique<Adam>(params, ao);
}

std::string fmt_duration(double seconds) {
  const auto s = static_cast<long>(seconds);
  return fmt::format("{:02d}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

// Everything one run holds; built fresh or from a checkpoint.
struct Run {
  Config config;
  fs::path dir;
  std::unique_ptr<Dataset> data;
  Generator model_gen{0};  // init, then dropout masks
  std::shared_ptr<LanguageModel> model;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<LRSchedule> schedule;
  std::int64_t step = 0;
};

void save_checkpoint(Run& r) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [n, p] : r.model->named_parameters()) tensors.emplace_back("model." + n, p);
  OptimizerState st = r.optimizer->state_dict();
  r.schedule->save(st);
  for (const auto& [k, t] : st.tensors) tensors.emplace_back("optim." + k, t);
  const DataState ds = r.data->state();
  nlohmann::json ck = {{"step", r.step},
                       {"optim_scalars", st.scalars},
                       {"data_rng", gen_to_json(ds.rng)},
                       {"data_position", ds.position},
                       {"model_rng", gen_to_json(r.model_gen.state())}};
  auto meta = model_metadata(r.model->config(), r.config, *r.data);
  meta["qkv.checkpoint"] = ck.dump();
  const fs::path dir = r.dir / "checkpoints";
  fs::create_directories(dir);
  write_safetensors((dir / checkpoint_name(r.step)).string(), tensors, meta);
  auto all = list_checkpoints(dir);
  while (static_cast<std::int64_t>(all.size()) > r.config.train.keep_checkpoints) {
    fs::remove(all.front());
    all.erase(all.begin());
  }
}

void load_checkpoint(Run& r, const fs::path& file) {
  const auto f = read_safetensors(file.string());
  QKV_CHECK(f.metadata.count("qkv.checkpoint"), "resume: {} is not a qkv checkpoint", file.string());
  const auto ck = nlohmann::json::parse(f.metadata.at("qkv.checkpoint"));
  OptimizerState st;
  for (const auto& [n, t] : f.tensors)
    if (n.rfind("optim.", 0) == 0) st.tensors.emplace(n.substr(6), t);
  load(*r.model, checkpoint_model(f), file.string(), /*strict=*/true);
  st.scalars = ck.at("optim_scalars").get<std::map<std::string, double>>();
  r.optimizer->load_state_dict(st);
  r.schedule->load(st);
  r.data->set_state({gen_from_json(ck.at("data_rng")), ck.at("data_position").get<std::int64_t>()});
  r.model_gen.set_state(gen_from_json(ck.at("model_rng")));
  r.step = ck.at("step").get<std::int64_t>();
}

// Keeps the metrics lines up to `step` (a resumed run rewrites what came after its checkpoint).
void truncate_metrics(const fs::path& path, std::int64_t step) {
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("step", std::int64_t{0}) <= step) kept += line + "\n";
  }
  in.close();
  write_file_atomic(path.string(), kept);
}

// Sets the OpenMP team size from train.threads (0 = every core) and returns it.
int apply_threads(const Config& c) {
  const int threads = c.train.threads > 0 ? static_cast<int>(c.train.threads)
                                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  omp_set_num_threads(threads);
  return threads;
}

}  // namespace

std::string latest_checkpoint(const std::string& run_dir) {
  const auto all = list_checkpoints(fs::path(run_dir) / "checkpoints");
  return all.empty() ? std::string() : all.back().string();
}

SafetensorsFile checkpoint_model(const SafetensorsFile& checkpoint) {
  SafetensorsFile out;
  out.metadata = checkpoint.metadata;
  out.metadata.erase("qkv.checkpoint");
  for (const auto& [n, t] : checkpoint.tensors)
    if (n.rfind("model.", 0) == 0) out.tensors.emplace_back(n.substr(6), t);
  return out;
}

const char* version() { return "0.1.0"; }

StepStats train_step(LanguageModel& model, Optimizer& optimizer, LRSchedule& schedule, const Batch& batch,
                     double clip_grad_norm_to) {
  const Tensor logits = model.logits(batch.inputs);  // (B, T, V)
  const std::int64_t v = logits.size(-1);
  const Tensor loss = cross_entropy(reshape(logits, {-1, v}), reshape(batch.targets, {-1}));
  StepStats st;
  st.loss = loss.item();
  st.lr = optimizer.lr();
  if (!std::isfinite(st.loss)) return st;  // the caller stops before touching the weights
  optimizer.zero_grad();
  loss.backward();
  // The optimizer's cached list: model.parameters() would rebuild every dotted name on each step.
  const auto& params = optimizer.parameters();
  st.grad_norm = clip_grad_norm_to > 0 ? clip_grad_norm(params, clip_grad_norm_to) : grad_norm(params);
  if (!std::isfinite(st.grad_norm)) return st;
  optimizer.step();
  schedule.step();
  return st;
}

BenchResult bench(const Config& c, std::int64_t steps, std::int64_t warmup) {
  QKV_CHECK(steps > 0 && warmup >= 0, "bench: --steps must be > 0 and --warmup >= 0, got {} and {}", steps, warmup);
  apply_threads(c);
  auto data = make_dataset(c.data, c.run.seed);
  Generator gen(c.run.seed ^ kInitStream);
  const ModelConfig mc = c.model_config(data->vocab_size());
  auto model = build_model(mc, gen);
  model->train();
  auto optimizer = make_optimizer(c, model->named_parameters());
  LRSchedule schedule(*optimizer, {});  // constant: the lr does not change the cost of a step
  // Batches are drawn up front so the timed loop measures the model, not the data generator.
  std::vector<Batch> batches;
  for (std::int64_t i = 0; i < std::min<std::int64_t>(steps + warmup, 64); ++i) batches.push_back(data->next_batch(c.train.batch_size));
  for (std::int64_t i = 0; i < warmup; ++i)
    train_step(*model, *optimizer, schedule, batches[static_cast<std::size_t>(i) % batches.size()], c.optim.clip_grad_norm);
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < steps; ++i)
    train_step(*model, *optimizer, schedule, batches[static_cast<std::size_t>(warmup + i) % batches.size()],
               c.optim.clip_grad_norm);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  BenchResult b;
  b.steps_per_s = double(steps) / secs;
  b.tokens_per_s = b.steps_per_s * double(c.train.batch_size * c.data.seq_len);
  b.gflops = 3.0 * flops_per_token(mc, c.data.seq_len) * b.tokens_per_s / 1e9;  // forward + backward (2x forward)
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  b.peak_rss_mb = double(ru.ru_maxrss) / 1024.0;
  return b;
}

std::map<std::string, std::string> model_metadata(const ModelConfig& m, const Config& c, const Dataset& data) {
  nlohmann::json mj = {{"kind", m.kind},     {"vocab_size", m.vocab_size}, {"seq_len", m.seq_len},
                       {"d_model", m.d_model}, {"d_k", m.d_k},             {"d_v", m.d_v},
                       {"heads", m.heads},   {"layers", m.layers},         {"d_ff", m.d_ff},
                       {"causal", m.causal}, {"attn_bias", m.attn_bias}};
  nlohmann::json dj = {{"task", c.data.task},         {"vocab_size", c.data.vocab_size}, {"seq_len", c.data.seq_len},
                       {"val_size", c.data.val_size}, {"path", c.data.path},             {"val_path", c.data.val_path},
                       {"shuffle", c.data.shuffle},   {"seed", c.run.seed}};
  std::map<std::string, std::string> meta = {{"format", "qkv"},
                                             {"qkv.version", version()},
                                             {"qkv.model", mj.dump()},
                                             {"qkv.data", dj.dump()}};
  if (!data.vocab().empty()) meta["qkv.vocab"] = data.vocab();
  return meta;
}

ModelConfig model_config_from_json(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  QKV_CHECK(!j.is_discarded() && j.is_object(), "model: qkv.model metadata is not a JSON object");
  ModelConfig m;
  try {
    m.kind = j.at("kind").get<std::string>();
    m.vocab_size = j.at("vocab_size").get<std::int64_t>();
    m.seq_len = j.at("seq_len").get<std::int64_t>();
    m.d_model = j.at("d_model").get<std::int64_t>();
    m.d_k = j.value("d_k", std::int64_t{0});
    m.d_v = j.value("d_v", std::int64_t{0});
    m.heads = j.value("heads", std::int64_t{1});
    m.layers = j.value("layers", std::int64_t{1});
    m.d_ff = j.value("d_ff", std::int64_t{0});
    m.causal = j.value("causal", false);
    m.attn_bias = j.value("attn_bias", false);
  } catch (const nlohmann::json::exception& e) {
    fail("model: qkv.model metadata is incomplete: {}", e.what());
  }
  return m;
}

EvalResult evaluate(LanguageModel& model, const Batch& data, std::int64_t batch_size) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const std::int64_t n = data.inputs.size(0), t = data.inputs.size(1);
  double loss_sum = 0;
  std::int64_t tokens = 0, right = 0, seqs_right = 0;
  for (std::int64_t start = 0; start < n; start += batch_size) {
    const std::int64_t len = std::min(batch_size, n - start);
    const Tensor x = narrow(data.inputs, 0, start, len), y = narrow(data.targets, 0, start, len);
    const Tensor logits = model.logits(x);
    const std::int64_t v = logits.size(-1);
    loss_sum += cross_entropy(reshape(logits, {-1, v}), reshape(y, {-1}), -100, Reduction::Sum).item();
    const Tensor pred = argmax(logits, -1);
    const auto* pp = pred.data<std::int64_t>();
    const auto* py = y.data<std::int64_t>();
    for (std::int64_t s = 0; s < len; ++s) {
      bool all = true;
      for (std::int64_t i = s * t; i < (s + 1) * t; ++i) {
        if (py[i] == -100) continue;
        ++tokens;
        const bool ok = pp[i] == py[i];
        right += ok;
        all = all && ok;
      }
      seqs_right += all;
    }
  }
  if (was_training) model.train();
  return {tokens ? loss_sum / double(tokens) : 0.0, tokens ? double(right) / double(tokens) : 0.0,
          n ? double(seqs_right) / double(n) : 0.0};
}

std::string render_attention(const Tensor& weights, const std::vector<std::string>& tokens) {
  static const char* kShades = " .:-=+*#%@";
  const std::int64_t t = weights.size(0);
  const auto w = weights.to_vector();
  std::size_t width = 1;
  for (const auto& s : tokens) width = std::max(width, s.size());
  std::string out = std::string(width + 3, ' ');
  for (std::int64_t j = 0; j < t; ++j) out += fmt::format("{:>{}}", tokens[static_cast<std::size_t>(j)], width + 1);
  out += "   (keys)\n";
  for (std::int64_t i = 0; i < t; ++i) {
    out += fmt::format("{:>{}} | ", tokens[static_cast<std::size_t>(i)], width);
    for (std::int64_t j = 0; j < t; ++j) {
      const double v = std::clamp(w[static_cast<std::size_t>(i * t + j)], 0.0, 1.0);
      out += std::string(width, ' ') + kShades[std::min(9, static_cast<int>(v * 9.999))];
    }
    out += "\n";
  }
  return out + fmt::format("{:>{}}   (rows: queries; darker = more weight, '@' ~ 1)\n", "", width);
}

TrainResult train(const Config& given, const TrainOptions& opt) {
  Run r;
  r.config = given;
  const bool resuming = !opt.resume_dir.empty();
  r.dir = resuming ? fs::path(opt.resume_dir) : fs::path(given.run.out_dir) / given.run.name;
  fs::path resume_from;
  if (resuming) {
    QKV_CHECK(fs::is_directory(r.dir), "resume: run directory {} does not exist", r.dir.string());
    resume_from = latest_checkpoint(r.dir.string());
    QKV_CHECK(!resume_from.empty(), "resume: {} has no checkpoints to resume from", r.dir.string());
  } else if (fs::exists(r.dir)) {
    QKV_CHECK(opt.force, "run directory {} already exists; pass --resume {} to continue it or --force to start over",
              r.dir.string(), r.dir.string());
    fs::remove_all(r.dir);
  }
  fs::create_directories(r.dir);

  const int threads = apply_threads(given);

  // Logging: console (unless quiet) and train.log.
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>((r.dir / "train.log").string()));
  if (!opt.quiet) sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  auto log = std::make_shared<spdlog::logger>("qkv", sinks.begin(), sinks.end());
  log->set_pattern("[%H:%M:%S] %v");
  log->flush_on(spdlog::level::info);

  r.data = make_dataset(given.data, given.run.seed);
  r.model_gen.manual_seed(given.run.seed ^ kInitStream);
  const ModelConfig mc = given.model_config(r.data->vocab_size());
  r.model = build_model(mc, r.model_gen);
  if (!given.model.init.empty()) load(*r.model, given.model.init, /*strict=*/true);
  r.model->train();
  r.optimizer = make_optimizer(given, r.model->named_parameters());
  r.schedule = std::make_unique<LRSchedule>(
      *r.optimizer, ScheduleOptions{.kind = given.schedule.kind, .warmup_steps = given.schedule.warmup_steps,
                                    .total_steps = given.train.steps, .min_lr = given.schedule.min_lr,
                                    .step_size = given.schedule.step_size, .gamma = given.schedule.gamma});
  if (resuming) {
    load_checkpoint(r, resume_from);
    truncate_metrics(r.dir / "metrics.jsonl", r.step);
    log->info("resumed {} from {} (step {})", r.dir.string(), resume_from.filename().string(), r.step);
  } else {
    log->info("run {}: {} model, {} parameters, task {} (vocab {}, seq_len {}), {} threads", r.dir.string(), mc.kind,
              r.model->num_parameters(), given.data.task, r.data->vocab_size(), given.data.seq_len, threads);
  }
  write_file_atomic((r.dir / "config.toml").string(), to_toml(given));
  std::ofstream metrics(r.dir / "metrics.jsonl", std::ios::app);
  const auto emit = [&](nlohmann::json j) { metrics << j.dump() << "\n" << std::flush; };

  SignalScope signals;
  const bool tty = !opt.quiet && ::isatty(STDERR_FILENO);
  const auto& tc = given.train;
  TrainResult result{r.dir.string(), r.step, {}, false, 0};
  const auto start_time = std::chrono::steady_clock::now();
  auto window_start = start_time;
  std::int64_t window_tokens = 0, start_step = r.step;

  while (r.step < tc.steps) {
    const Batch batch = r.data->next_batch(tc.batch_size);
    const StepStats st = train_step(*r.model, *r.optimizer, *r.schedule, batch, given.optim.clip_grad_norm);
    if (!std::isfinite(st.loss))
      throw TrainingError(fmt::format("step {}: the loss is {}; stopping (the last good checkpoint is kept in {})",
                                      r.step + 1, st.loss, (r.dir / "checkpoints").string()));
    if (!std::isfinite(st.grad_norm))
      throw TrainingError(fmt::format("step {}: the gradient norm is {}; stopping (the last good checkpoint is kept "
                                      "in {})",
                                      r.step + 1, st.grad_norm, (r.dir / "checkpoints").string()));
    const double loss_value = st.loss, gnorm = st.grad_norm, lr = st.lr;
    ++r.step;
    window_tokens += batch.inputs.numel();

    if (r.step % tc.log_every == 0 || r.step == tc.steps) {
      const auto now = std::chrono::steady_clock::now();
      const double secs = std::chrono::duration<double>(now - window_start).count();
      const double tps = secs > 0 ? double(window_tokens) / secs : 0.0;
      window_start = now;
      window_tokens = 0;
      emit({{"step", r.step}, {"split", "train"}, {"loss", loss_value}, {"lr", lr}, {"grad_norm", gnorm},
            {"tokens_per_s", tps}});
      const double elapsed = std::chrono::duration<double>(now - start_time).count();
      const double eta = elapsed / double(r.step - start_step) * double(tc.steps - r.step);
      const std::string line = fmt::format("step {}/{}  loss {:.4f}  lr {:.2e}  {:.0f} tok/s  ETA {}", r.step,
                                           tc.steps, loss_value, lr, tps, fmt_duration(eta));
      if (tty) {
        fmt::print(stderr, "\r\033[K{}", line);  // a live progress line, redrawn in place
        std::fflush(stderr);
        sinks.front()->log(spdlog::details::log_msg("qkv", spdlog::level::info, line));
      } else {
        log->info("{}", line);
      }
    }
    const bool last = r.step == tc.steps;
    if (r.step % tc.eval_every == 0 || last) {
      result.val = evaluate(*r.model, r.data->validation(), tc.batch_size);
      emit({{"step", r.step}, {"split", "val"}, {"loss", result.val.loss}, {"token_acc", result.val.token_acc},
            {"seq_acc", result.val.seq_acc}});
      if (tty) fmt::print(stderr, "\r\033[K");
      log->info("step {} validation: loss {:.4f}  token accuracy {:.4f}  sequence accuracy {:.4f}", r.step,
                result.val.loss, result.val.token_acc, result.val.seq_acc);
      if (tc.target_accuracy > 0 && result.val.seq_acc >= tc.target_accuracy) {
        log->info("reached target sequence accuracy {} at step {}", tc.target_accuracy, r.step);
        result.stopped_early = true;
      }
    }
    if (opt.on_step) opt.on_step(r.step);
    const int sig = g_signal.load();
    if (sig != 0) {
      save_checkpoint(r);
      if (tty) fmt::print(stderr, "\n");
      log->warn("{} at step {}: checkpoint written. Resume with: qkv train --resume {}",
                sig == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)", r.step, r.dir.string());
      result.steps = r.step;
      result.exit_code = sig == SIGINT ? 130 : 143;
      return result;
    }
    if (result.stopped_early || last || (tc.checkpoint_every > 0 && r.step % tc.checkpoint_every == 0)) save_checkpoint(r);
    if (result.stopped_early) break;
  }
  if (tty) fmt::print(stderr, "\n");
  save(*r.model, (r.dir / "model.safetensors").string(), model_metadata(mc, given, *r.data));
  result.steps = r.step;
  log->info("done: {} steps; outputs in {} (model.safetensors, metrics.jsonl, train.log, checkpoints/)", r.step,
            r.dir.string());
  return result;
}

}  // namespace qkv
