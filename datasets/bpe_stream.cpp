// Encoding a stream of any length in chunks (qkv tokenizer encode).
#include "qkv/datasets/bpe.h"

#include "qkv/datasets/pretokenize.h"
#include "qkv/datasets/utf8.h"

#include <istream>

namespace qkv {

void encode_stream(std::istream& in, const BpeTokenizer& tok, bool allow_special, const std::string& where,
                   const std::function<void(const std::vector<BpeTokenizer::Id>&)>& emit) {
  constexpr std::size_t kBlock = 1 << 20, kMaxCarry = 64 << 20;
  std::string carry;
  std::size_t offset = 0;  // of carry's first byte in the stream
  std::vector<BpeTokenizer::Id> ids;
  auto flush = [&](std::size_t n) {
    ids.clear();
    tok.encode(std::string_view(carry).substr(0, n), ids, allow_special, where, offset);
    emit(ids);
    carry.erase(0, n);
    offset += n;
  };
  for (;;) {
    std::string block(kBlock, '\0');
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    block.resize(static_cast<std::size_t>(in.gcount()));
    carry += block;
    if (block.empty() || in.eof()) break;
    if (carry.size() < kBlock) continue;
    const std::string_view head(carry);
    check_utf8(head.substr(0, complete_utf8_prefix(head)), where, offset);
    auto cut = safe_cut(head);
    if (cut == 0 && carry.size() > kMaxCarry) cut = complete_utf8_prefix(head);
    // A special token across the cut moves it to the token's start.
    for (const auto& [special, id] : tok.specials()) {
      for (std::size_t from = cut > special.size() ? cut - special.size() : 0; allow_special;) {
        const auto at = head.find(special, from);
        if (at == std::string_view::npos || at >= cut) break;
        if (at + special.size() > cut) cut = at;
        from = at + 1;
      }
    }
    if (cut > 0) flush(cut);
  }
  if (!carry.empty()) flush(carry.size());
}

}  // namespace qkv
