#pragma once
// What a training run will hold in memory, estimated before anything is allocated, and the check that it fits.
#include <qkv/train/run/config.h>

#include <cstdint>

namespace qkv {

/// What a training run of a config will hold in memory, estimated up front (float32; Adam's state counted).
struct MemoryEstimate {
  double parameters = 0, parameter_bytes = 0, activation_bytes = 0, data_bytes = 0;
  double total() const { return parameter_bytes + activation_bytes + data_bytes; }
};
/// The estimate for `config` with a vocabulary of `vocab_size` (the model kind says its parameters and
/// activations: ModelKind).
MemoryEstimate estimate_memory(const Config& config, std::int64_t vocab_size);
/// Refuses (qkv::Error) a run whose estimate exceeds the machine's memory, naming the keys that drive each part.
void check_memory(const Config& config, std::int64_t vocab_size);

}  // namespace qkv
