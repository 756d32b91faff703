#pragma once
// UTF-8, strictly (RFC 3629): invalid bytes, truncated sequences, overlong forms (C0 AF for '/'), surrogates
// (ED A0 80) and code points above U+10FFFF (F5 80 80 80) are errors naming the byte offset, never replaced.
// What is accepted can always be written back as valid UTF-8 (into a model file's JSON metadata, for one).
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace qkv {

/// The code point starting at byte i of s (i is advanced past it); throws qkv::Error "<where>: invalid UTF-8 at
/// byte <base + i> (why)".
char32_t next_code_point(std::string_view s, std::size_t& i, std::string_view where, std::size_t base = 0);
/// Throws as next_code_point does at the first invalid byte of s (ASCII runs are skipped fast).
void check_utf8(std::string_view s, std::string_view where, std::size_t base = 0);
/// The code points of s.
std::vector<char32_t> decode_utf8(std::string_view s, std::string_view where);
/// One code point as UTF-8.
std::string encode_utf8(char32_t cp);
/// For display only: s with each invalid byte shown as U+FFFD (a BPE token can be part of a character).
std::string displayable_utf8(std::string_view s);
/// The length of the longest prefix of s that does not end inside a character (s may be cut anywhere).
std::size_t complete_utf8_prefix(std::string_view s);

}  // namespace qkv
