// libFuzzer target for a model file's "qkv.model" metadata: any JSON must give a checked ModelConfig or throw
// qkv::Error, and what it accepts must stay within the config's ranges (nothing enormous gets built from it).
#include <qkv/train/run/model_file.h>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const qkv::ModelConfig m = qkv::model_config_from_json(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    if (m.d_model > 100000 || m.layers > 10000 || m.vocab_size > 2000000) __builtin_trap();
    (void)qkv::parameter_count(m);
  } catch (const qkv::Error&) {
  }
  return 0;
}
