#include "../support.h"

#include <qkv/core/gemm.h>
#include <qkv/core/ops/kernel.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <sys/stat.h>

using namespace qkv;

namespace {

// Restores the engine choice a test changed.
struct ChoiceGuard {
  GemmChoice before = gemm_choice();
  ~ChoiceGuard() { set_gemm_choice(before); }
};

// Values and gradients of a product and its backward (all three layouts, and the accumulating batched case).
std::vector<std::vector<double>> products() {
  std::vector<std::vector<double>> out;
  Generator g(7);
  for (const auto& [sa, sb] : std::vector<std::pair<Shape, Shape>>{{{300, 70}, {70, 90}},      // one GEMM
                                                                   {{4, 33, 17}, {17, 9}},     // rows stacked
                                                                   {{3, 40, 20}, {1, 20, 30}}  // broadcast b
       }) {
    const Tensor a = Tensor::randn(sa, g).requires_grad_(), b = Tensor::randn(sb, g).requires_grad_();
    const Tensor c = matmul(a, b);
    sum(c * c).backward();
    out.push_back(c.to_vector());
    out.push_back(a.grad().to_vector());
    out.push_back(b.grad().to_vector());
  }
  return out;
}

std::string read(const std::filesystem::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace

TEST_CASE("QKV_GEMM values: eigen, blas, auto; anything else names the variable") {
  CHECK(parse_gemm_choice("eigen") == GemmChoice::Eigen);
  CHECK(parse_gemm_choice("blas") == GemmChoice::Blas);
  CHECK(parse_gemm_choice("auto") == GemmChoice::Auto);
  CHECK(parse_gemm_choice("") == GemmChoice::Auto);
  CHECK_ERROR(parse_gemm_choice("mkl"), "QKV_GEMM: expected eigen, blas or auto, got 'mkl'");
  CHECK(std::string(gemm_engine_name(GemmEngine::Blas)) == "blas");
}

TEST_CASE("a forced engine runs every product; both engines agree to float32 rounding") {
  ChoiceGuard guard;
  set_gemm_choice(GemmChoice::Eigen);
  CHECK(gemm_engine(1000, 1000, 1000) == GemmEngine::Eigen);
  CHECK(gemm_summary() == "gemm: eigen for every product (forced)");
  const auto eigen = products();
  if (!blas_available()) {
    CHECK_ERROR(set_gemm_choice(GemmChoice::Blas), "this qkv was built without OpenBLAS");
    return;
  }
  set_gemm_choice(GemmChoice::Blas);
  CHECK(gemm_engine(2, 2, 2) == GemmEngine::Blas);
  const auto blas = products();
  REQUIRE(blas.size() == eigen.size());
  for (std::size_t i = 0; i < blas.size(); ++i) {
    REQUIRE(blas[i].size() == eigen[i].size());
    double worst = 0, scale = 0;  // the largest difference, relative to the set's largest value
    for (std::size_t j = 0; j < blas[i].size(); ++j) {
      worst = std::max(worst, std::abs(blas[i][j] - eigen[i][j]));
      scale = std::max(scale, std::abs(eigen[i][j]));
    }
    worst /= scale;
    CHECK_MESSAGE(worst < 1e-6, "value set " << i << " differs by " << worst);
    CHECK(worst > 0);  // two engines really ran: their roundings differ somewhere
  }
}

TEST_CASE("auto: the summary names every size class by its limit, with its engine") {
  ChoiceGuard guard;
  set_gemm_choice(GemmChoice::Auto);
  const std::string s = gemm_summary();
  CHECK(s.rfind("gemm: auto by multiply-adds (<2^15 ", 0) == 0);
  for (const char* label : {", <2^18 ", ", <2^21 ", ", <2^24 ", ", >=2^24 "}) CHECK_MESSAGE(s.find(label) != std::string::npos, s);
}

TEST_CASE("auto: the engine table is measured once, cached in a file, and measured again when the file is damaged") {
  const auto dir = test::scratch_dir("gemm_cache");
  const auto file = dir / "gemm.txt";
  const std::string first = kernel::gemm_table_at(file.string());
  CHECK(first.size() > std::string(" (measured)").size());
  CHECK(first.find("(measured)") != std::string::npos);
  const std::string saved = read(file);
  CHECK(saved.rfind("qkv-gemm 1 ", 0) == 0);
  const std::string table = first.substr(0, first.find(" ("));
  CHECK(saved == "qkv-gemm 1 " + table + "\n");
  if (!blas_available()) CHECK(table == "eigen eigen eigen eigen eigen");
  CHECK(kernel::gemm_table_at(file.string()) == table + " (cached)");

  // A hand-written table is used as it is; a damaged qkv cache (it starts with the magic) is measured and
  // written again.
  std::ofstream(file) << "qkv-gemm 1 blas eigen blas eigen blas\n";
  CHECK(kernel::gemm_table_at(file.string()) == "blas eigen blas eigen blas (cached)");
  for (const char* bad : {"qkv-gemm 2 eigen eigen eigen eigen eigen\n", "qkv-gemm 1 eigen eigen\n",
                          "qkv-gemm 1 eigen eigen eigen eigen mkl\n", "qkv-gemm 1 eigen eigen eigen eigen eigen x\n"}) {
    std::ofstream(file) << bad;
    CHECK_MESSAGE(kernel::gemm_table_at(file.string()).find("(measured)") != std::string::npos, bad);
    CHECK(read(file).rfind("qkv-gemm 1 ", 0) == 0);
  }
}

// QKV_GEMM_CACHE=notes.txt replaced the user's file with a table, =/dev/null the device node, and a FIFO there
// hung every command. Without a place to keep the table, each process measured again and 3 of 11 reruns of a
// config trained different weights: the table is then Eigen's, the same every time.
TEST_CASE("auto: the cache never replaces a foreign file, device or FIFO; with no cache the table is fixed") {
  const auto dir = test::scratch_dir("gemm_foreign");
  std::ofstream(dir / "notes.txt") << "my notes\n";
  const std::string eigen_table = "eigen eigen eigen eigen eigen (uncached)";
  CHECK(kernel::gemm_table_at((dir / "notes.txt").string()) == eigen_table);
  CHECK(read(dir / "notes.txt") == "my notes\n");
  std::ofstream(dir / "empty.txt");
  CHECK(kernel::gemm_table_at((dir / "empty.txt").string()) == eigen_table);
  CHECK(read(dir / "empty.txt").empty());
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  CHECK(kernel::gemm_table_at((dir / "fifo").string()) == eigen_table);  // returns: never opened for blocking I/O
  CHECK(std::filesystem::is_fifo(dir / "fifo"));
  CHECK(kernel::gemm_table_at("/dev/null") == eigen_table);
  CHECK(kernel::gemm_table_at("/proc/qkv/no/such/gemm.txt") == eigen_table);  // cannot be written
  CHECK(kernel::gemm_table_at("") == eigen_table);
  std::filesystem::create_symlink(dir / "notes.txt", dir / "link.txt");
  CHECK(kernel::gemm_table_at((dir / "link.txt").string()) == eigen_table);
  CHECK(read(dir / "notes.txt") == "my notes\n");
}

TEST_CASE("auto: the engine is a pure function of the measured timings") {
  CHECK(kernel::faster_engine(1.0, 0.96) == GemmEngine::Blas);
  CHECK(kernel::faster_engine(1.0, 0.97) == GemmEngine::Eigen);  // must win by 3%
  CHECK(kernel::faster_engine(1.0, 2.0) == GemmEngine::Eigen);
  CHECK(kernel::faster_engine(1.0, std::nan("")) == GemmEngine::Eigen);
}
