// The GEMM behind matmul and linear: C (n, m) = or += op(A) op(B) on Eigen or OpenBLAS (see core/gemm.h), split
// into row blocks across threads. Which engine a product takes: core/gemm_choice.cpp.
#include "qkv/core/gemm.h"

#include "qkv/core/ops/kernel.h"
#include "qkv/core/precision.h"

#include <Eigen/Core>
#if QKV_HAVE_BLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);  // OpenBLAS's own; qkv splits products across threads itself
extern "C" int blas_thread_shutdown_() __attribute__((weak));  // the pthread build's; absent in others
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <mutex>
#include <new>
#include <thread>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

namespace qkv {
namespace {

template <class T>
using MatR = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// C = or += op(A) op(B) on Eigen, for maps of the storage (or blocks of them): no copies, no transposes
// materialised.
template <class MA, class MB, class MC>
void eigen_product(const MA& A, bool ta, const MB& B, bool tb, MC&& C, bool accumulate) {
  const auto run = [&](const auto& lhs, const auto& rhs) {
    if (accumulate) C.noalias() += lhs * rhs;
    else C.noalias() = lhs * rhs;
  };
  if (!ta && !tb) run(A, B);
  else if (ta && !tb) run(A.transpose(), B);
  else if (!ta && tb) run(A, B.transpose());
  else run(A.transpose(), B.transpose());
}

// Rows [r0, r0 + len) of C = or += op(A) op(B); A is stored (n, k) or, when ta, (k, n); B is stored (k, m) or,
// when tb, (m, k). Contiguous maps, not gemm_strided's: with the stride known at compile time Eigen's small
// products ran faster (tiny config with QKV_GEMM=eigen, 1 thread: 0.977x when both used strided maps).
template <class T>
void eigen_rows(const T* a, bool ta, const T* b, bool tb, T* c, std::int64_t n, std::int64_t k, std::int64_t m,
                bool accumulate, std::int64_t r0, std::int64_t len) {
  using Map = Eigen::Map<const MatR<T>>;
  const Map A(a, ta ? k : n, ta ? n : k), B(b, tb ? m : k, tb ? k : m);
  Eigen::Map<MatR<T>> C(c + r0 * m, len, m);
  if (ta) eigen_product(A.middleCols(r0, len), true, B, tb, C, accumulate);
  else eigen_product(A.middleRows(r0, len), false, B, tb, C, accumulate);
}

#if QKV_HAVE_BLAS
// qkv calls OpenBLAS on one thread per row block, so OpenBLAS's own threads are never used. Its pthread build
// starts them when it loads, and they spin for about 0.1 s before sleeping: on 2 cores that took the second
// core from qkv's pool for a short run's whole length (tiny config, 400 steps: 3220 steps/s against 3630 with
// them stopped). So they are stopped when qkv first calls OpenBLAS (not at load: a host program that links qkv
// but never multiplies keeps its OpenBLAS as it set it); OpenBLAS starts them again if anything asks for threads.
bool stop_openblas_threads() {
  openblas_set_num_threads(1);
  if (blas_thread_shutdown_ != nullptr) blas_thread_shutdown_();
  return true;
}

// OpenBLAS maps a 128 MB buffer for each product that runs while the buffers it has are all in use, and keeps it.
// When that mmap fails (ulimit -v, a full address space), 0.3.21's blas_memory_alloc retries forever, deaf to
// signals. So before qkv's first product on OpenBLAS at a thread count, it checks that the address space has room
// for one buffer per thread and the caller, and makes OpenBLAS map them all then, with that many products at once:
// later products reuse them and never map again. No room: std::bad_alloc, which a run reports as out of memory.
constexpr std::size_t kBlasBufferBytes = std::size_t{128} << 20;
std::atomic<int> g_blas_buffers{0};  // how many products may run at once on the buffers OpenBLAS holds

void take_blas_buffers(int count) {
  const std::size_t room = std::size_t(count) * kBlasBufferBytes + (std::size_t{64} << 20);
  void* probe = ::mmap(nullptr, room, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (probe == MAP_FAILED) throw std::bad_alloc();
  ::munmap(probe, room);
  std::atomic<int> arrived{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < count; ++t)
    threads.emplace_back([&] {
      std::vector<float> buf(3 * 256 * 256, 1.f);  // large enough for the buffered kernels, not the small ones
      arrived.fetch_add(1);
      while (arrived.load() < count) std::this_thread::yield();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 256, 256, 256, 1.f, buf.data(), 256,
                  buf.data() + 65536, 256, 0.f, buf.data() + 131072, 256);
    });
  for (auto& t : threads) t.join();
}

void ensure_blas_buffers() {
  const int want = num_threads() + 1;  // the pool's workers and the caller
  if (g_blas_buffers.load(std::memory_order_acquire) >= want) return;
  static std::mutex mutex;
  const std::lock_guard<std::mutex> lock(mutex);
  if (g_blas_buffers.load() >= want) return;
  [[maybe_unused]] static const bool single = stop_openblas_threads();
  take_blas_buffers(want);
  g_blas_buffers.store(want, std::memory_order_release);
}

// C (n, m) = or += op(A) op(B) through CBLAS, rows lda/ldb/ldc elements apart.
template <class T>
void blas_gemm(const T* a, std::int64_t lda, bool ta, const T* b, std::int64_t ldb, bool tb, T* c, std::int64_t ldc,
               std::int64_t n, std::int64_t k, std::int64_t m, bool accumulate) {
  ensure_blas_buffers();
  const auto ta_ = ta ? CblasTrans : CblasNoTrans, tb_ = tb ? CblasTrans : CblasNoTrans;
  const T beta = accumulate ? T(1) : T(0);  // beta 0: C's old contents are never read (they may be NaN)
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta_, tb_, int(n), int(m), int(k), 1.f, a, int(lda), b, int(ldb), beta, c, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, ta_, tb_, int(n), int(m), int(k), 1.0, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

template <class T>
void blas_rows(const T* a, bool ta, const T* b, bool tb, T* c, std::int64_t n, std::int64_t k, std::int64_t m,
               bool accumulate, std::int64_t r0, std::int64_t len) {
  blas_gemm(ta ? a + r0 : a + r0 * k, ta ? n : k, ta, b, tb ? k : m, tb, c + r0 * m, m, len, k, m, accumulate);
}
#endif

template <class T>
void engine_rows(GemmEngine e, const T* a, bool ta, const T* b, bool tb, T* c, std::int64_t n, std::int64_t k,
                 std::int64_t m, bool accumulate, std::int64_t r0, std::int64_t len) {
#if QKV_HAVE_BLAS
  if (e == GemmEngine::Blas) return blas_rows(a, ta, b, tb, c, n, k, m, accumulate, r0, len);
#endif
  (void)e;
  eigen_rows(a, ta, b, tb, c, n, k, m, accumulate, r0, len);
}

}  // namespace


namespace kernel {

// Seconds for the three layouts of a product (forward, and backward's two) on one engine, one thread.
double time_gemm(GemmEngine e, std::int64_t n, std::int64_t k, std::int64_t m, std::vector<float>& buf) {
  float *a = buf.data(), *b = a + n * k, *c = b + k * m, *d = c + n * m;
  const auto once = [&] {
    engine_rows(e, a, false, b, false, c, n, k, m, false, 0, n);  // C = A B
    engine_rows(e, c, false, b, true, d, n, m, k, false, 0, n);   // dA = dC B^T
    engine_rows(e, a, true, c, false, b, k, n, m, false, 0, k);   // dB = A^T dC
  };
  once();
  const auto start = std::chrono::steady_clock::now();
  int reps = 0;
  double elapsed = 0;
  do {
    once();
    ++reps;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (elapsed < 1e-3);
  return elapsed / reps;
}


// Large products are split into blocks of output rows, claimed by whichever thread is free; small ones run on the
// calling thread. The result must not depend on the thread count (tests/core/test_parallel.cpp), so every row must
// take the same engine code path in any split:
//  - the engine is chosen from the whole product's shape, never a block's;
//  - blocks start at multiples of 16 rows for Eigen and of 48 for OpenBLAS. A row's sums in Eigen's kernels do
//    not depend on where its row panel (12, 24 or 48 rows, SSE to AVX-512) starts, which the test checks at 1 to
//    8 threads on odd shapes; OpenBLAS's Haswell sgemm (which Zen CPUs get) groups rows by 12 and 24 and sums a
//    row differently at a 16-row offset, so its blocks keep every grouping's alignment (48 = lcm of 16 and 24);
//  - a block is never too small: Eigen sends a 1-row product to GEMV and a tiny one to its coefficient-wise
//    product (so at least 32 rows), OpenBLAS products below 100^3 multiply-adds to its small-matrix kernel (on
//    AVX-512 cores; so at least 2^20), each summing in another order; leftover rows too few for a block of
//    their own join the last one;
//  - a few blocks per thread, so that a late thread costs one block, but not thinner than 128 rows where that
//    allows, since each block packs B again.
struct RowBlocks {
  std::int64_t block = 0, count = 1;
};

RowBlocks row_blocks(GemmEngine e, std::int64_t n, std::int64_t k, std::int64_t m, int threads) {
  constexpr std::int64_t kBlocksPerThread = 3;
  const std::int64_t step = e == GemmEngine::Blas ? 48 : 16;
  std::int64_t least = 32;
  if (e == GemmEngine::Blas) least = static_cast<std::int64_t>(std::ceil(double(1 << 20) / std::max(1.0, double(k) * double(m))));
  const std::int64_t even = std::max(std::min<std::int64_t>(128, n / threads), n / (kBlocksPerThread * threads));
  RowBlocks r;
  r.block = (std::max(least, even) + step - 1) / step * step;
  r.count = std::max<std::int64_t>(1, n / r.block + (n % r.block >= least ? 1 : 0));
  return r;
}

namespace {
// The engine for a product: CBLAS takes int sizes, so an empty or a gigantic product stays on Eigen.
GemmEngine engine_for(std::int64_t n, std::int64_t k, std::int64_t m, std::int64_t widest_row) {
  constexpr std::int64_t kIntMax = std::numeric_limits<int>::max();
  const bool blas_sized = n > 0 && k > 0 && m > 0 && std::max({n, k, m, widest_row}) <= kIntMax;
  return blas_sized ? gemm_engine(n, k, m) : GemmEngine::Eigen;
}
}  // namespace

void gemm_rows(GemmEngine e, std::int64_t n, std::int64_t k, std::int64_t m,
               const std::function<void(std::int64_t r0, std::int64_t len)>& rows) {
  const int threads = num_threads();
  const bool split = threads > 1 && parallel_worth(Work::Gemm, double(n) * double(k) * double(m)) && n >= 2 * 32 &&
                     !detail::in_parallel();
  const RowBlocks rb = split ? row_blocks(e, n, k, m, threads) : RowBlocks{n, 1};
  if (rb.count < 2) {
    rows(0, n);
    return;
  }
  parallel_for(rb.count, true, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) rows(i * rb.block, i + 1 < rb.count ? rb.block : n - i * rb.block);
  });
}

template <class T>
void gemm(const T* a, bool ta, const T* b, bool tb, T* c, std::int64_t n, std::int64_t k, std::int64_t m,
          bool accumulate) {
  if constexpr (std::is_same_v<T, float>)
    if (matmul_precision() == Precision::BFloat16) {
      gemm_bf16(a, ta, b, tb, c, n, k, m, accumulate);
      return;
    }
  const GemmEngine e = engine_for(n, k, m, 0);
  gemm_rows(e, n, k, m, [&](std::int64_t r0, std::int64_t len) {
    engine_rows(e, a, ta, b, tb, c, n, k, m, accumulate, r0, len);
  });
}

template <class T>
void gemm_strided(const T* a, std::int64_t lda, bool ta, const T* b, std::int64_t ldb, bool tb, T* c,
                  std::int64_t ldc, std::int64_t n, std::int64_t k, std::int64_t m, bool accumulate) {
  if constexpr (std::is_same_v<T, float>)
    if (matmul_precision() == Precision::BFloat16) {
      gemm_strided_bf16(a, lda, ta, b, ldb, tb, c, ldc, n, k, m, accumulate);
      return;
    }
#if QKV_HAVE_BLAS
  if (engine_for(n, k, m, std::max({lda, ldb, ldc})) == GemmEngine::Blas) {
    blas_gemm(a, lda, ta, b, ldb, tb, c, ldc, n, k, m, accumulate);
    return;
  }
#endif
  using Map = Eigen::Map<const MatR<T>, 0, Eigen::OuterStride<>>;
  const Map A(a, ta ? k : n, ta ? n : k, Eigen::OuterStride<>(lda)), B(b, tb ? m : k, tb ? k : m, Eigen::OuterStride<>(ldb));
  Eigen::Map<MatR<T>, 0, Eigen::OuterStride<>> C(c, n, m, Eigen::OuterStride<>(ldc));
  eigen_product(A, ta, B, tb, C, accumulate);
}

template void gemm_strided<float>(const float*, std::int64_t, bool, const float*, std::int64_t, bool, float*,
                                  std::int64_t, std::int64_t, std::int64_t, std::int64_t, bool);
template void gemm_strided<double>(const double*, std::int64_t, bool, const double*, std::int64_t, bool, double*,
                                   std::int64_t, std::int64_t, std::int64_t, std::int64_t, bool);
template void gemm<float>(const float*, bool, const float*, bool, float*, std::int64_t, std::int64_t, std::int64_t, bool);
template void gemm<double>(const double*, bool, const double*, bool, double*, std::int64_t, std::int64_t, std::int64_t,
                           bool);

}  // namespace kernel
}  // namespace qkv
