#include "qkv/train/io/files.h"

namespace qkv {

std::string shell_quote(const std::string& word) {
  const bool safe = !word.empty() && word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                           "0123456789_-./=:,+@%") == std::string::npos;
  if (safe) return word;
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

bool has_control_character(const std::string& text, const std::string& allowed) {
  for (unsigned char c : text)
    if ((c < 0x20 || c == 0x7f) && allowed.find(static_cast<char>(c)) == std::string::npos) return true;
  return false;
}

std::string xml_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else if (c == '\'') out += "&#39;";
    else if ((u < 0x20 && c != '\t' && c != '\n') || u == 0x7f) out += "\xEF\xBF\xBD";  // U+FFFD
    else out += c;
  }
  return out;
}

}  // namespace qkv
