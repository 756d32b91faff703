// Backward sweeps (Tensor::backward and grad()) and tensor hooks: the half of autograd that runs graphs
// (autograd.cpp records them).
#include "qkv/core/autograd.h"

#include "qkv/core/autograd_detail.h"
#include "qkv/core/ops.h"
#include "qkv/core/precision.h"

#include <atomic>
#include <unordered_map>
#include <unordered_set>

namespace qkv {

using namespace detail;

namespace {

std::atomic<std::uint64_t> g_hook_id{0};

using Hooks = std::vector<std::pair<std::uint64_t, GradHook>>;

// Runs `hooks` in order on g (over a copy of the list, so a hook may remove itself); `whose` names the tensor.
Tensor run_hooks(const Hooks& hooks, Tensor g, const std::string& whose) {
  if (hooks.empty()) return g;
  const Hooks copy = hooks;
  for (const auto& [id, hook] : copy) {
    Tensor r = hook(g);
    if (!r.defined()) continue;
    QKV_CHECK(r.shape() == g.shape() && r.dtype() == g.dtype(),
              "register_hook: a hook on {} returned a gradient of shape {} and dtype {}; expected shape {} and dtype {}",
              whose, r.shape().str(), dtype_name(r.dtype()), g.shape().str(), dtype_name(g.dtype()));
    g = std::move(r);
  }
  return g;
}

void sum_into(Tensor& total, Tensor g) { total = total.defined() ? add(total, g) : std::move(g); }

// What grad() asks for: the gradients flowing into some leaves and some computed tensors (their nodes).
struct Capture {
  std::unordered_map<const TensorImpl*, std::size_t> leaves;  // -> input index
  std::unordered_map<const Node*, std::size_t> nodes;
  std::vector<Tensor> grads;
  std::vector<bool> reached;
  bool leaf_hooks = true;  // false for checkpoint's inner sweep: the outer sweep runs them, once
};

// Leaves whose gradient is summed over the sweep and used once, when the last node feeding them has run: those with
// hooks (a hook sees the whole gradient once, as torch's) and grad()'s inputs. Other leaves add each contribution
// straight into .grad().
class HeldLeaves {
 public:
  HeldLeaves(const std::vector<std::shared_ptr<Node>>& order, Capture* capture) : capture_(capture) {
    // Under grad() only its inputs are held (torch runs no hook of a leaf it was not asked about).
    for (const auto& node : order)
      for (const Edge& e : node->next)
        if (e.leaf && (capture ? capture->leaves.count(e.leaf.get()) > 0 : !e.leaf->hooks.empty()))
          ++held_[e.leaf.get()].pending;
  }
  // Takes g when the leaf is held (or, for grad(), dropped: no .grad() is touched); false when it is not.
  bool take(const std::shared_ptr<TensorImpl>& leaf, Tensor& g) {
    const auto it = held_.find(leaf.get());
    if (it != held_.end()) sum_into(it->second.sum, std::move(g));
    return it != held_.end() || capture_ != nullptr;
  }
  void done(const Node& node) {
    if (held_.empty()) return;
    for (const Edge& e : node.next) {
      if (!e.leaf) continue;
      const auto it = held_.find(e.leaf.get());
      if (it == held_.end() || --it->second.pending > 0 || !it->second.sum.defined()) continue;
      Tensor g = std::move(it->second.sum);
      if (capture_ == nullptr || capture_->leaf_hooks)
        g = run_hooks(e.leaf->hooks, std::move(g), fmt::format("a leaf of shape {}", e.leaf->shape.str()));
      if (capture_ != nullptr) {
        const std::size_t k = capture_->leaves.at(e.leaf.get());
        sum_into(capture_->grads[k], std::move(g));
      } else {
        accumulate_leaf(*e.leaf, std::move(g));
      }
    }
  }

 private:
  struct Held {
    int pending = 0;
    Tensor sum;
  };
  Capture* capture_;
  std::unordered_map<const TensorImpl*, Held> held_;
};

// detect_anomaly: a gradient a node's backward returned holds NaN or infinity.
void check_finite_grads(const Node& node, const Grads& grads) {
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined()) continue;
    const std::int64_t bad = grads[i].count_non_finite();
    if (bad == 0) continue;
    const Edge& e = node.next[i];
    fail("detect_anomaly: the backward of `{}` returned {} NaN or infinite value{} in the gradient for its input {} "
         "(shape {}, {}); the forward op was `{}`",
         node.name, bad, bad == 1 ? "" : "s", i, grads[i].shape().str(),
         e.fn ? fmt::format("computed by `{}`", e.fn->name) : std::string("a leaf"), node.name);
  }
}

// Hands a node's input gradients on: summed into the producing node's pending gradient, or into a leaf's .grad().
void send_grads(const Node& node, Grads& grads, HeldLeaves& held) {
  for (std::size_t i = 0; i < grads.size(); ++i) {
    const Edge& e = node.next[i];
    if (!grads[i].defined()) continue;
    if (e.fn) {
      sum_into(e.fn->grad, std::move(grads[i]));
    } else if (e.leaf && !held.take(e.leaf, grads[i])) {
      accumulate_leaf(*e.leaf, std::move(grads[i]));
    }
  }
}

// Runs one node's backward and hands its gradients on; the seconds it took when profiling (else 0).
double run_node(Node& node, const Tensor& g, HeldLeaves& held) {
  check_saved(node);
  struct InBackward {  // names the node for an allocation that fails in it
    const char* prev_op = detail::g_current_op;
    bool prev_backward = detail::g_in_backward;
    explicit InBackward(const Node& n) { detail::g_current_op = n.name.c_str(), detail::g_in_backward = true; }
    ~InBackward() { detail::g_current_op = prev_op, detail::g_in_backward = prev_backward; }
  } in_backward(node);
  const AutocastGuard precision(static_cast<Precision>(node.precision));  // the forward's
  const auto node_start = g_profiling ? Clock::now() : Clock::time_point();
  Grads grads = node.backward(g);
  double seconds = 0;
  if (g_profiling) {
    seconds = seconds_since(node_start);
    g_profile[node.name].backward_s += seconds;
  }
  check_grads(node, grads);
  if (g_anomaly) check_finite_grads(node, grads);
  send_grads(node, grads, held);
  return seconds;
}

// For LeafGradHook: how many edges from the sweep's nodes still lead into each leaf. A leaf is final when the
// last node feeding it has run (or was skipped for want of a gradient).
class LeafReadiness {
 public:
  explicit LeafReadiness(const std::vector<std::shared_ptr<Node>>& order, bool on) : hook_(on ? g_leaf_hook : nullptr) {
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

void check_runnable(const Node& node) {
  QKV_CHECK(node.failed_in.empty(),
            "backward: an earlier backward through this graph failed (in the backward of `{}`) and left it half "
            "run: compute the forward again",
            node.failed_in);
  QKV_CHECK(!node.released,
            "backward: trying to backward through the graph a second time (through `{}`): its saved values "
            "were freed by the first backward; pass retain_graph = true to the first call",
            node.name);
}

// For grad(): the nodes whose backward must run to reach a captured tensor (the rest of the graph is skipped).
std::unordered_set<const Node*> nodes_needed(const std::vector<std::shared_ptr<Node>>& order, Capture& capture) {
  std::unordered_set<const Node*> needed;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {  // producers before consumers
    const Node& node = **it;
    if (const auto c = capture.nodes.find(&node); c != capture.nodes.end()) capture.reached[c->second] = true;
    for (const Edge& e : node.next) {
      const auto leaf = e.leaf ? capture.leaves.find(e.leaf.get()) : capture.leaves.end();
      if (leaf != capture.leaves.end()) capture.reached[leaf->second] = true;
      if (leaf != capture.leaves.end() || (e.fn && (needed.count(e.fn.get()) || capture.nodes.count(e.fn.get()))))
        needed.insert(&node);
    }
  }
  return needed;
}

// One backward sweep from nodes whose gradients are already set. Without a capture, leaves accumulate into .grad();
// with one, only the captured gradients are kept and only the nodes that lead to them run. A failure marks the
// whole graph, so a retry says so instead of tripping over the nodes the failed sweep freed.
void sweep(const std::vector<std::shared_ptr<Node>>& roots, bool retain_graph, Capture* capture) {
  const auto started = Clock::now();
  double in_nodes = 0;
  const auto order = topo_order(roots);
  std::unordered_set<const Node*> needed;
  if (capture != nullptr) needed = nodes_needed(order, *capture);
  HeldLeaves held(order, capture);
  LeafReadiness leaves(order, capture == nullptr);
  const Node* current = nullptr;
  try {
    for (const auto& node : order) {
      check_runnable(*node);
      Tensor g = std::move(node->grad);
      node->grad = Tensor();
      if (g.defined()) {
        current = node.get();
        g = run_hooks(node->hooks, std::move(g), fmt::format("the output of `{}`", node->name));
        if (const auto kept = node->retain.lock(); kept && capture == nullptr) sum_into(kept->grad, g.clone());
        if (capture != nullptr)
          if (const auto c = capture->nodes.find(node.get()); c != capture->nodes.end()) capture->grads[c->second] = g;
        if (capture == nullptr || needed.count(node.get())) in_nodes += run_node(*node, g, held);
      }
      held.done(*node);
      leaves.done(*node);
      if (g.defined() && !retain_graph) release(*node);
    }
  } catch (...) {
    for (const auto& node : order) {
      node->grad = Tensor();
      if (current != nullptr) node->failed_in = current->name;
    }
    throw;
  }
  if (g_profiling) {
    g_profile["(autograd)"].backward_s += seconds_since(started) - in_nodes;
    g_mark = Clock::now();
  }
}

// The gradient a backward starts from: `given`, or ones for a one-element tensor; checked against t.
Tensor start_grad(const char* who, const Tensor& t, const Tensor& given) {
  Tensor grad = given;
  if (!grad.defined()) {
    QKV_CHECK(t.numel() == 1,
              "{}: grad can be implicitly created only for scalar outputs; got shape {} (pass a gradient of that shape)",
              who, t.shape().str());
    grad = Tensor::ones(t.shape(), t.dtype());
  }
  QKV_CHECK(grad.shape() == t.shape(), "{}: gradient shape {} does not match tensor shape {}", who, grad.shape().str(),
            t.shape().str());
  QKV_CHECK(grad.dtype() == t.dtype(), "{}: gradient dtype {} does not match tensor dtype {}", who,
            dtype_name(grad.dtype()), dtype_name(t.dtype()));
  return grad;
}

}  // namespace

void Tensor::backward(const Tensor& grad_in, bool retain_graph) const {
  QKV_CHECK(defined(), "Tensor::backward: the tensor is undefined");
  QKV_CHECK(requires_grad(), "backward: tensor of shape {} does not require grad and has no grad_fn",
            shape().str());
  Tensor grad = start_grad("backward", *this, grad_in);
  NoGradGuard no_grad;
  if (is_leaf()) {
    grad = run_hooks(impl()->hooks, std::move(grad), fmt::format("a leaf of shape {}", shape().str()));
    accumulate_leaf(*impl(), std::move(grad));
    if (g_leaf_hook != nullptr) (*g_leaf_hook)(*this);
    return;
  }
  if (g_anomaly) QKV_CHECK(grad.count_non_finite() == 0, "detect_anomaly: the gradient backward starts from holds NaN or infinity");
  grad_fn()->grad = grad;
  sweep({grad_fn()}, retain_graph, nullptr);
}

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs, bool retain_graph, bool allow_unused) {
  return detail::grad_impl(outputs, inputs, grad_outputs, retain_graph, allow_unused, /*leaf_hooks=*/true);
}

std::vector<Tensor> detail::grad_impl(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                                      const std::vector<Tensor>& grad_outputs, bool retain_graph, bool allow_unused,
                                      bool leaf_hooks) {
  QKV_CHECK(!outputs.empty(), "grad: no outputs given");
  QKV_CHECK(grad_outputs.empty() || grad_outputs.size() == outputs.size(),
            "grad: {} grad_outputs for {} outputs (give one per output, or none for one-element outputs)",
            grad_outputs.size(), outputs.size());
  Capture capture;
  capture.leaf_hooks = leaf_hooks;
  capture.grads.resize(inputs.size());
  capture.reached.resize(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    QKV_CHECK(inputs[i].defined(), "grad: input {} is an undefined tensor", i);
    QKV_CHECK(inputs[i].requires_grad(), "grad: input {} (shape {}) does not require grad", i, inputs[i].shape().str());
    if (inputs[i].is_leaf()) capture.leaves.emplace(inputs[i].impl(), i);
    else capture.nodes.emplace(inputs[i].grad_fn().get(), i);
  }
  NoGradGuard no_grad;
  std::vector<std::shared_ptr<Node>> roots;
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    QKV_CHECK(outputs[k].defined(), "grad: output {} is an undefined tensor", k);
    QKV_CHECK(outputs[k].requires_grad(), "grad: output {} (shape {}) does not require grad and has no grad_fn", k,
              outputs[k].shape().str());
    Tensor g = start_grad("grad", outputs[k], grad_outputs.empty() ? Tensor() : grad_outputs[k]);
    if (outputs[k].is_leaf()) {  // an output that is itself an input
      if (const auto it = capture.leaves.find(outputs[k].impl()); it != capture.leaves.end()) {
        sum_into(capture.grads[it->second], std::move(g));
        capture.reached[it->second] = true;
      }
      continue;
    }
    sum_into(outputs[k].grad_fn()->grad, std::move(g));
    roots.push_back(outputs[k].grad_fn());
  }
  if (!roots.empty()) sweep(roots, retain_graph, &capture);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    QKV_CHECK(capture.reached[i] || allow_unused,
              "grad: input {} (shape {}) was not used to compute the outputs (pass allow_unused = true to get an "
              "undefined Tensor for it)", i, inputs[i].shape().str());
    if (capture.reached[i] && !capture.grads[i].defined()) capture.grads[i] = Tensor::zeros(inputs[i].shape(), inputs[i].dtype());
  }
  return capture.grads;
}

HookHandle Tensor::register_hook(GradHook hook) const {
  QKV_CHECK(defined(), "Tensor::register_hook: the tensor is undefined");
  QKV_CHECK(requires_grad(), "register_hook: cannot register a hook on a tensor that does not require grad (shape {})",
            shape().str());
  QKV_CHECK(hook != nullptr, "register_hook: the hook is empty");
  const std::uint64_t id = ++g_hook_id;
  const auto remove_from = [id](Hooks& hooks) {
    std::erase_if(hooks, [id](const auto& h) { return h.first == id; });
  };
  if (is_leaf()) {
    impl()->hooks.emplace_back(id, std::move(hook));
    return HookHandle([w = std::weak_ptr<TensorImpl>(impl_ptr()), remove_from] {
      if (const auto impl = w.lock()) remove_from(impl->hooks);
    });
  }
  grad_fn()->hooks.emplace_back(id, std::move(hook));
  return HookHandle([w = std::weak_ptr<Node>(grad_fn()), remove_from] {
    if (const auto node = w.lock()) remove_from(node->hooks);
  });
}

void Tensor::retain_grad() const {
  QKV_CHECK(defined(), "Tensor::retain_grad: the tensor is undefined");
  QKV_CHECK(requires_grad(), "retain_grad: the tensor (shape {}) does not require grad", shape().str());
  if (!is_leaf()) grad_fn()->retain = impl_ptr();
}

}  // namespace qkv
