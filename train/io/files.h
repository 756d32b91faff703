#pragma once
// Text helpers for what the CLI prints and writes, and export folders' hygiene. The file rules (atomic outputs,
// bounded inputs, retried appends) are in core/files.h, which this includes.
#include <qkv/core/files.h>  // write_file_atomic, AppendFile, read_file_bytes, ...

#include <cstdint>
#include <string>
#include <vector>

namespace qkv {

/// `word` quoted for a POSIX shell: unchanged when it holds only safe characters, else in single quotes.
std::string shell_quote(const std::string& word);

/// True when `text` holds an ASCII control character (below 0x20, or DEL) other than those in `allowed`.
bool has_control_character(const std::string& text, const std::string& allowed = "");

/// `text` with <, >, &, " and ' escaped for XML and HTML, and control characters other than tab and newline
/// (which XML 1.0 cannot hold at all) shown as U+FFFD.
std::string xml_escape(const std::string& text);

/// Removes from an export folder what another model left there that loaders would read with the new one: a
/// sharded model's index and its shards, PyTorch weights, tokenizer_config.json and special_tokens_map.json, and
/// (when the export writes no tokenizer) vocab.json, merges.txt, added_tokens.json and tokenizer.json. Returns the
/// names removed. write_hf_gpt2 calls it after writing, write_hf_llama before.
std::vector<std::string> remove_other_model_files(const std::string& dir, bool wrote_tokenizer);

}  // namespace qkv
