#include "qkv/train/io/files.h"

#include <nlohmann/json.hpp>

#include <filesystem>

namespace qkv {
namespace fs = std::filesystem;
using json = nlohmann::json;

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

std::vector<std::string> remove_other_model_files(const std::string& dir, bool wrote_tokenizer) {
  // Files a loader reads before or beside model.safetensors, which the folder's new model would not match: a
  // sharded model's index (from_pretrained prefers nothing over it, and its shards), PyTorch's weights, and a
  // tokenizer that is not the one just written (AutoTokenizer reads tokenizer.json first).
  std::vector<std::string> removed;
  const fs::path d(dir);
  const auto drop = [&](const fs::path& p) {
    std::error_code ec;
    if (fs::is_regular_file(fs::symlink_status(p, ec)) && fs::remove(p, ec)) removed.push_back(p.filename().string());
  };
  for (const char* index : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
    const fs::path p = d / index;
    if (!fs::is_regular_file(p)) continue;
    const json j = json::parse(read_file_bytes(p.string(), "index", 64 << 20), nullptr, false);
    if (j.is_object() && j.contains("weight_map") && j["weight_map"].is_object())
      for (const auto& [tensor, file] : j["weight_map"].items())
        if (file.is_string() && fs::path(file.get<std::string>()).filename() == fs::path(file.get<std::string>()))
          drop(d / file.get<std::string>());
    drop(p);
  }
  drop(d / "pytorch_model.bin");
  for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"}) drop(d / f);
  if (!wrote_tokenizer)
    for (const char* f : {"vocab.json", "merges.txt", "added_tokens.json", "tokenizer.json"}) drop(d / f);
  return removed;
}

}  // namespace qkv
