// Encoding a stream of any length in chunks (qkv tokenizer encode).
#include "qkv/datasets/bpe.h"

#include "qkv/datasets/chunks.h"

#include <istream>

namespace qkv {

void encode_stream(std::istream& in, const BpeTokenizer& tok, bool allow_special, const std::string& where,
                   const std::function<void(const std::vector<BpeTokenizer::Id>&)>& emit) {
  ChunkOptions options;
  options.line_cuts_only = tok.rules() != nullptr;
  if (allow_special)
    for (const auto& [special, id] : tok.specials()) options.keep_whole.push_back(special);
  TextChunks chunks(in, where, options);
  std::vector<BpeTokenizer::Id> ids;
  for (TextChunks::Chunk c; chunks.next(c);) {
    ids.clear();
    tok.encode(c.text, ids, allow_special, where, c.offset);
    emit(ids);
  }
}

}  // namespace qkv
