#pragma once
// Unicode Normalization Form C (canonical decomposition, then canonical composition), pinned to the Unicode
// version of datasets/unicode_nfc.h (generated from Debian's unicode-data by tools/gen_nfc_tables.py): what a
// tokenizer.json "NFC" normalizer does to text before pre-tokenization.
#include <string>
#include <string_view>

namespace qkv {

/// `text` (valid UTF-8) in NFC. ASCII and text already in NFC come back unchanged.
std::string nfc(std::string_view text);
/// The Unicode version of the tables ("15.0.0").
const char* nfc_unicode_version();

}  // namespace qkv
