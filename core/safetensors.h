#pragma once
// safetensors: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
// {dtype, shape, data_offsets} (plus an optional "__metadata__" map of strings), then the byte buffer, contiguous
// with no gaps or overlaps. The reader checks every claim against the bytes it actually has before trusting it.
#include <qkv/core/tensor.h>

#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace qkv {

/// How floats are stored on disk. Reading converts F16/BF16 to float32.
enum class StorageType { F32, F16, BF16 };

/// Parses "f32", "f16", "bf16" (any case); throws otherwise.
StorageType parse_storage_type(const std::string& s);

struct SafetensorsFile {
  std::vector<std::pair<std::string, Tensor>> tensors;  ///< in file order (by data offset)
  std::map<std::string, std::string> metadata;

  /// The tensor with this name, or an undefined Tensor.
  Tensor find(const std::string& name) const;
};

/// Serialises to the safetensors byte layout. Float tensors are stored as `storage`; int64 tensors as I64.
std::string to_safetensors_bytes(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                 const std::map<std::string, std::string>& metadata,
                                 StorageType storage = StorageType::F32);
/// Parses bytes; `source` names them in errors. Throws qkv::Error for any malformed input.
SafetensorsFile parse_safetensors(std::span<const std::byte> bytes, const std::string& source = "<memory>");

/// Writes by write_file_atomic's rule (core/files.h): a regular file is replaced atomically.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata, StorageType storage = StorageType::F32);
/// Reads and validates a file (never allocating more than the file's own size).
SafetensorsFile read_safetensors(const std::string& path);

}  // namespace qkv
