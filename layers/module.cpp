#include "qkv/layers/module.h"

#include <qkv/core/errors.h>

#include <set>

#include <fmt/format.h>

namespace qkv {

Tensor Module::forward(const Tensor&) { fail("{}: this module does not take a single tensor input", name()); }

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  QKV_CHECK(!name.empty() && name.find('.') == std::string::npos,
            "register_parameter: name '{}' must be non-empty and contain no '.'", name);
  for (const auto& [n, p] : params_) QKV_CHECK(n != name, "register_parameter: '{}' is already registered", name);
  t.requires_grad_(true);
  params_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  QKV_CHECK(m != nullptr, "register_module: module '{}' is null", name);
  QKV_CHECK(!name.empty() && name.find('.') == std::string::npos,
            "register_module: name '{}' must be non-empty and contain no '.'", name);
  for (const auto& [n, c] : children_) QKV_CHECK(n != name, "register_module: '{}' is already registered", name);
  children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [n, p] : params_) out.emplace_back(prefix + n, p);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> all, out;
  collect("", all);
  std::set<const TensorImpl*> seen;  // a module (or tensor) registered twice: once, under its first name, as torch
  for (auto& np : all)
    if (seen.insert(np.second.impl()).second) out.push_back(std::move(np));
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, p] : named_parameters()) out.push_back(p);
  return out;
}

Tensor Module::parameter(const std::string& dotted_name) const {
  for (auto& [n, p] : named_parameters())
    if (n == dotted_name) return p;
  fail("{}: no parameter named '{}'", name(), dotted_name);
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::to(DType dtype) {
  QKV_CHECK(is_floating(dtype), "{}.to: parameters must be floating point (float32 or float64), got {}", name(),
            dtype_name(dtype));
  for (auto& [n, p] : named_parameters()) {
    if (p.dtype() == dtype) continue;
    const Tensor converted = p.detach().to(dtype);
    p.impl()->storage = converted.impl()->storage;
    p.impl()->dtype = dtype;
    p.zero_grad();
  }
}

void Module::zero_grad() {
  for (auto& p : parameters()) p.zero_grad();
}

std::int64_t Module::num_parameters() const {
  std::int64_t n = 0;
  for (auto& p : parameters()) n += p.numel();
  return n;
}

std::string Module::summary() const {
  const auto params = named_parameters();
  std::size_t width = 9;
  for (auto& [n, p] : params) width = std::max(width, n.size());
  std::string out = fmt::format("{}\n{:<{}}  {:<16}  {:>10}\n", name(), "parameter", width, "shape", "count");
  for (auto& [n, p] : params) out += fmt::format("{:<{}}  {:<16}  {:>10}\n", n, width, p.shape().str(), p.numel());
  out += fmt::format("{:<{}}  {:<16}  {:>10}\n", "total", width, "", num_parameters());
  return out;
}

Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules) {
  for (auto& m : modules) push_back(std::move(m));
}

void Sequential::push_back(std::shared_ptr<Module> m) { register_module(std::to_string(size()), std::move(m)); }

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& [n, c] : named_children()) h = c->forward(h);
  return h;
}

}  // namespace qkv
