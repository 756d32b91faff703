#pragma once
// Text helpers for what the CLI prints and writes. The file rules (atomic outputs, bounded inputs, retried appends)
// are in core/files.h, which this includes.
#include <qkv/core/files.h>  // write_file_atomic, AppendFile, read_file_bytes, ...

#include <cstdint>
#include <string>

namespace qkv {

/// `word` quoted for a POSIX shell: unchanged when it holds only safe characters, else in single quotes.
std::string shell_quote(const std::string& word);

/// True when `text` holds an ASCII control character (below 0x20, or DEL) other than those in `allowed`.
bool has_control_character(const std::string& text, const std::string& allowed = "");

/// `text` with <, >, &, " and ' escaped for XML and HTML, and control characters other than tab and newline
/// (which XML 1.0 cannot hold at all) shown as U+FFFD.
std::string xml_escape(const std::string& text);

}  // namespace qkv
