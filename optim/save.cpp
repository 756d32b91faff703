#include "qkv/optim/save.h"

#include <qkv/core/errors.h>

#include <charconv>
#include <string_view>

namespace qkv {
namespace {

constexpr std::string_view kScalar = "optim.";  // metadata key prefix of a scalar

std::string exact(double v) {  // the shortest text that reads back as the same double
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return {buf, r.ptr};
}

}  // namespace

void save(const Optimizer& optimizer, const std::string& path, const LRSchedule* schedule) {
  OptimizerState state = optimizer.state_dict();
  if (schedule != nullptr) schedule->save(state);
  std::map<std::string, std::string> metadata = {{"qkv.kind", "optimizer"}, {"qkv.optimizer", optimizer.who()}};
  for (const auto& [name, v] : state.scalars) metadata[std::string(kScalar) + name] = exact(v);
  std::vector<std::pair<std::string, Tensor>> tensors(state.tensors.begin(), state.tensors.end());
  write_safetensors(path, tensors, metadata);
}

void load(Optimizer& optimizer, const std::string& path, LRSchedule* schedule) {
  const SafetensorsFile file = read_safetensors(path);
  const auto kind = file.metadata.find("qkv.kind");
  QKV_CHECK(kind != file.metadata.end() && kind->second == "optimizer",
            "load: {} is not an optimizer state (its metadata has no qkv.kind = \"optimizer\"): it may be a model's "
            "weights", path);
  const auto who = file.metadata.find("qkv.optimizer");
  QKV_CHECK(who != file.metadata.end() && who->second == optimizer.who(),
            "load: {} holds the state of {}, not of {}", path,
            who == file.metadata.end() ? std::string("an unnamed optimizer") : who->second, optimizer.who());
  OptimizerState state;
  for (const auto& [key, text] : file.metadata) {
    if (!key.starts_with(kScalar)) continue;
    double v = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
    QKV_CHECK(r.ec == std::errc() && r.ptr == text.data() + text.size(),
              "load: {}: metadata '{}' = '{}' is not a number", path, key, text);
    state.scalars[key.substr(kScalar.size())] = v;
  }
  for (const auto& [name, t] : file.tensors) state.tensors.emplace(name, t);
  QKV_CHECK(schedule == nullptr || state.scalars.count("schedule.step"),
            "load: {} holds no schedule state (it was saved without one)", path);
  try {
    optimizer.load_state_dict(state);
    if (schedule != nullptr) schedule->load(state);
  } catch (const Error& e) {
    fail("load: {}: {}", path, e.what());
  }
}

}  // namespace qkv
