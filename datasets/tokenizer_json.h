#pragma once
// Hugging Face tokenizers' tokenizer.json for byte-level BPE, as today's small models ship it (SmolLM2, Qwen2.5,
// Llama 3): what it adds to GPT-2's BPE (datasets/bpe.h), read by BpeTokenizer::from_tokenizer_json and written
// back by tokenizer_json(). Encoding follows tokenizers' order: added tokens are cut out of the raw text (the
// earliest, the longest there), each other stretch is normalized (NFC), split by the pre-tokenizer steps in
// order, and each piece is one token when ignore_merges and the vocabulary holds it, else BPE.
#include <qkv/datasets/bpe.h>
#include <qkv/datasets/pretokenize.h>

#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace qkv {

/// One pre-tokenizer step of a tokenizer.json Sequence.
struct PreTokenizerStep {
  enum class Kind { Regex, Digits };  ///< Split (Isolated) / ByteLevel with its regex; Digits
  Kind kind = Kind::Regex;
  std::string pattern;                        ///< Regex
  std::shared_ptr<const Pretokenizer> regex;  ///< Regex: the compiled pattern (GPT-2's runs as its scan)
  bool individual_digits = false;             ///< Digits: each digit alone, else runs of digits
};

struct TokenizerRules {
  bool nfc = false;  ///< the "NFC" normalizer
  std::vector<PreTokenizerStep> steps;
  bool ignore_merges = false;  ///< a piece the vocabulary holds whole is that token (Llama 3)
  /// Added tokens, matched in the raw text: (content, id, special). Special ones only when the caller allows.
  std::vector<std::tuple<std::string, BpeTokenizer::Id, bool>> added;
  std::vector<BpeTokenizer::Id> prefix, suffix;  ///< TemplateProcessing's single sequence around $A
  std::string original;  ///< the file's normalizer, pre_tokenizer, post_processor, decoder and added_tokens, as JSON
  std::string digest;    ///< what the tokenizer hash adds for these rules
  std::unordered_map<std::string, BpeTokenizer::Id> whole;  ///< ignore_merges: token bytes -> id
};

/// A folder's tokenizer: tokenizer.json when it is there, else vocab.json + merges.txt (BpeTokenizer::load).
BpeTokenizer load_tokenizer(const std::string& dir);

}  // namespace qkv
