#pragma once
// Module: parameters and submodules registered into ordered lists, so named_parameters() (and with it export,
// load and the optimizers) falls out of the registry with PyTorch's state-dict names: "blocks.0.attn.w_q.weight".
#include <qkv/core/tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

namespace qkv {

class Module;
/// Runs before a module's forward with its input; returns a replacement input, or an undefined Tensor to keep it.
using ForwardPreHook = std::function<Tensor(Module& module, const Tensor& input)>;
/// Runs after a module's forward with its input and output; returns a replacement output, or an undefined Tensor.
using ForwardHook = std::function<Tensor(Module& module, const Tensor& input, const Tensor& output)>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// Single-input forward, for modules that take one tensor (what Sequential calls).
  virtual Tensor forward(const Tensor& x);
  /// forward(x) with the module's hooks, as torch's module(x): what the built-in modules call on their children.
  Tensor operator()(const Tensor& x) {
    return hooked(x, [this](const Tensor& in) { return forward(in); });
  }
  /// Hooks around every call of this module (forward through operator(), and the attention modules' and blocks'
  /// attend, attend_cached and forward_cached, whose main input and output they see; for attend, the output is
  /// .out), in the order registered; each may replace what it sees. torch's register_forward_pre_hook and
  /// register_forward_hook. A module calling itself (forward -> attend) runs them once.
  HookHandle register_forward_pre_hook(ForwardPreHook hook);
  HookHandle register_forward_hook(ForwardHook hook);
  /// The type name shown in summaries ("Linear", "SelfAttention", ...).
  virtual std::string name() const = 0;

  /// Every parameter with its dotted name, in registration order (depth first); one registered twice (a shared
  /// submodule) appears once, under its first name (torch's remove_duplicate).
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  /// Every buffer (a tensor the module keeps and saves but does not train: running statistics, a fixed mask) with
  /// its dotted name, in registration order.
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  /// Parameters and buffers by dotted name, in torch's state_dict order (each module's parameters, then its
  /// buffers, then its children's): what save() writes and load() restores.
  std::vector<std::pair<std::string, Tensor>> state_dict() const;
  /// State that is neither a parameter nor a buffer (torch's get_extra_state / set_extra_state), as a string that
  /// save() keeps in the file's metadata and load() hands back: a model's dropout stream, so a resumed loop with
  /// dropout draws the masks it would have drawn. Empty (the default): none.
  virtual std::string extra_state() const { return ""; }
  /// Restores what extra_state() returned; throws qkv::Error naming the module when `state` is not its own.
  virtual void set_extra_state(const std::string& state);
  /// Direct submodules with their names.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
  /// The parameter with this dotted name; throws listing nothing more than the name when absent.
  Tensor parameter(const std::string& dotted_name) const;

  /// Training mode (dropout active); recursive.
  void train(bool on = true);
  /// Evaluation mode; recursive.
  void eval() { train(false); }
  bool is_training() const { return training_; }
  /// Converts every parameter and floating-point buffer to `dtype` in place (the Tensor handles the layers hold stay
  /// valid; integer buffers keep their dtype, as torch's); a dtype that is not floating point is refused here, not
  /// at the next forward.
  void to(DType dtype);
  /// Drops every parameter's gradient.
  void zero_grad();
  /// Total number of parameter elements.
  std::int64_t num_parameters() const;
  /// One line per parameter (name, shape, count) and the total, like a torchinfo table.
  std::string summary() const;

  /// A deep copy (copy.deepcopy in torch: for EMA weights and target networks): a module of the same type and
  /// structure from fresh(), holding copies of every parameter and buffer (same values, dtypes and names; a tied
  /// weight stays tied) and in the same train/eval mode, sharing nothing with this one. Built-in layers and models
  /// implement fresh(); another module type must override it to be cloned (throws naming the type otherwise).
  std::shared_ptr<Module> clone() const;
  /// A new module of this type and structure, values to be overwritten (clone() copies them): built with the
  /// options this one was built with and a throwaway Generator.
  virtual std::shared_ptr<Module> fresh() const;

 protected:
  /// Registers a leaf tensor as a parameter (it is marked requires_grad) and returns it.
  Tensor register_parameter(const std::string& name, Tensor t);
  /// Runs body(x) between this module's hooks (the pre-hooks may replace x, the forward hooks the output, a
  /// Tensor or an AttentionResult's .out). The built-in modules wrap their entry points in it.
  template <class F>
  auto hooked(const Tensor& x, F&& body) -> decltype(body(x)) {
    if (hooks_ == nullptr || hooks_->empty() || InHooks::on(this)) return body(x);
    const InHooks inside(this);
    const Tensor in = run_pre_hooks(x);
    auto out = body(in);
    if constexpr (std::is_same_v<decltype(out), Tensor>) out = run_forward_hooks(in, out);
    else out.out = run_forward_hooks(in, out.out);
    return out;
  }
  /// Registers a buffer: saved and loaded with the parameters and converted by to(), never given to an optimizer
  /// (it is marked requires_grad = false). Returns it.
  Tensor register_buffer(const std::string& name, Tensor t);
  /// Registers a submodule and returns it.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  enum class Collect { Parameters, Buffers, State };
  void collect(const std::string& prefix, Collect what, std::vector<std::pair<std::string, Tensor>>& out) const;
  std::vector<std::pair<std::string, Tensor>> collect_unique(Collect what) const;
  void check_new_name(const char* who, const std::string& name) const;
  void copy_modes(const Module& from);  // training flags, module by module
  Tensor run_pre_hooks(const Tensor& x);
  Tensor run_forward_hooks(const Tensor& x, const Tensor& out);

  struct Hooks {
    std::vector<std::pair<std::uint64_t, ForwardPreHook>> pre;
    std::vector<std::pair<std::uint64_t, ForwardHook>> post;
    bool empty() const { return pre.empty() && post.empty(); }
  };
  std::shared_ptr<Hooks> hooks_;  // shared with the handles (weakly), created on the first registration
  // The modules whose hooks this thread is running (a module calling itself runs them once). Per thread, so two
  // threads running one module each run its hooks.
  class InHooks {
   public:
    explicit InHooks(const Module* m);
    ~InHooks();
    InHooks(const InHooks&) = delete;
    InHooks& operator=(const InHooks&) = delete;
    static bool on(const Module* m);
  };

  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

/// Modules applied in order; children are named "0", "1", ...
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<Module>> modules);
  void push_back(std::shared_ptr<Module> m);
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "Sequential"; }
  std::shared_ptr<Module> fresh() const override;
  std::size_t size() const { return named_children().size(); }
};

/// A list of modules of one type, named "0", "1", ... (iterated by the owner, which decides how to call them).
template <class M>
class ModuleList : public Module {
 public:
  void push_back(std::shared_ptr<M> m) {
    items_.push_back(register_module(std::to_string(items_.size()), std::move(m)));
  }
  M& operator[](std::size_t i) const { return *items_.at(i); }
  std::size_t size() const { return items_.size(); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }
  std::string name() const override { return "ModuleList"; }
  std::shared_ptr<Module> fresh() const override {
    auto out = std::make_shared<ModuleList<M>>();
    for (const auto& m : items_) out->push_back(std::static_pointer_cast<M>(m->clone()));
    return out;
  }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

/// clone() as the module's own type: auto ema = qkv::clone(*model);
template <class M>
std::shared_ptr<M> clone(const M& m) {
  return std::static_pointer_cast<M>(m.clone());
}

}  // namespace qkv
