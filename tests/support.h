#pragma once
// Test helpers: PyTorch fixtures (JSON written by tools/gen_fixtures.py), tensor comparison, error matching.
#include <qkv/core/ops.h>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <string>

namespace qkv::test {

/// The parsed fixture file tests/fixtures/<name>.json.
const nlohmann::json& fixture(const std::string& name);
/// A fixture tensor {"shape": [...], "data": [...]} (or {"shape", "ids"} for int64) as `dtype`.
Tensor tensor_from(const nlohmann::json& j, DType dtype = kFloat64);
/// Empty when a and b have equal shapes and |a - b| <= atol + rtol |b| everywhere (equal infinities and two NaNs
/// agree); else where they differ.
std::string compare(const Tensor& a, const Tensor& b, double rtol, double atol);
/// A float64 leaf of `shape` with values drawn from N(0,1) by a generator seeded with `seed`.
Tensor leaf(const Shape& shape, std::uint64_t seed);
/// The message of the qkv::Error thrown by f, or "" when none is thrown.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const qkv::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace qkv::test

#define CHECK_CLOSE(a, b, rtol, atol) CHECK_MESSAGE(::qkv::test::compare((a), (b), (rtol), (atol)) == "", ::qkv::test::compare((a), (b), (rtol), (atol)))
/// The call throws qkv::Error whose message contains `text`.
#define CHECK_ERROR(expr, text)                                       \
  do {                                                                \
    const std::string msg_ = ::qkv::test::error_of([&] { (void)(expr); }); \
    CHECK_MESSAGE(msg_.find(text) != std::string::npos, "message: '" << msg_ << "' lacks '" << (text) << "'"); \
  } while (0)

#include <functional>
#include <map>

namespace qkv::test {

/// Runs one fixture op on its inputs (float64 or float32 versions of the fixture's tensors) with its args.
using OpFn = std::function<Tensor(const std::vector<Tensor>&, const nlohmann::json& args)>;

/// For every case in fixtures/<fixture_name>.json whose op is in `ops`: compares output and gradients with
/// PyTorch in float64 (1e-10) and float32 (1e-5), and gradchecks the float64 version (values only for the cases
/// torch could not differentiate: comparisons, all, any). Returns how many cases ran.
int check_ops_against_torch(const std::map<std::string, OpFn>& ops, const std::string& fixture_name = "ops");

}  // namespace qkv::test

#include <qkv/layers/module.h>

namespace qkv::test {

/// What a layer call returns: its output and, for attention, its weights.
struct LayerRun {
  Tensor out, weights;
};
/// How to build one fixture layer kind from its options, and how to call it.
struct LayerSpec {
  std::function<std::shared_ptr<Module>(const nlohmann::json& options)> make;
  std::function<LayerRun(Module& m, const Tensor& x, const Tensor& mask)> run;
};

/// Copies every fixture parameter into the module by name; fails the test on any missing or extra name.
void load_params(Module& m, const nlohmann::json& params, DType dtype);

/// For every case in fixtures/layers.json whose layer is in `specs`: loads torch's weights by name, compares
/// output, attention weights and every gradient in float64 (1e-9) and float32 (1e-5 relative), and gradchecks
/// input and parameters in float64. Returns how many cases ran.
int check_layers_against_torch(const std::map<std::string, LayerSpec>& specs);

}  // namespace qkv::test

namespace qkv::test {

/// What a CLI run printed, and its exit code.
struct CliOutput {
  int code;
  std::string out, err;
};
/// Runs qkv::run_cli(argv) with the process's stdout and stderr (the file descriptors, so fmt, spdlog and
/// iostreams all land there) captured through files in `scratch_dir`.
CliOutput run_cli_captured(const std::vector<std::string>& argv, const std::string& scratch_dir);

}  // namespace qkv::test

#include <filesystem>

namespace qkv::test {

/// This test process's own folder (under $TMPDIR, named after its pid), so tests run side by side, or after a
/// crashed run, never share files; removed at exit.
std::filesystem::path process_dir();
/// A fresh, empty folder `name` in process_dir().
std::filesystem::path scratch_dir(const std::string& name);
/// The path of a file `name` in process_dir() (created), for a test's own output files.
std::string temp_file(const std::string& name);
/// The text of a file of qkv's source tree (`path` relative to it), or "" when it cannot be read.
std::string read_source(const std::string& path);

}  // namespace qkv::test
