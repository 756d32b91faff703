#pragma once
// The one dtype dispatch: calls a generic lambda with a value of the C++ type a tensor's dtype holds. Ops, the
// optimizers and custom ops use it to write one templated loop for float32 and float64 (and int64 where it
// makes sense). Example, a custom op's kernel:
//   dispatch("swish", x.dtype(), [&](auto tag) {
//     using T = decltype(tag);
//     const T* in = x.data<T>();
//     ...
//   });
#include <qkv/core/errors.h>
#include <qkv/core/tensor.h>

#include <cstdint>

namespace qkv {

/// Which dtypes a dispatch accepts: the floating ones (most ops), or any (copies, fills, conversions).
enum class Dtypes { Floating, Any };

/// Calls f(float{}), f(double{}) or (with Dtypes::Any) f(std::int64_t{}) for dtype d, returning what f returns;
/// throws qkv::Error naming `op` for a dtype it does not accept.
template <Dtypes accepted = Dtypes::Floating, class F>
decltype(auto) dispatch(const char* op, DType d, F&& f) {
  switch (d) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    case DType::Int64:
      if constexpr (accepted == Dtypes::Any) return f(std::int64_t{});
      break;
  }
  fail("{}: expected a float32 or float64 tensor, got {}", op, dtype_name(d));
}

}  // namespace qkv
