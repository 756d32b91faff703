#include "qkv/train/cli.h"

#include <qkv/core/autograd.h>
#include <qkv/core/gemm.h>
#include <qkv/core/ops.h>
#include <qkv/core/parallel.h>
#include <qkv/datasets/dataset.h>
#include <qkv/train/distributed.h>
#include <qkv/train/report.h>
#include <qkv/train/files.h>
#include <qkv/train/safetensors.h>

#include <CLI/CLI.hpp>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <charconv>
#include <csignal>
#include <filesystem>
#include <functional>
#include <iostream>

namespace qkv {
namespace fs = std::filesystem;
namespace {

constexpr std::int64_t kMaxSampleLength = 1'000'000;
// How long a failing rank waits for the others to fail too before it ends the job alone: ranks that fail at the
// same point (a config error every rank reads) arrive within milliseconds of each other.
constexpr double kFailureAgreementSeconds = 5.0;

Config config_from_metadata(const std::map<std::string, std::string>& meta, const std::string& path) {
  const auto it = meta.find("qkv.data");
  return it == meta.end() ? Config() : config_from_data_json(it->second, path);
}


// A model file's metadata is checked against its tensors before anything is built from it: the metadata could
// describe a model far larger than the file. Then every weight must be finite.
void check_model_file(const ModelConfig& mc, const SafetensorsFile& f, const std::string& path) {
  double held = 0;
  for (const auto& [name, t] : f.tensors) held += double(t.numel());
  const Tensor tok = f.find("tok_emb.weight");
  QKV_CHECK(tok.defined() && tok.dim() == 2 && tok.size(0) == mc.vocab_size && tok.size(1) == mc.d_model,
            "{}: the qkv.model metadata says vocab_size = {} and d_model = {}, but tok_emb.weight is {}", path,
            mc.vocab_size, mc.d_model, tok.defined() ? tok.shape().str() : std::string("missing"));
  const double want = parameter_count(mc);
  QKV_CHECK(want == held,
            "{}: the qkv.model metadata describes a {} model of {:.0f} parameters, but the file's tensors hold {:.0f}: "
            "the metadata does not match the weights",
            path, mc.kind, want, held);
  for (const auto& [name, t] : f.tensors)
    if (const auto bad = t.count_non_finite(); bad > 0)
      fail("{}: tensor '{}' has {} value{} that are not finite (NaN or inf); this model cannot be used", path, name,
           bad, bad == 1 ? "" : "s");
}

// Refuses outputs that are not finite (finite but huge weights can overflow the activations).
void check_finite_output(const Tensor& t, const char* what, const std::string& path) {
  const auto bad = t.count_non_finite();
  QKV_CHECK(bad == 0, "{}: {} of {} values of the model's output are not finite (NaN or inf): the weights in {} are "
            "finite but its activations overflow", what, bad, t.numel(), path);
}

// An output file named on the command line, checked before any work: not a directory, in a folder that exists.
void check_output_path(const std::string& path, const char* option) {
  QKV_CHECK(!path.empty() && path.back() != '/' && !fs::is_directory(path),
            "{} {}: is a directory; give a file name inside it", option, path);
  const fs::path parent = fs::path(path).parent_path();
  QKV_CHECK(parent.empty() || fs::is_directory(parent), "{} {}: the folder {} does not exist", option, path,
            parent.string());
}

// Prints the learned attention of one validation example.
// Past this many keys a printed map no longer fits a terminal line.
constexpr std::int64_t kMaxPrintedKeys = 32;

void show_attention(const TrainedModel& tm, const Dataset& data, const std::string& run_dir) {
  const Tensor x = narrow(data.validation().inputs, 0, 0, 1);
  if (x.size(1) > kMaxPrintedKeys) {
    fmt::print("\nLearned attention: a {0}x{0} map per layer and head, too wide to print here. See the report, or:\n"
               "  qkv attention {1} --tokens \"...\" --svg attention.svg\n",
               x.size(1), shell_quote(run_dir));
    return;
  }
  Tensor maps;  // (L, 1, H, T, T): layer 0, head 0 is the first (T, T) block
  {
    NoGradGuard no_grad;
    tm.model->eval();
    maps = tm.model->attend(x).weights;
  }
  std::vector<std::string> tokens;
  for (double v : x.to_vector()) tokens.push_back(data.decode(static_cast<std::int64_t>(v)));
  const Tensor w = reshape(narrow(reshape(maps, {-1, x.size(1), x.size(1)}), 0, 0, 1), {x.size(1), x.size(1)});
  fmt::print("\nLearned attention (layer 0, head 0) on the first validation example:\n{}",
             render_attention(w, tokens));
}

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
  const TrainedModel tm = load_trained(r.run_dir);
  show_attention(tm, *make_dataset(tm.config.data, tm.config.run.seed), r.run_dir);
  return 0;
}

int cmd_eval(const std::string& target, bool json) {
  const TrainedModel tm = load_trained(target);
  if (tm.data_from_metadata && !tm.config.data.path.empty())
    fmt::print(stderr, "qkv: note: {} names its data file {} (qkv.data metadata); reading it to evaluate\n", tm.path,
               tm.config.data.path);
  const auto data = make_dataset(tm.config.data, tm.config.run.seed);
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
  return 0;
}

// Token ids of --tokens / --prompt: characters for text models, space-separated ids otherwise.
std::vector<std::int64_t> parse_tokens(const TrainedModel& tm, const std::string& text, const char* what) {
  const auto ids = tm.text() ? tm.vocab.encode(text) : encode_token_ids(text, tm.model->config().vocab_size);
  QKV_CHECK(!ids.empty(), "{}: no tokens given", what);
  return ids;
}

std::string token_text(const TrainedModel& tm, std::int64_t id) {
  return tm.text() ? tm.vocab.decode(id) : std::to_string(id);
}

// A display label: text tokens quoted when blank, ids as numbers.
std::string token_label(const TrainedModel& tm, std::int64_t id) {
  std::string s = token_text(tm, id);
  if (s == " ") return "␣";
  if (s == "\n") return "⏎";
  return s;
}

Tensor ids_tensor(const std::vector<std::int64_t>& ids) {
  return Tensor::from(ids, {1, static_cast<std::int64_t>(ids.size())});
}

int cmd_predict(const std::string& target, const std::string& tokens, bool json) {
  const TrainedModel tm = load_trained(target);
  const auto ids = parse_tokens(tm, tokens, "predict");
  NoGradGuard no_grad;
  const Tensor logits = tm.model->logits(ids_tensor(ids));  // (1, T, V)
  check_finite_output(logits, "predict", tm.path);
  const Tensor pred = argmax(logits, -1);
  std::vector<std::int64_t> preds;
  for (double p : pred.to_vector()) preds.push_back(static_cast<std::int64_t>(p));
  if (json) {
    const std::int64_t t = logits.size(1), v = logits.size(2);
    const auto lv = logits.to_vector();
    nlohmann::json rows = nlohmann::json::array();
    for (std::int64_t i = 0; i < t; ++i)
      rows.push_back(std::vector<double>(lv.begin() + i * v, lv.begin() + (i + 1) * v));
    nlohmann::json out = {{"tokens", ids}, {"predictions", preds}, {"logits", rows}};
    if (tm.text()) {
      std::string in_text, out_text;
      for (auto id : ids) in_text += token_text(tm, id);
      for (auto id : preds) out_text += token_text(tm, id);
      out["text"] = in_text;
      out["predicted_text"] = out_text;
    }
    fmt::print("{}\n", out.dump());
    return 0;
  }
  if (tm.text()) {
    std::string in_text, out_text;
    for (auto id : ids) in_text += token_text(tm, id);
    for (auto id : preds) out_text += token_text(tm, id);
    fmt::print("input:      {}\npredicted:  {}\n(each predicted character is the model's guess for the one after the "
               "input character above it)\n",
               in_text, out_text);
    return 0;
  }
  fmt::print("position  token  predicted\n");
  for (std::size_t i = 0; i < ids.size(); ++i) fmt::print("{:>8}  {:>5}  {:>9}\n", i, ids[i], preds[i]);
  return 0;
}

// An SVG heatmap of a (T, T) attention matrix with the tokens as axis labels.
std::string attention_svg(const Tensor& w, const std::vector<std::string>& labels, const std::string& title) {
  const std::int64_t t = w.size(0);
  const auto v = w.to_vector();
  const int cell = 28, left = 60, top = 70;
  const int size = static_cast<int>(t) * cell;
  const auto esc = xml_escape;
  const auto bad = rows_not_distributions(w);
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"monospace\" "
      "font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"20\">{}</text>\n"
      "<text x=\"{}\" y=\"40\" font-size=\"11\">keys</text>\n<text x=\"4\" y=\"{}\" font-size=\"11\">queries</text>\n",
      std::max<std::size_t>(left + size + (bad.empty() ? 20 : 150), left + 8 * title.size() + 20), top + size + 20, left, esc(title), left,
      top - 20);
  for (std::int64_t j = 0; j < t; ++j)
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + j * cell + cell / 2, top - 6,
                       esc(labels[static_cast<std::size_t>(j)]));
  for (std::int64_t i = 0; i < t; ++i) {
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", left - 6, top + i * cell + cell / 2 + 4,
                       esc(labels[static_cast<std::size_t>(i)]));
    for (std::int64_t j = 0; j < t; ++j) {
      const double raw = v[static_cast<std::size_t>(i * t + j)], x = std::clamp(raw, 0.0, 1.0);
      const int shade = static_cast<int>(255 - 200 * x);  // white (0) to dark blue (1)
      const std::string fill = std::isfinite(raw) ? fmt::format("rgb({},{},255)", shade, shade) : "rgb(200,40,40)";
      svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}</title></rect>\n",
                         left + j * cell, top + i * cell, cell - 1, cell - 1, fill,
                         std::isfinite(raw) ? fmt::format("{:.4f}", x) : "not finite");
    }
    if (std::find(bad.begin(), bad.end(), i) != bad.end())
      svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"rgb(200,40,40)\">does not sum to 1</text>\n", left + size + 4,
                         top + i * cell + cell / 2 + 4);
  }
  return svg + "</svg>\n";
}

// The weights as a table of numbers, then shaded; non-finite weights are flagged, never a crash.
void print_attention(const Tensor& w, const std::vector<std::string>& labels, std::int64_t layer, std::int64_t head,
                     const std::string& path) {
  const std::int64_t t = w.size(0);
  const auto v = w.to_vector();
  if (const auto bad = w.count_non_finite(); bad > 0)
    fmt::print(stderr, "qkv: warning: {} of the {} attention weights are not finite (NaN or inf; shown as nan and '?'): "
               "the attention scores of {} overflow\n", bad, w.numel(), path);
  if (const auto rows = rows_not_distributions(w); !rows.empty())
    fmt::print(stderr, "qkv: warning: row{} {} of the attention weights {} not sum to 1 (the attention scores of {} "
               "overflow float32); marked '<- does not sum to 1'\n", rows.size() == 1 ? "" : "s", fmt::join(rows, ", "),
               rows.size() == 1 ? "does" : "do", path);
  fmt::print("attention weights, layer {}, head {} (rows: queries, columns: keys; each row should sum to 1)\n", layer,
             head);
  fmt::print("{:>8}", "");
  for (const auto& l : labels) fmt::print("{:>8}", l);
  fmt::print("\n");
  for (std::int64_t i = 0; i < t; ++i) {
    fmt::print("{:>8}", labels[static_cast<std::size_t>(i)]);
    for (std::int64_t j = 0; j < t; ++j) fmt::print("{:8.4f}", v[static_cast<std::size_t>(i * t + j)]);
    fmt::print("\n");
  }
  fmt::print("\n{}", render_attention(w, labels));
}

int cmd_attention(const std::string& target, const std::string& tokens, std::int64_t layer, std::int64_t head,
                  const std::string& svg_path, bool json) {
  if (!svg_path.empty()) check_output_path(svg_path, "attention --svg");
  const TrainedModel tm = load_trained(target);
  const auto ids = parse_tokens(tm, tokens, "attention");
  Tensor maps;  // (L, 1, H, T, T)
  {
    NoGradGuard no_grad;
    maps = tm.model->attend(ids_tensor(ids)).weights;
  }
  QKV_CHECK(layer >= 0 && layer < maps.size(0), "attention: --layer {} is out of range (the model has {} layer{})",
            layer, maps.size(0), maps.size(0) == 1 ? "" : "s");
  QKV_CHECK(head >= 0 && head < maps.size(2), "attention: --head {} is out of range (the model has {} head{})", head,
            maps.size(2), maps.size(2) == 1 ? "" : "s");
  const std::int64_t t = maps.size(3);
  const Tensor w = reshape(narrow(narrow(maps, 0, layer, 1), 2, head, 1), {t, t});
  std::vector<std::string> labels;
  for (auto id : ids) labels.push_back(token_label(tm, id));
  const auto v = w.to_vector();
  if (json) {  // the same numbers qkv report draws, for scripts and tests
    nlohmann::json rows = nlohmann::json::array();
    for (std::int64_t i = 0; i < t; ++i) rows.push_back(std::vector<double>(v.begin() + i * t, v.begin() + (i + 1) * t));
    fmt::print("{}\n", nlohmann::json{{"layer", layer}, {"head", head}, {"ids", ids}, {"tokens", labels},
                                      {"weights", rows}}.dump());
  } else {
    print_attention(w, labels, layer, head, tm.path);
  }
  if (!svg_path.empty()) {
    write_file_atomic(svg_path, attention_svg(w, labels, fmt::format("{}: layer {}, head {}", tm.path, layer, head)));
    if (!json) fmt::print("wrote {}\n", svg_path);
  }
  return 0;
}

int cmd_sample(const std::string& target, const std::string& prompt, std::int64_t length, double temperature,
               std::uint64_t seed, bool cached) {
  const TrainedModel tm = load_trained(target);
  QKV_CHECK(length >= 0 && length <= kMaxSampleLength, "sample: --length must be 0 to {}, got {}", kMaxSampleLength,
            length);
  const auto ids = parse_tokens(tm, prompt, "sample");
  // Tokens are printed as they come.
  const auto emit = [&](std::int64_t id) {
    fmt::print("{}{}", token_text(tm, id), tm.text() ? "" : " ");
    std::fflush(stdout);
  };
  for (auto id : ids) emit(id);
  sample_tokens(tm, ids, length, temperature, seed, emit, cached);
  fmt::print("\n");
  return 0;
}

int cmd_export(const std::string& run_dir, std::string out, const std::string& dtype) {
  const StorageType storage = parse_storage_type(dtype);
  // By default beside the model: RUN_DIR/model.<dtype>.safetensors, or for a file FILE, <FILE's stem>.<dtype>...
  const fs::path from(run_dir);
  if (out.empty() && fs::is_directory(from)) out = (from / fmt::format("model.{}.safetensors", dtype)).string();
  else if (out.empty()) out = (from.parent_path() / fmt::format("{}.{}.safetensors", from.stem().string(), dtype)).string();
  check_output_path(out, "export --out");
  const TrainedModel tm = load_trained(run_dir);
  save(*tm.model, out, tm.metadata, storage);
  std::error_code ec;
  const bool regular = fs::is_regular_file(out, ec);  // not /dev/null or a pipe: those have no size
  fmt::print("wrote {} ({} tensors, {} parameters, {}{})\n", out, tm.model->named_parameters().size(),
             tm.model->num_parameters(), dtype, regular ? fmt::format(", {} bytes", fs::file_size(out, ec)) : "");
  return 0;
}

}  // namespace

TrainedModel load_trained(const std::string& target) {
  TrainedModel tm;
  const fs::path p(target);
  fs::path file = p;
  bool run_dir = false;
  SafetensorsFile f;
  if (fs::is_directory(p)) {
    run_dir = true;
    file = p / "model.safetensors";
    if (!fs::exists(file)) {  // an unfinished run: its latest checkpoint's weights
      file = latest_checkpoint(target);
      QKV_CHECK(!file.empty(), "{} has neither model.safetensors nor checkpoints", target);
      f = checkpoint_model(read_safetensors(file.string()));
    }
  }
  QKV_CHECK(fs::exists(file), "{}: no such file or run directory", target);
  tm.path = file.string();
  if (f.tensors.empty()) f = read_safetensors(tm.path);
  if (f.metadata.count("qkv.checkpoint")) f = checkpoint_model(f);  // a checkpoint holds a model too
  tm.metadata = f.metadata;
  QKV_CHECK(f.metadata.count("qkv.model"), "{}: not a qkv model file (its metadata has no qkv.model)", tm.path);
  const ModelConfig mc = model_config_from_json(f.metadata.at("qkv.model"), tm.path);
  check_model_file(mc, f, tm.path);
  tm.data_from_metadata = !(run_dir && fs::exists(p / "config.toml"));
  tm.config = tm.data_from_metadata ? config_from_metadata(f.metadata, tm.path) : load_config((p / "config.toml").string());
  if (f.metadata.count("qkv.vocab")) {
    try {
      tm.vocab = CharVocab(f.metadata.at("qkv.vocab"));
    } catch (const Error& e) {
      fail("{}: the qkv.vocab metadata is invalid: {}", tm.path, e.what());
    }
    QKV_CHECK(tm.vocab.size() == mc.vocab_size, "{}: qkv.vocab has {} characters but the model's vocab_size is {}",
              tm.path, tm.vocab.size(), mc.vocab_size);
  }
  Generator g(0);
  tm.model = build_model(mc, g);
  load(*tm.model, f, tm.path, /*strict=*/true);
  tm.model->eval();
  return tm;
}

namespace {

// The logits of the token after `ids`, given its last model.positions tokens (ModelConfig::seq_len, the table). With the cache only
// the tokens it has not seen run. When the window slides, every token's position changes (the positions are
// learned absolute embeddings), so the cache is refilled over the new window (its buffers are reused): past the
// table, a cached token costs as much as an uncached one.
class NextLogits {
 public:
  NextLogits(LanguageModel& model, bool cached) : model_(model), cached_(cached) {}
  Tensor operator()(const std::vector<std::int64_t>& ids) {
    const auto window = static_cast<std::size_t>(model_.config().seq_len);
    const std::size_t first = ids.size() > window ? ids.size() - window : 0;
    if (!cached_) return model_.logits(ids_tensor(slice(ids, first)));
    if (cache_.layers.empty()) cache_ = model_.make_cache(1);
    if (first != first_) {  // the window slid: refill from its start, overwriting the rows
      cache_.length = 0;
      first_ = first;
    }
    return model_.logits(ids_tensor(slice(ids, first_ + static_cast<std::size_t>(cache_.length))), cache_);
  }

 private:
  static std::vector<std::int64_t> slice(const std::vector<std::int64_t>& ids, std::size_t from) {
    return {ids.begin() + static_cast<std::ptrdiff_t>(from), ids.end()};
  }
  LanguageModel& model_;
  bool cached_;
  KVCache cache_;
  std::size_t first_ = 0;  // the index in ids of the cache's first token
};

// Greedy at temperature 0, else a draw from softmax(logits / temperature).
std::int64_t pick_token(const std::vector<double>& logits, double temperature, Generator& gen) {
  if (temperature == 0) return std::max_element(logits.begin(), logits.end()) - logits.begin();
  const double m = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double total = 0;
  for (std::size_t i = 0; i < p.size(); ++i) total += p[i] = std::exp((logits[i] - m) / temperature);
  double u = gen.uniform() * total;
  std::int64_t next = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    next = static_cast<std::int64_t>(i);
    if ((u -= p[i]) < 0) break;
  }
  return next;
}

}  // namespace

std::vector<std::int64_t> sample_tokens(const TrainedModel& tm, std::vector<std::int64_t> ids, std::int64_t length,
                                        double temperature, std::uint64_t seed,
                                        const std::function<void(std::int64_t)>& on_token, bool cached) {
  QKV_CHECK(tm.model->config().causal,
            "sample: {} is not a causal model; sampling needs one trained with model.causal = true", tm.path);
  QKV_CHECK(temperature >= 0, "sample: --temperature must be >= 0, got {}", temperature);
  QKV_CHECK(!ids.empty(), "sample: no prompt tokens given");
  Generator gen(seed);
  NoGradGuard no_grad;
  NextLogits next_logits(*tm.model, cached);
  std::vector<std::int64_t> out;
  for (std::int64_t n = 0; n < length; ++n) {
    const Tensor logits = next_logits(ids);  // (1, n, V): the last row predicts the next token
    check_finite_output(logits, "sample", tm.path);
    const std::int64_t v = logits.size(2), rows = logits.size(1);
    const std::int64_t next = pick_token(narrow(reshape(logits, {-1, v}), 0, rows - 1, 1).to_vector(), temperature, gen);
    ids.push_back(next);
    out.push_back(next);
    if (on_token) on_token(next);
  }
  return out;
}

namespace {

// Every option of every subcommand; CLI11 writes into it.
struct Args {
  std::string config_path, resume, target, tokens, svg, out, dtype = "f32", prompt;
  std::vector<std::string> overrides, report_runs;
  bool force = false, json = false, keys = false, no_cache = false, bench_profile = false;
  std::int64_t layer = 0, head = 0, length = 200, bench_steps = 50, bench_warmup = 5;
  double temperature = 1.0;
  std::string seed_text = "0";
};
// The man-page part of `qkv --help` (a test checks it against README and the exit codes the CLI returns).
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

constexpr const char* kHelpFooter = R"(Each command has its own --help: qkv COMMAND --help.

Exit status:
  0    success
  1    runtime failure (a non-finite loss, out of memory, a failed write)
  2    usage, config or input error (the message names the key, file, line and column)
  130  stopped by SIGINT (Ctrl-C) after writing a checkpoint; 143 for SIGTERM

Files:
  RUN_DIR/config.toml, metrics.jsonl, train.log, checkpoints/, model.safetensors, report.html
  written by qkv train into run.out_dir/run.name; every file is written atomically

Environment:
  QKV_GEMM=eigen|blas|auto   the GEMM engine (default auto: the faster one here, measured once and cached)

More: README.md (quickstart, config reference: qkv info --keys))";

struct Commands {
  CLI::App *train, *eval, *info, *bench, *init, *export_, *predict, *attention, *sample, *report;
};

// The MODEL positional of every command that reads a trained model.
void add_model_argument(CLI::App* command, Args& a) {
  command->add_option("model", a.target, "run directory or .safetensors file")->required();
}

// train, eval, info, bench and init: the commands that read a config or a run.
void declare_run_commands(CLI::App& app, Args& a, Commands& c) {
  c.train = app.add_subcommand("train", "train a model from a TOML config");
  c.train->add_option("config", a.config_path, "config file (e.g. configs/reverse.toml)");
  c.train->add_option("overrides", a.overrides, "section.key=value overrides, e.g. train.steps=200");
  c.train->add_option("--resume", a.resume, "continue RUN_DIR from its latest checkpoint");
  c.train->add_flag("--force", a.force, "replace an existing run directory");
  c.eval = app.add_subcommand("eval", "validation metrics of a trained model");
  add_model_argument(c.eval, a);
  c.eval->add_flag("--json", a.json, "print one JSON object");
  c.info = app.add_subcommand("info", "resolved config, model summary, parameter count and FLOPs per token");
  c.info->add_option("config", a.config_path, "config file");
  c.info->add_flag("--keys", a.keys, "print every config key with its type, default and meaning");
  c.info->add_option("overrides", a.overrides, "section.key=value overrides");
  c.bench = app.add_subcommand("bench", "time training steps (no eval or checkpoint I/O)");
  c.bench->add_option("config", a.config_path, "config file (e.g. bench/configs/small.toml)")->required();
  c.bench->add_option("overrides", a.overrides, "section.key=value overrides");
  c.bench->add_option("--steps", a.bench_steps, "timed steps (default 50)");
  c.bench->add_option("--warmup", a.bench_warmup, "untimed steps first (default 5)");
  c.bench->add_flag("--profile", a.bench_profile, "also print where a step's time goes, by op family");
  c.init = app.add_subcommand("init", "write the initial weights a run of CONFIG starts from (for another framework)");
  c.init->add_option("config", a.config_path, "config file")->required();
  c.init->add_option("overrides", a.overrides, "section.key=value overrides");
  c.init->add_option("--out", a.out, "output .safetensors file")->required();
}

// export, predict, attention, sample and report: the commands that read a trained model.
void declare_model_commands(CLI::App& app, Args& a, Commands& c) {
  c.export_ = app.add_subcommand("export", "write a run's weights as a safetensors file (PyTorch/numpy read it)");
  c.export_->add_option("model", a.target, "run directory or .safetensors file")->required();
  c.export_->add_option("--out", a.out, "output file (default RUN_DIR/model.<dtype>.safetensors, or FILE.<dtype>."
                                        "safetensors beside a file)");
  c.export_->add_option("--dtype", a.dtype, "f32, f16 or bf16")->check(CLI::IsMember({"f32", "f16", "bf16"}));
  c.predict = app.add_subcommand("predict", "the predicted token at every position");
  add_model_argument(c.predict, a);
  c.predict->add_option("--tokens", a.tokens, "input: token ids \"3 1 4\" (text models: text)")->required();
  c.predict->add_flag("--json", a.json, "print tokens, predictions and logits (seq x vocab) as JSON");
  c.attention = app.add_subcommand("attention", "the attention matrix of one layer and head");
  add_model_argument(c.attention, a);
  c.attention->add_option("--tokens", a.tokens, "input: token ids (text models: text)")->required();
  c.attention->add_option("--layer", a.layer, "layer (default 0)");
  c.attention->add_option("--head", a.head, "head (default 0)");
  c.attention->add_option("--svg", a.svg, "also write an SVG heatmap with the tokens as axis labels");
  c.attention->add_flag("--json", a.json, "print the weights (rows: queries) and tokens as one JSON object");
  c.sample = app.add_subcommand("sample", "generate from a causal model");
  add_model_argument(c.sample, a);
  c.sample->add_option("--prompt", a.prompt, "the start (text models: text)")->required();
  c.sample->add_option("--length", a.length, "tokens to generate (default 200)");
  c.sample->add_option("--temperature", a.temperature, "softmax temperature; 0 = greedy (default 1)");
  c.sample->add_option("--seed", a.seed_text, "random seed, 0 to 2^64 - 1 (default 0)");
  c.sample->add_flag("--no-cache", a.no_cache, "re-run the whole context for every token (the same text, slower)");
  c.report = app.add_subcommand("report", "write one self-contained HTML page with a run's curves and attention");
  c.report->add_option("run_dirs", a.report_runs, "run directories (several are overlaid)")->required();
  c.report->add_option("--out", a.out, "output file (default FIRST_RUN_DIR/report.html)");
}

// sample --seed: any 64-bit seed, and nothing else (CLI11 would take -1, or print a range of 1e308).
std::uint64_t parse_seed(const std::string& text) {
  std::uint64_t seed = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seed);
  QKV_CHECK(!text.empty() && ec == std::errc() && end == text.data() + text.size(),
            "sample: --seed must be a whole number from 0 to {}, got '{}'", UINT64_MAX, text);
  return seed;
}

int dispatch(const Commands& c, const Args& a) {
  if (*c.train) return cmd_train(a.config_path, a.overrides, a.resume, a.force);
  if (*c.eval) return cmd_eval(a.target, a.json);
  if (*c.info) return cmd_info(a.config_path, a.overrides, a.keys);
  if (*c.export_) return cmd_export(a.target, a.out, a.dtype);
  if (*c.bench) {
    const Config cfg = load_config(a.config_path, a.overrides);
    set_num_threads(thread_count(cfg));
    const BenchResult b = bench(cfg, a.bench_steps, a.bench_warmup, a.bench_profile);
    if (!Comm::world().lead()) return 0;
    fmt::print("steps_per_s={:.3f} tokens_per_s={:.1f} gflops={:.3f} peak_rss_mb={:.1f}", b.steps_per_s,
               b.tokens_per_s, b.gflops, b.peak_rss_mb);
    if (b.ranks > 1) fmt::print(" ranks={} comm_fraction={:.3f}", b.ranks, b.comm_fraction);  // global figures
    if (b.buckets > 0) fmt::print(" buckets={} started_in_backward={}", b.buckets, b.buckets_early);
    fmt::print("\n");
    if (a.bench_profile) print_profile(b.profile);
    return 0;
  }
  if (*c.init) {
    check_output_path(a.out, "init --out");
    const auto n = write_initial_model(load_config(a.config_path, a.overrides), a.out);
    fmt::print("wrote {} ({} parameters, before any training step)\n", a.out, n);
    return 0;
  }
  if (*c.predict) return cmd_predict(a.target, a.tokens, a.json);
  if (*c.report) {
    if (!a.out.empty()) check_output_path(a.out, "report --out");
    fmt::print("wrote {}\n", write_report(a.report_runs, a.out));
    return 0;
  }
  if (*c.attention) return cmd_attention(a.target, a.tokens, a.layer, a.head, a.svg, a.json);
  if (*c.sample) return cmd_sample(a.target, a.prompt, a.length, a.temperature, parse_seed(a.seed_text), !a.no_cache);
  return 2;
}

// The exit codes: 2 for usage, config and input errors; 1 for failures while running.
// Prints a failure once per job: on one process, always; under mpirun, by the lowest rank that failed itself
// (a failure every rank hits, such as a config error, is printed by rank 0 alone; the ranks that only learned of
// another's failure print nothing). Every rank is here when this runs, so the gather cannot hang.
void report_failure(const std::string& message, int code) {
  const Comm& comm = Comm::world();
  if (!comm.distributed()) {
    std::cerr << message;
    return;
  }
  // A rank that failed alone (a missing config or data file on its machine, a bad QKV_GEMM in its environment)
  // would leave the others waiting forever in their next collective: it says why and ends the job.
  if (!comm.all_failing(kFailureAgreementSeconds)) {
    std::cerr << fmt::format("rank {}: {}", comm.rank(), message) << std::flush;
    comm.abort_job(code);
  }
  const auto failed = comm.gather(message.empty() ? 0 : 1);
  const auto first = std::find(failed.begin(), failed.end(), 1u) - failed.begin();
  if (first != comm.rank()) return;
  std::cerr << (comm.lead() ? message : fmt::format("rank {}: {}", comm.rank(), message));
}

int exit_code_of(const std::function<int()>& run) {
  std::string message;
  int code = 1;
  try {
    return run();
  } catch (const PeerFailed& e) {
    code = e.code;  // another rank failed, and says why
  } catch (const WriteError& e) {
    message = fmt::format("qkv: failed: {}\n", e.what());
  } catch (const Error& e) {
    message = fmt::format("qkv: error: {}\n", e.what());
    code = 2;
  } catch (const fs::filesystem_error& e) {  // an input path the system refuses (a symlink loop, a name too long)
    message = fmt::format("qkv: error: {}{}: {}\n", e.path1().string(), e.path2().empty() ? "" : " -> " + e.path2().string(),
                          e.code().message());
    code = 2;
  } catch (const TrainingError& e) {
    message = fmt::format("\nqkv: training failed: {}\n", e.what());
  } catch (const std::bad_alloc&) {
    message = "\nqkv: out of memory (lower train.batch_size, data.seq_len or the model size)\n";
  } catch (const std::exception& e) {
    message = fmt::format("qkv: failed: {}\n", e.what());
  }
  report_failure(message, code);
  return code;
}

}  // namespace

int run_cli(int argc, const char* const* argv) {
  CLI::App app{"qkv: train, inspect and export attention models"};
  app.set_version_flag("--version", std::string("qkv ") + version());
  app.require_subcommand(1);
  app.footer(kHelpFooter);
  Args args;
  Commands commands{};
  declare_run_commands(app, args, commands);
  declare_model_commands(app, args, commands);
  if (launched_by_mpirun()) {
    // Under mpirun MPI starts before anything can fail, so a failure on any rank can be agreed on or end the job.
    const int code = exit_code_of([] { return (void)Comm::world(), 0; });
    if (code != 0) return code;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    return exit_code_of([&]() -> int {
      fail("{}\n(run 'qkv --help' or 'qkv <command> --help')", e.what());
    });
  }
  return exit_code_of([&] {
    gemm_choice();  // a bad QKV_GEMM is a usage error before any work
    return dispatch(commands, args);
  });
}

}  // namespace qkv
