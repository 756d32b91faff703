// The per-machine choice between the GEMM engines (core/gemm.h): size classes, the measurement, and its cache file.
#include "qkv/core/gemm.h"

#include "qkv/core/files.h"
#include "qkv/core/hash.h"
#include "qkv/core/ops/kernel.h"

#include <Eigen/Core>
#if QKV_HAVE_BLAS
extern "C" char* openblas_get_corename();
#endif

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace qkv {
namespace {

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


// Alternates the engines over 5 rounds per class and keeps the medians, so a noisy neighbour hits both alike.
Table measure() {
  Table t{};
  t.fill(GemmEngine::Eigen);
  if (!blas_available()) return t;
  std::vector<float> buf(4 * 512 * 256);
  for (int c = 0; c < kClasses; ++c) {
    std::vector<double> eigen, blas;
    for (int round = 0; round < 5; ++round) {
      eigen.push_back(kernel::time_gemm(GemmEngine::Eigen, kProbe[c][0], kProbe[c][1], kProbe[c][2], buf));
      blas.push_back(kernel::time_gemm(GemmEngine::Blas, kProbe[c][0], kProbe[c][1], kProbe[c][2], buf));
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
  const std::string tmp = temporary_path(path);
  std::string text = std::string(kCacheMagic) + " 1";
  for (GemmEngine e : t) text += std::string(" ") + gemm_engine_name(e);
  text += '\n';
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written) return std::filesystem::remove(tmp, ec), false;
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

}  // namespace kernel
}  // namespace qkv
