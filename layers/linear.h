#pragma once
// Linear and Embedding with PyTorch's conventions and default inits, drawn from a seeded Generator.
#include <qkv/layers/module.h>

namespace qkv {

/// y = x W^T + b; weight (out, in), bias (out). Init as torch: U(-1/sqrt(in), 1/sqrt(in)) for both.
class Linear : public Module {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true, Generator& gen = default_generator());
  /// x is (..., in), returns (..., out).
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "Linear"; }
  Tensor weight, bias;  // bias undefined when constructed with bias = false
};

/// Rows of a (num, dim) table gathered by int64 ids. Init N(0, 1) as torch.
class Embedding : public Module {
 public:
  Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim, Generator& gen = default_generator());
  /// ids is int64 (...), returns (..., dim).
  Tensor forward(const Tensor& ids) override;
  std::string name() const override { return "Embedding"; }
  Tensor weight;
};

}  // namespace qkv
