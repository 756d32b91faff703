#include "qkv/datasets/pretokenize.h"

#include "qkv/datasets/utf8.h"

#include <qkv/core/errors.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>

namespace qkv {
namespace {

// Unicode's White_Space property (what Python's regex and Rust's regex mean by \s).
#define QKV_WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
constexpr const char* kGpt2Pattern =
    "'(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^" QKV_WS "\\p{L}\\p{N}]+|[" QKV_WS "]+(?![^" QKV_WS "])|[" QKV_WS "]+";
#undef QKV_WS

bool ascii_graphic(unsigned char c) { return c > 0x20 && c < 0x7f; }

// Whether a piece is whitespace (those are the only pieces that end in it): the pattern's \s+(?!\S) looks at
// the next character, so a whitespace piece may end differently once the text after it is cut away.
bool white_space_piece(std::string_view piece) {
  std::size_t i = piece.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(piece[i]) & 0xC0) == 0x80) --i;
  const char32_t c = next_code_point(piece, i, "piece");
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

}  // namespace

struct Pretokenizer::Impl {
  pcre2_code* code = nullptr;
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

Pretokenizer::Pretokenizer() : impl_(std::make_unique<Impl>()) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, &error, &offset, nullptr);
  if (impl_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail("pretokenizer: PCRE2 rejected the pattern at {}: {}", offset, reinterpret_cast<const char*>(message));
  }
  // Anchored when compiled, not per match: PCRE2's JIT does not take PCRE2_ANCHORED as a match option and would
  // silently fall back to the interpreter (2.3x slower here). Without JIT (a PCRE2 built without it) matching
  // still works, only slower.
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);
}

Pretokenizer::~Pretokenizer() = default;

void Pretokenizer::split_impl(std::string_view text, void (*f)(void*, std::string_view), void* ctx) const {
  thread_local ThreadMatch m;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t at = 0;
  while (at < text.size()) {
    const int rc = pcre2_match(impl_->code, subject, text.size(), at, PCRE2_NO_UTF_CHECK, m.data,
                               m.context);
    // Every character is a letter, a number, White_Space or something else, so an anchored match always exists.
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
