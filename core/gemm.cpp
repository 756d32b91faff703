// The GEMM behind matmul and linear: C (n, m) = or += op(A) op(B) on Eigen or OpenBLAS (see core/gemm.h), split
// into row blocks across threads, and the per-machine choice between the two engines.
#include "qkv/core/gemm.h"

#include "qkv/core/hash.h"
#include "qkv/core/ops/kernel.h"

#include <Eigen/Core>
#if QKV_HAVE_BLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);  // OpenBLAS's own; qkv splits products across threads itself
extern "C" char* openblas_get_corename();
extern "C" int blas_thread_shutdown_() __attribute__((weak));  // the pthread build's; absent in others
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <new>
#include <thread>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <sstream>
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

// ---- the choice -------------------------------------------------------------------------------------------------

// Size classes by multiply-adds (n k m): class c < kClasses - 1 holds the products below 2^(15 + 3c) (2^15, 2^18,
// 2^21, 2^24) not in an earlier class, the last one the rest. Each is measured on a model-like shape in the middle
// of its range, in the three layouts a product and its backward use.
constexpr int kClasses = 5, kFirstLimitLog2 = 15, kLimitStepLog2 = 3;
constexpr std::array<std::array<std::int64_t, 3>, kClasses> kProbe{{
    {16, 32, 32}, {64, 64, 32}, {256, 64, 64}, {512, 128, 128}, {512, 256, 256}}};

int limit_log2(int c) { return kFirstLimitLog2 + kLimitStepLog2 * c; }

int size_class(std::int64_t n, std::int64_t k, std::int64_t m) {
  const double macs = double(n) * double(k) * double(m);
  int c = 0;
  while (c < kClasses - 1 && macs >= std::ldexp(1.0, limit_log2(c))) ++c;
  return c;
}

using Table = std::array<GemmEngine, kClasses>;

// Seconds for the probe shape's three layouts (forward, and backward's two) on one engine, one thread.
double time_probe(GemmEngine e, const std::array<std::int64_t, 3>& s, std::vector<float>& buf) {
  const std::int64_t n = s[0], k = s[1], m = s[2];
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

// Alternates the engines over 5 rounds per class and keeps the medians, so a noisy neighbour hits both alike.
Table measure() {
  Table t{};
  t.fill(GemmEngine::Eigen);
  if (!blas_available()) return t;
  std::vector<float> buf(4 * 512 * 256);
  for (int c = 0; c < kClasses; ++c) {
    std::vector<double> eigen, blas;
    for (int round = 0; round < 5; ++round) {
      eigen.push_back(time_probe(GemmEngine::Eigen, kProbe[c], buf));
      blas.push_back(time_probe(GemmEngine::Blas, kProbe[c], buf));
    }
    std::nth_element(eigen.begin(), eigen.begin() + 2, eigen.end());
    std::nth_element(blas.begin(), blas.begin() + 2, blas.end());
    t[c] = kernel::faster_engine(eigen[2], blas[2]);
  }
  return t;
}

// What makes two machines' measurements interchangeable: the CPU model and features, OpenBLAS's kernel, and the
// instruction sets this build of Eigen uses.
std::string machine_kind() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(in, line) && (model.empty() || flags.empty())) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line;
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = line;
  }
  std::string kind = model + "|" + flags + "|" + Eigen::SimdInstructionSetsInUse();
#if QKV_HAVE_BLAS
  kind += std::string("|") + openblas_get_corename();
  if (const char* l2 = std::getenv("OPENBLAS_L2_SIZE")) kind += std::string("|") + l2;  // OpenBLAS's blocking
#endif
  // (The cache file names were made from the basis 1469598103934665603, one digit short of FNV's: kept, so the
  // tables machines have cached keep their names.)
  return fmt::format("{:016x}", fnv1a(kind.data(), kind.size(), 1469598103934665603ull));
}

// Where the measured table is kept: QKV_GEMM_CACHE, else a folder qkv makes inside an existing
// $XDG_CACHE_HOME or $HOME/.cache (never a folder outside them); empty when there is no such place.
std::filesystem::path cache_path() {
  namespace fs = std::filesystem;
  if (const char* p = std::getenv("QKV_GEMM_CACHE"); p != nullptr && *p != '\0') return p;
  std::error_code ec;
  fs::path dir;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0' && fs::is_directory(x, ec)) dir = x;
  else if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0' && fs::is_directory(h, ec)) dir = fs::path(h) / ".cache";
  else return {};
  return dir / "qkv" / ("gemm-" + machine_kind() + ".txt");
}

// The cache file's text: "qkv-gemm 1" and one engine name per class.
constexpr const char* kCacheMagic = "qkv-gemm";

// What is at the cache path: nothing, a qkv cache (whole or damaged: it starts with the magic), or something else
// (a user's file, a device, a FIFO), which qkv never reads past its type nor writes.
enum class CacheFile { Absent, Ours, Foreign };

CacheFile cache_file_kind(const std::filesystem::path& path, std::string& text) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT ? CacheFile::Absent : CacheFile::Foreign;
  if (!S_ISREG(st.st_mode) || st.st_size > 4096) return CacheFile::Foreign;
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return CacheFile::Foreign;
  char buf[4096];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  text.assign(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  return text.rfind(kCacheMagic, 0) == 0 ? CacheFile::Ours : CacheFile::Foreign;
}

bool parse_table(const std::string& text, Table& t) {
  std::istringstream in(text);
  std::string magic, version, name;
  if (!(in >> magic >> version) || magic != kCacheMagic || version != "1") return false;
  for (auto& e : t) {
    if (!(in >> name) || (name != "eigen" && name != "blas")) return false;
    e = name == "blas" ? GemmEngine::Blas : GemmEngine::Eigen;
  }
  return !(in >> name);
}

// Writes the table to a temporary file, then links it to an absent path (so of two processes measuring at once,
// the first to finish wins and the other reads its table) or renames it over a damaged qkv cache. False when it
// cannot be written.
bool write_table(const std::filesystem::path& path, const Table& t, bool replace) {
  std::error_code ec;
  const auto tmp = path.string() + fmt::format(".tmp{}", static_cast<long>(::getpid()));
  {
    std::ofstream out(tmp);
    out << kCacheMagic << " 1";
    for (GemmEngine e : t) out << ' ' << gemm_engine_name(e);
    out << '\n';
    if (!out.flush()) return std::filesystem::remove(tmp, ec), false;
  }
  const bool ok = replace ? ::rename(tmp.c_str(), path.c_str()) == 0 : ::link(tmp.c_str(), path.c_str()) == 0;
  std::filesystem::remove(tmp, ec);
  return ok;
}

struct Auto {
  Table table{};
  std::string where;  // the cache file, or why there is none
};

// Without a file to keep it in, a measurement could differ from process to process, and with it the weights: the
// table is then Eigen's everywhere, the same in every run.
Auto uncached(const std::string& why) {
  Auto r;
  r.table.fill(GemmEngine::Eigen);
  r.where = "not measured (" + why + "): eigen for every product, so that every run gets the same table";
  return r;
}

Auto load_auto(const std::filesystem::path& path) {
  if (path.empty()) return uncached("no cache folder: set XDG_CACHE_HOME, HOME or QKV_GEMM_CACHE");
  std::string text;
  const CacheFile kind = cache_file_kind(path, text);
  Auto r;
  if (kind == CacheFile::Ours && parse_table(text, r.table)) {
    r.where = "cached in " + path.string();
    return r;
  }
  if (kind == CacheFile::Foreign) return uncached(path.string() + " is not a qkv cache file; it was left alone");
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (write_table(path, measure(), kind == CacheFile::Ours) && cache_file_kind(path, text) == CacheFile::Ours &&
      parse_table(text, r.table)) {
    r.where = "measured now, cached in " + path.string();
    return r;
  }
  return uncached("cannot write " + path.string());
}

const Auto& auto_table() {
  static const Auto a = load_auto(cache_path());
  return a;
}

std::atomic<int> g_choice{-1};  // -1: not set yet (QKV_GEMM is read at first use)

}  // namespace

const char* gemm_engine_name(GemmEngine engine) { return engine == GemmEngine::Blas ? "blas" : "eigen"; }

bool blas_available() { return QKV_HAVE_BLAS != 0; }

GemmChoice parse_gemm_choice(const std::string& text) {
  if (text == "auto" || text.empty()) return GemmChoice::Auto;
  if (text == "eigen") return GemmChoice::Eigen;
  if (text == "blas") return GemmChoice::Blas;
  throw Error(fmt::format("QKV_GEMM: expected eigen, blas or auto, got '{}'", text));
}

void set_gemm_choice(GemmChoice choice) {
  QKV_CHECK(choice != GemmChoice::Blas || blas_available(),
            "QKV_GEMM=blas: this qkv was built without OpenBLAS (install libopenblas-dev, then rebuild: make build)");
  g_choice.store(static_cast<int>(choice));
}

GemmChoice gemm_choice() {
  int c = g_choice.load(std::memory_order_relaxed);
  if (c < 0) {
    const char* env = std::getenv("QKV_GEMM");
    const GemmChoice parsed = parse_gemm_choice(env != nullptr ? env : "");
    set_gemm_choice(parsed);
    c = static_cast<int>(parsed);
  }
  return static_cast<GemmChoice>(c);
}

GemmEngine gemm_engine(std::int64_t n, std::int64_t k, std::int64_t m) {
  switch (gemm_choice()) {
    case GemmChoice::Eigen: return GemmEngine::Eigen;
    case GemmChoice::Blas: return GemmEngine::Blas;
    case GemmChoice::Auto: break;
  }
  return auto_table().table[size_class(n, k, m)];
}

std::string gemm_summary() {
  const GemmChoice c = gemm_choice();
  if (c != GemmChoice::Auto)
    return fmt::format("gemm: {} for every product (forced)", c == GemmChoice::Blas ? "blas" : "eigen");
  const Auto& a = auto_table();
  std::string classes;
  for (int i = 0; i < kClasses; ++i)
    classes += fmt::format("{}{}2^{} {}", i ? ", " : "", i < kClasses - 1 ? "<" : ">=",
                           limit_log2(i < kClasses - 1 ? i : kClasses - 2), gemm_engine_name(a.table[i]));
  return fmt::format("gemm: auto by multiply-adds ({}), {}", classes, a.where);
}

namespace kernel {

GemmEngine faster_engine(double eigen_seconds, double blas_seconds) {
  return blas_seconds < 0.97 * eigen_seconds ? GemmEngine::Blas : GemmEngine::Eigen;
}

std::string gemm_table_at(const std::string& path) {
  const Auto a = load_auto(path);
  std::string names;
  for (GemmEngine e : a.table) names += std::string(names.empty() ? "" : " ") + gemm_engine_name(e);
  if (a.where.rfind("not measured", 0) == 0) return names + " (uncached)";
  return names + (a.where.rfind("cached", 0) == 0 ? " (cached)" : " (measured)");
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

template <class T>
void gemm(const T* a, bool ta, const T* b, bool tb, T* c, std::int64_t n, std::int64_t k, std::int64_t m,
          bool accumulate) {
  const GemmEngine e = engine_for(n, k, m, 0);
  const int threads = num_threads();
  const bool split = threads > 1 && parallel_worth(Work::Gemm, double(n) * double(k) * double(m)) && n >= 2 * 32 &&
                     !detail::in_parallel();
  const RowBlocks rb = split ? row_blocks(e, n, k, m, threads) : RowBlocks{n, 1};
  if (rb.count < 2) {
    engine_rows(e, a, ta, b, tb, c, n, k, m, accumulate, 0, n);
    return;
  }
  parallel_for(rb.count, true, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i)
      engine_rows(e, a, ta, b, tb, c, n, k, m, accumulate, i * rb.block,
                  i + 1 < rb.count ? rb.block : n - i * rb.block);
  });
}

template <class T>
void gemm_strided(const T* a, std::int64_t lda, bool ta, const T* b, std::int64_t ldb, bool tb, T* c,
                  std::int64_t ldc, std::int64_t n, std::int64_t k, std::int64_t m, bool accumulate) {
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
