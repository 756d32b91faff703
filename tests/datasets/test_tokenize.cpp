// qkv tokenize (datasets/tokenize.cpp) and data.task = "tokens" (datasets/tokens.cpp).
#include "../support.h"

#include <qkv/core/generator.h>
#include <qkv/core/ops.h>
#include <qkv/datasets/dataset.h>
#include <qkv/datasets/shards.h>

#include <filesystem>
#include <fstream>

using namespace qkv;
namespace fs = std::filesystem;

namespace {
const BpeTokenizer& gpt2() {
  static const BpeTokenizer t = BpeTokenizer::load("gpt2");
  return t;
}
std::string put(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
  return path.string();
}
// Prose-like text of about n bytes: words, numbers, punctuation, newlines, some non-ASCII.
std::string prose(std::size_t n, std::uint64_t seed) {
  static const std::vector<std::string> words = {"the", "query", "key", "value", "attends", "to", "token", "é", "日本",
                                                 "don't", "42", "3.14", "(x)", "GPT-2", "  ", "\n", "\n\n", ",", "."};
  Generator g(seed);
  std::string s;
  while (s.size() < n) s += words[g.randint(words.size())] + (g.randint(4) == 0 ? "" : " ");
  return s;
}
std::vector<std::int64_t> tokens_of(const std::string& dir, const TokenManifest& m, const std::string& split) {
  std::vector<std::int64_t> all;
  for (const auto& e : m.shards) {
    if (e.split != split) continue;
    TokenShard s((fs::path(dir) / e.file).string(), m.vocab_size);
    const auto at = all.size();
    all.resize(at + static_cast<std::size_t>(s.size()));
    s.read(0, s.size(), all.data() + at);
  }
  return all;
}
std::vector<std::int64_t> with_eot(const std::string& text) {
  std::vector<std::int64_t> ids{50256};
  for (const auto id : gpt2().encode(text)) ids.push_back(id);
  return ids;
}
// A shard folder of the GPT-2 tokenizer whose training tokens are 0, 1, 2, ... (mod 50000) and validation tokens
// 40000, 40001, ...: a window's first token says where it was read.
std::string counting_folder(const std::string& name, std::vector<std::int64_t> train_sizes, std::int64_t val) {
  const auto dir = test::scratch_dir(name);
  gpt2().save((dir / "tokenizer").string());
  TokenManifest m;
  m.tokenizer_hash = gpt2().hash();
  m.tokenizer_name = "gpt2";
  m.vocab_size = gpt2().vocab_size();
  m.eot = 50256;
  std::int32_t next = 0;
  for (std::size_t s = 0; s < train_sizes.size(); ++s) {
    std::vector<std::int32_t> t(static_cast<std::size_t>(train_sizes[s]));
    for (auto& x : t) x = next++ % 50000;
    const auto file = fmt::format("train_{:06d}.bin", s);
    write_shard((dir / file).string(), t, 2, std::stoull(gpt2().hash(), nullptr, 16));
    m.shards.push_back({file, "train", train_sizes[s], TokenShard((dir / file).string(), 50257).checksum()});
  }
  std::vector<std::int32_t> v(static_cast<std::size_t>(val));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 40000 + static_cast<std::int32_t>(i);
  write_shard((dir / "val_000000.bin").string(), v, 2, std::stoull(gpt2().hash(), nullptr, 16));
  m.shards.push_back({"val_000000.bin", "val", val, TokenShard((dir / "val_000000.bin").string(), 50257).checksum()});
  put(dir / "manifest.json", m.json());
  return dir.string();
}
DataOptions tokens_options(const std::string& dir, std::int64_t seq_len = 8) {
  return {.task = "tokens", .seq_len = seq_len, .val_size = 5, .path = dir};
}
}  // namespace

TEST_CASE("tokenize: shards hold <|endoftext|> + encode(file), whatever the chunking, split train then val") {
  const auto dir = test::scratch_dir("tok_whole");
  const std::string text = prose(3'300'000, 1);  // four 1 MB reading blocks
  const auto file = put(dir / "corpus.txt", text);
  TokenizeOptions o;
  o.out = (dir / "shards").string();
  o.val_fraction = 0.1;
  o.shard_tokens = 200'000;
  TokenManifest m;
  CHECK(tokenize_files({file}, o, &m));
  const auto train = tokens_of(o.out, m, "train"), val = tokens_of(o.out, m, "val");
  auto joined = train;
  joined.insert(joined.end(), val.begin(), val.end());
  CHECK(joined == with_eot(text));
  CHECK(val.size() > joined.size() / 20);
  CHECK(val.size() < joined.size() / 5);
  CHECK(m.shards.size() >= 4);
  CHECK(m.shards.front().file == "train_000000.bin");
  CHECK(m.shards.front().tokens == 200'000);
  CHECK(fs::exists(fs::path(o.out) / "tokenizer" / "vocab.json"));
  CHECK(BpeTokenizer::load((fs::path(o.out) / "tokenizer").string()).hash() == gpt2().hash());
  CHECK(read_manifest(o.out).json() == m.json());
}

TEST_CASE("tokenize: one file is one document, or --doc-separator splits them; a small file still has both splits") {
  const auto dir = test::scratch_dir("tok_docs");
  const auto a = put(dir / "a.txt", "First document.\n"), b = put(dir / "b.txt", "Second one");
  TokenizeOptions o;
  o.out = (dir / "two").string();
  o.val_fraction = 0;
  TokenManifest m;
  tokenize_files({a, b}, o, &m);
  auto want = with_eot("First document.\n");
  const auto second = with_eot("Second one");
  want.insert(want.end(), second.begin(), second.end());
  CHECK(tokens_of(o.out, m, "train") == want);

  const auto c = put(dir / "c.txt", "one<|endoftext|>two<|endoftext|><|endoftext|>three");
  o.out = (dir / "sep").string();
  o.doc_separator = "<|endoftext|>";
  tokenize_files({c}, o, &m);
  CHECK(tokens_of(o.out, m, "train") == std::vector<std::int64_t>{50256, 505, 50256, 11545, 50256, 15542});

  const auto d = put(dir / "d.txt", prose(4000, 2));
  o.out = (dir / "small").string();
  o.doc_separator = "";
  o.val_fraction = 0.25;
  tokenize_files({d}, o, &m);
  CHECK(m.tokens("val") > 0);
  CHECK(m.tokens("train") > 2 * m.tokens("val"));
}

TEST_CASE("tokenize: a re-run with the same inputs writes nothing; changed inputs or options write again") {
  const auto dir = test::scratch_dir("tok_rerun");
  const auto file = put(dir / "a.txt", prose(20'000, 3));
  TokenizeOptions o;
  o.out = (dir / "out").string();
  o.shard_tokens = 1000;
  TokenManifest m;
  CHECK(tokenize_files({file}, o, &m));
  const auto shards = m.shards.size();
  REQUIRE(shards > 3);
  const auto when = fs::last_write_time(fs::path(o.out) / "train_000000.bin");
  CHECK_FALSE(tokenize_files({file}, o, &m));
  CHECK(fs::last_write_time(fs::path(o.out) / "train_000000.bin") == when);
  o.shard_tokens = 100'000;  // fewer, larger shards: the old ones go, and so does what a killed run left
  put(fs::path(o.out) / ".train_000007.bin.tmp.4242", "half a shard");
  put(fs::path(o.out) / "notes.txt", "the user's own file");
  CHECK(tokenize_files({file}, o, &m));
  int bins = 0;
  for (const auto& e : fs::directory_iterator(o.out)) bins += e.path().extension() == ".bin";
  CHECK(bins == 2);
  CHECK_FALSE(fs::exists(fs::path(o.out) / ".train_000007.bin.tmp.4242"));
  CHECK(fs::exists(fs::path(o.out) / "notes.txt"));
  put(file, prose(20'000, 4));  // new text
  fs::last_write_time(file, fs::last_write_time(file) + std::chrono::seconds(1));
  CHECK(tokenize_files({file}, o, &m));
  // A shard lost from the folder is not up to date either.
  fs::remove(fs::path(o.out) / "val_000000.bin");
  CHECK(tokenize_files({file}, o, &m));
}

TEST_CASE("tokenize: bad input is an error naming the file") {
  const auto dir = test::scratch_dir("tok_bad");
  TokenizeOptions o;
  o.out = (dir / "out").string();
  CHECK_ERROR(tokenize_files({put(dir / "empty.txt", "")}, o), "the input has no text to train on (0 bytes)");
  CHECK_FALSE(fs::exists(dir / "out" / "manifest.json"));
  CHECK_ERROR(tokenize_files({put(dir / "bad.txt", "fine text\xC3(")}, o), "bad.txt: invalid UTF-8 at byte 10");
  CHECK_ERROR(tokenize_files({(dir / "none.txt").string()}, o), "none.txt");
  CHECK_ERROR(tokenize_files({}, o), "no input files");
  o.val_fraction = 1;
  CHECK_ERROR(tokenize_files({put(dir / "a.txt", "a")}, o), "--val-fraction 1 must be in [0, 1)");
  o.val_fraction = 0;
  o.tokenizer = (dir / "no_tokenizer").string();
  CHECK_ERROR(tokenize_files({put(dir / "a.txt", "a")}, o), "no_tokenizer");
}

TEST_CASE("tokens: windows of seq_len + 1 consecutive tokens, seeded, resumable, a rank's rows of the batch") {
  const auto dir = counting_folder("tokens_windows", {500, 300, 5}, 100);  // the 5-token shard has no window
  auto d = make_dataset(tokens_options(dir), 7);
  CHECK(d->vocab_size() == 50257);
  CHECK(d->tokenizer() != nullptr);
  for (int step = 0; step < 20; ++step) {
    const auto b = d->next_batch(16);
    for (std::int64_t r = 0; r < 16; ++r) {
      const auto* x = b.inputs.data<std::int64_t>() + r * 8;
      const auto* y = b.targets.data<std::int64_t>() + r * 8;
      CHECK(x[0] <= 800 - 9);
      CHECK((x[0] < 500 - 8 || x[0] >= 500));  // never across two shards
      for (int t = 0; t < 8; ++t) {
        CHECK(x[t] == x[0] + t);
        CHECK(y[t] == x[t] + 1);
      }
    }
  }
  // The same seed, the same stream; a saved state continues it; a rank reads only its rows.
  auto e = make_dataset(tokens_options(dir), 7);
  auto f = make_dataset(tokens_options(dir), 7);
  for (int step = 0; step < 5; ++step) e->next_batch(16);
  f->set_state(e->state());
  const auto whole = e->next_batch(16);
  const auto rows = f->next_rows(16, 4, 4);
  CHECK(rows.inputs.to_vector() == slice(whole.inputs, 0, 4, 8).to_vector());
  CHECK(e->next_batch(16).inputs.to_vector() == f->next_batch(16).inputs.to_vector());
  // Validation: the first val_size windows of the validation shard, in order.
  const auto& v = d->validation();
  REQUIRE(v.inputs.shape() == Shape{5, 8});
  for (std::int64_t r = 0; r < 5; ++r) CHECK(v.inputs.data<std::int64_t>()[r * 8] == 40000 + 8 * r);
  CHECK(d->encode("Hello world") == std::vector<std::int64_t>{15496, 995});
  CHECK(d->decode(995) == " world");
}

TEST_CASE("tokens: data.shuffle = false reads the windows in order, wrapping") {
  const auto dir = counting_folder("tokens_order", {40}, 20);
  auto d = make_dataset({.task = "tokens", .seq_len = 8, .val_size = 5, .path = dir, .shuffle = false}, 0);
  const auto b = d->next_batch(5);
  std::vector<std::int64_t> firsts;
  for (std::int64_t r = 0; r < 5; ++r) firsts.push_back(b.inputs.data<std::int64_t>()[r * 8]);
  CHECK(firsts == std::vector<std::int64_t>{0, 8, 16, 24, 0});  // 32 windows start at 0..31
}

TEST_CASE("tokens: a clear error for a foreign tokenizer, a corpus shorter than a window, no validation, a shard that lies") {
  SUBCASE("tokenizer hash") {
    const auto dir = counting_folder("tokens_hash", {100}, 20);
    auto text = [&] { std::ifstream in(dir + "/manifest.json"); return std::string{std::istreambuf_iterator<char>(in), {}}; }();
    text.replace(text.find(gpt2().hash()), 16, "0000000000000000");
    put(dir + "/manifest.json", text);
    CHECK_ERROR(make_dataset(tokens_options(dir), 0), "is not the tokenizer");
  }
  SUBCASE("short corpus") {
    CHECK_ERROR(make_dataset(tokens_options(counting_folder("tokens_short", {8}, 20)), 0),
                "no training shard holds one window of data.seq_len + 1 = 9 tokens (8 training tokens in all)");
  }
  SUBCASE("no validation") {
    CHECK_ERROR(make_dataset(tokens_options(counting_folder("tokens_noval", {100}, 4)), 0),
                "the validation split has 4 tokens, fewer than one window");
  }
  SUBCASE("a shard whose size disagrees with the manifest") {
    const auto dir = counting_folder("tokens_lie", {100}, 20);
    write_shard(dir + "/train_000000.bin", std::vector<std::int32_t>(90, 1), 2, std::stoull(gpt2().hash(), nullptr, 16));
    CHECK_ERROR(make_dataset(tokens_options(dir), 0), "holds 90 tokens of 2 bytes");
  }
  SUBCASE("no folder") {
    CHECK_ERROR(make_dataset(tokens_options(""), 0), "data.path must name a shard folder");
    CHECK_ERROR(make_dataset(tokens_options("/nonexistent/shards"), 0), "has no manifest.json");
  }
}

TEST_CASE("tokenize --out: a folder qkv did not make is refused; a failed re-run leaves the old folder usable") {
  const auto dir = test::scratch_dir("tok_out_rules");
  const auto file = put(dir / "a.txt", prose(20'000, 3));
  TokenizeOptions o;
  o.out = (dir / "theirs").string();
  fs::create_directories(o.out);
  put(fs::path(o.out) / "train_000000.bin", "the user's own shard");
  CHECK_ERROR(tokenize_files({file}, o), "holds files (such as train_000000.bin) but no manifest.json: it is not a shard folder qkv made");
  CHECK(fs::exists(fs::path(o.out) / "train_000000.bin"));
  o.out = (dir / "ours").string();
  TokenManifest good;
  CHECK(tokenize_files({file}, o, &good));
  const auto bad = put(dir / "bad.txt", prose(20'000, 5) + "\xff");  // fails at its end, after shards were written
  CHECK_ERROR(tokenize_files({bad}, o), "invalid UTF-8");
  CHECK(read_manifest(o.out).json() == good.json());  // the old manifest and shards are still the folder
  auto d = make_dataset(tokens_options(o.out), 0);
  CHECK(d->next_batch(2).inputs.shape() == Shape{2, 8});
  for (const auto& e : fs::directory_iterator(o.out)) CHECK_FALSE(is_temporary_name(e.path().filename().string()));
}

TEST_CASE("tokenize: a text with no safe place to cut still gets its validation split") {
  const auto dir = test::scratch_dir("tok_nocut");
  const auto file = put(dir / "word.txt", std::string(20'000, 'a'));  // one word: no safe cut anywhere
  TokenizeOptions o;
  o.out = (dir / "out").string();
  o.val_fraction = 0.1;
  TokenManifest m;
  tokenize_files({file}, o, &m);
  CHECK(m.tokens("val") > 0);
  CHECK(m.tokens("train") > 5 * m.tokens("val"));
}
