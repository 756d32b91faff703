#pragma once
// How many threads qkv's ops use. Results do not depend on it: every op splits its work so that each output
// element is computed the same way whichever thread computes it, and reductions run in a fixed order, so a run
// is bit-identical for any thread count on the same machine kind (see README, "Reproducibility").

namespace qkv {

/// Sets the number of threads ops may use (>= 1; OpenMP's team size, process-wide).
void set_num_threads(int threads);
/// The number of threads ops may use.
int num_threads();

/// The kinds of work whose break-even size for threads was measured (the units each is counted in).
enum class Work {
  Elementwise,  ///< elements of a per-element loop (add, GELU, LayerNorm, Adam's update): 32768
  Rows,         ///< elements of a row-wise op with a reduction per row (softmax, cross-entropy): 8192
  Gemm,         ///< multiply-adds of a matrix product (~15 us here): 2^20
  Attention,    ///< multiply-adds of attention's score and value products: 2^18
};
/// The one rule for when an op splits its work across threads: when `units` of `kind` reach the size at which
/// a parallel region (a few microseconds) paid for itself, measured on a 2-core machine. Below it, the op
/// stays on the calling thread and never touches the OpenMP runtime. Custom ops use it too.
bool parallel_worth(Work kind, double units);

}  // namespace qkv
