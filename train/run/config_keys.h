#pragma once
// Private to train/run: the config key table. One entry per key (its place in Config, meaning, range or
// choices) feeds parsing, overrides, range checks, to_toml, `qkv info --keys` and the docs' reference.
#include <qkv/train/run/config.h>

#include <functional>
#include <limits>
#include <string>
#include <variant>
#include <vector>

namespace qkv::config_keys {

using Ref = std::variant<std::string*, std::int64_t*, std::uint64_t*, double*, bool*, std::vector<double>*>;

struct KeySpec {
  std::string name;
  std::function<Ref(Config&)> ref;
  const char* meaning;
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  /// The values a string key takes, asked at each use (a model kind registered later is a valid model.kind).
  std::vector<std::string> (*choices)() = nullptr;
  /// A model kind's own option (ModelKind::options): a key only when model.kind declares it.
  bool kind_option = false;
};
/// True when `spec` is a model kind's option that `kind` does not declare (configs refuse it; to_toml skips it).
bool foreign_option(const KeySpec& spec, const std::string& kind);

inline constexpr double kInf = std::numeric_limits<double>::infinity();

/// Every key, in the order the reference lists them.
const std::vector<KeySpec>& specs();
/// The key `name`, or null.
const KeySpec* find_spec(const std::string& name);
/// " (did you mean X?)" for the nearest key (or section, when `sections`), or "".
std::string suggest(const std::string& name, bool sections);
/// A value as TOML writes it.
std::string format_value(const Ref& r);
/// A value's type as the reference names it.
std::string type_of(const Ref& r);

}  // namespace qkv::config_keys
