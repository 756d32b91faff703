// matmul: a is (..., N, K), b is (..., K, M), out is (..., N, M) with the batch dims broadcast. Every product is
// one GEMM (kernel::gemm, core/gemm.cpp) on our storage; no copies, no transposes materialised.
#include "qkv/core/ops/kernel.h"

#include <cctype>

namespace qkv {
namespace {

using kernel::gemm;

Shape batch_of(const Shape& s) {
  Shape b = s;
  b.erase(b.rank() - 1);
  b.erase(b.rank() - 1);
  return b;
}

// Calls f(ia, ib, io) with the matrix index into a, b and out for each element of the broadcast batch.
template <class F>
void for_each_batch(const Shape& ba, const Shape& bb, const Shape& batch, F&& f) {
  kernel::for_each2(batch, kernel::broadcast_strides(ba, batch), kernel::broadcast_strides(bb, batch), f);
}

// (K) @ (..., K, M) treats a as (1, K), (..., N, K) @ (K) treats b as (K, 1); the added dim is then dropped.
Tensor matmul_vector(const Tensor& a, const Tensor& b) {
  const bool left = a.dim() == 1;
  Tensor out = left ? matmul(unsqueeze(a, 0), b) : matmul(a, unsqueeze(b, 1));
  Shape s = out.shape();
  s.erase(s.rank() - (left ? 2 : 1));
  return reshape(out, s);
}

// dA = dC B^T, dB = A^T dC; a broadcast operand accumulates over the batch elements that read it (so starts from
// zeros), while the flat case (b without batch dims) writes each gradient with one GEMM.
Grads matmul_backward(const Tensor& a, const Tensor& b, const Tensor& g, bool ga, bool gb, bool flat,
                      const Shape& batch, std::int64_t n, std::int64_t k, std::int64_t m) {
  const auto make = [flat](bool need, const Tensor& like) {
    if (!need) return Tensor();
    return flat ? Tensor::empty(like.shape(), like.dtype()) : Tensor::zeros(like.shape(), like.dtype());
  };
  Tensor da = make(ga, a), db = make(gb, b);
  kernel::dispatch("matmul_backward", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pa = a.data<T>(), *pb = b.data<T>(), *pg = g.data<T>();
    if (flat) {
      const std::int64_t rows = a.numel() / k;
      if (ga) gemm(pg, false, pb, true, da.data<T>(), rows, m, k, false);
      if (gb) gemm(pa, true, pg, false, db.data<T>(), k, rows, m, false);
      return;
    }
    for_each_batch(batch_of(a.shape()), batch_of(b.shape()), batch,
                   [&](std::int64_t io, std::int64_t ia, std::int64_t ib) {
                     const T* gi = pg + io * n * m;
                     if (ga) gemm(gi, false, pb + ib * k * m, true, da.data<T>() + ia * n * k, n, m, k, true);
                     if (gb) gemm(pa + ia * n * k, true, gi, false, db.data<T>() + ib * k * m, k, n, m, true);
                   });
  });
  return {da, db};
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  const kernel::OpScope op_scope("matmul", {&a, &b});

  kernel::check_same_dtype("matmul", a, b);
  QKV_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both operands need at least one dim, got shapes {} and {}",
            a.shape().str(), b.shape().str());
  if (a.dim() == 1 || b.dim() == 1) return matmul_vector(a, b);
  const std::int64_t n = a.size(-2), k = a.size(-1), m = b.size(-1);
  QKV_CHECK(b.size(-2) == k, "matmul: shapes {} and {} cannot be multiplied ({}x{} and {}x{})", a.shape().str(),
            b.shape().str(), n, k, b.size(-2), m);
  const Shape ba = batch_of(a.shape()), bb = batch_of(b.shape());
  Shape out_shape = broadcast_shapes("matmul", ba, bb);
  const Shape batch = out_shape;
  out_shape.push_back(n);
  out_shape.push_back(m);
  Tensor out = Tensor::empty(out_shape, a.dtype());
  // When b has no batch dims, (..., N, K) @ (K, M) is one GEMM with all batch rows stacked.
  const bool flat = bb.rank() == 0;
  kernel::dispatch("matmul", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pa = a.data<T>(), *pb = b.data<T>();
    T* po = out.data<T>();
    if (flat) {
      gemm(pa, false, pb, false, po, a.numel() / k, k, m, false);
      return;
    }
    for_each_batch(ba, bb, batch, [&](std::int64_t io, std::int64_t ia, std::int64_t ib) {
      gemm(pa + ia * n * k, false, pb + ib * k * m, false, po + io * n * m, n, k, m, false);
    });
  });
  if (any_requires_grad({&a, &b})) {
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    record(out, "matmul", {&a, &b}, [a = a.detach(), b = b.detach(), ga, gb, flat, batch, n, k, m](const Tensor& g) {
      return matmul_backward(a, b, g, ga, gb, flat, batch, n, k, m);
    }, {&a, &b});
  }
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const kernel::OpScope op_scope("linear", {&x, &weight});

  // x is (..., IN), weight is (OUT, IN), bias is (OUT), out is (..., OUT)
  kernel::check_same_dtype("linear", x, weight);
  QKV_CHECK(weight.dim() == 2, "linear: weight must be (out_features, in_features), got shape {}",
            weight.shape().str());
  const std::int64_t in = weight.size(1), out_f = weight.size(0);
  QKV_CHECK(x.dim() >= 1 && x.size(-1) == in, "linear: input shape {} does not end in in_features = {} (weight {})",
            x.shape().str(), in, weight.shape().str());
  if (bias.defined()) {
    kernel::check_same_dtype("linear", x, bias);
    QKV_CHECK(bias.dim() == 1 && bias.size(0) == out_f, "linear: bias shape {} does not match out_features = {}",
              bias.shape().str(), out_f);
  }
  Shape out_shape = x.shape();
  out_shape[out_shape.rank() - 1] = out_f;
  Tensor out = Tensor::empty(out_shape, x.dtype());
  const std::int64_t rows = x.numel() / std::max<std::int64_t>(in, 1);
  kernel::dispatch("linear", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* po = out.data<T>();
    gemm(x.data<T>(), false, weight.data<T>(), true, po, rows, in, out_f, false);
    if (bias.defined()) {
      const T* pb = bias.data<T>();
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t j = 0; j < out_f; ++j) po[r * out_f + j] += pb[j];
    }
  });
  if (any_requires_grad({&x, &weight, &bias})) {
    const bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
    record(out, "linear", {&x, &weight, &bias},
           [x = x.detach(), w = weight.detach(), gx, gw, gb, rows, in, out_f](const Tensor& g) -> Grads {
             // dx = g W (rows, IN); dW = g^T x (OUT, IN); db = column sums of g
             Tensor dx = gx ? Tensor::empty(x.shape(), x.dtype()) : Tensor();
             Tensor dw = gw ? Tensor::empty(w.shape(), w.dtype()) : Tensor();
             Tensor db = gb ? Tensor::zeros(Shape{out_f}, w.dtype()) : Tensor();
             kernel::dispatch("linear_backward", x.dtype(), [&](auto tag) {
               using T = decltype(tag);
               const T* pg = g.data<T>();
               if (gx) gemm(pg, false, w.data<T>(), false, dx.data<T>(), rows, out_f, in, false);
               if (gw) gemm(pg, true, x.data<T>(), false, dw.data<T>(), out_f, rows, in, false);
               if (gb) {
                 T* pd = db.data<T>();
                 for (std::int64_t r = 0; r < rows; ++r)
                   for (std::int64_t j = 0; j < out_f; ++j) pd[j] += pg[r * out_f + j];
               }
             });
             return {dx, dw, db};
           }, {&x, &weight});
  }
  return out;
}

}  // namespace qkv

namespace qkv {
namespace {

// One operand's subscripts: letters, each at most once (no diagonals), one per dim.
std::string einsum_operand(const std::string& spec, const Tensor& t, int which) {
  QKV_CHECK(static_cast<int>(spec.size()) == t.dim(), "einsum: operand {} has {} subscripts ('{}') for a tensor of rank {} "
            "(shape {})", which, spec.size(), spec, t.dim(), t.shape().str());
  for (std::size_t i = 0; i < spec.size(); ++i) {
    QKV_CHECK(std::isalpha(static_cast<unsigned char>(spec[i])), "einsum: '{}' in operand {} is not a letter", spec[i],
              which);
    QKV_CHECK(spec.find(spec[i], i + 1) == std::string::npos,
              "einsum: subscript '{}' repeats in operand {} ('{}'): diagonals are not supported", spec[i], which, spec);
  }
  return spec;
}

std::int64_t size_of(const std::string& spec, const Tensor& t, char c) {
  return t.size(static_cast<int>(spec.find(c)));
}

// Moves `t`'s dims into the order of `want` (letters of spec), then reshapes them to the given groups' products.
Tensor arrange(const Tensor& t, const std::string& spec, const std::string& want, const Shape& groups) {
  std::vector<int> perm;
  for (char c : want) perm.push_back(static_cast<int>(spec.find(c)));
  return reshape(permute(t, perm), groups);
}

// The equation's three subscript strings, checked against the operands.
struct EinsumSpec {
  std::string a, b, out;
};

EinsumSpec parse_einsum(const std::string& equation, const Tensor& a, const Tensor& b) {
  std::string eq;
  for (char c : equation)
    if (c != ' ') eq += c;
  const auto comma = eq.find(','), arrow = eq.find("->");
  QKV_CHECK(comma != std::string::npos && arrow != std::string::npos && comma < arrow &&
                eq.find(',', comma + 1) == std::string::npos,
            "einsum: expected two operands and an explicit output, as 'ij,jk->ik', got '{}'", equation);
  EinsumSpec s{einsum_operand(eq.substr(0, comma), a, 0), einsum_operand(eq.substr(comma + 1, arrow - comma - 1), b, 1),
               eq.substr(arrow + 2)};
  for (std::size_t i = 0; i < s.out.size(); ++i) {
    const char c = s.out[i];
    QKV_CHECK(s.a.find(c) != std::string::npos || s.b.find(c) != std::string::npos,
              "einsum: output subscript '{}' is in neither operand ('{}')", c, equation);
    QKV_CHECK(s.out.find(c, i + 1) == std::string::npos, "einsum: output subscript '{}' repeats ('{}')", c, equation);
  }
  for (char c : s.a)
    if (s.b.find(c) != std::string::npos)
      QKV_CHECK(size_of(s.a, a, c) == size_of(s.b, b, c),
                "einsum: subscript '{}' is {} in operand 0 (shape {}) but {} in operand 1 (shape {})", c,
                size_of(s.a, a, c), a.shape().str(), size_of(s.b, b, c), b.shape().str());
  return s;
}

// `t` with the dims of the letters in `gone` summed out, and its subscripts without them.
std::pair<Tensor, std::string> sum_out(const Tensor& t, std::string spec, const std::string& gone) {
  if (gone.empty()) return {t, spec};
  std::vector<int> dims;
  for (char c : gone) dims.push_back(static_cast<int>(spec.find(c)));
  std::erase_if(spec, [&](char c) { return gone.find(c) != std::string::npos; });
  return {sum(t, dims), spec};
}

std::int64_t product_of(const std::string& labels, const std::string& spec, const Tensor& t) {
  std::int64_t n = 1;
  for (char c : labels) n *= size_of(spec, t, c);
  return n;
}

}  // namespace

Tensor einsum(const std::string& equation, const Tensor& a, const Tensor& b) {
  const kernel::OpScope op_scope("einsum", {&a, &b});
  const EinsumSpec s = parse_einsum(equation, a, b);
  // Labels: batch (both operands and the output), left / right (one operand and the output), contracted (both
  // operands, not the output); a label in one operand only and not the output is summed out of it first.
  std::string batch, left, right, contracted, a_only, b_only;
  for (char c : s.a) {
    const bool in_b = s.b.find(c) != std::string::npos, in_o = s.out.find(c) != std::string::npos;
    (in_b ? (in_o ? batch : contracted) : (in_o ? left : a_only)) += c;
  }
  for (char c : s.b)
    if (s.a.find(c) == std::string::npos) (s.out.find(c) != std::string::npos ? right : b_only) += c;
  const auto [x, xs] = sum_out(a, s.a, a_only);
  const auto [y, ys] = sum_out(b, s.b, b_only);
  const std::int64_t nb = product_of(batch, xs, x), nc = product_of(contracted, xs, x);
  const Tensor p = matmul(arrange(x, xs, batch + left + contracted, {nb, product_of(left, xs, x), nc}),
                          arrange(y, ys, batch + contracted + right, {nb, nc, product_of(right, ys, y)}));
  const std::string have = batch + left + right;  // p is (batch, left, right), each group flattened
  Shape full;
  for (char c : have) full.push_back(xs.find(c) != std::string::npos ? size_of(xs, x, c) : size_of(ys, y, c));
  std::vector<int> perm;
  for (char c : s.out) perm.push_back(static_cast<int>(have.find(c)));
  return permute(reshape(p, full), perm);
}

}  // namespace qkv
