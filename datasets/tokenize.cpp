// qkv tokenize: text files -> token shards, streamed in chunks that all threads encode.
#include "qkv/datasets/shards.h"

#include "qkv/datasets/detail.h"
#include "qkv/datasets/pretokenize.h"
#include "qkv/datasets/utf8.h"

#include <qkv/core/errors.h>
#include <qkv/core/files.h>
#include <qkv/core/parallel.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

namespace qkv {
namespace fs = std::filesystem;
namespace {

constexpr std::size_t kChunkBytes = 1 << 20;
constexpr std::size_t kMaxCarry = 64 << 20;

// Shard k of a split is "train_000003.bin" or "val_000000.bin".
std::string shard_file_name(bool val, int k) { return fmt::format("{}_{:06d}.bin", val ? "val" : "train", k); }
bool is_shard_file_name(std::string_view name) {
  return name.ends_with(".bin") && (name.starts_with("train_") || name.starts_with("val_"));
}

// A piece of one file to encode: it starts a document (and gets "<|endoftext|>" first) or continues one.
struct Segment {
  std::string text;
  std::size_t offset = 0;  // in its file, for errors
  const std::string* file = nullptr;
  bool doc_start = false, val = false;
  std::vector<std::int32_t> ids;
};

// Tokens of each split, cut into shards of options.shard_tokens.
class ShardSink {
 public:
  ShardSink(const TokenizeOptions& o, int width) : o_(o), width_(width) {}
  void add(const std::vector<std::int32_t>& ids, bool val) {
    auto& w = writer_[val];
    written += static_cast<std::int64_t>(ids.size());
    std::size_t at = 0;
    while (at < ids.size()) {
      if (!w) open(val);
      const auto room = static_cast<std::size_t>(o_.shard_tokens - w->count());
      const auto n = std::min(room, ids.size() - at);
      w->append(ids.data() + at, n);
      at += n;
      if (w->count() == o_.shard_tokens) close(val);
    }
  }
  std::vector<ShardEntry> finish() {
    close(false);
    close(true);
    return entries_;
  }
  std::int64_t written = 0;

 private:
  void open(bool val) {
    file_[val] = shard_file_name(val, count_[val]++);
    writer_[val] = std::make_unique<ShardWriter>((fs::path(o_.out) / file_[val]).string(), width_);
  }
  void close(bool val) {
    if (!writer_[val]) return;
    writer_[val]->finish();
    entries_.push_back({file_[val], val ? "val" : "train", writer_[val]->count()});
    writer_[val].reset();
  }
  const TokenizeOptions& o_;
  int width_;
  std::unique_ptr<ShardWriter> writer_[2];
  std::string file_[2];
  int count_[2] = {0, 0};
  std::vector<ShardEntry> entries_;
};

std::vector<SourceFile> sources_of(const std::vector<std::string>& files) {
  QKV_CHECK(!files.empty(), "tokenize: no input files");
  std::vector<SourceFile> out;
  for (const auto& f : files) {
    check_regular_input(f, "tokenize: input");
    struct stat st {};
    ::stat(f.c_str(), &st);
    out.push_back({fs::absolute(f).lexically_normal().string(), static_cast<std::int64_t>(st.st_size),
                   static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec});
  }
  return out;
}

bool same_sources(const std::vector<SourceFile>& a, const std::vector<SourceFile>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].path != b[i].path || a[i].bytes != b[i].bytes || a[i].mtime_ns != b[i].mtime_ns) return false;
  return true;
}

// The folder already holds these inputs encoded the same way, every shard in place at its size.
bool up_to_date(const TokenManifest& want, const std::string& out) {
  TokenManifest have;
  try {
    have = read_manifest(out);
  } catch (const Error&) {
    return false;
  }
  if (have.tokenizer_hash != want.tokenizer_hash || have.val_fraction != want.val_fraction ||
      have.shard_tokens != want.shard_tokens || have.doc_separator != want.doc_separator ||
      !same_sources(have.sources, want.sources))
    return false;
  for (const auto& s : have.shards) {
    std::error_code ec;
    const auto size = fs::file_size(fs::path(out) / s.file, ec);
    if (ec || static_cast<std::int64_t>(size) != kShardHeaderBytes + s.tokens * have.width) return false;
  }
  return true;
}

// Reads the files in order and hands out segments cut at safe places (a document separator, or safe_cut).
class SegmentReader {
 public:
  SegmentReader(const std::vector<SourceFile>& files, const TokenizeOptions& o) : files_(files), o_(o) {
    std::int64_t total = 0;
    for (const auto& f : files) total += f.bytes;
    total_ = total;
    val_from_ = total - static_cast<std::int64_t>(std::llround(static_cast<double>(total) * o.val_fraction));
  }
  std::int64_t total() const { return total_; }
  std::int64_t done() const { return done_; }
  /// Up to `n` more segments; none at the end.
  std::vector<Segment> next(std::size_t n) {
    std::vector<Segment> out;
    while (out.size() < n && (in_ || file_ < files_.size())) {
      if (!in_) start_file();
      read_more(out, n);
    }
    return out;
  }

 private:
  void start_file() {
    const auto& f = files_[file_].path;
    in_ = std::make_unique<std::ifstream>(f, std::ios::binary);
    QKV_CHECK(in_->good(), "tokenize: cannot read {}: {}", f, std::strerror(errno));
    carry_.clear();
    carry_offset_ = 0;
    doc_start_ = true;
  }
  // The first n bytes of carry_ as segments: two when they straddle the start of the validation bytes (cut at a
  // safe place before it), so a single small file still gives both splits.
  void emit(std::vector<Segment>& out, std::size_t n) {
    const auto pos = stream_pos_ + static_cast<std::int64_t>(carry_offset_);
    if (o_.val_fraction > 0 && pos < val_from_ && pos + static_cast<std::int64_t>(n) > val_from_) {
      const std::string_view head(carry_.data(), static_cast<std::size_t>(val_from_ - pos));
      check_utf8(head.substr(0, complete_utf8_prefix(head)), "tokenize: " + files_[file_].path, carry_offset_);
      const auto cut = safe_cut(head);
      if (cut > 0) {
        emit_one(out, cut, false);
        emit_one(out, n - cut, true);
        return;
      }
    }
    emit_one(out, n, o_.val_fraction > 0 && pos >= val_from_);
  }
  void emit_one(std::vector<Segment>& out, std::size_t n, bool val) {
    Segment s;
    s.text = carry_.substr(0, n);
    s.offset = carry_offset_;
    s.file = &files_[file_].path;
    s.doc_start = doc_start_;
    s.val = val;
    out.push_back(std::move(s));
    carry_.erase(0, n);
    carry_offset_ += n;
    doc_start_ = false;
  }
  void read_more(std::vector<Segment>& out, std::size_t want) {
    std::string block(kChunkBytes, '\0');
    in_->read(block.data(), static_cast<std::streamsize>(block.size()));
    block.resize(static_cast<std::size_t>(in_->gcount()));
    done_ += static_cast<std::int64_t>(block.size());
    carry_ += block;
    const bool eof = block.empty() || in_->eof();
    const auto& sep = o_.doc_separator;
    if (!sep.empty()) {
      for (auto at = carry_.find(sep); at != std::string::npos; at = carry_.find(sep)) {
        if (at > 0) emit(out, at);  // empty documents give nothing
        carry_.erase(0, sep.size());
        carry_offset_ += sep.size();
        doc_start_ = true;
      }
    }
    if (eof) {
      if (!carry_.empty()) emit(out, carry_.size());
      stream_pos_ += files_[file_].bytes;
      in_.reset();
      ++file_;
      return;
    }
    if (carry_.size() < kChunkBytes) return;
    // A separator may straddle the block's end: cut only where a whole one would have been seen.
    const std::size_t keep = sep.empty() ? 0 : sep.size();
    const std::string_view head(carry_.data(), carry_.size() - keep);
    check_utf8(head.substr(0, complete_utf8_prefix(head)), "tokenize: " + files_[file_].path, carry_offset_);
    auto cut = safe_cut(head);
    // A piece longer than kMaxCarry (no whitespace or change of class for 64 MB) is cut where the bytes end: memory
    // stays bounded, and only such a piece encodes differently from the whole file.
    if (cut == 0 && head.size() > kMaxCarry) cut = complete_utf8_prefix(head);
    if (cut > 0) emit(out, cut);
    (void)want;
  }
  const std::vector<SourceFile>& files_;
  const TokenizeOptions& o_;
  std::unique_ptr<std::ifstream> in_;
  std::size_t file_ = 0, carry_offset_ = 0;
  std::string carry_;
  bool doc_start_ = true;
  std::int64_t total_ = 0, val_from_ = 0, done_ = 0, stream_pos_ = 0;
};

// Shards of an earlier, larger run of the folder `out` are no longer part of it, nor are the temporary files a
// run killed while writing a shard left (named after it: ".train_000003.bin.tmp.PID"). Nothing else is touched.
void remove_stale_shards(const std::string& out, const std::vector<ShardEntry>& shards) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(out)) {
    const auto name = entry.path().filename().string();
    const bool temporary = is_temporary_name(name);
    if (!is_shard_file_name(temporary ? name.substr(1, name.find(".tmp.") - 1) : name)) continue;
    const bool listed = std::any_of(shards.begin(), shards.end(), [&](const ShardEntry& e) { return e.file == name; });
    if (temporary || !listed) fs::remove(entry.path(), ec);
  }
}

}  // namespace

bool tokenize_files(const std::vector<std::string>& files, const TokenizeOptions& o, TokenManifest* result) {
  QKV_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "tokenize: --val-fraction {} must be in [0, 1)", o.val_fraction);
  QKV_CHECK(o.shard_tokens >= 1 && o.shard_tokens <= std::numeric_limits<std::int32_t>::max(),
            "tokenize: --shard-tokens {} must be in [1, 2^31 - 1]", o.shard_tokens);
  QKV_CHECK(!o.out.empty(), "tokenize: --out is required");
  const BpeTokenizer tok = BpeTokenizer::load(o.tokenizer);
  const auto eot = tok.eot();
  QKV_CHECK(eot >= 0, "tokenize: the tokenizer {} has no <|endoftext|> token to separate documents", o.tokenizer);
  TokenManifest m;
  m.tokenizer_hash = tok.hash();
  m.tokenizer_name = o.tokenizer == "gpt2" ? "gpt2" : fs::path(o.tokenizer).lexically_normal().filename().string();
  m.vocab_size = tok.vocab_size();
  m.eot = eot;
  m.width = tok.vocab_size() <= 65536 ? 2 : 4;
  m.sources = sources_of(files);
  m.val_fraction = o.val_fraction;
  m.shard_tokens = o.shard_tokens;
  m.doc_separator = o.doc_separator;
  fs::create_directories(o.out);
  if (up_to_date(m, o.out)) {
    if (result != nullptr) *result = read_manifest(o.out);
    return false;
  }
  std::error_code ec;
  fs::remove(fs::path(o.out) / "manifest.json", ec);  // the folder is not a shard folder until it is whole again
  tok.save((fs::path(o.out) / "tokenizer").string());

  SegmentReader reader(m.sources, o);
  ShardSink sink(o, m.width);
  const auto batch = static_cast<std::size_t>(4 * num_threads());
  for (auto segments = reader.next(batch); !segments.empty(); segments = reader.next(batch)) {
    parallel_for(static_cast<std::int64_t>(segments.size()), true, [&](std::int64_t b, std::int64_t e) {
      for (auto i = b; i < e; ++i) {
        auto& s = segments[static_cast<std::size_t>(i)];
        if (s.doc_start) s.ids.push_back(eot);
        tok.encode(s.text, s.ids, /*allow_special=*/false, "tokenize: " + *s.file, s.offset);
      }
    });
    for (const auto& s : segments) sink.add(s.ids, s.val);
    if (o.progress) o.progress(reader.done(), reader.total(), sink.written);
  }
  m.shards = sink.finish();
  QKV_CHECK(m.tokens("train") > 0, "tokenize: the input has no text to train on ({} bytes)", reader.total());
  datasets_detail::write_atomically((fs::path(o.out) / "manifest.json").string(), m.json());
  remove_stale_shards(o.out, m.shards);
  if (result != nullptr) *result = m;
  return true;
}

}  // namespace qkv
