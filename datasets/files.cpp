// The file datasets: text (one token per character) and jsonl (token ids per example), and CharVocab.
#include "qkv/datasets/detail.h"
#include "qkv/datasets/utf8.h"

#include <qkv/core/errors.h>
#include <qkv/core/files.h>
#include <qkv/core/hash.h>
#include <qkv/core/ops.h>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <bitset>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

namespace qkv {
namespace {

using datasets_detail::kTrainStream;
using datasets_detail::kValStream;

// ---- text -------------------------------------------------------------------------------------------------

// Character-level language modelling: x = text[o : o + T], y = text[o + 1 : o + T + 1].
// A text's character ids, 2 bytes each when the vocabulary fits (else 4): a 281 MB file took 7.8 GB as int64
// ids after a stream copy and a code point vector; now the file's bytes and the ids, once each.
class CompactIds {
 public:
  CompactIds() = default;
  CompactIds(const std::string& text, const CharVocab& vocab, const std::string& path) {
    const std::string where = "data: " + path;
    std::vector<std::int32_t> id_of(0x110000, -1);
    for (std::int64_t id = 0; id < vocab.size(); ++id) {
      std::size_t at = 0;
      const std::string ch = vocab.decode(id);
      id_of[next_code_point(ch, at, where)] = static_cast<std::int32_t>(id);
    }
    wide_ = vocab.size() > 65536;
    // Exactly one id per character (a byte that is not a continuation byte): no growth by doubling.
    const auto chars = static_cast<std::size_t>(
        std::count_if(text.begin(), text.end(), [](char b) { return (static_cast<unsigned char>(b) & 0xC0) != 0x80; }));
    if (wide_) ids32_.reserve(chars);
    else ids16_.reserve(chars);
    for (std::size_t i = 0; i < text.size();) {
      const std::int32_t id = id_of[next_code_point(text, i, where)];
      if (wide_) ids32_.push_back(id);
      else ids16_.push_back(static_cast<std::uint16_t>(id));
    }
  }
  std::int64_t operator[](std::int64_t i) const {
    return wide_ ? ids32_[static_cast<std::size_t>(i)] : ids16_[static_cast<std::size_t>(i)];
  }
  std::int64_t size() const { return static_cast<std::int64_t>(wide_ ? ids32_.size() : ids16_.size()); }

 private:
  bool wide_ = false;
  std::vector<std::uint16_t> ids16_;
  std::vector<std::int32_t> ids32_;
};

class TextDataset : public Dataset {
 public:
  TextDataset(const DataOptions& o, std::uint64_t seed)
      : Dataset(seed, 0, o.seq_len), shuffle_(o.shuffle) {
    {
      const std::string text = read_file_bytes(o.path, "data: data.path");
      vocab_ = CharVocab::from_text(text, o.path);
      ids_ = CompactIds(text, vocab_, o.path);
    }  // the text's bytes are freed here
    vocab_size_ = vocab_.size();
    const auto n = ids_.size();
    split_ = n - n / 10;  // the last 10% is validation
    QKV_CHECK(split_ > seq_len_ && n - split_ > seq_len_,
              "data: {} has {} characters: too short for data.seq_len = {} (each split needs more than seq_len)",
              o.path, n, seq_len_);
    // Validation: consecutive non-overlapping windows of the held-out part, at most val_size of them.
    const std::int64_t windows = std::min<std::int64_t>(o.val_size, (n - split_ - 1) / seq_len_);
    validation_ = {Tensor::empty({windows, seq_len_}, kInt64), Tensor::empty({windows, seq_len_}, kInt64)};
    for (std::int64_t w = 0; w < windows; ++w) fill(split_ + w * seq_len_, validation_, w);
  }
  Batch next_batch(std::int64_t batch_size) override {
    Batch b{Tensor::empty({batch_size, seq_len_}, kInt64), Tensor::empty({batch_size, seq_len_}, kInt64)};
    const std::int64_t starts = split_ - seq_len_;  // offsets whose window and target stay in the training part
    for (std::int64_t i = 0; i < batch_size; ++i) {
      std::int64_t o;
      if (shuffle_) {
        o = static_cast<std::int64_t>(rng_.randint(static_cast<std::uint64_t>(starts)));
      } else {
        o = (position_ * seq_len_) % starts;
        ++position_;
      }
      fill(o, b, i);
    }
    return b;
  }
  std::string decode(std::int64_t token) const override { return vocab_.decode(token); }
  std::vector<std::int64_t> encode(const std::string& text) const override { return vocab_.encode(text); }
  std::string vocab() const override { return vocab_.str(); }

 private:
  void fill(std::int64_t offset, Batch& b, std::int64_t row) const {
    auto* x = b.inputs.data<std::int64_t>() + row * seq_len_;
    auto* y = b.targets.data<std::int64_t>() + row * seq_len_;
    for (std::int64_t t = 0; t < seq_len_; ++t) {
      x[t] = ids_[offset + t];
      y[t] = ids_[offset + t + 1];
    }
  }
  bool shuffle_;
  CharVocab vocab_;
  CompactIds ids_;
  std::int64_t split_ = 0;
};

// ---- jsonl ------------------------------------------------------------------------------------------------

struct Examples {
  std::vector<std::int64_t> x, y;
  std::int64_t count = 0;
};

// One example per non-empty line: {"input": [ids], "target": [ids]}, each of length seq_len.
Examples read_jsonl(const std::string& path, std::int64_t seq_len, std::int64_t vocab, const char* key) {
  check_regular_input(path, std::string("data: ") + key);
  std::ifstream in(path);
  QKV_CHECK(in.good(), "data: cannot read \"{}\"", path);
  Examples ex;
  std::string line;
  for (std::int64_t no = 1; std::getline(in, line); ++no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    // (a NUL would end nlohmann's parse early, the rest of the line unread)
    if (const auto nul = line.find('\0'); nul != std::string::npos)
      fail("data: {}:{}:{}: a NUL byte in the line (a jsonl line is one JSON object)", path, no, nul + 1);
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    QKV_CHECK(!j.is_discarded() && j.is_object(), "data: {}:{}: not a JSON object", path, no);
    for (const char* field : {"input", "target"}) {
      QKV_CHECK(j.contains(field) && j[field].is_array(), "data: {}:{}: \"{}\" must be an array of token ids", path,
                no, field);
      QKV_CHECK(static_cast<std::int64_t>(j[field].size()) == seq_len,
                "data: {}:{}: \"{}\" has {} tokens, expected data.seq_len = {}", path, no, field, j[field].size(),
                seq_len);
      const bool target = std::string(field) == "target";
      for (std::size_t t = 0; t < j[field].size(); ++t) {
        const auto& v = j[field][t];
        QKV_CHECK(v.is_number_integer(), "data: {}:{}: \"{}\"[{}] is not an integer", path, no, field, t);
        // Above INT64_MAX the conversion would wrap (18446744073709551516 would read as -100).
        QKV_CHECK(!v.is_number_unsigned() || v.get<std::uint64_t>() < static_cast<std::uint64_t>(vocab),
                  "data: {}:{}: \"{}\"[{}] = {} is out of range for data.vocab_size = {}", path, no, field, t,
                  v.dump(), vocab);
        const auto id = v.get<std::int64_t>();
        QKV_CHECK((id >= 0 && id < vocab) || (target && id == kIgnore),
                  "data: {}:{}: \"{}\"[{}] = {} is out of range for data.vocab_size = {}{}", path, no, field, t, id,
                  vocab, target ? " (use -100 to ignore a position)" : "");
        (target ? ex.y : ex.x).push_back(id);
      }
    }
    ++ex.count;
  }
  QKV_CHECK(ex.count > 0, "data: {} has no examples", path);
  return ex;
}

class JsonlDataset : public Dataset {
 public:
  JsonlDataset(const DataOptions& o, std::uint64_t seed)
      : Dataset(seed, o.vocab_size, o.seq_len), shuffle_(o.shuffle) {
    Examples all = read_jsonl(o.path, o.seq_len, o.vocab_size, "data.path");
    Examples val;
    if (!o.val_path.empty()) {
      val = read_jsonl(o.val_path, o.seq_len, o.vocab_size, "data.val_path");
    } else {
      QKV_CHECK(all.count >= 2, "data: {} has {} example; without data.val_path it needs at least 2 (the last 10% "
                "validate)", o.path, all.count);
      const std::int64_t nval = std::max<std::int64_t>(1, all.count / 10);
      const auto cut = static_cast<std::size_t>((all.count - nval) * o.seq_len);
      val.x.assign(all.x.begin() + static_cast<std::ptrdiff_t>(cut), all.x.end());
      val.y.assign(all.y.begin() + static_cast<std::ptrdiff_t>(cut), all.y.end());
      val.count = nval;
      all.x.resize(cut);
      all.y.resize(cut);
      all.count -= nval;
    }
    const auto counted = [](const Examples& e) { return std::count_if(e.y.begin(), e.y.end(), [](std::int64_t t) { return t != kIgnore; }); };
    QKV_CHECK(counted(all) > 0, "data: {}: every training target is -100 (ignored): there is nothing to learn", o.path);
    QKV_CHECK(counted(val) > 0, "data: {}: every validation target is -100 (ignored): nothing could be validated",
              o.val_path.empty() ? o.path : o.val_path);
    train_ = std::move(all);
    validation_ = {Tensor::from(val.x, {val.count, seq_len_}), Tensor::from(val.y, {val.count, seq_len_})};
    std::uint64_t h = fnv1a(nullptr, 0);
    for (const auto* ids : {&train_.x, &train_.y, &val.x, &val.y}) h = fnv1a(ids->data(), ids->size() * 8, h);
    fingerprint_ = fmt::format("jsonl:{}+{}:{:016x}", train_.count, val.count, h);
  }
  std::string fingerprint() const override { return fingerprint_; }
  Batch next_batch(std::int64_t batch_size) override {
    Batch b{Tensor::empty({batch_size, seq_len_}, kInt64), Tensor::empty({batch_size, seq_len_}, kInt64)};
    for (std::int64_t i = 0; i < batch_size; ++i) {
      std::int64_t e;
      if (shuffle_) {
        e = static_cast<std::int64_t>(rng_.randint(static_cast<std::uint64_t>(train_.count)));
      } else {
        e = position_ % train_.count;  // file order, wrapping around
        ++position_;
      }
      std::copy_n(train_.x.begin() + e * seq_len_, seq_len_, b.inputs.data<std::int64_t>() + i * seq_len_);
      std::copy_n(train_.y.begin() + e * seq_len_, seq_len_, b.targets.data<std::int64_t>() + i * seq_len_);
    }
    return b;
  }

 private:
  bool shuffle_;
  Examples train_;
  std::string fingerprint_;
};

}  // namespace

namespace datasets_detail {

std::unique_ptr<Dataset> make_text_dataset(const DataOptions& o, std::uint64_t seed) {
  return std::make_unique<TextDataset>(o, seed);
}

std::unique_ptr<Dataset> make_jsonl_dataset(const DataOptions& o, std::uint64_t seed) {
  return std::make_unique<JsonlDataset>(o, seed);
}

}  // namespace datasets_detail

CharVocab::CharVocab(const std::string& chars) {
  chars_ = decode_utf8(chars, "data: vocabulary");
  QKV_CHECK(std::is_sorted(chars_.begin(), chars_.end()) &&
                std::adjacent_find(chars_.begin(), chars_.end()) == chars_.end(),
            "vocabulary: characters must be sorted and distinct");
}

CharVocab CharVocab::from_text(const std::string& text, const std::string& source) {
  std::vector<bool> seen(0x110000);  // one bit per code point: no copy of the text
  for (std::size_t i = 0; i < text.size();) seen[next_code_point(text, i, "data: " + source)] = true;
  std::string chars;
  for (char32_t cp = 0; cp < 0x110000; ++cp)
    if (seen[cp]) chars += encode_utf8(cp);
  return CharVocab(chars);
}

std::vector<std::int64_t> CharVocab::encode(const std::string& text) const {
  std::vector<std::int64_t> out;
  for (char32_t cp : decode_utf8(text, "data: text")) {
    const auto it = std::lower_bound(chars_.begin(), chars_.end(), cp);
    QKV_CHECK(it != chars_.end() && *it == cp, "text: character '{}' (U+{:04X}) is not in the vocabulary",
              encode_utf8(cp), static_cast<std::uint32_t>(cp));
    out.push_back(it - chars_.begin());
  }
  return out;
}

std::string CharVocab::decode(std::int64_t id) const {
  return id >= 0 && id < size() ? encode_utf8(chars_[static_cast<std::size_t>(id)]) : "?";
}

std::string CharVocab::str() const {
  std::string s;
  for (char32_t cp : chars_) s += encode_utf8(cp);
  return s;
}

}  // namespace qkv
