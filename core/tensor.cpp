#include "qkv/core/tensor.h"

#include "qkv/core/autograd.h"
#include "qkv/core/dispatch.h"
#include "qkv/core/ops.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <ostream>
#include <unordered_map>

namespace qkv {
namespace {

// Blocks of 4 KiB and more are cached by size instead of freed. glibc returns big freed blocks to the OS (and
// trims the heap's top once 128 KiB there are free), so a training step that frees and reallocates the same
// activations page-faults them in again every step: that cost 15-30% of a 256x256 matmul forward + backward,
// and 12-15% of a tiny-config step (768 x 16 logits) while only blocks from 64 KiB were kept. Smaller blocks
// are malloc's own fast path.
class BlockCache {
 public:
  static constexpr std::size_t kMinBytes = 4 * 1024;
  static constexpr std::size_t kPageRoundBytes = 64 * 1024;  // from here, sizes round to whole pages
  static constexpr std::size_t kLimitBytes = std::size_t{1} << 30;

  void* take(std::size_t bytes) {
    std::lock_guard lock(mutex_);
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= bytes;
    return p;
  }
  void give(void* p, std::size_t bytes) {
    {
      std::lock_guard lock(mutex_);
      if (cached_ + bytes <= kLimitBytes) {
        free_[bytes].push_back(p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }
  void clear() {
    std::lock_guard lock(mutex_);
    for (auto& [bytes, blocks] : free_)
      for (void* p : blocks) std::free(p);
    free_.clear();
    cached_ = 0;
  }
  std::size_t cached() {
    std::lock_guard lock(mutex_);
    return cached_;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  std::size_t cached_ = 0;
};

BlockCache& block_cache() {
  static auto* cache = new BlockCache();  // never destroyed: tensors in static storage may outlive it
  return *cache;
}

std::size_t rounded_bytes(std::size_t bytes) {
  if (bytes == 0) return 64;
  return bytes < BlockCache::kPageRoundBytes ? (bytes + 63) / 64 * 64 : (bytes + 4095) / 4096 * 4096;
}

std::shared_ptr<Storage> allocate(std::size_t bytes) {
  const std::size_t rounded = rounded_bytes(bytes);
  void* p = rounded >= BlockCache::kMinBytes ? block_cache().take(rounded) : nullptr;
  if (p == nullptr) p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {  // the blocks kept for reuse may be what is missing: give them back and try once more
    release_cached_memory();
    p = std::aligned_alloc(64, rounded);
  }
  if (p == nullptr) {
    const char* op = detail::g_current_op;
    throw OutOfMemoryError(fmt::format("out of memory: {} asked for {} bytes ({:.1f} GB)",
                                       op == nullptr ? std::string("a new tensor")
                                                     : fmt::format("`{}`{}", op, detail::g_in_backward ? "'s backward" : ""),
                                       bytes, static_cast<double>(bytes) / 1e9));
  }
  return std::make_shared<Storage>(p, rounded);
}

template <class T>
void fill_values(const Tensor& t, double v) {
  T* p = t.data<T>();
  const T x = static_cast<T>(v);
  for (std::int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = x;
}

}  // namespace

Storage::~Storage() {
  if (bytes >= BlockCache::kMinBytes) block_cache().give(data, bytes);
  else std::free(data);
}

void release_cached_memory() { block_cache().clear(); }
std::size_t cached_memory_bytes() { return block_cache().cached(); }

std::string Shape::str() const { return fmt::format("[{}]", fmt::join(begin(), end(), ", ")); }

void Shape::overflow() const { fail("shape {}: the element count overflows int64 (more than 2^63 - 1 elements)", str()); }

Shape contiguous_strides(const Shape& s) {
  Shape st = s;
  std::int64_t acc = 1;
  for (int i = s.rank() - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

int normalize_dim(const char* op, int dim, int rank) {
  const int r = rank == 0 ? 1 : rank;  // like torch, a scalar accepts dim 0 and -1
  QKV_CHECK(dim >= -r && dim < r, "{}: dim {} is out of range for a tensor of rank {} (expected {} to {})", op, dim,
            rank, -r, r - 1);
  return dim < 0 ? dim + r : dim;
}

std::int64_t Tensor::count_non_finite() const {
  std::int64_t n = 0;
  if (dtype() == kFloat32)
    for (std::int64_t i = 0, e = numel(); i < e; ++i) n += !std::isfinite(data<float>()[i]);
  else if (dtype() == kFloat64)
    for (std::int64_t i = 0, e = numel(); i < e; ++i) n += !std::isfinite(data<double>()[i]);
  return n;
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (auto d : shape) QKV_CHECK(d >= 0, "empty: negative dimension in shape {}", shape.str());
  const std::int64_t n = shape.numel();
  QKV_CHECK(n <= std::numeric_limits<std::int64_t>::max() / static_cast<std::int64_t>(itemsize(dtype)),
            "empty: shape {} of {} needs more than 2^63 bytes", shape.str(), dtype_name(dtype));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = allocate(static_cast<std::size_t>(shape.numel()) * itemsize(dtype));
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.raw_data(), 0, static_cast<std::size_t>(t.numel()) * itemsize(dtype));
  return t;
}

Tensor Tensor::ones(const Shape& shape, DType dtype) { return full(shape, 1.0, dtype); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype) { return full(Shape{}, value, dtype); }

Tensor Tensor::arange(double start, double end, double step, DType dtype) {
  QKV_CHECK(step != 0.0, "arange: step must be nonzero");
  const auto n = static_cast<std::int64_t>(std::max(0.0, std::ceil((end - start) / step)));
  Tensor t = empty(Shape{n}, dtype);
  dispatch<Dtypes::Any>("tensor", dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
    for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(start + double(i) * step);
  });
  return t;
}

template <class T>
Tensor Tensor::from(const std::vector<T>& data, const Shape& shape) {
  QKV_CHECK(static_cast<std::int64_t>(data.size()) == shape.numel(),
            "from: {} values do not fill shape {} ({} elements)", data.size(), shape.str(), shape.numel());
  Tensor t = empty(shape, dtype_of<T>());
  if (!data.empty()) std::memcpy(t.raw_data(), data.data(), data.size() * sizeof(T));
  return t;
}
template Tensor Tensor::from<float>(const std::vector<float>&, const Shape&);
template Tensor Tensor::from<double>(const std::vector<double>&, const Shape&);
template Tensor Tensor::from<std::int64_t>(const std::vector<std::int64_t>&, const Shape&);

Tensor Tensor::from(std::initializer_list<double> data, DType dtype) {
  return from(std::vector<double>(data), Shape{static_cast<std::int64_t>(data.size())}).to(dtype);
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, DType dtype) {
  QKV_CHECK(is_floating(dtype), "randn: dtype must be floating, got {}", dtype_name(dtype));
  Tensor t = empty(shape, dtype);
  if (NoInitGuard::active()) return t;
  dispatch<Dtypes::Any>("tensor", dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
    for (std::int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = static_cast<T>(gen.normal());
  });
  return t;
}

Tensor Tensor::rand(const Shape& shape, Generator& gen, DType dtype) { return uniform(shape, 0.0, 1.0, gen, dtype); }

Tensor Tensor::uniform(const Shape& shape, double low, double high, Generator& gen, DType dtype) {
  QKV_CHECK(is_floating(dtype), "uniform: dtype must be floating, got {}", dtype_name(dtype));
  Tensor t = empty(shape, dtype);
  if (NoInitGuard::active()) return t;
  dispatch<Dtypes::Any>("tensor", dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
    for (std::int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = static_cast<T>(low + (high - low) * gen.uniform());
  });
  return t;
}

void Tensor::undefined(const char* method) {
  fail("{}: the tensor is undefined (default-constructed, an optional argument not given, or a grad() before any "
       "backward)", method);
}

std::int64_t Tensor::size(int d) const {
  const Shape& s = defined_for("Tensor::size").shape;
  return s[normalize_dim("size", d, s.rank())];
}

template <class T>
T* Tensor::data() const {
  defined_for("Tensor::data");
  QKV_CHECK(dtype() == dtype_of<T>(), "data: tensor has dtype {}, asked for {}", dtype_name(dtype()),
            dtype_name(dtype_of<T>()));
  return static_cast<T*>(impl_->storage->data);
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template std::int64_t* Tensor::data<std::int64_t>() const;

double Tensor::item() const {
  defined_for("Tensor::item");
  QKV_CHECK(numel() == 1, "item: expected a tensor with one element, got shape {}", shape().str());
  double v = 0;
  dispatch<Dtypes::Any>("tensor", dtype(), [&](auto tag) { v = static_cast<double>(data<decltype(tag)>()[0]); });
  return v;
}

std::vector<double> Tensor::to_vector() const {
  defined_for("Tensor::to_vector");
  std::vector<double> out(static_cast<std::size_t>(numel()));
  dispatch<Dtypes::Any>("tensor", dtype(), [&](auto tag) {
    const auto* p = data<decltype(tag)>();
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(p[i]);
  });
  return out;
}

std::uint64_t Tensor::version() const { return defined_for("Tensor::version").storage->version; }
void Tensor::bump_version() const { ++defined_for("Tensor::bump_version").storage->version; }

const Tensor& Tensor::zero_() const {
  defined_for("Tensor::zero_");
  bump_version();
  std::memset(raw_data(), 0, static_cast<std::size_t>(numel()) * itemsize(dtype()));
  return *this;
}

const Tensor& Tensor::fill_(double value) const {
  defined_for("Tensor::fill_");
  bump_version();
  dispatch<Dtypes::Any>("tensor", dtype(), [&](auto tag) { fill_values<decltype(tag)>(*this, value); });
  return *this;
}

const Tensor& Tensor::copy_(const Tensor& src) const {
  defined_for("Tensor::copy_");
  QKV_CHECK(src.defined(), "Tensor::copy_: the source tensor is undefined");
  QKV_CHECK(src.shape() == shape(), "copy_: source shape {} does not match destination shape {}", src.shape().str(),
            shape().str());
  bump_version();
  if (src.dtype() == dtype()) {
    std::memmove(raw_data(), src.raw_data(), static_cast<std::size_t>(numel()) * itemsize(dtype()));
    return *this;
  }
  dispatch<Dtypes::Any>("tensor", dtype(), [&](auto dtag) {
    using D = decltype(dtag);
    D* d = data<D>();
    dispatch<Dtypes::Any>("tensor", src.dtype(), [&](auto stag) {
      const auto* s = src.data<decltype(stag)>();
      for (std::int64_t i = 0, n = numel(); i < n; ++i) d[i] = static_cast<D>(s[i]);
    });
  });
  return *this;
}

Tensor Tensor::to(DType target) const {
  defined_for("Tensor::to");
  if (target == dtype()) return *this;
  Tensor out = empty(shape(), target);
  out.copy_(*this);
  if (is_floating(target) && any_requires_grad({this})) {
    const DType src = dtype();
    record(out, "to", {this}, [src](const Tensor& g) -> Grads { return {g.to(src)}; });
  }
  return out;
}

Tensor Tensor::clone() const {
  defined_for("Tensor::clone");
  Tensor out = empty(shape(), dtype());
  out.copy_(*this);
  if (any_requires_grad({this})) record(out, "clone", {this}, [](const Tensor& g) -> Grads { return {g}; });
  return out;
}

bool Tensor::requires_grad() const { return impl_ && (impl_->requires_grad || impl_->grad_fn); }

Tensor& Tensor::requires_grad_(bool flag) {
  defined_for("Tensor::requires_grad_");
  QKV_CHECK(is_leaf(), "requires_grad_: only leaf tensors can change requires_grad (this one came from `{}`)",
            impl_->grad_fn->name);
  QKV_CHECK(!flag || is_floating(dtype()), "requires_grad_: only floating tensors can require grad, got {}",
            dtype_name(dtype()));
  impl_->requires_grad = flag;
  return *this;
}

bool Tensor::is_leaf() const { return defined_for("Tensor::is_leaf").grad_fn == nullptr; }
Tensor Tensor::grad() const { return defined_for("Tensor::grad").grad; }
void Tensor::set_grad(const Tensor& g) const {
  defined_for("Tensor::set_grad");
  impl_->grad = g;
}
void Tensor::zero_grad() const {
  defined_for("Tensor::zero_grad");
  impl_->grad = Tensor();
}
const std::shared_ptr<Node>& Tensor::grad_fn() const { return defined_for("Tensor::grad_fn").grad_fn; }

Tensor Tensor::detach() const {
  defined_for("Tensor::detach");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape();
  impl->dtype = dtype();
  impl->storage = impl_->storage;
  return Tensor(std::move(impl));
}

namespace {

// torch's print options: past 1000 elements a dim longer than 6 shows its first and last 3 entries around "...".
constexpr std::int64_t kSummarizeAbove = 1000, kEdgeItems = 3;

// Dim d's part of a tensor's text, from element `offset`: "[a, b, ...]" at the last dim, else its rows joined
// by a comma, one newline per remaining dim and the indent torch uses.
std::string render(const std::vector<double>& v, const Shape& s, const Shape& st, int d, std::int64_t offset,
                   bool summarize, const std::function<std::string(double)>& value) {
  std::vector<std::string> parts;
  const std::int64_t n = s[d];
  for (std::int64_t i = 0; i < n; ++i) {
    if (summarize && n > 2 * kEdgeItems && i == kEdgeItems) {
      parts.emplace_back("...");
      i = n - kEdgeItems - 1;
      continue;
    }
    const std::int64_t at = offset + i * st[d];
    parts.push_back(d + 1 == s.rank() ? value(v[static_cast<std::size_t>(at)])
                                      : render(v, s, st, d + 1, at, summarize, value));
  }
  std::string sep = ",";  // built by append: GCC 12 warns (-Wrestrict) on "," + std::string(...)
  if (d + 1 == s.rank()) {
    sep += ' ';
  } else {
    sep.append(static_cast<std::size_t>(s.rank() - d - 1), '\n');
    sep.append(static_cast<std::size_t>(7 + d + 1), ' ');
  }
  return fmt::format("[{}]", fmt::join(parts, sep));
}

}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  const auto v = to_vector();
  const auto& s = shape();
  const std::function<std::string(double)> value = [&](double x) {
    return dtype() == kInt64 ? fmt::format("{}", static_cast<std::int64_t>(x)) : fmt::format("{:.4f}", x);
  };
  std::string out = "tensor(";
  if (s.rank() == 0) out += value(v[0]);
  else out += render(v, s, contiguous_strides(s), 0, 0, numel() > kSummarizeAbove, value);
  if (dtype() != kFloat32) out += fmt::format(", dtype={}", dtype_name(dtype()));
  if (grad_fn()) out += fmt::format(", grad_fn=<{}>", grad_fn()->name);
  return out + ")";
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (!(a.shape() == b.shape())) return false;
  const auto va = a.to_vector(), vb = b.to_vector();
  for (std::size_t i = 0; i < va.size(); ++i)
    if (!(std::abs(va[i] - vb[i]) <= atol + rtol * std::abs(vb[i]))) return false;
  return true;
}

}  // namespace qkv
