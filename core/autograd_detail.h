#pragma once
// Internal (not installed): what the two halves of autograd share. autograd.cpp records graphs, orders them and
// profiles ops; backward.cpp runs backward sweeps, grad() and tensor hooks.
#include "qkv/core/autograd.h"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace qkv::detail {

using Clock = std::chrono::steady_clock;
extern bool g_profiling;                        // set_op_profiling
extern Clock::time_point g_mark;                // the start of the current forward interval
extern std::map<std::string, OpTime> g_profile;  // sums by op name
double seconds_since(Clock::time_point t);

extern thread_local const std::function<void(const Tensor&)>* g_leaf_hook;  // LeafGradHook's, or null
extern thread_local bool g_anomaly;                                        // DetectAnomalyGuard

/// Throws naming the op when a tensor the node saved was written in place since.
void check_saved(const Node& node);
/// One gradient per input, each of its input's shape and dtype; throws naming the op.
void check_grads(const Node& node, const Grads& grads);
/// Nodes reachable from `roots`, every node before the nodes it feeds gradients to.
std::vector<std::shared_ptr<Node>> topo_order(const std::vector<std::shared_ptr<Node>>& roots);
/// grad(), optionally without running the leaves' tensor hooks (checkpoint's recompute: the outer sweep runs them).
std::vector<Tensor> grad_impl(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                              const std::vector<Tensor>& grad_outputs, bool retain_graph, bool allow_unused,
                              bool leaf_hooks);
/// Adds g into a leaf's .grad() (taking g's storage when nothing else can see it).
void accumulate_leaf(TensorImpl& leaf, Tensor&& g);

}  // namespace qkv::detail
