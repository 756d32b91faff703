#include "qkv/train/run/config.h"

#include <qkv/core/errors.h>
#include <qkv/optim/optimizer.h>
#include <qkv/optim/schedule.h>
#include <qkv/train/io/files.h>
#include <qkv/train/run/config_keys.h>
#include <qkv/train/run/run_dir.h>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <variant>

namespace qkv {

std::string toml_quote(const std::string& text) {
  std::string out = "\"";  // a TOML basic string: every control character escaped
  for (char ch : text) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') out += '\\';
    if (ch == '\n') out += "\\n";
    else if (u < 0x20 || u == 0x7f) out += fmt::format("\\u{:04X}", u);
    else out += ch;
  }
  return out + "\"";
}

namespace {

using namespace config_keys;

constexpr double kMaxValidationTokens = 1 << 27;  // 134M: 2 GB of int64 inputs and targets
constexpr std::uint64_t kMaxConfigBytes = 1 << 20;  // the shipped configs are under 2 KB

std::string where_of(const std::string& source, const toml::source_region& r) {
  if (r.begin.line == 0) return source;
  return fmt::format("{}:{}:{}", source, r.begin.line, r.begin.column);
}

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date or time";
  }
}

// Stores node into the key's field, checking its type; `at` locates the value in errors.
void assign(const KeySpec& spec, Config& c, const toml::node& node, const std::string& at) {
  const auto bad = [&](const char* expected) {
    fail("{}: {}: expected {}, got {}", at, spec.name, expected, type_name(node));
  };
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (!node.is_string()) bad("a string");
          *p = node.as_string()->get();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!node.is_boolean()) bad("a boolean (true or false)");
          *p = node.as_boolean()->get();
        } else if constexpr (std::is_same_v<T, double>) {
          if (node.is_integer()) *p = static_cast<double>(node.as_integer()->get());
          else if (node.is_floating_point()) *p = node.as_floating_point()->get();
          else bad("a number");
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          const auto* arr = node.as_array();
          if (arr == nullptr || arr->size() != 2) bad("an array of two numbers");
          std::vector<double> v;
          for (const auto& e : *arr) {
            if (e.is_integer()) v.push_back(static_cast<double>(e.as_integer()->get()));
            else if (e.is_floating_point()) v.push_back(e.as_floating_point()->get());
            else bad("an array of two numbers");
          }
          *p = v;
        } else {
          if (!node.is_integer()) bad("an integer");
          const std::int64_t v = node.as_integer()->get();
          if constexpr (std::is_same_v<T, std::uint64_t>) {
            if (v < 0) fail("{}: {}: expected a non-negative integer, got {}", at, spec.name, v);
          }
          *p = static_cast<T>(v);
        }
      },
      spec.ref(c));
}

// Range and choice checks of one key.
void check_range(const KeySpec& spec, Config& c, const std::string& at) {
  const Ref r = spec.ref(c);
  if (auto* s = std::get_if<std::string*>(&r); s && has_control_character(**s)) {
    const auto bad = std::find_if((*s)->begin(), (*s)->end(), [](char ch) { return has_control_character({ch}); });
    fail("{}: {}: control character 0x{:02X} at byte {} (names and paths may not hold control characters: they "
         "break the files and commands qkv writes)",
         at, spec.name, static_cast<unsigned char>(*bad), bad - (*s)->begin());
  }
  if (auto* s = std::get_if<std::string*>(&r); s && spec.choices != nullptr) {
    const auto choices = spec.choices();
    if (std::find(choices.begin(), choices.end(), **s) == choices.end())
      fail("{}: {}: unknown value \"{}\" (expected one of: {})", at, spec.name, **s, fmt::join(choices, ", "));
    return;
  }
  double v = 0;
  if (auto* i = std::get_if<std::int64_t*>(&r)) v = static_cast<double>(**i);
  else if (auto* d = std::get_if<double*>(&r)) v = **d;
  else if (auto* b = std::get_if<std::vector<double>*>(&r)) {
    for (double x : **b)
      QKV_CHECK(x >= 0.0 && x < 1.0, "{}: {}: each beta must be in [0, 1), got {}", at, spec.name, format_value(r));
    return;
  } else
    return;
  QKV_CHECK(std::isfinite(v) || spec.max == kInf, "{}: {}: value {} is not finite", at, spec.name, format_value(r));
  QKV_CHECK(v >= spec.min && v <= spec.max, "{}: {}: value {} is out of range (expected {} to {})", at, spec.name,
            format_value(r), spec.min == 1e-300 ? "> 0" : fmt::format("{}", spec.min),
            spec.max == kInf ? "any larger" : fmt::format("{}", spec.max));
}

// An override value that is not valid TOML is taken as a bare string (run.name=abc), unless it was clearly meant
// as TOML: a quoted string or array left open, or a number too large to hold.
void check_bare_override(const KeySpec& spec, const std::string& value, const std::string& at, std::string_view why) {
  const auto first = value.find_first_not_of(" \t");
  if (first == std::string::npos) return;
  const char c0 = value[first];
  QKV_CHECK(c0 != '"' && c0 != '\'' && c0 != '[' && c0 != '{', "{}: {}: invalid TOML value {} ({})", at, spec.name,
            value, why);
  const auto digit = [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)) != 0; };
  const bool numeric = digit(c0) || ((c0 == '-' || c0 == '+') && first + 1 < value.size() && digit(value[first + 1]));
  Config probe;
  if (numeric && !std::holds_alternative<std::string*>(spec.ref(probe)))
    fail("{}: {}: value {} is out of range ({}; expected {} to {})", at, spec.name, value, why, spec.min,
         spec.max == kInf ? "any larger" : fmt::format("{}", spec.max));
}

}  // namespace

ModelConfig Config::model_config(std::int64_t vocab) const {
  ModelConfig m = model;
  m.vocab_size = vocab;
  m.seq_len = model.positions == 0 ? data.seq_len : model.positions;
  return m;
}

namespace {

// Where each key was set ("file:line:column" or "override 'k=v'"), for errors about it.
using Where = std::map<std::string, std::string>;

void apply_file(const std::string& text, const std::string& source, Config& c, Where& where) {
  toml::table root;
  try {
    root = toml::parse(std::string_view(text), std::string_view(source));
  } catch (const toml::parse_error& e) {
    fail("{}: invalid TOML: {}", where_of(source, e.source()), e.description());
  }
  for (const auto& [section, node] : root) {
    const std::string sec(section.str());
    const std::string at = where_of(source, node.source());
    bool known = false;
    for (const auto& s : specs()) known = known || s.name.rfind(sec + ".", 0) == 0;
    QKV_CHECK(known, "{}: unknown section [{}]{}", at, sec, suggest(sec, true));
    const auto* table = node.as_table();
    QKV_CHECK(table != nullptr, "{}: [{}] must be a table of keys, got {}", at, sec, type_name(node));
    for (const auto& [key, value] : *table) {
      const std::string name = sec + "." + std::string(key.str());
      const std::string vat = where_of(source, value.source());
      const KeySpec* spec = find_spec(name);
      QKV_CHECK(spec != nullptr, "{}: unknown key '{}'{}", vat, name, suggest(name, false));
      assign(*spec, c, value, vat);
      where[name] = vat;
    }
  }
}

// "section.key=value": the value is TOML (3, 0.5, true, "x", [0.9, 0.98]); anything else is a bare string.
void apply_override(const std::string& o, Config& c, Where& where) {
  const std::string at = fmt::format("override '{}'", o);
  const auto eq = o.find('=');
  QKV_CHECK(eq != std::string::npos && eq > 0, "{}: expected section.key=value", at);
  const std::string name = o.substr(0, eq), value = o.substr(eq + 1);
  const KeySpec* spec = find_spec(name);
  QKV_CHECK(spec != nullptr, "{}: unknown key '{}'{}", at, name, suggest(name, false));
  toml::table parsed;
  try {
    const std::string snippet = "v = " + value;
    parsed = toml::parse(std::string_view(snippet), std::string_view("override"));
  } catch (const toml::parse_error& e) {
    check_bare_override(*spec, value, at, e.description());
    parsed = toml::table{{"v", value}};
  }
  assign(*spec, c, *parsed.get("v"), at);
  where[name] = at;
}

// A bound on what validation can cost, for configs and model files' qkv.data alike (a file claiming 1e7 examples
// made one eval run for hours).
void check_validation_size(const DataOptions& d, const std::string& at) {
  QKV_CHECK(double(d.val_size) * double(d.seq_len) <= kMaxValidationTokens,
            "{}: data.val_size x data.seq_len = {} x {} is more than {:.0f} validation tokens", at, d.val_size,
            d.seq_len, kMaxValidationTokens);
}

// What a key's range cannot say: rules between keys. `at` locates a key.
template <class At>
void check_consistency(const Config& c, At&& at) {
  const auto& d = c.data;
  const auto& m = c.model;
  if (d.task == "text" || d.task == "jsonl")
    QKV_CHECK(!d.path.empty(), "{}: data.path is required for data.task = \"{}\"", at("data.task"), d.task);
  QKV_CHECK(d.task != "text" || m.causal,
            "{}: data.task = \"text\" needs model.causal = true (a language model must not see the tokens it predicts)",
            at("model.causal"));
  QKV_CHECK(m.positions == 0 || d.seq_len <= m.positions,
            "{}: data.seq_len = {} is larger than the model's positional table (model.positions = {})",
            at("data.seq_len"), d.seq_len, m.positions);
  check_validation_size(d, at("data.val_size"));
  QKV_CHECK(c.train.batch_size % c.train.grad_accum_steps == 0,
            "{}: train.grad_accum_steps = {} does not divide train.batch_size = {} (each micro-batch takes an equal "
            "share of the batch)", at("train.grad_accum_steps"), c.train.grad_accum_steps, c.train.batch_size);
  QKV_CHECK(!m.recompute || model_kind(m.kind).can_recompute,
            "{}: model.recompute = true: model.kind = \"{}\" has no blocks to recompute (the kinds that do: {})",
            at("model.recompute"), m.kind, recompute_kinds());
  QKV_CHECK(!c.optim.nesterov || c.optim.name == "sgd", "{}: optim.nesterov needs optim.name = \"sgd\"",
            at("optim.nesterov"));
  // The rules between keys that belong to what the keys configure: asked of it, with the place of the key.
  const auto rule_of = [](const std::string& where, const auto& check) {
    try {
      check();
    } catch (const Error& e) {
      fail("{}: {}", where, e.what());
    }
  };
  rule_of(at("model.heads"), [&] { model_kind(m.kind).check(c.model_config(d.vocab_size)); });
  rule_of(at("data.task"), [&] { check_data_options(d); });
  rule_of(at("optim.nesterov"), [&] { check_optimizer_options(c.optim.name, optimizer_options(c)); });
  rule_of(at("schedule.warmup_steps"), [&] { check_schedule_options(schedule_options(c)); });
}

}  // namespace

Config parse_config(const std::string& text, const std::string& source, const std::vector<std::string>& overrides) {
  Config c;
  Where where;
  apply_file(text, source, c, where);
  for (const auto& o : overrides) apply_override(o, c, where);
  const auto at = [&](const std::string& key) {
    const auto it = where.find(key);
    return it != where.end() ? it->second : source;
  };
  for (const auto& s : specs()) check_range(s, c, at(s.name));
  // The model options another kind declares: refused where set, otherwise dropped (reading a key fills it in).
  const bool known_kind = [&] { for (const auto& k : model_kinds()) if (k == c.model.kind) return true; return false; }();
  if (known_kind) {
    for (const auto& s : specs())
      if (foreign_option(s, c.model.kind)) {
        QKV_CHECK(!where.count(s.name), "{}: {} is an option of model.kind = {}, not of \"{}\"", at(s.name), s.name,
                  kinds_with_option(s.name.substr(6)), c.model.kind);
        c.model.options.erase(s.name.substr(6));
      }
    static_cast<ModelConfig&>(c.model) = c.model.with_defaults();
  }
  check_run_name(c.run.name, at("run.name"));
  check_consistency(c, at);
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  QKV_CHECK(!std::filesystem::is_directory(path), "config: {} is a directory, not a config file", path);
  // A regular file of at most 1 MB: a FIFO would block, /dev/zero would never end.
  return parse_config(read_file_bytes(path, "config", kMaxConfigBytes), path, overrides);
}

void check_ranges(const Config& config, const std::string& source) {
  Config c = config;
  for (const auto& s : specs()) check_range(s, c, source);
}

std::string to_toml(const Config& config) {
  Config c = config;
  std::string out, section;
  for (const auto& s : specs()) {
    if (foreign_option(s, c.model.kind)) continue;
    const std::string name = s.name;
    const std::string sec = name.substr(0, name.find('.'));
    if (sec != section) {
      out += fmt::format("{}[{}]\n", out.empty() ? "" : "\n", sec);
      section = sec;
    }
    out += fmt::format("{} = {}\n", name.substr(name.find('.') + 1), format_value(s.ref(c)));
  }
  return out;
}

namespace {

// The "qkv.data" keys: data.* without the section, and run.seed as "seed".
std::string data_json_key(const std::string& spec_name) {
  if (spec_name == "run.seed") return "seed";
  return spec_name.rfind("data.", 0) == 0 ? spec_name.substr(5) : std::string();
}

// A JSON scalar as the TOML node assign() takes (arrays never occur in "qkv.data").
std::optional<toml::table> as_toml(const nlohmann::json& v) {
  if (v.is_string()) return toml::table{{"v", v.get<std::string>()}};
  if (v.is_boolean()) return toml::table{{"v", v.get<bool>()}};
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
    return std::nullopt;
  if (v.is_number_integer()) return toml::table{{"v", v.get<std::int64_t>()}};
  if (v.is_number_float()) return toml::table{{"v", v.get<double>()}};
  return std::nullopt;
}

}  // namespace

std::string data_to_json(const Config& config) {
  Config c = config;
  nlohmann::json j = nlohmann::json::object();
  for (const auto& s : specs()) {
    const std::string key = data_json_key(s.name);
    if (key.empty()) continue;
    std::visit(
        [&](auto* p) {
          if constexpr (std::is_same_v<std::remove_pointer_t<decltype(p)>, std::vector<double>>) return;
          else j[key] = *p;
        },
        s.ref(c));
  }
  return j.dump();
}

Config config_from_data_json(const std::string& json, const std::string& source) {
  Config c;
  const auto j = nlohmann::json::parse(json, nullptr, false);
  QKV_CHECK(!j.is_discarded() && j.is_object(), "{}: the qkv.data metadata is not a JSON object", source);
  const std::string at = source + ": qkv.data";
  for (const auto& s : specs()) {
    const std::string key = data_json_key(s.name);
    if (key.empty() || !j.contains(key)) continue;
    const auto node = as_toml(j[key]);
    QKV_CHECK(node.has_value(), "{}: {}: unexpected value {}", at, s.name, j[key].dump());
    assign(s, c, *node->get("v"), at);
  }
  check_ranges(c, at);  // the config's ranges and rules: the file cannot ask for what no config could
  check_validation_size(c.data, at);
  return c;
}

AnyOptimizerOptions optimizer_options(const Config& c) { return c.optim; }

ScheduleOptions schedule_options(const Config& c) {
  const auto& s = c.schedule;
  return {.kind = s.kind, .warmup_steps = s.warmup_steps, .total_steps = c.train.steps, .min_lr = s.min_lr,
          .step_size = s.step_size, .gamma = s.gamma};
}

void check_resume_overrides(const Config& was, const Config& now, const std::string& where) {
  // The checkpoints hold the run's model: an override that changes it cannot resume from them. Dropout and
  // recompute change how it trains, not its weights.
  for (const ModelField& f : model_fields()) {
    const std::string name = f.name;
    if (!f.in_config || name == "dropout" || name == "recompute") continue;
    const bool same = std::visit([&](auto member) { return was.model.*member == now.model.*member; }, f.member);
    QKV_CHECK(same, "resume: model.{} = {} changes the run's model ({} has {}): a resumed run goes on with the weights "
              "its checkpoints hold; start a new run to change the model", name,
              std::visit([&](auto member) { return fmt::format("{}", now.model.*member); }, f.member), where,
              std::visit([&](auto member) { return fmt::format("{}", was.model.*member); }, f.member));
  }
  for (const auto& [name, value] : now.model.options) {
    const auto it = was.model.options.find(name);
    QKV_CHECK(it != was.model.options.end() && it->second == value,
              "resume: model.{} changes the run's model ({} has another value): a resumed run goes on with the "
              "weights its checkpoints hold; start a new run to change the model", name, where);
  }
  QKV_CHECK(was.model.positions == now.model.positions, "resume: model.positions = {} changes the run's model ({} has "
            "{}): start a new run to change the model", now.model.positions, where, was.model.positions);
}

}  // namespace qkv
