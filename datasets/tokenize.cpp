// qkv tokenize: text files -> token shards, streamed in chunks that all threads encode.
#include "qkv/datasets/shards.h"

#include "qkv/datasets/chunks.h"
#include "qkv/datasets/pretokenize.h"
#include "qkv/datasets/tokenizer_json.h"
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
  ShardSink(const TokenizeOptions& o, std::string folder, int width, std::uint64_t tokenizer)
      : o_(o), folder_(std::move(folder)), width_(width), tokenizer_(tokenizer) {}
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
    writer_[val] = std::make_unique<ShardWriter>((fs::path(folder_) / file_[val]).string(), width_, tokenizer_);
  }
  void close(bool val) {
    if (!writer_[val]) return;
    writer_[val]->finish();
    entries_.push_back({file_[val], val ? "val" : "train", writer_[val]->count(), writer_[val]->checksum()});
    writer_[val].reset();
  }
  const TokenizeOptions& o_;
  std::string folder_;
  int width_;
  std::uint64_t tokenizer_;
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

// Reads the files in order (TextChunks) and hands out segments: a chunk, cut once more where it straddles the start
// of the validation bytes (at a safe place before it), so a single small file still gives both splits.
class SegmentReader {
 public:
  SegmentReader(const std::vector<SourceFile>& files, const TokenizeOptions& o, bool line_cuts)
      : files_(files), o_(o), line_cuts_(line_cuts) {
    std::int64_t total = 0;
    for (const auto& f : files) total += f.bytes;
    total_ = total;
    val_from_ = total - static_cast<std::int64_t>(std::llround(static_cast<double>(total) * o.val_fraction));
  }
  std::int64_t total() const { return total_; }
  std::int64_t done() const { return done_; }
  /// Segments of at least `bytes` in all (fewer at the end); none at the end.
  std::vector<Segment> next(std::size_t bytes) {
    std::vector<Segment> out;
    std::size_t got = 0;
    while (got < bytes && (chunks_ || file_ < files_.size())) {
      if (!chunks_) start_file();
      TextChunks::Chunk c;
      if (!chunks_->next(c)) {
        stream_pos_ += files_[file_].bytes;
        chunks_.reset();
        in_.reset();
        ++file_;
        continue;
      }
      emit(out, c);
      got += c.text.size();
      done_ = stream_pos_ + static_cast<std::int64_t>(c.offset + c.text.size());
    }
    return out;
  }

 private:
  void start_file() {
    const auto& f = files_[file_].path;
    in_ = std::make_unique<std::ifstream>(f, std::ios::binary);
    QKV_CHECK(in_->good(), "tokenize: cannot read {}: {}", f, std::strerror(errno));
    ChunkOptions options;
    options.separator = o_.doc_separator;
    options.line_cuts_only = line_cuts_;
    chunks_ = std::make_unique<TextChunks>(*in_, "tokenize: " + f, options);
  }
  void emit(std::vector<Segment>& out, const TextChunks::Chunk& c) {
    const auto pos = stream_pos_ + static_cast<std::int64_t>(c.offset);
    const auto n = static_cast<std::int64_t>(c.text.size());
    std::size_t cut = 0;
    if (o_.val_fraction > 0 && pos < val_from_ && pos + n > val_from_) {
      const std::string_view head = c.text.substr(0, static_cast<std::size_t>(val_from_ - pos));
      check_utf8(head.substr(0, complete_utf8_prefix(head)), "tokenize: " + files_[file_].path, c.offset);
      cut = line_cuts_ ? line_cut(head) : safe_cut(head);
      // No safe place before it (one long word): cut at the last whole character, so the validation split gets its
      // share; only the two pieces at the cut encode differently from the whole.
      if (cut == 0) cut = complete_utf8_prefix(head);
    }
    if (cut > 0) {
      push(out, c.text.substr(0, cut), c.offset, c.doc_start, false);
      push(out, c.text.substr(cut), c.offset + cut, false, true);
    } else {
      push(out, c.text, c.offset, c.doc_start, o_.val_fraction > 0 && pos >= val_from_);
    }
  }
  void push(std::vector<Segment>& out, std::string_view text, std::size_t offset, bool doc_start, bool val) {
    Segment s;
    s.text = text;
    s.offset = offset;
    s.file = &files_[file_].path;
    s.doc_start = doc_start;
    s.val = val;
    out.push_back(std::move(s));
  }
  const std::vector<SourceFile>& files_;
  const TokenizeOptions& o_;
  std::unique_ptr<std::ifstream> in_;
  std::unique_ptr<TextChunks> chunks_;
  bool line_cuts_ = false;
  std::size_t file_ = 0;
  std::int64_t total_ = 0, val_from_ = 0, done_ = 0, stream_pos_ = 0;
};

// A shard folder qkv made (it has a manifest.json), or an empty one, or one holding only what an interrupted run of
// qkv tokenize left (its hidden staging folder): the only folders --out may write into, since a re-run removes
// the shards it no longer lists.
void check_out_folder(const std::string& out) {
  if (!fs::exists(out)) return;
  QKV_CHECK(fs::is_directory(out), "tokenize: --out {} is not a folder", out);
  if (fs::exists(fs::path(out) / "manifest.json")) return;
  for (const auto& entry : fs::directory_iterator(out)) {
    const auto name = entry.path().filename().string();
    QKV_CHECK(is_temporary_name(name) && name.starts_with(".shards."),  // what an interrupted first run leaves
              "tokenize: --out {} holds files (such as {}) but no manifest.json: it is not a shard folder qkv made; "
              "give a new or empty folder", out, name);
  }
}

// Moves the finished shards from `staging` into `out` (the old manifest first removed, so for those milliseconds
// the folder is no shard folder), then the tokenizer and the manifest, which makes it one again; then removes
// what the new manifest does not list: an earlier run's shards and leftovers of interrupted runs.
void install_shards(const std::string& out, const std::string& staging, const TokenManifest& m, const BpeTokenizer& tok) {
  std::error_code ec;
  fs::remove(fs::path(out) / "manifest.json", ec);
  for (const auto& e : m.shards) fs::rename(fs::path(staging) / e.file, fs::path(out) / e.file);
  tok.save((fs::path(out) / "tokenizer").string());
  write_file_atomic((fs::path(out) / "manifest.json").string(), m.json());
  for (const auto& entry : fs::directory_iterator(out)) {
    const auto name = entry.path().filename().string();
    const bool listed = std::any_of(m.shards.begin(), m.shards.end(), [&](const ShardEntry& e) { return e.file == name; });
    const bool leftover = is_temporary_name(name) && (name.starts_with(".shards.") ||  // a staging folder, or an
                                                      is_shard_file_name(name.substr(1, name.find(".tmp.") - 1)));  // older qkv's shard
    if ((is_shard_file_name(name) && !listed) || leftover) fs::remove_all(entry.path(), ec);
  }
}

}  // namespace

bool tokenize_files(const std::vector<std::string>& files, const TokenizeOptions& o, TokenManifest* result) {
  QKV_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "tokenize: --val-fraction {} must be in [0, 1)", o.val_fraction);
  QKV_CHECK(o.shard_tokens >= 1 && o.shard_tokens <= std::numeric_limits<std::int32_t>::max(),
            "tokenize: --shard-tokens {} must be in [1, 2^31 - 1]", o.shard_tokens);
  QKV_CHECK(!o.out.empty(), "tokenize: --out is required");
  const BpeTokenizer tok = load_tokenizer(o.tokenizer);
  const auto eot = tok.document_separator();
  QKV_CHECK(eot >= 0, "tokenize: the tokenizer {} has neither <|endoftext|> nor a beginning-of-sequence token "
            "(tokenizer.json's post_processor) to separate documents", o.tokenizer);
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
  check_out_folder(o.out);
  fs::create_directories(o.out);
  if (up_to_date(m, o.out)) {
    if (result != nullptr) *result = read_manifest(o.out);
    return false;
  }
  // The new shards go to a staging folder: until they are all written, the folder keeps its old shards and
  // manifest (a failed run, a full disk or a kill leaves it usable), and only then are they moved in.
  const std::string staging = temporary_path(fs::path(o.out) / "shards");
  fs::create_directories(staging);
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{staging};
  SegmentReader reader(m.sources, o, tok.rules() != nullptr);
  ShardSink sink(o, staging, m.width, std::stoull(m.tokenizer_hash, nullptr, 16));
  const auto batch_bytes = static_cast<std::size_t>(num_threads()) * (4u << 20);  // a few chunks per thread
  for (auto segments = reader.next(batch_bytes); !segments.empty(); segments = reader.next(batch_bytes)) {
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
  install_shards(o.out, staging, m, tok);
  if (result != nullptr) *result = m;
  return true;
}

}  // namespace qkv
