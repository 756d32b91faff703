// qkv tokenizer train: piece counts in a streaming pass, then merges with incremental pair counts.
#include "qkv/datasets/bpe_train.h"

#include "qkv/datasets/chunks.h"
#include "qkv/datasets/pretokenize.h"
#include "qkv/datasets/utf8.h"

#include <qkv/core/errors.h>
#include <qkv/core/files.h>
#include <qkv/core/parallel.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <queue>

namespace qkv {
namespace {

using Id = BpeTokenizer::Id;
using Pair = std::uint64_t;  // left << 32 | right
Pair pair_of(Id l, Id r) { return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(l)) << 32) | static_cast<std::uint32_t>(r); }
Id left_of(Pair p) { return static_cast<Id>(p >> 32); }
Id right_of(Pair p) { return static_cast<Id>(p & 0xffffffffu); }

// A distinct piece: its symbols now, and how often it occurs.
struct Word {
  std::vector<Id> symbols;
  std::int64_t count;
};

// The heap's order: the higher count first, then the smaller (left, right).
struct Candidate {
  std::int64_t count;
  Pair pair;
  bool operator<(const Candidate& o) const { return count != o.count ? count < o.count : pair > o.pair; }
};

class Merger {
 public:
  explicit Merger(const std::unordered_map<std::string, std::int64_t>& pieces) {
    words_.reserve(pieces.size());
    for (const auto& [piece, count] : pieces) {
      Word w{{}, count};
      for (const unsigned char c : piece) w.symbols.push_back(c);
      words_.push_back(std::move(w));
    }
    for (std::size_t i = 0; i < words_.size(); ++i) add_pairs(static_cast<std::int32_t>(i), +1);
    for (const auto& [p, c] : counts_) heap_.push({c, p});
    touched_.clear();
    stamp_.assign(words_.size(), -1);
  }
  /// The most frequent pair (count > 0); false when no pair is left.
  bool best(Pair& p) {
    while (!heap_.empty()) {
      const auto top = heap_.top();
      const auto it = counts_.find(top.pair);
      if (it != counts_.end() && it->second == top.count) {
        p = top.pair;
        return true;
      }
      heap_.pop();  // stale: the count moved since
    }
    return false;
  }
  /// Merges p into `made` wherever it occurs (merge numbers the call).
  void apply(std::int64_t merge, Pair p, Id made) {
    const Id l = left_of(p), r = right_of(p);
    auto holders = std::move(where_[p]);
    where_.erase(p);
    touched_.clear();
    for (const auto w : holders) {
      if (stamp_[static_cast<std::size_t>(w)] == merge) continue;  // listed twice
      stamp_[static_cast<std::size_t>(w)] = merge;
      auto& s = words_[static_cast<std::size_t>(w)].symbols;
      if (std::adjacent_find(s.begin(), s.end(), [&](Id a, Id b) { return a == l && b == r; }) == s.end()) continue;
      add_pairs(w, -1);
      std::vector<Id> next;
      next.reserve(s.size());
      for (std::size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == l && s[i + 1] == r) {
          next.push_back(made);
          ++i;
        } else {
          next.push_back(s[i]);
        }
      }
      s = std::move(next);
      add_pairs(w, +1);
    }
    std::sort(touched_.begin(), touched_.end());
    touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
    for (const auto q : touched_) {
      const auto it = counts_.find(q);
      if (it == counts_.end()) continue;
      if (it->second <= 0) {
        counts_.erase(it);
      } else {
        heap_.push({it->second, q});
      }
    }
    counts_.erase(p);
  }

 private:
  void add_pairs(std::int32_t w, int sign) {
    const auto& s = words_[static_cast<std::size_t>(w)].symbols;
    const auto c = words_[static_cast<std::size_t>(w)].count;
    for (std::size_t i = 0; i + 1 < s.size(); ++i) {
      const auto p = pair_of(s[i], s[i + 1]);
      auto& n = counts_[p];
      n += sign * c;
      if (sign > 0) where_[p].push_back(w);
      touched_.push_back(p);
    }
  }
  std::vector<Word> words_;
  std::unordered_map<Pair, std::int64_t> counts_;
  std::unordered_map<Pair, std::vector<std::int32_t>> where_;  // the words a pair was seen in (some no longer)
  std::priority_queue<Candidate> heap_;
  std::vector<Pair> touched_;
  std::vector<std::int64_t> stamp_;
};

void check_vocab_size(const BpeTrainOptions& o) {
  const auto specials = static_cast<std::int64_t>(o.specials.size());
  QKV_CHECK(o.vocab_size >= 256 + specials,
            "tokenizer train: --vocab-size {} is below 256 byte tokens + {} special token{} = {}", o.vocab_size,
            specials, specials == 1 ? "" : "s", 256 + specials);
  QKV_CHECK(o.vocab_size <= std::numeric_limits<std::int32_t>::max(),
            "tokenizer train: --vocab-size {} is above 2^31 - 1 (token ids are 32-bit)", o.vocab_size);
}

}  // namespace

std::unordered_map<std::string, std::int64_t> count_pieces(const std::vector<std::string>& files,
                                                          const std::function<void(std::int64_t, std::int64_t)>& progress) {
  QKV_CHECK(!files.empty(), "tokenizer train: no input files");
  std::int64_t total = 0, done = 0;
  for (const auto& f : files) {
    check_regular_input(f, "tokenizer train: input");
    total += static_cast<std::int64_t>(std::filesystem::file_size(f));
  }
  std::unordered_map<std::string, std::int64_t> counts;
  const auto batch = static_cast<std::size_t>(2 * num_threads());
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    QKV_CHECK(in.good(), "tokenizer train: cannot read {}: {}", f, std::strerror(errno));
    TextChunks chunks(in, "tokenizer train: " + f);
    for (bool more = true; more;) {
      std::vector<std::string> segments;
      std::vector<std::size_t> offsets;
      for (TextChunks::Chunk c; segments.size() < batch && (more = chunks.next(c));) {
        segments.emplace_back(c.text);
        offsets.push_back(c.offset);
      }
      std::vector<std::unordered_map<std::string, std::int64_t>> local(segments.size());
      parallel_for(static_cast<std::int64_t>(segments.size()), true, [&](std::int64_t b, std::int64_t e) {
        for (auto i = static_cast<std::size_t>(b); i < static_cast<std::size_t>(e); ++i) {
          check_utf8(segments[i], "tokenizer train: " + f, offsets[i]);
          gpt2_pretokenizer().split(segments[i], [&](std::string_view piece) { ++local[i][std::string(piece)]; });
        }
      });
      for (std::size_t i = 0; i < local.size(); ++i) {
        for (auto& [piece, n] : local[i]) counts[piece] += n;
        done += static_cast<std::int64_t>(segments[i].size());
      }
      if (progress) progress(done, total);
    }
  }
  QKV_CHECK(total > 0, "tokenizer train: the input has no text to learn from ({} file{}, 0 bytes)", files.size(),
            files.size() == 1 ? "" : "s");
  return counts;
}

BpeTokenizer learn_bpe(const std::unordered_map<std::string, std::int64_t>& pieces, const BpeTrainOptions& o) {
  check_vocab_size(o);
  const std::int64_t want = o.vocab_size - 256 - static_cast<std::int64_t>(o.specials.size());
  Merger merger(pieces);
  std::vector<std::pair<Id, Id>> merges;
  // Token bytes as they are made, so a merge whose bytes already are a token reuses its id (from_merges does too).
  std::vector<std::string> bytes;
  for (int b = 0; b < 256; ++b) bytes.emplace_back(1, static_cast<char>(b));
  std::unordered_map<std::string, Id> id_of;
  for (std::int64_t made = 0; made < want;) {
    Pair p;
    if (!merger.best(p)) break;
    auto concat = bytes[static_cast<std::size_t>(left_of(p))] + bytes[static_cast<std::size_t>(right_of(p))];
    const auto [it, added] = id_of.try_emplace(concat, static_cast<Id>(bytes.size()));
    if (added) {
      bytes.push_back(std::move(concat));
      ++made;
    }
    merger.apply(static_cast<std::int64_t>(merges.size()), p, it->second);
    merges.emplace_back(left_of(p), right_of(p));
    if (o.progress && (merges.size() % 100 == 0 || made == want)) o.progress("merge", made, want);
  }
  return BpeTokenizer::from_merges(merges, o.specials);
}

BpeTokenizer train_bpe(const std::vector<std::string>& files, const BpeTrainOptions& o) {
  check_vocab_size(o);  // before reading the corpus
  const auto counts = count_pieces(files, [&](std::int64_t done, std::int64_t total) {
    if (o.progress) o.progress("count", done, total);
  });
  return learn_bpe(counts, o);
}

}  // namespace qkv
