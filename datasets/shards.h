#pragma once
// Token shards (docs/tokens.md#shard-folders): a corpus encoded once into flat binary files, read back a window at a time, so
// training memory does not depend on the corpus size.
//
// A shard is a header of 256 little-endian int32 (1024 bytes), then the tokens, little-endian. The header is llm.c's:
// [0] magic and [1] version, 20240520 and 1 for uint16 tokens (llm.c's GPT-2 shards), 20240801 and 7 for uint32
// tokens (vocabularies over 65536; llm.c's Llama 3 shards), [2] the token count; so llm.c reads qkv's shards. In
// words llm.c leaves zero qkv keeps [3..4] the hash of the tokenizer that made the tokens and [5..6] the FNV-1a hash
// of the token bytes (64 bits each, low word first); words 7 to 255 are zero, and a reader checks that they are.
// A shard folder holds shards, tokenizer/ (vocab.json + merges.txt) and manifest.json, written last.
#include <qkv/core/files.h>
#include <qkv/core/hash.h>
#include <qkv/datasets/bpe.h>
#include <qkv/datasets/pretokenize.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace qkv {

inline constexpr std::int32_t kShardMagic = 20240520;    ///< uint16 tokens, version 1
inline constexpr std::int32_t kShardMagic32 = 20240801;  ///< uint32 tokens, version 7
inline constexpr std::int64_t kShardHeaderBytes = 1024;

/// One shard open for reading: windows are read with pread, not mapped, so a shard truncated or rewritten under
/// a run is an error naming it (a mapping would kill the process with SIGBUS), and the page cache, not the
/// process, holds what was read.
class TokenShard {
 public:
  /// Opens and checks the header against the file's size; `vocab_size` bounds every token read; `tokenizer` (a
  /// tokenizer's hash, 0 for any) must be the one the header names.
  TokenShard(const std::string& path, std::int64_t vocab_size, std::uint64_t tokenizer = 0);
  ~TokenShard();
  TokenShard(TokenShard&&) noexcept;
  TokenShard& operator=(TokenShard&&) = delete;
  TokenShard(const TokenShard&) = delete;
  std::int64_t size() const { return count_; }
  int width() const { return width_; }
  const std::string& path() const { return path_; }
  std::uint64_t tokenizer() const { return tokenizer_; }
  /// The FNV-1a hash of the token bytes the header records.
  std::uint64_t checksum() const { return checksum_; }
  /// tokens [begin, begin + n) into out; throws naming the shard when a token is out of the vocabulary or the
  /// file changed since it was opened.
  void read(std::int64_t begin, std::int64_t n, std::int64_t* out) const;

 private:
  std::string path_;
  int fd_ = -1, width_ = 2;
  std::int64_t count_ = 0, vocab_size_ = 0, bytes_ = 0;
  std::int64_t mtime_ns_ = 0;
  std::uint64_t tokenizer_ = 0, checksum_ = 0, inode_ = 0, device_ = 0;
};

struct ShardEntry {
  std::string file;   ///< a name inside the shard folder
  std::string split;  ///< "train" or "val"
  std::int64_t tokens = 0;
  std::uint64_t checksum = 0;  ///< the FNV-1a hash of its token bytes, as its header records it
};

struct SourceFile {
  std::string path;
  std::int64_t bytes = 0, mtime_ns = 0;
};

/// manifest.json.
struct TokenManifest {
  std::string tokenizer_hash, tokenizer_name;  ///< name: "gpt2" or the folder given to qkv tokenize
  std::string unicode = pretokenizer_unicode_version();  ///< the Unicode version of the pre-tokenizer's tables
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

/// Writes one shard as tokens arrive, by core's output rule (AtomicFile): finish() completes the header (count,
/// tokenizer, checksum), flushes it to disk and renames it into place; dropped unfinished, nothing appears.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, int width, std::uint64_t tokenizer);
  void append(const std::int32_t* tokens, std::size_t n);
  std::int64_t count() const { return count_; }
  std::uint64_t checksum() const { return checksum_; }
  void finish();

 private:
  AtomicFile file_;
  int width_;
  std::uint64_t tokenizer_, checksum_ = fnv1a(nullptr, 0);
  std::int64_t count_ = 0;
};
/// One whole shard.
void write_shard(const std::string& path, const std::vector<std::int32_t>& tokens, int width, std::uint64_t tokenizer);

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
