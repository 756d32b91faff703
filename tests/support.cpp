#include "support.h"

#include <cmath>
#include <fstream>
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
  return Tensor::from(j.at("data").get<std::vector<double>>(), shape).to(dtype);
}

std::string compare(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (!a.defined() || !b.defined()) return "undefined tensor";
  if (!(a.shape() == b.shape())) return "shape " + a.shape().str() + " vs " + b.shape().str();
  const auto va = a.to_vector(), vb = b.to_vector();
  for (std::size_t i = 0; i < va.size(); ++i)
    if (!(std::abs(va[i] - vb[i]) <= atol + rtol * std::abs(vb[i])))
      return fmt::format("element {}: {:.10g} vs {:.10g} (shape {})", i, va[i], vb[i], a.shape().str());
  return "";
}

Tensor leaf(const Shape& shape, std::uint64_t seed) {
  Generator g(seed);
  return Tensor::randn(shape, g, kFloat64).requires_grad_();
}

}  // namespace qkv::test

#include <qkv/core/gradcheck.h>

namespace qkv::test {

int check_ops_against_torch(const std::map<std::string, OpFn>& ops) {
  int ran = 0;
  for (const auto& c : fixture("ops")["cases"]) {
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
