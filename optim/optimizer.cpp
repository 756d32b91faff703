#include "qkv/optim/optimizer.h"

#include <qkv/core/autograd.h>
#include <qkv/core/dispatch.h>
#include <qkv/core/parallel.h>

#include <algorithm>
#include <cmath>

#include <fmt/ranges.h>

namespace qkv {

Optimizer::Optimizer(ParamGroups groups, double lr, double weight_decay, const char* who)
    : who_(who), lr_(lr), initial_lr_(lr) {
  QKV_CHECK(lr >= 0.0, "{}: invalid lr = {} (must be >= 0)", who, lr);
  std::map<const TensorImpl*, std::pair<std::string, std::size_t>> seen;  // identity -> (name, group)
  std::map<std::string, int> name_count;
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const ParamGroup& g = groups[gi];
    const double group_lr = g.lr.value_or(lr), decay = g.weight_decay.value_or(weight_decay);
    QKV_CHECK(group_lr >= 0.0, "{}: parameter group {}: invalid lr = {} (must be >= 0)", who, gi, group_lr);
    QKV_CHECK(decay >= 0.0, "{}: parameter group {}: invalid weight_decay = {} (must be >= 0)", who, gi, decay);
    groups_.push_back({group_lr, decay});
    for (const auto& [name, p] : g.params) {
      QKV_CHECK(p.defined() && p.is_leaf(), "{}: parameter '{}' must be a defined leaf tensor", who, name);
      const auto [it, fresh] = seen.emplace(p.impl(), std::pair{name, gi});
      QKV_CHECK(fresh, "{}: parameters '{}' (group {}) and '{}' (group {}) are the same tensor: pass it once", who,
                it->second.first, it->second.second, name, gi);
      const int k = ++name_count[name];
      keys_.push_back(k == 1 ? name : fmt::format("{}#{}", name, k));
      params_.emplace_back(name, p);
      tensors_.push_back(p);
      group_of_.push_back(gi);
    }
  }
  state_.resize(params_.size());
}

void Optimizer::zero_grad() {
  for (const auto& [name, p] : params_) p.zero_grad();
}

void Optimizer::set_lr(double lr) {
  QKV_CHECK(lr >= 0.0, "set_lr: invalid lr = {} (must be >= 0)", lr);
  lr_ = lr;
}

double Optimizer::group_lr(std::size_t group) const {
  QKV_CHECK(group < groups_.size(), "{}: parameter group {} does not exist ({} groups)", who_, group, groups_.size());
  return initial_lr_ > 0.0 ? groups_[group].initial_lr * (lr_ / initial_lr_) : groups_[group].initial_lr;
}

double Optimizer::group_weight_decay(std::size_t group) const {
  QKV_CHECK(group < groups_.size(), "{}: parameter group {} does not exist ({} groups)", who_, group, groups_.size());
  return groups_[group].weight_decay;
}

std::int64_t Optimizer::param_steps(std::size_t index) const {
  QKV_CHECK(index < state_.size(), "{}: parameter {} does not exist ({} parameters)", who_, index, state_.size());
  return state_[index].steps;
}

// A parameter converted (module.to()) or replaced after the optimizer made its state: named, not a crash.
void Optimizer::check_state_matches(std::size_t index) const {
  const auto& [name, p] = params_[index];
  const Tensor g = p.grad();
  QKV_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype(),
            "{}: parameter '{}' is {} {} but its gradient is {} {}", who_, name, dtype_name(p.dtype()),
            p.shape().str(), dtype_name(g.dtype()), g.shape().str());
  for (const auto& [slot_name, t] : state_[index].slots)
    QKV_CHECK(t.shape() == p.shape() && t.dtype() == p.dtype(),
              "{}: state '{}.{}' is {} {} but parameter '{}' is now {} {} (convert the module with to() before "
              "building the optimizer, or load a matching state)",
              who_, keys_[index], slot_name, dtype_name(t.dtype()), t.shape().str(), name, dtype_name(p.dtype()),
              p.shape().str());
}

void Optimizer::step() {
  NoGradGuard no_grad;
  ++steps_;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].second;
    const Tensor g = p.grad();
    if (!g.defined()) continue;  // like torch: parameters without a gradient are skipped, their step not counted
    check_state_matches(i);
    ++state_[i].steps;
    update(i, p, g, group_lr(group_of_[i]), groups_[group_of_[i]].weight_decay);
    p.bump_version();  // a graph that saved p (retain_graph) can no longer use it
  }
}

Tensor& Optimizer::slot(std::size_t index, const char* slot_name, const Tensor& param, bool* created) {
  auto& slots = state_.at(index).slots;
  auto it = slots.find(slot_name);
  if (created != nullptr) *created = it == slots.end();
  if (it == slots.end()) it = slots.emplace(slot_name, Tensor::zeros(param.shape(), param.dtype())).first;
  return it->second;
}

OptimizerState Optimizer::state_dict() const {
  OptimizerState s;
  for (std::size_t i = 0; i < state_.size(); ++i) {
    for (const auto& [slot_name, t] : state_[i].slots) s.tensors.emplace(keys_[i] + "." + slot_name, t.clone());
    if (state_[i].steps > 0) s.scalars[keys_[i] + ".step"] = static_cast<double>(state_[i].steps);
  }
  s.scalars["step"] = static_cast<double>(steps_);
  s.scalars["lr"] = lr_;
  s.scalars["initial_lr"] = initial_lr_;
  for (std::size_t i = 0; i < groups_.size(); ++i) {
    s.scalars[fmt::format("group.{}.lr", i)] = group_lr(i);
    s.scalars[fmt::format("group.{}.initial_lr", i)] = groups_[i].initial_lr;
    s.scalars[fmt::format("group.{}.weight_decay", i)] = groups_[i].weight_decay;
  }
  return s;
}

void Optimizer::retain_state(const std::function<bool(std::size_t index)>& keep) {
  for (std::size_t i = 0; i < state_.size(); ++i)
    if (!keep(i)) state_[i] = {};
}

std::size_t Optimizer::state_bytes() const {
  std::size_t n = 0;
  for (const ParamState& ps : state_)
    for (const auto& [slot_name, t] : ps.slots) n += static_cast<std::size_t>(t.numel()) * itemsize(t.dtype());
  return n;
}

namespace {
// A state comes from a file: every scalar is checked before use (a NaN lr or a negative step would train on
// silently). `integer`: a count, exact in a double.
void check_scalar(const OptimizerState& s, const std::string& key, bool integer, const char* who) {
  const auto it = s.scalars.find(key);
  if (it == s.scalars.end()) return;
  const double v = it->second;
  QKV_CHECK(std::isfinite(v) && v >= 0 && (!integer || (v == std::floor(v) && v <= 9007199254740992.0)),
            "{}: load_state_dict: '{}' = {} is not {}", who, key, v,
            integer ? "a count (a whole number from 0 to 2^53)" : "a finite number >= 0");
}

// Each group's hyperparameters from a state (absent in states saved before groups existed: keep the current).
std::vector<std::pair<double, double>> saved_groups(const OptimizerState& s, std::size_t expected, const char* who) {
  std::size_t n = 0;
  while (s.scalars.count(fmt::format("group.{}.initial_lr", n))) ++n;
  QKV_CHECK(n == 0 || n == expected, "{}: load_state_dict: the state has {} parameter groups, this optimizer {}", who,
            n, expected);
  std::vector<std::pair<double, double>> out;
  for (std::size_t i = 0; i < n; ++i) {
    const auto wd = s.scalars.find(fmt::format("group.{}.weight_decay", i));
    QKV_CHECK(wd != s.scalars.end(), "{}: load_state_dict: state lacks 'group.{}.weight_decay'", who, i);
    check_scalar(s, fmt::format("group.{}.initial_lr", i), false, who);
    check_scalar(s, wd->first, false, who);
    out.emplace_back(s.scalars.at(fmt::format("group.{}.initial_lr", i)), wd->second);
  }
  return out;
}

}  // namespace

// Every state tensor of `s` checked against its parameter (known slot, shape, dtype, finite, second moments >= 0)
// and copied into `into`.
void Optimizer::load_state_tensors(const OptimizerState& s, std::vector<ParamState>& into) const {
  std::map<std::string, std::size_t> index_of;
  for (std::size_t i = 0; i < keys_.size(); ++i) index_of.emplace(keys_[i], i);
  for (const auto& [key, t] : s.tensors) {
    const auto dot = key.rfind('.');
    const auto it = dot == std::string::npos ? index_of.end() : index_of.find(key.substr(0, dot));
    const std::string slot_name = dot == std::string::npos ? "" : key.substr(dot + 1);
    const auto names = slot_names();
    QKV_CHECK(it != index_of.end() && std::find(names.begin(), names.end(), slot_name) != names.end(),
              "load_state_dict: unexpected state entry '{}'", key);
    const auto& [name, p] = params_[it->second];
    QKV_CHECK(t.shape() == p.shape() && t.dtype() == p.dtype(),
              "load_state_dict: '{}' has shape {} ({}), parameter '{}' is {} ({})", key, t.shape().str(),
              dtype_name(t.dtype()), name, p.shape().str(), dtype_name(p.dtype()));
    const auto bad = t.count_non_finite();
    QKV_CHECK(bad == 0, "{}: load_state_dict: '{}' has {} value{} that are not finite", who_, key, bad, bad == 1 ? "" : "s");
    if (slot_name.ends_with("_sq")) {  // second moments: sqrt(< 0) is NaN
      const auto v = t.to_vector();
      QKV_CHECK(std::all_of(v.begin(), v.end(), [](double x) { return x >= 0; }),
                "{}: load_state_dict: '{}' has negative values (a second moment cannot)", who_, key);
    }
    into[it->second].slots.emplace(slot_name, t.clone());
  }
}

void Optimizer::load_state_dict(const OptimizerState& s) {
  QKV_CHECK(s.scalars.count("step") && s.scalars.count("lr"), "load_state_dict: state lacks 'step' or 'lr'");
  check_scalar(s, "step", true, who_);
  check_scalar(s, "lr", false, who_);
  check_scalar(s, "initial_lr", false, who_);
  std::vector<ParamState> loaded(params_.size());
  load_state_tensors(s, loaded);
  const auto global_steps = static_cast<std::int64_t>(s.scalars.at("step"));
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    const auto it = s.scalars.find(keys_[i] + ".step");
    if (it != s.scalars.end()) {
      check_scalar(s, it->first, true, who_);
      loaded[i].steps = static_cast<std::int64_t>(it->second);
    } else {
      loaded[i].steps = global_steps;  // saved before per-parameter counts: every parameter stepped each time
    }
    // A parameter that has taken steps has its state: without it the optimizer would go on from zero moments.
    for (const auto& slot : kept_slots())
      QKV_CHECK(loaded[i].steps == 0 || loaded[i].slots.count(slot), "{}: load_state_dict: the state lacks '{}.{}' "
                "(parameter '{}' has taken {} steps): it would go on from zero instead of where it stopped", who_,
                keys_[i], slot, params_[i].first, loaded[i].steps);
  }
  const auto groups = saved_groups(s, groups_.size(), who_);
  state_ = std::move(loaded);
  for (std::size_t i = 0; i < groups.size(); ++i) groups_[i] = {groups[i].first, groups[i].second};
  if (s.scalars.count("initial_lr")) initial_lr_ = s.scalars.at("initial_lr");
  steps_ = global_steps;
  set_lr(s.scalars.at("lr"));
}

// ---- SGD --------------------------------------------------------------------------------------------------
// torch.optim.SGD (_single_tensor_sgd), line by line:
//   d_p = grad + weight_decay * param
//   buf = d_p on the first step, else momentum * buf + (1 - dampening) * d_p
//   d_p = d_p + momentum * buf if nesterov else buf
//   param -= lr * d_p

SGD::SGD(ParamGroups groups, SGDOptions o)
    : Optimizer(std::move(groups), o.lr, std::max(o.weight_decay, 0.0), "SGD"), options_(o) {
  QKV_CHECK(o.momentum >= 0.0, "SGD: invalid momentum = {} (must be >= 0)", o.momentum);
  QKV_CHECK(o.weight_decay >= 0.0, "SGD: invalid weight_decay = {} (must be >= 0)", o.weight_decay);
  QKV_CHECK(!o.nesterov || (o.momentum > 0.0 && o.dampening == 0.0),
            "SGD: nesterov requires momentum > 0 and dampening = 0 (got momentum = {}, dampening = {})", o.momentum,
            o.dampening);
}

std::vector<std::string> SGD::slot_names() const { return {"momentum_buffer"}; }
std::vector<std::string> SGD::kept_slots() const {
  return options_.momentum != 0.0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{};
}

void SGD::update(std::size_t index, const Tensor& param, const Tensor& grad, double lr_now,
                 double weight_decay) {
  const auto& o = options_;
  bool fresh = false;
  Tensor* buf = o.momentum != 0.0 ? &slot(index, "momentum_buffer", param, &fresh) : nullptr;
  dispatch("optimizer", param.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* b = buf != nullptr ? buf->data<T>() : nullptr;
    const T wd = T(weight_decay), mu = T(o.momentum), damp = T(1.0 - o.dampening), lr = T(lr_now);
    for (std::int64_t i = 0, n = param.numel(); i < n; ++i) {
      T d = weight_decay != 0.0 ? g[i] + wd * p[i] : g[i];
      if (b != nullptr) {
        b[i] = fresh ? d : mu * b[i] + damp * d;
        d = o.nesterov ? d + mu * b[i] : b[i];
      }
      p[i] -= lr * d;
    }
  });
}

// ---- Adam / AdamW ------------------------------------------------------------------------------------------
// torch.optim.Adam / AdamW (_single_tensor_adam[w], the non-capturable branch), line by line:
//   AdamW: param *= 1 - lr * weight_decay          Adam: grad = grad + weight_decay * param
//   exp_avg    = beta1 * exp_avg + (1 - beta1) * grad
//   exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad^2
//   step_size  = lr / (1 - beta1^t);  bc2_sqrt = sqrt(1 - beta2^t)
//   amsgrad: max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq); denom = sqrt(max_exp_avg_sq) / bc2_sqrt + eps
//   else:    denom = sqrt(exp_avg_sq) / bc2_sqrt + eps
//   param -= step_size * exp_avg / denom
// Note: torch's documentation pseudo-code maxes the bias-corrected v-hat, while its implementation (followed
// here, since trajectories must match) maxes the raw exp_avg_sq and corrects afterwards.

Adam::Adam(ParamGroups groups, AdamOptions o, bool decoupled)
    : Optimizer(std::move(groups), o.lr, std::max(o.weight_decay, 0.0), decoupled ? "AdamW" : "Adam"),
      options_(o),
      decoupled_(decoupled) {
  const char* who = decoupled ? "AdamW" : "Adam";
  QKV_CHECK(o.beta1 >= 0.0 && o.beta1 < 1.0, "{}: invalid beta1 = {} (must be in [0, 1))", who, o.beta1);
  QKV_CHECK(o.beta2 >= 0.0 && o.beta2 < 1.0, "{}: invalid beta2 = {} (must be in [0, 1))", who, o.beta2);
  QKV_CHECK(o.eps > 0.0, "{}: invalid eps = {} (must be > 0)", who, o.eps);
  QKV_CHECK(o.weight_decay >= 0.0, "{}: invalid weight_decay = {} (must be >= 0)", who, o.weight_decay);
}

std::vector<std::string> Adam::slot_names() const { return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}; }
std::vector<std::string> Adam::kept_slots() const {
  if (options_.amsgrad) return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  return {"exp_avg", "exp_avg_sq"};
}

void Adam::update(std::size_t index, const Tensor& param, const Tensor& grad, double lr,
                  double weight_decay) {
  const auto& o = options_;
  const auto t = static_cast<double>(param_steps(index));  // torch: state[p]["step"], this parameter's own
  const double step_size = lr / (1.0 - std::pow(o.beta1, t));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, t));
  Tensor& m_t = slot(index, "exp_avg", param);
  Tensor& v_t = slot(index, "exp_avg_sq", param);
  Tensor* vmax_t = o.amsgrad ? &slot(index, "max_exp_avg_sq", param) : nullptr;
  dispatch("optimizer", param.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T *m = m_t.data<T>(), *v = v_t.data<T>(), *vmax = vmax_t != nullptr ? vmax_t->data<T>() : nullptr;
    const T b1 = T(o.beta1), b2 = T(o.beta2), one_b1 = T(1.0 - o.beta1), one_b2 = T(1.0 - o.beta2);
    const T wd = T(weight_decay), decay = T(1.0 - lr * weight_decay), eps = T(o.eps);
    const T neg_step = T(-step_size), bc2 = T(bc2_sqrt);
    const std::int64_t n = param.numel();
    // The options become template flags so the loop has no branches and vectorises; large tensors are split
    // across threads (each element is independent).
    const auto loop = [&]<bool kL2, bool kDecoupled, bool kAms>() {
      parallel_for(n, n > (1 << 16), [=](std::int64_t lo, std::int64_t hi) {
      // Local restrict pointers: reached through the lambda's captures, the compiler emitted gathers.
      T* __restrict pp = p;
      const T* __restrict pg = g;
      T* __restrict pm = m;
      T* __restrict pv = v;
      T* __restrict pvmax = vmax;
      for (std::int64_t i = lo; i < hi; ++i) {
        if constexpr (kDecoupled) pp[i] *= decay;
        T gi = pg[i];
        if constexpr (kL2) gi += wd * pp[i];
        const T mi = pm[i] * b1 + one_b1 * gi;
        const T vi = pv[i] * b2 + one_b2 * gi * gi;
        pm[i] = mi;
        pv[i] = vi;
        T second = vi;
        if constexpr (kAms) second = pvmax[i] = std::max(pvmax[i], vi);
        pp[i] += neg_step * (mi / (std::sqrt(second) / bc2 + eps));
      }
      });
    };
    const bool has_wd = weight_decay != 0.0;
    const int variant = (has_wd && !decoupled_ ? 1 : 0) | (has_wd && decoupled_ ? 2 : 0) | (vmax != nullptr ? 4 : 0);
    switch (variant) {
      case 0: loop.template operator()<false, false, false>(); break;
      case 1: loop.template operator()<true, false, false>(); break;
      case 2: loop.template operator()<false, true, false>(); break;
      case 4: loop.template operator()<false, false, true>(); break;
      case 5: loop.template operator()<true, false, true>(); break;
      case 6: loop.template operator()<false, true, true>(); break;
      default: QKV_ASSERT(false);
    }
  });
}

namespace {

using Factory = std::unique_ptr<Optimizer> (*)(ParamGroups, const AnyOptimizerOptions&);

AdamOptions adam_options(const AnyOptimizerOptions& o) {
  QKV_CHECK(o.betas.size() == 2, "Adam: betas must be (beta1, beta2), got {} values", o.betas.size());
  return {.lr = o.lr, .beta1 = o.betas[0], .beta2 = o.betas[1], .eps = o.eps, .weight_decay = o.weight_decay};
}

// Optimizer name -> factory: a new optimizer is one class and one line here.
const std::vector<std::pair<std::string, Factory>>& registry() {
  static const std::vector<std::pair<std::string, Factory>> r = {
      {"sgd",
       [](ParamGroups p, const AnyOptimizerOptions& o) -> std::unique_ptr<Optimizer> {
         return std::make_unique<SGD>(std::move(p), SGDOptions{.lr = o.lr, .momentum = o.momentum,
                                                               .nesterov = o.nesterov, .weight_decay = o.weight_decay});
       }},
      {"adam",
       [](ParamGroups p, const AnyOptimizerOptions& o) -> std::unique_ptr<Optimizer> {
         return std::make_unique<Adam>(std::move(p), adam_options(o));
       }},
      {"adamw",
       [](ParamGroups p, const AnyOptimizerOptions& o) -> std::unique_ptr<Optimizer> {
         return std::make_unique<AdamW>(std::move(p), adam_options(o));
       }},
  };
  return r;
}

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, ParamGroups groups,
                                          const AnyOptimizerOptions& options) {
  for (const auto& [n, factory] : registry())
    if (n == name) return factory(std::move(groups), options);
  fail("optimizer: unknown name '{}' (expected {})", name, fmt::join(optimizer_names(), ", "));
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, NamedParameters params,
                                          const AnyOptimizerOptions& options) {
  return make_optimizer(name, ParamGroups{{std::move(params)}}, options);
}

void check_optimizer_options(const std::string& name, const AnyOptimizerOptions& options) {
  make_optimizer(name, {{"p", Tensor::zeros({1})}}, options);  // the constructor is the one home of its rules
}

const std::vector<OptimizerField>& optimizer_fields() {
  using O = AnyOptimizerOptions;
  static const std::vector<OptimizerField> fields = {
      {"lr", &O::lr, 0, 1e3, "peak learning rate"},
      {"betas", &O::betas, 0, 0, "adam/adamw: (beta1, beta2), each in [0, 1)"},
      {"eps", &O::eps, 1e-300, 1, "adam/adamw: denominator epsilon (> 0)"},
      {"weight_decay", &O::weight_decay, 0, 1e3, "L2 (sgd, adam) or decoupled (adamw) decay"},
      {"momentum", &O::momentum, 0, 1, "sgd: momentum"},
      {"nesterov", &O::nesterov, 0, 0, "sgd: Nesterov momentum (needs momentum > 0)"},
  };
  return fields;
}

std::vector<std::string> optimizer_names() {
  std::vector<std::string> names;
  for (const auto& [n, factory] : registry()) names.push_back(n);
  return names;
}

}  // namespace qkv
