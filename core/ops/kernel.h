#pragma once
// Private helpers shared by the op files: dtype dispatch and strided N-d iteration. Not installed.
#include "qkv/core/autograd.h"
#include "qkv/core/dispatch.h"
#include "qkv/core/gemm.h"
#include "qkv/core/parallel.h"
#include "qkv/core/ops.h"

#include <array>
#include <cstdint>
#include <functional>
#include <string>

namespace qkv::kernel {

using qkv::dispatch;  // core/dispatch.h: the one dtype dispatch

/// Throws naming `op` and the argument when a tensor argument is undefined (a default-constructed Tensor, an
/// optional argument not given, a grad() before any backward).
void check_defined(const char* op, std::initializer_list<const Tensor*> args);

/// check_defined, then names `op` as the running op until the scope ends: an allocation that fails inside it
/// says which op asked (OutOfMemoryError). Every op opens one first.
class OpScope {
 public:
  OpScope(const char* op, std::initializer_list<const Tensor*> args) : prev_(detail::g_current_op) {
    check_defined(op, args);
    detail::g_current_op = op;
  }
  ~OpScope() { detail::g_current_op = prev_; }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  const char* prev_;
};

inline void check_defined(const char* op, std::initializer_list<const Tensor*> args) {
  int i = 0;
  for (const Tensor* t : args) {
    QKV_CHECK(t->defined(), "{}: argument {} is an undefined tensor (default-constructed, or a grad() before any "
              "backward)", op, i + 1);
    ++i;
  }
}

/// Throws naming `op` unless both tensors are defined and share a dtype.
inline void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  QKV_CHECK(a.defined() && b.defined(), "{}: an operand is undefined", op);
  QKV_CHECK(a.dtype() == b.dtype(), "{}: mixed dtypes {} (shape {}) and {} (shape {}); convert one with .to()", op,
            dtype_name(a.dtype()), a.shape().str(), dtype_name(b.dtype()), b.shape().str());
}

/// Strides that read `in` as if broadcast to `out` (0 along broadcast dims, right-aligned).
inline Shape broadcast_strides(const Shape& in, const Shape& out) {
  Shape st = out;
  const Shape cs = contiguous_strides(in);
  const int off = out.rank() - in.rank();
  for (int d = 0; d < out.rank(); ++d) {
    const int di = d - off;
    st[d] = (di < 0 || in[di] == 1) ? 0 : cs[di];
  }
  return st;
}

/// For every element of `shape` in row-major order calls f(i, o1, o2): its flat index and its offsets through
/// strides s1 and s2. The innermost dim runs as a plain loop.
template <class F>
void for_each2(const Shape& shape, const Shape& s1, const Shape& s2, F&& f) {
  const int r = shape.rank();
  const std::int64_t n = shape.numel();
  if (n == 0) return;
  if (r == 0) {
    f(std::int64_t{0}, std::int64_t{0}, std::int64_t{0});
    return;
  }
  const std::int64_t inner = shape[r - 1], st1 = s1[r - 1], st2 = s2[r - 1];
  std::array<std::int64_t, Shape::kMaxRank> idx{};
  std::int64_t o1 = 0, o2 = 0;
  for (std::int64_t base = 0; base < n; base += inner) {
    for (std::int64_t j = 0; j < inner; ++j) f(base + j, o1 + j * st1, o2 + j * st2);
    for (int d = r - 2; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        o1 += s1[d];
        o2 += s2[d];
        break;
      }
      o1 -= s1[d] * (shape[d] - 1);
      o2 -= s2[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

/// Splits a at `dim` into (outer, n, inner) sizes: the layout every "over one dim" op walks.
struct DimSplit {
  std::int64_t outer = 1, n = 1, inner = 1;
};
// f(base, stride) for each of the outer * inner lines of length n along the split dim: element j of a line is
// at base + j * stride.
template <class F>
void for_each_line(const DimSplit& sp, F&& f) {
  for (std::int64_t o = 0; o < sp.outer; ++o)
    for (std::int64_t i = 0; i < sp.inner; ++i) f(o * sp.n * sp.inner + i, sp.inner);
}

inline DimSplit split_at(const Shape& s, int dim) {
  DimSplit r;
  for (int d = 0; d < s.rank(); ++d) {
    if (d < dim) r.outer *= s[d];
    else if (d == dim) r.n = s[d];
    else r.inner *= s[d];
  }
  return r;
}

}  // namespace qkv::kernel

namespace qkv::kernel {

/// True when `inner` equals the trailing dims of `outer` (so broadcasting it repeats it along the leading dims).
inline bool is_suffix(const Shape& inner, const Shape& outer) {
  if (inner.rank() == 0 || inner.rank() > outer.rank()) return false;
  for (int i = 1; i <= inner.rank(); ++i)
    if (inner[inner.rank() - i] != outer[outer.rank() - i]) return false;
  return inner.numel() > 0;
}

/// Tests only: the auto engine table (one name per size class) that `path` holds, else measured now and written
/// there; ends in "(cached)", "(measured)" or, where nothing can be kept, "(uncached)" (Eigen's table).
std::string gemm_table_at(const std::string& path);
/// Seconds for a product (n, k) @ (k, m) in the three layouts a product and its backward use, on engine `e` and one
/// thread (the measurement behind auto; `buf` holds at least 4 * max(n, k) * max(k, m) floats).
double time_gemm(GemmEngine e, std::int64_t n, std::int64_t k, std::int64_t m, std::vector<float>& buf);
/// The engine auto picks for a size class from the two engines' median seconds: OpenBLAS only when it wins by 3%
/// (a pure function of the timings; ties and NaN keep Eigen).
GemmEngine faster_engine(double eigen_seconds, double blas_seconds);

/// Tests only: forces the fused attention's query and key block sizes (0, 0 = chosen from the cache, the default),
/// so that small inputs exercise several blocks.
void set_attention_blocks(std::int64_t q, std::int64_t k);

using qkv::parallel_for;  // core/parallel.h: the one parallel loop

/// C (n, m) = or += op(A) op(B) on the engine core/gemm.h chooses, split across threads by row blocks. A is
/// stored (n, k) or, when ta, (k, n); B is stored (k, m) or, when tb, (m, k); all row-major. float and double.
template <class T>
void gemm(const T* a, bool ta, const T* b, bool tb, T* c, std::int64_t n, std::int64_t k, std::int64_t m,
          bool accumulate);

/// Runs rows(r0, len) over the blocks of output rows gemm splits a product (n, k) @ (k, m) on engine e into, across
/// the pool's threads (one block, on the calling thread, when the product is too small to split).
void gemm_rows(GemmEngine e, std::int64_t n, std::int64_t k, std::int64_t m,
               const std::function<void(std::int64_t r0, std::int64_t len)>& rows);
/// gemm and gemm_strided for float inputs rounded to bf16 (core/precision.h), float32 sums.
void gemm_bf16(const float* a, bool ta, const float* b, bool tb, float* c, std::int64_t n, std::int64_t k,
               std::int64_t m, bool accumulate);
void gemm_strided_bf16(const float* a, std::int64_t lda, bool ta, const float* b, std::int64_t ldb, bool tb, float* c,
                       std::int64_t ldc, std::int64_t n, std::int64_t k, std::int64_t m, bool accumulate);

/// The same on the calling thread only, with rows lda, ldb, ldc elements apart: for the blocks of a kernel that
/// is itself split across threads (attention's heads). The engine is the one measured for the product's size.
template <class T>
void gemm_strided(const T* a, std::int64_t lda, bool ta, const T* b, std::int64_t ldb, bool tb, T* c,
                  std::int64_t ldc, std::int64_t n, std::int64_t k, std::int64_t m, bool accumulate);

/// out = op(a, b) elementwise with broadcasting, recording nothing. `op` is a generic lambda over T.
template <class Op>
Tensor binary(const char* name, const Tensor& a, const Tensor& b, Op op) {
  check_same_dtype(name, a, b);
  const Shape s = broadcast_shapes(name, a.shape(), b.shape());
  Tensor out = Tensor::empty(s, a.dtype());
  dispatch(name, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* __restrict pa = a.data<T>();
    const T* __restrict pb = b.data<T>();
    T* __restrict po = out.data<T>();
    const std::int64_t n = out.numel();
    const bool par = parallel_worth(Work::Elementwise, double(n));
    if (a.shape() == s && b.shape() == s) {
      parallel_for(n, par, [=](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) po[i] = op(pa[i], pb[i]);
      });
    } else if (a.shape() == s && b.numel() == 1) {
      const T y = pb[0];
      parallel_for(n, par, [=](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) po[i] = op(pa[i], y);
      });
    } else if (a.shape() == s && is_suffix(b.shape(), s)) {
      // b broadcast along the leading dims (a bias, a positional table): rows of a against all of b.
      const std::int64_t w = b.numel(), rows = n / std::max<std::int64_t>(w, 1);
      parallel_for(rows, par, [=](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t r = lo; r < hi; ++r)
          for (std::int64_t j = 0; j < w; ++j) po[r * w + j] = op(pa[r * w + j], pb[j]);
      });
    } else {
      for_each2(s, broadcast_strides(a.shape(), s), broadcast_strides(b.shape(), s),
                [&](std::int64_t i, std::int64_t oa, std::int64_t ob) { po[i] = op(pa[oa], pb[ob]); });
    }
  });
  return out;
}

/// out = op(a) elementwise, recording nothing.
template <class Op>
Tensor unary(const char* name, const Tensor& a, Op op) {
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  dispatch(name, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* __restrict pa = a.data<T>();
    T* __restrict po = out.data<T>();
    const std::int64_t n = a.numel();
    parallel_for(n, parallel_worth(Work::Elementwise, double(n)), [=](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) po[i] = op(pa[i]);
    });
  });
  return out;
}

}  // namespace qkv::kernel
