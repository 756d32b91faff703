#include "qkv/layers/save.h"

#include <qkv/core/errors.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <set>

namespace qkv {

namespace {
// Every module below `m` (itself first) with its dotted prefix ("" for the root), depth first.
template <class M, class F>
void each_module(M& m, const std::string& prefix, F&& f) {
  f(m, prefix);
  for (const auto& [name, child] : m.named_children()) each_module(*child, prefix.empty() ? name : prefix + "." + name, f);
}
std::string extra_state_key(const std::string& prefix) { return prefix.empty() ? "qkv.extra_state" : "qkv.extra_state." + prefix; }
}  // namespace

void save(const Module& module, const std::string& path, const std::map<std::string, std::string>& metadata,
          StorageType storage) {
  auto meta = metadata;
  each_module(module, "", [&meta](const Module& m, const std::string& prefix) {
    if (std::string extra = m.extra_state(); !extra.empty()) meta[extra_state_key(prefix)] = std::move(extra);
  });
  write_safetensors(path, module.state_dict(), meta, storage);
}

namespace {
void check_load(Module& module, const SafetensorsFile& file, const std::string& source, bool strict) {
  std::vector<std::string> missing, unexpected, mismatched, integer, floating;
  const auto params = module.state_dict();
  std::set<std::string> wanted;
  for (const auto& [name, p] : params) {
    wanted.insert(name);
    const Tensor t = file.find(name);
    if (!t.defined()) {
      missing.push_back(name);
    } else if (!(t.shape() == p.shape())) {
      mismatched.push_back(fmt::format("{} (file {}, model {})", name, t.shape().str(), p.shape().str()));
    } else if (is_floating(p.dtype()) && !is_floating(t.dtype())) {  // integers are not weights
      integer.push_back(name);
    } else if (!is_floating(p.dtype()) && is_floating(t.dtype())) {  // nor counts fractions
      floating.push_back(name);
    }
  }
  for (const auto& [name, t] : file.tensors)
    if (!wanted.count(name)) unexpected.push_back(name);
  if (strict && (!missing.empty() || !unexpected.empty() || !mismatched.empty() || !integer.empty() ||
                 !floating.empty())) {
    std::string msg = fmt::format("load: {} does not match {}:", source, module.name());
    if (!missing.empty()) msg += fmt::format("\n  missing keys: {}", fmt::join(missing, ", "));
    if (!unexpected.empty()) msg += fmt::format("\n  unexpected keys: {}", fmt::join(unexpected, ", "));
    if (!mismatched.empty()) msg += fmt::format("\n  shape mismatches: {}", fmt::join(mismatched, ", "));
    if (!integer.empty()) msg += fmt::format("\n  int64 tensors where float weights belong: {}", fmt::join(integer, ", "));
    if (!floating.empty()) msg += fmt::format("\n  float tensors where int64 buffers belong: {}", fmt::join(floating, ", "));
    throw Error(msg);
  }
}

// Extra state where the file has it (a file written elsewhere has none: the module keeps its own).
void load_extra_state(Module& module, const SafetensorsFile& file, const std::string& source) {
  each_module(module, "", [&](Module& m, const std::string& prefix) {
    if (const auto it = file.metadata.find(extra_state_key(prefix)); it != file.metadata.end()) {
      try {
        m.set_extra_state(it->second);
      } catch (const Error& e) {
        throw Error(fmt::format("load: {}: metadata '{}': {}", source, it->first, e.what()));
      }
    }
  });
}
}  // namespace

void load(Module& module, const SafetensorsFile& file, const std::string& source, bool strict) {
  check_load(module, file, source, strict);
  for (const auto& [name, p] : module.state_dict()) {
    const Tensor t = file.find(name);
    if (t.defined() && t.shape() == p.shape() && is_floating(t.dtype()) == is_floating(p.dtype())) p.copy_(t);
  }
  load_extra_state(module, file, source);
}

void load(Module& module, SafetensorsFile&& file, const std::string& source, bool strict) {
  check_load(module, file, source, strict);
  for (const auto& [name, p] : module.state_dict()) {
    Tensor t = file.find(name);
    if (!t.defined() || !(t.shape() == p.shape()) || is_floating(t.dtype()) != is_floating(p.dtype())) continue;
    if (t.dtype() != p.dtype()) {
      p.copy_(t);
      continue;
    }
    // The file's tensor becomes the parameter's storage (the handles the layers hold stay valid, as in
    // Module::to): no second copy, and the parameter's own memory, never written if it was built under a
    // NoInitGuard, is given back.
    p.impl()->storage = t.impl()->storage;
  }
  load_extra_state(module, file, source);
  file.tensors.clear();
}

void load(Module& module, const std::string& path, bool strict) { load(module, read_safetensors(path), path, strict); }

}  // namespace qkv
