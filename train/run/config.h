#pragma once
// The training config: TOML sections [run] [data] [model] [optim] [schedule] [train]. One table of key specs
// drives parsing, type and range checks, command-line overrides, the resolved config and the README reference.
#include <qkv/datasets/dataset.h>
#include <qkv/layers/models.h>
#include <qkv/optim/optimizer.h>
#include <qkv/optim/schedule.h>

#include <cstdint>
#include <string>
#include <vector>

namespace qkv {

struct Config {
  struct Run {
    std::string name = "reverse";
    std::uint64_t seed = 0;
    std::string out_dir = "runs";
  } run;
  DataOptions data;
  /// [model]: the ModelConfig fields (model_fields(): each is a key, but vocab_size and seq_len, which the data
  /// decides), and two keys of the run.
  struct Model : ModelConfig {
    std::int64_t positions = 0;  // positional table size; 0 = data.seq_len
    std::string init;            // safetensors file of initial weights, loaded by name, strictly
  } model;
  /// [optim]: the optimizer's name, its options (optimizer_fields(): each is a key), and two keys of the run.
  struct Optim : AnyOptimizerOptions {
    std::string name = "adam";  // sgd | adam | adamw
    double clip_grad_norm = 0.0;  // 0 = off
    bool shard = false;           // ZeRO-1 under mpirun
  } optim;
  struct Schedule {
    std::string kind = "constant";  // constant | cosine | linear | step
    std::int64_t warmup_steps = 0;
    double min_lr = 0.0;
    std::int64_t step_size = 1000;
    double gamma = 0.1;
  } schedule;
  struct Train {
    std::int64_t steps = 1000, batch_size = 64, eval_every = 100, log_every = 10;
    std::int64_t grad_accum_steps = 1;  // micro-batches per step, gradients summed
    std::string precision = "fp32";     // fp32 | bf16 (matrix products in bf16, float32 master weights)
    std::int64_t checkpoint_every = 500, keep_checkpoints = 3;
    double target_accuracy = 0.0;  // 0 = never stop early
    std::int64_t threads = 0;      // 0 = all cores
    double bucket_mb = 0.25;       // under mpirun: gradient all-reduce buckets; 0 = one after backward
  } train;

  /// The model to build (vocab_size from the data; `text` sets it from the file's characters).
  ModelConfig model_config(std::int64_t vocab_size) const;
};

/// One documented key: what `qkv info`, the resolved config and the README list.
/// The [optim] keys as make_optimizer's options, and the [schedule] keys (with train.steps) as the schedule's: the
/// one place a config's hyperparameters become the objects' options.
AnyOptimizerOptions optimizer_options(const Config& config);
ScheduleOptions schedule_options(const Config& config);

struct ConfigKeyDoc {
  std::string name;  ///< "data.seq_len"
  std::string type;  ///< "int", "float", "bool", "string", "[float, float]"
  std::string default_value;
  std::string meaning;
};
/// Every key, in section order.
std::vector<ConfigKeyDoc> config_reference();
/// config_reference() as the Markdown table `qkv info --keys` prints and README's config reference holds.
std::string config_reference_markdown();

/// Parses a TOML file, then applies `overrides` ("section.key=value", parsed as TOML values or bare strings),
/// then validates. Errors are qkv::Error naming the file, line, column and key (or the override).
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
/// The same from TOML text; `source` names it in errors.
Config parse_config(const std::string& text, const std::string& source, const std::vector<std::string>& overrides = {});
/// The type-independent checks of every key (ranges, allowed names) on a Config built elsewhere, such as from a
/// model file's metadata; `source` names it in errors.
void check_ranges(const Config& config, const std::string& source);
/// The resolved config as TOML (every key, with defaults filled in).
std::string to_toml(const Config& config);
/// `text` as a TOML basic string, quoted, with every control character escaped.
std::string toml_quote(const std::string& text);
/// The [data] keys and run.seed as a JSON object: exported files' "qkv.data" metadata, which lets `qkv eval`
/// rebuild the validation set. Written and read through the same key table as the TOML.
std::string data_to_json(const Config& config);
/// A default Config with the "qkv.data" JSON applied, each value type- and range-checked; `source` names it.
Config config_from_data_json(const std::string& json, const std::string& source);

/// For `qkv train --resume RUN a.b=c`: throws naming the key when the overrides change the run's model (its
/// checkpoints could not be loaded); `where` names the run's saved config.
void check_resume_overrides(const Config& was, const Config& now, const std::string& where);

}  // namespace qkv
