// Byte-level BPE: loading GPT-2-style files, encoding with a merge-rank table and a per-thread word cache,
// decoding, writing.
#include "qkv/datasets/bpe.h"

#include "qkv/datasets/pretokenize.h"
#include "qkv/datasets/tokenizer_json.h"
#include "qkv/datasets/utf8.h"

#include <qkv/core/errors.h>
#include <qkv/core/files.h>
#include <qkv/core/hash.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <climits>
#include <filesystem>
#include <sys/stat.h>

namespace qkv {
namespace fs = std::filesystem;
namespace {

constexpr std::uint32_t kNoRank = UINT32_MAX;

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves; the others, in order, for U+0100 on.
struct ByteAlphabet {
  std::string symbol[256];
  std::int16_t byte_of[0x144];  // code point -> byte, or -1
  ByteAlphabet() {
    std::fill(std::begin(byte_of), std::end(byte_of), std::int16_t{-1});
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      symbol[b] = encode_utf8(cp);
      byte_of[cp] = static_cast<std::int16_t>(b);
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

// A vocabulary key's bytes: each character stands for one byte; false when one does not (a special token).
bool key_bytes(const std::string& key, std::string& out, const std::string& where) {
  out.clear();
  for (std::size_t i = 0; i < key.size();) {
    const char32_t cp = next_code_point(key, i, where);
    if (cp >= 0x144 || alphabet().byte_of[cp] < 0) return false;
    out += static_cast<char>(alphabet().byte_of[cp]);
  }
  return !key.empty();
}

std::string symbols_of(const std::string& bytes) {
  std::string s;
  for (unsigned char b : bytes) s += alphabet().symbol[b];
  return s;
}

std::atomic<std::uint64_t> next_uid{1};

// Merges inside one piece, lowest rank first (leftmost among equals), as GPT-2's bpe() and tiktoken do: a scan
// for short pieces, a heap over a linked list for long ones (a megabyte of blanks is one piece).
struct PieceMerger {
  std::vector<BpeTokenizer::Id> sym;
  std::vector<std::uint64_t> found;  ///< (rank << 32 | merged id) of (sym[i], sym[i+1])
  struct Node {
    BpeTokenizer::Id id;
    std::int32_t prev, next;
  };
  std::vector<Node> nodes;
};

}  // namespace

const std::string& byte_symbol(unsigned char b) { return alphabet().symbol[b]; }

std::string gpt2_directory() {
  if (const char* env = std::getenv("QKV_GPT2_DIR"); env != nullptr && *env != '\0') return env;
  for (const char* dir : {QKV_GPT2_INSTALLED, QKV_GPT2_SOURCE})
    if (fs::exists(fs::path(dir) / "encoder.json")) return dir;
  return QKV_GPT2_SOURCE;
}

BpeTokenizer BpeTokenizer::load(const std::string& dir_or_name) {
  const std::string dir = dir_or_name == "gpt2" ? gpt2_directory() : dir_or_name;
  struct stat st {};
  QKV_CHECK(::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode),
            "tokenizer: {} is not a folder (expected a folder with vocab.json + merges.txt or encoder.json + "
            "vocab.bpe, or \"gpt2\")", dir);
  for (auto [vocab, merges] : {std::pair{"vocab.json", "merges.txt"}, std::pair{"encoder.json", "vocab.bpe"}}) {
    const fs::path v = fs::path(dir) / vocab, m = fs::path(dir) / merges;
    if (!fs::exists(v) && !fs::exists(m)) continue;
    QKV_CHECK(fs::exists(v) && fs::exists(m), "tokenizer: {} has {} but not {}", dir,
              fs::exists(v) ? vocab : merges, fs::exists(v) ? merges : vocab);
    constexpr std::uint64_t kMax = 256ull << 20;
    std::vector<std::string> declared;  // Hugging Face's added_tokens.json: {"token": id, ...}
    if (const fs::path added = fs::path(dir) / "added_tokens.json"; fs::exists(added)) {
      const auto j = nlohmann::json::parse(read_file_bytes(added.string(), "tokenizer", 16 << 20), nullptr, false);
      QKV_CHECK(!j.is_discarded() && j.is_object(), "tokenizer: {} is not a JSON object of token -> id", added.string());
      for (const auto& [token, id] : j.items()) declared.push_back(token);
    }
    return parse(read_file_bytes(v.string(), "tokenizer", kMax), read_file_bytes(m.string(), "tokenizer", kMax),
                 v.string(), m.string(), declared);
  }
  fail("tokenizer: {} has neither vocab.json + merges.txt nor encoder.json + vocab.bpe", dir);
}

// merges.txt's lines in rank order: two known tokens whose concatenation is a token; `made` marks each result.
void BpeTokenizer::parse_merges(const std::string& merges, const std::unordered_map<std::string, Id>& id_of,
                                std::vector<bool>& made, const std::string& vname, const std::string& mname) {
  std::size_t line_no = 0, begin = 0;
  std::unordered_map<std::uint64_t, std::size_t> line_of;  // a pair's line: a pair merged twice is refused
  while (begin < merges.size()) {
    std::size_t end = merges.find('\n', begin);
    if (end == std::string::npos) end = merges.size();
    std::string line = merges.substr(begin, end - begin);
    begin = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const auto space = line.find(' ');
    QKV_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                  line.find(' ', space + 1) == std::string::npos,
              "tokenizer: {}:{}: expected two tokens separated by one space, got \"{}\"", mname, line_no, line);
    const std::string left = line.substr(0, space), right = line.substr(space + 1);
    for (const auto* part : {&left, &right})
      QKV_CHECK(id_of.count(*part) != 0, "tokenizer: {}:{}: \"{}\" is not in {}", mname, line_no, *part, vname);
    const auto merged = id_of.find(left + right);
    QKV_CHECK(merged != id_of.end(), "tokenizer: {}:{}: \"{}\" + \"{}\" makes \"{}\", which is not in {}", mname,
              line_no, left, right, left + right, vname);
    const Id l = id_of.at(left), r = id_of.at(right);
    const auto [seen, fresh] = line_of.emplace(static_cast<std::uint64_t>(static_cast<std::uint32_t>(l)) << 32 | static_cast<std::uint32_t>(r), line_no);
    // Readers disagree on which rank a repeated pair keeps (GPT-2's dict keeps the last), so none is guessed.
    QKV_CHECK(fresh, "tokenizer: {}:{}: the pair \"{} {}\" is merged again (first at line {})", mname, line_no, left,
              right, seen->second);
    merges_.emplace_back(l, r);
    merged_.push_back(merged->second);
    made[static_cast<std::size_t>(merged->second)] = true;
  }
}

BpeTokenizer BpeTokenizer::parse(const std::string& vocab_json, const std::string& merges, const std::string& vname,
                                 const std::string& mname, const std::vector<std::string>& declared, bool orphans_ok) {
  const auto j = nlohmann::json::parse(vocab_json, nullptr, /*allow_exceptions=*/false);
  QKV_CHECK(!j.is_discarded() && j.is_object() && !j.empty(),
            "tokenizer: {} is not a JSON object of token -> id", vname);
  BpeTokenizer t;
  const auto n = j.size();
  t.bytes_.assign(n, {});
  std::vector<std::string> key_of(n);
  std::unordered_map<std::string, Id> id_of;
  std::vector<bool> plain(n, false);
  std::string bytes;
  for (const auto& [key, value] : j.items()) {
    QKV_CHECK(value.is_number_integer(), "tokenizer: {}: the id of \"{}\" is not an integer", vname, key);
    const auto id = value.get<std::int64_t>();
    QKV_CHECK(id >= 0 && static_cast<std::size_t>(id) < n,
              "tokenizer: {}: \"{}\" has id {}; ids must be 0..{} (contiguous, one per token)", vname, key, id, n - 1);
    QKV_CHECK(key_of[static_cast<std::size_t>(id)].empty(), "tokenizer: {}: id {} is given twice (\"{}\" and \"{}\")",
              vname, id, key_of[static_cast<std::size_t>(id)], key);
    key_of[static_cast<std::size_t>(id)] = key;
    id_of[key] = static_cast<Id>(id);
    plain[static_cast<std::size_t>(id)] = key_bytes(key, bytes, "tokenizer: " + vname);
    t.bytes_[static_cast<std::size_t>(id)] = plain[static_cast<std::size_t>(id)] ? bytes : key;
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = id_of.find(alphabet().symbol[b]);
    QKV_CHECK(it != id_of.end(), "tokenizer: {} has no token for byte 0x{:02X} (\"{}\")", vname, b,
              alphabet().symbol[b]);
    t.byte_id_[b] = it->second;
  }
  std::vector<bool> made(n, false);
  t.parse_merges(merges, id_of, made, vname, mname);
  // Special tokens are those declared (<|endoftext|>, GPT-2's and Hugging Face's GPT2Tokenizer's default, and the
  // caller's list); any other token that is neither a byte nor made by a merge means merges are missing.
  for (const auto& name : declared)
    QKV_CHECK(id_of.count(name) != 0, "tokenizer: the special token \"{}\" is declared but not in {}", name, vname);
  for (std::size_t id = 0; id < n; ++id) {
    const bool single_byte = plain[id] && t.bytes_[id].size() == 1 && t.byte_id_[static_cast<unsigned char>(t.bytes_[id][0])] == static_cast<Id>(id);
    if (single_byte || made[id]) continue;
    const bool special = key_of[id] == "<|endoftext|>" || std::find(declared.begin(), declared.end(), key_of[id]) != declared.end();
    if (!special && orphans_ok) continue;  // tokenizer.json with ignore_merges: a whole piece may be a token
    QKV_CHECK(special, "tokenizer: {}: token \"{}\" (id {}) is neither a byte, made by a merge in {}, nor a declared "
              "special token (<|endoftext|>, or one listed in added_tokens.json): {} looks cut short ({} merges)",
              vname, key_of[id], id, mname, mname, t.merges_.size());
    t.specials_[key_of[id]] = static_cast<Id>(id);
  }
  t.build_tables();
  return t;
}

BpeTokenizer BpeTokenizer::from_merges(const std::vector<std::pair<Id, Id>>& merges,
                                       const std::vector<std::string>& specials) {
  BpeTokenizer t;
  for (int b = 0; b < 256; ++b) {
    t.bytes_.emplace_back(1, static_cast<char>(b));
    t.byte_id_[b] = static_cast<Id>(b);
  }
  // Two merges may make the same bytes ("a" + "bc", "ab" + "c"): one token then, as a vocab.json keyed by bytes has.
  std::unordered_map<std::string, Id> id_of;
  for (const auto& [l, r] : merges) {
    QKV_CHECK(l >= 0 && r >= 0 && l < t.vocab_size() && r < t.vocab_size(), "tokenizer: merge ({}, {}) names an unknown token", l, r);
    t.merges_.emplace_back(l, r);
    auto bytes = t.bytes_[static_cast<std::size_t>(l)] + t.bytes_[static_cast<std::size_t>(r)];
    const auto [it, added] = id_of.try_emplace(bytes, static_cast<Id>(t.bytes_.size()));
    t.merged_.push_back(it->second);
    if (added) t.bytes_.push_back(std::move(bytes));
  }
  for (const auto& s : specials) {
    t.specials_[s] = static_cast<Id>(t.bytes_.size());
    t.bytes_.push_back(s);
  }
  t.build_tables();
  return t;
}

void BpeTokenizer::build_tables() {
  rank_of_.clear();
  rank_of_.reserve(merges_.size() * 2);
  for (std::size_t r = 0; r < merges_.size(); ++r) {
    const auto key = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(merges_[r].first)) << 32) |
                     static_cast<std::uint32_t>(merges_[r].second);
    // A pair is merged once (files that repeat one are refused; training never makes one twice).
    rank_of_.emplace(key, (static_cast<std::uint64_t>(r) << 32) | static_cast<std::uint32_t>(merged_[r]));
  }
  uid_ = next_uid++;
}

const std::string& BpeTokenizer::token_bytes(Id id) const {
  QKV_CHECK(id >= 0 && id < vocab_size(), "tokenizer: token id {} is out of range (the vocabulary has {})", id,
            vocab_size());
  return bytes_[static_cast<std::size_t>(id)];
}

BpeTokenizer::Id BpeTokenizer::special(std::string_view name) const {
  const auto it = specials_.find(name);
  return it == specials_.end() ? -1 : it->second;
}

std::string BpeTokenizer::decode(std::span<const Id> ids) const {
  std::string s;
  for (Id id : ids) s += token_bytes(id);
  return s;
}

namespace {

struct WordCache {
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<BpeTokenizer::Id>, Hash, std::equal_to<>> words;
  PieceMerger merger;
};

}  // namespace

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<Id>& out) const {
  const auto* p = reinterpret_cast<const unsigned char*>(piece.data());
  if (piece.size() == 1) {
    out.push_back(byte_id_[p[0]]);
    return;
  }
  thread_local WordCache cache;
  if (cache.owner != uid_) {
    cache.words.clear();
    cache.owner = uid_;
  }
  if (const auto it = cache.words.find(piece); it != cache.words.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  auto lookup = [&](Id l, Id r) -> std::uint64_t {
    const auto it = rank_of_.find((static_cast<std::uint64_t>(static_cast<std::uint32_t>(l)) << 32) |
                                  static_cast<std::uint32_t>(r));
    return it == rank_of_.end() ? ~std::uint64_t{0} : it->second;
  };
  const auto n = piece.size();
  auto& m = cache.merger;
  if (n <= 64) {
    m.sym.resize(n);
    for (std::size_t i = 0; i < n; ++i) m.sym[i] = byte_id_[p[i]];
    // A scan for the lowest rank.
    auto& found = m.found;
    found.resize(n);
    for (std::size_t i = 0; i + 1 < n; ++i) found[i] = lookup(m.sym[i], m.sym[i + 1]);
    std::size_t size = n;
    for (;;) {
      std::size_t best = size;
      for (std::size_t i = 0; i + 1 < size; ++i)
        if ((found[i] >> 32) < kNoRank && (best == size || (found[i] >> 32) < (found[best] >> 32))) best = i;
      if (best == size) break;
      m.sym[best] = static_cast<Id>(found[best] & 0xffffffffu);
      m.sym.erase(m.sym.begin() + static_cast<std::ptrdiff_t>(best) + 1);
      found.erase(found.begin() + static_cast<std::ptrdiff_t>(best) + 1);
      --size;
      if (best + 1 < size) found[best] = lookup(m.sym[best], m.sym[best + 1]);
      if (best > 0) found[best - 1] = lookup(m.sym[best - 1], m.sym[best]);
    }
    m.sym.resize(size);
  } else {
    // A heap of (rank << 32 | position) over a linked list, 8 bytes an entry (a 10 MB word took 46 bytes a byte
    // with (rank, position, left, right) entries). An entry is stale when the pair now at its position has
    // another rank: a rank names one pair, so an equal rank is the same pair.
    m.nodes.resize(n);
    for (std::size_t i = 0; i < n; ++i)
      m.nodes[i] = {byte_id_[p[i]], static_cast<std::int32_t>(i) - 1, i + 1 < n ? static_cast<std::int32_t>(i + 1) : -1};
    const auto rank_at = [&](std::int32_t at) -> std::uint64_t {  // kNoRank when no pair starts there
      const auto& a = m.nodes[static_cast<std::size_t>(at)];
      return a.id < 0 || a.next < 0 ? kNoRank : lookup(a.id, m.nodes[static_cast<std::size_t>(a.next)].id) >> 32;
    };
    std::vector<std::uint64_t> heap;
    heap.reserve(2 * n);  // each merge pops one entry and pushes at most two: never more (untouched pages cost nothing)
    for (std::size_t i = 0; i + 1 < n; ++i)
      if (const auto r = rank_at(static_cast<std::int32_t>(i)); r < kNoRank) heap.push_back(r << 32 | i);
    std::make_heap(heap.begin(), heap.end(), std::greater<>());
    const auto push = [&](std::int32_t at) {
      if (at < 0) return;
      if (const auto r = rank_at(at); r < kNoRank) {
        heap.push_back(r << 32 | static_cast<std::uint32_t>(at));
        std::push_heap(heap.begin(), heap.end(), std::greater<>());
      }
    };
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      const std::uint64_t top = heap.back();
      heap.pop_back();
      const auto at = static_cast<std::int32_t>(top & 0xffffffffu);
      if (rank_at(at) != top >> 32) continue;  // stale
      auto& a = m.nodes[static_cast<std::size_t>(at)];
      a.id = static_cast<Id>(lookup(a.id, m.nodes[static_cast<std::size_t>(a.next)].id) & 0xffffffffu);
      const auto gone = a.next;
      m.nodes[static_cast<std::size_t>(gone)].id = -1;
      a.next = m.nodes[static_cast<std::size_t>(gone)].next;
      if (a.next >= 0) m.nodes[static_cast<std::size_t>(a.next)].prev = at;
      push(a.prev);
      push(at);
    }
    m.sym.clear();
    for (std::int32_t at = 0; at >= 0; at = m.nodes[static_cast<std::size_t>(at)].next) m.sym.push_back(m.nodes[static_cast<std::size_t>(at)].id);
    if (n > (1u << 20)) m.nodes = {};  // a giant piece's list is not kept for the thread's life
  }
  out.insert(out.end(), m.sym.begin(), m.sym.end());
  if (cache.words.size() >= (1u << 18)) cache.words.clear();  // bounded: a corpus has more words than memory
  if (n <= 256) cache.words.emplace(std::string(piece), m.sym);
}

void BpeTokenizer::encode_ordinary(std::string_view text, std::vector<Id>& out) const {
  gpt2_pretokenizer().split(text, [&](std::string_view piece) { encode_piece(piece, out); });
}

void BpeTokenizer::encode(std::string_view text, std::vector<Id>& out, bool allow_special, std::string_view where,
                          std::size_t base) const {
  check_utf8(text, where, base);
  if (rules_) return encode_with_rules(text, out, allow_special);
  if (!allow_special || specials_.empty()) return encode_ordinary(text, out);
  std::size_t at = 0;
  for (;;) {
    // The next special token: the earliest, the longest among those starting there.
    std::size_t pos = std::string_view::npos, len = 0;
    Id id = -1;
    for (const auto& [name, sid] : specials_) {
      const auto found = text.find(name, at);
      if (found < pos || (found == pos && found != std::string_view::npos && name.size() > len)) {
        pos = found;
        len = name.size();
        id = sid;
      }
    }
    if (pos == std::string_view::npos) break;
    encode_ordinary(text.substr(at, pos - at), out);
    out.push_back(id);
    at = pos + len;
  }
  encode_ordinary(text.substr(at), out);
}

std::vector<BpeTokenizer::Id> BpeTokenizer::encode(std::string_view text, bool allow_special) const {
  std::vector<Id> out;
  encode(text, out, allow_special);
  return out;
}

std::string BpeTokenizer::vocab_json() const {
  // Written by hand in id order: ordered_json looks every key up on insertion (quadratic for 50k tokens).
  std::vector<bool> special(bytes_.size(), false);
  for (const auto& [name, id] : specials_) special[static_cast<std::size_t>(id)] = true;
  std::string s = "{";
  for (std::size_t id = 0; id < bytes_.size(); ++id) {
    if (id > 0) s += ',';
    s += nlohmann::json(special[id] ? bytes_[id] : symbols_of(bytes_[id])).dump();
    s += ':' + std::to_string(id);
  }
  return s + "}";
}

std::string BpeTokenizer::merges_txt() const {
  std::string s = "#version: 0.2\n";
  for (const auto& [l, r] : merges_)
    s += symbols_of(bytes_[static_cast<std::size_t>(l)]) + ' ' + symbols_of(bytes_[static_cast<std::size_t>(r)]) + '\n';
  return s;
}

std::string BpeTokenizer::hash() const {
  // The pre-tokenizer's Unicode version first: the same files under other letter tables give other ids.
  const std::string unicode = std::string("unicode ") + pretokenizer_unicode_version();
  std::uint64_t h = fnv1a(unicode.data(), unicode.size());
  for (const auto& b : bytes_) {
    const auto n = static_cast<std::uint64_t>(b.size());
    h = fnv1a(&n, sizeof n, h);
    h = fnv1a(b.data(), b.size(), h);
  }
  for (const auto& [l, r] : merges_) {
    h = fnv1a(&l, sizeof l, h);
    h = fnv1a(&r, sizeof r, h);
  }
  for (const auto& [name, id] : specials_) h = fnv1a(&id, sizeof id, h);
  if (rules_) h = fnv1a(rules_->digest.data(), rules_->digest.size(), h);  // tokenizer.json's rules
  return fmt::format("{:016x}", h);
}

std::vector<std::string> BpeTokenizer::declared_specials() const {
  std::vector<std::string> out;
  for (const auto& [name, id] : specials_)
    if (name != "<|endoftext|>") out.push_back(name);
  return out;
}

void BpeTokenizer::save(const std::string& dir) const {
  QKV_CHECK(!dir.empty(), "tokenizer: the folder to save to is an empty name (give --out DIR)");
  fs::create_directories(dir);
  write_file_atomic((fs::path(dir) / "vocab.json").string(), vocab_json());
  write_file_atomic((fs::path(dir) / "merges.txt").string(), merges_txt());
  write_file_atomic((fs::path(dir) / "tokenizer.json").string(), tokenizer_json());  // what AutoTokenizer reads first
  nlohmann::ordered_json added = nlohmann::ordered_json::object();
  for (const auto& name : declared_specials()) added[name] = specials_.at(name);
  const fs::path added_path = fs::path(dir) / "added_tokens.json";
  std::error_code ec;
  if (added.empty()) fs::remove(added_path, ec);  // (an earlier tokenizer's)
  else write_file_atomic(added_path.string(), added.dump(2) + "\n");
}

}  // namespace qkv
