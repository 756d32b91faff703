#include "qkv/core/autograd.h"

#include "qkv/core/ops.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <unordered_map>

namespace qkv {
namespace {
thread_local bool g_grad_mode = true;

// ---- op profile (set_op_profiling) ----
using Clock = std::chrono::steady_clock;
bool g_profiling = false;
Clock::time_point g_mark;
std::map<std::string, OpTime> g_profile;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

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
  out.impl()->grad_fn = std::move(node);
}

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
std::vector<std::shared_ptr<Node>> topo_order(const std::shared_ptr<Node>& root) {
  const std::uint64_t epoch = ++g_epoch;
  std::vector<std::shared_ptr<Node>> post;  // post-order: inputs before the nodes that consume them
  std::vector<std::pair<std::shared_ptr<Node>, std::size_t>> stack;
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

}  // namespace

bool grad_mode_enabled() { return g_grad_mode; }
NoGradGuard::NoGradGuard() : prev_(g_grad_mode) { g_grad_mode = false; }
NoGradGuard::~NoGradGuard() { g_grad_mode = prev_; }

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

namespace {

// Hands a node's input gradients on: summed into the producing node's pending gradient, or into a leaf's .grad().
void send_grads(const Node& node, Grads& grads) {
  for (std::size_t i = 0; i < grads.size(); ++i) {
    const Edge& e = node.next[i];
    if (!grads[i].defined()) continue;
    if (e.fn) {
      e.fn->grad = e.fn->grad.defined() ? add(e.fn->grad, grads[i]) : std::move(grads[i]);
    } else if (e.leaf) {
      accumulate_leaf(*e.leaf, std::move(grads[i]));
    }
  }
}

// Runs one node's backward and hands its gradients on; the seconds it took when profiling (else 0).
double run_node(Node& node, const Tensor& g) {
  check_saved(node);
  const auto node_start = g_profiling ? Clock::now() : Clock::time_point();
  Grads grads = node.backward(g);
  double seconds = 0;
  if (g_profiling) {
    seconds = seconds_since(node_start);
    g_profile[node.name].backward_s += seconds;
  }
  check_grads(node, grads);
  send_grads(node, grads);
  return seconds;
}

thread_local const std::function<void(const Tensor&)>* g_leaf_hook = nullptr;

// For LeafGradHook: how many edges from the sweep's nodes still lead into each leaf. A leaf is final when the
// last node feeding it has run (or was skipped for want of a gradient).
class LeafReadiness {
 public:
  explicit LeafReadiness(const std::vector<std::shared_ptr<Node>>& order) : hook_(g_leaf_hook) {
    if (hook_ == nullptr) return;
    for (const auto& node : order)
      for (const Edge& e : node->next)
        if (e.leaf) ++pending_[e.leaf.get()];
  }
  void done(const Node& node) {
    if (hook_ == nullptr) return;
    for (const Edge& e : node.next)
      if (e.leaf && --pending_[e.leaf.get()] == 0) (*hook_)(Tensor(e.leaf));
  }

 private:
  const std::function<void(const Tensor&)>* hook_;
  std::unordered_map<const TensorImpl*, int> pending_;
};

void release(Node& node) {
  node.backward = nullptr;  // frees the saved tensors
  node.next.clear();
  node.saved.clear();
  node.released = true;
}

}  // namespace

LeafGradHook::LeafGradHook(std::function<void(const Tensor& leaf)> on_ready)
    : on_ready_(std::move(on_ready)), prev_(g_leaf_hook) {
  g_leaf_hook = &on_ready_;
}

LeafGradHook::~LeafGradHook() { g_leaf_hook = prev_; }

void Tensor::backward(const Tensor& grad_in, bool retain_graph) const {
  QKV_CHECK(defined(), "Tensor::backward: the tensor is undefined");
  QKV_CHECK(requires_grad(), "backward: tensor of shape {} does not require grad and has no grad_fn",
            shape().str());
  Tensor grad = grad_in;
  if (!grad.defined()) {
    QKV_CHECK(numel() == 1,
              "backward: grad can be implicitly created only for scalar outputs; got shape {} (pass a gradient "
              "of that shape)",
              shape().str());
    grad = Tensor::ones(shape(), dtype());
  }
  QKV_CHECK(grad.shape() == shape(), "backward: gradient shape {} does not match tensor shape {}",
            grad.shape().str(), shape().str());
  QKV_CHECK(grad.dtype() == dtype(), "backward: gradient dtype {} does not match tensor dtype {}",
            dtype_name(grad.dtype()), dtype_name(dtype()));
  NoGradGuard no_grad;
  if (is_leaf()) {
    accumulate_leaf(*impl(), std::move(grad));
    if (g_leaf_hook != nullptr) (*g_leaf_hook)(*this);
    return;
  }
  const auto started = Clock::now();
  double in_nodes = 0;
  const auto order = topo_order(grad_fn());
  LeafReadiness leaves(order);
  grad_fn()->grad = grad;
  for (const auto& node : order) {
    QKV_CHECK(!node->released,
              "backward: trying to backward through the graph a second time (through `{}`): its saved values "
              "were freed by the first backward; pass retain_graph = true to the first call",
              node->name);
    Tensor g = std::move(node->grad);
    node->grad = Tensor();
    if (g.defined()) in_nodes += run_node(*node, g);
    leaves.done(*node);
    if (g.defined() && !retain_graph) release(*node);
  }
  if (g_profiling) {
    g_profile["(autograd)"].backward_s += seconds_since(started) - in_nodes;
    g_mark = Clock::now();
  }
}

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
