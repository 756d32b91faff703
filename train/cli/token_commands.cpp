// The commands that make and use tokenizers and token shards: qkv tokenize, qkv tokenizer train|encode|decode.
#include <qkv/core/errors.h>
#include <qkv/core/files.h>
#include <qkv/core/parallel.h>
#include <qkv/datasets/bpe.h>
#include <qkv/datasets/bpe_train.h>
#include <qkv/datasets/shards.h>
#include <qkv/datasets/tokenizer_json.h>
#include <qkv/train/cli/commands.h>

#include <fmt/format.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>

namespace qkv::cli {
namespace {

// A progress line on a terminal (stderr), redrawn at most 10 times a second; nothing when stderr is not one.
class ProgressLine {
 public:
  ProgressLine() : tty_(::isatty(STDERR_FILENO) != 0), start_(clock::now()), last_(start_) {}
  ~ProgressLine() {
    if (drawn_) std::fputs("\r\033[K", stderr);
  }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  /// Bytes of input read so far out of `total`, with a rate and the time left; `extra` follows.
  void bytes(std::int64_t done, std::int64_t total, const std::string& what, const std::string& extra = "") {
    const double s = seconds();
    const double rate = s > 0 ? double(done) / s : 0;
    const double eta = rate > 0 ? double(total - done) / rate : 0;
    draw(fmt::format("{}: {:.1f} of {:.1f} MB, {:.1f} MB/s, ETA {:.0f} s{}", what, double(done) / 1e6,
                     double(total) / 1e6, rate / 1e6, eta, extra));
  }
  void count(std::int64_t done, std::int64_t total, const std::string& what) {
    draw(fmt::format("{}: {} of {} ({:.0f}%)", what, done, total, total > 0 ? 100.0 * double(done) / double(total) : 100.0));
  }
  double seconds() const { return std::chrono::duration<double>(clock::now() - start_).count(); }

 private:
  using clock = std::chrono::steady_clock;
  void draw(const std::string& line) {
    if (!tty_ || clock::now() - last_ < std::chrono::milliseconds(100)) return;
    last_ = clock::now();
    fmt::print(stderr, "\r\033[K{}", line);
    drawn_ = true;
  }
  bool tty_, drawn_ = false;
  clock::time_point start_, last_;
};

int cmd_tokenize(const std::vector<std::string>& files, const TokenizeOptions& options) {
  ProgressLine line;
  auto o = options;
  o.progress = [&](std::int64_t done, std::int64_t total, std::int64_t tokens) {
    line.bytes(done, total, "tokenize", fmt::format(", {:.1f}M tokens", double(tokens) / 1e6));
  };
  TokenManifest m;
  const bool wrote = tokenize_files(files, o, &m);
  const double s = line.seconds();
  std::int64_t bytes = 0;
  for (const auto& f : m.sources) bytes += f.bytes;
  if (!wrote) {
    fmt::print("{} is up to date: {} training and {} validation tokens of {} file{} (nothing written)\n", o.out,
               m.tokens("train"), m.tokens("val"), m.sources.size(), m.sources.size() == 1 ? "" : "s");
    return 0;
  }
  fmt::print("wrote {}: {} training and {} validation tokens in {} shard{} ({} tokenizer, {}), {:.1f} MB in {:.1f} s "
             "({:.1f} MB/s)\n",
             o.out, m.tokens("train"), m.tokens("val"), m.shards.size(), m.shards.size() == 1 ? "" : "s",
             m.tokenizer_name, m.width == 2 ? "uint16" : "uint32", double(bytes) / 1e6, s,
             s > 0 ? double(bytes) / 1e6 / s : 0.0);
  return 0;
}

int cmd_tokenizer_train(const std::vector<std::string>& files, std::int64_t vocab_size, const std::string& out) {
  ProgressLine line;
  BpeTrainOptions o;
  o.vocab_size = vocab_size;
  o.progress = [&](const char* phase, std::int64_t done, std::int64_t total) {
    if (std::string(phase) == "count") line.bytes(done, total, "counting pieces");
    else line.count(done, total, "merges");
  };
  const BpeTokenizer tok = train_bpe(files, o);
  tok.save(out);
  fmt::print("wrote {}/vocab.json and merges.txt: {} tokens ({} merges, {} special), hash {}, in {:.1f} s{}\n", out,
             tok.vocab_size(), tok.merge_count(), tok.specials().size(), tok.hash(), line.seconds(),
             tok.vocab_size() < vocab_size ? " (the text had no more pairs to merge)" : "");
  return 0;
}

// stdin for "-", else the file (checked).
std::istream& open_input(const std::string& path, std::ifstream& file, const char* what) {
  if (path == "-") return std::cin;
  check_regular_input(path, what);
  file.open(path, std::ios::binary);
  QKV_CHECK(file.good(), "{}: cannot read {}", what, path);
  return file;
}

int cmd_encode(const std::string& path, const std::string& tokenizer, bool json, bool allow_special) {
  const BpeTokenizer tok = load_tokenizer(tokenizer);
  std::ifstream file;
  std::istream& in = open_input(path, file, "tokenizer encode");
  bool first = true;
  std::string text;
  if (json) std::fputc('[', stdout);
  const auto print = [&](const std::vector<BpeTokenizer::Id>& ids) {
    text.clear();
    for (const auto id : ids) {
      if (!first) text += json ? ", " : " ";
      first = false;
      text += std::to_string(id);
    }
    std::fwrite(text.data(), 1, text.size(), stdout);
  };
  const TokenizerRules* rules = tok.rules();
  if (rules) print(rules->prefix);  // tokenizer.json's template around the text, as tokenizers' encode adds it
  encode_stream(in, tok, allow_special, path == "-" ? "stdin" : path, print);
  if (rules) print(rules->suffix);
  std::fputs(json ? "]\n" : "\n", stdout);
  return 0;
}

// Reads ids separated by whitespace, or one JSON array of ids (what `encode --json` prints), and writes their bytes
// as they come.
int cmd_decode(const std::string& path, const std::string& tokenizer) {
  const BpeTokenizer tok = load_tokenizer(tokenizer);
  std::ifstream file;
  std::istream& in = open_input(path, file, "tokenizer decode");
  std::vector<BpeTokenizer::Id> ids;
  std::string word;
  std::int64_t index = 0;
  auto flush = [&] {
    const auto bytes = tok.decode(ids);
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    ids.clear();
  };
  auto take = [&] {
    if (word.empty()) return;
    std::size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    QKV_CHECK(used == word.size() && v >= 0 && v < tok.vocab_size(),
              "tokenizer decode: {}: id {} is \"{}\" (expected an integer in [0, {}))", path == "-" ? "stdin" : path,
              index, word, tok.vocab_size());
    ids.push_back(static_cast<BpeTokenizer::Id>(v));
    ++index;
    word.clear();
    if (ids.size() >= 65536) flush();
  };
  const std::string where = path == "-" ? "stdin" : path;
  enum { kStart, kPlain, kInArray, kClosed } state = kStart;
  for (int c; (c = in.get()) != EOF;) {
    if (std::isspace(c)) {
      take();
    } else if (c == '[') {
      QKV_CHECK(state == kStart, "tokenizer decode: {}: '[' after id {}: give ids separated by spaces, or one JSON "
                "array of ids (no nested arrays)", where, index);
      state = kInArray;
    } else if (c == ']' || c == ',') {
      QKV_CHECK(state == kInArray, "tokenizer decode: {}: '{}' {}", where, char(c),
                state == kClosed ? "after the array's end" : "outside a JSON array");
      take();
      if (c == ']') state = kClosed;
    } else {
      QKV_CHECK(state != kClosed, "tokenizer decode: {}: text after the array's end", where);
      if (state == kStart) state = kPlain;
      word += static_cast<char>(c);
    }
  }
  QKV_CHECK(state != kInArray, "tokenizer decode: {}: the JSON array is not closed (no ']' after {} ids)", where, index);
  take();
  flush();
  return 0;
}

}  // namespace

Runner declare_tokenize(CLI::App& c) {
  struct Args {
    std::vector<std::string> files;
    TokenizeOptions o;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  c.add_option("files", a->files, "text files (UTF-8); each is one document")->required();
  c.add_option("--tokenizer", a->o.tokenizer, "a tokenizer folder (tokenizer.json, or vocab.json + merges.txt) or gpt2 (default)");
  c.add_option("--out", a->o.out, "the shard folder to write")->required();
  c.add_option("--val-fraction", a->o.val_fraction, "the last fraction of the text that validates (default 0.05)");
  c.add_option("--doc-separator", a->o.doc_separator, "a string that separates documents inside a file");
  c.add_option("--shard-tokens", a->o.shard_tokens, "tokens per shard (default 100000000)");
  c.add_option("--threads", a->threads, "encoding threads (default 0 = all cores)")->check(CLI::Range(0, 1024));
  return [a] {
    if (a->threads > 0) set_num_threads(a->threads);
    return cmd_tokenize(a->files, a->o);
  };
}

Runner declare_tokenizer(CLI::App& c) {
  struct Args {
    std::vector<std::string> files;
    std::string path = "-", tokenizer = "gpt2", out;
    std::int64_t vocab_size = 0;
    bool json = false, allow_special = false;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  c.require_subcommand(1);
  auto* train = c.add_subcommand("train", "learn byte-level BPE merges from text files (GPT-2's pre-tokenizer)");
  train->add_option("files", a->files, "text files (UTF-8)")->required();
  train->add_option("--vocab-size", a->vocab_size, "tokens in all: 256 bytes + merges + <|endoftext|>")->required();
  train->add_option("--out", a->out, "the folder to write vocab.json and merges.txt into")->required();
  train->add_option("--threads", a->threads, "counting threads (default 0 = all cores)")->check(CLI::Range(0, 1024));
  auto* encode = c.add_subcommand("encode", "print the token ids of a text file (- for stdin)");
  encode->add_option("file", a->path, "a UTF-8 text file, or - (default) for stdin");
  encode->add_option("--tokenizer", a->tokenizer, "a tokenizer folder (tokenizer.json, or vocab.json + merges.txt) or gpt2 (default)");
  encode->add_flag("--json", a->json, "print a JSON array");
  encode->add_flag("--allow-special", a->allow_special, "read <|endoftext|> in the text as the special token");
  auto* decode = c.add_subcommand("decode", "print the text of token ids (spaces, commas or a JSON array)");
  decode->add_option("file", a->path, "a file of ids, or - (default) for stdin");
  decode->add_option("--tokenizer", a->tokenizer, "a tokenizer folder (tokenizer.json, or vocab.json + merges.txt) or gpt2 (default)");
  return [a, train, encode] {
    if (a->threads > 0) set_num_threads(a->threads);
    if (train->parsed()) return cmd_tokenizer_train(a->files, a->vocab_size, a->out);
    if (encode->parsed()) return cmd_encode(a->path, a->tokenizer, a->json, a->allow_special);
    return cmd_decode(a->path, a->tokenizer);
  };
}

}  // namespace qkv::cli
