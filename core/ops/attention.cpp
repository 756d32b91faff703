// Fused multi-head (and grouped-query) scaled dot-product attention in O(B*H*T) extra memory (FlashAttention-2).
// Legend: B batch, T sequence, H heads, d head width; Bq, Bk the query and key block sizes. q, k, v are (B, T,
// heads*d) as the projections produce them, each head a (T, d) block with row stride heads*d, read through strided
// Eigen maps (never permuted into copies). Forward walks key blocks with an online softmax and keeps one
// log-sum-exp per query row; backward recomputes each score block from q, k and it. Causal blocks above the
// diagonal are skipped both ways. Block splits depend on the sizes (and the cache), never on the thread count, and
// each key/value head's backward runs on one thread: results are identical for any number of threads.
#include "qkv/core/ops/kernel.h"

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

namespace qkv {
namespace {

template <class T>
using MatR = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Strided = Eigen::Map<MatR<T>, 0, Eigen::OuterStride<>>;
template <class T>
using CStrided = Eigen::Map<const MatR<T>, 0, Eigen::OuterStride<>>;
template <class T>
using Col = Eigen::Array<T, Eigen::Dynamic, 1>;

// t query rows per batch. Keys: tk rows stored per batch, the first nk of them used, and query i sits at key
// position q0 + i (causal hides keys after it). Self-attention has tk = nk = t and q0 = 0; a cached generation
// step has t new queries after q0 keys already cached, in a buffer of tk rows. h query heads share hk key/value
// heads (grouped-query attention): query head i reads key/value head i / (h / hk); hk = h is multi-head.
struct Dims {
  std::int64_t b, t, h, dk, dv, tk, nk, q0, hk;
  std::int64_t group() const { return h / hk; }
};
Dims self_dims(std::int64_t b, std::int64_t t, std::int64_t h, std::int64_t dk, std::int64_t dv, std::int64_t hk) {
  return {b, t, h, dk, dv, t, t, 0, hk};
}

// Where q, k, v live: each is a (B, T, H*d) column range [offset, offset + H*d) of rows `stride` wide. Separate
// tensors have offset 0 and stride H*d; a packed [q | k | v] projection shares one buffer and one stride.
struct Layout {
  std::int64_t q_off, k_off, v_off, stride_q, stride_k, stride_v;
};

// Block sizes from the running machine's cache (Eigen reads it with cpuid), not constants tuned on one CPU: a key
// block's K and V rows plus a (Bq, Bk) score block and its gradient stay within half the L2 cache. Up to T <= Bk
// (every shipped config) there is a single key block, as in the plain kernel.
struct Blocks {
  std::int64_t q, k;
};
std::atomic<std::int64_t> g_forced_q{0}, g_forced_k{0};  // tests: kernel::set_attention_blocks

Blocks blocks_for(const Dims& d, std::size_t elem) {
  if (g_forced_q.load() > 0) return {g_forced_q.load(), g_forced_k.load()};
  constexpr std::int64_t kBq = 64, kMinBk = 64, kMaxBk = 1024;
  const double budget = double(Eigen::l2CacheSize()) / 2;
  std::int64_t bk = kMinBk;
  while (bk < kMaxBk && double(2 * bk) * double(d.dk + d.dv + 2 * kBq) * double(elem) <= budget) bk *= 2;
  return {kBq, bk};
}

// Everything one (b, h) head reads, as strided maps; blocks are row ranges of these.
template <class T>
struct Head {
  CStrided<T> q, k, v;
  const unsigned char* pad;  // (T) key flags of batch b, or nullptr
  std::int64_t q0;           // key position of query row 0
};
template <class T>
Head<T> head_of(const T* pq, const T* pk, const T* pv, const Layout& L, const Dims& d, std::int64_t bh,
                const std::vector<unsigned char>& pad) {
  const std::int64_t b = bh / d.h, h = bh % d.h, kh = h / d.group();
  return {CStrided<T>(pq + b * d.t * L.stride_q + h * d.dk, d.t, d.dk, Eigen::OuterStride<>(L.stride_q)),
          CStrided<T>(pk + b * d.tk * L.stride_k + kh * d.dk, d.nk, d.dk, Eigen::OuterStride<>(L.stride_k)),
          CStrided<T>(pv + b * d.tk * L.stride_v + kh * d.dv, d.nk, d.dv, Eigen::OuterStride<>(L.stride_v)),
          pad.empty() ? nullptr : pad.data() + b * d.t, d.q0};
}

// c = or += op(a) op(b) for one head's blocks (Eigen maps, rows contiguous), on the calling thread and the GEMM
// engine measured faster for the size (kernel::gemm_strided). Where OpenBLAS has small-matrix kernels (AVX-512
// here) they skip the packing that dominates a 12 x 32 x 12 product: the tiny config ran 1.15x faster; where
// it has not (its Haswell kernels) Eigen measures faster and keeps these products.
template <class A, class B, class C>
void product(const A& a, bool ta, const B& b, bool tb, C&& c, bool accumulate) {
  kernel::gemm_strided(a.data(), a.outerStride(), ta, b.data(), b.outerStride(), tb, c.data(), c.outerStride(),
                       c.rows(), ta ? a.rows() : a.cols(), c.cols(), accumulate);
}

// Sets the hidden entries of the block (queries from i0, keys from j0) to `value`: padded keys and, with causal,
// keys after the query.
template <class T>
void mask_block(const Head<T>& hd, std::int64_t i0, std::int64_t j0, bool causal, MatR<T>& S, T value) {
  const std::int64_t nq = S.rows(), nk = S.cols();
  if (hd.pad != nullptr)
    for (std::int64_t c = 0; c < nk; ++c)
      if (hd.pad[j0 + c]) S.col(c).setConstant(value);
  const std::int64_t p0 = hd.q0 + i0;  // key position of the block's first query
  if (causal && j0 + nk - 1 > p0)      // the block reaches above the diagonal: key j > query i is hidden
    for (std::int64_t r = 0; r < nq; ++r)
      for (std::int64_t c = std::max<std::int64_t>(0, p0 + r + 1 - j0); c < nk; ++c) S(r, c) = value;
}

// S = Q_i K_j^T for queries [i0, i0 + S.rows()) and keys [j0, j0 + S.cols()), hidden keys set to -inf. The
// 1/sqrt(dk) scale is applied by the callers inside their exp pass (one pass over S instead of two).
template <class T>
void scores(const Head<T>& hd, std::int64_t i0, std::int64_t j0, bool causal, MatR<T>& S) {
  product(hd.q.middleRows(i0, S.rows()), false, hd.k.middleRows(j0, S.cols()), true, S, false);
  mask_block(hd, i0, j0, causal, S, -std::numeric_limits<T>::infinity());
}

// S(r, c) <- exp(S(r, c) * scale - shift(r)) for the block scores() made, over the whole (contiguous) block as one
// flat array: row by row, a short row (12 keys) never fills a 16-float packet and every element fell to scalar
// expf. Hidden entries, and rows whose shift is -inf (all keys hidden), become exactly 0: Eigen's packet exp of
// -inf is ~5.6e-309 for doubles, not 0, which would leave a hidden (future) key a sliver of weight.
template <class T, class Shift>
void exp_shifted(MatR<T>& S, const Head<T>& hd, std::int64_t i0, std::int64_t j0, bool causal, double scale,
                 Shift&& shift) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  bool empty_rows = false;
  for (std::int64_t r = 0; r < S.rows(); ++r) {
    const T sub = shift(r);
    empty_rows = empty_rows || sub == kNegInf;
    T* row = &S(r, 0);
    for (std::int64_t c = 0; c < S.cols(); ++c) row[c] = row[c] * T(scale) - (sub == kNegInf ? T(0) : sub);
  }
  Eigen::Map<Col<T>> flat(S.data(), S.size());
  flat = flat.exp();
  mask_block(hd, i0, j0, causal, S, T(0));
  if (empty_rows)
    for (std::int64_t r = 0; r < S.rows(); ++r)
      if (shift(r) == kNegInf) S.row(r).setZero();
}

// Keys [0, end) that the queries at key positions [p0, p0 + nq) can see: all nk, or (causal) up to the last query.
std::int64_t key_end(std::int64_t nk, std::int64_t p0, std::int64_t nq, bool causal) {
  return causal ? std::min(nk, p0 + nq) : nk;
}

// One query block: online softmax over key blocks. Writes O rows and lse = m + log(l) per row; a fully masked
// row has l = 0, so its output is 0/0 = NaN and its lse -inf, as torch gives NaN there.
// Per-thread scratch of the forward, allocated once per thread rather than per block.
template <class T>
struct ForwardScratch {
  MatR<T> S, acc;
  Col<T> m, l;
};

template <class T>
void forward_block(const Head<T>& hd, std::int64_t i0, std::int64_t nq, const Blocks& bl, const Dims& d, bool causal,
                   double scale, Strided<T>& O, T* lse, ForwardScratch<T>& w) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  auto &S = w.S, &acc = w.acc;
  auto &m = w.m, &l = w.l;
  m.setConstant(nq, kNegInf);
  l.setZero(nq);
  acc.setZero(nq, d.dv);
  const std::int64_t end = key_end(d.nk, hd.q0 + i0, nq, causal);
  for (std::int64_t j0 = 0; j0 < end; j0 += bl.k) {
    const std::int64_t nk = std::min(bl.k, end - j0);
    S.resize(nq, nk);
    scores(hd, i0, j0, causal, S);
    for (std::int64_t r = 0; r < nq; ++r) {  // the new running max; earlier blocks' sums rescale to it
      const T m_new = std::max(m(r), S.row(r).maxCoeff() * T(scale));
      if (j0 > 0 && m_new != kNegInf && m_new != m(r)) {
        const T alpha = std::exp(m(r) - m_new);  // 0 when nothing was added before
        l(r) *= alpha;
        acc.row(r) *= alpha;
      }
      m(r) = m_new;
    }
    exp_shifted(S, hd, i0, j0, causal, scale, [&](std::int64_t r) { return m(r); });  // all keys hidden so far: 0
    l += S.rowwise().sum().array();
    product(S, false, hd.v.middleRows(j0, nk), false, acc, true);
  }
  for (std::int64_t r = 0; r < nq; ++r) {
    O.row(i0 + r) = acc.row(r) * (T(1) / l(r));
    lse[i0 + r] = m(r) + std::log(l(r));
  }
}

std::pair<Tensor, Tensor> attention_forward(const Tensor& tq, const Tensor& tk, const Tensor& tv, const Layout& L,
                                            const Dims& d, bool causal, const std::vector<unsigned char>& pad) {
  // out (B, T, H*dv); lse (B, H, T): all that backward needs besides q, k, v and out.
  Tensor out = Tensor::empty({d.b, d.t, d.h * d.dv}, tq.dtype());
  Tensor lse = Tensor::empty({d.b, d.h, d.t}, tq.dtype());
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.dk));
  const double work = double(d.b * d.h) * double(d.t * d.nk) * double(d.dk + d.dv);
  kernel::dispatch("attention", tq.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Blocks bl = blocks_for(d, sizeof(T));
    const std::int64_t qblocks = (d.t + bl.q - 1) / bl.q, so = d.h * d.dv;
    const T *pq = tq.data<T>() + L.q_off, *pk = tk.data<T>() + L.k_off, *pv = tv.data<T>() + L.v_off;
    T *po = out.data<T>(), *pl = lse.data<T>();
    // Parallel over (batch, head, query block): each block's rows are computed the same way on any thread.
    kernel::parallel_for(d.b * d.h * qblocks, parallel_worth(Work::Attention, work), [&](std::int64_t lo, std::int64_t hi) {
      ForwardScratch<T> scratch;
      for (std::int64_t w = lo; w < hi; ++w) {
        const std::int64_t bh = w / qblocks, i0 = (w % qblocks) * bl.q;
        const Head<T> hd = head_of(pq, pk, pv, L, d, bh, pad);
        Strided<T> O(po + (bh / d.h) * d.t * so + (bh % d.h) * d.dv, d.t, d.dv, Eigen::OuterStride<>(so));
        forward_block(hd, i0, std::min(bl.q, d.t - i0), bl, d, causal, scale, O, pl + bh * d.t, scratch);
      }
    });
  });
  return {out, lse};
}

// One (b, h) head's gradients, FlashAttention-2's backward in one pass: for each key block j and each query block
// i that sees it, P = exp(S - lse) is recomputed, then with Di = rowsum(dO_i * O_i):
//   dV_j += P^T dO_i;  dP = dO_i V_j^T;  dS = P * (dP - Di) * scale;  dQ_i += dS K_j;  dK_j += dS^T Q_i.
// Masked scores are -inf, so P and dS are 0 there. dQ, dK, dV need not be initialised: each block's first
// contribution is written, not added (key block 0 is the first that every query block sees, and the first query
// block in the loop the first that sees key block j), which saves zeroing them in a pass of their own. Under
// grouped-query attention the group's later query heads add to the dK, dV the first one wrote (first_in_group).
template <class T>
void backward_head(const Head<T>& hd, const CStrided<T>& O, const CStrided<T>& dO, const T* lse, const Blocks& bl,
                   const Dims& d, bool causal, double scale, Strided<T>& dQ, Strided<T>& dK, Strided<T>& dV,
                   MatR<T>& S, MatR<T>& dP, Col<T>& D, bool first_in_group) {
  D = (dO.array() * O.array()).rowwise().sum();
  // A row whose keys are all hidden (lse = -inf) output NaN; it passes no gradient rather than spreading NaN into
  // every dK and dV row: its P and D are taken as 0.
  for (std::int64_t i = 0; i < d.t; ++i)
    if (lse[i] == -std::numeric_limits<T>::infinity()) D(i) = 0;
  for (std::int64_t j0 = 0; j0 < d.t; j0 += bl.k) {
    const std::int64_t nk = std::min(bl.k, d.t - j0);
    // Causal: query blocks wholly above the diagonal (their last query < j0) see none of these keys.
    const std::int64_t first_i0 = causal ? j0 / bl.q * bl.q : 0;
    for (std::int64_t i0 = first_i0; i0 < d.t; i0 += bl.q) {
      const std::int64_t nq = std::min(bl.q, d.t - i0);
      const bool add_to_key = i0 != first_i0 || !first_in_group, add_to_query = j0 != 0;
      S.resize(nq, nk);
      scores(hd, i0, j0, causal, S);
      exp_shifted(S, hd, i0, j0, causal, scale, [&](std::int64_t r) { return lse[i0 + r]; });  // P
      product(S, true, dO.middleRows(i0, nq), false, dV.middleRows(j0, nk), add_to_key);
      dP.resize(nq, nk);
      product(dO.middleRows(i0, nq), false, hd.v.middleRows(j0, nk), true, dP, false);
      for (std::int64_t r = 0; r < nq; ++r)
        dP.row(r) = (S.row(r).array() * (dP.row(r).array() - D(i0 + r)) * T(scale)).matrix();
      product(dP, false, hd.k.middleRows(j0, nk), false, dQ.middleRows(i0, nq), add_to_query);
      product(dP, true, hd.q.middleRows(i0, nq), false, dK.middleRows(j0, nk), add_to_key);
    }
  }
}

// Writes dq, dk, dv into the buffers gq, gk, gv laid out as L describes (they may be one buffer; every element
// of the q, k and v column ranges is written).
void attention_backward(const Tensor& tq, const Tensor& tk, const Tensor& tv, const Tensor& out, const Tensor& lse,
                        const Tensor& g, const Tensor& gq, const Tensor& gk, const Tensor& gv, const Layout& L,
                        const Dims& d, bool causal, const std::vector<unsigned char>& pad) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.dk));
  const double work = double(d.b * d.h) * double(d.t * d.t) * double(d.dk + d.dv);
  kernel::dispatch("attention_backward", tq.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Blocks bl = blocks_for(d, sizeof(T));
    const T *pq = tq.data<T>() + L.q_off, *pk = tk.data<T>() + L.k_off, *pv = tv.data<T>() + L.v_off;
    const T *po = out.data<T>(), *pg = g.data<T>(), *pl = lse.data<T>();
    T *pdq = gq.data<T>() + L.q_off, *pdk = gk.data<T>() + L.k_off, *pdv = gv.data<T>() + L.v_off;
    const std::int64_t so = d.h * d.dv;
    // Parallel over (batch, key/value head): dK and dV sum over query blocks and the group's query heads, so one
    // thread owns them (no atomics, and the same order of additions for any thread count).
    kernel::parallel_for(d.b * d.hk, parallel_worth(Work::Attention, work), [&](std::int64_t lo, std::int64_t hi) {
      MatR<T> S, dP;  // scratch per thread
      Col<T> D;
      for (std::int64_t bk = lo; bk < hi; ++bk) {
        const std::int64_t b = bk / d.hk, kh = bk % d.hk;
        Strided<T> dK(pdk + b * d.t * L.stride_k + kh * d.dk, d.t, d.dk, Eigen::OuterStride<>(L.stride_k));
        Strided<T> dV(pdv + b * d.t * L.stride_v + kh * d.dv, d.t, d.dv, Eigen::OuterStride<>(L.stride_v));
        for (std::int64_t h = kh * d.group(); h < (kh + 1) * d.group(); ++h) {
          const std::int64_t bh = b * d.h + h;
          const Head<T> hd = head_of(pq, pk, pv, L, d, bh, pad);
          const CStrided<T> O(po + b * d.t * so + h * d.dv, d.t, d.dv, Eigen::OuterStride<>(so));
          const CStrided<T> dO(pg + b * d.t * so + h * d.dv, d.t, d.dv, Eigen::OuterStride<>(so));
          Strided<T> dQ(pdq + b * d.t * L.stride_q + h * d.dk, d.t, d.dk, Eigen::OuterStride<>(L.stride_q));
          backward_head(hd, O, dO, pl + bh * d.t, bl, d, causal, scale, dQ, dK, dV, S, dP, D, h == kh * d.group());
        }
      }
    });
  });
}

// The (B, H, T, T) weights, for inspection only: exp(S - lse) row by row, from the statistics forward kept.
// Not part of the graph, so changing them can never change a gradient.
Tensor attention_weights(const Tensor& tq, const Tensor& tk, const Tensor& lse, const Layout& L, const Dims& d,
                         bool causal, const std::vector<unsigned char>& pad) {
  Tensor w = Tensor::empty({d.b, d.h, d.t, d.t}, tq.dtype());
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.dk));
  kernel::dispatch("attention_weights", tq.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pq = tq.data<T>() + L.q_off, *pk = tk.data<T>() + L.k_off, *pl = lse.data<T>();
    kernel::parallel_for(d.b * d.h, parallel_worth(Work::Attention, double(d.b * d.h * d.t * d.t) * double(d.dk)),
                         [&](std::int64_t lo, std::int64_t hi) {
      MatR<T> S(d.t, d.t);
      for (std::int64_t bh = lo; bh < hi; ++bh) {
        const Head<T> hd = head_of(pq, pk, pk, L, d, bh, pad);  // v is not read
        scores(hd, 0, 0, causal, S);
        Eigen::Map<MatR<T>> W(w.data<T>() + bh * d.t * d.t, d.t, d.t);
        exp_shifted(S, hd, 0, 0, causal, scale, [&](std::int64_t r) { return pl[bh * d.t + r]; });
        W = S;
      }
    });
  });
  return w;
}

// Hkv of q, k, v widths H*dk, Hkv*dk, Hkv*dv: it must divide heads (Hkv = heads is multi-head), else an error.
std::int64_t kv_heads_of(const char* op, std::int64_t qw, std::int64_t kw, std::int64_t vw, std::int64_t heads) {
  QKV_CHECK(heads > 0 && qw % heads == 0, "{}: heads = {} must divide the width of q ({})", op, heads, qw);
  const std::int64_t dk = qw / heads, kv_heads = kw / std::max<std::int64_t>(dk, 1);
  QKV_CHECK(dk > 0 && kw % dk == 0 && kv_heads > 0 && heads % kv_heads == 0 && vw % kv_heads == 0 && vw > 0,
            "{}: k's width {} must be a number of key/value heads of q's head width {} (q is {} = {} heads) that "
            "divides the {} query heads, and v's width {} a multiple of it", op, kw, dk, qw, heads, heads, vw);
  return kv_heads;
}

std::vector<unsigned char> padding_flags(const Tensor& mask, const Dims& d) {
  std::vector<unsigned char> pad;
  if (!mask.defined()) return pad;
  QKV_CHECK(mask.dim() == 2 && mask.size(0) == d.b && mask.size(1) == d.t,
            "attention: key_padding_mask must be (B, T) = ({}, {}), got {}", d.b, d.t, mask.shape().str());
  for (double x : mask.to_vector()) pad.push_back(x != 0.0);
  return pad;
}

}  // namespace

namespace kernel {
void set_attention_blocks(std::int64_t q, std::int64_t k) {
  QKV_CHECK((q == 0 && k == 0) || (q > 0 && k > 0), "set_attention_blocks: both sizes positive, or both 0, got {} and {}",
            q, k);
  g_forced_q.store(q);
  g_forced_k.store(k);
}
}  // namespace kernel

std::pair<Tensor, Tensor> attention(const Tensor& q, const Tensor& k, const Tensor& v, std::int64_t heads, bool causal,
                                    const Tensor& key_padding_mask, bool need_weights) {
  const kernel::OpScope op_scope("attention", {&q, &k, &v});
  kernel::check_same_dtype("attention", q, k);
  kernel::check_same_dtype("attention", q, v);
  QKV_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "attention: q, k, v must be (B, T, H*d), got {}, {}, {}",
            q.shape().str(), k.shape().str(), v.shape().str());
  QKV_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && v.size(0) == q.size(0) && v.size(1) == q.size(1),
            "attention: q {}, k {} and v {} must share their (B, T)", q.shape().str(), k.shape().str(),
            v.shape().str());
  const std::int64_t kv_heads = kv_heads_of("attention", q.size(2), k.size(2), v.size(2), heads);
  const Dims d = self_dims(q.size(0), q.size(1), heads, q.size(2) / heads, v.size(2) / kv_heads, kv_heads);
  const Layout L{0, 0, 0, q.size(2), k.size(2), v.size(2)};
  auto pad = padding_flags(key_padding_mask, d);
  // Not a structured binding: clang 14 cannot capture one in the lambda below.
  const auto forward = attention_forward(q, k, v, L, d, causal, pad);
  Tensor out = forward.first;
  const Tensor lse = forward.second;
  const Tensor weights = need_weights ? attention_weights(q, k, lse, L, d, causal, pad) : Tensor();
  if (any_requires_grad({&q, &k, &v}))
    record(out, "attention", {&q, &k, &v},
           [q = q.detach(), k = k.detach(), v = v.detach(), o = out.detach(), lse, L, d, causal, pad](const Tensor& g) -> Grads {
             Tensor dq = Tensor::empty(q.shape(), q.dtype()), dk = Tensor::empty(k.shape(), k.dtype());
             Tensor dv = Tensor::empty(v.shape(), v.dtype());
             attention_backward(q, k, v, o, lse, g, dq, dk, dv, L, d, causal, pad);
             return {dq, dk, dv};
           }, {&q, &k, &v, &out});
  return {out, weights};
}

std::pair<Tensor, Tensor> attention_packed(const Tensor& qkv, std::int64_t heads, std::int64_t dk, std::int64_t dv,
                                           bool causal, const Tensor& key_padding_mask, bool need_weights) {
  const kernel::OpScope op_scope("attention_packed", {&qkv});
  QKV_CHECK(heads > 0 && dk > 0 && dv > 0, "attention: heads, dk and dv must be positive, got {}, {}, {}", heads, dk,
            dv);
  const std::int64_t width = heads * (2 * dk + dv);
  QKV_CHECK(qkv.dim() == 3 && qkv.size(2) == width,
            "attention: packed qkv must be (B, T, H*(2*dk + dv)) = (B, T, {}), got {}", width, qkv.shape().str());
  const Dims d = self_dims(qkv.size(0), qkv.size(1), heads, dk, dv, heads);
  const Layout L{0, heads * dk, 2 * heads * dk, width, width, width};
  auto pad = padding_flags(key_padding_mask, d);
  const auto forward = attention_forward(qkv, qkv, qkv, L, d, causal, pad);
  Tensor out = forward.first;
  const Tensor lse = forward.second;
  const Tensor weights = need_weights ? attention_weights(qkv, qkv, lse, L, d, causal, pad) : Tensor();
  if (any_requires_grad({&qkv}))
    record(out, "attention", {&qkv}, [x = qkv.detach(), o = out.detach(), lse, L, d, causal, pad](const Tensor& g) -> Grads {
      Tensor dx = Tensor::empty(x.shape(), x.dtype());  // q, k and v column ranges tile it
      attention_backward(x, x, x, o, lse, g, dx, dx, dx, L, d, causal, pad);
      return {dx};
    }, {&qkv, &out});
  return {out, weights};
}

namespace {
// Copies the n new tokens' rows of src (B, n, w) into rows [past, past + n) of a cache (B, C, w).
void append_to_cache(const Tensor& src, const Tensor& cache, std::int64_t past) {
  const std::int64_t b = src.size(0), n = src.size(1), w = src.size(2), cap = cache.size(1);
  kernel::dispatch("attention_cached", src.dtype(), [&](auto tag) {
    using T = decltype(tag);
    for (std::int64_t i = 0; i < b; ++i)
      std::copy(src.data<T>() + i * n * w, src.data<T>() + (i + 1) * n * w, cache.data<T>() + (i * cap + past) * w);
  });
}

// The caches' checks for n new tokens of batch b after `past`, keys kw and values vw wide.
void check_caches(const Tensor& k_cache, const Tensor& v_cache, std::int64_t b, std::int64_t n, std::int64_t past,
                  std::int64_t kw, std::int64_t vw) {
  QKV_CHECK(k_cache.dim() == 3 && k_cache.size(0) == b && k_cache.size(2) == kw && v_cache.dim() == 3 &&
                v_cache.size(0) == b && v_cache.size(1) == k_cache.size(1) && v_cache.size(2) == vw,
            "attention_cached: caches must be (B, C, Hkv*dk) = ({}, C, {}) and (B, C, Hkv*dv) = ({}, C, {}), got {} and {}",
            b, kw, b, vw, k_cache.shape().str(), v_cache.shape().str());
  QKV_CHECK(past >= 0 && past + n <= k_cache.size(1),
            "attention_cached: {} cached + {} new tokens do not fit a cache of {} positions", past, n,
            k_cache.size(1));
}
}  // namespace

Tensor attention_cached(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache, std::int64_t past,
                        std::int64_t heads, std::int64_t dk, std::int64_t dv) {
  const kernel::OpScope op_scope("attention_cached", {&qkv, &k_cache, &v_cache});
  QKV_CHECK(heads > 0 && dk > 0 && dv > 0, "attention_cached: heads, dk and dv must be positive, got {}, {}, {}",
            heads, dk, dv);
  const std::int64_t kw = heads * dk, vw = heads * dv;
  QKV_CHECK(qkv.dim() == 3 && qkv.size(2) == 2 * kw + vw,
            "attention_cached: packed qkv must be (B, n, H*(2*dk + dv)) = (B, n, {}), got {}", 2 * kw + vw,
            qkv.shape().str());
  // the n new rows' columns as three tensors (a copy of n rows: one token per step in generation)
  return attention_cached(narrow(qkv, 2, 0, kw), narrow(qkv, 2, kw, kw), narrow(qkv, 2, 2 * kw, vw), k_cache, v_cache,
                          past, heads);
}

Tensor attention_cached(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& k_cache,
                        const Tensor& v_cache, std::int64_t past, std::int64_t heads) {
  const kernel::OpScope op_scope("attention_cached", {&q, &k, &v, &k_cache, &v_cache});
  for (const Tensor* t : {&k, &v, &k_cache, &v_cache}) kernel::check_same_dtype("attention_cached", q, *t);
  QKV_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && k.size(0) == q.size(0) && k.size(1) == q.size(1) &&
                v.size(0) == q.size(0) && v.size(1) == q.size(1),
            "attention_cached: q {}, k {} and v {} must share their (B, n)", q.shape().str(), k.shape().str(),
            v.shape().str());
  const std::int64_t kv_heads = kv_heads_of("attention_cached", q.size(2), k.size(2), v.size(2), heads);
  const std::int64_t b = q.size(0), n = q.size(1), kw = k.size(2), vw = v.size(2);
  check_caches(k_cache, v_cache, b, n, past, kw, vw);
  QKV_CHECK(!any_requires_grad({&q, &k, &v, &k_cache, &v_cache}),
            "attention_cached: inference only (not differentiable); call it under a NoGradGuard");
  append_to_cache(k, k_cache, past);
  append_to_cache(v, v_cache, past);
  const Dims d{b, n, heads, q.size(2) / heads, vw / kv_heads, k_cache.size(1), past + n, past, kv_heads};
  const Layout L{0, 0, 0, q.size(2), kw, vw};
  return attention_forward(q, k_cache, v_cache, L, d, /*causal=*/true, {}).first;
}

}  // namespace qkv
