#pragma once
// bf16 mixed precision for qkv's products, as torch.autocast("cpu", dtype=torch.bfloat16) gives PyTorch's: inside
// an AutocastGuard every float32 matrix product (matmul, linear, einsum, attention's score and value products,
// forward and backward) takes its two inputs rounded to bfloat16 and sums their products in float32. Everything
// else stays float32: the tensors themselves (weights, gradients, optimizer state: the master weights), softmax,
// LayerNorm, the loss and every reduction. The product of two bfloat16 values is exact in float32, so a bf16
// product equals the float32 product of the bf16-rounded inputs up to the order of the float32 sums.
//
// Two engines give those semantics: oneDNN's bf16 matmul where the CPU has bf16 dot-product instructions
// (AVX512-BF16, AMX), about twice float32's throughput; elsewhere, or for small products, the inputs are rounded
// into float32 copies and multiplied by the float32 engine (emulated: the same results' semantics, float32's
// speed). Either way a run is bit-identical for any thread count on the same machine kind. float64 products are
// never rounded. One difference between the engines besides the order of the sums: bf16's dot-product instructions
// read a subnormal input (below 1.2e-38) as zero, where the emulated product uses it.

#include <cstdint>
#include <string>
#include <vector>

namespace qkv {

enum class Precision : std::uint8_t { Float32, BFloat16 };

/// "fp32" or "bf16" (the config's train.precision values).
const char* precision_name(Precision p);
/// Parses "fp32" or "bf16"; throws qkv::Error naming the accepted values otherwise.
Precision parse_precision(const std::string& text);
/// The accepted names, for configs and docs.
std::vector<std::string> precision_names();

/// The precision of float32 products on this thread: bf16 inside an AutocastGuard(BFloat16), else fp32. The pool's
/// threads take their caller's, and a backward runs each op's products at the precision its forward had.
Precision matmul_precision();

/// While alive, float32 products on this thread run at `p` (torch.autocast). Nests; restores the previous one.
class AutocastGuard {
 public:
  explicit AutocastGuard(Precision p = Precision::BFloat16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  Precision prev_;
};

/// x rounded to the nearest bfloat16 (ties to even), as a float: the low 16 bits are zero. NaN stays NaN,
/// infinities stay infinite, and a finite value beyond bf16's range rounds to infinity, as torch's .bfloat16().
float round_bf16(float x);
/// round_bf16 over n values (in may equal out).
void round_bf16(const float* in, float* out, std::int64_t n);

/// The engine that runs bf16 products.
enum class Bf16Engine : std::uint8_t { OneDnn, Emulated };
/// "onednn" or "emulated".
const char* bf16_engine_name(Bf16Engine e);
/// True when qkv was built with oneDNN and this CPU has bf16 instructions (oneDNN then runs large bf16 products).
bool bf16_native();
/// Forces an engine for bf16 products (tests compare them); OneDnn throws where bf16_native() is false. The
/// default, also from QKV_BF16=auto|onednn|emulated: oneDNN where native, for products of at least 2^18
/// multiply-adds (below that its call costs more than it saves).
void set_bf16_engine(Bf16Engine e);
void reset_bf16_engine();
/// The engine a bf16 product (n, k) @ (k, m) runs on.
Bf16Engine bf16_engine(std::int64_t n, std::int64_t k, std::int64_t m);
/// One line for logs and `qkv info`: which engine runs bf16 products here and why.
std::string bf16_summary();

namespace detail {
/// Sets this thread's precision without a guard (the pool's workers take their caller's).
void set_thread_precision(Precision p);
}  // namespace detail

}  // namespace qkv
