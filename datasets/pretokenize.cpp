#include "qkv/datasets/pretokenize.h"

#include "qkv/datasets/unicode_tables.h"
#include "qkv/datasets/utf8.h"

#include <qkv/core/errors.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <vector>

namespace qkv {
namespace {

// What the patterns ask of a character: \p{L}, \p{N}, \s (Unicode's White_Space, as Python's and Rust's regex
// read \s; PCRE2's own \s also takes U+180E) or none of them. From the pinned tables (unicode_tables.h), never from
// the system's PCRE2, whose Unicode version varies (Debian 12's is 14.0.0).
enum Category : std::uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

constexpr char32_t kWhiteSpace[][2] = {{0x09, 0x0D}, {0x20, 0x20}, {0x85, 0x85}, {0xA0, 0xA0}, {0x1680, 0x1680},
                                       {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F},
                                       {0x3000, 0x3000}};

// One byte per code point (1.1 MB, filled once): a load per character, whatever the script.
const std::uint8_t* categories() {
  static const std::vector<std::uint8_t> table = [] {
    std::vector<std::uint8_t> t(0x110000, kOther);
    const auto fill = [&t](const auto& ranges, Category c) {
      for (const auto& r : ranges) std::fill(t.begin() + r[0], t.begin() + r[1] + 1, c);
    };
    fill(unicode::kLetters, kLetter);
    fill(unicode::kNumbers, kNumber);
    fill(kWhiteSpace, kSpace);
    return t;
  }();
  return table.data();
}

// The code point at s[i] (valid UTF-8) and its length in bytes.
inline char32_t decode_at(const unsigned char* s, std::size_t i, std::size_t& len) {
  const unsigned char b = s[i];
  if (b < 0x80) return len = 1, b;
  if (b < 0xE0) return len = 2, char32_t(b & 0x1F) << 6 | (s[i + 1] & 0x3F);
  if (b < 0xF0) return len = 3, char32_t(b & 0x0F) << 12 | char32_t(s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
  return len = 4, char32_t(b & 0x07) << 18 | char32_t(s[i + 1] & 0x3F) << 12 | char32_t(s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F);
}

// GPT-2's pattern, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+, as a scan: the
// length of the piece at `at`. tests/datasets/test_bpe.cpp checks it against PCRE2 running the pattern itself.
std::size_t gpt2_piece(const unsigned char* s, std::size_t n, std::size_t at, const std::uint8_t* cat) {
  if (s[at] == '\'' && at + 1 < n) {  // a contraction (case-sensitive, as GPT-2's)
    const unsigned char c = s[at + 1];
    if (c == 's' || c == 'd' || c == 'm' || c == 't') return 2;
    if (at + 2 < n && ((c == 'l' && s[at + 2] == 'l') || (c == 'v' && s[at + 2] == 'e') || (c == 'r' && s[at + 2] == 'e')))
      return 3;
  }
  std::size_t len = 0;
  const std::size_t j = at + (s[at] == ' ' ? 1 : 0);  // ` ?` then a run of one category: letters, numbers, others
  if (j < n) {
    const std::uint8_t c = cat[decode_at(s, j, len)];
    if (c != kSpace) {
      std::size_t k = j + len;
      while (k < n && cat[decode_at(s, k, len)] == c) k += len;
      return k - at;
    }
  }
  // White space (s[at] is): \s+(?!\S) leaves the run's last character to the piece after it, unless the text ends
  // there or the run is one character long (then \s+ takes it).
  std::size_t k = at, last = at;
  while (k < n && cat[decode_at(s, k, len)] == kSpace) last = k, k += len;
  return k < n && last > at ? last - at : k - at;
}

// A pattern with \p{L}, \p{N}, \s and \S spelled out from the pinned tables (inside a class or alone), so
// PCRE2's own Unicode version does not decide what they match.
std::string pin_classes(std::string_view pattern) {
  const auto ranges = [](const auto& table) {
    std::string out;
    for (const auto& r : table) {
      const auto a = static_cast<std::uint32_t>(r[0]), b = static_cast<std::uint32_t>(r[1]);
      out += a == b ? fmt::format("\\x{{{:X}}}", a) : fmt::format("\\x{{{:X}}}-\\x{{{:X}}}", a, b);
    }
    return out;
  };
  const std::string letters = ranges(unicode::kLetters), numbers = ranges(unicode::kNumbers), space = ranges(kWhiteSpace);
  std::string out;
  bool in_class = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const std::string_view rest = pattern.substr(i);
    const std::string* body = rest.starts_with("\\p{L}") ? &letters : rest.starts_with("\\p{N}") ? &numbers : nullptr;
    if (body != nullptr) {
      out += in_class ? *body : "[" + *body + "]";
      i += 4;
    } else if (rest.starts_with("\\s") || rest.starts_with("\\S")) {
      QKV_CHECK(!(in_class && rest[1] == 'S'), "pretokenizer: \\S inside a class is not supported in '{}'", pattern);
      out += in_class ? space : (rest[1] == 's' ? "[" : "[^") + space + "]";
      i += 1;
    } else if (pattern[i] == '\\' && i + 1 < pattern.size()) {
      out += rest.substr(0, 2);
      i += 1;
    } else {
      if (pattern[i] == '[' && !in_class) in_class = true;
      else if (pattern[i] == ']' && in_class && out.back() != '[' && !out.ends_with("[^")) in_class = false;
      out += pattern[i];
    }
  }
  return out;
}

bool ascii_graphic(unsigned char c) { return c > 0x20 && c < 0x7f; }

// Whether a piece is whitespace (those are the only pieces that end in it): the pattern's \s+(?!\S) looks at
// the next character, so a whitespace piece may end differently once the text after it is cut away.
bool white_space_piece(std::string_view piece) {
  std::size_t i = piece.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(piece[i]) & 0xC0) == 0x80) --i;
  return categories()[next_code_point(piece, i, "piece")] == kSpace;
}

}  // namespace

const char* pretokenizer_unicode_version() { return unicode::kVersion; }

const char* gpt2_pattern() {
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
}

struct Pretokenizer::Impl {
  pcre2_code* code = nullptr;  // null: GPT-2's pattern, scanned
  ~Impl() { pcre2_code_free(code); }
};

// Each thread keeps its own match data and JIT stack (a long run of blanks backtracks deeply in \s+(?!\S)).
struct ThreadMatch {
  pcre2_match_data* data = nullptr;
  pcre2_jit_stack* stack = nullptr;
  pcre2_match_context* context = nullptr;
  ThreadMatch() {
    data = pcre2_match_data_create(4, nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    context = pcre2_match_context_create(nullptr);
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
};

Pretokenizer::Pretokenizer() : impl_(std::make_unique<Impl>()) { categories(); }

Pretokenizer::Pretokenizer(std::string_view pattern) : impl_(std::make_unique<Impl>()) {
  categories();
  const std::string pinned = pin_classes(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pinned.c_str()), pinned.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, &error, &offset, nullptr);
  if (impl_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail("pretokenizer: PCRE2 rejected the pattern '{}': {}", pattern, reinterpret_cast<const char*>(message));
  }
  // Anchored when compiled, not per match: PCRE2's JIT does not take PCRE2_ANCHORED as a match option and would
  // silently fall back to the interpreter (2.3x slower here). Without JIT (a PCRE2 built without it) matching
  // still works, only slower.
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);
}

Pretokenizer::~Pretokenizer() = default;

void Pretokenizer::split_impl(std::string_view text, void (*f)(void*, std::string_view), void* ctx) const {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  if (impl_->code == nullptr) {
    const std::uint8_t* cat = categories();
    for (std::size_t at = 0; at < text.size();) {
      const std::size_t len = gpt2_piece(s, text.size(), at, cat);
      f(ctx, text.substr(at, len));
      at += len;
    }
    return;
  }
  thread_local ThreadMatch m;
  std::size_t at = 0;
  while (at < text.size()) {
    const int rc = pcre2_match(impl_->code, s, text.size(), at, PCRE2_NO_UTF_CHECK, m.data, m.context);
    QKV_CHECK(rc > 0, "pretokenizer: no piece matched at byte {} (PCRE2 error {})", at, rc);
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.data);
    QKV_CHECK(ov[1] > at, "pretokenizer: empty piece at byte {}", at);
    f(ctx, text.substr(at, ov[1] - at));
    at = ov[1];
  }
}

const Pretokenizer& gpt2_pretokenizer() {
  static const Pretokenizer p;
  return p;
}
// Why a cut at p is safe. The pattern has no look-behind, so the pieces from p on depend only on text[p:]; what
// must hold is that no piece spans p and that the piece ending at p ends the same way when the text ends there
// (only \s+(?!\S) looks ahead, at a run of blanks).
//  - "x\nY" (x, Y ASCII non-blanks), cut before Y: x's piece stops at the blank; the single '\n' is one piece
//    whatever follows it (before Y: \s+(?!\S) fails, \s+ takes it; at the end: \s+(?!\S) takes it).
//  - "x Y", cut before the space: x's piece stops at the blank, and " Y..." starts a piece either way.
//  - Otherwise (text without ASCII blanks, such as Chinese), the pieces of the text itself: matching a piece
//    looks at most a few characters past its start or one past its end, so a boundary that many bytes before
//    the end is one in any longer text too.
// After "\n", before a visible ASCII character Y: every pattern's piece that holds the newline ends with the run
// of newlines (\s*[\r\n]+, \s+, or punctuation's trailing [\r\n]*) and none starts before Y and takes it; NFC
// composes nothing onto an ASCII character; Digits cuts around digits only.
std::size_t line_cut(std::string_view text) {
  for (std::size_t p = text.size(); p-- > 1;)
    if (text[p - 1] == '\n' && text[p] > ' ' && text[p] < 0x7f) return p;
  return 0;
}

std::size_t safe_cut(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t stop = text.size() > 65536 ? text.size() - 65536 : 2;
  for (std::size_t p = text.size(); p >= stop && p >= 2; --p) {
    if (p + 1 < text.size() && s[p] == ' ' && ascii_graphic(s[p - 1]) && ascii_graphic(s[p + 1])) return p;
    if (p < text.size() && s[p - 1] == '\n' && ascii_graphic(s[p]) && ascii_graphic(s[p - 2])) return p;
  }
  constexpr std::size_t kMargin = 32;
  if (text.size() <= kMargin) return 0;
  std::size_t cut = 0, at = 0;
  const std::size_t limit = text.size() - kMargin;
  gpt2_pretokenizer().split(text.substr(0, complete_utf8_prefix(text)), [&](std::string_view piece) {
    at += piece.size();
    if (at <= limit && !white_space_piece(piece)) cut = at;
  });
  return cut;
}

}  // namespace qkv
