#include "support.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>

namespace qkv::test {

const nlohmann::json& fixture(const std::string& name) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  const std::string path = std::string(QKV_FIXTURES_DIR) + "/" + name + ".json";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("missing fixture " + path + " (run tools/gen_fixtures.py)");
  return cache.emplace(name, nlohmann::json::parse(in)).first->second;
}

Tensor tensor_from(const nlohmann::json& j, DType dtype) {
  const Shape shape(j.at("shape").get<std::vector<std::int64_t>>());
  if (j.contains("ids")) return Tensor::from(j.at("ids").get<std::vector<std::int64_t>>(), shape);
  std::vector<double> data;
  for (const auto& v : j.at("data")) {  // inf, -inf and nan are strings (JSON has no such numbers)
    if (!v.is_string()) data.push_back(v.get<double>());
    else data.push_back(v == "nan" ? std::nan("") : (v == "inf" ? 1.0 : -1.0) * std::numeric_limits<double>::infinity());
  }
  return Tensor::from(data, shape).to(dtype);
}

std::string compare(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (!a.defined() || !b.defined()) return "undefined tensor";
  if (!(a.shape() == b.shape())) return "shape " + a.shape().str() + " vs " + b.shape().str();
  const auto va = a.to_vector(), vb = b.to_vector();
  for (std::size_t i = 0; i < va.size(); ++i)
    if (!(va[i] == vb[i] || (std::isnan(va[i]) && std::isnan(vb[i])) || std::abs(va[i] - vb[i]) <= atol + rtol * std::abs(vb[i])))
      return fmt::format("element {}: {:.10g} vs {:.10g} (shape {})", i, va[i], vb[i], a.shape().str());
  return "";
}

Tensor leaf(const Shape& shape, std::uint64_t seed) {
  Generator g(seed);
  return Tensor::randn(shape, g, kFloat64).requires_grad_();
}

}  // namespace qkv::test

#include <qkv/core/autograd.h>
#include <qkv/core/gradcheck.h>

namespace qkv::test {

int check_ops_against_torch(const std::map<std::string, OpFn>& ops, const std::string& fixture_name) {
  int ran = 0;
  for (const auto& c : fixture(fixture_name)["cases"]) {
    const std::string name = c["op"];
    const auto it = ops.find(name);
    if (it == ops.end()) continue;
    ++ran;
    const auto& grads = c["grads"];
    for (const DType dtype : {kFloat64, kFloat32}) {
      const double tol = dtype == kFloat64 ? 1e-10 : 1e-5;
      std::vector<Tensor> inputs;
      for (std::size_t i = 0; i < c["inputs"].size(); ++i) {
        Tensor x = tensor_from(c["inputs"][i], dtype);
        if (!grads[i].is_null()) x.requires_grad_();
        inputs.push_back(x);
      }
      INFO("op ", name, " args ", c["args"].dump(), " dtype ", dtype_name(dtype));
      Tensor out = it->second(inputs, c["args"]);
      CHECK_CLOSE(out, tensor_from(c["out"], dtype), tol, tol);
      if (c["cotangent"].is_null()) {  // not differentiable (a mask): values only, and no graph
        CHECK(!out.requires_grad());
        continue;
      }
      out.backward(tensor_from(c["cotangent"], dtype));
      for (std::size_t i = 0; i < inputs.size(); ++i)
        if (!grads[i].is_null()) CHECK_CLOSE(inputs[i].grad(), tensor_from(grads[i], dtype), tol, tol);
      if (dtype == kFloat64) {
        for (auto& x : inputs) x.zero_grad();
        const auto err = gradcheck_error([&](const std::vector<Tensor>& xs) { return it->second(xs, c["args"]); },
                                         inputs);
        CHECK_MESSAGE(err.empty(), err);
      }
    }
  }
  return ran;
}

}  // namespace qkv::test

namespace qkv::test {

void load_params(Module& m, const nlohmann::json& params, DType dtype) {
  const auto named = m.named_parameters();
  CHECK_MESSAGE(named.size() == params.size(), "module has ", named.size(), " parameters, fixture ", params.size());
  for (const auto& name_p : named) {
    const auto& name = name_p.first;
    const auto& p = name_p.second;
    REQUIRE_MESSAGE(params.contains(name), "fixture lacks parameter ", name);
    NoGradGuard g;
    p.copy_(tensor_from(params[name], dtype));
  }
}

int check_layers_against_torch(const std::map<std::string, LayerSpec>& specs) {
  int ran = 0;
  for (const auto& c : fixture("layers")["cases"]) {
    const auto it = specs.find(c["layer"].get<std::string>());
    if (it == specs.end()) continue;
    ++ran;
    const LayerSpec& spec = it->second;
    for (const DType dtype : {kFloat64, kFloat32}) {
      INFO("layer ", c["layer"].get<std::string>(), " options ", c["options"].dump(), " dtype ", dtype_name(dtype));
      const double rtol = dtype == kFloat64 ? 1e-9 : 1e-5, atol = dtype == kFloat64 ? 1e-9 : 1e-5;
      auto m = spec.make(c["options"]);
      m->to(dtype);
      load_params(*m, c["params"], dtype);
      Tensor x = tensor_from(c["input"], dtype);
      const bool float_input = x.dtype() != kInt64;
      if (float_input) x.requires_grad_();
      const Tensor mask = c["mask"].is_null() ? Tensor() : tensor_from(c["mask"], dtype);
      const LayerRun r = spec.run(*m, x, mask);
      CHECK_CLOSE(r.out, tensor_from(c["out"], dtype), rtol, atol);
      if (!c["weights"].is_null()) CHECK_CLOSE(r.weights, tensor_from(c["weights"], dtype), rtol, atol);
      r.out.backward(tensor_from(c["cotangent"], dtype));
      if (float_input) CHECK_CLOSE(x.grad(), tensor_from(c["grad_input"], dtype), rtol, atol);
      for (const auto& name_p : m->named_parameters()) {
        const auto& name = name_p.first;
        const auto& p = name_p.second;
        INFO("gradient of ", name);
        CHECK_CLOSE(p.grad(), tensor_from(c["grads"][name], dtype), rtol, atol);
      }
      if (dtype == kFloat64) {
        m->zero_grad();
        x.zero_grad();
        std::vector<Tensor> inputs = m->parameters();
        if (float_input) inputs.push_back(x);
        const auto err = gradcheck_error([&](const std::vector<Tensor>&) { return spec.run(*m, x, mask).out; }, inputs);
        CHECK_MESSAGE(err.empty(), err);
      }
    }
  }
  return ran;
}

}  // namespace qkv::test

#include <qkv/train/cli/cli.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace qkv::test {

CliOutput run_cli_captured(const std::vector<std::string>& argv, const std::string& scratch_dir) {
  const std::string out = scratch_dir + "/stdout.txt", err = scratch_dir + "/stderr.txt";
  std::vector<const char*> args;
  for (const auto& a : argv) args.push_back(a.c_str());
  std::fflush(stdout);
  std::fflush(stderr);
  const int saved_out = ::dup(1), saved_err = ::dup(2);
  const int fo = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int fe = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ::dup2(fo, 1);
  ::dup2(fe, 2);
  const int code = run_cli(static_cast<int>(args.size()), args.data());
  std::fflush(stdout);
  std::fflush(stderr);
  ::dup2(saved_out, 1);
  ::dup2(saved_err, 2);
  for (int fd : {fo, fe, saved_out, saved_err}) ::close(fd);
  const auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  return {code, read(out), read(err)};
}

}  // namespace qkv::test

namespace qkv::test {

std::filesystem::path process_dir() {
  namespace fs = std::filesystem;
  static const fs::path root = [] {
    const fs::path r = fs::temp_directory_path() / fmt::format("qkv_tests.{}", ::getpid());
    fs::remove_all(r);
    fs::create_directories(r);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(fs::temp_directory_path() / fmt::format("qkv_tests.{}", ::getpid()), ec);
    });
    return r;
  }();
  return root;
}

std::filesystem::path scratch_dir(const std::string& name) {
  const std::filesystem::path dir = process_dir() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string temp_file(const std::string& name) {
  std::filesystem::create_directories(process_dir());
  return (process_dir() / name).string();
}

std::string read_source(const std::string& path) {
  std::ifstream in(std::string(QKV_SOURCE_DIR) + "/" + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace qkv::test
