#include "qkv/train/cli.h"

#include <qkv/core/autograd.h>
#include <qkv/core/ops.h>
#include <qkv/datasets/dataset.h>
#include <qkv/train/safetensors.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>

namespace qkv {
namespace fs = std::filesystem;
namespace {

Config config_from_metadata(const std::map<std::string, std::string>& meta, const std::string& path) {
  Config c;
  const auto it = meta.find("qkv.data");
  if (it == meta.end()) return c;
  const auto j = nlohmann::json::parse(it->second, nullptr, false);
  QKV_CHECK(!j.is_discarded(), "{}: qkv.data metadata is not JSON", path);
  c.data.task = j.value("task", c.data.task);
  c.data.vocab_size = j.value("vocab_size", c.data.vocab_size);
  c.data.seq_len = j.value("seq_len", c.data.seq_len);
  c.data.val_size = j.value("val_size", c.data.val_size);
  c.data.path = j.value("path", std::string());
  c.data.val_path = j.value("val_path", std::string());
  c.data.shuffle = j.value("shuffle", true);
  c.run.seed = j.value("seed", std::uint64_t{0});
  return c;
}

// Prints the learned attention of one validation example.
void show_attention(const TrainedModel& tm, const Dataset& data) {
  const Tensor x = narrow(data.validation().inputs, 0, 0, 1);
  std::vector<Tensor> maps;
  {
    NoGradGuard no_grad;
    tm.model->eval();
    tm.model->logits(x, &maps);
  }
  std::vector<std::string> tokens;
  for (double v : x.to_vector()) tokens.push_back(data.decode(static_cast<std::int64_t>(v)));
  const Tensor w = reshape(narrow(narrow(maps.at(0), 0, 0, 1), 1, 0, 1), {x.size(1), x.size(1)});
  fmt::print("\nLearned attention (layer 0, head 0) on the first validation example:\n{}",
             render_attention(w, tokens));
}

int cmd_train(const std::string& config_path, const std::vector<std::string>& overrides, const std::string& resume,
              bool force) {
  Config cfg;
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
  const TrainResult r = train(cfg, options);
  if (r.exit_code != 0) return r.exit_code;
  fmt::print("\nTrained {} steps: validation loss {:.4f}, token accuracy {:.4f}, sequence accuracy {:.4f}\n", r.steps,
             r.val.loss, r.val.token_acc, r.val.seq_acc);
  fmt::print("Outputs in {}/: model.safetensors, config.toml, metrics.jsonl, train.log, checkpoints/\n", r.run_dir);
  const TrainedModel tm = load_trained(r.run_dir);
  show_attention(tm, *make_dataset(tm.config.data, tm.config.run.seed));
  return 0;
}

int cmd_eval(const std::string& target, bool json) {
  const TrainedModel tm = load_trained(target);
  const auto data = make_dataset(tm.config.data, tm.config.run.seed);
  const EvalResult e = evaluate(*tm.model, data->validation(), tm.config.train.batch_size);
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
    fmt::print("| key | type | default | meaning |\n|---|---|---|---|\n");
    for (const auto& k : config_reference())
      fmt::print("| `{}` | {} | `{}` | {} |\n", k.name, k.type, k.default_value, k.meaning);
    return 0;
  }
  QKV_CHECK(!config_path.empty(), "info: a CONFIG file is required (or --keys)");
  const Config cfg = load_config(config_path, overrides);
  const auto data = make_dataset(cfg.data, cfg.run.seed);
  const ModelConfig mc = cfg.model_config(data->vocab_size());
  Generator g(0);
  const auto model = build_model(mc, g);
  const double fpt = flops_per_token(mc, cfg.data.seq_len);
  fmt::print("# resolved config ({})\n{}\n# model\n{}\nparameters: {}\nforward FLOPs per token: {:.0f} ({:.3g} per "
             "training step of {} x {} tokens, counting backward as 2x forward)\n",
             config_path, to_toml(cfg), model->summary(), model->num_parameters(), fpt,
             3.0 * fpt * double(cfg.train.batch_size * cfg.data.seq_len), cfg.train.batch_size, cfg.data.seq_len);
  return 0;
}

}  // namespace

TrainedModel load_trained(const std::string& target) {
  TrainedModel tm;
  const fs::path p(target);
  fs::path file = p;
  bool run_dir = false;
  if (fs::is_directory(p)) {
    run_dir = true;
    file = p / "model.safetensors";
    QKV_CHECK(fs::exists(file), "{} has no model.safetensors (has training finished? use --resume to continue it)",
              target);
  }
  QKV_CHECK(fs::exists(file), "{}: no such file or run directory", target);
  tm.path = file.string();
  const SafetensorsFile f = read_safetensors(tm.path);
  tm.metadata = f.metadata;
  QKV_CHECK(f.metadata.count("qkv.model"), "{}: not a qkv model file (its metadata has no qkv.model)", tm.path);
  const ModelConfig mc = model_config_from_json(f.metadata.at("qkv.model"));
  tm.config = run_dir && fs::exists(p / "config.toml") ? load_config((p / "config.toml").string())
                                                       : config_from_metadata(f.metadata, tm.path);
  if (f.metadata.count("qkv.vocab")) tm.vocab = f.metadata.at("qkv.vocab");
  Generator g(0);
  tm.model = build_model(mc, g);
  load(*tm.model, f, tm.path, /*strict=*/true);
  tm.model->eval();
  return tm;
}

int run_cli(int argc, const char* const* argv) {
  CLI::App app{"qkv: train, inspect and export attention models"};
  app.set_version_flag("--version", std::string("qkv ") + version());
  app.require_subcommand(1);

  std::string config_path, resume, target;
  std::vector<std::string> overrides;
  bool force = false, json = false;

  auto* train_cmd = app.add_subcommand("train", "train a model from a TOML config");
  train_cmd->add_option("config", config_path, "config file (e.g. configs/reverse.toml)");
  train_cmd->add_option("overrides", overrides, "section.key=value overrides, e.g. train.steps=200");
  train_cmd->add_option("--resume", resume, "continue RUN_DIR from its latest checkpoint");
  train_cmd->add_flag("--force", force, "replace an existing run directory");

  auto* eval_cmd = app.add_subcommand("eval", "validation metrics of a trained model");
  eval_cmd->add_option("model", target, "run directory or .safetensors file")->required();
  eval_cmd->add_flag("--json", json, "print one JSON object");

  auto* info_cmd = app.add_subcommand("info", "resolved config, model summary, parameter count and FLOPs per token");
  bool keys = false;
  info_cmd->add_option("config", config_path, "config file");
  info_cmd->add_flag("--keys", keys, "print every config key with its type, default and meaning");
  info_cmd->add_option("overrides", overrides, "section.key=value overrides");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << "qkv: " << e.what() << "\n(run 'qkv --help' or 'qkv <command> --help')\n";
    return 2;
  }
  try {
    if (*train_cmd) return cmd_train(config_path, overrides, resume, force);
    if (*eval_cmd) return cmd_eval(target, json);
    if (*info_cmd) return cmd_info(config_path, overrides, keys);
  } catch (const Error& e) {
    std::cerr << "qkv: error: " << e.what() << "\n";
    return 2;
  } catch (const TrainingError& e) {
    std::cerr << "\nqkv: training failed: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "qkv: failed: " << e.what() << "\n";
    return 1;
  }
  return 2;
}

}  // namespace qkv
