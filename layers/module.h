#pragma once
// Module: parameters and submodules registered into ordered lists, so named_parameters() (and with it export,
// load and the optimizers) falls out of the registry with PyTorch's state-dict names: "blocks.0.attn.w_q.weight".
#include <qkv/core/tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace qkv {

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// Single-input forward, for modules that take one tensor (what Sequential calls).
  virtual Tensor forward(const Tensor& x);
  /// The type name shown in summaries ("Linear", "SelfAttention", ...).
  virtual std::string name() const = 0;

  /// Every parameter with its dotted name, in registration order (depth first); one registered twice (a shared
  /// submodule) appears once, under its first name (torch's remove_duplicate).
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  /// Direct submodules with their names.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
  /// The parameter with this dotted name; throws listing nothing more than the name when absent.
  Tensor parameter(const std::string& dotted_name) const;

  /// Training mode (dropout active); recursive.
  void train(bool on = true);
  /// Evaluation mode; recursive.
  void eval() { train(false); }
  bool is_training() const { return training_; }
  /// Converts every parameter to `dtype` in place (the Tensor handles the layers hold stay valid); a dtype that
  /// is not floating point is refused here, not at the next forward.
  void to(DType dtype);
  /// Drops every parameter's gradient.
  void zero_grad();
  /// Total number of parameter elements.
  std::int64_t num_parameters() const;
  /// One line per parameter (name, shape, count) and the total, like a torchinfo table.
  std::string summary() const;

 protected:
  /// Registers a leaf tensor as a parameter (it is marked requires_grad) and returns it.
  Tensor register_parameter(const std::string& name, Tensor t);
  /// Registers a submodule and returns it.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const;

  std::vector<std::pair<std::string, Tensor>> params_;
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

 private:
  std::vector<std::shared_ptr<M>> items_;
};

}  // namespace qkv
