// data.task = "tokens": random windows of seq_len + 1 tokens from a shard folder (nanoGPT's get_batch), read a
// window at a time, so memory does not depend on the corpus size.
#include "qkv/datasets/detail.h"
#include "qkv/datasets/shards.h"
#include "qkv/datasets/tokenizer_json.h"

#include <qkv/core/errors.h>
#include <qkv/core/hash.h>

#include <algorithm>
#include <filesystem>

namespace qkv {
namespace fs = std::filesystem;
namespace {


class TokensDataset : public Dataset {
 public:
  TokensDataset(const DataOptions& o, std::uint64_t seed) : Dataset(seed, 0, o.seq_len), shuffle_(o.shuffle) {
    QKV_CHECK(!o.path.empty(), "data: data.path must name a shard folder (made by qkv tokenize) for data.task = "
              "\"tokens\"");
    manifest_ = read_manifest(o.path);
    const std::string manifest_path = (fs::path(o.path) / "manifest.json").string();
    tokenizer_ = std::make_shared<BpeTokenizer>(load_tokenizer((fs::path(o.path) / "tokenizer").string()));
    QKV_CHECK(tokenizer_->hash() == manifest_.tokenizer_hash && tokenizer_->vocab_size() == manifest_.vocab_size,
              "data: {}/tokenizer (hash {}, {} tokens) is not the tokenizer {} names (hash {}, {} tokens)", o.path,
              tokenizer_->hash(), tokenizer_->vocab_size(), manifest_path, manifest_.tokenizer_hash,
              manifest_.vocab_size);
    vocab_size_ = manifest_.vocab_size;
    const std::int64_t window = seq_len_ + 1;
    const std::uint64_t tokenizer = std::stoull(manifest_.tokenizer_hash, nullptr, 16);
    for (const auto& e : manifest_.shards) {
      TokenShard shard((fs::path(o.path) / e.file).string(), vocab_size_, tokenizer);
      QKV_CHECK(shard.size() == e.tokens && shard.width() == manifest_.width,
                "data: shard {} holds {} tokens of {} bytes; {} says {} of {}", shard.path(), shard.size(),
                shard.width(), manifest_path, e.tokens, manifest_.width);
      QKV_CHECK(shard.checksum() == e.checksum, "data: shard {} holds other tokens (checksum {:016x}) than {} lists "
                "(checksum {:016x}): the folder was changed by hand or a tokenize run was interrupted; run qkv "
                "tokenize again", shard.path(), shard.checksum(), manifest_path, e.checksum);
      // What the tokens are, not only how many: a checkpoint resumed on a folder tokenized again (same counts,
      // other text) is refused by the fingerprint.
      fingerprint_ = fnv1a(e.file.data(), e.file.size(), fingerprint_);
      fingerprint_ = fnv1a(&e.tokens, sizeof e.tokens, fingerprint_);
      fingerprint_ = fnv1a(&e.checksum, sizeof e.checksum, fingerprint_);
      if (e.split == "train" && shard.size() >= window) {
        train_.push_back(std::move(shard));
        starts_.push_back(starts_.empty() ? 0 : starts_.back());
        starts_.back() += train_.back().size() - seq_len_;
      } else if (e.split == "val") {
        val_.push_back(std::move(shard));
      }
    }
    fingerprint_ = fnv1a(manifest_.tokenizer_hash.data(), manifest_.tokenizer_hash.size(), fingerprint_);
    QKV_CHECK(!starts_.empty(), "data: {}: no training shard holds one window of data.seq_len + 1 = {} tokens "
              "({} training tokens in all): tokenize more text or lower data.seq_len", o.path, window,
              manifest_.tokens("train"));
    make_validation(o, manifest_path);
  }

  Batch next_batch(std::int64_t batch_size) override { return next_rows(batch_size, 0, batch_size); }
  Batch next_rows(std::int64_t batch_size, std::int64_t first, std::int64_t rows) override {
    Batch b{Tensor::empty({rows, seq_len_}, kInt64), Tensor::empty({rows, seq_len_}, kInt64)};
    const auto total = static_cast<std::uint64_t>(starts_.back());
    for (std::int64_t i = 0; i < batch_size; ++i) {
      // Every rank draws every row's offset, so the stream stays the same; each reads only its own rows.
      std::int64_t u;
      if (shuffle_) {
        u = static_cast<std::int64_t>(rng_.randint(total));
      } else {
        u = (position_ * seq_len_) % static_cast<std::int64_t>(total);
        ++position_;
      }
      if (i >= first && i < first + rows) fill(u, b, i - first);
    }
    return b;
  }
  std::string decode(std::int64_t token) const override {
    std::string s = tokenizer_->token_bytes(static_cast<BpeTokenizer::Id>(token));
    return s;
  }
  std::vector<std::int64_t> encode(const std::string& text) const override {
    const auto ids = tokenizer_->encode(text, /*allow_special=*/true);
    return {ids.begin(), ids.end()};
  }
  std::string fingerprint() const override { return fmt::format("tokens:{:016x}", fingerprint_); }
  std::shared_ptr<const BpeTokenizer> tokenizer() const override { return tokenizer_; }

 private:
  // Window u of all training windows: shard s holds windows [starts_[s-1], starts_[s]).
  void fill(std::int64_t u, Batch& b, std::int64_t row) const {
    const auto s = static_cast<std::size_t>(std::upper_bound(starts_.begin(), starts_.end(), u) - starts_.begin());
    const std::int64_t offset = u - (s == 0 ? 0 : starts_[s - 1]);
    read_window(train_[s], offset, b, row);
  }
  void read_window(const TokenShard& shard, std::int64_t offset, Batch& b, std::int64_t row) const {
    thread_local std::vector<std::int64_t> buf;
    buf.resize(static_cast<std::size_t>(seq_len_ + 1));
    shard.read(offset, seq_len_ + 1, buf.data());
    std::copy_n(buf.begin(), seq_len_, b.inputs.data<std::int64_t>() + row * seq_len_);
    std::copy_n(buf.begin() + 1, seq_len_, b.targets.data<std::int64_t>() + row * seq_len_);
  }
  // A fixed set: consecutive non-overlapping windows of the validation shards, at most data.val_size of them.
  void make_validation(const DataOptions& o, const std::string& manifest_path) {
    std::vector<std::pair<std::size_t, std::int64_t>> at;
    for (std::size_t s = 0; s < val_.size(); ++s)
      for (std::int64_t w = 0; (w + 1) * seq_len_ + 1 <= val_[s].size() && static_cast<std::int64_t>(at.size()) < o.val_size; ++w)
        at.emplace_back(s, w * seq_len_);
    QKV_CHECK(!at.empty(), "data: {}: the validation split has {} tokens, fewer than one window of data.seq_len + 1 "
              "= {}: tokenize with a larger --val-fraction or more text", manifest_path, manifest_.tokens("val"),
              seq_len_ + 1);
    const auto n = static_cast<std::int64_t>(at.size());
    validation_ = {Tensor::empty({n, seq_len_}, kInt64), Tensor::empty({n, seq_len_}, kInt64)};
    for (std::int64_t i = 0; i < n; ++i) read_window(val_[at[static_cast<std::size_t>(i)].first], at[static_cast<std::size_t>(i)].second, validation_, i);
  }

  bool shuffle_;
  TokenManifest manifest_;
  std::shared_ptr<BpeTokenizer> tokenizer_;
  std::vector<TokenShard> train_, val_;
  std::vector<std::int64_t> starts_;  // cumulative window counts of train_
  std::uint64_t fingerprint_ = fnv1a(nullptr, 0);
};

}  // namespace

namespace datasets_detail {
std::unique_ptr<Dataset> make_tokens_dataset(const DataOptions& o, std::uint64_t seed) {
  return std::make_unique<TokensDataset>(o, seed);
}
}  // namespace datasets_detail

}  // namespace qkv
