#include "qkv/core/autograd.h"

#include "qkv/core/precision.h"

#include "qkv/core/autograd_detail.h"

#include "qkv/core/ops.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>

namespace qkv {
namespace detail {
bool g_profiling = false;
Clock::time_point g_mark;
std::map<std::string, OpTime> g_profile;
thread_local const std::function<void(const Tensor&)>* g_leaf_hook = nullptr;
thread_local bool g_anomaly = false;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace detail

using namespace detail;

namespace {
thread_local bool g_grad_mode = true;

void profile_forward(const std::string& name) {
  const auto now = Clock::now();
  OpTime& t = g_profile[name];
  t.forward_s += std::chrono::duration<double>(now - g_mark).count();
  ++t.calls;
  g_mark = now;
}
std::atomic<std::uint64_t> g_epoch{0};

Edge edge_to(const Tensor& t) {
  if (!t.defined()) return {};
  Edge e{nullptr, nullptr, t.shape(), t.dtype()};
  if (t.grad_fn()) e.fn = t.grad_fn();
  else if (t.impl()->requires_grad) e.leaf = t.impl_ptr();
  return e;
}

SavedVersion saved_version(const Tensor& t) {
  QKV_ASSERT(t.defined());
  return {t.impl()->storage, t.version(), t.shape()};
}

void attach(Tensor& out, std::string name, std::vector<Edge> next, BackwardFn fn, std::vector<SavedVersion> saved) {
  if (g_profiling) profile_forward(name);
  auto node = std::make_shared<Node>();
  node->name = std::move(name);
  node->next = std::move(next);
  node->backward = std::move(fn);
  node->saved = std::move(saved);
  node->precision = static_cast<std::uint8_t>(matmul_precision());
  out.impl()->grad_fn = std::move(node);
}

}  // namespace

namespace detail {

// torch's "one of the variables needed for gradient computation has been modified by an inplace operation".
void check_saved(const Node& node) {
  for (std::size_t i = 0; i < node.saved.size(); ++i) {
    const SavedVersion& s = node.saved[i];
    QKV_CHECK(s.storage->version == s.version,
              "backward of `{}`: one of the tensors needed for gradient computation (saved tensor {} of shape {}) "
              "has been modified by an in-place operation: it is at version {}, expected version {}. Clone it "
              "before writing to it, or write before the op uses it",
              node.name, i, s.shape.str(), s.storage->version, s.version);
  }
}

// One gradient per input, each of its input's shape and dtype: a custom op's mistakes named at the op.
void check_grads(const Node& node, const Grads& grads) {
  QKV_CHECK(grads.size() == node.next.size(),
            "backward of `{}` returned {} gradients for {} inputs (expected one per input, an undefined Tensor for "
            "none)",
            node.name, grads.size(), node.next.size());
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined()) continue;
    const Edge& e = node.next[i];
    QKV_CHECK(grads[i].shape() == e.shape && grads[i].dtype() == e.dtype,
              "backward of `{}`: the gradient for input {} has shape {} and dtype {}; expected the input's shape {} "
              "and dtype {}",
              node.name, i, grads[i].shape().str(), dtype_name(grads[i].dtype()), e.shape.str(),
              dtype_name(e.dtype));
  }
}

// Nodes reachable from `root`, ordered so every node comes before the nodes it feeds gradients to (i.e. a
// reverse topological order of the forward graph). Iterative DFS: training graphs are deep.
std::vector<std::shared_ptr<Node>> topo_order(const std::vector<std::shared_ptr<Node>>& roots) {
  const std::uint64_t epoch = ++g_epoch;
  std::vector<std::shared_ptr<Node>> post;  // post-order: inputs before the nodes that consume them
  std::vector<std::pair<std::shared_ptr<Node>, std::size_t>> stack;
  for (const auto& root : roots) {
    if (root->epoch == epoch) continue;
    root->epoch = epoch;
    stack.emplace_back(root, 0);
    while (!stack.empty()) {
      auto& [node, i] = stack.back();
      if (i < node->next.size()) {
        const auto& child = node->next[i++].fn;
        if (child && child->epoch != epoch) {
          child->epoch = epoch;
          stack.emplace_back(child, 0);
        }
        continue;
      }
      post.push_back(std::move(node));
      stack.pop_back();
    }
  }
  return {post.rbegin(), post.rend()};
}

void accumulate_leaf(TensorImpl& leaf, Tensor&& g) {
  QKV_ASSERT(g.shape() == leaf.shape);
  if (leaf.grad.defined()) {
    add_(leaf.grad, g);
    return;
  }
  // .grad must own its storage, since later sweeps add into it in place: keep g only when nothing else can
  // see it (a backward may return the same tensor for several inputs, or pass the incoming gradient through).
  const bool sole_owner = g.impl_ptr().use_count() == 1 && g.impl()->storage.use_count() == 1;
  if (g.dtype() != leaf.dtype) leaf.grad = g.to(leaf.dtype);
  else leaf.grad = sole_owner ? std::move(g) : g.clone();
}

}  // namespace detail

bool grad_mode_enabled() { return g_grad_mode; }
NoGradGuard::NoGradGuard() : prev_(g_grad_mode) { g_grad_mode = false; }
NoGradGuard::~NoGradGuard() { g_grad_mode = prev_; }
EnableGradGuard::EnableGradGuard() : prev_(g_grad_mode) { g_grad_mode = true; }
EnableGradGuard::~EnableGradGuard() { g_grad_mode = prev_; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_mode) return false;
  for (const Tensor* t : inputs)
    if (t->requires_grad()) return true;
  return false;
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_mode) return false;
  for (const Tensor& t : inputs)
    if (t.requires_grad()) return true;
  return false;
}

void record(Tensor& out, std::string name, std::initializer_list<const Tensor*> inputs, BackwardFn fn,
            std::initializer_list<const Tensor*> saved) {
  std::vector<Edge> next;
  next.reserve(inputs.size());
  for (const Tensor* t : inputs) next.push_back(edge_to(*t));
  std::vector<SavedVersion> versions;
  versions.reserve(saved.size());
  for (const Tensor* t : saved) versions.push_back(saved_version(*t));
  attach(out, std::move(name), std::move(next), std::move(fn), std::move(versions));
}

void record(Tensor& out, std::string name, const std::vector<Tensor>& inputs, BackwardFn fn,
            const std::vector<Tensor>& saved) {
  std::vector<Edge> next;
  next.reserve(inputs.size());
  for (const Tensor& t : inputs) next.push_back(edge_to(t));
  std::vector<SavedVersion> versions;
  versions.reserve(saved.size());
  for (const Tensor& t : saved) versions.push_back(saved_version(t));
  attach(out, std::move(name), std::move(next), std::move(fn), std::move(versions));
}

void record(Tensor& out, std::string name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& saved,
            SavedBackwardFn backward) {
  QKV_CHECK(out.defined(), "record `{}`: the output tensor is undefined", name);
  QKV_CHECK(backward != nullptr, "record `{}`: the backward function is empty", name);
  for (std::size_t i = 0; i < inputs.size(); ++i)
    QKV_CHECK(inputs[i].defined(), "record `{}`: input {} is undefined", name, i);
  std::vector<Tensor> kept;
  kept.reserve(saved.size());
  for (std::size_t i = 0; i < saved.size(); ++i) {
    QKV_CHECK(saved[i].defined(), "record `{}`: saved tensor {} is undefined", name, i);
    kept.push_back(saved[i].detach());
  }
  BackwardFn fn = [kept, backward = std::move(backward)](const Tensor& g) { return backward(g, kept); };
  record(out, std::move(name), inputs, std::move(fn), kept);
}

LeafGradHook::LeafGradHook(std::function<void(const Tensor& leaf)> on_ready)
    : on_ready_(std::move(on_ready)), prev_(g_leaf_hook) {
  g_leaf_hook = &on_ready_;
}

LeafGradHook::~LeafGradHook() { g_leaf_hook = prev_; }

DetectAnomalyGuard::DetectAnomalyGuard() : prev_(g_anomaly) { g_anomaly = true; }
DetectAnomalyGuard::~DetectAnomalyGuard() { g_anomaly = prev_; }
bool anomaly_detection_enabled() { return g_anomaly; }

void set_op_profiling(bool on) {
  g_profiling = on;
  g_mark = Clock::now();
}

void profile_mark() { g_mark = Clock::now(); }

std::vector<OpTime> op_profile() {
  std::vector<OpTime> out;
  for (const auto& [name, t] : g_profile) {
    out.push_back(t);
    out.back().name = name;
  }
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) {
    return a.forward_s + a.backward_s > b.forward_s + b.backward_s;
  });
  return out;
}

void reset_op_profile() { g_profile.clear(); }

}  // namespace qkv
