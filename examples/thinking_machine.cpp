// The classic walk-through: two words, "thinking" and "machine", through one self-attention layer, step by
// step, using qkv's own SelfAttention (its w_q, w_k, w_v hold W^Q, W^K, W^V transposed: torch's (out, in)).
#include <qkv/core/ops.h>
#include <qkv/layers/attention.h>

#include <fmt/format.h>

#include <cmath>

using namespace qkv;

namespace {
void print_row(const char* label, const Tensor& t, std::int64_t row) {
  const auto v = t.to_vector();
  const std::int64_t w = t.size(-1);
  std::string s;
  for (std::int64_t j = 0; j < w; ++j) s += fmt::format("{:9.4f}", v[static_cast<std::size_t>(row * w + j)]);
  fmt::print("  {:<22}[{} ]\n", label, s);
}
}  // namespace

int main() {
  // d_model = 4; queries and keys share d_k = 3 so they can be compared by dot product; values have d_v = 3.
  SelfAttention attn({.d_model = 4, .d_k = 3, .d_v = 3});
  const Tensor x = Tensor::from(std::vector<float>{1, 0, 1, 0,    // x1: "thinking"
                                                   0, 2, 0, 2},   // x2: "machine"
                                {1, 2, 4});
  // W^Q, W^K, W^V are (d_model, d) = (4, 3); Linear stores their transposes, (3, 4).
  const std::vector<float> wq = {1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 1, 1};
  const std::vector<float> wk = {0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 0};
  const std::vector<float> wv = {0, 2, 0, 0, 3, 0, 1, 0, 3, 1, 1, 0};
  const auto set = [](Linear& l, const std::vector<float>& w_in_out) {
    l.weight.copy_(transpose(Tensor::from(w_in_out, {4, 3}), 0, 1) * 0.5);
  };
  set(*attn.w_q, wq);
  set(*attn.w_k, wk);
  set(*attn.w_v, wv);

  const Tensor q = attn.w_q->forward(x), k = attn.w_k->forward(x), v = attn.w_v->forward(x);
  const Tensor scores = matmul(q, transpose(k, -1, -2)) / std::sqrt(3.0);
  const auto [out, weights] = attn.attend(x);
  const char* words[] = {"thinking", "machine"};
  fmt::print("Self-attention on \"thinking machine\" (d_model 4, d_k 3, d_v 3)\n\n");
  for (int i = 0; i < 2; ++i) {
    fmt::print("{} (x{}):\n", words[i], i + 1);
    print_row("x", reshape(x, {2, 4}), i);
    print_row("q = x W^Q", reshape(q, {2, 3}), i);
    print_row("k = x W^K", reshape(k, {2, 3}), i);
    print_row("v = x W^V", reshape(v, {2, 3}), i);
    print_row("q.k / sqrt(d_k)", reshape(scores, {2, 2}), i);
    print_row("softmax weights", reshape(weights, {2, 2}), i);
    const auto w = weights.to_vector();
    fmt::print("  {:<22}{:.6f}\n", "row sum", w[static_cast<std::size_t>(2 * i)] + w[static_cast<std::size_t>(2 * i + 1)]);
    print_row("output z = sum w v", reshape(out, {2, 3}), i);
    fmt::print("\n");
  }
  return 0;
}
