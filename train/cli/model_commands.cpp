#include <qkv/core/autograd.h>
#include <qkv/core/ops.h>
#include <qkv/train/cli/commands.h>
#include <qkv/train/io/files.h>
#include <qkv/train/io/checkpoints.h>
#include <qkv/layers/save.h>
#include <qkv/train/report/report.h>
#include <qkv/train/use/attention_view.h>
#include <qkv/train/use/generate.h>
#include <qkv/train/use/trained.h>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <memory>

namespace qkv::cli {
namespace fs = std::filesystem;
namespace {

constexpr std::int64_t kMaxSampleLength = 1'000'000;

// A command's input tokens: text (--tokens or --prompt, encoded by the model's tokenizer or characters) or raw ids
// (--ids "1 2 3", any model); exactly one of them.
struct TokenInput {
  std::string text, ids;
  std::vector<std::int64_t> parse(const TrainedModel& tm, const char* what) const {
    return ids.empty() ? tm.parse_tokens(text, what) : tm.parse_tokens(ids, what, /*raw_ids=*/true);
  }
};

void add_token_input(CLI::App& c, TokenInput& in, const char* name, const char* help) {
  auto* group = c.add_option_group("input", "what the model reads");
  group->add_option(name, in.text, help);
  group->add_option("--ids", in.ids, "token ids \"3 1 4\" for any model (instead of text)");
  group->require_option(1);
}

int cmd_predict(const std::string& target, const TokenInput& tokens, bool json) {
  const TrainedModel tm = load_trained(target);
  const auto ids = tokens.parse(tm, "predict");
  NoGradGuard no_grad;
  const Tensor logits = tm.model->logits(ids_tensor(ids));  // (1, T, V)
  check_finite_output(logits, "predict", tm.path);
  const Tensor pred = argmax(narrow(logits, -1, 0, tm.usable_vocab()), -1);  // padding rows are never predicted
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
      for (auto id : ids) in_text += tm.token_text(id);
      for (auto id : preds) out_text += tm.token_text(id);
      out["text"] = in_text;
      out["predicted_text"] = out_text;
    }
    // A BPE token can be part of a character: such bytes print as U+FFFD in JSON.
    fmt::print("{}\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    return 0;
  }
  if (tm.text()) {
    std::string in_text, out_text;
    for (auto id : ids) in_text += tm.token_text(id);
    for (auto id : preds) out_text += tm.token_text(id);
    if (tm.tokenizer) {
      fmt::print("{:>8}  {:>8}  {:<24}  {}\n", "position", "token", "text", "predicted next");
      for (std::size_t i = 0; i < ids.size(); ++i)
        fmt::print("{:>8}  {:>8}  {:<24}  {} ({})\n", i, ids[i], tm.token_label(ids[i]), tm.token_label(preds[i]),
                   preds[i]);
      return 0;
    }
    fmt::print("input:      {}\npredicted:  {}\n(each predicted character is the model's guess for the one after the "
               "input character above it)\n",
               in_text, out_text);
    return 0;
  }
  fmt::print("position  token  predicted\n");
  for (std::size_t i = 0; i < ids.size(); ++i) fmt::print("{:>8}  {:>5}  {:>9}\n", i, ids[i], preds[i]);
  return 0;
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

int cmd_attention(const std::string& target, const TokenInput& tokens, std::int64_t layer, std::int64_t head,
                  const std::string& svg_path, bool json) {
  if (!svg_path.empty()) check_output_path(svg_path, "attention --svg");
  const TrainedModel tm = load_trained(target);
  const auto ids = tokens.parse(tm, "attention");
  const Tensor w = head_weights(attention_maps(*tm.model, ids_tensor(ids)), layer, head);
  const std::int64_t t = w.size(0);
  std::vector<std::string> labels;
  for (auto id : ids) labels.push_back(tm.token_label(id));
  const auto v = w.to_vector();
  if (json) {  // the same numbers qkv report draws, for scripts and tests
    nlohmann::json rows = nlohmann::json::array();
    for (std::int64_t i = 0; i < t; ++i) rows.push_back(std::vector<double>(v.begin() + i * t, v.begin() + (i + 1) * t));
    fmt::print("{}\n", nlohmann::json{{"layer", layer}, {"head", head}, {"ids", ids}, {"tokens", labels},
                                      {"weights", rows}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  } else {
    print_attention(w, labels, layer, head, tm.path);
  }
  if (!svg_path.empty()) {
    write_file_atomic(svg_path, attention_svg(w, labels, fmt::format("{}: layer {}, head {}", tm.path, layer, head)));
    if (!json) fmt::print("wrote {}\n", svg_path);
  }
  return 0;
}

int cmd_sample(const std::string& target, const TokenInput& prompt, std::int64_t length, double temperature,
               std::uint64_t seed, bool cached) {
  const TrainedModel tm = load_trained(target);
  QKV_CHECK(length >= 0 && length <= kMaxSampleLength, "sample: --length must be 0 to {}, got {}", kMaxSampleLength,
            length);
  const auto ids = prompt.parse(tm, "sample");
  // Tokens are printed as they come.
  const auto emit = [&](std::int64_t id) {
    fmt::print("{}{}", tm.token_text(id), tm.text() ? "" : " ");
    std::fflush(stdout);
  };
  for (auto id : ids) emit(id);
  sample_tokens(tm, ids, length, temperature, seed, emit, cached);
  fmt::print("\n");
  return 0;
}

// export --format hf: a Hugging Face folder of the model's kind, by default beside the model (RUN_DIR/hf, or FILE's stem + "-hf").
int cmd_export_hf(const std::string& run_dir, std::string out, const std::string& dtype) {
  const fs::path from(run_dir);
  if (out.empty())
    out = fs::is_directory(from) ? (from / "hf").string()
                                 : (from.parent_path() / (from.stem().string() + "-hf")).string();
  QKV_CHECK(!fs::exists(out) || fs::is_directory(out), "export --out {}: is a file; --format hf writes a folder", out);
  const fs::path parent = fs::path(out).parent_path();
  QKV_CHECK(parent.empty() || fs::is_directory(parent), "export --out {}: the folder {} does not exist", out,
            parent.string());
  const TrainedModel tm = load_trained(run_dir);
  const auto gen = tm.metadata.find("qkv.generation_config");
  const auto removed = hf_format_of_kind(tm.model->config().kind)
                           .write_hf(*tm.model, tm.tokenizer.get(), out, parse_storage_type(dtype),
                                     gen == tm.metadata.end() ? "" : gen->second);
  if (!removed.empty())
    fmt::print(stderr, "qkv: note: removed {} from {}: another model's files, which loaders would read with this one\n",
               fmt::join(removed, ", "), out);
  fmt::print("wrote {} (config.json, model.safetensors, generation_config.json{}; {} parameters, {})\n", out,
             tm.tokenizer ? ", tokenizer.json, vocab.json, merges.txt" : "; no tokenizer: the model was not trained on tokens",
             tm.model->num_parameters(), dtype);
  return 0;
}

int cmd_export(const std::string& run_dir, std::string out, const std::string& dtype, const std::string& format) {
  if (format == "hf") return cmd_export_hf(run_dir, out, dtype);
  const StorageType storage = parse_storage_type(dtype);
  // By default beside the model: RUN_DIR/model.<dtype>.safetensors, or for a file FILE, <FILE's stem>.<dtype>...
  const fs::path from(run_dir);
  if (out.empty() && fs::is_directory(from))
    out = (from / fmt::format("model.{}.safetensors", dtype)).string();
  else if (out.empty())
    out = (from.parent_path() / fmt::format("{}.{}.safetensors", from.stem().string(), dtype)).string();
  check_output_path(out, "export --out");
  const TrainedModel tm = load_trained(run_dir);
  save(*tm.model, out, tm.metadata, storage);
  std::error_code ec;
  const bool regular = fs::is_regular_file(out, ec);  // not /dev/null or a pipe: those have no size
  fmt::print("wrote {} ({} tensors, {} parameters, {}{})\n", out, tm.model->named_parameters().size(),
             tm.model->num_parameters(), dtype, regular ? fmt::format(", {} bytes", fs::file_size(out, ec)) : "");
  return 0;
}

int cmd_report(const std::vector<std::string>& runs, const std::string& out) {
  if (!out.empty()) check_output_path(out, "report --out");
  fmt::print("wrote {}\n", write_report(runs, out));
  return 0;
}

// sample --seed: any 64-bit seed, and nothing else (CLI11 would take -1, or print a range of 1e308).
std::uint64_t parse_seed(const std::string& text) {
  std::uint64_t seed = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seed);
  QKV_CHECK(!text.empty() && ec == std::errc() && end == text.data() + text.size(),
            "sample: --seed must be a whole number from 0 to {}, got '{}'", UINT64_MAX, text);
  return seed;
}

// The MODEL positional of every command that reads a trained model.
void add_model_argument(CLI::App& command, std::string& target) {
  command.add_option("model", target, "run directory, .safetensors file or GPT-2 checkpoint folder")->required();
}

}  // namespace

void check_output_path(const std::string& path, const char* option) {
  QKV_CHECK(!path.empty() && path.back() != '/' && !fs::is_directory(path),
            "{} {}: is a directory; give a file name inside it", option, path);
  const fs::path parent = fs::path(path).parent_path();
  QKV_CHECK(parent.empty() || fs::is_directory(parent), "{} {}: the folder {} does not exist", option, path,
            parent.string());
}

Runner declare_export(CLI::App& c) {
  struct Args {
    std::string target, out, dtype = "f32", format = "qkv";
  };
  auto a = std::make_shared<Args>();
  add_model_argument(c, a->target);
  c.add_option("--out", a->out, "output file (default RUN_DIR/model.<dtype>.safetensors, or FILE.<dtype>."
                                "safetensors beside a file); with --format hf a folder (default RUN_DIR/hf)");
  c.add_option("--dtype", a->dtype, "f32, f16 or bf16")->check(CLI::IsMember({"f32", "f16", "bf16"}));
  c.add_option("--format", a->format, "qkv (a qkv model file) or hf (a Hugging Face GPT-2 or llama-family folder: config.json, "
                                      "model.safetensors, tokenizer files; model.kind = gpt2)")
      ->check(CLI::IsMember({"qkv", "hf"}));
  return [a] { return cmd_export(a->target, a->out, a->dtype, a->format); };
}

Runner declare_predict(CLI::App& c) {
  struct Args {
    std::string target;
    TokenInput tokens;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  add_model_argument(c, a->target);
  add_token_input(c, a->tokens, "--tokens", "input: text for models with a tokenizer or characters, else ids \"3 1 4\"");
  c.add_flag("--json", a->json, "print tokens, predictions and logits (seq x vocab) as JSON");
  return [a] { return cmd_predict(a->target, a->tokens, a->json); };
}

Runner declare_attention(CLI::App& c) {
  struct Args {
    std::string target, svg;
    TokenInput tokens;
    std::int64_t layer = 0, head = 0;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  add_model_argument(c, a->target);
  add_token_input(c, a->tokens, "--tokens", "input: text for models with a tokenizer or characters, else ids");
  c.add_option("--layer", a->layer, "layer (default 0)");
  c.add_option("--head", a->head, "head (default 0)");
  c.add_option("--svg", a->svg, "also write an SVG heatmap with the tokens as axis labels");
  c.add_flag("--json", a->json, "print the weights (rows: queries) and tokens as one JSON object");
  return [a] { return cmd_attention(a->target, a->tokens, a->layer, a->head, a->svg, a->json); };
}

Runner declare_sample(CLI::App& c) {
  struct Args {
    std::string target, seed = "0";
    TokenInput prompt;
    std::int64_t length = 200;
    double temperature = 1.0;
    bool no_cache = false;
  };
  auto a = std::make_shared<Args>();
  add_model_argument(c, a->target);
  add_token_input(c, a->prompt, "--prompt", "the start: text for models with a tokenizer or characters, else ids");
  c.add_option("--length", a->length, "tokens to generate (default 200)");
  c.add_option("--temperature", a->temperature, "softmax temperature; 0 = greedy (default 1)");
  c.add_option("--seed", a->seed, "random seed, 0 to 2^64 - 1 (default 0)");
  c.add_flag("--no-cache", a->no_cache, "re-run the whole context for every token (the same text, slower)");
  return [a] { return cmd_sample(a->target, a->prompt, a->length, a->temperature, parse_seed(a->seed), !a->no_cache); };
}

Runner declare_report(CLI::App& c) {
  struct Args {
    std::vector<std::string> runs;
    std::string out;
  };
  auto a = std::make_shared<Args>();
  c.add_option("run_dirs", a->runs, "run directories (several are overlaid)")->required();
  c.add_option("--out", a->out, "output file (default FIRST_RUN_DIR/report.html)");
  return [a] { return cmd_report(a->runs, a->out); };
}

}  // namespace qkv::cli
