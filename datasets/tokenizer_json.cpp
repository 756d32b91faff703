// tokenizer.json (Hugging Face tokenizers, byte-level BPE): reading into a BpeTokenizer, encoding with its rules,
// writing. What it cannot represent is refused naming the section and the type.
#include "qkv/datasets/tokenizer_json.h"

#include "qkv/datasets/nfc.h"

#include <qkv/core/errors.h>
#include <qkv/core/files.h>
#include <qkv/core/hash.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>

namespace qkv {
namespace fs = std::filesystem;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

std::string type_of(const json& j) { return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : ""; }

void parse_normalizer(const json& j, TokenizerRules& r, const std::string& at) {
  if (j.is_null()) return;
  const std::string t = type_of(j);
  if (t == "NFC") {
    r.nfc = true;
  } else if (t == "Sequence" && j.contains("normalizers") && j["normalizers"].is_array()) {
    for (const json& n : j["normalizers"]) parse_normalizer(n, r, at);
  } else {
    fail("{}: normalizer \"{}\" is not supported (qkv has NFC)", at, t.empty() ? j.dump() : t);
  }
}

PreTokenizerStep regex_step(const std::string& pattern) {
  PreTokenizerStep s;
  s.pattern = pattern;
  if (pattern == gpt2_pattern()) s.regex = std::shared_ptr<const Pretokenizer>(&gpt2_pretokenizer(), [](const Pretokenizer*) {});
  else s.regex = std::make_shared<Pretokenizer>(pattern);
  return s;
}

void parse_pre_tokenizer(const json& j, TokenizerRules& r, const std::string& at) {
  if (j.is_null()) return;
  const std::string t = type_of(j);
  const auto flag = [&](const char* k, bool fallback) {
    if (!j.contains(k) || j[k].is_null()) return fallback;
    QKV_CHECK(j[k].is_boolean(), "{}: pre_tokenizer {}: \"{}\" must be true or false", at, t, k);
    return j[k].get<bool>();
  };
  if (t == "Sequence" && j.contains("pretokenizers") && j["pretokenizers"].is_array()) {
    for (const json& p : j["pretokenizers"]) parse_pre_tokenizer(p, r, at);
  } else if (t == "ByteLevel") {
    QKV_CHECK(!flag("add_prefix_space", false),
              "{}: pre_tokenizer ByteLevel with add_prefix_space = true is not supported", at);
    if (flag("use_regex", true)) r.steps.push_back(regex_step(gpt2_pattern()));
  } else if (t == "Split") {
    QKV_CHECK(j.contains("pattern") && j["pattern"].is_object() && j["pattern"].contains("Regex") &&
                  j["pattern"]["Regex"].is_string(),
              "{}: pre_tokenizer Split: only a {{\"Regex\": ...}} pattern is supported, got {}", at,
              j.value("pattern", json()).dump());
    QKV_CHECK(j.value("behavior", std::string()) == "Isolated",
              "{}: pre_tokenizer Split: behavior \"{}\" is not supported (qkv has Isolated)", at,
              j.value("behavior", std::string()));
    QKV_CHECK(!flag("invert", false), "{}: pre_tokenizer Split with invert = true is not supported", at);
    try {
      r.steps.push_back(regex_step(j["pattern"]["Regex"].get<std::string>()));
    } catch (const Error& e) {
      fail("{}: pre_tokenizer Split: {}", at, e.what());
    }
  } else if (t == "Digits") {
    PreTokenizerStep s = regex_step(flag("individual_digits", false) ? "\\p{N}|[^\\p{N}]+" : "\\p{N}+|[^\\p{N}]+");
    s.kind = PreTokenizerStep::Kind::Digits;
    s.individual_digits = flag("individual_digits", false);
    r.steps.push_back(std::move(s));
  } else {
    fail("{}: pre_tokenizer \"{}\" is not supported (qkv has ByteLevel, Split with a regex, Digits and Sequence; "
         "SentencePiece's Metaspace is not byte-level BPE)", at, t.empty() ? j.dump() : t);
  }
}

void parse_post_processor(const json& j, TokenizerRules& r, const std::string& at, const BpeTokenizer& t) {
  if (j.is_null()) return;
  const std::string type = type_of(j);
  if (type == "ByteLevel") return;
  if (type == "Sequence" && j.contains("processors") && j["processors"].is_array()) {
    for (const json& p : j["processors"]) parse_post_processor(p, r, at, t);
    return;
  }
  QKV_CHECK(type == "TemplateProcessing", "{}: post_processor \"{}\" is not supported (qkv has TemplateProcessing "
            "and ByteLevel)", at, type.empty() ? j.dump() : type);
  QKV_CHECK(j.contains("single") && j["single"].is_array(), "{}: post_processor TemplateProcessing has no \"single\"", at);
  const json specials = j.value("special_tokens", json::object());
  bool after = false;
  for (const json& item : j["single"]) {
    if (item.contains("Sequence")) {
      QKV_CHECK(!after, "{}: post_processor: \"single\" holds the sequence twice", at);
      after = true;
      continue;
    }
    QKV_CHECK(item.contains("SpecialToken") && item["SpecialToken"].contains("id"),
              "{}: post_processor: unexpected item {} in \"single\"", at, item.dump());
    const std::string name = item["SpecialToken"]["id"].get<std::string>();
    std::vector<BpeTokenizer::Id> ids;
    if (specials.contains(name) && specials[name].contains("ids"))
      for (const json& id : specials[name]["ids"]) ids.push_back(id.get<BpeTokenizer::Id>());
    else if (t.special(name) >= 0) ids.push_back(t.special(name));
    QKV_CHECK(!ids.empty(), "{}: post_processor: special token \"{}\" has no id", at, name);
    for (auto id : ids) {
      QKV_CHECK(id >= 0 && id < t.vocab_size(), "{}: post_processor: id {} of \"{}\" is not in the vocabulary", at, id, name);
      (after ? r.suffix : r.prefix).push_back(id);
    }
  }
}

void check_decoder(const json& j, const std::string& at) {
  if (j.is_null()) return;
  const std::string t = type_of(j);
  if (t == "ByteLevel") return;
  if (t == "Sequence" && j.contains("decoders") && j["decoders"].is_array()) {
    for (const json& d : j["decoders"]) check_decoder(d, at);
    return;
  }
  fail("{}: decoder \"{}\" is not supported (qkv decodes byte-level BPE)", at, t.empty() ? j.dump() : t);
}

// The merges as merges.txt: "a b" strings or [a, b] pairs.
std::string merges_text(const json& merges, const std::string& at) {
  QKV_CHECK(merges.is_array(), "{}: model.merges must be an array", at);
  std::string out;
  std::size_t i = 0;
  for (const json& m : merges) {
    ++i;
    if (m.is_string()) {
      out += m.get<std::string>();
    } else {
      QKV_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                "{}: model.merges[{}] must be \"a b\" or [\"a\", \"b\"], got {}", at, i - 1, m.dump());
      const std::string a = m[0].get<std::string>(), b = m[1].get<std::string>();
      QKV_CHECK(a.find(' ') == std::string::npos && b.find(' ') == std::string::npos,
                "{}: model.merges[{}] holds a space inside a token, which byte-level BPE never has", at, i - 1);
      out += a + ' ' + b;
    }
    out += '\n';
  }
  return out;
}

// True when the rules are GPT-2's own (ByteLevel's regex, nothing else, specials only): such a tokenizer is the
// plain BpeTokenizer (the same hash as its vocab.json + merges.txt).
bool plain_gpt2(const TokenizerRules& r) {
  for (const auto& [content, id, special] : r.added)
    if (!special) return false;
  return !r.nfc && !r.ignore_merges && r.prefix.empty() && r.suffix.empty() && r.steps.size() == 1 &&
         r.steps[0].pattern == gpt2_pattern();
}

}  // namespace

BpeTokenizer BpeTokenizer::from_tokenizer_json(const std::string& text, const std::string& name) {
  const json j = json::parse(text, nullptr, false);
  QKV_CHECK(!j.is_discarded() && j.is_object() && j.contains("model") && j["model"].is_object(),
            "tokenizer: {}: not a tokenizer.json (a JSON object with a \"model\")", name);
  const json& m = j["model"];
  const std::string type = m.contains("type") ? type_of(m) : "BPE";
  QKV_CHECK(type == "BPE", "tokenizer: {}: model type \"{}\" is not supported (qkv reads byte-level BPE; "
            "SentencePiece's Unigram and WordPiece are other algorithms)", name, type);
  QKV_CHECK(!m.value("byte_fallback", false), "tokenizer: {}: model.byte_fallback = true (SentencePiece-style BPE) is "
            "not supported: qkv reads byte-level BPE", name);
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    QKV_CHECK(!m.contains(k) || m[k].is_null() || m[k] == "", "tokenizer: {}: model.{} = {} is not supported", name, k,
              m.contains(k) ? m[k].dump() : "");
  QKV_CHECK(!m.contains("dropout") || m["dropout"].is_null() || m["dropout"] == 0,
            "tokenizer: {}: model.dropout = {} is not supported (BPE-dropout is for training)", name,
            m.contains("dropout") ? m["dropout"].dump() : "");
  QKV_CHECK(m.contains("vocab") && m["vocab"].is_object(), "tokenizer: {}: model.vocab must be an object", name);
  auto rules = std::make_shared<TokenizerRules>();
  rules->ignore_merges = m.value("ignore_merges", false);
  // The vocabulary with the added tokens (tokenizers lists them apart when they are not in model.vocab).
  json vocab = m["vocab"];
  std::vector<std::string> declared;
  const json added = j.value("added_tokens", json::array());
  QKV_CHECK(added.is_array(), "tokenizer: {}: added_tokens must be an array", name);
  for (const json& a : added) {
    QKV_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") &&
                  a["content"].is_string(),
              "tokenizer: {}: an added token needs an integer \"id\" and a string \"content\", got {}", name, a.dump());
    for (const char* k : {"lstrip", "rstrip", "single_word"})
      QKV_CHECK(!a.value(k, false), "tokenizer: {}: added token {} has {} = true, which qkv does not support", name,
                a["content"].dump(), k);
    const std::string content = a["content"].get<std::string>();
    QKV_CHECK(!content.empty(), "tokenizer: {}: an added token is empty", name);
    const auto id = a["id"].get<std::int64_t>();
    QKV_CHECK(!vocab.contains(content) || vocab[content] == id, "tokenizer: {}: added token {} has id {} but "
              "model.vocab gives it {}", name, a["content"].dump(), id, vocab.contains(content) ? vocab[content].dump() : "");
    vocab[content] = id;
    declared.push_back(content);
    rules->added.emplace_back(content, static_cast<Id>(id), a.value("special", false));
  }
  BpeTokenizer t = parse(vocab.dump(), merges_text(m.value("merges", json::array()), "tokenizer: " + name),
                         name + " (model.vocab)", name + " (model.merges)", declared, /*orphans_ok=*/true);
  const std::string at = "tokenizer: " + name;
  parse_normalizer(j.value("normalizer", json()), *rules, at);
  parse_pre_tokenizer(j.value("pre_tokenizer", json()), *rules, at);
  parse_post_processor(j.value("post_processor", json()), *rules, at, t);
  check_decoder(j.value("decoder", json()), at);
  if (plain_gpt2(*rules)) return t;
  ojson original;
  for (const char* k : {"added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder"})
    original[k] = j.value(k, json());
  rules->original = original.dump();
  rules->digest = rules->original + (rules->ignore_merges ? " ignore_merges" : "") + " nfc " + nfc_unicode_version();
  if (rules->ignore_merges)
    for (std::size_t id = 0; id < t.bytes_.size(); ++id) rules->whole.emplace(t.bytes_[id], static_cast<Id>(id));
  t.rules_ = std::move(rules);
  return t;
}

void BpeTokenizer::encode_with_rules(std::string_view text, std::vector<Id>& out, bool allow_special) const {
  const TokenizerRules& r = *rules_;
  std::string normalized;
  const auto piece = [&](std::string_view p) {
    if (r.ignore_merges)
      if (const auto it = r.whole.find(std::string(p)); it != r.whole.end()) return out.push_back(it->second);
    encode_piece(p, out);
  };
  std::function<void(std::size_t, std::string_view)> split = [&](std::size_t step, std::string_view s) {
    if (step == r.steps.size()) return piece(s);
    r.steps[step].regex->split(s, [&](std::string_view p) { split(step + 1, p); });
  };
  const auto stretch = [&](std::string_view s) {
    if (s.empty()) return;
    if (r.nfc) {
      normalized = nfc(s);
      s = normalized;
    }
    split(0, s);
  };
  std::size_t at = 0;
  for (;;) {
    // The next added token: the earliest, the longest among those starting there (tokenizers' leftmost-longest).
    std::size_t pos = std::string_view::npos, len = 0;
    Id id = -1;
    for (const auto& [content, aid, special] : r.added) {
      if (special && !allow_special) continue;
      const auto found = text.find(content, at);
      if (found < pos || (found == pos && found != std::string_view::npos && content.size() > len))
        pos = found, len = content.size(), id = aid;
    }
    if (pos == std::string_view::npos) break;
    stretch(text.substr(at, pos - at));
    out.push_back(id);
    at = pos + len;
  }
  stretch(text.substr(at));
}

BpeTokenizer::Id BpeTokenizer::document_separator() const {
  if (eot() >= 0) return eot();
  return rules_ && !rules_->prefix.empty() ? rules_->prefix.front() : -1;
}

std::vector<BpeTokenizer::Id> BpeTokenizer::with_template(std::vector<Id> ids) const {
  if (!rules_ || (rules_->prefix.empty() && rules_->suffix.empty())) return ids;
  std::vector<Id> out = rules_->prefix;
  out.insert(out.end(), ids.begin(), ids.end());
  out.insert(out.end(), rules_->suffix.begin(), rules_->suffix.end());
  return out;
}

std::string BpeTokenizer::tokenizer_json() const {
  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  const ojson byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  if (rules_) {
    const ojson original = ojson::parse(rules_->original);
    for (const auto& [k, v] : original.items()) j[k] = v;
  } else {
    ojson added = ojson::array();
    for (const auto& [name, id] : specials_)
      added.push_back({{"id", id}, {"content", name}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                       {"normalized", false}, {"special", true}});
    j["added_tokens"] = added;
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = byte_level;
    j["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
    j["decoder"] = byte_level;
  }
  const auto symbols = [&](Id id) {
    std::string out;
    for (unsigned char b : bytes_[static_cast<std::size_t>(id)]) out += byte_symbol(b);
    return out;
  };
  ojson merges = ojson::array();
  for (const auto& [l, r] : merges_) merges.push_back({symbols(l), symbols(r)});
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                {"ignore_merges", rules_ && rules_->ignore_merges}, {"vocab", "@vocab@"}, {"merges", merges}};
  // The vocabulary spliced in as vocab_json() writes it: an ordered_json object of 50k keys inserts in O(n^2).
  std::string text = j.dump(1);
  const std::string mark = "\"@vocab@\"";
  text.replace(text.find(mark), mark.size(), vocab_json());
  return text + "\n";
}

BpeTokenizer load_tokenizer(const std::string& dir) {
  const fs::path file = fs::path(dir) / "tokenizer.json";
  if (dir != "gpt2" && fs::is_regular_file(file))
    return BpeTokenizer::from_tokenizer_json(read_file_bytes(file.string(), "tokenizer", 512ull << 20), file.string());
  return BpeTokenizer::load(dir);
}

}  // namespace qkv
