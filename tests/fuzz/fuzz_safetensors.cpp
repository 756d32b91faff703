// libFuzzer target for the safetensors reader: any bytes must parse or throw qkv::Error, never crash, read past
// the buffer or allocate what a header merely claims. Run: make fuzz (60 s, as CI does).
#include <qkv/layers/save.h>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto f = qkv::parse_safetensors({reinterpret_cast<const std::byte*>(data), size}, "fuzz");
    for (const auto& [name, t] : f.tensors) (void)t.to_vector();  // touch every value read
  } catch (const qkv::Error&) {
  }
  return 0;
}
