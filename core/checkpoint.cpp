// Activation checkpointing (core/autograd.h): a node that keeps only its input and runs its function again, with a
// graph, when backward reaches it.
#include "qkv/core/autograd.h"

#include "qkv/core/autograd_detail.h"
#include "qkv/core/generator.h"

namespace qkv {

namespace {
// The gradients of (x, params...) from the recomputed y = f(x) and dL/dy = g, computed as grad() does: no .grad()
// touched and no leaf hook run, so the outer sweep accumulates them as this node's input gradients, runs their
// hooks once, tells LeafGradHook when they are final and serves an outer grad() (torch's non-reentrant
// checkpoint). `x` is undefined when it needs no gradient.
Grads through_recomputed(const Tensor& y, const Tensor& g, const Tensor& x, const std::vector<Tensor>& params) {
  Grads grads(1 + params.size());
  if (!y.requires_grad()) return grads;
  std::vector<Tensor> wrt;
  std::vector<std::size_t> slot;
  if (x.defined()) wrt.push_back(x), slot.push_back(0);
  for (std::size_t i = 0; i < params.size(); ++i)
    if (params[i].requires_grad()) wrt.push_back(params[i]), slot.push_back(1 + i);
  if (wrt.empty()) return grads;
  std::vector<Tensor> got = detail::grad_impl({y}, wrt, {g}, /*retain_graph=*/false, /*allow_unused=*/true,
                                              /*leaf_hooks=*/false);
  for (std::size_t k = 0; k < got.size(); ++k) grads[slot[k]] = std::move(got[k]);
  return grads;
}
}  // namespace

Tensor checkpoint(const std::function<Tensor(const Tensor&)>& f, const Tensor& x, const std::vector<Tensor>& params,
                  const std::vector<std::shared_ptr<Generator>>& rngs) {
  QKV_CHECK(x.defined(), "checkpoint: the input is undefined");
  std::vector<Tensor> inputs{x};
  inputs.insert(inputs.end(), params.begin(), params.end());
  if (!any_requires_grad(inputs)) return f(x);
  std::vector<Generator::State> at_forward;
  for (const auto& g : rngs) {
    QKV_CHECK(g != nullptr, "checkpoint: a generator to preserve is null");
    at_forward.push_back(g->state());
  }
  for (std::size_t i = 0; i < params.size(); ++i)
    QKV_CHECK(!params[i].defined() || !params[i].requires_grad() || params[i].is_leaf(),
              "checkpoint: params[{}] (shape {}) is computed, not a leaf: pass the leaves f uses (a computed tensor "
              "goes in as x, or is computed inside f)", i, params[i].shape().str());
  Tensor out;
  {
    NoGradGuard no_grad;
    out = f(x);
  }
  QKV_CHECK(out.defined(), "checkpoint: the function returned an undefined tensor");
  const bool x_needs = x.requires_grad();
  record(out, "checkpoint", inputs, {x}, [f, params, rngs, at_forward, x_needs](const Tensor& g, const std::vector<Tensor>& saved) {
    Tensor again = saved[0].detach();
    again.requires_grad_(x_needs);
    Tensor y;
    {
      // The generators at their forward state for the recompute, then back where they were, also on a throw.
      struct Rewound {
        const std::vector<std::shared_ptr<Generator>>& rngs;
        std::vector<Generator::State> now;
        ~Rewound() {
          for (std::size_t i = 0; i < rngs.size(); ++i) rngs[i]->set_state(now[i]);
        }
      } rewound{rngs, {}};
      for (std::size_t i = 0; i < rngs.size(); ++i)
        rewound.now.push_back(rngs[i]->state()), rngs[i]->set_state(at_forward[i]);
      EnableGradGuard grad_on;
      y = f(again);
    }
    QKV_CHECK(y.defined() && y.shape() == g.shape() && y.dtype() == g.dtype(),
              "checkpoint: the recompute returned shape {}, the forward {}: the function must compute the same "
              "values from the same inputs", y.defined() ? y.shape().str() : "(undefined)", g.shape().str());
    return through_recomputed(y, g, x_needs ? again : Tensor(), params);
  });
  return out;
}

}  // namespace qkv
