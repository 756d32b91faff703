#pragma once
// Tensor: a handle to shared, contiguous row-major storage plus the autograd links. Copying a Tensor shares it
// (like a Python reference); clone() copies the data.
#include "qkv/core/dtype.h"
#include "qkv/core/generator.h"
#include "qkv/core/shape.h"

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace qkv {

struct Node;
struct TensorImpl;
class Tensor;

/// A gradient hook (Tensor::register_hook): sees the gradient and returns a replacement, or an undefined Tensor to
/// keep it.
using GradHook = std::function<Tensor(const Tensor& grad)>;

/// Removes the hook it was returned for (Tensor::register_hook, Module::register_forward_hook); removing twice, or
/// after the tensor or module is gone, does nothing. Letting the handle go keeps the hook.
class HookHandle {
 public:
  HookHandle() = default;
  explicit HookHandle(std::function<void()> remove) : remove_(std::move(remove)) {}
  void remove() {
    if (remove_) std::exchange(remove_, nullptr)();
  }

 private:
  std::function<void()> remove_;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation -------------------------------------------------------------------------------------------
  /// Uninitialised storage.
  static Tensor empty(const Shape& shape, DType dtype = kFloat32);
  static Tensor zeros(const Shape& shape, DType dtype = kFloat32);
  static Tensor ones(const Shape& shape, DType dtype = kFloat32);
  static Tensor full(const Shape& shape, double value, DType dtype = kFloat32);
  /// A rank-0 tensor holding `value`.
  static Tensor scalar(double value, DType dtype = kFloat32);
  /// [start, end) in steps of `step`, like torch.arange.
  static Tensor arange(double start, double end, double step = 1.0, DType dtype = kFloat32);
  static Tensor arange(std::int64_t end, DType dtype = kFloat32) { return arange(0.0, double(end), 1.0, dtype); }
  /// Copies `data` (float, double or int64_t) into a tensor of `shape`; numel must match.
  template <class T>
  static Tensor from(const std::vector<T>& data, const Shape& shape);
  /// A rank-1 tensor from a list of values.
  static Tensor from(std::initializer_list<double> data, DType dtype = kFloat32);
  /// N(0, 1) samples drawn from `gen`.
  static Tensor randn(const Shape& shape, Generator& gen = default_generator(), DType dtype = kFloat32);
  /// U[0, 1) samples drawn from `gen`.
  static Tensor rand(const Shape& shape, Generator& gen = default_generator(), DType dtype = kFloat32);
  /// U[low, high) samples drawn from `gen`.
  static Tensor uniform(const Shape& shape, double low, double high, Generator& gen = default_generator(),
                        DType dtype = kFloat32);

  // ---- metadata -------------------------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int dim() const;
  /// Size of dimension d (negative d counts from the end).
  std::int64_t size(int d) const;
  std::int64_t numel() const;
  DType dtype() const;

  // ---- data -----------------------------------------------------------------------------------------------
  /// Typed pointer to the first element; throws when T does not match dtype().
  template <class T>
  T* data() const;
  void* raw_data() const;
  /// The single value of a one-element tensor.
  double item() const;
  /// All values, converted to double, in row-major order.
  std::vector<double> to_vector() const;
  /// How many values are NaN or infinite (0 for int64 tensors).
  std::int64_t count_non_finite() const;
  /// Converts (copying) to another dtype; differentiable between float types.
  Tensor to(DType dtype) const;
  /// A copy with its own storage; differentiable.
  Tensor clone() const;

  // ---- in place, outside the graph (for optimizers and initialisers) --------------------------------------
  const Tensor& zero_() const;
  const Tensor& fill_(double value) const;
  /// Copies src's values (same shape; dtype converted).
  const Tensor& copy_(const Tensor& src) const;
  /// How many in-place writes the storage has seen (zero_, fill_, copy_, add_, optimizer steps). Backward
  /// compares it with the value each saved tensor had when it was saved, like torch's `_version`.
  std::uint64_t version() const;
  /// Marks the storage as written in place. Call it after writing through data<T>() into a tensor that a
  /// recorded op may have saved; the in-place methods above do it themselves.
  void bump_version() const;

  // ---- autograd -------------------------------------------------------------------------------------------
  /// True for a leaf marked requires_grad and for every tensor computed from one while grad mode is on.
  bool requires_grad() const;
  /// Marks a leaf as requiring grad (like torch's requires_grad_()).
  Tensor& requires_grad_(bool flag = true);
  /// True when the tensor was not produced by a recorded op.
  bool is_leaf() const;
  /// Accumulated gradient (undefined until a backward reaches this leaf).
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  /// Drops the accumulated gradient.
  void zero_grad() const;
  /// Reverse-mode sweep from this tensor. `grad` defaults to 1 for scalars and is required otherwise.
  /// The graph is freed unless retain_graph is set.
  void backward(const Tensor& grad = {}, bool retain_graph = false) const;
  /// Runs `hook` on this tensor's gradient each time a backward (or grad()) computes it, before it is used: for a
  /// leaf before it is added to .grad(), for a computed tensor before it flows on to its inputs. The hook may
  /// return a replacement of the same shape and dtype (or an undefined Tensor to keep the gradient). Hooks run in
  /// the order registered; the tensor must require grad. As torch's Tensor.register_hook.
  HookHandle register_hook(GradHook hook) const;
  /// Keeps a computed tensor's gradient in .grad() after backward (summed over backwards, as a leaf's), after its
  /// hooks have run; a no-op for a leaf. As torch's retain_grad().
  void retain_grad() const;
  /// Same storage, cut from the graph.
  Tensor detach() const;
  /// The node that produced this tensor, or null for leaves.
  const std::shared_ptr<Node>& grad_fn() const;

  /// Multi-line human-readable rendering, like torch's repr (past 1000 elements, each long dim shows its first
  /// and last 3 entries around "...").
  std::string str() const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  /// The impl, or a qkv::Error naming `method` when the tensor is undefined.
  const TensorImpl& defined_for(const char* method) const {
    if (!impl_) undefined(method);
    return *impl_;
  }
  [[noreturn]] static void undefined(const char* method);
  std::shared_ptr<TensorImpl> impl_;
};

/// The bytes behind one or more tensors (a tensor, its detach()es and reshapes), 64-byte aligned, with the
/// version counter that in-place writes bump and backward checks (torch's `_version`).
struct Storage {
  Storage(void* data, std::size_t bytes) : data(data), bytes(bytes) {}
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data;
  std::size_t bytes;
  std::uint64_t version = 0;
};

struct TensorImpl {
  Shape shape;
  DType dtype = kFloat32;
  std::shared_ptr<Storage> storage;  // numel * itemsize bytes
  bool requires_grad = false;     // set on leaves by the user
  Tensor grad;                    // accumulated gradient of a leaf
  std::shared_ptr<Node> grad_fn;  // producer of a non-leaf
  std::vector<std::pair<std::uint64_t, GradHook>> hooks;  // a leaf's gradient hooks (a non-leaf's are on its node)
};

inline const Shape& Tensor::shape() const { return defined_for("Tensor::shape").shape; }
inline int Tensor::dim() const { return defined_for("Tensor::dim").shape.rank(); }
inline std::int64_t Tensor::numel() const { return defined_for("Tensor::numel").shape.numel(); }
inline DType Tensor::dtype() const { return defined_for("Tensor::dtype").dtype; }
inline void* Tensor::raw_data() const { return defined_for("Tensor::data").storage->data; }

/// Prints t.str() (large tensors summarised with "...", as torch prints them).
std::ostream& operator<<(std::ostream& os, const Tensor& t);

/// Frees the blocks qkv keeps for reuse (storage of 4 KiB and more is cached by size, up to 1 GiB).
void release_cached_memory();
/// Bytes currently held in that cache.
std::size_t cached_memory_bytes();

/// Checks two tensors have equal shape and values within atol + rtol * |b| elementwise.
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);

}  // namespace qkv
