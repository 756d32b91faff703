// qkv's thread pool. Why not OpenMP: its static split gives each thread a fixed half, and its barrier spins, so on a
// busy machine (another process on one of the two cores) every parallel region waited for the descheduled thread
// while the waiting one burned the CPU that thread needed: 2 threads ran at 61% of 1 thread's speed. Here each
// thread claims the next chunk when it is free, a waiting thread spins for 50-100 microseconds and then sleeps
// (futex), and an idle worker does the same.
#include "qkv/core/parallel.h"

#include "qkv/core/precision.h"

#include <qkv/core/errors.h>

#include <sched.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace qkv {

int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

namespace {

std::atomic<int> g_threads{0};  // 0: not set yet, the default
thread_local bool t_in_parallel = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until ready() or `budget` has passed; true when ready. A region's workers usually arrive within a
// microsecond or two on a quiet machine, and the next region of a training step follows within a few more, so
// a short spin keeps the quiet speed and sleeping after it gives a busy machine's CPU back.
template <class Ready>
bool spin_until(Ready ready, std::chrono::microseconds budget) {
  const auto deadline = std::chrono::steady_clock::now() + budget;
  for (int i = 1;; ++i) {
    if (ready()) return true;
    cpu_relax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) return ready();
  }
}

// Measured on the small config (2 cores, one busy neighbour for "busy"): worker/caller spins of 100/50 us kept the
// quiet speed and ran busy at 100% of 1 thread; 300/150 gave 94% busy, 1000/50 82%, and no quiet gain.
constexpr auto kWorkerSpin = std::chrono::microseconds(100);
constexpr auto kCallerSpin = std::chrono::microseconds(50);

class Pool {
 public:
  static Pool& get() {
    static Pool* pool = new Pool;  // lives for the process: its workers are never joined
    return *pool;
  }

  // Runs the loop on the pool; false, having run nothing, when another application thread is using it.
  bool try_run(std::int64_t chunks, void (*call)(void*, std::int64_t), void* ctx, int threads) {
    std::unique_lock lock(run_, std::try_to_lock);
    if (!lock) return false;
    ensure_workers(threads - 1);
    publish(chunks, call, ctx, static_cast<int>(std::min<std::int64_t>(threads - 1, chunks - 1)));
    t_in_parallel = true;
    work(gen_, true);
    t_in_parallel = false;
    wait_done(static_cast<int>(chunks));
    if (failed_.load()) std::rethrow_exception(error_);
    return true;
  }

 private:
  // The state word packs a job's generation (24 bits) and its unclaimed chunks [lo, hi) (20 bits each), so a
  // claim is one compare-exchange that fails once the job it was for has ended: a late worker can never take a
  // chunk of the next job with the old job's fields. The caller claims from the front and the workers from the
  // back, so on a quiet machine the caller keeps the first part of every loop and a worker the last: consecutive
  // ops find their rows in the same core's cache, as with a static split, instead of chunks landing at random.
  static constexpr std::uint64_t kMask = (1u << 20) - 1, kGenMask = (1u << 24) - 1;
  static std::uint64_t pack(std::uint64_t gen, std::uint64_t lo, std::uint64_t hi) { return (gen << 40) | (lo << 20) | hi; }
  static std::uint64_t gen_of(std::uint64_t s) { return s >> 40; }

 public:
  static constexpr std::int64_t kMaxChunks = kMask;

 private:
  void publish(std::int64_t chunks, void (*call)(void*, std::int64_t), void* ctx, int wanted) {
    state_.store(pack(gen_, 0, 0));  // closed: nothing left to claim
    gen_ = (gen_ + 1) & kGenMask;
    call_.store(call, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    chunks_.store(chunks, std::memory_order_relaxed);
    wanted_.store(wanted, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    precision_.store(matmul_precision(), std::memory_order_relaxed);  // the workers run at the caller's
    failed_.store(false, std::memory_order_relaxed);
    error_ = nullptr;
    state_.store(pack(gen_, 0, static_cast<std::uint64_t>(chunks)));  // seq_cst: before the sleepers_ load below
    if (wanted > 0) {
      wake_.fetch_add(1);
      if (sleepers_.load() > 0) wake_.notify_all();
    }
  }

  void work(std::uint64_t gen, bool front) {
    for (;;) {
      std::uint64_t s = state_.load(std::memory_order_acquire);
      const std::uint64_t lo = (s >> 20) & kMask, hi = s & kMask;
      if (gen_of(s) != gen || lo >= hi) return;
      const std::int64_t next = static_cast<std::int64_t>(front ? lo : hi - 1);
      if (!state_.compare_exchange_weak(s, front ? pack(gen, lo + 1, hi) : pack(gen, lo, hi - 1),
                                        std::memory_order_acq_rel))
        continue;
      // The claim succeeded, so the job is still open and call_/ctx_/chunks_ are this job's.
      const std::int64_t chunks = chunks_.load(std::memory_order_relaxed);
      if (!front) detail::set_thread_precision(precision_.load(std::memory_order_relaxed));
      try {
        call_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), next);
      } catch (...) {
        fail(next);
      }
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks && caller_sleeping_.load()) done_.notify_one();
    }
  }

  // Keeps the error of the lowest failing chunk, so the message does not depend on the threads' timing.
  void fail(std::int64_t chunk) {
    std::lock_guard lock(error_mutex_);
    if (!failed_.load() || chunk < failed_chunk_) {
      failed_chunk_ = chunk;
      error_ = std::current_exception();
      failed_.store(true);
    }
  }

  void wait_done(int chunks) {
    const auto finished = [&] { return done_.load(std::memory_order_acquire) == chunks; };
    if (spin_until(finished, kCallerSpin)) return;
    caller_sleeping_.store(true);
    for (int d = done_.load(); d != chunks; d = done_.load()) done_.wait(d);
    caller_sleeping_.store(false);
  }

  void worker_loop(int index) {
    t_in_parallel = true;
    std::uint64_t seen = 0;
    for (;;) {
      const std::uint64_t s = next_job(seen);
      seen = gen_of(s);
      if (index < wanted_.load(std::memory_order_relaxed)) work(seen, false);
    }
  }

  // Waits for a job newer than generation `seen`: spins briefly, then sleeps on wake_.
  std::uint64_t next_job(std::uint64_t seen) {
    const auto fresh = [&] { return gen_of(state_.load(std::memory_order_acquire)) != seen; };
    for (;;) {
      if (spin_until(fresh, kWorkerSpin)) return state_.load(std::memory_order_acquire);
      const int w = wake_.load();
      sleepers_.fetch_add(1);
      if (!fresh()) wake_.wait(w);
      sleepers_.fetch_sub(1);
    }
  }

  void ensure_workers(int wanted) {
    std::lock_guard lock(grow_);
    while (static_cast<int>(workers_) < wanted) {
      std::thread([this, index = workers_] { worker_loop(index); }).detach();
      ++workers_;
    }
  }

  std::mutex run_, grow_, error_mutex_;
  std::int64_t failed_chunk_ = 0;
  int workers_ = 0;
  std::uint64_t gen_ = 0;  // written by the thread holding run_
  std::atomic<std::uint64_t> state_{0};
  std::atomic<void (*)(void*, std::int64_t)> call_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<std::int64_t> chunks_{0};
  std::atomic<int> wanted_{0}, done_{0}, wake_{0}, sleepers_{0};
  std::atomic<bool> caller_sleeping_{false}, failed_{false};
  std::atomic<Precision> precision_{Precision::Float32};
  std::exception_ptr error_;
};

}  // namespace

void set_num_threads(int threads) {
  QKV_CHECK(threads >= 1, "set_num_threads: the thread count must be at least 1, got {}", threads);
  g_threads.store(threads);
}

int num_threads() {
  int t = g_threads.load(std::memory_order_relaxed);
  if (t == 0) {
    int expected = 0;
    g_threads.compare_exchange_strong(expected, available_cores());
    t = g_threads.load();
  }
  return t;
}

bool parallel_worth(Work kind, double units) {
  switch (kind) {
    case Work::Elementwise: return units >= double(1 << 15);
    case Work::Rows: return units >= double(1 << 13);
    case Work::Gemm: return units >= double(1 << 20);
    case Work::Attention: return units > double(1 << 18);
  }
  return false;
}

namespace detail {

void run_chunks(std::int64_t chunks, void (*call)(void*, std::int64_t), void* ctx) {
  const int threads = num_threads();
  const bool pooled = chunks > 1 && threads > 1 && !t_in_parallel && chunks <= Pool::kMaxChunks;
  if (pooled && Pool::get().try_run(chunks, call, ctx, threads)) return;
  for (std::int64_t i = 0; i < chunks; ++i) call(ctx, i);  // here, in order: the first error is the lowest chunk's
}

bool in_parallel() { return t_in_parallel; }

}  // namespace detail
}  // namespace qkv
