#pragma once
// How many threads qkv's ops use, and the one loop that splits an op's work across them. Results do not depend
// on the thread count: every op splits its work so that each output element is computed the same way whichever
// thread computes it, and reductions run in a fixed order, so a run is bit-identical for any thread count on the
// same machine kind (see README, "Reproducibility").

#include <cstdint>

namespace qkv {

/// Sets the number of threads ops may use (>= 1, process-wide; the default is the cores this process may run on).
void set_num_threads(int threads);
/// The number of threads ops may use.
int num_threads();
/// The cores this process may run on (its CPU affinity, so taskset and cpusets count): the default thread count.
int available_cores();

/// The kinds of work whose break-even size for threads was measured (the units each is counted in).
enum class Work {
  Elementwise,  ///< elements of a per-element loop (add, GELU, LayerNorm, Adam's update): 32768
  Rows,         ///< elements of a row-wise op with a reduction per row (softmax, cross-entropy): 8192
  Gemm,         ///< multiply-adds of a matrix product (~15 us here): 2^20
  Attention,    ///< multiply-adds of attention's score and value products: 2^18
};
/// The one rule for when an op splits its work across threads: when `units` of `kind` reach the size at which
/// a parallel region (a few microseconds) paid for itself, measured on a 2-core machine. Below it, the op
/// stays on the calling thread and never wakes a worker. Custom ops use it too.
bool parallel_worth(Work kind, double units);

namespace detail {
/// Runs call(ctx, i) for every chunk i in [0, chunks) on the calling thread and the pool's workers: each thread
/// claims the next chunk when it is free, so a worker that the OS has descheduled (a busy machine) leaves its
/// share to the others instead of holding them up. Every chunk runs; then the error of the lowest failing chunk
/// is rethrown.
void run_chunks(std::int64_t chunks, void (*call)(void*, std::int64_t), void* ctx);
/// True on a thread that is running a chunk (nested loops then run serially).
bool in_parallel();
}  // namespace detail

/// Runs f(begin, end) over [0, n): on the calling thread when `parallel` is false (or there is one thread, or
/// this is already inside a parallel loop), else as a few contiguous chunks per thread. f must compute each index
/// the same way whatever range it is given.
template <class F>
void parallel_for(std::int64_t n, bool parallel, F&& f) {
  const int threads = num_threads();
  if (!parallel || n <= 1 || threads <= 1 || detail::in_parallel()) {
    f(std::int64_t{0}, n);
    return;
  }
  // Several chunks per thread: a late thread delays the loop by one chunk, not by half of it.
  constexpr std::int64_t kChunksPerThread = 4;
  struct Range {
    F* f;
    std::int64_t n, chunks;
  } range{&f, n, n < kChunksPerThread * threads ? n : kChunksPerThread * threads};
  detail::run_chunks(range.chunks, [](void* ctx, std::int64_t i) {
    const auto& r = *static_cast<Range*>(ctx);
    (*r.f)(i * r.n / r.chunks, (i + 1) * r.n / r.chunks);
  }, &range);
}

}  // namespace qkv
