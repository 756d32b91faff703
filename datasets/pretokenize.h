#pragma once
// GPT-2's pre-tokenization: text is cut into pieces (a contraction, an optional space and letters, an optional
// space and digits, an optional space and other symbols, whitespace) before BPE runs inside each piece:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// It runs on PCRE2 with its JIT (Debian's libpcre2), with Unicode classes, and with \s spelled out as Unicode's
// White_Space property as OpenAI's encoders (Python's regex, tiktoken's Rust regex) read it: PCRE2's own \s also
// takes U+180E, theirs does not.
#include <cstddef>
#include <memory>
#include <string_view>

namespace qkv {

class Pretokenizer {
 public:
  Pretokenizer();
  ~Pretokenizer();
  Pretokenizer(const Pretokenizer&) = delete;
  Pretokenizer& operator=(const Pretokenizer&) = delete;
  /// Calls f(piece) for every piece of `text` in order; text must be valid UTF-8 (check_utf8 first). Thread-safe.
  template <class F>
  void split(std::string_view text, F&& f) const {
    split_impl(text, [](void* ctx, std::string_view piece) { (*static_cast<F*>(ctx))(piece); }, &f);
  }

 private:
  void split_impl(std::string_view text, void (*f)(void*, std::string_view), void* ctx) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The one pattern, shared (compiling it takes a few milliseconds).
const Pretokenizer& gpt2_pretokenizer();

/// A place to cut `text` so that pre-tokenizing the two parts apart gives the same pieces as the whole (the
/// rules are in pretokenize.cpp): the last one found, 0 when there is none (a short text, or one piece). The text
/// must be valid UTF-8 but for a character cut off at its end.
std::size_t safe_cut(std::string_view text);

}  // namespace qkv
