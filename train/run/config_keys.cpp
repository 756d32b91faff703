#include "qkv/train/run/config_keys.h"

#include <qkv/core/precision.h>
#include <qkv/optim/optimizer.h>
#include <qkv/optim/schedule.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

namespace qkv {
namespace config_keys {
namespace {

// The range of a ModelConfig field, so [data] and [model] keys that size the same table agree with model files.
const ModelField& model_field(std::string_view name) {
  for (const ModelField& f : model_fields())
    if (name == f.name) return f;
  QKV_ASSERT(false);
  return model_fields().front();
}

}  // namespace


// The [model] keys, from ModelConfig's one description (model_fields() in layers/models.h).
std::vector<KeySpec> model_specs() {
  std::vector<KeySpec> out;
  for (const ModelField& f : model_fields()) {
    if (!f.in_config) continue;
    KeySpec k{std::string("model.") + f.name,
              [m = f.member](Config& c) -> Ref {
                return std::visit([&](auto mp) -> Ref { return &(static_cast<ModelConfig&>(c.model).*mp); }, m);
              },
              f.doc};
    const bool number = std::holds_alternative<std::int64_t ModelConfig::*>(f.member) ||
                        std::holds_alternative<double ModelConfig::*>(f.member);
    if (number) k.min = f.min, k.max = f.max;
    if (std::string_view(f.name) == "kind") k.choices = model_kinds;
    out.push_back(std::move(k));
  }
  // Each kind's own options (a name two kinds declare is one key; its first declaration gives type and range).
  for (const std::string& kind : model_kinds())
    for (const ModelOptionSpec& o : model_kind(kind).options) {
      const std::string name = "model." + o.name;
      if (std::any_of(out.begin(), out.end(), [&](const KeySpec& k) { return k.name == name; })) continue;
      KeySpec k{name,
                [o](Config& c) -> Ref {
                  auto [it, added] = c.model.options.try_emplace(o.name, o.default_value);
                  ModelOption& v = it->second;
                  if (v.index() != o.default_value.index()) v = o.default_value;
                  return std::visit([](auto& x) -> Ref { return &x; }, v);
                },
                // the doc outlives the spec: kinds are registered for the program's life
                o.doc.c_str()};
      if (std::holds_alternative<std::int64_t>(o.default_value) || std::holds_alternative<double>(o.default_value))
        k.min = o.min, k.max = o.max;
      k.kind_option = true;
      out.push_back(std::move(k));
    }
  return out;
}

bool foreign_option(const KeySpec& spec, const std::string& kind) {
  if (!spec.kind_option) return false;
  const std::string option = spec.name.substr(spec.name.find('.') + 1);
  for (const ModelOptionSpec& o : model_kind(kind).options)
    if (o.name == option) return false;
  return true;
}

// The [optim] keys of the optimizers' options, from their one description (optimizer_fields() in optim/).
std::vector<KeySpec> optimizer_specs() {
  std::vector<KeySpec> out;
  for (const OptimizerField& f : optimizer_fields()) {
    KeySpec k{std::string("optim.") + f.name,
              [m = f.member](Config& c) -> Ref {
                return std::visit([&](auto mp) -> Ref { return &(static_cast<AnyOptimizerOptions&>(c.optim).*mp); }, m);
              },
              f.doc};
    if (std::holds_alternative<double AnyOptimizerOptions::*>(f.member)) k.min = f.min, k.max = f.max;
    out.push_back(std::move(k));
  }
  return out;
}

std::vector<KeySpec> make_specs() {
  std::vector<KeySpec> s = {
      {"run.name", [](Config& c) -> Ref { return &c.run.name; }, "run directory name under out_dir"},
      {"run.seed", [](Config& c) -> Ref { return &c.run.seed; }, "seed of every random stream (init, data, dropout)"},
      {"run.out_dir", [](Config& c) -> Ref { return &c.run.out_dir; }, "folder that holds run directories"},
      {"data.task", [](Config& c) -> Ref { return &c.data.task; }, "the task; text and jsonl read data.path, tokens a shard folder (qkv tokenize), the others are generated",
       -kInf, kInf, task_names},
      {"data.vocab_size", [](Config& c) -> Ref { return &c.data.vocab_size; }, "tokens of generated tasks (text: taken from the file; tokens: from the manifest)", 2, model_field("vocab_size").max},
      {"data.seq_len", [](Config& c) -> Ref { return &c.data.seq_len; }, "sequence length of each example", 1, model_field("seq_len").max},
      {"data.val_size", [](Config& c) -> Ref { return &c.data.val_size; }, "validation examples of generated tasks (tokens: windows of the validation shards)", 1, 1e7},
      {"data.path", [](Config& c) -> Ref { return &c.data.path; }, "text: UTF-8 file; jsonl: training examples; tokens: folder of manifest.json and shards"},
      {"data.val_path", [](Config& c) -> Ref { return &c.data.val_path; }, "jsonl: validation examples (default: last 10% of path)"},
      {"data.shuffle", [](Config& c) -> Ref { return &c.data.shuffle; }, "jsonl/text/tokens: random batches; false takes them in file order, wrapping"},
      {"model.positions", [](Config& c) -> Ref { return &c.model.positions; }, "positional table size (0 = data.seq_len)", 0, model_field("seq_len").max},
      {"model.init", [](Config& c) -> Ref { return &c.model.init; }, "initial weights: a safetensors file loaded by name, strictly, or a GPT-2 checkpoint (a Hugging Face folder or nanoGPT file; model.kind = gpt2)"},
      {"optim.name", [](Config& c) -> Ref { return &c.optim.name; }, "the optimizer (torch.optim's update rules)", -kInf, kInf, optimizer_names},
      {"optim.clip_grad_norm", [](Config& c) -> Ref { return &c.optim.clip_grad_norm; }, "clip the global gradient norm to this (0 = off)", 0, kInf},
      {"optim.shard", [](Config& c) -> Ref { return &c.optim.shard; }, "under mpirun: each rank keeps the optimizer state of 1/N of the parameters (ZeRO-1)"},
      {"schedule.kind", [](Config& c) -> Ref { return &c.schedule.kind; }, "the learning rate's shape after warmup",
       -kInf, kInf, schedule_kinds},
      {"schedule.warmup_steps", [](Config& c) -> Ref { return &c.schedule.warmup_steps; }, "linear warmup steps from lr/warmup to lr", 0, 1e9},
      {"schedule.min_lr", [](Config& c) -> Ref { return &c.schedule.min_lr; }, "cosine/linear: final learning rate", 0, 1e3},
      {"schedule.step_size", [](Config& c) -> Ref { return &c.schedule.step_size; }, "step: decay every step_size steps", 1, 1e9},
      {"schedule.gamma", [](Config& c) -> Ref { return &c.schedule.gamma; }, "step: decay factor", 1e-300, 1e3},
      {"train.steps", [](Config& c) -> Ref { return &c.train.steps; }, "optimizer steps", 1, 1e12},
      {"train.batch_size", [](Config& c) -> Ref { return &c.train.batch_size; }, "sequences per step", 1, 1e7},
      {"train.grad_accum_steps", [](Config& c) -> Ref { return &c.train.grad_accum_steps; }, "split each step's batch into this many micro-batches and sum their gradients before the one optimizer step (it must divide the batch each rank takes); the step equals one over the whole batch", 1, 1e6},
      {"train.precision", [](Config& c) -> Ref { return &c.train.precision; }, "matrix and attention products: fp32, or bf16 inputs with float32 sums (weights, gradients, optimizer state, softmax, LayerNorm and the loss stay float32)",
       -kInf, kInf, precision_names},
      {"train.eval_every", [](Config& c) -> Ref { return &c.train.eval_every; }, "validate every this many steps (and at the end)", 1, 1e12},
      {"train.log_every", [](Config& c) -> Ref { return &c.train.log_every; }, "log training loss every this many steps", 1, 1e12},
      {"train.checkpoint_every", [](Config& c) -> Ref { return &c.train.checkpoint_every; }, "checkpoint every this many steps (0 = only at the end)", 0, 1e12},
      {"train.keep_checkpoints", [](Config& c) -> Ref { return &c.train.keep_checkpoints; }, "checkpoints kept (oldest deleted)", 1, 1e6},
      {"train.target_accuracy", [](Config& c) -> Ref { return &c.train.target_accuracy; }, "stop when validation sequence accuracy reaches it (0 = off)", 0, 1},
      {"train.bucket_mb", [](Config& c) -> Ref { return &c.train.bucket_mb; }, "under mpirun: gradients are summed in buckets of this size, each started while backward computes the rest (0 = one sum after backward)", 0, 1e6},
      {"train.threads", [](Config& c) -> Ref { return &c.train.threads; }, "worker threads (0 = all cores, shared by the ranks mpirun starts on one machine)", 0, 1024},
  };
  const auto model_end = std::find_if(s.begin(), s.end(), [](const KeySpec& k) { return k.name == "model.positions"; });
  auto model = model_specs();
  s.insert(model_end, model.begin(), model.end());
  const auto optim_at = std::find_if(s.begin(), s.end(), [](const KeySpec& k) { return k.name == "optim.clip_grad_norm"; });
  auto optim = optimizer_specs();
  s.insert(optim_at, optim.begin(), optim.end());
  return s;
}

const std::vector<KeySpec>& specs() {
  static const std::vector<KeySpec> s = make_specs();
  return s;
}

const KeySpec* find_spec(const std::string& name) {
  for (const auto& s : specs())
    if (name == s.name) return &s;
  return nullptr;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// " (did you mean 'data.seq_len'?)" for the closest known key or section, or "".
std::string suggest(const std::string& name, bool sections) {
  std::string best;
  std::size_t best_d = std::numeric_limits<std::size_t>::max();
  for (const auto& s : specs()) {
    std::string cand = s.name;
    if (sections) cand = cand.substr(0, cand.find('.'));
    const auto d = edit_distance(name, cand);
    if (d < best_d) best_d = d, best = cand;
  }
  const std::size_t limit = std::max<std::size_t>(2, name.size() / 3);
  return best_d <= limit ? fmt::format(" (did you mean '{}'?)", best) : std::string();
}

std::string format_value(const Ref& r) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return toml_quote(*p);
        } else if constexpr (std::is_same_v<T, bool>) {
          return *p ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          std::string s = fmt::format("{}", *p);
          if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // keep it a TOML float
          return s;
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          std::vector<std::string> parts;
          for (double v : *p) {
            std::string s = fmt::format("{}", v);
            if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
            parts.push_back(s);
          }
          return fmt::format("[{}]", fmt::join(parts, ", "));
        } else {
          return fmt::format("{}", *p);
        }
      },
      r);
}

std::string type_of(const Ref& r) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) return "string";
        else if constexpr (std::is_same_v<T, bool>) return "bool";
        else if constexpr (std::is_same_v<T, double>) return "float";
        else if constexpr (std::is_same_v<T, std::vector<double>>) return "[float, float]";
        else return "int";
      },
      r);
}

}  // namespace config_keys

using namespace config_keys;

std::vector<ConfigKeyDoc> config_reference() {
  Config defaults;
  std::vector<ConfigKeyDoc> out;
  for (const auto& s : specs()) {
    const Ref r = s.ref(defaults);
    const std::string type = s.choices == nullptr ? type_of(r) : fmt::format("string: {}", fmt::join(s.choices(), ", "));
    out.push_back({s.name, type, format_value(r), s.meaning});
  }
  return out;
}

std::string config_reference_markdown() {
  std::string out = "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& k : config_reference())
    out += fmt::format("| `{}` | {} | `{}` | {} |\n", k.name, k.type, k.default_value, k.meaning);
  return out;
}

}  // namespace qkv
