// libFuzzer target for tokenizer files: the input is a vocab.json, a line "---", then a merges.txt. Any bytes
// must load a tokenizer or throw qkv::Error; one that loads encodes and decodes text back to the same bytes.
#include <qkv/core/errors.h>
#include <qkv/datasets/bpe.h>

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const auto cut = input.find("\n---\n");
  const std::string vocab = input.substr(0, cut), merges = cut == std::string::npos ? "" : input.substr(cut + 5);
  try {
    const auto tok = qkv::BpeTokenizer::parse(vocab, merges, "vocab.json", "merges.txt");
    const std::string text = "Hello world, it's 2026: 日本語 \xF0\x9F\x98\x80 <|endoftext|>\n\n  x";
    if (tok.decode(tok.encode(text)) != text || tok.decode(tok.encode(text, true)) != text) __builtin_trap();
  } catch (const qkv::Error&) {
  }
  return 0;
}
