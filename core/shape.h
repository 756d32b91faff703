#pragma once
// Shape: a small inline vector of dimension sizes (rank 0 to 8), so creating a tensor never allocates for it.
#include "qkv/core/errors.h"

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace qkv {

class Shape {
 public:
  static constexpr int kMaxRank = 8;

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) { assign(dims.begin(), dims.end()); }
  Shape(const std::vector<std::int64_t>& dims) { assign(dims.begin(), dims.end()); }  // NOLINT: implicit on purpose

  /// Number of dimensions.
  int rank() const { return n_; }
  int size() const { return n_; }
  std::int64_t operator[](int i) const { return d_[i]; }
  std::int64_t& operator[](int i) { return d_[i]; }
  const std::int64_t* begin() const { return d_.data(); }
  const std::int64_t* end() const { return d_.data() + n_; }
  std::int64_t back() const {
    QKV_CHECK(n_ > 0, "shape: back() of a 0-d shape (a scalar has no last dimension)");
    return d_[n_ - 1];
  }

  /// Product of the dimensions (1 for rank 0). Throws naming the shape when it does not fit int64: an overflowed
  /// count would allocate too little and let every op read past the end.
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < n_; ++i)
      if (__builtin_mul_overflow(n, d_[i], &n)) overflow();
    return n;
  }
  void push_back(std::int64_t v) {
    QKV_CHECK(n_ < kMaxRank, "shape: rank {} exceeds the maximum of {}", n_ + 1, kMaxRank);
    d_[n_++] = v;
  }
  void insert(int pos, std::int64_t v) {
    push_back(0);
    for (int i = n_ - 1; i > pos; --i) d_[i] = d_[i - 1];
    d_[pos] = v;
  }
  void erase(int pos) {
    for (int i = pos; i + 1 < n_; ++i) d_[i] = d_[i + 1];
    --n_;
  }
  std::vector<std::int64_t> vec() const { return {begin(), end()}; }
  /// "[2, 3, 4]"
  std::string str() const;

  friend bool operator==(const Shape& a, const Shape& b) {
    if (a.n_ != b.n_) return false;
    for (int i = 0; i < a.n_; ++i)
      if (a.d_[i] != b.d_[i]) return false;
    return true;
  }

 private:
  template <class It>
  void assign(It first, It last) {
    for (; first != last; ++first) {
      QKV_CHECK(*first >= 0 || *first == -1, "shape: negative dimension {}", *first);
      push_back(*first);
    }
  }
  [[noreturn]] void overflow() const;
  std::array<std::int64_t, kMaxRank> d_{};
  int n_ = 0;
};

/// Row-major (contiguous) strides of a shape, in elements.
Shape contiguous_strides(const Shape& s);

/// Wraps a possibly negative dim into [0, rank); throws naming `op` when out of range.
int normalize_dim(const char* op, int dim, int rank);

}  // namespace qkv
