#pragma once
// Optimizers over a module's named parameters, matching torch.optim's update rules and order exactly. Each
// step is one fused pass over each parameter's storage (parameter, gradient and state read once, written once).
#include <qkv/core/tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace qkv {

using NamedParameters = std::vector<std::pair<std::string, Tensor>>;

/// Optimizer (and schedule) state: tensors keyed "<parameter>.<slot>" and scalars keyed by name, so a checkpoint
/// can store them next to the model's own named tensors.
struct OptimizerState {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, double> scalars;
};

/// Parameters with their own learning rate and/or weight decay (torch.optim's param_groups); an unset field takes
/// the optimizer's option. E.g. no weight decay on biases and LayerNorm weights:
///   AdamW opt({{.params = decayed}, {.params = others, .weight_decay = 0.0}}, {.lr = 3e-4, .weight_decay = 0.1});
struct ParamGroup {
  NamedParameters params = {};
  std::optional<double> lr = std::nullopt;
  std::optional<double> weight_decay = std::nullopt;
};
using ParamGroups = std::vector<ParamGroup>;

class Optimizer {
 public:
  /// `who` names the optimizer in errors ("SGD", "Adam", "AdamW"); lr and weight_decay are the defaults for
  /// groups that do not set their own.
  Optimizer(ParamGroups groups, double lr, double weight_decay, const char* who);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// Drops every parameter's gradient (like torch's zero_grad(set_to_none=True)).
  void zero_grad();
  /// One update of every parameter that has a gradient.
  void step();
  double lr() const { return lr_; }
  /// "SGD", "Adam" or "AdamW".
  const char* who() const { return who_; }
  /// Sets the learning rate (schedules call this); throws for a negative value. A group with its own lr keeps
  /// its ratio to the optimizer's initial lr, so a schedule scales every group by the same factor.
  void set_lr(double lr);
  /// The parameter groups: how many, and each one's current lr and weight decay.
  std::size_t num_groups() const { return groups_.size(); }
  double group_lr(std::size_t group) const;
  double group_weight_decay(std::size_t group) const;
  /// Number of step() calls.
  std::int64_t steps() const { return steps_; }
  /// Updates parameter `index` (in params() order) has had: its own count, as torch keeps state[p]["step"], so
  /// a parameter without a gradient on some steps (frozen, unused) is bias-corrected by its own updates.
  std::int64_t param_steps(std::size_t index) const;
  const NamedParameters& params() const { return params_; }
  /// The same parameters without their names (what clipping and norms take), built once.
  const std::vector<Tensor>& parameters() const { return tensors_; }
  /// The key parameter `index`'s state has in state_dict(): its name, or "name#k" for the k-th parameter that
  /// has the name (two models of one class in one optimizer).
  const std::string& state_key(std::size_t index) const { return keys_.at(index); }

  /// Copies of every state tensor ("<key>.<slot>"), each parameter's "<key>.step", plus "step", "lr" and each
  /// group's "group.<i>.lr", ".initial_lr" and ".weight_decay" (as torch saves param_groups).
  OptimizerState state_dict() const;
  /// Restores a state_dict(); throws naming any missing or mismatched entry. A state saved before parameters
  /// had their own step counts gives every parameter with state the optimizer's "step".
  void load_state_dict(const OptimizerState& state);
  /// Drops the state of every parameter `keep(index)` rejects (a sharded run keeps only its own).
  void retain_state(const std::function<bool(std::size_t index)>& keep);
  /// Bytes of state tensors held.
  std::size_t state_bytes() const;

 protected:
  /// Updates parameter `index` given its gradient, with its group's lr and weight decay; param_steps(index)
  /// already counts this update; its state tensors come from slot(), created on first use.
  virtual void update(std::size_t index, const Tensor& param, const Tensor& grad, double lr,
                      double weight_decay) = 0;
  /// The state tensor `slot` of parameter `index`, created as zeros like `param` when absent.
  Tensor& slot(std::size_t index, const char* slot, const Tensor& param, bool* created = nullptr);
  /// Names of the state slots this optimizer may keep (for load_state_dict's checks).
  virtual std::vector<std::string> slot_names() const = 0;
  /// The slots it keeps with its options for every parameter that has taken a step (load_state_dict requires them).
  virtual std::vector<std::string> kept_slots() const { return slot_names(); }

 private:
  struct Group {
    double initial_lr, weight_decay;
  };
  struct ParamState {
    std::map<std::string, Tensor> slots;
    std::int64_t steps = 0;
  };
  void check_state_matches(std::size_t index) const;
  void load_state_tensors(const OptimizerState& s, std::vector<ParamState>& into) const;

  const char* who_;
  NamedParameters params_;
  std::vector<Tensor> tensors_;
  std::vector<std::string> keys_;       // per parameter
  std::vector<std::size_t> group_of_;  // per parameter
  std::vector<Group> groups_;
  double lr_, initial_lr_;
  std::int64_t steps_ = 0;
  std::vector<ParamState> state_;  // per parameter
};

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;  ///< L2: added to the gradient
};

/// torch.optim.SGD.
class SGD : public Optimizer {
 public:
  SGD(ParamGroups groups, SGDOptions options);
  SGD(NamedParameters params, SGDOptions options) : SGD(ParamGroups{{std::move(params)}}, options) {}
  const SGDOptions& options() const { return options_; }

 protected:
  void update(std::size_t index, const Tensor& param, const Tensor& grad, double lr,
              double weight_decay) override;
  std::vector<std::string> slot_names() const override;
  std::vector<std::string> kept_slots() const override;

 private:
  SGDOptions options_;
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  ///< Adam: L2 added to the gradient; AdamW: decoupled decay of the weights
  bool amsgrad = false;
};

/// torch.optim.Adam.
class Adam : public Optimizer {
 public:
  Adam(ParamGroups groups, AdamOptions options) : Adam(std::move(groups), options, false) {}
  Adam(NamedParameters params, AdamOptions options) : Adam(ParamGroups{{std::move(params)}}, options, false) {}
  const AdamOptions& options() const { return options_; }

 protected:
  Adam(ParamGroups groups, AdamOptions options, bool decoupled);
  void update(std::size_t index, const Tensor& param, const Tensor& grad, double lr,
              double weight_decay) override;
  std::vector<std::string> slot_names() const override;
  std::vector<std::string> kept_slots() const override;

 private:
  AdamOptions options_;
  bool decoupled_;
};

/// torch.optim.AdamW (weight decay applied to the weights, not the gradient). torch's default weight_decay 1e-2.
class AdamW : public Adam {
 public:
  AdamW(ParamGroups groups, AdamOptions options) : Adam(std::move(groups), options, true) {}
  AdamW(NamedParameters params, AdamOptions options) : Adam(ParamGroups{{std::move(params)}}, options, true) {}
};

/// The options of every optimizer in one struct, for building one by name (a config file, the CLI); each
/// optimizer reads the fields it has. A config's [optim] section is this struct (optimizer_fields()).
struct AnyOptimizerOptions {
  double lr = 1e-3;
  std::vector<double> betas = {0.9, 0.999};  ///< adam/adamw: (beta1, beta2)
  double eps = 1e-8, weight_decay = 0.0, momentum = 0.0;
  bool nesterov = false;
};
/// One field of AnyOptimizerOptions, described once: its name (the config key optim.NAME), range (numbers) and
/// meaning. The config key table, `qkv info --keys` and the docs' reference read it: a new hyperparameter is a
/// field above, a line in optimizer_fields() and its use in the optimizer that reads it.
struct OptimizerField {
  using Member = std::variant<double AnyOptimizerOptions::*, bool AnyOptimizerOptions::*,
                              std::vector<double> AnyOptimizerOptions::*>;
  const char* name;
  Member member;
  double min = 0, max = 0;
  const char* doc = "";
};
/// Every field of AnyOptimizerOptions, in declaration order.
const std::vector<OptimizerField>& optimizer_fields();
/// The optimizer `name` (one of optimizer_names()) over params.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, NamedParameters params,
                                          const AnyOptimizerOptions& options);
/// The same over parameter groups (each group's lr and weight_decay, when set, replace the options').
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, ParamGroups groups,
                                          const AnyOptimizerOptions& options);
/// The checks the optimizer `name` makes of its options (its constructor's), without any parameters: configs
/// ask it before building a model. Throws qkv::Error as the constructor would.
void check_optimizer_options(const std::string& name, const AnyOptimizerOptions& options);
/// The names make_optimizer knows (its registry): "sgd", "adam", "adamw".
std::vector<std::string> optimizer_names();

/// The global L2 norm of all gradients (as if concatenated), accumulated in double.
double grad_norm(const std::vector<Tensor>& params);
/// grad_norm's square: every defined gradient's sum of squares (each tensor's in its own precision, then summed in
/// double, in order). A sharded run sums these over ranks.
double grad_sq_sum(const std::vector<Tensor>& params);
/// Clipping given the norm: scales every gradient by max_norm / (norm + 1e-6) when that is below 1.
void clip_to_norm(const std::vector<Tensor>& params, double norm, double max_norm);
/// Scales all gradients together so their global L2 norm is at most max_norm (as torch's clip_grad_norm_:
/// coefficient max_norm / (norm + 1e-6), applied only when below 1). Returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
/// Multiplies every gradient by `factor` (what clipping applies).
void scale_grads(const std::vector<Tensor>& params, double factor);
/// Clamps every gradient element into [-clip_value, clip_value].
void clip_grad_value(const std::vector<Tensor>& params, double clip_value);

}  // namespace qkv
