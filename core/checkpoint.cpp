// Activation checkpointing (core/autograd.h): a node that keeps only its input and runs its function again, with a
// graph, when backward reaches it.
#include "qkv/core/autograd.h"

#include "qkv/core/generator.h"

namespace qkv {

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
  Tensor out;
  {
    NoGradGuard no_grad;
    out = f(x);
  }
  QKV_CHECK(out.defined(), "checkpoint: the function returned an undefined tensor");
  const std::size_t n_params = params.size();
  const bool x_needs = x.requires_grad();
  record(out, "checkpoint", inputs, {x}, [f, rngs, at_forward, n_params, x_needs](const Tensor& g, const std::vector<Tensor>& saved) {
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
    if (y.requires_grad()) {
      // The parameters' gradients go straight into their .grad() here; the outer sweep reports them final (for
      // data parallelism's early sums) when this node is done, so the inner sweep reports nothing.
      LeafGradHook quiet([](const Tensor&) {});
      y.backward(g);
    }
    Grads grads(1 + n_params);
    if (x_needs) grads[0] = again.grad();
    return grads;
  });
  return out;
}

}  // namespace qkv
