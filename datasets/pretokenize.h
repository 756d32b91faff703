#pragma once
// Pre-tokenization: text is cut into pieces before BPE runs inside each piece. GPT-2's pattern (an optional space
// and letters, an optional space and digits, an optional space and other symbols, contractions, whitespace):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// What \p{L} (letters), \p{N} (numbers) and \s (Unicode's White_Space, as Python's and Rust's regex read it) match
// is pinned to one Unicode version, from tables generated from Unicode's data (pretokenizer_unicode_version()),
// whatever the system's regex library was built with. GPT-2's pattern runs as a scan over those tables; any other
// pattern runs on PCRE2's JIT (Debian's libpcre2) with the three classes spelled out from the same tables.
#include <cstddef>
#include <memory>
#include <string_view>

namespace qkv {

class Pretokenizer {
 public:
  /// GPT-2's pattern.
  Pretokenizer();
  /// Any pattern (Perl syntax, anchored at each piece), with \p{L}, \p{N}, \s and \S pinned; throws qkv::Error
  /// naming the pattern when PCRE2 rejects it.
  explicit Pretokenizer(std::string_view pattern);
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

/// GPT-2's pre-tokenizer, shared.
const Pretokenizer& gpt2_pretokenizer();
/// GPT-2's pattern as text (for Pretokenizer(pattern), and for files that name it).
const char* gpt2_pattern();
/// The Unicode version of the letter and number tables ("15.0.0"): tokenizer hashes and shard manifests record it.
const char* pretokenizer_unicode_version();

/// A place to cut `text` so that pre-tokenizing the two parts apart gives the same pieces as the whole (the
/// rules are in pretokenize.cpp): the last one found, 0 when there is none (a short text, or one piece). The text
/// must be valid UTF-8 but for a character cut off at its end.
std::size_t safe_cut(std::string_view text);
/// The same under any tokenizer.json rules qkv reads (datasets/tokenizer_json.h: GPT-2's, Llama 3's and Qwen2's
/// patterns, Digits, NFC): only after a newline that a visible ASCII character follows. 0 when there is none.
std::size_t line_cut(std::string_view text);

}  // namespace qkv
