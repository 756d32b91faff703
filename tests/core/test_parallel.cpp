#include "../support.h"

#include <qkv/core/parallel.h>
#include <qkv/optim/optimizer.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <memory>
#include <functional>
#include <thread>

using namespace qkv;

namespace {

// Every value an op computes (outputs and gradients), as raw float32 values compared bit for bit.
using Values = std::vector<std::vector<double>>;

// Runs `f` with each thread count and checks that every value equals the 1-thread result exactly.
void check_thread_independent(const char* what, const std::function<Values()>& f) {
  const int before = num_threads();
  set_num_threads(1);
  const Values one = f();
  for (int threads : {2, 3, 5, 8}) {
    set_num_threads(threads);
    const Values v = f();
    REQUIRE(v.size() == one.size());
    for (std::size_t i = 0; i < v.size(); ++i) CHECK_MESSAGE(v[i] == one[i], std::string(what) << ": value " << i << " differs at " << threads << " threads");
  }
  set_num_threads(before);
}

// A float32 leaf of `shape` (seeded), requiring grad.
Tensor input(const Shape& shape, std::uint64_t seed) {
  Generator g(seed);
  return Tensor::randn(shape, g).requires_grad_();
}

// Output, then the gradient of sum(out * r) (r random, so every element's gradient matters) for each input.
Values with_grads(const Tensor& out, const std::vector<Tensor>& inputs) {
  Generator g(99);
  const Tensor r = Tensor::randn(out.shape(), g);
  sum(out * r).backward();
  Values v{out.to_vector()};
  for (const auto& x : inputs) v.push_back(x.grad().to_vector());
  return v;
}

}  // namespace

TEST_CASE("ops give bit-identical values and gradients for 1, 2, 3, 5 and 8 threads") {
  // Odd sizes, above every parallel threshold: row blocks, element chunks and remainders all land differently.
  check_thread_independent("matmul", [] {
    const Tensor a = input({1001, 301}, 1), b = input({301, 203}, 2);
    return with_grads(matmul(a, b), {a, b});
  });
  check_thread_independent("batched matmul", [] {
    const Tensor a = input({3, 133, 97}, 3), b = input({3, 97, 211}, 4);
    return with_grads(matmul(a, b), {a, b});
  });
  check_thread_independent("matrix-vector", [] {
    const Tensor a = input({100001, 37}, 21), b = input({37, 1}, 22);
    return with_grads(matmul(a, b), {a, b});
  });
  check_thread_independent("a 1-row remainder (257 rows)", [] {
    const Tensor a = input({257, 999}, 23), b = input({999, 64}, 24);
    return with_grads(matmul(a, b), {a, b});
  });
  check_thread_independent("linear", [] {
    const Tensor x = input({7, 149, 130}, 5), w = input({257, 130}, 6), bias = input({257}, 7);
    return with_grads(linear(x, w, bias), {x, w, bias});
  });
  check_thread_independent("gelu (exact)", [] {
    const Tensor x = input({100003}, 8);
    return with_grads(gelu(x), {x});
  });
  check_thread_independent("elementwise", [] {
    const Tensor a = input({70001}, 9), b = input({70001}, 10);
    return with_grads(exp(a) * b + tanh(a) / (b * b + 1.0), {a, b});
  });
  check_thread_independent("layer_norm", [] {
    const Tensor x = input({999, 131}, 11), w = input({131}, 12), bias = input({131}, 13);
    return with_grads(layer_norm(x, w, bias), {x, w, bias});
  });
  check_thread_independent("cross_entropy", [] {
    const Tensor logits = input({2001, 77}, 14);
    std::vector<std::int64_t> t(2001);
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = i % 7 == 0 ? -100 : static_cast<std::int64_t>(i * 31 % 77);
    const Tensor loss = cross_entropy(logits, Tensor::from(t, {2001}));
    loss.backward();
    return Values{loss.to_vector(), logits.grad().to_vector()};
  });
  check_thread_independent("softmax", [] {
    const Tensor x = input({301, 257}, 15);
    return with_grads(softmax(x, -1), {x});
  });
  check_thread_independent("attention (causal, 5 heads)", [] {
    const Tensor q = input({3, 67, 5 * 24}, 16), k = input({3, 67, 5 * 24}, 17), v = input({3, 67, 5 * 16}, 18);
    return with_grads(attention(q, k, v, 5, true).first, {q, k, v});
  });
  check_thread_independent("adam step", [] {
    Tensor p = input({300007}, 19);
    Generator g(20);
    Adam adam({{"p", p}}, AdamOptions{.lr = 1e-2, .weight_decay = 0.1});
    for (int step = 0; step < 3; ++step) {
      adam.zero_grad();
      sum(p * Tensor::randn(p.shape(), g)).backward();
      adam.step();
    }
    return Values{p.to_vector()};
  });
}

TEST_CASE("set_num_threads rejects a count below 1") {
  CHECK_ERROR(set_num_threads(0), "set_num_threads: the thread count must be at least 1, got 0");
}

TEST_CASE("parallel_for covers every index once, runs nested loops serially and rethrows a chunk's error") {
  const int before = num_threads();
  set_num_threads(3);
  std::vector<std::atomic<int>> hits(1000);
  std::atomic<int> nested_on_caller{0};
  parallel_for(1000, true, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) ++hits[i];
    parallel_for(10, true, [&](std::int64_t a, std::int64_t b) { nested_on_caller += a == 0 && b == 10; });
  });
  int once = 0;
  for (auto& h : hits) once += h.load() == 1;
  CHECK(once == 1000);
  CHECK(nested_on_caller.load() == 12);  // 4 chunks per thread, each nested loop whole on its own thread

  // A qkv::Error thrown on a worker reaches the caller, and the pool still works afterwards.
  CHECK_ERROR(parallel_for(100, true, [](std::int64_t lo, std::int64_t) {
    QKV_CHECK(lo == 0, "chunk from {} failed", lo);
  }), "chunk from 8 failed");
  std::atomic<std::int64_t> total{0};
  parallel_for(100, true, [&](std::int64_t lo, std::int64_t hi) { total += hi - lo; });
  CHECK(total.load() == 100);

  // Two application threads using ops at once: each gets its own, correct result.
  std::vector<double> r1, r2;
  std::thread other([&] { r1 = (input({300, 200}, 30) * 2.0).to_vector(); });
  r2 = (input({300, 200}, 30) * 2.0).to_vector();
  other.join();
  CHECK(r1 == r2);
  set_num_threads(before);
}

// The caller sleeps once a worker's chunk outlasts its spin, and only the worker's notify wakes it: a lost wake-up
// would hang here, so the loop runs on a thread of its own and a caller not woken in 10 s fails the test.
TEST_CASE("a caller that must sleep is woken when the last worker chunk ends") {
  const int before = num_threads();
  set_num_threads(2);
  std::atomic<bool> worker_started{false};
  for (int round = 0; round < 3; ++round) {
    worker_started = false;
    auto done = std::make_shared<std::promise<double>>();
    std::future<double> finished = done->get_future();
    std::thread([&, done] {
      const auto t0 = std::chrono::steady_clock::now();
      const auto loop_caller = std::this_thread::get_id();
      parallel_for(2, true, [&](std::int64_t, std::int64_t) {
        if (std::this_thread::get_id() != loop_caller) {  // the worker's chunk: slow
          worker_started = true;
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          return;
        }
        // The caller's chunk waits until the worker holds the other one, so the caller has nothing left to claim.
        for (int i = 0; i < 2000 && !worker_started; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      });
      done->set_value(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }).detach();
    if (finished.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      FAIL_CHECK("the caller was never woken after the worker's chunk ended (a lost wake-up)");
      std::_Exit(1);  // the loop's thread is stuck for good: end the test process instead of hanging it
    }
    const double seconds = finished.get();
    CHECK(worker_started.load());
    CHECK(seconds >= 0.19);  // it did wait for the worker's chunk
  }
  set_num_threads(before);
}
