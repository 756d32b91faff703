#include "qkv/core/autograd.h"

#include "qkv/core/ops.h"

#include <atomic>

namespace qkv {
namespace {
thread_local bool g_grad_mode = true;
std::atomic<std::uint64_t> g_epoch{0};

Edge edge_to(const Tensor& t) {
  if (!t.defined()) return {};
  if (t.grad_fn()) return {t.grad_fn(), nullptr};
  if (t.impl()->requires_grad) return {nullptr, t.impl_ptr()};
  return {};
}

void attach(Tensor& out, const char* name, std::vector<Edge> next, BackwardFn fn) {
  auto node = std::make_shared<Node>();
  node->name = name;
  node->next = std::move(next);
  node->backward = std::move(fn);
  out.impl()->grad_fn = std::move(node);
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

void record(Tensor& out, const char* name, std::initializer_list<const Tensor*> inputs, BackwardFn fn) {
  std::vector<Edge> next;
  next.reserve(inputs.size());
  for (const Tensor* t : inputs) next.push_back(edge_to(*t));
  attach(out, name, std::move(next), std::move(fn));
}

void record(Tensor& out, const char* name, const std::vector<Tensor>& inputs, BackwardFn fn) {
  std::vector<Edge> next;
  next.reserve(inputs.size());
  for (const Tensor& t : inputs) next.push_back(edge_to(t));
  attach(out, name, std::move(next), std::move(fn));
}

void Tensor::backward(const Tensor& grad_in, bool retain_graph) const {
  QKV_CHECK(defined(), "Tensor::backward: the tensor is undefined");
  QKV_CHECK(defined(), "backward: tensor is undefined");
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
    return;
  }
  const auto order = topo_order(grad_fn());
  grad_fn()->grad = grad;
  for (const auto& node : order) {
    QKV_CHECK(!node->released,
              "backward: trying to backward through the graph a second time (through `{}`): its saved values "
              "were freed by the first backward; pass retain_graph = true to the first call",
              node->name);
    Tensor g = std::move(node->grad);
    node->grad = Tensor();
    if (!g.defined()) continue;
    Grads grads = node->backward(g);
    QKV_ASSERT(grads.size() == node->next.size());
    for (std::size_t i = 0; i < grads.size(); ++i) {
      const Edge& e = node->next[i];
      if (!grads[i].defined()) continue;
      if (e.fn) {
        e.fn->grad = e.fn->grad.defined() ? add(e.fn->grad, grads[i]) : std::move(grads[i]);
      } else if (e.leaf) {
        accumulate_leaf(*e.leaf, std::move(grads[i]));
      }
    }
    if (!retain_graph) {
      node->backward = nullptr;  // frees the saved tensors
      node->next.clear();
      node->released = true;
    }
  }
}

}  // namespace qkv
