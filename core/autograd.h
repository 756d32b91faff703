#pragma once
// Reverse-mode autograd: every recorded op leaves a Node on its output. A Node holds its inputs' nodes (or, for
// leaves, the leaf itself) and a backward closure mapping d(output) to d(inputs). Nodes never point at their own
// output, so the graph is a DAG of shared_ptrs with no cycles and frees itself.
#include "qkv/core/tensor.h"

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

namespace qkv {

/// One gradient per input, in input order; an undefined Tensor means "no gradient".
using Grads = std::vector<Tensor>;
using BackwardFn = std::function<Grads(const Tensor& grad_out)>;

/// Where a gradient goes: an earlier node, or a leaf that accumulates into .grad().
struct Edge {
  std::shared_ptr<Node> fn;
  std::shared_ptr<TensorImpl> leaf;
};

struct Node {
  const char* name = "";
  std::vector<Edge> next;
  BackwardFn backward;
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

/// True when grad mode is on and any input requires grad: the op should then call record().
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

/// Attaches a node named `name` to `out`, with `fn` returning one gradient per input.
void record(Tensor& out, const char* name, std::initializer_list<const Tensor*> inputs, BackwardFn fn);
void record(Tensor& out, const char* name, const std::vector<Tensor>& inputs, BackwardFn fn);

}  // namespace qkv
