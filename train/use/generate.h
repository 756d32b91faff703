#pragma once
// Generation from a causal model, a token at a time.
#include <qkv/train/use/trained.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace qkv {

/// Generates `length` tokens after the prompt `ids` from a causal model (temperature 0 = greedy), calling
/// on_token as each comes. The context is the last model.positions tokens (the positional table, ModelConfig::seq_len):
/// a sliding window.
/// `cached` keeps each layer's keys and values (LanguageModel::logits(ids, cache)), so a token costs one row
/// rather than the whole context; without it every token re-runs the context. Both give the same tokens.
std::vector<std::int64_t> sample_tokens(const TrainedModel& model, std::vector<std::int64_t> ids, std::int64_t length,
                                        double temperature, std::uint64_t seed,
                                        const std::function<void(std::int64_t)>& on_token = {}, bool cached = true);

}  // namespace qkv
