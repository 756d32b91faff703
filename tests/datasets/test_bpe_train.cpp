#include "../support.h"

#include <limits>

#include <qkv/core/generator.h>
#include <qkv/core/parallel.h>
#include <qkv/datasets/bpe_train.h>
#include <qkv/datasets/pretokenize.h>

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace qkv;
namespace fs = std::filesystem;

namespace {
std::string put(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
  return path.string();
}
std::string words(std::size_t n, std::uint64_t seed) {
  static const std::vector<std::string> w = {"attention", "query", "key", "value", "the", "of", "is", "日本語", "é",
                                             "don't", "1234", "!!", "\n", "  ", "GPT"};
  Generator g(seed);
  std::string s;
  while (s.size() < n) s += w[g.randint(w.size())] + (g.randint(3) ? " " : "");
  return s;
}
BpeTrainOptions vocab(std::int64_t n) {
  BpeTrainOptions o;
  o.vocab_size = n;
  return o;
}
}  // namespace

TEST_CASE("tokenizer train: the most frequent pair first, counted by piece; ties to the smaller ids") {
  // Pieces "ab", " ab" (twice), " abc": (a, b) occurs 4 times, then (" ", ab) 3 times, then (" ab", c).
  const auto t = learn_bpe({{"ab", 1}, {" ab", 2}, {" abc", 1}}, vocab(260));
  REQUIRE(t.vocab_size() == 260);
  CHECK(t.token_bytes(256) == "ab");
  CHECK(t.token_bytes(257) == " ab");
  CHECK(t.token_bytes(258) == " abc");
  CHECK(t.token_bytes(259) == "<|endoftext|>");
  CHECK(t.eot() == 259);
  // Every pair once: (" ", z) = (32, 122) comes before (x, y) = (120, 121) and (z, w) = (122, 119).
  const auto u = learn_bpe({{"xy", 1}, {" zw", 1}}, vocab(258));
  CHECK(u.token_bytes(256) == " z");
  // No pair left: the vocabulary ends smaller than asked.
  const auto v = learn_bpe({{"ab", 3}}, vocab(1000));
  CHECK(v.vocab_size() == 258);
  CHECK(v.merge_count() == 1);
  // Overlapping pairs merge left to right, as encoding does.
  const auto w = learn_bpe({{"aaa", 5}}, vocab(258));
  CHECK(w.token_bytes(256) == "aa");
  CHECK(w.encode("aaa") == std::vector<BpeTokenizer::Id>{256, 'a'});
  CHECK_ERROR(learn_bpe({{"ab", 1}}, vocab(256)), "--vocab-size 256 is below 256 byte tokens + 1 special token = 257");
}

TEST_CASE("tokenizer train: deterministic for any thread count; its files load back; it encodes its corpus shorter") {
  const auto dir = test::scratch_dir("bpe_train");
  const std::string text = words(2'500'000, 5);  // several reading blocks
  const auto file = put(dir / "corpus.txt", text);
  const int threads = num_threads();
  set_num_threads(1);
  const auto one = train_bpe({file}, vocab(600));
  set_num_threads(2);
  const auto two = train_bpe({file}, vocab(600));
  set_num_threads(threads);
  CHECK(one.hash() == two.hash());
  CHECK(one.vocab_json() == two.vocab_json());
  CHECK(one.merges_txt() == two.merges_txt());
  CHECK(one.vocab_size() == 600);
  one.save((dir / "tok").string());
  const auto back = BpeTokenizer::load((dir / "tok").string());
  CHECK(back.hash() == one.hash());
  const auto sample = text.substr(0, 20000);
  const auto ids = back.encode(sample);
  CHECK(back.decode(ids) == sample);
  CHECK(ids.size() < sample.size() / 3);
  // The streamed counts are the counts of the whole text.
  std::unordered_map<std::string, std::int64_t> whole;
  gpt2_pretokenizer().split(text, [&](std::string_view p) { ++whole[std::string(p)]; });
  CHECK(count_pieces({file}) == whole);
}

TEST_CASE("tokenizer train: bad input is an error naming the file") {
  const auto dir = test::scratch_dir("bpe_train_bad");
  CHECK_ERROR(train_bpe({put(dir / "bad.txt", "abc\xE2\x82")}, vocab(300)), "bad.txt: invalid UTF-8 at byte 3");
  CHECK_ERROR(train_bpe({(dir / "none.txt").string()}, vocab(300)), "none.txt");
  CHECK_ERROR(train_bpe({}, vocab(300)), "no input files");
  CHECK_ERROR(train_bpe({put(dir / "ok.txt", "fine")}, vocab(10)), "--vocab-size 10 is below");
  CHECK_ERROR(train_bpe({put(dir / "ok.txt", "fine")}, vocab(std::numeric_limits<std::int64_t>::max())),
              "--vocab-size 9223372036854775807 is above 2^31 - 1");
  CHECK_ERROR(train_bpe({put(dir / "empty.txt", "")}, vocab(300)), "the input has no text to learn from (1 file, 0 bytes)");
}

TEST_CASE("encode_stream: chunked encoding equals the whole text's, with and without special tokens") {
  const auto tok = BpeTokenizer::load("gpt2");
  std::string text = words(3'000'000, 6);
  for (std::size_t at = 1000; at < text.size(); at += 70'001) {
    while ((static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) ++at;  // between characters
    text.insert(at, "<|endoftext|>");
  }
  for (const bool allow : {false, true}) {
    std::istringstream in(text);
    std::vector<BpeTokenizer::Id> got;
    int chunks = 0;
    encode_stream(in, tok, allow, "stream", [&](const std::vector<BpeTokenizer::Id>& ids) {
      got.insert(got.end(), ids.begin(), ids.end());
      ++chunks;
    });
    CHECK(chunks > 2);
    CHECK(got == tok.encode(text, allow));
  }
  // No space or newline to cut at: the cut falls between pieces, never inside a special token.
  std::string specials;
  for (int i = 0; i < 100'000; ++i) specials += "ab<|endoftext|>";
  std::istringstream in(specials);
  std::vector<BpeTokenizer::Id> got;
  encode_stream(in, tok, true, "stream", [&](const auto& ids) { got.insert(got.end(), ids.begin(), ids.end()); });
  CHECK(got == tok.encode(specials, true));
  std::istringstream bad(std::string(1'500'000, 'a') + "\xFF");
  CHECK_ERROR(encode_stream(bad, tok, false, "stdin", [](const auto&) {}), "stdin: invalid UTF-8 at byte 1500000");
}
