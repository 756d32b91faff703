#pragma once
// Every differentiable op, one family per file in core/ops/. Shapes follow torch: broadcasting as in NumPy,
// dims may be negative. Legend: B batch, T sequence, C or D model width, H heads, V vocabulary, N rows.
#include "qkv/core/autograd.h"  // NoGradGuard and friends come with the ops
#include "qkv/core/parallel.h"  // set_num_threads too
#include "qkv/core/tensor.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qkv {

// ---- elementwise (core/ops/elementwise.cpp) ------------------------------------------------------------------
/// a + b with broadcasting.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor neg(const Tensor& a);
/// a ** p for a scalar exponent.
Tensor pow(const Tensor& a, double p);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor relu(const Tensor& a);
/// GELU: the exact erf form (approximate = false, torch's default) or the tanh approximation.
Tensor gelu(const Tensor& a, bool approximate = false);
/// a += b in place, outside the graph (b broadcast to a's shape).
void add_(Tensor& a, const Tensor& b);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
inline Tensor operator-(double s, const Tensor& a) { return add(neg(a), s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }
inline Tensor operator/(double s, const Tensor& a) { return mul(pow(a, -1.0), s); }

/// The shape two shapes broadcast to; throws naming `op` and both shapes when they do not.
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);
/// Sums `g` down to `shape` (the reverse of broadcasting `shape` up to g's shape).
Tensor sum_to(const Tensor& g, const Shape& shape);
/// Copies `a` broadcast up to `shape` (torch's expand, materialised).
Tensor broadcast_to(const Tensor& a, const Shape& shape);

// ---- math (core/ops/math.cpp) --------------------------------------------------------------------------------
Tensor sin(const Tensor& a);
Tensor cos(const Tensor& a);
/// |a|; the gradient at 0 is 0, as torch's.
Tensor abs(const Tensor& a);
/// -1, 0 or 1 (NaN stays NaN); its gradient is 0.
Tensor sign(const Tensor& a);
/// 1 / sqrt(a).
Tensor rsqrt(const Tensor& a);
Tensor erf(const Tensor& a);
/// log(1 + a), accurate for small a.
Tensor log1p(const Tensor& a);
/// a * sigmoid(a) (SiLU, swish).
Tensor silu(const Tensor& a);
/// a limited to [min, max] (either may be absent, not both); the gradient passes where min <= a <= max, as torch's.
Tensor clamp(const Tensor& a, std::optional<double> min, std::optional<double> max = std::nullopt);
/// The larger (smaller) of a and b elementwise, broadcasting (torch.maximum, torch.minimum): NaN wins, and tied
/// elements split the gradient evenly.
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);

// ---- matmul (core/ops/matmul.cpp) ----------------------------------------------------------------------------
/// torch.matmul: 1-D, 2-D, and batched (..., N, K) @ (..., K, M) with broadcast batch dims.
Tensor matmul(const Tensor& a, const Tensor& b);
/// torch.nn.functional.linear: x (..., IN) @ weight (OUT, IN)^T + bias (OUT), with no transpose copied.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});
/// torch.einsum for two operands and an explicit output ("ij,jk->ik", "bhqd,bhkd->bhqk", "i,j->ij", "ij,ij->",
/// "bij,bj->bi"): any mix of batch, contracted, outer and summed-out letters, as one batched matmul between
/// permutes and reshapes (so differentiable through them). Not supported: one or three operands, an implicit
/// output (no "->"), "..." and a letter repeated within an operand (diagonals).
Tensor einsum(const std::string& equation, const Tensor& a, const Tensor& b);

// ---- shape (core/ops/shape.cpp) ------------------------------------------------------------------------------
/// Same data, new shape; one dim may be -1.
Tensor reshape(const Tensor& a, const Shape& shape);
/// Swaps two dims (copies).
Tensor transpose(const Tensor& a, int dim0, int dim1);
/// Reorders dims (copies): out.shape[i] = a.shape[dims[i]].
Tensor permute(const Tensor& a, const std::vector<int>& dims);
/// Joins tensors along `dim`; all other dims must match.
Tensor concat(const std::vector<Tensor>& tensors, int dim);
/// Elements [start, start + length) along `dim` (copies).
Tensor narrow(const Tensor& a, int dim, std::int64_t start, std::int64_t length);
/// Elements [start, end) along `dim`, negative indices counting from the end (copies).
Tensor slice(const Tensor& a, int dim, std::int64_t start, std::int64_t end);
/// Inserts a dim of size 1 at `dim`.
Tensor unsqueeze(const Tensor& a, int dim);
/// The (n, m) identity (m < 0: square), torch.eye.
Tensor eye(std::int64_t n, std::int64_t m = -1, DType dtype = kFloat32);
/// a with the elements above (tril) or below (triu) diagonal k of its last two dims set to 0 (torch.tril/triu);
/// any dtype; the gradient is masked the same way.
Tensor tril(const Tensor& a, std::int64_t k = 0);
Tensor triu(const Tensor& a, std::int64_t k = 0);

// ---- reductions (core/ops/reduce.cpp) ------------------------------------------------------------------------
/// Sum of all elements (a scalar); an int64 tensor sums to int64.
Tensor sum(const Tensor& a);
/// Sum over `dims`, keeping them as size 1 when keepdim.
Tensor sum(const Tensor& a, const std::vector<int>& dims, bool keepdim = false);
Tensor mean(const Tensor& a);
Tensor mean(const Tensor& a, const std::vector<int>& dims, bool keepdim = false);
/// Largest element (a scalar); the gradient goes to the first maximal element.
Tensor max(const Tensor& a);
/// Largest values along `dim` (torch.max(a, dim).values); the gradient goes to the first maximal element.
Tensor max(const Tensor& a, int dim, bool keepdim = false);
/// Index of the largest value along `dim` (int64, not differentiable).
Tensor argmax(const Tensor& a, int dim, bool keepdim = false);
/// Smallest element, or smallest values along `dim`; the gradient goes to the first minimal element.
Tensor min(const Tensor& a);
Tensor min(const Tensor& a, int dim, bool keepdim = false);
/// Variance over `dims` (or all elements) with `correction` (1: Bessel's, torch's default; 0: the biased one).
Tensor var(const Tensor& a, const std::vector<int>& dims, std::int64_t correction = 1, bool keepdim = false);
Tensor var(const Tensor& a, std::int64_t correction = 1);
/// sqrt(var): the standard deviation, as torch.std (call it qkv::std where `using namespace qkv` is in force).
Tensor std(const Tensor& a, const std::vector<int>& dims, std::int64_t correction = 1, bool keepdim = false);
Tensor std(const Tensor& a, std::int64_t correction = 1);
/// log(sum(exp(a))) along `dim`, computed without overflow; an all -inf row gives -inf.
Tensor logsumexp(const Tensor& a, int dim, bool keepdim = false);
/// Running sum along `dim` (torch.cumsum).
Tensor cumsum(const Tensor& a, int dim);
/// The p-norm (p >= 1, default 2) of all elements or over `dims` (torch.linalg.vector_norm); its gradient is 0
/// where the norm is 0, as torch's.
Tensor norm(const Tensor& a, double p = 2.0);
Tensor norm(const Tensor& a, double p, const std::vector<int>& dims, bool keepdim = false);

// ---- sampling and sorting (core/ops/random.cpp) ---------------------------------------------------------------
/// Uniform int64 values in [low, high) drawn from `gen` (torch.randint; qkv's stream, not torch's numbers).
Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape, Generator& gen = default_generator());
/// A random permutation of 0..n-1 (int64) drawn from `gen`.
Tensor randperm(std::int64_t n, Generator& gen = default_generator());
/// num_samples category indices (int64) per row of non-negative weights (N) or (B, N) (need not sum to 1), with or
/// without replacement (torch.multinomial), drawn from `gen`.
Tensor multinomial(const Tensor& probs, std::int64_t num_samples, bool replacement = false,
                   Generator& gen = default_generator());
/// Sorted values (differentiable: each gradient goes back to its element) and their int64 indices along `dim`.
struct SortResult {
  Tensor values, indices;
};
/// Ascending (or descending) along `dim`; NaN sorts above everything; ties keep their order (torch.sort(stable=True)).
SortResult sort(const Tensor& a, int dim = -1, bool descending = false);
/// The k largest (or smallest) along `dim`, sorted (torch.topk).
SortResult topk(const Tensor& a, std::int64_t k, int dim = -1, bool largest = true);

// ---- comparisons (core/ops/compare.cpp) ----------------------------------------------------------------------
/// Elementwise a == b (and !=, <, <=, >, >=) with broadcasting, as a 1/0 mask in the operands' floating dtype
/// (float32 for int64 operands), like torch's `(a == b).float()`; never differentiable. mean(eq(pred, y)) is an
/// accuracy.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double s);
Tensor ne(const Tensor& a, double s);
Tensor lt(const Tensor& a, double s);
Tensor le(const Tensor& a, double s);
Tensor gt(const Tensor& a, double s);
Tensor ge(const Tensor& a, double s);
/// a where cond (any dtype) is nonzero, else b; all three broadcast together (torch.where); a and b may be int64.
/// Differentiable in a and b: each gradient goes to the branch its element came from.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
/// 1 when every element (along `dim`) is nonzero, else 0, as a mask (torch.all); an empty tensor gives 1.
Tensor all(const Tensor& a);
Tensor all(const Tensor& a, int dim, bool keepdim = false);
/// 1 when some element (along `dim`) is nonzero, else 0, as a mask (torch.any); an empty tensor gives 0.
Tensor any(const Tensor& a);
Tensor any(const Tensor& a, int dim, bool keepdim = false);

// ---- indexing (core/ops/index.cpp) ---------------------------------------------------------------------------
/// out[i][j][k] = a[i][index[i][j][k]][k] for dim 1 (torch.gather): index is int64, of a's rank, no larger than
/// a in the other dims; out has index's shape.
Tensor gather(const Tensor& a, int dim, const Tensor& index);
/// The slices of a (any dtype) at `index` (int64, 0-D or 1-D; may repeat) along `dim` (torch.index_select).
Tensor index_select(const Tensor& a, int dim, const Tensor& index);
/// Reverses the order of elements along each of `dims` (torch.flip; copies).
Tensor flip(const Tensor& a, const std::vector<int>& dims);
/// Joins same-shape tensors along a new dim `dim` (torch.stack).
Tensor stack(const std::vector<Tensor>& tensors, int dim = 0);

// ---- neural-network ops (core/ops/nn.cpp) --------------------------------------------------------------------
Tensor softmax(const Tensor& a, int dim);
Tensor log_softmax(const Tensor& a, int dim);
enum class Reduction { Mean, Sum, None };
/// The target value cross_entropy ignores by default (torch's ignore_index): datasets mark unscored positions with it.
inline constexpr std::int64_t kIgnore = -100;
/// Fused log_softmax + NLL. logits (N, C), targets int64 (N); targets equal to ignore_index are skipped, and
/// Mean divides by the number of non-ignored targets. None returns (N,) with zeros at ignored rows.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index = kIgnore,
                     Reduction reduction = Reduction::Mean);
/// Where mask (broadcast to a's shape, any dtype) is nonzero, value; elsewhere a.
Tensor masked_fill(const Tensor& a, const Tensor& mask, double value);
/// Rows of weight (V, D) gathered by int64 ids (...) into (..., D); backward scatter-adds into weight.
Tensor embedding(const Tensor& weight, const Tensor& ids);
/// Layer normalisation over the last dim: (x - mean) / sqrt(var + eps) * weight + bias, with the biased
/// variance (torch.nn.functional.layer_norm). x (..., D), weight and bias (D); an undefined bias is no shift
/// (torch's bias=None). Fused: one pass per row each way.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
/// Fused multi-head attention: q, k (B, T, H*dk) and v (B, T, H*dv), heads packed in the last dim as the
/// projections produce them. Grouped-query attention (torch's enable_gqa) when k and v are narrower: k (B, T,
/// Hkv*dk) and v (B, T, Hkv*dv) with Hkv dividing H, query head i reading key/value head i / (H / Hkv). Returns out (B, T, H*dv) = softmax(q k^T / sqrt(dk) + masks) v per head and, when
/// need_weights, the weights (B, H, T, T) for inspection: computed on request from the forward's row statistics,
/// outside the graph (changing them cannot change a gradient). Training memory is O(B*H*T): the T x T weights are
/// never kept (FlashAttention-2's online softmax; backward recomputes them by blocks). causal hides keys j > i;
/// key_padding_mask (B, T), nonzero where a key is padding; a row with every key hidden outputs NaN, as in torch,
/// and passes no gradient (its dq is 0 and it adds nothing to dk, dv).
std::pair<Tensor, Tensor> attention(const Tensor& q, const Tensor& k, const Tensor& v, std::int64_t heads,
                                    bool causal, const Tensor& key_padding_mask = {}, bool need_weights = true);
/// The same on one packed tensor (B, T, H*(2*dk + dv)) = [q | k | v], as a single fused projection produces it.
std::pair<Tensor, Tensor> attention_packed(const Tensor& qkv, std::int64_t heads, std::int64_t dk, std::int64_t dv,
                                           bool causal, const Tensor& key_padding_mask = {}, bool need_weights = true);
/// One step of cached causal attention, for generation: qkv (B, n, H*(2*dk + dv)) = [q | k | v] of n new tokens,
/// k_cache (B, C, H*dk) and v_cache (B, C, H*dv) the keys and values of the `past` tokens before them (C >= past + n).
/// Writes the new keys and values into rows [past, past + n) of the caches and returns (B, n, H*dv): new token i
/// attends to keys 0..past + i, the rows past.. that attention_packed gives for the whole causal sequence.
/// Inference only: throws if a gradient would be needed (use a NoGradGuard).
Tensor attention_cached(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache, std::int64_t past,
                        std::int64_t heads, std::int64_t dk, std::int64_t dv);
/// The same with separate q (B, n, H*dk), k (B, n, Hkv*dk) and v (B, n, Hkv*dv), grouped-query when Hkv < H
/// (as attention()); the caches are (B, C, Hkv*dk) and (B, C, Hkv*dv): they hold the key/value heads only.
Tensor attention_cached(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& k_cache,
                        const Tensor& v_cache, std::int64_t past, std::int64_t heads);
/// Root-mean-square normalisation over the last dim (torch.nn.functional.rms_norm, Hugging Face's LlamaRMSNorm):
/// x / sqrt(mean(x^2) + eps) * weight. x (..., D), weight (D). Fused: one pass per row each way.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);
/// Rotary position embedding as Hugging Face applies it (rotate-half pairing): x (B, T, H*d), heads packed in the
/// last dim; cos and sin (T, d/2) hold each row's angles (position p, frequency i: p * inv_freq[i]). For each
/// head, with x1, x2 its first and second halves: out1 = x1 cos - x2 sin, out2 = x2 cos + x1 sin. Differentiable
/// in x (its gradient is the inverse rotation); cos and sin are constants (layers/rotary.h builds them).
Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, std::int64_t heads);
/// Zeroes each element with probability p and scales the rest by 1 / (1 - p); identity when !training or p = 0.
Tensor dropout(const Tensor& a, double p, bool training, Generator& gen = default_generator());

}  // namespace qkv
