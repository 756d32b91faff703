#include "qkv/datasets/chunks.h"

#include "qkv/datasets/pretokenize.h"
#include "qkv/datasets/utf8.h"

#include <qkv/core/errors.h>

namespace qkv {

TextChunks::TextChunks(std::istream& in, std::string where, ChunkOptions options)
    : in_(in), where_(std::move(where)), o_(std::move(options)) {
  QKV_CHECK(o_.block > 0 && o_.max_carry >= o_.block, "TextChunks: block {} and max_carry {} (max_carry >= block > 0)",
            o_.block, o_.max_carry);
}

// Appends a block to the text, first dropping what was handed out (once per block: the text moves once, however
// many documents a block holds).
bool TextChunks::read_block() {
  if (eof_) return false;
  buf_.erase(0, head_);
  head_ = 0;
  const std::size_t had = buf_.size();
  buf_.resize(had + o_.block);
  in_.read(buf_.data() + had, static_cast<std::streamsize>(o_.block));
  buf_.resize(had + static_cast<std::size_t>(in_.gcount()));
  if (buf_.size() == had || in_.eof()) eof_ = true;
  return buf_.size() > had;
}

// Where to end a chunk in a text of a block or more, without a separator in it: the last safe cut that no special
// token straddles (0 = none; then the carry grows, up to max_carry).
std::size_t TextChunks::cut_point() const {
  const std::string_view text = std::string_view(buf_).substr(head_);
  // A separator may straddle the end: cut only where a whole one would have been seen.
  const std::string_view head = text.substr(0, text.size() - std::min(text.size(), o_.separator.size()));
  check_utf8(head.substr(0, complete_utf8_prefix(head)), where_, offset_);
  std::size_t cut = o_.line_cuts_only ? line_cut(head) : safe_cut(head);
  for (const auto& token : o_.keep_whole) {  // a token across the cut moves it to the token's start
    for (std::size_t from = cut > token.size() ? cut - token.size() : 0; cut > 0;) {
      const auto at = head.find(token, from);
      if (at == std::string_view::npos || at >= cut) break;
      if (at + token.size() > cut) cut = at;
      from = at + 1;
    }
  }
  if (cut == 0 && head.size() > o_.max_carry) cut = complete_utf8_prefix(head);
  return cut;
}

bool TextChunks::next(Chunk& chunk) {
  for (;;) {
    const std::string_view text = std::string_view(buf_).substr(head_);
    std::size_t n = std::string_view::npos, skip = 0;
    // (searched_: how far the text is known to hold no separator, so a long document is scanned once)
    const auto at = o_.separator.empty() ? std::string_view::npos : text.find(o_.separator, searched_);
    searched_ = at == std::string_view::npos ? text.size() - std::min(text.size(), o_.separator.size() - 1) : 0;
    if (at != std::string_view::npos) {
      n = at, skip = o_.separator.size();  // a document ends here
    } else if (eof_) {
      if (text.empty()) return false;
      n = text.size();
    } else if (text.size() >= o_.block) {
      if (const std::size_t cut = cut_point(); cut > 0) n = cut;
    }
    if (n == std::string_view::npos) {
      read_block();
      continue;
    }
    chunk = {text.substr(0, n), offset_, doc_start_};
    searched_ = 0;
    head_ += n + skip;
    offset_ += n + skip;
    doc_start_ = skip > 0;
    if (n > 0) return true;  // an empty document gives nothing
  }
}

}  // namespace qkv
