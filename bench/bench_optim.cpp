// Optimizer step throughput: Adam on 10M float32 parameters, reported as GB/s of parameter + state traffic
// (read p, g, m, v; write p, m, v: 28 bytes per parameter), next to a STREAM-like copy and triad on all
// threads of qkv's pool (as Adam runs) measuring what this machine's memory can do.
#include <qkv/core/parallel.h>
#include <qkv/optim/optimizer.h>

#include <benchmark/benchmark.h>

#include <vector>

using namespace qkv;

namespace {
constexpr std::int64_t kParams = 10'000'000;
}

static void BM_AdamStep_10M(benchmark::State& state) {
  const Tensor p = Tensor::randn({kParams}).requires_grad_();
  p.set_grad(Tensor::randn({kParams}));
  Adam opt({{"p", p}}, {.lr = 1e-3, .amsgrad = state.range(0) != 0});
  opt.step();  // allocate the state outside the timed loop
  for (auto _ : state) opt.step();
  const double bytes = (state.range(0) != 0 ? 36.0 : 28.0) * double(kParams);
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_AdamStep_10M)->Arg(0)->Arg(1)->ArgName("amsgrad")->UseRealTime()->Unit(benchmark::kMillisecond);

// STREAM copy: b = a (8 bytes moved per element).
static void BM_StreamCopy_10M(benchmark::State& state) {
  std::vector<float> a(kParams, 1.0f), b(kParams, 0.0f);
  for (auto _ : state) {
    const float* pa = a.data();
    float* pb = b.data();
    parallel_for(kParams, true, [=](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) pb[i] = pa[i];
    });
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(8.0 * double(kParams), benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_StreamCopy_10M)->UseRealTime()->Unit(benchmark::kMillisecond);

// STREAM triad: a = b + s * c (12 bytes moved per element).
static void BM_StreamTriad_10M(benchmark::State& state) {
  std::vector<float> a(kParams, 0.0f), b(kParams, 1.0f), c(kParams, 2.0f);
  for (auto _ : state) {
    float* pa = a.data();
    const float *pb = b.data(), *pc = c.data();
    parallel_for(kParams, true, [=](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) pa[i] = pb[i] + 3.0f * pc[i];
    });
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(12.0 * double(kParams), benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_StreamTriad_10M)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
