#include <qkv/datasets/nfc.h>
#include <qkv/datasets/tokenizer_json.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "../support.h"

using namespace qkv;
using json = nlohmann::json;

namespace {

const json& cases() { return test::fixture("tokenizer_json"); }

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The tokenizer.json tools/tokenizer_json_fixtures.js builds: GPT-2's vocabulary and merges under the case's rules.
json tokenizer_json(const json& c) {
  const std::string dir = std::string(QKV_FIXTURES_DIR) + "/gpt2/";
  json vocab = json::parse(read(dir + "encoder.json"));
  for (const json& a : c["added_tokens"]) vocab[a["content"].get<std::string>()] = a["id"];
  json merges = json::array();
  std::istringstream lines(read(dir + "vocab.bpe"));
  std::string line;
  std::getline(lines, line);  // #version
  while (std::getline(lines, line))
    if (!line.empty()) {
      if (c["merges"] == "pairs") merges.push_back({line.substr(0, line.find(' ')), line.substr(line.find(' ') + 1)});
      else merges.push_back(line);
    }
  return {{"version", "1.0"}, {"added_tokens", c["added_tokens"]}, {"normalizer", c["normalizer"]},
          {"pre_tokenizer", c["pre_tokenizer"]}, {"post_processor", c["post_processor"]}, {"decoder", c["decoder"]},
          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"byte_fallback", false},
                     {"ignore_merges", c["ignore_merges"]}, {"vocab", vocab}, {"merges", merges}}}};
}

}  // namespace

TEST_CASE("tokenizer.json: ids equal Hugging Face tokenizers' on 318 texts (Llama 3's, Qwen2's and SmolLM2's rules)") {
  const auto& texts = cases()["texts"];
  for (const auto& item : cases()["cases"].items()) {  // (no structured binding: clang 14 cannot capture one)
    const std::string name = item.key();
    const json& c = item.value();
    INFO(name);
    const BpeTokenizer tok = BpeTokenizer::from_tokenizer_json(tokenizer_json(c).dump(), name);
    REQUIRE(tok.rules() != nullptr);
    const auto& want = cases()["ids"][name];
    int wrong = 0;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      const std::string text = texts[i].get<std::string>();
      const auto ids = tok.with_template(tok.encode(text, /*allow_special=*/true));
      const auto expected = want[i].get<std::vector<BpeTokenizer::Id>>();
      if (ids != expected && ++wrong <= 3) CHECK_MESSAGE(ids == expected, "text " << i << ": " << json(text).dump());
      // decoding gives the text back (NFC'd for Qwen2's, the template's BOS before it)
      if (name == "smollm2") CHECK(tok.decode(ids) == text);
    }
    CHECK(wrong == 0);
    // written and read back: the same rules, ids and hash
    const BpeTokenizer back = BpeTokenizer::from_tokenizer_json(tok.tokenizer_json(), name + " (written)");
    CHECK(back.hash() == tok.hash());
    CHECK(back.encode(texts[12].get<std::string>(), true) == tok.encode(texts[12].get<std::string>(), true));
  }
}

TEST_CASE("tokenizer.json: GPT-2's own rules read as the plain tokenizer, and qkv's tokenizers write one") {
  const BpeTokenizer gpt2 = BpeTokenizer::load("gpt2");
  CHECK(gpt2.rules() == nullptr);
  const BpeTokenizer back = BpeTokenizer::from_tokenizer_json(gpt2.tokenizer_json(), "written");
  CHECK(back.rules() == nullptr);  // ByteLevel with its regex and <|endoftext|>: GPT-2's BPE
  CHECK(back.hash() == gpt2.hash());
  CHECK(back.encode("Hello world<|endoftext|>", true) == gpt2.encode("Hello world<|endoftext|>", true));
  const json j = json::parse(gpt2.tokenizer_json());
  CHECK(j["pre_tokenizer"]["type"] == "ByteLevel");
  CHECK(j["model"]["merges"].size() == 50000);
  CHECK(j["added_tokens"][0]["content"] == "<|endoftext|>");
}

TEST_CASE("NFC: canonical composition, reordering, Hangul, exclusions") {
  CHECK(nfc("Cafe\xcc\x81") == "Caf\xc3\xa9");                               // e + acute -> é
  CHECK(nfc("\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8") == "\xea\xb0\x81");      // ᄀ ᅡ ᆨ -> 각
  CHECK(nfc("\xe2\x84\xab") == "\xc3\x85");                                  // Angstrom sign -> Å (singleton)
  CHECK(nfc("a\xcc\xa3\xcc\x87") == "\xe1\xba\xa1\xcc\x87");                 // a + dot below + dot above: ạ̇
  CHECK(nfc("a\xcc\x87\xcc\xa3") == "\xe1\xba\xa1\xcc\x87");                 // the marks reordered first
  CHECK(nfc("\xe0\xa4\x95\xe0\xa4\xbc") == "\xe0\xa4\x95\xe0\xa4\xbc");      // क + nukta: excluded from composition
  CHECK(nfc("plain ASCII") == "plain ASCII");
  CHECK(std::string(nfc_unicode_version()) == "15.0.0");
}

TEST_CASE("tokenizer.json: what byte-level BPE cannot represent is refused by name") {
  const json base = tokenizer_json(cases()["cases"]["qwen2"]);
  const auto refused = [&](const std::function<void(json&)>& edit, const std::string& what) {
    json j = base;
    edit(j);
    CHECK_ERROR(BpeTokenizer::from_tokenizer_json(j.dump(), "t.json"), what);
  };
  refused([](json& j) { j["model"]["type"] = "Unigram"; }, "t.json: model type \"Unigram\" is not supported");
  refused([](json& j) { j["model"]["byte_fallback"] = true; }, "model.byte_fallback = true");
  refused([](json& j) { j["normalizer"] = {{"type", "NFKC"}}; }, "normalizer \"NFKC\" is not supported");
  refused([](json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}}; }, "pre_tokenizer \"Metaspace\" is not supported");
  refused([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }, "behavior \"Removed\" is not supported");
  refused([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", " "}}; }, "only a {\"Regex\": ...} pattern");
  refused([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; }, "pre_tokenizer Split:");
  refused([](json& j) { j["added_tokens"][0]["lstrip"] = true; }, "has lstrip = true");
  refused([](json& j) { j["decoder"] = {{"type", "ByteFallback"}}; }, "decoder \"ByteFallback\" is not supported");
  refused([](json& j) { j["model"]["merges"][3] = "Ġt zzzz"; }, "t.json (model.merges):4: \"zzzz\" is not in t.json (model.vocab)");
  refused([](json& j) { j["model"]["vocab"]["Ġthe"] = 3; }, "id 3 is given twice");
  CHECK_ERROR(BpeTokenizer::from_tokenizer_json("[1, 2]", "t.json"), "t.json: not a tokenizer.json");
}
