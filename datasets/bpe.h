#pragma once
// Byte-level BPE exactly as GPT-2 defines it (docs/tokens.md#the-tokenizer): text is UTF-8 bytes; GPT-2's pre-tokenizer
// cuts it into pieces; inside each piece, starting from one token per byte, the adjacent pair with the lowest
// merge rank is merged until no pair has a rank. A vocabulary is 256 byte tokens, one token per merge and any
// special tokens (such as "<|endoftext|>"), which only callers that allow them get from text.
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qkv {

/// What a Hugging Face tokenizer.json adds to GPT-2's byte-level BPE: its normalizer, pre-tokenizer steps,
/// ignore_merges, added tokens and post-processor template (datasets/tokenizer_json.h).
struct TokenizerRules;

class BpeTokenizer {
 public:
  using Id = std::int32_t;
  BpeTokenizer() = default;
  /// A tokenizer folder holding vocab.json + merges.txt (Hugging Face's names) or encoder.json + vocab.bpe
  /// (OpenAI's names for the same files), and optionally added_tokens.json (special tokens beyond <|endoftext|>),
  /// or "gpt2" for GPT-2's own (gpt2_directory()). Throws qkv::Error naming
  /// the file and line at fault: a merge naming an unknown token, ids that are not 0..N-1, a missing byte.
  static BpeTokenizer load(const std::string& dir_or_name);
  /// From the two files' contents; `vocab_name` and `merges_name` are used in errors. Special tokens are
  /// "<|endoftext|>" and those `declared` (a folder's added_tokens.json); any other token that is neither a byte
  /// nor made by a merge is an error (merges cut short).
  static BpeTokenizer parse(const std::string& vocab_json, const std::string& merges, const std::string& vocab_name,
                            const std::string& merges_name, const std::vector<std::string>& declared = {},
                            bool orphans_ok = false);
  /// Hugging Face tokenizers' tokenizer.json (byte-level BPE; datasets/tokenizer_json.cpp): what it cannot
  /// represent (a Unigram or WordPiece model, byte_fallback, a Metaspace pre-tokenizer, ...) is refused by name.
  static BpeTokenizer from_tokenizer_json(const std::string& text, const std::string& name);
  /// This tokenizer as tokenizer.json (one read from a tokenizer.json keeps its rules; GPT-2's gets ByteLevel).
  std::string tokenizer_json() const;
  /// The post-processor's template around one sequence (tokenizer.json's TemplateProcessing: Llama 3 prepends
  /// <|begin_of_text|>): ids with its tokens added; unchanged without one.
  std::vector<Id> with_template(std::vector<Id> ids) const;
  /// The tokenizer.json rules, or null for a GPT-2-style tokenizer.
  const TokenizerRules* rules() const { return rules_.get(); }
  /// From merges in rank order (each a pair of ids) over the 256 byte tokens (id b = byte b), and special
  /// tokens after them: what `qkv tokenizer train` makes.
  static BpeTokenizer from_merges(const std::vector<std::pair<Id, Id>>& merges, const std::vector<std::string>& specials);

  /// Appends the ids of `text` to `out`. Special tokens are matched only when `allow_special`; otherwise
  /// "<|endoftext|>" is encoded as the characters it is made of. Invalid UTF-8 throws naming `where` and the
  /// byte offset (plus `base`, the text's offset in its file).
  void encode(std::string_view text, std::vector<Id>& out, bool allow_special = false, std::string_view where = "text",
              std::size_t base = 0) const;
  std::vector<Id> encode(std::string_view text, bool allow_special = false) const;
  /// The bytes of `ids`, concatenated (a special token gives its name); an id out of range throws.
  std::string decode(std::span<const Id> ids) const;
  /// One token's bytes.
  const std::string& token_bytes(Id id) const;
  std::int64_t vocab_size() const { return static_cast<std::int64_t>(bytes_.size()); }
  std::int64_t merge_count() const { return static_cast<std::int64_t>(merges_.size()); }
  /// The id of a special token, or -1.
  Id special(std::string_view name) const;
  /// The special tokens' names and ids.
  const std::map<std::string, Id, std::less<>>& specials() const { return specials_; }
  /// The special tokens but "<|endoftext|>" (what added_tokens.json and qkv.tokenizer.specials list).
  std::vector<std::string> declared_specials() const;
  /// "<|endoftext|>"'s id, or -1.
  Id eot() const { return special("<|endoftext|>"); }
  /// What `qkv tokenize` puts before each document: <|endoftext|> (GPT-2's), else the template's first token
  /// (tokenizer.json's beginning of sequence, as Llama 3's <|begin_of_text|>); -1 when there is neither.
  Id document_separator() const;

  /// The files in Hugging Face's spelling, written the same way for the same tokenizer (ids in order).
  std::string vocab_json() const;
  std::string merges_txt() const;
  /// A hash of the pre-tokenizer's Unicode version, the vocabulary and merges (16 hex digits): the same for both
  /// spellings of the same tokenizer.
  std::string hash() const;
  /// Writes vocab.json and merges.txt into `dir` (created), each atomically.
  void save(const std::string& dir) const;

 private:
  void build_tables();
  void parse_merges(const std::string& merges, const std::unordered_map<std::string, Id>& id_of, std::vector<bool>& made,
                    const std::string& vocab_name, const std::string& merges_name);
  void encode_piece(std::string_view piece, std::vector<Id>& out) const;
  void encode_ordinary(std::string_view text, std::vector<Id>& out) const;
  void encode_with_rules(std::string_view text, std::vector<Id>& out, bool allow_special) const;

  std::vector<std::string> bytes_;            ///< id -> bytes
  std::vector<std::pair<Id, Id>> merges_;     ///< rank -> the pair it merges
  std::vector<Id> merged_;                    ///< rank -> the id it makes
  std::map<std::string, Id, std::less<>> specials_;
  Id byte_id_[256] = {};
  std::unordered_map<std::uint64_t, std::uint64_t> rank_of_;  ///< (left << 32 | right) -> (rank << 32 | merged id)
  std::uint64_t uid_ = 0;                     ///< tells one tokenizer's word cache from another's
  std::shared_ptr<const TokenizerRules> rules_;  ///< tokenizer.json's, or null
};

/// Encodes a stream of any length a chunk at a time, cut where encoding the parts apart gives the ids of the
/// whole (safe_cut, never inside a special token); emit(ids) gets each chunk's ids. Invalid UTF-8 throws naming
/// `where` and the byte offset in the stream.
void encode_stream(std::istream& in, const BpeTokenizer& tokenizer, bool allow_special, const std::string& where,
                   const std::function<void(const std::vector<BpeTokenizer::Id>&)>& emit);

/// Where GPT-2's vocabulary files are: $QKV_GPT2_DIR, else the installed copy, else the source tree's.
std::string gpt2_directory();

/// GPT-2's map from bytes to printable characters (the vocabulary files' alphabet): byte b -> the UTF-8 of the
/// character that stands for it.
const std::string& byte_symbol(unsigned char b);

}  // namespace qkv
