#include "qkv/layers/module.h"

#include <qkv/core/errors.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <typeinfo>

#include <fmt/format.h>

namespace qkv {

Tensor Module::forward(const Tensor&) { fail("{}: this module does not take a single tensor input", name()); }

void Module::check_new_name(const char* who, const std::string& name) const {
  QKV_CHECK(!name.empty() && name.find('.') == std::string::npos, "{}: name '{}' must be non-empty and contain no '.'",
            who, name);
  for (const auto* list : {&params_, &buffers_})
    for (const auto& [n, p] : *list) QKV_CHECK(n != name, "{}: '{}' is already registered", who, name);
  for (const auto& [n, c] : children_) QKV_CHECK(n != name, "{}: '{}' is already registered", who, name);
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  check_new_name("register_parameter", name);
  t.requires_grad_(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_new_name("register_buffer", name);
  QKV_CHECK(t.defined(), "register_buffer: buffer '{}' is an undefined tensor", name);
  t.requires_grad_(false);
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  QKV_CHECK(m != nullptr, "register_module: module '{}' is null", name);
  check_new_name("register_module", name);
  children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, Collect what, std::vector<std::pair<std::string, Tensor>>& out) const {
  if (what != Collect::Buffers)
    for (const auto& [n, p] : params_) out.emplace_back(prefix + n, p);
  if (what != Collect::Parameters)
    for (const auto& [n, b] : buffers_) out.emplace_back(prefix + n, b);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", what, out);
}

std::vector<std::pair<std::string, Tensor>> Module::collect_unique(Collect what) const {
  std::vector<std::pair<std::string, Tensor>> all, out;
  collect("", what, all);
  std::set<const TensorImpl*> seen;  // a module (or tensor) registered twice: once, under its first name, as torch
  for (auto& np : all)
    if (seen.insert(np.second.impl()).second) out.push_back(std::move(np));
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const { return collect_unique(Collect::Parameters); }
std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const { return collect_unique(Collect::Buffers); }
std::vector<std::pair<std::string, Tensor>> Module::state_dict() const { return collect_unique(Collect::State); }

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
  for (auto& [n, p] : state_dict()) {
    if (p.dtype() == dtype || !is_floating(p.dtype())) continue;
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

namespace {
std::atomic<std::uint64_t> g_next_hook{0};
thread_local std::vector<const Module*> t_in_hooks;  // Module::InHooks: a stack, innermost last

template <class List>
HookHandle remover(const std::shared_ptr<void>& owner, List* list, std::uint64_t id) {
  return HookHandle([w = std::weak_ptr<void>(owner), list, id] {
    if (const auto alive = w.lock()) std::erase_if(*list, [id](const auto& h) { return h.first == id; });
  });
}
}  // namespace

HookHandle Module::register_forward_pre_hook(ForwardPreHook hook) {
  QKV_CHECK(hook != nullptr, "{}.register_forward_pre_hook: the hook is empty", name());
  if (!hooks_) hooks_ = std::make_shared<Hooks>();
  const std::uint64_t id = ++g_next_hook;
  hooks_->pre.emplace_back(id, std::move(hook));
  return remover(hooks_, &hooks_->pre, id);
}

HookHandle Module::register_forward_hook(ForwardHook hook) {
  QKV_CHECK(hook != nullptr, "{}.register_forward_hook: the hook is empty", name());
  if (!hooks_) hooks_ = std::make_shared<Hooks>();
  const std::uint64_t id = ++g_next_hook;
  hooks_->post.emplace_back(id, std::move(hook));
  return remover(hooks_, &hooks_->post, id);
}

void Module::set_extra_state(const std::string& state) {
  QKV_CHECK(state.empty(), "{}.set_extra_state: this module keeps no extra state, got '{}'", name(), state);
}

Module::InHooks::InHooks(const Module* m) { t_in_hooks.push_back(m); }
Module::InHooks::~InHooks() { t_in_hooks.pop_back(); }
bool Module::InHooks::on(const Module* m) { return std::find(t_in_hooks.begin(), t_in_hooks.end(), m) != t_in_hooks.end(); }

Tensor Module::run_pre_hooks(const Tensor& x) {
  Tensor in = x;
  const auto list = hooks_->pre;  // a copy: a hook may remove itself
  for (const auto& [id, hook] : list)
    if (Tensor r = hook(*this, in); r.defined()) in = std::move(r);
  return in;
}

Tensor Module::run_forward_hooks(const Tensor& x, const Tensor& out) {
  Tensor result = out;
  const auto list = hooks_->post;
  for (const auto& [id, hook] : list)
    if (Tensor r = hook(*this, x, result); r.defined()) result = std::move(r);
  return result;
}

namespace {
// Makes `to` hold a copy of `from`'s values and dtype, keeping the handle (and so every layer's reference to it).
void assign_copy(Tensor to, const Tensor& from) {
  const Tensor copy = from.detach().clone();
  to.impl()->storage = copy.impl()->storage;
  to.impl()->dtype = copy.dtype();
  to.zero_grad();
}
}  // namespace

std::shared_ptr<Module> Module::fresh() const {
  fail("{}: clone() needs fresh() (a new {} of the same structure): override it in the module's class", name(), name());
}

std::shared_ptr<Module> Module::clone() const {
  std::shared_ptr<Module> copy = fresh();
  QKV_CHECK(copy != nullptr && typeid(*copy) == typeid(*this), "{}: clone: fresh() returned {}", name(),
            copy == nullptr ? std::string("null") : "a " + copy->name());
  const auto from = state_dict(), to = copy->state_dict();
  QKV_CHECK(from.size() == to.size(), "{}: clone: fresh() built {} parameters and buffers where this one has {}", name(),
            to.size(), from.size());
  for (std::size_t i = 0; i < from.size(); ++i) {
    QKV_CHECK(from[i].first == to[i].first && from[i].second.shape() == to[i].second.shape(),
              "{}: clone: fresh() built '{}' {} where this one has '{}' {}", name(), to[i].first,
              to[i].second.shape().str(), from[i].first, from[i].second.shape().str());
    assign_copy(to[i].second, from[i].second);
  }
  copy->copy_modes(*this);
  return copy;
}

void Module::copy_modes(const Module& from) {
  training_ = from.training_;
  for (std::size_t i = 0; i < children_.size() && i < from.children_.size(); ++i)
    children_[i].second->copy_modes(*from.children_[i].second);
}

std::shared_ptr<Module> Sequential::fresh() const {
  auto out = std::make_shared<Sequential>();
  for (const auto& [n, c] : named_children()) out->push_back(c->clone());
  return out;
}

Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules) {
  for (auto& m : modules) push_back(std::move(m));
}

void Sequential::push_back(std::shared_ptr<Module> m) { register_module(std::to_string(size()), std::move(m)); }

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& [n, c] : named_children()) h = (*c)(h);
  return h;
}

}  // namespace qkv
