// Token shards: the file format, the manifest, and writing files atomically.
#include "qkv/datasets/shards.h"

#include "qkv/datasets/detail.h"

#include <qkv/core/errors.h>
#include <qkv/core/files.h>
#include <qkv/core/hash.h>
#include <qkv/datasets/pretokenize.h>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

namespace qkv {
namespace fs = std::filesystem;
namespace {

std::int64_t mtime_ns(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

template <class T>
T field(const nlohmann::json& j, const char* key, const std::string& where, const char* what) {
  QKV_CHECK(j.is_object() && j.contains(key), "data: {}: \"{}\" is missing ({})", where, key, what);
  const auto& v = j[key];
  if constexpr (std::is_same_v<T, std::string>) {
    QKV_CHECK(v.is_string(), "data: {}: \"{}\" must be a string ({})", where, key, what);
  } else if constexpr (std::is_integral_v<T>) {
    QKV_CHECK(v.is_number_integer() && (!v.is_number_unsigned() || v.get<std::uint64_t>() <= INT64_MAX),
              "data: {}: \"{}\" must be an integer ({})", where, key, what);
  } else {
    QKV_CHECK(v.is_number(), "data: {}: \"{}\" must be a number ({})", where, key, what);
  }
  return v.get<T>();
}

}  // namespace

// ---- shards -----------------------------------------------------------------------------------------------

// The header's words: [0] magic, [1] version, [2] token count (llm.c's), then qkv's: [3..4] the tokenizer's hash and
// [5..6] the tokens' FNV-1a hash, each 64 bits low word first; the rest zero.
std::uint64_t join(std::int32_t lo, std::int32_t hi) {
  return static_cast<std::uint32_t>(lo) | static_cast<std::uint64_t>(static_cast<std::uint32_t>(hi)) << 32;
}

TokenShard::TokenShard(const std::string& path, std::int64_t vocab_size, std::uint64_t tokenizer)
    : path_(path), vocab_size_(vocab_size) {
  check_regular_input(path, "data: shard");
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  QKV_CHECK(fd_ >= 0, "data: cannot open shard {}: {}", path, std::strerror(errno));
  struct stat st {};
  ::fstat(fd_, &st);
  bytes_ = st.st_size;
  mtime_ns_ = mtime_ns(st);
  inode_ = st.st_ino;
  device_ = st.st_dev;
  std::int32_t h[256] = {};
  const bool whole = bytes_ >= kShardHeaderBytes && ::pread(fd_, h, sizeof h, 0) == sizeof h;
  const auto refuse = [this](const std::string& why) {
    ::close(fd_);
    fd_ = -1;
    throw Error(why);
  };
  if (!whole) refuse(fmt::format("data: shard {} is {} bytes, shorter than its 1024-byte header", path, bytes_));
  if (h[0] == kShardMagic && h[1] == 2)
    refuse(fmt::format("data: shard {} was written by an older qkv (uint32 tokens under magic {} version 2, and no "
                       "tokenizer in its header): run qkv tokenize again", path, kShardMagic));
  if (h[0] != kShardMagic && h[0] != kShardMagic32)
    refuse(fmt::format("data: {} is not a token shard (magic {}, expected {} or {})", path, h[0], kShardMagic, kShardMagic32));
  if ((h[0] == kShardMagic && h[1] != 1) || (h[0] == kShardMagic32 && h[1] != 7) || h[2] < 0)
    refuse(fmt::format("data: shard {}: version {} and token count {} (expected version {}, a count >= 0)", path, h[1],
                       h[2], h[0] == kShardMagic ? 1 : 7));
  for (int w = 7; w < 256; ++w)
    if (h[w] != 0) refuse(fmt::format("data: shard {}: header word {} is {}, where the format has 0", path, w, h[w]));
  width_ = h[0] == kShardMagic ? 2 : 4;
  count_ = h[2];
  tokenizer_ = join(h[3], h[4]);
  checksum_ = join(h[5], h[6]);
  if (kShardHeaderBytes + count_ * width_ != bytes_)
    refuse(fmt::format("data: shard {} says it holds {} tokens ({} bytes with the header) but is {} bytes", path,
                       count_, kShardHeaderBytes + count_ * width_, bytes_));
  if (tokenizer != 0 && tokenizer_ != tokenizer)
    refuse(fmt::format("data: shard {} was made by another tokenizer (hash {:016x} in its header; the manifest's is "
                       "{:016x})", path, tokenizer_, tokenizer));
}

TokenShard::~TokenShard() {
  if (fd_ >= 0) ::close(fd_);
}

TokenShard::TokenShard(TokenShard&& o) noexcept
    : path_(std::move(o.path_)), fd_(o.fd_), width_(o.width_), count_(o.count_), vocab_size_(o.vocab_size_),
      bytes_(o.bytes_), mtime_ns_(o.mtime_ns_), tokenizer_(o.tokenizer_), checksum_(o.checksum_), inode_(o.inode_),
      device_(o.device_) {
  o.fd_ = -1;
}

void TokenShard::read(std::int64_t begin, std::int64_t n, std::int64_t* out) const {
  QKV_CHECK(begin >= 0 && n >= 0 && begin + n <= count_, "data: shard {}: tokens [{}, {}) are outside its {}", path_,
            begin, begin + n, count_);
  struct stat st {}, now {};
  QKV_CHECK(::fstat(fd_, &st) == 0 && st.st_size == bytes_ && mtime_ns(st) == mtime_ns_,
            "data: shard {} changed during training (it was {} bytes; a shard folder must not change under a run)",
            path_, bytes_);
  // A folder tokenized again renames new shards over the old: the open descriptor still reads the old file.
  QKV_CHECK(::stat(path_.c_str(), &now) == 0 && now.st_ino == inode_ && now.st_dev == device_,
            "data: shard {} was replaced during training (the folder was tokenized again?): a shard folder must not "
            "change under a run", path_);
  thread_local std::vector<unsigned char> buf;
  buf.resize(static_cast<std::size_t>(n * width_));
  const auto want = static_cast<ssize_t>(buf.size());
  const ssize_t got = ::pread(fd_, buf.data(), buf.size(), kShardHeaderBytes + begin * width_);
  QKV_CHECK(got == want, "data: shard {}: short read at token {} ({} of {} bytes): it changed during training",
            path_, begin, got, want);
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t t;
    if (width_ == 2) {
      std::uint16_t v;
      std::memcpy(&v, buf.data() + i * 2, 2);
      t = v;
    } else {
      std::uint32_t v;
      std::memcpy(&v, buf.data() + i * 4, 4);
      t = v;
    }
    QKV_CHECK(t < vocab_size_, "data: shard {}: token {} at position {} is outside the vocabulary of {} (manifest)",
              path_, t, begin + i, vocab_size_);
    out[i] = t;
  }
}

ShardWriter::ShardWriter(const std::string& path, int width, std::uint64_t tokenizer)
    : file_(path), width_(width), tokenizer_(tokenizer) {
  const std::int32_t header[256] = {};
  file_.write(header, sizeof header);
}

void ShardWriter::append(const std::int32_t* tokens, std::size_t n) {
  QKV_CHECK(count_ + static_cast<std::int64_t>(n) <= std::numeric_limits<std::int32_t>::max(),
            "data: shard {} would hold more than 2^31 - 1 tokens, which its header cannot count", file_.path());
  if (width_ == 4) {
    checksum_ = fnv1a(tokens, n * 4, checksum_);
    file_.write(tokens, n * 4);
  } else {
    thread_local std::vector<std::uint16_t> narrow;
    narrow.assign(tokens, tokens + n);
    checksum_ = fnv1a(narrow.data(), n * 2, checksum_);
    file_.write(narrow.data(), n * 2);
  }
  count_ += static_cast<std::int64_t>(n);
}

void ShardWriter::finish() {
  const auto lo = [](std::uint64_t v) { return static_cast<std::int32_t>(static_cast<std::uint32_t>(v)); };
  const auto hi = [](std::uint64_t v) { return static_cast<std::int32_t>(static_cast<std::uint32_t>(v >> 32)); };
  const std::int32_t header[7] = {width_ == 2 ? kShardMagic : kShardMagic32, width_ == 2 ? 1 : 7,
                                  static_cast<std::int32_t>(count_), lo(tokenizer_), hi(tokenizer_), lo(checksum_),
                                  hi(checksum_)};
  file_.write_at(0, header, sizeof header);
  file_.commit();
}

void write_shard(const std::string& path, const std::vector<std::int32_t>& tokens, int width, std::uint64_t tokenizer) {
  ShardWriter w(path, width, tokenizer);
  w.append(tokens.data(), tokens.size());
  w.finish();
}

// ---- the manifest -----------------------------------------------------------------------------------------

std::int64_t TokenManifest::tokens(const std::string& split) const {
  std::int64_t n = 0;
  for (const auto& s : shards)
    if (s.split == split) n += s.tokens;
  return n;
}

std::string TokenManifest::json() const {
  nlohmann::ordered_json j;
  j["format"] = "qkv-token-shards";
  j["version"] = 2;
  j["tokenizer"] = {{"name", tokenizer_name}, {"hash", tokenizer_hash}, {"folder", "tokenizer"},
                    {"vocab_size", vocab_size}, {"eot", eot}, {"unicode", unicode}};
  j["dtype"] = width == 2 ? "uint16" : "uint32";
  j["tokens"] = {{"train", tokens("train")}, {"val", tokens("val")}};
  j["shards"] = nlohmann::ordered_json::array();
  for (const auto& s : shards)
    j["shards"].push_back({{"file", s.file}, {"split", s.split}, {"tokens", s.tokens}, {"checksum", fmt::format("{:016x}", s.checksum)}});
  j["options"] = {{"val_fraction", val_fraction}, {"shard_tokens", shard_tokens}, {"doc_separator", doc_separator}};
  j["sources"] = nlohmann::ordered_json::array();
  for (const auto& s : sources) j["sources"].push_back({{"path", s.path}, {"bytes", s.bytes}, {"mtime_ns", s.mtime_ns}});
  return j.dump(2) + "\n";
}

TokenManifest parse_manifest(const std::string& text, const std::string& where) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  QKV_CHECK(!j.is_discarded() && j.is_object(), "data: {} is not a JSON object", where);
  QKV_CHECK(j.contains("format") && j["format"] == "qkv-token-shards", "data: {}: \"format\" must be \"qkv-token-shards\"", where);
  const auto version = field<std::int64_t>(j, "version", where, "the manifest version");
  QKV_CHECK(version != 1, "data: {} was written by an older qkv (version 1: no Unicode version or shard checksums "
            "recorded): run qkv tokenize again", where);
  QKV_CHECK(version == 2, "data: {}: version {} is not one this qkv reads (2)", where, version);
  TokenManifest m;
  const auto& t = j.contains("tokenizer") ? j["tokenizer"] : nlohmann::json();
  m.tokenizer_name = field<std::string>(t, "name", where, "tokenizer.name");
  m.tokenizer_hash = field<std::string>(t, "hash", where, "tokenizer.hash");
  m.vocab_size = field<std::int64_t>(t, "vocab_size", where, "tokenizer.vocab_size");
  m.eot = field<std::int64_t>(t, "eot", where, "tokenizer.eot");
  m.unicode = field<std::string>(t, "unicode", where, "tokenizer.unicode, the Unicode version of its pre-tokenizer");
  QKV_CHECK(m.unicode == pretokenizer_unicode_version(), "data: {}: tokenizer.unicode is {}, but this qkv's "
            "pre-tokenizer follows Unicode {}: the same text may give other ids; run qkv tokenize again", where,
            m.unicode, pretokenizer_unicode_version());
  QKV_CHECK(m.vocab_size >= 1 && m.vocab_size <= (std::int64_t{1} << 31), "data: {}: tokenizer.vocab_size = {} is out of range", where, m.vocab_size);
  const auto dtype = field<std::string>(j, "dtype", where, "uint16 or uint32");
  QKV_CHECK(dtype == "uint16" || dtype == "uint32", "data: {}: dtype \"{}\" (expected uint16 or uint32)", where, dtype);
  m.width = dtype == "uint16" ? 2 : 4;
  QKV_CHECK(m.width == 4 || m.vocab_size <= 65536, "data: {}: a vocabulary of {} does not fit uint16", where, m.vocab_size);
  QKV_CHECK(j.contains("shards") && j["shards"].is_array(), "data: {}: \"shards\" must be an array", where);
  for (const auto& s : j["shards"]) {
    ShardEntry e{field<std::string>(s, "file", where, "a shard's file name"),
                 field<std::string>(s, "split", where, "train or val"),
                 field<std::int64_t>(s, "tokens", where, "a shard's token count")};
    QKV_CHECK(!e.file.empty() && e.file.find('/') == std::string::npos && e.file != "." && e.file != "..",
              "data: {}: shard file \"{}\" must be a plain name inside the folder", where, e.file);
    QKV_CHECK(e.split == "train" || e.split == "val", "data: {}: shard {} has split \"{}\" (train or val)", where, e.file, e.split);
    QKV_CHECK(e.tokens >= 0, "data: {}: shard {} has {} tokens", where, e.file, e.tokens);
    const auto sum = field<std::string>(s, "checksum", where, "a shard's checksum, 16 hex digits");
    QKV_CHECK(sum.size() == 16 && sum.find_first_not_of("0123456789abcdef") == std::string::npos,
              "data: {}: shard {} has checksum \"{}\" (16 hex digits)", where, e.file, sum);
    e.checksum = std::stoull(sum, nullptr, 16);
    for (const auto& other : m.shards)
      QKV_CHECK(other.file != e.file, "data: {}: shard {} is listed twice", where, e.file);
    m.shards.push_back(e);
  }
  if (j.contains("options") && j["options"].is_object()) {
    const auto& o = j["options"];
    if (o.contains("val_fraction")) m.val_fraction = field<double>(o, "val_fraction", where, "options.val_fraction");
    if (o.contains("shard_tokens")) m.shard_tokens = field<std::int64_t>(o, "shard_tokens", where, "options.shard_tokens");
    if (o.contains("doc_separator")) m.doc_separator = field<std::string>(o, "doc_separator", where, "options.doc_separator");
  }
  if (j.contains("sources") && j["sources"].is_array())
    for (const auto& s : j["sources"])
      m.sources.push_back({field<std::string>(s, "path", where, "a source's path"),
                           field<std::int64_t>(s, "bytes", where, "a source's size"),
                           field<std::int64_t>(s, "mtime_ns", where, "a source's time")});
  return m;
}

TokenManifest read_manifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / "manifest.json").string();
  QKV_CHECK(fs::exists(path), "data: {} has no manifest.json (make a shard folder with qkv tokenize)", dir);
  return parse_manifest(read_file_bytes(path, "data: manifest", 64ull << 20), path);
}

}  // namespace qkv
