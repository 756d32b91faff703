// Core benchmarks: per-op autograd overhead, and matmul forward + backward against raw Eigen GEMM on the same
// sizes (the ceiling: qkv's matmul is Eigen GEMM on maps of its storage plus the graph bookkeeping).
#include <qkv/core/ops.h>

#include <Eigen/Core>
#include <benchmark/benchmark.h>

using namespace qkv;

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

// matmul (n x n) @ (n x n) forward + backward: 3 GEMMs = 6 n^3 flops.
static void BM_Matmul_FwdBwd(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  Generator gen(0);
  const Tensor a = Tensor::randn({n, n}, gen).requires_grad_(), b = Tensor::randn({n, n}, gen).requires_grad_();
  const Tensor g = Tensor::ones({n, n});
  for (auto _ : state) {
    a.zero_grad();
    b.zero_grad();
    Tensor c = matmul(a, b);
    c.backward(g);
    benchmark::DoNotOptimize(a.grad().raw_data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(6.0 * double(n) * double(n) * double(n), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Matmul_FwdBwd)->Arg(64)->Arg(256)->Arg(1024)->UseRealTime();

// The same three GEMMs in raw Eigen, into preallocated outputs.
static void BM_Eigen_3Gemm(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
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
  state.counters["GFLOP/s"] =
      benchmark::Counter(6.0 * double(n) * double(n) * double(n), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Eigen_3Gemm)->Arg(64)->Arg(256)->Arg(1024)->UseRealTime();

BENCHMARK_MAIN();
