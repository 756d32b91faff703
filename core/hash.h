#pragma once
// One hash for every fingerprint qkv takes (ranks agreeing, machine kinds, data files): 64-bit FNV-1a.
#include <cstddef>
#include <cstdint>

namespace qkv {

/// A 64-bit FNV-1a hash of bytes, continuing from `h` (its offset basis by default).
inline std::uint64_t fnv1a(const void* data, std::size_t n, std::uint64_t h = 14695981039346656037ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace qkv
