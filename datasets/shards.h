#pragma once
// Token shards (docs/formats.md): a corpus encoded once into flat binary files, read back a window at a time, so
// training memory does not depend on the corpus size.
//
// A shard is a header of 256 little-endian int32 (1024 bytes): [0] = 20240520 (the magic), [1] = the version,
// which is the token width (1: uint16 tokens, llm.c's .bin format, which llm.c reads too; 2: uint32 tokens, for
// vocabularies over 65536), [2] = the token count; the rest zero. Then the tokens, little-endian.
// A shard folder holds shards, tokenizer/ (vocab.json + merges.txt) and manifest.json, written last.
#include <qkv/datasets/bpe.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace qkv {

inline constexpr std::int32_t kShardMagic = 20240520;
inline constexpr std::int64_t kShardHeaderBytes = 1024;

/// One shard open for reading: windows are read with pread, not mapped, so a shard truncated or rewritten under
/// a run is an error naming it (a mapping would kill the process with SIGBUS), and the page cache, not the
/// process, holds what was read.
class TokenShard {
 public:
  /// Opens and checks the header against the file's size; `vocab_size` bounds every token read.
  TokenShard(const std::string& path, std::int64_t vocab_size);
  ~TokenShard();
  TokenShard(TokenShard&&) noexcept;
  TokenShard& operator=(TokenShard&&) = delete;
  TokenShard(const TokenShard&) = delete;
  std::int64_t size() const { return count_; }
  int width() const { return width_; }
  const std::string& path() const { return path_; }
  /// tokens [begin, begin + n) into out; throws naming the shard when a token is out of the vocabulary or the
  /// file changed since it was opened.
  void read(std::int64_t begin, std::int64_t n, std::int64_t* out) const;

 private:
  std::string path_;
  int fd_ = -1, width_ = 2;
  std::int64_t count_ = 0, vocab_size_ = 0, bytes_ = 0;
  std::int64_t mtime_ns_ = 0;
};

struct ShardEntry {
  std::string file;   ///< a name inside the shard folder
  std::string split;  ///< "train" or "val"
  std::int64_t tokens = 0;
};

struct SourceFile {
  std::string path;
  std::int64_t bytes = 0, mtime_ns = 0;
};

/// manifest.json.
struct TokenManifest {
  std::string tokenizer_hash, tokenizer_name;  ///< name: "gpt2" or the folder given to qkv tokenize
  std::int64_t vocab_size = 0, eot = -1;
  int width = 2;  ///< bytes per token
  std::vector<ShardEntry> shards;
  std::vector<SourceFile> sources;
  double val_fraction = 0;
  std::int64_t shard_tokens = 0;
  std::string doc_separator;
  std::int64_t tokens(const std::string& split) const;
  std::string json() const;
};
/// Reads and checks dir/manifest.json; throws qkv::Error naming the file and the field at fault.
TokenManifest read_manifest(const std::string& dir);
/// Parses a manifest's text (`where` names it in errors).
TokenManifest parse_manifest(const std::string& text, const std::string& where);

/// Writes one shard as tokens arrive: to a temporary file beside `path`, which finish() completes (the header's
/// count, a flush to disk) and renames into place; dropped unfinished, it removes the temporary file.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, int width);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  void append(const std::int32_t* tokens, std::size_t n);
  std::int64_t count() const { return count_; }
  void finish();

 private:
  std::string path_, tmp_;
  int fd_ = -1, width_;
  std::int64_t count_ = 0;
};
/// One whole shard.
void write_shard(const std::string& path, const std::vector<std::int32_t>& tokens, int width);

struct TokenizeOptions {
  std::string tokenizer = "gpt2";    ///< a tokenizer folder or "gpt2"
  std::string out;                   ///< the shard folder
  double val_fraction = 0.05;        ///< the last fraction of the input bytes goes to the validation shard
  std::int64_t shard_tokens = 100'000'000;
  std::string doc_separator;         ///< "" = one file is one document
  /// Called now and then with (bytes read, bytes in all, tokens written).
  std::function<void(std::int64_t, std::int64_t, std::int64_t)> progress;
};
/// Encodes `files` into shards and a manifest in options.out. Streams the input in chunks encoded on all threads;
/// every document starts with "<|endoftext|>" (as llm.c's shards do). Re-run with the same inputs and options it
/// finds the manifest up to date and writes nothing (returns false then; true when it wrote).
bool tokenize_files(const std::vector<std::string>& files, const TokenizeOptions& options, TokenManifest* manifest = nullptr);

}  // namespace qkv
