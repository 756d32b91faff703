#include "qkv/layers/linear.h"

#include <qkv/core/ops.h>

#include <cmath>

namespace qkv {

Linear::Linear(LinearOptions o, Generator& gen) {
  const std::int64_t in_features = o.in_features, out_features = o.out_features;
  QKV_CHECK(in_features > 0 && out_features > 0, "Linear: in_features and out_features must be positive, got {} and {}",
            in_features, out_features);
  // torch: kaiming_uniform_(a = sqrt(5)) gives bound 1/sqrt(in); the bias uses the same bound.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight = register_parameter("weight", Tensor::uniform({out_features, in_features}, -bound, bound, gen));
  if (o.bias) bias = register_parameter("bias", Tensor::uniform({out_features}, -bound, bound, gen));
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

Embedding::Embedding(EmbeddingOptions o, Generator& gen) {
  const std::int64_t num_embeddings = o.num_embeddings, embedding_dim = o.embedding_dim;
  QKV_CHECK(num_embeddings > 0 && embedding_dim > 0,
            "Embedding: num_embeddings and embedding_dim must be positive, got {} and {}", num_embeddings,
            embedding_dim);
  weight = register_parameter("weight", Tensor::randn({num_embeddings, embedding_dim}, gen));
}

Tensor Embedding::forward(const Tensor& ids) { return embedding(weight, ids); }

// fresh(): the same options, values from a throwaway generator (clone() copies the real ones over).
std::shared_ptr<Module> Linear::fresh() const {
  Generator throwaway;
  return std::make_shared<Linear>(LinearOptions{weight.size(1), weight.size(0), bias.defined()}, throwaway);
}

std::shared_ptr<Module> Embedding::fresh() const {
  Generator throwaway;
  return std::make_shared<Embedding>(EmbeddingOptions{weight.size(0), weight.size(1)}, throwaway);
}

}  // namespace qkv
