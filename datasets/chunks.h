#pragma once
// The one way qkv reads text of any length (qkv tokenize, qkv tokenizer encode and train): a stream in chunks of
// about a block, each cut where pre-tokenizing it alone gives the pieces the whole text would (safe_cut), never
// inside a document separator or a special token, so encoding chunk by chunk gives the ids of the whole.
#include <cstddef>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

namespace qkv {

struct ChunkOptions {
  std::string separator;                ///< documents end here (dropped from the text); "" = one document
  std::vector<std::string> keep_whole;  ///< never cut inside these (special tokens read from the text)
  std::size_t block = 1 << 20;          ///< bytes read at a time, and the size a chunk aims at
  /// With no safe place to cut for this many bytes (one 64 MB "word"), a chunk is cut where the bytes end (at a
  /// whole character): memory stays bounded, and only such a piece encodes differently from the whole text.
  std::size_t max_carry = 64 << 20;
  /// Cut only where line_cut allows (a tokenizer.json tokenizer's rules), not safe_cut's GPT-2 places.
  bool line_cuts_only = false;
};

class TextChunks {
 public:
  struct Chunk {
    std::string_view text;    ///< valid until the next call of next()
    std::size_t offset = 0;   ///< of its first byte in the stream, for errors
    bool doc_start = false;   ///< the first chunk of a document (the stream's start, or after a separator)
  };
  /// `where` names the stream in errors (invalid UTF-8 is reported at its byte offset).
  TextChunks(std::istream& in, std::string where, ChunkOptions options = {});
  /// The next non-empty chunk; false at the end. Empty documents give none.
  bool next(Chunk& chunk);

 private:
  bool read_block();
  std::size_t cut_point() const;
  std::istream& in_;
  std::string where_;
  ChunkOptions o_;
  std::string buf_;           // buf_[head_:] is the text not yet handed out
  std::size_t head_ = 0, searched_ = 0;
  std::size_t offset_ = 0;    // of buf_[head_] in the stream
  bool eof_ = false, doc_start_ = true;
};

}  // namespace qkv
