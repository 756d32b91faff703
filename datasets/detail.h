#pragma once
// Private to datasets/: what the generated tasks (dataset.cpp) and the file datasets (files.cpp) share.
#include <qkv/datasets/dataset.h>

#include <cstdint>
#include <memory>
#include <string>

namespace qkv::datasets_detail {

// Streams: training and validation draw from generators seeded apart, so neither shifts the other.
inline constexpr std::uint64_t kTrainStream = 0x747261696eULL, kValStream = 0x76616c6964ULL;

/// data.task = "text": a UTF-8 file, one token per character.
std::unique_ptr<Dataset> make_text_dataset(const DataOptions& options, std::uint64_t seed);
/// data.task = "jsonl": one {"input": [...], "target": [...]} example per line.
std::unique_ptr<Dataset> make_jsonl_dataset(const DataOptions& options, std::uint64_t seed);

/// data.task = "tokens": a shard folder made by qkv tokenize.
std::unique_ptr<Dataset> make_tokens_dataset(const DataOptions& options, std::uint64_t seed);

}  // namespace qkv::datasets_detail
