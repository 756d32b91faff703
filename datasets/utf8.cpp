#include "qkv/datasets/utf8.h"

#include <qkv/core/errors.h>

#include <cstdint>
#include <cstring>

namespace qkv {

char32_t next_code_point(std::string_view s, std::size_t& i, std::string_view where, std::size_t base) {
  static constexpr char32_t kMinOfLength[5] = {0, 0, 0x80, 0x800, 0x10000};
  const auto c = static_cast<unsigned char>(s[i]);
  const int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  QKV_CHECK(len > 0, "{}: invalid UTF-8 at byte {} (0x{:02X} cannot start a character)", where, base + i, c);
  QKV_CHECK(i + static_cast<std::size_t>(len) <= s.size(), "{}: invalid UTF-8 at byte {} (truncated character)",
            where, base + i);
  char32_t cp = len == 1 ? c : c & (0xff >> (len + 1));
  for (int k = 1; k < len; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
    QKV_CHECK((cc >> 6) == 2, "{}: invalid UTF-8 at byte {} (0x{:02X} is not a continuation byte)", where,
              base + i + static_cast<std::size_t>(k), cc);
    cp = (cp << 6) | (cc & 0x3f);
  }
  QKV_CHECK(cp >= kMinOfLength[len], "{}: invalid UTF-8 at byte {} (overlong encoding of U+{:04X})", where,
            base + i, static_cast<std::uint32_t>(cp));
  QKV_CHECK(cp < 0xD800 || cp > 0xDFFF, "{}: invalid UTF-8 at byte {} (surrogate U+{:04X})", where, base + i,
            static_cast<std::uint32_t>(cp));
  QKV_CHECK(cp <= 0x10FFFF, "{}: invalid UTF-8 at byte {} (U+{:X} is above U+10FFFF)", where, base + i,
            static_cast<std::uint32_t>(cp));
  i += static_cast<std::size_t>(len);
  return cp;
}

void check_utf8(std::string_view s, std::string_view where, std::size_t base) {
  std::size_t i = 0;
  while (i < s.size()) {
    // Eight ASCII bytes at a time: most text is ASCII.
    while (i + 8 <= s.size()) {
      std::uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if ((w & 0x8080808080808080ull) != 0) break;
      i += 8;
    }
    if (i < s.size()) next_code_point(s, i, where, base);
  }
}

std::vector<char32_t> decode_utf8(std::string_view s, std::string_view where) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < s.size();) out.push_back(next_code_point(s, i, where));
  return out;
}

std::string encode_utf8(char32_t cp) {
  std::string s;
  if (cp < 0x80) s += static_cast<char>(cp);
  else if (cp < 0x800) s += {static_cast<char>(0xc0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3f))};
  else if (cp < 0x10000)
    s += {static_cast<char>(0xe0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3f)),
          static_cast<char>(0x80 | (cp & 0x3f))};
  else
    s += {static_cast<char>(0xf0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3f)),
          static_cast<char>(0x80 | ((cp >> 6) & 0x3f)), static_cast<char>(0x80 | (cp & 0x3f))};
  return s;
}

std::string displayable_utf8(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t at = i;
    try {
      next_code_point(s, i, "");
      out.append(s.substr(at, i - at));
    } catch (const Error&) {
      out += "\xEF\xBF\xBD";
      i = at + 1;
    }
  }
  return out;
}

std::size_t complete_utf8_prefix(std::string_view s) {
  // Back up over at most three continuation bytes to the last lead byte; keep it only if its character is whole.
  std::size_t n = s.size(), back = 0;
  while (back < 4 && back < n && (static_cast<unsigned char>(s[n - 1 - back]) & 0xC0) == 0x80) ++back;
  if (back == n) return n;
  const auto lead = static_cast<unsigned char>(s[n - 1 - back]);
  const std::size_t len = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : (lead >> 3) == 30 ? 4 : 1;
  return back + 1 >= len ? n : n - 1 - back;
}

}  // namespace qkv
