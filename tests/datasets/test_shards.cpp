#include "../support.h"

#include <qkv/datasets/shards.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>

using namespace qkv;
namespace fs = std::filesystem;

namespace {
std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void put(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }
std::int32_t header_word(const std::string& bytes, int k) {
  std::int32_t v;
  std::memcpy(&v, bytes.data() + 4 * k, 4);
  return v;
}
std::vector<std::int64_t> read_all(const TokenShard& s) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(s.size()));
  s.read(0, s.size(), out.data());
  return out;
}
}  // namespace

TEST_CASE("shards: llm.c's header, uint16 or uint32 tokens, read back exactly") {
  const auto dir = test::scratch_dir("shards_rw");
  std::vector<std::int32_t> small(1000);
  std::iota(small.begin(), small.end(), 50000 - 1000);
  write_shard((dir / "a.bin").string(), small, 2, 0x0123456789abcdefULL);
  const auto bytes = bytes_of((dir / "a.bin").string());
  CHECK(bytes.size() == 1024 + 2 * 1000);
  CHECK(header_word(bytes, 0) == 20240520);
  CHECK(header_word(bytes, 1) == 1);
  CHECK(header_word(bytes, 2) == 1000);
  CHECK(static_cast<std::uint32_t>(header_word(bytes, 3)) == 0x89abcdefU);  // the tokenizer, low word first
  CHECK(header_word(bytes, 4) == 0x01234567);
  CHECK(header_word(bytes, 7) == 0);
  std::uint16_t first;
  std::memcpy(&first, bytes.data() + 1024, 2);
  CHECK(first == 49000);
  TokenShard a((dir / "a.bin").string(), 50257, 0x0123456789abcdefULL);
  CHECK(a.size() == 1000);
  CHECK(a.checksum() == fnv1a(bytes.data() + 1024, 2000));
  CHECK(a.width() == 2);
  const auto got = read_all(a);
  CHECK(std::equal(got.begin(), got.end(), small.begin()));
  std::int64_t window[3];
  a.read(997, 3, window);
  CHECK(window[2] == 49999);
  CHECK_ERROR(a.read(998, 3, window), "tokens [998, 1001) are outside its 1000");

  const std::vector<std::int32_t> wide = {0, 70000, 100276};
  write_shard((dir / "b.bin").string(), wide, 4, 1);
  CHECK(header_word(bytes_of((dir / "b.bin").string()), 0) == 20240801);  // llm.c's uint32 shards: version 7
  CHECK(header_word(bytes_of((dir / "b.bin").string()), 1) == 7);
  TokenShard b((dir / "b.bin").string(), 100277);
  CHECK(read_all(b) == std::vector<std::int64_t>{0, 70000, 100276});

  const std::vector<std::int32_t> none;
  write_shard((dir / "empty.bin").string(), none, 2, 1);
  CHECK(TokenShard((dir / "empty.bin").string(), 10).size() == 0);
  // No temporary file is left beside them.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  CHECK(files == 3);
}

TEST_CASE("shards: a bad magic, a lying count, a short header, a token outside the vocabulary, a change under a run") {
  const auto dir = test::scratch_dir("shards_bad");
  const std::string p = (dir / "s.bin").string();
  std::vector<std::int32_t> t(100, 7);
  t[50] = 300;
  write_shard(p, t, 2, 42);
  const auto good = bytes_of(p);
  auto bad = good;
  bad[0] = 'X';
  put(p, bad);
  CHECK_ERROR(TokenShard(p, 1000), "is not a token shard (magic");
  bad = good;
  bad[8] = 101;  // the count says 101 tokens; 100 are there
  put(p, bad);
  CHECK_ERROR(TokenShard(p, 1000), "says it holds 101 tokens (1226 bytes with the header) but is 1224 bytes");
  bad = good;
  bad[4] = 3;  // version 3
  put(p, bad);
  CHECK_ERROR(TokenShard(p, 1000), "version 3 and token count 100");
  bad = good;
  bad[4] = 2;  // an older qkv's uint32 shard
  put(p, bad);
  CHECK_ERROR(TokenShard(p, 1000), "was written by an older qkv");
  bad = good;
  bad[4 * 100] = 1;  // a reserved word
  put(p, bad);
  CHECK_ERROR(TokenShard(p, 1000), "header word 100 is 1, where the format has 0");
  put(p, good);
  CHECK_ERROR(TokenShard(p, 1000, 43), "was made by another tokenizer (hash 000000000000002a in its header; the manifest's is 000000000000002b)");
  put(p, good.substr(0, 500));
  CHECK_ERROR(TokenShard(p, 1000), "is 500 bytes, shorter than its 1024-byte header");
  put(p, good);
  std::int64_t out[100];
  CHECK_NOTHROW(TokenShard(p, 1000).read(0, 100, out));
  CHECK_ERROR(TokenShard(p, 256).read(0, 100, out), "token 300 at position 50 is outside the vocabulary of 256");
  TokenShard open(p, 1000);
  std::ofstream(p, std::ios::binary | std::ios::app) << "ab";
  CHECK_ERROR(open.read(0, 10, out), "changed during training");
  put(p, good);
  TokenShard before(p, 1000);
  write_shard(p, t, 2, 42);  // tokenized again: a new file renamed over the old one, which `before` still reads
  CHECK_ERROR(before.read(0, 10, out), "was replaced during training");
  CHECK_ERROR(TokenShard((dir / "missing.bin").string(), 10), "missing.bin");
}

TEST_CASE("shards: a writer dropped before finish leaves nothing; an unwritable place is named") {
  const auto dir = test::scratch_dir("shards_drop");
  {
    ShardWriter w((dir / "x.bin").string(), 2, 1);
    const std::int32_t some[3] = {1, 2, 3};
    w.append(some, 3);
  }
  CHECK(fs::is_empty(dir));
  CHECK_ERROR(ShardWriter((dir / "no" / "x.bin").string(), 2, 1), "cannot create");
}

TEST_CASE("manifest: written and parsed back; each damaged field named") {
  TokenManifest m;
  m.tokenizer_hash = "0123456789abcdef";
  m.tokenizer_name = "gpt2";
  m.vocab_size = 50257;
  m.eot = 50256;
  m.width = 2;
  m.shards = {{"train_000000.bin", "train", 900, 1}, {"train_000001.bin", "train", 50, 2}, {"val_000000.bin", "val", 40, 3}};
  m.sources = {{"/data/a.txt", 1234, 5678}};
  m.val_fraction = 0.05;
  m.shard_tokens = 900;
  const auto back = parse_manifest(m.json(), "m.json");
  CHECK(back.json() == m.json());
  CHECK(back.tokens("train") == 950);
  CHECK(back.tokens("val") == 40);
  CHECK(m.json().find("\"dtype\": \"uint16\"") != std::string::npos);

  auto damaged = [&](const std::string& from, const std::string& to) {
    auto text = m.json();
    const auto at = text.find(from);
    REQUIRE(at != std::string::npos);
    return text.replace(at, from.size(), to);
  };
  CHECK_ERROR(parse_manifest("{", "m.json"), "data: m.json is not a JSON object");
  CHECK_ERROR(parse_manifest(damaged("qkv-token-shards", "other"), "m.json"), "\"format\" must be \"qkv-token-shards\"");
  CHECK_ERROR(parse_manifest(damaged("\"version\": 2", "\"version\": 9"), "m.json"), "version 9 is not one this qkv reads");
  CHECK_ERROR(parse_manifest(damaged("\"version\": 2", "\"version\": 1"), "m.json"), "m.json was written by an older qkv (version 1");
  CHECK_ERROR(parse_manifest(damaged("\"unicode\": \"15.0.0\"", "\"unicode\": \"16.0.0\""), "m.json"),
              "tokenizer.unicode is 16.0.0, but this qkv's pre-tokenizer follows Unicode 15.0.0");
  CHECK_ERROR(parse_manifest(damaged("\"train_000001.bin\"", "\"train_000000.bin\""), "m.json"), "shard train_000000.bin is listed twice");
  CHECK_ERROR(parse_manifest(damaged("\"checksum\": \"0000000000000003\"", "\"checksum\": \"x\""), "m.json"), "has checksum \"x\" (16 hex digits)");
  CHECK_ERROR(parse_manifest(damaged("\"hash\"", "\"hush\""), "m.json"), "tokenizer.hash");
  CHECK_ERROR(parse_manifest(damaged("\"vocab_size\": 50257", "\"vocab_size\": \"many\""), "m.json"), "tokenizer.vocab_size");
  CHECK_ERROR(parse_manifest(damaged("\"vocab_size\": 50257", "\"vocab_size\": 70000"), "m.json"), "a vocabulary of 70000 does not fit uint16");
  CHECK_ERROR(parse_manifest(damaged("uint16", "int8"), "m.json"), "dtype \"int8\" (expected uint16 or uint32)");
  CHECK_ERROR(parse_manifest(damaged("train_000001.bin", "../../etc/passwd"), "m.json"), "must be a plain name inside the folder");
  CHECK_ERROR(parse_manifest(damaged("\"split\": \"val\"", "\"split\": \"test\""), "m.json"), "has split \"test\" (train or val)");
  CHECK_ERROR(parse_manifest(damaged("\"tokens\": 40", "\"tokens\": -4"), "m.json"), "val_000000.bin has -4 tokens");
  CHECK_ERROR(read_manifest(test::scratch_dir("manifest_none").string()), "has no manifest.json (make a shard folder with qkv tokenize)");
}
