#include "../support.h"

#include <qkv/datasets/bpe.h>
#include <qkv/datasets/chunks.h>

#include <numeric>
#include <sstream>

using namespace qkv;

namespace {
std::vector<TextChunks::Chunk> chunks_of(const std::string& text, const ChunkOptions& options, std::vector<std::string>& texts) {
  std::istringstream in(text);
  TextChunks chunks(in, "t", options);
  std::vector<TextChunks::Chunk> out;
  for (TextChunks::Chunk c; chunks.next(c);) out.push_back(c), texts.emplace_back(c.text);
  return out;
}
ChunkOptions small(std::string separator = "", std::vector<std::string> keep = {}) {
  ChunkOptions o;
  o.separator = std::move(separator);
  o.keep_whole = std::move(keep);
  o.block = 64;
  o.max_carry = 256;
  return o;
}
}  // namespace

TEST_CASE("chunks: documents end at separators, empty ones give nothing, offsets count the separators") {
  std::string text;
  for (int i = 0; i < 300; ++i) text += "doc " + std::to_string(i) + " says hello world\n<SEP>";
  text += "<SEP><SEP>last";
  std::vector<std::string> texts;
  const auto chunks = chunks_of(text, small("<SEP>"), texts);
  REQUIRE(chunks.size() == 301);
  CHECK(texts[7] == "doc 7 says hello world\n");
  CHECK(texts.back() == "last");
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    CHECK(chunks[i].doc_start);
    CHECK(text.compare(chunks[i].offset, texts[i].size(), texts[i]) == 0);
  }
}

TEST_CASE("chunks: encoded chunk by chunk, the ids of the whole; no cut inside a special token; the forced cut") {
  static const BpeTokenizer gpt2 = BpeTokenizer::load("gpt2");
  std::string text;
  for (int i = 0; i < 200; ++i) text += "word" + std::to_string(i % 13) + (i % 7 == 0 ? "<|endoftext|>" : " ") + (i % 11 == 0 ? "\n" : "");
  std::vector<std::string> texts;
  const auto chunks = chunks_of(text, small("", {"<|endoftext|>"}), texts);
  CHECK(chunks.size() > 5);
  const auto count = [](const std::string& t) {
    std::size_t n = 0;
    for (auto at = t.find("<|endoftext|>"); at != std::string::npos; at = t.find("<|endoftext|>", at + 1)) ++n;
    return n;
  };
  std::vector<BpeTokenizer::Id> ids;
  std::size_t specials = 0;
  for (const auto& t : texts) {
    specials += count(t);  // a cut inside one would lose it
    gpt2.encode(t, ids, /*allow_special=*/true);
  }
  CHECK(specials == count(text));
  CHECK(ids == gpt2.encode(text, true));
  // One 1000-byte word has no safe cut: the chunks are cut where max_carry is passed, and hold every byte.
  texts.clear();
  const auto forced = chunks_of(std::string(1000, 'a'), small(), texts);
  REQUIRE(forced.size() > 1);
  std::size_t total = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    total += texts[i].size();
    if (i + 1 < texts.size()) CHECK(texts[i].size() > 256);
  }
  CHECK(total == 1000);
  texts.clear();
  CHECK_ERROR(chunks_of(std::string(100, 'a') + "\xff" + std::string(100, 'b'), small(), texts), "t: invalid UTF-8 at byte 100");
}
