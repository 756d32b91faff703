#pragma once
// Which GEMM engine runs qkv's matrix products (matmul, linear): Eigen, compiled into qkv, or OpenBLAS through
// CBLAS. Neither is the faster one on every CPU (on an AVX-512 EPYC Eigen led by 30%, on an AVX2 Zen 3 OpenBLAS by
// 50% at 1024), so by default each size class of product runs on the engine that measured faster on this machine.
// The measurement (~0.1 s, one thread) runs at the first product and is cached per machine kind in
// $XDG_CACHE_HOME/qkv (else ~/.cache/qkv), or in the file QKV_GEMM_CACHE names. QKV_GEMM=eigen|blas|auto forces
// it. A run is bit-identical to itself with the same engines and thread count; another engine rounds differently
// (about 1e-7 relative per product in float32), so its runs match to that tolerance, not bit for bit.

#include <cstdint>
#include <string>

namespace qkv {

enum class GemmEngine { Eigen, Blas };
/// auto: per size class, the engine measured faster here; eigen or blas: that engine for every product.
enum class GemmChoice { Auto, Eigen, Blas };

/// "eigen" or "blas".
const char* gemm_engine_name(GemmEngine engine);
/// Parses QKV_GEMM's value ("eigen", "blas", "auto"); throws qkv::Error naming the variable otherwise.
GemmChoice parse_gemm_choice(const std::string& text);
/// True when qkv was built with OpenBLAS.
bool blas_available();
/// Forces an engine, or auto (overrides QKV_GEMM); Blas throws when qkv was built without OpenBLAS.
void set_gemm_choice(GemmChoice choice);
/// The choice in effect: set_gemm_choice's, else QKV_GEMM's (read once), else auto.
GemmChoice gemm_choice();
/// The engine a product (n, k) @ (k, m) runs on.
GemmEngine gemm_engine(std::int64_t n, std::int64_t k, std::int64_t m);
/// One line for logs: the choice and, under auto, the engine of each size class and where that was measured.
std::string gemm_summary();

}  // namespace qkv
