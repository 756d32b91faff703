#include "../support.h"

#include <qkv/core/generator.h>
#include <qkv/datasets/bpe.h>
#include <qkv/datasets/pretokenize.h>
#include <qkv/datasets/utf8.h>

#include "../../datasets/unicode_tables.h"  // private to datasets/: the committed tables themselves

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

using namespace qkv;
namespace fs = std::filesystem;

namespace {
const BpeTokenizer& gpt2() {
  static const BpeTokenizer t = BpeTokenizer::load(QKV_FIXTURES_DIR "/gpt2");
  return t;
}
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
std::string dir_with(const std::string& name, const std::string& vocab_name, const std::string& vocab,
                     const std::string& merges_name, const std::string& merges) {
  const auto dir = test::process_dir() / name;
  fs::create_directories(dir);
  std::ofstream(dir / vocab_name, std::ios::binary) << vocab;
  std::ofstream(dir / merges_name, std::ios::binary) << merges;
  return dir.string();
}
// Random valid UTF-8 from a mixed alphabet: ASCII, blanks, Latin-1, CJK, emoji, combining marks, contractions.
std::string random_text(Generator& g, int n) {
  static const std::vector<std::string> alphabet = {
      "a", "e", "t", " ", " ", "  ", "\n", "\t", "\r\n", "'", "'s", "'LL", "0", "7", ".", ",", "!", "é", "ß", "日",
      "本", "😀", "👍🏽", "\u0301", "\u00a0", "\u3000", "\u2028", "ю", "ا", "<|endoftext|>", "\x01", "\x7f", "Ġ"};
  std::string s;
  for (int i = 0; i < n; ++i) s += alphabet[g.randint(alphabet.size())];
  return s;
}
}  // namespace

TEST_CASE("GPT-2 encoding equals tiktoken's ids on the committed hard cases (tools/gpt2_fixtures.js)") {
  const auto cases = nlohmann::json::parse(slurp(QKV_FIXTURES_DIR "/gpt2_cases.json"));
  REQUIRE(cases.size() >= 50);
  std::size_t bytes = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"];
    bytes += text.size();
    CAPTURE(text);
    CHECK(gpt2().encode(text) == c["ids"].get<std::vector<BpeTokenizer::Id>>());
    CHECK(gpt2().encode(text, /*allow_special=*/true) == c["ids_with_special"].get<std::vector<BpeTokenizer::Id>>());
    CHECK(gpt2().decode(gpt2().encode(text)) == text);
  }
  CHECK(bytes > 4000);
  CHECK(gpt2().vocab_size() == 50257);
  CHECK(gpt2().eot() == 50256);
  CHECK(gpt2().merge_count() == 50000);
}

TEST_CASE("Hugging Face's spelling (vocab.json + merges.txt) loads the same tokenizer as OpenAI's") {
  const auto hf = BpeTokenizer::load(dir_with("hf", "vocab.json", slurp(QKV_FIXTURES_DIR "/gpt2/encoder.json"),
                                              "merges.txt", slurp(QKV_FIXTURES_DIR "/gpt2/vocab.bpe")));
  CHECK(hf.hash() == gpt2().hash());
  CHECK(hf.encode("Hello there, world's end") == gpt2().encode("Hello there, world's end"));
  // What save() writes loads back to the same tokenizer.
  const auto dir = (test::process_dir() / "saved").string();
  gpt2().save(dir);
  CHECK(BpeTokenizer::load(dir).hash() == gpt2().hash());
  CHECK(gpt2().hash() == BpeTokenizer::load("gpt2").hash());
}

TEST_CASE("round trip: decode(encode(x)) == x for random UTF-8, with and without special tokens") {
  Generator g(7);
  for (int k = 0; k < 300; ++k) {
    const std::string text = random_text(g, 1 + static_cast<int>(g.randint(120)));
    CAPTURE(text);
    CHECK(gpt2().decode(gpt2().encode(text)) == text);
    CHECK(gpt2().decode(gpt2().encode(text, true)) == text);
  }
  // Long pieces take the heap path; the same ids as merging in a scan would give, piece by piece.
  const std::string spaces(5000, ' '), letters(3000, 'a');
  CHECK(gpt2().decode(gpt2().encode(spaces + "x" + letters)) == spaces + "x" + letters);
  const auto ids = gpt2().encode(letters);
  CHECK(ids.size() < letters.size() / 2);
}

TEST_CASE("special tokens are matched only where allowed") {
  const auto plain = gpt2().encode("a<|endoftext|>b"), special = gpt2().encode("a<|endoftext|>b", true);
  CHECK(special == std::vector<BpeTokenizer::Id>{64, 50256, 65});
  CHECK(std::find(plain.begin(), plain.end(), 50256) == plain.end());
  CHECK(gpt2().decode(special) == "a<|endoftext|>b");
}

TEST_CASE("invalid UTF-8 is an error naming the byte offset, never a replacement") {
  CHECK_ERROR(gpt2().encode("ok \xff"), "text: invalid UTF-8 at byte 3 (0xFF cannot start a character)");
  CHECK_ERROR(gpt2().encode("abc\xED\xA0\x80"), "invalid UTF-8 at byte 3 (surrogate U+D800)");
  std::vector<BpeTokenizer::Id> out;
  CHECK_ERROR(gpt2().encode("x\xC3(", out, false, "corpus.txt", 1000), "corpus.txt: invalid UTF-8 at byte 1002");
  CHECK_ERROR(gpt2().decode(std::vector<BpeTokenizer::Id>{5, 50257}), "token id 50257 is out of range");
}

TEST_CASE("safe_cut: encoding the two parts apart gives the ids of the whole") {
  Generator g(11);
  for (int k = 0; k < 200; ++k) {
    std::string text = random_text(g, 40 + static_cast<int>(g.randint(200)));
    if (k % 3 == 0) text = "日本語のテキスト。" + text + "漢字、中文字符，한국어";
    const auto cut = safe_cut(text);
    if (cut == 0) continue;
    CAPTURE(text);
    CAPTURE(cut);
    auto parts = gpt2().encode(text.substr(0, cut));
    const auto rest = gpt2().encode(text.substr(cut));
    parts.insert(parts.end(), rest.begin(), rest.end());
    CHECK(parts == gpt2().encode(text));
  }
  CHECK(safe_cut("short") == 0);
  CHECK(safe_cut("one two three") == 7);
}

TEST_CASE("tokenizer files: a clear error for each fault, naming the file and line") {
  const std::string v = R"({"a": 0, "b": 1})";
  auto load = [](const std::string& name, const std::string& vocab, const std::string& merges) {
    return BpeTokenizer::load(dir_with(name, "vocab.json", vocab, "merges.txt", merges));
  };
  // A vocabulary of the 256 bytes plus "ab".
  nlohmann::ordered_json bytes;
  for (int b = 0; b < 256; ++b) bytes[byte_symbol(static_cast<unsigned char>(b))] = b;
  auto with_ab = bytes;
  with_ab["ab"] = 256;
  CHECK(load("ok", with_ab.dump(), "#version: 0.2\na b\n").encode("abab") == std::vector<BpeTokenizer::Id>{256, 256});
  CHECK_ERROR(load("few", v, ""), "has no token for byte 0x00");
  CHECK_ERROR(load("unknown", with_ab.dump(), "#version: 0.2\na b\nq zz\n"), "merges.txt:3: \"zz\" is not in");
  CHECK_ERROR(load("unmade", bytes.dump(), "a b\n"), "merges.txt:1: \"a\" + \"b\" makes \"ab\", which is not in");
  CHECK_ERROR(load("shape", with_ab.dump(), "a b c\n"), "merges.txt:1: expected two tokens separated by one space");
  auto gap = bytes;
  gap["ab"] = 300;
  CHECK_ERROR(load("gap", gap.dump(), ""), "\"ab\" has id 300; ids must be 0..256");
  auto twice = bytes;
  twice["ab"] = 5;
  CHECK_ERROR(load("twice", twice.dump(), ""), "id 5 is given twice");
  CHECK_ERROR(load("notjson", "{", ""), "is not a JSON object");
  CHECK_ERROR(BpeTokenizer::load((test::process_dir() / "nowhere").string()), "is not a folder");
  const auto half = test::process_dir() / "half";
  fs::create_directories(half);
  std::ofstream(half / "vocab.json") << "{}";
  CHECK_ERROR(BpeTokenizer::load(half.string()), "has vocab.json but not merges.txt");
}

TEST_CASE("utf8: complete_utf8_prefix drops only a character cut off at the end") {
  CHECK(complete_utf8_prefix("ab") == 2);
  CHECK(complete_utf8_prefix("a\xE6\x97") == 1);
  CHECK(complete_utf8_prefix("a\xE6\x97\xA5") == 4);
  CHECK(complete_utf8_prefix("\xF0\x9F\x98") == 0);
}

namespace {
std::string utf8_of(char32_t cp) {
  std::string s;
  if (cp < 0x80) s += char(cp);
  else if (cp < 0x800) s += char(0xC0 | cp >> 6), s += char(0x80 | (cp & 0x3F));
  else if (cp < 0x10000) s += char(0xE0 | cp >> 12), s += char(0x80 | (cp >> 6 & 0x3F)), s += char(0x80 | (cp & 0x3F));
  else s += char(0xF0 | cp >> 18), s += char(0x80 | (cp >> 12 & 0x3F)), s += char(0x80 | (cp >> 6 & 0x3F)), s += char(0x80 | (cp & 0x3F));
  return s;
}
// tools/unicode_fixture.js's text for the block of code points from `first`, and its ids' FNV-1a hash.
std::string block_text(char32_t first, char32_t block) {
  std::string t;
  for (char32_t cp = first; cp < first + block && cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    const std::string c = utf8_of(cp);
    t += "x" + c + c + " " + c + "7" + c + "'s" + c + "!\n" + c + "\n";
  }
  return t;
}
std::string fnv1a(const std::vector<BpeTokenizer::Id>& ids) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const auto id : ids)
    for (int k = 0; k < 4; ++k) h = (h ^ ((static_cast<std::uint32_t>(id) >> (8 * k)) & 0xFF)) * 0x100000001b3ULL;
  return fmt::format("{:016x}", h);
}
}  // namespace

TEST_CASE("every code point: GPT-2's ids equal tiktoken's (tools/unicode_fixture.js), on the pinned Unicode tables") {
  const auto& fx = test::fixture("gpt2_unicode");
  const auto block = fx["block"].get<char32_t>();
  const auto& hashes = fx["hashes"];
  REQUIRE(hashes.size() == 0x110000 / block);
  std::vector<std::string> differ;
  for (std::size_t b = 0; b < hashes.size(); ++b) {
    const char32_t first = static_cast<char32_t>(b) * block;
    if (fnv1a(gpt2().encode(block_text(first, block))) != hashes[b]) differ.push_back(fmt::format("U+{:04X}", std::uint32_t(first)));
  }
  // tiktoken 1.0.22's regex crate reads Unicode 16.0; the pinned tables are 15.0.0 (Debian 12's unicode-data), so
  // the blocks holding the letters and digits that 15.1 and 16.0 added (CJK Extension I, Garay, Todhri, Ol Onal,
  // Kirat Rai, Tulu-Tigalari, the legacy-computing digits, ...) are the ones that differ, and only those.
  const std::vector<std::string> unicode_16 = {"U+1000", "U+A000", "U+10000", "U+11000", "U+13000", "U+14000",
                                               "U+16000", "U+18000", "U+1C000", "U+1E000", "U+2E000"};
  CHECK_MESSAGE(differ == unicode_16, "blocks of ", block, " code points whose ids differ: ", fmt::format("{}", fmt::join(differ, " ")));
  CHECK(std::string(pretokenizer_unicode_version()) == "15.0.0");
}

TEST_CASE("pre-tokenizer: GPT-2's scan gives the pieces PCRE2 gives running GPT-2's pattern on the pinned classes") {
  const Pretokenizer regex(gpt2_pattern());
  const auto pieces = [](const Pretokenizer& p, std::string_view text) {
    std::vector<std::string> out;
    p.split(text, [&](std::string_view piece) { out.emplace_back(piece); });
    return out;
  };
  // Every kind of character the pattern tells apart, in runs: letters of many scripts (Kawi is new in 15.0),
  // digits and other numbers, each White_Space character (and U+180E, which is not), marks, symbols, contractions.
  static const std::vector<std::string> alphabet = {
      "a", "Z", "é", "ß", "日", "ю", "ا", "\U00011F04", "ǅ", "ʰ", "0", "9", "²", "Ⅻ", "٣", "\U0001E4F0", " ", " ", " ",
      "\t", "\n", "\r\n", "\v", "\f", "\u0085", "\u00a0", "\u1680", "\u2000", "\u200a", "\u2028", "\u2029", "\u202f",
      "\u205f", "\u3000", "\u180e", "\u0301", "!", ".", "'", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "😀",
      "\U0010FFFD", "\x01", "\x7f", "$", "_"};
  Generator g(11);
  for (int k = 0; k < 2000; ++k) {
    std::string text;
    const auto n = 1 + g.randint(40);
    for (std::uint64_t i = 0; i < n; ++i) text += alphabet[g.randint(alphabet.size())];
    CAPTURE(text);
    CHECK(pieces(gpt2_pretokenizer(), text) == pieces(regex, text));
  }
  // Every code point, in the contexts of the tiktoken check.
  for (char32_t first = 0; first < 0x110000; first += 0x4000) {
    const std::string text = block_text(first, 0x4000);
    CHECK(pieces(gpt2_pretokenizer(), text) == pieces(regex, text));
  }
  CHECK_ERROR(Pretokenizer("(unclosed"), "pretokenizer: PCRE2 rejected the pattern '(unclosed'");
}

TEST_CASE("the committed Unicode tables are Debian's unicode-data 15.0.0 (tools/gen_unicode_tables.py)") {
  std::ifstream data("/usr/share/unicode/UnicodeData.txt"), derived("/usr/share/unicode/DerivedCoreProperties.txt");
  std::string first_line;
  std::getline(derived, first_line);
  if (!data || first_line != "# DerivedCoreProperties-15.0.0.txt") {
    MESSAGE("skipped: Debian's unicode-data 15.0.0 is not installed (make installs it)");
    return;
  }
  std::vector<std::uint8_t> want(0x110000, 0);  // 1 letter, 2 number
  char32_t range_start = 0;
  for (std::string line; std::getline(data, line);) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ';');) f.push_back(x);
    const auto cp = static_cast<char32_t>(std::stoul(f[0], nullptr, 16));
    const std::uint8_t c = f[2][0] == 'L' ? 1 : f[2][0] == 'N' ? 2 : 0;
    if (f[1].ends_with(", First>")) range_start = cp;
    else if (f[1].ends_with(", Last>")) std::fill(want.begin() + range_start, want.begin() + cp + 1, c);
    else want[cp] = c;
  }
  std::vector<std::uint8_t> have(0x110000, 0);
  for (const auto& r : unicode::kLetters) std::fill(have.begin() + r[0], have.begin() + r[1] + 1, 1);
  for (const auto& r : unicode::kNumbers) std::fill(have.begin() + r[0], have.begin() + r[1] + 1, 2);
  CHECK(have == want);
}

TEST_CASE("tokenizer files not whole: merges cut short are an error; special tokens are only the declared ones") {
  const std::string vocab = slurp(QKV_FIXTURES_DIR "/gpt2/encoder.json"), merges = slurp(QKV_FIXTURES_DIR "/gpt2/vocab.bpe");
  std::size_t at = 0;
  for (int line = 0; line < 1001; ++line) at = merges.find('\n', at) + 1;  // the version line and 1000 merges
  const auto cut = dir_with("cut_1000", "vocab.json", vocab, "merges.txt", merges.substr(0, at));
  CHECK_ERROR(BpeTokenizer::load(cut), "is neither a byte, made by a merge in");
  CHECK_ERROR(BpeTokenizer::load(cut), "merges.txt looks cut short (1000 merges)");
  const auto last = dir_with("cut_last", "vocab.json", vocab, "merges.txt", merges.substr(0, merges.rfind('\n', merges.size() - 2) + 1));
  CHECK_ERROR(BpeTokenizer::load(last), "looks cut short (49999 merges)");
  // Declared in added_tokens.json (Hugging Face's file): a special token, saved and loaded again.
  nlohmann::ordered_json bytes;
  for (int b = 0; b < 256; ++b) bytes[byte_symbol(static_cast<unsigned char>(b))] = b;
  bytes["<|pad|>"] = 256;
  const auto declared = dir_with("declared", "vocab.json", bytes.dump(), "merges.txt", "#version: 0.2\n");
  CHECK_ERROR(BpeTokenizer::load(declared), "token \"<|pad|>\" (id 256) is neither a byte");
  std::ofstream(fs::path(declared) / "added_tokens.json") << R"({"<|pad|>": 256})";
  const auto tok = BpeTokenizer::load(declared);
  CHECK(tok.encode("a<|pad|>", true) == std::vector<BpeTokenizer::Id>{97, 256});
  tok.save((fs::path(declared) / "again").string());
  CHECK(BpeTokenizer::load((fs::path(declared) / "again").string()).hash() == tok.hash());
  std::ofstream(fs::path(declared) / "added_tokens.json") << R"({"<|gone|>": 257})";
  CHECK_ERROR(BpeTokenizer::load(declared), "the special token \"<|gone|>\" is declared but not in");
}

namespace {
// GPT-2's own bpe() (encoder.py): the word as byte symbols; while some adjacent pair has a rank, every occurrence of
// the lowest-ranked one is merged, left to right. Independent of both of qkv's paths (a scan up to 64 bytes, a
// heap beyond), which merge one pair at a time.
std::vector<BpeTokenizer::Id> reference_bpe(const std::string& piece) {
  struct Tables {
    std::map<std::string, int> rank;   // "left right" -> rank
    std::map<std::string, int> id;     // token -> id
  };
  static const Tables t = [] {
    Tables t;
    const auto vocab = nlohmann::json::parse(slurp(QKV_FIXTURES_DIR "/gpt2/encoder.json"));
    for (const auto& [token, id] : vocab.items()) t.id[token] = id.get<int>();
    std::istringstream merges(slurp(QKV_FIXTURES_DIR "/gpt2/vocab.bpe"));
    std::string line;
    std::getline(merges, line);  // #version
    for (int r = 0; std::getline(merges, line);) if (!line.empty()) t.rank[line] = r++;
    return t;
  }();
  std::vector<std::string> word;
  for (const unsigned char b : piece) word.push_back(byte_symbol(b));
  while (word.size() > 1) {
    int best = -1;
    std::string pair;
    for (std::size_t i = 0; i + 1 < word.size(); ++i)
      if (const auto it = t.rank.find(word[i] + " " + word[i + 1]); it != t.rank.end() && (best < 0 || it->second < best))
        best = it->second, pair = it->first;
    if (best < 0) break;
    const std::string first = pair.substr(0, pair.find(' ')), second = pair.substr(pair.find(' ') + 1);
    std::vector<std::string> merged;
    for (std::size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) merged.push_back(first + second), i += 2;
      else merged.push_back(word[i++]);
    }
    word = std::move(merged);
  }
  std::vector<BpeTokenizer::Id> ids;
  for (const auto& s : word) ids.push_back(t.id.at(s));
  return ids;
}
}  // namespace

TEST_CASE("BPE ids equal GPT-2's own bpe() loop, on short pieces (the scan) and long ones (the heap)") {
  Generator g(17);
  static const std::vector<std::string> runs = {"a", "e", "th", "in", "er", "an", "re", "on", " ", "1", "0", "9",
                                                "\n", "é", "日", "ing", "tion", "!", "-", "=", "aa"};
  int long_pieces = 0;
  for (int k = 0; k < 150; ++k) {
    std::string text;
    const auto parts = 1 + g.randint(6);
    for (std::uint64_t p = 0; p < parts; ++p) {  // runs of one class, up to ~400 bytes: many pieces over 64 bytes
      const auto& unit = runs[g.randint(runs.size())];
      const auto n = 1 + g.randint(k % 3 == 0 ? 200 : 20);
      for (std::uint64_t i = 0; i < n; ++i) text += g.randint(4) == 0 ? runs[g.randint(9)] : unit;
    }
    std::vector<BpeTokenizer::Id> want;
    gpt2_pretokenizer().split(text, [&](std::string_view piece) {
      long_pieces += piece.size() > 64;
      const auto ids = reference_bpe(std::string(piece));
      want.insert(want.end(), ids.begin(), ids.end());
    });
    CAPTURE(text);
    CHECK(gpt2().encode(text) == want);
  }
  CHECK(long_pieces > 30);
}

TEST_CASE("special tokens: the longest of those starting at one place wins; a pair merged twice is refused") {
  nlohmann::ordered_json vocab;
  for (int b = 0; b < 256; ++b) vocab[byte_symbol(static_cast<unsigned char>(b))] = b;
  vocab["<|s|>"] = 256;
  vocab["<|s|>x"] = 257;
  vocab["ab"] = 258;
  const auto dir = dir_with("specials_overlap", "vocab.json", vocab.dump(), "merges.txt", "#version: 0.2\na b\n");
  std::ofstream(fs::path(dir) / "added_tokens.json") << R"({"<|s|>": 256, "<|s|>x": 257})";
  const auto tok = BpeTokenizer::load(dir);
  CHECK(tok.encode("<|s|>x<|s|>", true) == std::vector<BpeTokenizer::Id>{257, 256});
  CHECK(tok.encode("ab<|s|>y", true) == std::vector<BpeTokenizer::Id>{258, 256, 'y'});
  const auto twice = dir_with("merged_twice", "vocab.json", vocab.dump(), "merges.txt", "#version: 0.2\na b\na b\n");
  CHECK_ERROR(BpeTokenizer::load(twice), "merges.txt:3: the pair \"a b\" is merged again (first at line 2)");
}
