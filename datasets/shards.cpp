// Token shards: the file format, the manifest, and writing files atomically.
#include "qkv/datasets/shards.h"

#include "qkv/datasets/detail.h"

#include <qkv/core/errors.h>
#include <qkv/core/files.h>

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

void write_all(int fd, const void* data, std::size_t n, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    QKV_CHECK(w > 0, "write: {}: {}", path, std::strerror(errno));
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Writes `fill` to a temporary file beside `path`, flushes it to disk, and renames it over `path`.
template <class Fill>
void write_file_by(const std::string& path, Fill&& fill) {
  const std::string tmp = temporary_path(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  QKV_CHECK(fd >= 0, "write: cannot create {}: {}", tmp, std::strerror(errno));
  try {
    fill(fd, tmp);
    QKV_CHECK(::fsync(fd) == 0, "write: {}: {}", tmp, std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    fail("write: cannot rename {} to {}: {}", tmp, path, std::strerror(e));
  }
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

namespace datasets_detail {
void write_atomically(const std::string& path, const std::string& bytes) {
  write_file_by(path, [&](int fd, const std::string& tmp) { write_all(fd, bytes.data(), bytes.size(), tmp); });
}
}  // namespace datasets_detail

// ---- shards -----------------------------------------------------------------------------------------------

TokenShard::TokenShard(const std::string& path, std::int64_t vocab_size) : path_(path), vocab_size_(vocab_size) {
  check_regular_input(path, "data: shard");
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  QKV_CHECK(fd_ >= 0, "data: cannot open shard {}: {}", path, std::strerror(errno));
  struct stat st {};
  ::fstat(fd_, &st);
  bytes_ = st.st_size;
  mtime_ns_ = mtime_ns(st);
  std::int32_t header[3] = {};
  const bool whole = bytes_ >= kShardHeaderBytes && ::pread(fd_, header, sizeof header, 0) == sizeof header;
  if (!whole || header[0] != kShardMagic || (header[1] != 1 && header[1] != 2) || header[2] < 0) {
    ::close(fd_);
    fd_ = -1;
    QKV_CHECK(whole, "data: shard {} is {} bytes, shorter than its 1024-byte header", path, bytes_);
    QKV_CHECK(header[0] == kShardMagic, "data: {} is not a token shard (magic {}, expected {})", path, header[0],
              kShardMagic);
    fail("data: shard {}: version {} and token count {} (expected version 1 or 2, a count >= 0)", path, header[1],
         header[2]);
  }
  width_ = header[1] == 1 ? 2 : 4;
  count_ = header[2];
  if (kShardHeaderBytes + count_ * width_ != bytes_) {
    ::close(fd_);
    fd_ = -1;
    fail("data: shard {} says it holds {} tokens ({} bytes with the header) but is {} bytes", path, count_,
         kShardHeaderBytes + count_ * width_, bytes_);
  }
}

TokenShard::~TokenShard() {
  if (fd_ >= 0) ::close(fd_);
}

TokenShard::TokenShard(TokenShard&& o) noexcept
    : path_(std::move(o.path_)), fd_(o.fd_), width_(o.width_), count_(o.count_), vocab_size_(o.vocab_size_),
      bytes_(o.bytes_), mtime_ns_(o.mtime_ns_) {
  o.fd_ = -1;
}

void TokenShard::read(std::int64_t begin, std::int64_t n, std::int64_t* out) const {
  QKV_CHECK(begin >= 0 && n >= 0 && begin + n <= count_, "data: shard {}: tokens [{}, {}) are outside its {}", path_,
            begin, begin + n, count_);
  struct stat st {};
  QKV_CHECK(::fstat(fd_, &st) == 0 && st.st_size == bytes_ && mtime_ns(st) == mtime_ns_,
            "data: shard {} changed during training (it was {} bytes; a shard folder must not change under a run)",
            path_, bytes_);
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

ShardWriter::ShardWriter(const std::string& path, int width) : path_(path), tmp_(temporary_path(path)), width_(width) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  QKV_CHECK(fd_ >= 0, "write: cannot create {}: {}", tmp_, std::strerror(errno));
  const std::int32_t header[256] = {};
  write_all(fd_, header, sizeof header, tmp_);
}

ShardWriter::~ShardWriter() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

void ShardWriter::append(const std::int32_t* tokens, std::size_t n) {
  QKV_CHECK(count_ + static_cast<std::int64_t>(n) <= std::numeric_limits<std::int32_t>::max(),
            "data: shard {} would hold more than 2^31 - 1 tokens, which its header cannot count", path_);
  if (width_ == 4) {
    write_all(fd_, tokens, n * 4, tmp_);
  } else {
    thread_local std::vector<std::uint16_t> narrow;
    narrow.assign(tokens, tokens + n);
    write_all(fd_, narrow.data(), n * 2, tmp_);
  }
  count_ += static_cast<std::int64_t>(n);
}

void ShardWriter::finish() {
  const std::int32_t header[3] = {kShardMagic, width_ == 2 ? 1 : 2, static_cast<std::int32_t>(count_)};
  QKV_CHECK(::pwrite(fd_, header, sizeof header, 0) == sizeof header && ::fsync(fd_) == 0, "write: {}: {}", tmp_,
            std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp_.c_str());
    fail("write: cannot rename {} to {}: {}", tmp_, path_, std::strerror(e));
  }
}

void write_shard(const std::string& path, const std::vector<std::int32_t>& tokens, int width) {
  ShardWriter w(path, width);
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
  j["version"] = 1;
  j["tokenizer"] = {{"name", tokenizer_name}, {"hash", tokenizer_hash}, {"folder", "tokenizer"},
                    {"vocab_size", vocab_size}, {"eot", eot}};
  j["dtype"] = width == 2 ? "uint16" : "uint32";
  j["tokens"] = {{"train", tokens("train")}, {"val", tokens("val")}};
  j["shards"] = nlohmann::ordered_json::array();
  for (const auto& s : shards) j["shards"].push_back({{"file", s.file}, {"split", s.split}, {"tokens", s.tokens}});
  j["options"] = {{"val_fraction", val_fraction}, {"shard_tokens", shard_tokens}, {"doc_separator", doc_separator}};
  j["sources"] = nlohmann::ordered_json::array();
  for (const auto& s : sources) j["sources"].push_back({{"path", s.path}, {"bytes", s.bytes}, {"mtime_ns", s.mtime_ns}});
  return j.dump(2) + "\n";
}

TokenManifest parse_manifest(const std::string& text, const std::string& where) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  QKV_CHECK(!j.is_discarded() && j.is_object(), "data: {} is not a JSON object", where);
  QKV_CHECK(j.contains("format") && j["format"] == "qkv-token-shards", "data: {}: \"format\" must be \"qkv-token-shards\"", where);
  QKV_CHECK(field<std::int64_t>(j, "version", where, "the manifest version") == 1,
            "data: {}: version {} is not one this qkv reads (1)", where, j["version"].dump());
  TokenManifest m;
  const auto& t = j.contains("tokenizer") ? j["tokenizer"] : nlohmann::json();
  m.tokenizer_name = field<std::string>(t, "name", where, "tokenizer.name");
  m.tokenizer_hash = field<std::string>(t, "hash", where, "tokenizer.hash");
  m.vocab_size = field<std::int64_t>(t, "vocab_size", where, "tokenizer.vocab_size");
  m.eot = field<std::int64_t>(t, "eot", where, "tokenizer.eot");
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
