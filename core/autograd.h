#pragma once
// Reverse-mode autograd: every recorded op leaves a Node on its output. A Node holds its inputs' nodes (or, for
// leaves, the leaf itself) and a backward closure mapping d(output) to d(inputs). Nodes never point at their own
// output, so the graph is a DAG of shared_ptrs with no cycles and frees itself.
#include "qkv/core/tensor.h"

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace qkv {

class Generator;

/// One gradient per input, in input order; an undefined Tensor means "no gradient".
using Grads = std::vector<Tensor>;
using BackwardFn = std::function<Grads(const Tensor& grad_out)>;
/// The backward of a custom op: also receives the tensors it saved, detached, in the order they were given.
using SavedBackwardFn = std::function<Grads(const Tensor& grad_out, const std::vector<Tensor>& saved)>;

/// Where a gradient goes: an earlier node, or a leaf that accumulates into .grad(). The input's shape and dtype
/// are kept so backward can check the gradient it is handed.
struct Edge {
  std::shared_ptr<Node> fn;
  std::shared_ptr<TensorImpl> leaf;
  Shape shape;
  DType dtype = kFloat32;
};

/// A tensor kept for backward: its storage and the version that storage had when it was saved.
struct SavedVersion {
  std::shared_ptr<Storage> storage;
  std::uint64_t version = 0;
  Shape shape;
};

struct Node {
  std::string name;
  std::vector<Edge> next;
  BackwardFn backward;
  std::vector<SavedVersion> saved;  // checked before backward runs
  std::vector<std::pair<std::uint64_t, GradHook>> hooks;  // on the output's gradient (Tensor::register_hook)
  std::weak_ptr<TensorImpl> retain;                       // the output, when it retains its gradient
  std::string failed_in;  // set on every node of a graph whose backward threw: the op whose backward threw
  std::uint8_t precision = 0;  // the forward's matmul_precision() (core/precision.h), which its backward runs at
  // State of one backward sweep.
  Tensor grad;
  std::uint64_t epoch = 0;
  bool released = false;
};

/// True when gradients are being recorded on this thread (false inside a NoGradGuard).
bool grad_mode_enabled();

/// While alive, ops record no graph (like torch.no_grad()).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// While alive, ops record a graph again inside a NoGradGuard (torch.enable_grad()).
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

/// True when grad mode is on and any input requires grad: the op should then call record().
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

/// Attaches a node named `name` to `out`, with `fn` returning one gradient per input. The tensors `fn` keeps
/// for later (captured as x.detach()) are listed in `saved`: if one of them is written in place before backward
/// runs (fill_, copy_, an optimizer step...), backward throws a qkv::Error naming the op instead of computing a
/// wrong gradient. This is how the library's own ops record themselves.
void record(Tensor& out, std::string name, std::initializer_list<const Tensor*> inputs, BackwardFn fn,
            std::initializer_list<const Tensor*> saved = {});
void record(Tensor& out, std::string name, const std::vector<Tensor>& inputs, BackwardFn fn,
            const std::vector<Tensor>& saved = {});

/// Custom ops (like torch::autograd::Function): compute `out` from `inputs` (under a NoGradGuard, or from
/// detached inputs), then call this when any_requires_grad(inputs). `saved` are detached, version-checked and
/// handed to `backward` with the gradient of `out`; backward returns one gradient per input, of that input's
/// shape and dtype (undefined for "none"), and any mistake throws a qkv::Error naming `name`.
/// Keep tensors for backward only through `saved`: a lambda that captures `out` itself makes a cycle
/// (out -> node -> lambda -> out) that is never freed.
void record(Tensor& out, std::string name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& saved,
            SavedBackwardFn backward);

/// While alive, `on_ready(leaf)` runs during this thread's backward sweeps each time a leaf's .grad() is final
/// for the sweep: every node that feeds the leaf has run (PyTorch's post-accumulate-grad hook, for all leaves at
/// once). Leaves are reported in the order backward finishes them, which is what lets data parallelism start
/// summing early gradients across ranks while backward still computes later ones. One hook per thread; a nested
/// one replaces the outer until it ends. Costs nothing when none is installed.
class LeafGradHook {
 public:
  explicit LeafGradHook(std::function<void(const Tensor& leaf)> on_ready);
  ~LeafGradHook();
  LeafGradHook(const LeafGradHook&) = delete;
  LeafGradHook& operator=(const LeafGradHook&) = delete;

 private:
  std::function<void(const Tensor&)> on_ready_;
  const std::function<void(const Tensor&)>* prev_;
};

/// Gradients of `outputs` with respect to `inputs`, without touching any .grad() (torch.autograd.grad): one per
/// input, in order. `grad_outputs` gives each output's gradient (empty: ones, for one-element outputs). Inputs may
/// be leaves or computed tensors (the gradient flowing into that tensor, after its hooks). Only the part of the
/// graph between them runs; the graph is freed unless `retain_graph`. An input the outputs do not depend on is an
/// error unless `allow_unused` (then its gradient is an undefined Tensor). The result records no graph (torch's
/// create_graph = false: no gradients of gradients).
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs = {}, bool retain_graph = false,
                         bool allow_unused = false);

/// Activation checkpointing (torch.utils.checkpoint, use_reentrant = False's results): y = f(x), computed without
/// recording a graph, so of f's activations only x is kept. The backward runs f on x again with a graph and
/// backpropagates through it as part of the outer sweep: `params` (the leaves f uses that need gradients) and x get
/// exactly the gradients a plain backward gives, so grad(), retain_grad, tensor hooks, LeafGradHook and anomaly
/// mode behave as without checkpoint. `rngs` (the generators f draws from, such as a model's dropout
/// stream) are set back to their state at the forward for the recompute, so it draws the same masks, then
/// restored. f must compute the same values from the same inputs (no other state). Outside grad mode, or when
/// neither x nor a parameter needs a gradient, this is f(x). Forward hooks in f run again in the recompute.
Tensor checkpoint(const std::function<Tensor(const Tensor&)>& f, const Tensor& x, const std::vector<Tensor>& params,
                  const std::vector<std::shared_ptr<Generator>>& rngs = {});

/// While alive, every backward checks each gradient a node's backward returns: a NaN or infinity is an error naming
/// the op whose backward produced it and the input it was for (torch.autograd.detect_anomaly). Costs a pass over
/// every gradient; off by default. Per thread; nests.
class DetectAnomalyGuard {
 public:
  DetectAnomalyGuard();
  ~DetectAnomalyGuard();
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool prev_;
};
bool anomaly_detection_enabled();

/// Op timing for profiles (`qkv bench --profile`). While on, each recorded op's forward time (the time since the
/// previous record or profile_mark(), so a step's forward should start with a mark) and each backward node's time
/// are summed by op name, and backward's own bookkeeping (ordering the graph, summing gradients) under
/// "(autograd)". Off by default: then it costs one branch per op. Not for use from several threads at once.
struct OpTime {
  std::string name;
  double forward_s = 0, backward_s = 0;
  std::int64_t calls = 0;
};
void set_op_profiling(bool on);
/// Starts a new forward interval: work since the last op (data, the optimizer) is not charged to the next op.
void profile_mark();
/// The sums so far, largest total first; reset_op_profile() clears them.
std::vector<OpTime> op_profile();
void reset_op_profile();

}  // namespace qkv
