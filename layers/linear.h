#pragma once
// Linear and Embedding with PyTorch's conventions and default inits, drawn from a seeded Generator.
#include <qkv/layers/module.h>

namespace qkv {

// Every layer takes an options struct (designated initialisers name each setting); the small ones also keep
// torch.nn's positional form, Linear(in, out, bias), Embedding(num, dim), LayerNorm(d, eps), Dropout(p).
struct LinearOptions {
  std::int64_t in_features = 0;
  std::int64_t out_features = 0;
  bool bias = true;
};

struct EmbeddingOptions {
  std::int64_t num_embeddings = 0;
  std::int64_t embedding_dim = 0;
};

/// y = x W^T + b; weight (out, in), bias (out). Init as torch: U(-1/sqrt(in), 1/sqrt(in)) for both.
class Linear : public Module {
 public:
  explicit Linear(LinearOptions options, Generator& gen = default_generator());
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true, Generator& gen = default_generator())
      : Linear(LinearOptions{in_features, out_features, bias}, gen) {}
  /// x is (..., in), returns (..., out).
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "Linear"; }
  std::shared_ptr<Module> fresh() const override;
  Tensor weight, bias;  // bias undefined when constructed with bias = false
};

/// Rows of a (num, dim) table gathered by int64 ids. Init N(0, 1) as torch.
class Embedding : public Module {
 public:
  explicit Embedding(EmbeddingOptions options, Generator& gen = default_generator());
  Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim, Generator& gen = default_generator())
      : Embedding(EmbeddingOptions{num_embeddings, embedding_dim}, gen) {}
  /// ids is int64 (...), returns (..., dim).
  Tensor forward(const Tensor& ids) override;
  std::string name() const override { return "Embedding"; }
  std::shared_ptr<Module> fresh() const override;
  Tensor weight;
};

}  // namespace qkv
