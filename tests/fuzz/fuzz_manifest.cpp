// libFuzzer target for a shard folder's manifest.json: any bytes must give a checked TokenManifest or throw
// qkv::Error; what it accepts names shard files inside the folder only, and writes back to what it read.
#include <qkv/core/errors.h>
#include <qkv/datasets/shards.h>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto m = qkv::parse_manifest(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    for (const auto& s : m.shards)
      if (s.file.empty() || s.file.find('/') != std::string::npos || s.file == ".." || s.tokens < 0) __builtin_trap();
    if (qkv::parse_manifest(m.json(), "again").json() != m.json()) __builtin_trap();
  } catch (const qkv::Error&) {
  }
  return 0;
}
