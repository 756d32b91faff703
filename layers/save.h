#pragma once
// Module weights to and from safetensors files (core/safetensors.h), by state-dict name: what an experiment outside
// the CLI needs to checkpoint a model. The optimizer's half is optim/save.h.
#include <qkv/core/safetensors.h>
#include <qkv/layers/module.h>

#include <map>
#include <string>

namespace qkv {

/// Saves a module's state_dict() (parameters and buffers, by state-dict name) with `metadata`.
void save(const Module& module, const std::string& path, const std::map<std::string, std::string>& metadata = {},
          StorageType storage = StorageType::F32);
/// Loads parameters and buffers by name into `module` (converted to each one's dtype). A strict load reports every
/// missing key, unexpected key, shape mismatch and integer/float mismatch, by name, in one error; a non-strict
/// load skips them.
void load(Module& module, const std::string& path, bool strict = true);
/// The same from an already-read file.
void load(Module& module, const SafetensorsFile& file, const std::string& source, bool strict = true);
/// The same, taking the file's tensors as the parameters' storage where the dtypes match (no copy); `file` is left
/// empty.
void load(Module& module, SafetensorsFile&& file, const std::string& source, bool strict = true);

}  // namespace qkv
