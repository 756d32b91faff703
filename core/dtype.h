#pragma once
// Element types. float32 is the default; float64 exists for gradient checks; int64 holds token ids and class
// targets (like torch.long) and takes part in no arithmetic.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace qkv {

enum class DType : std::uint8_t { Float32, Float64, Int64 };

inline constexpr DType kFloat32 = DType::Float32;
inline constexpr DType kFloat64 = DType::Float64;
inline constexpr DType kInt64 = DType::Int64;

/// "float32", "float64" or "int64".
constexpr std::string_view dtype_name(DType d) {
  switch (d) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int64: return "int64";
  }
  return "?";
}

/// Bytes per element.
constexpr std::size_t itemsize(DType d) { return d == DType::Float32 ? 4 : 8; }

/// True for float32 and float64.
constexpr bool is_floating(DType d) { return d != DType::Int64; }

/// The DType of a C++ element type.
template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::Float32; }
template <>
constexpr DType dtype_of<double>() { return DType::Float64; }
template <>
constexpr DType dtype_of<std::int64_t>() { return DType::Int64; }

}  // namespace qkv
