// Train a tiny self-attention model to reverse sequences, in plain C++ with the public API: no config file.
// The model must learn W^Q and W^K so that position i attends to position T-1-i.
#include <qkv/core/ops.h>
#include <qkv/layers/models.h>
#include <qkv/optim/optimizer.h>

#include <fmt/format.h>

using namespace qkv;

int main() {
  const std::int64_t vocab = 8, seq = 6, batch = 32;
  Generator gen(0);
  auto model = build_model({.kind = "seed", .vocab_size = vocab, .seq_len = seq, .d_model = 32}, gen);
  Adam opt(model->named_parameters(), {.lr = 3e-3});

  // A batch of random sequences and their reversals, as int64 (B, T) tensors.
  const auto make_batch = [&](Generator& g) {
    std::vector<std::int64_t> x(batch * seq), y(batch * seq);
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t t = 0; t < seq; ++t) x[b * seq + t] = static_cast<std::int64_t>(g.randint(vocab));
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t t = 0; t < seq; ++t) y[b * seq + t] = x[b * seq + seq - 1 - t];
    return std::pair{Tensor::from(x, {batch, seq}), Tensor::from(y, {batch, seq})};
  };

  double accuracy = 0.0;
  for (int step = 1; step <= 200; ++step) {
    const auto [x, y] = make_batch(gen);
    const Tensor logits = model->forward(x);  // (B, T, V)
    const Tensor loss = cross_entropy(reshape(logits, {-1, vocab}), reshape(y, {-1}));
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 50 == 0) {
      const auto pred = argmax(logits, -1).to_vector(), want = y.to_vector();
      int right = 0;
      for (std::size_t i = 0; i < pred.size(); ++i) right += pred[i] == want[i];
      accuracy = double(right) / double(pred.size());
      fmt::print("step {:4d}  loss {:.4f}  token accuracy {:.3f}\n", step, loss.item(), accuracy);
    }
  }
  fmt::print("final token accuracy {:.3f}\n", accuracy);
  return accuracy > 0.9 ? 0 : 1;
}
