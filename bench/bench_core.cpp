// Core benchmarks: per-op autograd overhead, and matmul forward + backward on each GEMM engine against raw Eigen
// and raw OpenBLAS on the same sizes (the ceiling: qkv's matmul is a GEMM on its storage plus the graph
// bookkeeping).
#include <qkv/core/gemm.h>
#include <qkv/core/ops.h>
#include <qkv/core/parallel.h>
#include <qkv/core/precision.h>

#include <Eigen/Core>
#include <benchmark/benchmark.h>
#if QKV_HAVE_BLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);
#endif

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

using namespace qkv;

static benchmark::Counter gflops(std::int64_t n) {
  return benchmark::Counter(6.0 * double(n) * double(n) * double(n), benchmark::Counter::kIsIterationInvariantRate,
                            benchmark::Counter::kIs1000);
}

// Forward + backward of add on 4 elements: the fixed cost every op pays (allocation, node, sweep).
static void BM_OpOverhead_Add4(benchmark::State& state) {
  const Tensor a = Tensor::ones({4}).requires_grad_(), b = Tensor::ones({4}).requires_grad_();
  const Tensor g = Tensor::ones({4});
  for (auto _ : state) {
    Tensor c = add(a, b);
    c.backward(g);
    benchmark::DoNotOptimize(a.grad().raw_data());
  }
}
BENCHMARK(BM_OpOverhead_Add4);

// Forward only, no graph.
static void BM_OpOverhead_Add4_NoGrad(benchmark::State& state) {
  const Tensor a = Tensor::ones({4}), b = Tensor::ones({4});
  for (auto _ : state) benchmark::DoNotOptimize(add(a, b).raw_data());
}
BENCHMARK(BM_OpOverhead_Add4_NoGrad);

// The timed loop: a @ b forward, then backward from ones (3 GEMMs).
static void matmul_fwd_bwd(benchmark::State& state, const Tensor& a, const Tensor& b) {
  const Tensor g = Tensor::ones({a.size(0), b.size(1)});
  for (auto _ : state) {
    a.zero_grad();
    b.zero_grad();
    Tensor c = matmul(a, b);
    c.backward(g);
    benchmark::DoNotOptimize(a.grad().raw_data());
  }
}

// matmul (n x n) @ (n x n) forward + backward: 3 GEMMs = 6 n^3 flops. Second argument: the engine qkv uses
// (0 auto, 1 eigen, 2 blas; core/gemm.h).
static void BM_Matmul_FwdBwd(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  const GemmChoice before = gemm_choice();
  set_gemm_choice(static_cast<GemmChoice>(state.range(1)));
  Generator gen(0);
  const Tensor a = Tensor::randn({n, n}, gen).requires_grad_(), b = Tensor::randn({n, n}, gen).requires_grad_();
  matmul_fwd_bwd(state, a, b);
  set_gemm_choice(before);
  state.counters["GFLOP/s"] = gflops(n);
}

// matmul forward + backward at bf16 (core/precision.h) on a model-shaped product: (rows x d) @ (d x 4d), as an
// MLP's first layer. Arguments: rows, d, engine (0 float32 for reference, 1 bf16 emulated, 2 bf16 on oneDNN).
static void BM_Matmul_Bf16(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1), engine = state.range(2);
  if (engine == 2 && !bf16_native()) return state.SkipWithError("no bf16 instructions or no oneDNN here");
  if (engine > 0) set_bf16_engine(engine == 1 ? Bf16Engine::Emulated : Bf16Engine::OneDnn);
  AutocastGuard precision(engine > 0 ? Precision::BFloat16 : Precision::Float32);
  Generator gen(0);
  const Tensor a = Tensor::randn({n, d}, gen).requires_grad_(), b = Tensor::randn({d, 4 * d}, gen).requires_grad_();
  matmul_fwd_bwd(state, a, b);
  reset_bf16_engine();
  state.counters["GFLOP/s"] = benchmark::Counter(6.0 * double(n) * double(d) * double(4 * d),
                                                 benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Matmul_Bf16)->ArgsProduct({{2048}, {256, 512, 768}, {0, 1, 2}})->UseRealTime();

// The same three GEMMs in raw Eigen (with its own OpenMP threads, as many as qkv uses), into preallocated outputs.
static void BM_Eigen_3Gemm(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  Eigen::setNbThreads(num_threads());
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const M a = M::Random(n, n), b = M::Random(n, n), g = M::Ones(n, n);
  M c(n, n), da(n, n), db(n, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    da.noalias() = g * b.transpose();
    db.noalias() = a.transpose() * g;
    benchmark::DoNotOptimize(c.data());
    benchmark::DoNotOptimize(da.data());
    benchmark::DoNotOptimize(db.data());
  }
  state.counters["GFLOP/s"] = gflops(n);
}

#if QKV_HAVE_BLAS
// The same three GEMMs in raw OpenBLAS (CBLAS, its own threads, as many as qkv uses).
static void BM_Blas_3Gemm(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  openblas_set_num_threads(num_threads());
  std::vector<float> a(std::size_t(n) * n, 0.5f), b(a.size(), 0.25f), g(a.size(), 1.f), c(a.size()), da(a.size()),
      db(a.size());
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.f, g.data(), n, b.data(), n, 0.f, da.data(), n);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, g.data(), n, 0.f, db.data(), n);
    benchmark::DoNotOptimize(db.data());
  }
  openblas_set_num_threads(1);  // as qkv runs it: one OpenBLAS thread per qkv thread
  state.counters["GFLOP/s"] = gflops(n);
}
#endif

// Interleaved at random and repeated, so each row's median saw the same machine: see bench/gemm.sh.
BENCHMARK(BM_Matmul_FwdBwd)->ArgsProduct({{64, 256, 1024}, {0, 1, 2}})->UseRealTime();
BENCHMARK(BM_Eigen_3Gemm)->Arg(64)->Arg(256)->Arg(1024)->UseRealTime();
#if QKV_HAVE_BLAS
BENCHMARK(BM_Blas_3Gemm)->Arg(64)->Arg(256)->Arg(1024)->UseRealTime();
#endif

// What a thread pays to write 96 KiB (a tiny-config activation) that another core has read since (arg 1: the
// lines are shared and each write must invalidate the other copy) against data only it has touched (arg 0).
// This cost, not the pool, decides whether two threads help a small step: on this project's 2-vCPU cloud VM it
// moved between ~3 and ~11 ns per 64-byte line as the host placed the vCPUs nearer or farther apart, and the tiny
// config's 2-thread speed moved with it (1.45x one thread, or none). bench/compare.sh prints it beside its table.
static void BM_SharedLineWrite(benchmark::State& state) {
  constexpr std::size_t kFloats = 96 * 1024 / sizeof(float), kLine = 64 / sizeof(float);
  std::vector<float> buf(kFloats, 1.f);
  std::atomic<int> turn{0};  // 1: the other thread reads; 2: it has; -1: stop
  double seconds = 0;
  std::thread reader([&] {
    volatile float sink = 0;
    for (int t; (t = turn.load()) != -1;) {
      if (t != 1) continue;
      float acc = 0;
      for (std::size_t i = 0; i < kFloats; i += kLine) acc += buf[i];
      sink = acc;
      turn.store(2);
    }
    (void)sink;
  });
  for (auto _ : state) {
    if (state.range(0) == 1) {
      turn.store(1);
      while (turn.load() != 2) {
      }
    }
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < kFloats; ++i) buf[i] = buf[i] * 0.5f + 1.f;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    state.SetIterationTime(s);
    seconds += s;
    benchmark::DoNotOptimize(buf.data());
  }
  turn.store(-1);
  reader.join();
  state.counters["ns_per_line"] = 1e9 * seconds / (double(state.iterations()) * double(kFloats / kLine));
}
BENCHMARK(BM_SharedLineWrite)->Arg(0)->Arg(1)->UseManualTime();

BENCHMARK_MAIN();
