#pragma once
// Learning byte-level BPE merges from a corpus (qkv tokenizer train), with GPT-2's pre-tokenizer:
// 1. a streaming pass counts the corpus's pieces (memory grows with the distinct pieces, not the corpus);
// 2. starting from one token per byte, the most frequent adjacent pair inside the pieces (each counted as often as
//    its piece occurs) is merged into a new token, until the vocabulary is full; ties go to the pair of smaller
//    (left id, right id). After each merge only the pieces that held the pair are recounted.
// Ids: byte b is id b, merge k makes id 256 + k (a merge whose bytes already are a token reuses that id), the
// special tokens come last.
#include <qkv/datasets/bpe.h>

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

namespace qkv {

struct BpeTrainOptions {
  std::int64_t vocab_size = 0;                           ///< bytes + merges + specials
  std::vector<std::string> specials = {"<|endoftext|>"};
  /// Called now and then: ("count", bytes read, bytes in all) then ("merge", merges made, merges wanted).
  std::function<void(const char* phase, std::int64_t done, std::int64_t total)> progress;
};

/// How often each piece occurs in `files` (read in chunks on all threads; invalid UTF-8 throws naming the file
/// and byte).
std::unordered_map<std::string, std::int64_t> count_pieces(
    const std::vector<std::string>& files,
    const std::function<void(std::int64_t, std::int64_t)>& progress = nullptr);
/// The merges learned from piece counts; the vocabulary may end smaller than asked when no pair is left.
BpeTokenizer learn_bpe(const std::unordered_map<std::string, std::int64_t>& pieces, const BpeTrainOptions& options);
/// count_pieces then learn_bpe. Throws when options.vocab_size < 256 + the special tokens.
BpeTokenizer train_bpe(const std::vector<std::string>& files, const BpeTrainOptions& options);

}  // namespace qkv
