// libFuzzer target for a GPT-2 checkpoint's config.json (train/io/gpt2_files.h): any bytes beside a small Hugging
// Face GPT-2's model.safetensors must read as that model or throw qkv::Error, and what is accepted must match the
// tensors (never a model built larger than the file).
#include <qkv/train/io/gpt2_files.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace {

std::string folder() {
  static const std::string dir = [] {
    const auto d = std::filesystem::temp_directory_path() / ("qkv_fuzz_gpt2_" + std::to_string(::getpid()));
    qkv::Generator g(0);
    const auto model = qkv::build_model(
        {.kind = "gpt2", .vocab_size = 7, .seq_len = 6, .d_model = 8, .heads = 2, .layers = 2, .causal = true}, g);
    qkv::write_hf_gpt2(*model, nullptr, d.string());
    return d.string();
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string dir = folder();
  std::ofstream(dir + "/config.json", std::ios::binary).write(reinterpret_cast<const char*>(data), std::streamsize(size));
  try {
    const qkv::GPT2Checkpoint ck = qkv::read_gpt2_checkpoint(dir);
    if (ck.config.d_model != 8 || ck.config.layers != 2 || ck.config.vocab_size != 7 || ck.config.seq_len != 6)
      __builtin_trap();
  } catch (const qkv::Error&) {
  }
  return 0;
}
