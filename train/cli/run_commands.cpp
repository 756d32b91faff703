#include <qkv/core/parallel.h>
#include <qkv/core/ops.h>
#include <qkv/core/precision.h>
#include <qkv/train/cli/commands.h>
#include <qkv/train/dist/comm.h>
#include <qkv/train/io/files.h>
#include <qkv/train/io/checkpoints.h>
#include <qkv/train/run/bench.h>
#include <qkv/train/run/memory.h>
#include <qkv/train/run/run.h>
#include <qkv/train/run/trainer.h>
#include <qkv/train/use/attention_view.h>
#include <qkv/train/use/trained.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <memory>

namespace qkv::cli {
namespace fs = std::filesystem;
namespace {

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

// SIGINT/SIGTERM handlers for the duration of a training run (they ask it to stop after its step, see
// TrainOptions::stop), restoring the previous ones after.
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
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// After training: the learned attention of the first validation example (layer 0, head 0), when it fits a line.
void show_attention(const std::string& run_dir) {
  const TrainedModel tm = load_trained(run_dir);
  const auto data = tm.data();
  const Tensor x = narrow(data->validation().inputs, 0, 0, 1);
  if (x.size(1) > kMaxShownTokens) {
    fmt::print("\nLearned attention: a {0}x{0} map per layer and head, too wide to print here. See the report, or:\n"
               "  qkv attention {1} --tokens \"...\" --svg attention.svg\n",
               x.size(1), shell_quote(run_dir));
    return;
  }
  std::vector<std::string> tokens;
  for (double v : x.to_vector()) tokens.push_back(data->decode(static_cast<std::int64_t>(v)));
  const Tensor w = head_weights(attention_maps(*tm.model, x), 0, 0);
  fmt::print("\nLearned attention (layer 0, head 0) on the first validation example:\n{}", render_attention(w, tokens));
}

int cmd_train(const std::string& config_path, std::vector<std::string> overrides, const std::string& resume,
              bool force) {
  Config cfg;
  QKV_CHECK(resume.empty() || !force, "train: --resume continues a run and --force replaces one: give one of them");
  if (!resume.empty() && !config_path.empty()) {
    // `qkv train --resume RUN_DIR a.b=c`: the first positional is an override, not a config file.
    QKV_CHECK(config_path.find('=') != std::string::npos && !fs::exists(config_path),
              "train: give either CONFIG or --resume RUN_DIR, not both (a resumed run uses its saved config.toml; "
              "change it with section.key=value overrides)");
    overrides.insert(overrides.begin(), config_path);
  }
  if (!resume.empty()) {
    const auto saved = fs::path(resume) / "config.toml";
    QKV_CHECK(fs::exists(saved), "resume: {} has no config.toml (is it a qkv run directory?)", resume);
    cfg = load_config(saved.string(), overrides);
    check_resume_overrides(load_config(saved.string(), {}), cfg, saved.string());
  } else {
    QKV_CHECK(!config_path.empty(), "train: a CONFIG file is required (or --resume RUN_DIR)");
    cfg = load_config(config_path, overrides);
  }
  TrainOptions options;
  options.resume_dir = resume;
  options.force = force;
  options.stop = &g_signal;
  set_num_threads(thread_count(cfg));
  const SignalScope signals;
  const TrainResult r = train(cfg, options);
  if (r.exit_code != 0 || !Comm::world().lead()) return r.exit_code;  // rank 0 alone reports
  if (r.already_finished) {
    fmt::print("{}\n", r.finished_note);
    return 0;
  }
  fmt::print("\nTrained {} steps: validation loss {:.4f}, token accuracy {:.4f}, sequence accuracy {:.4f}\n", r.steps,
             r.val.loss, r.val.token_acc, r.val.seq_acc);
  fmt::print("Outputs in {}/: model.safetensors, config.toml, metrics.jsonl, train.log, checkpoints/\n", r.run_dir);
  if (fs::exists(fs::path(r.run_dir) / "report.html"))
    fmt::print("Report (open it in a browser): {}\n", (fs::path(r.run_dir) / "report.html").string());
  show_attention(r.run_dir);
  return 0;
}

int cmd_eval(const std::string& target, bool json, const std::string& tokens, std::int64_t windows, std::int64_t val_size) {
  TrainedModel tm = load_trained(target);
  if (!tokens.empty()) {  // another token folder's validation shard (a GPT-2 checkpoint has no data of its own)
    tm.config.data = DataOptions{.task = "tokens", .seq_len = tm.model->config().seq_len, .val_size = windows,
                                 .path = tokens};
    tm.config.train.batch_size = 1;
    tm.data_from_metadata = false;
  } else {
    QKV_CHECK(!is_field_checkpoint(target), "eval: {} is a checkpoint of the field, which carries no data: name token shards "
              "to evaluate it on with --tokens DIR (qkv tokenize makes them)", target);
  }
  if (val_size > 0) tm.config.data.val_size = val_size;
  if (tm.data_from_metadata && val_size == 0 && tm.config.data.val_size > 100'000)
    fmt::print(stderr, "qkv: note: evaluating on {} examples (data.val_size in {}'s qkv.data metadata); --val-size N "
               "evaluates on fewer\n", tm.config.data.val_size, tm.path);
  if (tm.data_from_metadata && !tm.config.data.path.empty())
    fmt::print(stderr, "qkv: note: {} names its data file {} (qkv.data metadata); reading it to evaluate\n", tm.path,
               tm.config.data.path);
  const auto data = tm.data();
  const EvalResult e = evaluate(*tm.model, data->validation(), tm.config.train.batch_size);
  QKV_CHECK(std::isfinite(e.loss), "eval: the validation loss of {} is {}: its outputs are not finite", tm.path, e.loss);
  if (json) {
    fmt::print("{}\n", nlohmann::json{{"loss", e.loss}, {"token_acc", e.token_acc}, {"seq_acc", e.seq_acc},
                                      {"examples", data->validation().inputs.size(0)}}
                           .dump());
  } else {
    fmt::print("{}: {} validation examples of task {}\n  loss {:.4f}\n  token accuracy {:.4f}\n  sequence accuracy "
               "{:.4f}\n",
               tm.path, data->validation().inputs.size(0), tm.config.data.task, e.loss, e.token_acc, e.seq_acc);
  }
  return 0;
}

int cmd_info(const std::string& config_path, const std::vector<std::string>& overrides, bool keys) {
  if (keys) {  // the config reference as a Markdown table (README's is this output)
    fmt::print("{}", config_reference_markdown());
    return 0;
  }
  QKV_CHECK(!config_path.empty(), "info: a CONFIG file is required (or --keys)");
  const Config cfg = load_config(config_path, overrides);
  const auto data = make_dataset(cfg.data, cfg.run.seed);
  const ModelConfig mc = cfg.model_config(data->vocab_size());
  const MemoryEstimate m = estimate_memory(cfg, data->vocab_size());
  const double have = double(physical_memory_bytes());
  // The summary needs the model built; one whose weights alone exceed the machine's memory is described, not built.
  const bool fits = have == 0 || 4 * m.parameters <= have;
  std::string summary = fmt::format("(not built: its {:.3g} parameters alone need {:.1f} GB, more than this machine's "
                                    "{:.1f} GB)", m.parameters, 4 * m.parameters / 1e9, have / 1e9);
  if (fits) {
    Generator g(0);
    summary = build_model(mc, g)->summary();
  }
  const double fpt = flops_per_token(mc, cfg.data.seq_len);
  fmt::print("# resolved config ({})\n{}\n# model\n{}\nparameters: {:.0f}\nforward FLOPs per token: {:.0f} ({:.3g} per "
             "training step of {} x {} tokens, counting backward as 2x forward)\n",
             config_path, to_toml(cfg), summary, m.parameters, fpt,
             3.0 * fpt * double(cfg.train.batch_size * cfg.data.seq_len), cfg.train.batch_size, cfg.data.seq_len);
  fmt::print("memory estimate for training: {:.0f} MB (parameters and optimizer state {:.0f}, activations {:.0f}, "
             "data {:.0f}; this machine has {:.0f} MB)\n",
             m.total() / 1e6, m.parameter_bytes / 1e6, m.activation_bytes / 1e6, m.data_bytes / 1e6,
             double(physical_memory_bytes()) / 1e6);
  fmt::print("precision: {}{}\n", cfg.train.precision,
             cfg.train.precision == "bf16" ? "; " + bf16_summary() : std::string(" (train.precision = \"bf16\": ") +
                                                 bf16_summary() + ")");
  return 0;
}


// qkv bench --profile: milliseconds per step and share of the step by op family.
void print_profile(const std::vector<ProfileRow>& rows) {
  double step = 0;
  for (const ProfileRow& r : rows) step += r.forward_ms + r.backward_ms;
  fmt::print("{:<34} {:>10} {:>10} {:>10} {:>7}\n", "op family (ms per step)", "forward", "backward", "total",
             "share");
  for (const ProfileRow& r : rows)
    fmt::print("{:<34} {:>10.3f} {:>10.3f} {:>10.3f} {:>6.1f}%\n", r.family, r.forward_ms, r.backward_ms,
               r.forward_ms + r.backward_ms, 100.0 * (r.forward_ms + r.backward_ms) / step);
}

int cmd_bench(const std::string& config_path, const std::vector<std::string>& overrides, std::int64_t steps,
              std::int64_t warmup, bool profile) {
  const Config cfg = load_config(config_path, overrides);
  set_num_threads(thread_count(cfg));
  const BenchResult b = bench(cfg, steps, warmup, profile);
  if (!Comm::world().lead()) return 0;
  fmt::print("steps_per_s={:.3f} tokens_per_s={:.1f} gflops={:.3f} peak_rss_mb={:.1f}", b.steps_per_s,
             b.tokens_per_s, b.gflops, b.peak_rss_mb);
  if (b.ranks > 1) fmt::print(" ranks={} comm_fraction={:.3f}", b.ranks, b.comm_fraction);  // global figures
  if (b.buckets > 0) fmt::print(" buckets={} started_in_backward={}", b.buckets, b.buckets_early);
  fmt::print("\n");
  if (profile) print_profile(b.profile);
  return 0;
}

int cmd_init(const std::string& config_path, const std::vector<std::string>& overrides, const std::string& out) {
  check_output_path(out, "init --out");
  const auto n = write_initial_model(load_config(config_path, overrides), out);
  fmt::print("wrote {} ({} parameters, before any training step)\n", out, n);
  return 0;
}

// The options of the commands that take a config: CONFIG and section.key=value overrides.
struct ConfigArgs {
  std::string config_path;
  std::vector<std::string> overrides;
};

}  // namespace

Runner declare_train(CLI::App& c) {
  struct Args : ConfigArgs {
    std::string resume;
    bool force = false;
  };
  auto a = std::make_shared<Args>();
  c.add_option("config", a->config_path, "config file (e.g. configs/reverse.toml)");
  c.add_option("overrides", a->overrides, "section.key=value overrides, e.g. train.steps=200");
  c.add_option("--resume", a->resume, "continue RUN_DIR from its latest checkpoint");
  c.add_flag("--force", a->force, "replace an existing run directory");
  return [a] { return cmd_train(a->config_path, a->overrides, a->resume, a->force); };
}

Runner declare_eval(CLI::App& c) {
  struct Args {
    std::string target, tokens;
    bool json = false;
    std::int64_t windows = 8, val_size = 0;
  };
  auto a = std::make_shared<Args>();
  c.add_option("model", a->target, "run directory, .safetensors file or GPT-2 checkpoint folder")->required();
  c.add_option("--val-size", a->val_size, "how many validation examples of the model's own data (default: its "
               "data.val_size)")->check(CLI::Range(1, 100'000'000));
  c.add_flag("--json", a->json, "print one JSON object");
  c.add_option("--tokens", a->tokens, "evaluate on this token folder's validation shard (qkv tokenize) in windows "
                                      "of the model's positions, instead of the model's own data");
  c.add_option("--windows", a->windows, "with --tokens: how many windows (default 8)")->check(CLI::Range(1, 1000000));
  return [a] { return cmd_eval(a->target, a->json, a->tokens, a->windows, a->val_size); };
}

Runner declare_info(CLI::App& c) {
  struct Args : ConfigArgs {
    bool keys = false;
  };
  auto a = std::make_shared<Args>();
  c.add_option("config", a->config_path, "config file");
  c.add_flag("--keys", a->keys, "print every config key with its type, default and meaning");
  c.add_option("overrides", a->overrides, "section.key=value overrides");
  return [a] { return cmd_info(a->config_path, a->overrides, a->keys); };
}

Runner declare_bench(CLI::App& c) {
  struct Args : ConfigArgs {
    std::int64_t steps = 50, warmup = 5;
    bool profile = false;
  };
  auto a = std::make_shared<Args>();
  c.add_option("config", a->config_path, "config file (e.g. bench/configs/small.toml)")->required();
  c.add_option("overrides", a->overrides, "section.key=value overrides");
  c.add_option("--steps", a->steps, "timed steps (default 50)");
  c.add_option("--warmup", a->warmup, "untimed steps first (default 5)");
  c.add_flag("--profile", a->profile, "also print where a step's time goes, by op family");
  return [a] { return cmd_bench(a->config_path, a->overrides, a->steps, a->warmup, a->profile); };
}

Runner declare_init(CLI::App& c) {
  struct Args : ConfigArgs {
    std::string out;
  };
  auto a = std::make_shared<Args>();
  c.add_option("config", a->config_path, "config file")->required();
  c.add_option("overrides", a->overrides, "section.key=value overrides");
  c.add_option("--out", a->out, "output .safetensors file")->required();
  return [a] { return cmd_init(a->config_path, a->overrides, a->out); };
}

}  // namespace qkv::cli
