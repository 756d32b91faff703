// bf16 mixed precision (core/precision.h): the thread's precision, bf16 rounding, and the two engines of bf16
// products (oneDNN's matmul, or rounded float32 copies on the float32 engine).
#include "qkv/core/precision.h"

#include "qkv/core/errors.h"
#include "qkv/core/ops/kernel.h"

#if QKV_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#include <dlfcn.h>
#endif

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <memory>
#include <mutex>
#include <tuple>

namespace qkv {
namespace {

thread_local Precision t_precision = Precision::Float32;

std::atomic<int> g_engine{-1};  // -1: auto (QKV_BF16 read at first use), else a Bf16Engine forced

// Below this many multiply-adds a oneDNN call (descriptors, conversion) costs more than bf16 saves.
constexpr double kDnnlMinMacs = double(1 << 18);

// Branch-free, so that loops over it vectorise.
inline std::uint16_t to_bf16_bits(float x) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // nearest, ties to even (a carry into the
                                                                           // exponent is right)
  const std::uint32_t nan = (u >> 16) | 0x40u;                             // NaN stays NaN (quiet)
  return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

inline float bf16_value(float x) { return std::bit_cast<float>(std::uint32_t(to_bf16_bits(x)) << 16); }

// The rounded copies' memory, kept between products by size (a step asks for the same sizes every time): fresh
// memory was page-faulted in on every product, and kept in the tensors' block cache the copies (hundreds of MB
// for GPT-2's head) pushed out the blocks of the step's own tensors, which then page-faulted instead. Up to
// kLimitBytes are kept; a block beyond that is freed.
class ScratchPool {
 public:
  static constexpr std::size_t kLimitBytes = std::size_t{1} << 30;
  void* take(std::size_t bytes) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        kept_ -= bytes;
        return p;
      }
    }
    void* p = std::aligned_alloc(64, bytes);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void give(void* p, std::size_t bytes) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (kept_ + bytes <= kLimitBytes) {
        free_[bytes].push_back(p);
        kept_ += bytes;
        return;
      }
    }
    std::free(p);
  }
  static std::size_t rounded(std::size_t bytes) { return (std::max<std::size_t>(bytes, 64) + 4095) / 4096 * 4096; }

 private:
  std::mutex mutex_;
  std::map<std::size_t, std::vector<void*>> free_;
  std::size_t kept_ = 0;
};

ScratchPool& scratch_pool() {
  static auto* pool = new ScratchPool;  // never destroyed: the pool's threads may use it at exit
  return *pool;
}

// An uninitialised buffer of n T's from the scratch pool, returned to it when it goes.
template <class T>
class Buffer {
 public:
  explicit Buffer(std::int64_t n)
      : bytes_(ScratchPool::rounded(static_cast<std::size_t>(std::max<std::int64_t>(n, 1)) * sizeof(T))),
        p_(static_cast<T*>(scratch_pool().take(bytes_))) {}
  ~Buffer() { scratch_pool().give(p_, bytes_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return p_; }

 private:
  std::size_t bytes_;
  T* p_;
};

// The product's inputs rounded: into bf16 bits for oneDNN, or into floats for the emulated engine.
template <class Out, class Convert>
void convert(const float* in, Out* out, std::int64_t n, Convert f) {
  kernel::parallel_for(n, parallel_worth(Work::Elementwise, double(n)), [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) out[i] = f(in[i]);
  });
}

// out (n, k) = in^T rounded, for in stored (k, n), by 16 x 16 tiles: each tile's rows of `in` are read and
// rounded along their length (loops that vectorise) into a small buffer, whose columns are then written out as
// rows. (Element by element, the strided side kept it at a third of the speed.)
template <class Out, class Convert>
void convert_transposed(const float* in, Out* out, std::int64_t n, std::int64_t k, Convert f) {
  constexpr std::int64_t kTile = 16;
  kernel::parallel_for((n + kTile - 1) / kTile, parallel_worth(Work::Elementwise, double(n * k)),
                       [&](std::int64_t lo, std::int64_t hi) {
    Out tile[kTile][kTile];
    for (std::int64_t i0 = lo * kTile; i0 < std::min(n, hi * kTile); i0 += kTile) {
      const std::int64_t rows = std::min(kTile, n - i0);
      for (std::int64_t j0 = 0; j0 < k; j0 += kTile) {
        const std::int64_t cols = std::min(kTile, k - j0);
        for (std::int64_t j = 0; j < cols; ++j)
          for (std::int64_t i = 0; i < rows; ++i) tile[i][j] = f(in[(j0 + j) * n + i0 + i]);
        for (std::int64_t i = 0; i < rows; ++i)
          std::memcpy(out + (i0 + i) * k + j0, tile[i], static_cast<std::size_t>(cols) * sizeof(Out));
      }
    }
  });
}

// Runs f with this thread (and so the pool's threads it starts) at float32: the rounded copies go to the float32
// engine.
template <class F>
void at_fp32(F&& f) {
  AutocastGuard fp32(Precision::Float32);
  f();
}

#if QKV_HAVE_DNNL
bool cpu_has_bf16() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  return (isa & unsigned(dnnl_cpu_isa_avx512_core_bf16)) == unsigned(dnnl_cpu_isa_avx512_core_bf16);
}

// oneDNN (Debian's build) parallelises with OpenMP; qkv splits products across its own threads, so each thread
// that calls oneDNN asks OpenMP for one thread (libgomp is loaded with oneDNN; looked up, not linked).
void one_openmp_thread() {
  thread_local bool done = false;
  if (done) return;
  done = true;
  using SetThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "omp_set_num_threads"))) f(1);
}

using dt = dnnl::memory::data_type;
using md = dnnl::memory::desc;

struct Dnnl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::mutex mutex;
  // (rows, k, m, tb, accumulate) -> the primitive for row-major bf16 A, B stored (k, m) or, when tb, (m, k), and
  // float32 C; run by any thread.
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, bool, bool>, dnnl::matmul::primitive_desc> cache;
};

Dnnl& dnnl_state() {
  static Dnnl* d = new Dnnl;  // lives for the process, as the pool's threads may use it at exit
  return *d;
}

dnnl::matmul::primitive_desc primitive_for(std::int64_t len, std::int64_t k, std::int64_t m, bool tb, bool accumulate) {
  Dnnl& d = dnnl_state();
  const std::lock_guard<std::mutex> lock(d.mutex);
  const auto key = std::make_tuple(len, k, m, tb, accumulate);
  auto it = d.cache.find(key);
  if (it == d.cache.end() && d.cache.size() >= 512) d.cache.clear();  // shapes that come and go (generation)
  if (it == d.cache.end()) {
    const md a_md({len, k}, dt::bf16, dnnl::memory::dims{k, 1});
    const md b_md({k, m}, dt::bf16, tb ? dnnl::memory::dims{1, k} : dnnl::memory::dims{m, 1});
    const md c_md({len, m}, dt::f32, dnnl::memory::dims{m, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.f);
      attr.set_post_ops(ops);
    }
    try {
      it = d.cache.emplace(key, dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, c_md), attr, d.engine)).first;
    } catch (const dnnl::error& e) {
      fail("oneDNN has no bf16 matmul for ({}, {}) @ ({}, {}) here ({}); QKV_BF16=emulated runs without it", len, k, k,
           m, e.what());
    }
  }
  return it->second;
}

// Rows [r0, r0 + len) of C = or += A op(B), from bf16 A (rows of k, row-major) and B stored (k, m) or, when tb,
// (m, k).
void dnnl_rows(const std::uint16_t* a, const std::uint16_t* b, bool tb, float* c, std::int64_t k, std::int64_t m,
               bool accumulate, std::int64_t r0, std::int64_t len) {
  one_openmp_thread();
  Dnnl& d = dnnl_state();
  const dnnl::matmul::primitive_desc pd = primitive_for(len, k, m, tb, accumulate);
  const Buffer<std::uint8_t> scratch(static_cast<std::int64_t>(pd.scratchpad_desc().get_size()));
  dnnl::memory A(pd.src_desc(), d.engine, const_cast<std::uint16_t*>(a + r0 * k));
  dnnl::memory B(pd.weights_desc(), d.engine, const_cast<std::uint16_t*>(b));
  dnnl::memory C(pd.dst_desc(), d.engine, c + r0 * m);
  dnnl::memory S(pd.scratchpad_desc(), d.engine, scratch.get());
  dnnl::stream s(d.engine);
  dnnl::matmul(pd).execute(s, {{DNNL_ARG_SRC, A}, {DNNL_ARG_WEIGHTS, B}, {DNNL_ARG_DST, C}, {DNNL_ARG_SCRATCHPAD, S}});
  s.wait();
}

// C = or += op(A) op(B) on oneDNN: A and B rounded once (on every thread), A into row-major (n, k) since a block
// of rows of a transposed A is not dense and oneDNN then takes a slower kernel (B it takes either way); then the
// blocks of rows. (Handing oneDNN B in its own packed layout, one reorder on one thread, was no faster.)
void dnnl_gemm(const float* a, bool ta, const float* b, bool tb, float* c, std::int64_t n, std::int64_t k,
               std::int64_t m, bool accumulate) {
  const Buffer<std::uint16_t> ha(n * k), hb(k * m);
  const auto bits = [](float x) { return to_bf16_bits(x); };  // a lambda, so that the loops inline it
  if (ta) convert_transposed(a, ha.get(), n, k, bits);
  else convert(a, ha.get(), n * k, bits);
  convert(b, hb.get(), k * m, bits);  // oneDNN takes a transposed B as it is
  kernel::gemm_rows(GemmEngine::Eigen, n, k, m, [&](std::int64_t r0, std::int64_t len) {
    dnnl_rows(ha.get(), hb.get(), tb, c, k, m, accumulate, r0, len);
  });
}
#else
bool cpu_has_bf16() { return false; }
#endif

Bf16Engine auto_engine() { return bf16_native() ? Bf16Engine::OneDnn : Bf16Engine::Emulated; }

}  // namespace

const char* precision_name(Precision p) { return p == Precision::BFloat16 ? "bf16" : "fp32"; }

Precision parse_precision(const std::string& text) {
  if (text == "fp32") return Precision::Float32;
  if (text == "bf16") return Precision::BFloat16;
  fail("precision: expected fp32 or bf16, got '{}'", text);
}

std::vector<std::string> precision_names() { return {"fp32", "bf16"}; }

Precision matmul_precision() { return t_precision; }

AutocastGuard::AutocastGuard(Precision p) : prev_(t_precision) { t_precision = p; }
AutocastGuard::~AutocastGuard() { t_precision = prev_; }

namespace detail {
void set_thread_precision(Precision p) { t_precision = p; }
}  // namespace detail

float round_bf16(float x) { return bf16_value(x); }

void round_bf16(const float* in, float* out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_value(in[i]);
}

const char* bf16_engine_name(Bf16Engine e) { return e == Bf16Engine::OneDnn ? "onednn" : "emulated"; }

bool bf16_native() {
  static const bool native = QKV_HAVE_DNNL && cpu_has_bf16();
  return native;
}

void set_bf16_engine(Bf16Engine e) {
  QKV_CHECK(e != Bf16Engine::OneDnn || bf16_native(),
            "QKV_BF16=onednn: {}", QKV_HAVE_DNNL ? "this CPU has no bf16 instructions (AVX512-BF16 or AMX)"
                                                 : "this qkv was built without oneDNN (install libdnnl-dev, then rebuild)");
  g_engine.store(static_cast<int>(e));
}

void reset_bf16_engine() { g_engine.store(-1); }

namespace {
// QKV_BF16's value, read once: auto (-2), or an engine.
int env_engine() {
  static const int e = [] {
    const char* v = std::getenv("QKV_BF16");
    const std::string s = v != nullptr ? v : "";
    if (s.empty() || s == "auto") return -2;
    if (s == "emulated") return static_cast<int>(Bf16Engine::Emulated);
    QKV_CHECK(s == "onednn", "QKV_BF16: expected auto, onednn or emulated, got '{}'", s);
    QKV_CHECK(bf16_native(), "QKV_BF16=onednn: oneDNN's bf16 products need a CPU with AVX512-BF16 or AMX and a "
              "qkv built with oneDNN");
    return static_cast<int>(Bf16Engine::OneDnn);
  }();
  return e;
}
}  // namespace

Bf16Engine bf16_engine(std::int64_t n, std::int64_t k, std::int64_t m) {
  int forced = g_engine.load(std::memory_order_relaxed);
  if (forced < 0) forced = env_engine();
  if (forced >= 0) return static_cast<Bf16Engine>(forced);
  const double macs = double(n) * double(k) * double(m);
  return macs >= kDnnlMinMacs ? auto_engine() : Bf16Engine::Emulated;
}

std::string bf16_summary() {
  std::string why;
#if QKV_HAVE_DNNL
  const auto v = dnnl::version();
  why = bf16_native() ? fmt::format("oneDNN {}.{}.{} for products of 2^18 multiply-adds and more (this CPU has bf16 "
                                    "instructions), emulated below", v->major, v->minor, v->patch)
                      : "emulated: this CPU has no bf16 instructions (AVX512-BF16 or AMX); float32 speed";
#else
  why = "emulated: qkv was built without oneDNN (libdnnl-dev); float32 speed";
#endif
  const int forced = g_engine.load() >= 0 ? g_engine.load() : env_engine();
  if (forced >= 0) return fmt::format("bf16: {} for every product (forced)", bf16_engine_name(Bf16Engine(forced)));
  return "bf16: " + why;
}

namespace kernel {

void gemm_bf16(const float* a, bool ta, const float* b, bool tb, float* c, std::int64_t n, std::int64_t k,
               std::int64_t m, bool accumulate) {
  if (n == 0 || m == 0) return;
#if QKV_HAVE_DNNL
  if (k > 0 && bf16_engine(n, k, m) == Bf16Engine::OneDnn) {
    dnnl_gemm(a, ta, b, tb, c, n, k, m, accumulate);
    return;
  }
#endif
  const Buffer<float> ra(n * k), rb(k * m);
  const auto value = [](float x) { return bf16_value(x); };
  convert(a, ra.get(), n * k, value);
  convert(b, rb.get(), k * m, value);
  at_fp32([&] { gemm(ra.get(), ta, rb.get(), tb, c, n, k, m, accumulate); });
}

void gemm_strided_bf16(const float* a, std::int64_t lda, bool ta, const float* b, std::int64_t ldb, bool tb, float* c,
                       std::int64_t ldc, std::int64_t n, std::int64_t k, std::int64_t m, bool accumulate) {
  // The blocks of attention: rounded into contiguous copies on this thread, then the float32 engine.
  thread_local std::vector<float> ra, rb;
  const std::int64_t a_rows = ta ? k : n, a_cols = ta ? n : k, b_rows = tb ? m : k, b_cols = tb ? k : m;
  ra.resize(static_cast<std::size_t>(a_rows * a_cols));
  rb.resize(static_cast<std::size_t>(b_rows * b_cols));
  for (std::int64_t i = 0; i < a_rows; ++i) round_bf16(a + i * lda, ra.data() + i * a_cols, a_cols);
  for (std::int64_t i = 0; i < b_rows; ++i) round_bf16(b + i * ldb, rb.data() + i * b_cols, b_cols);
  at_fp32([&] { gemm_strided(ra.data(), a_cols, ta, rb.data(), b_cols, tb, c, ldc, n, k, m, accumulate); });
}

}  // namespace kernel
}  // namespace qkv
