// libFuzzer target for a token shard: any file must open and read back tokens within the vocabulary, or throw
// qkv::Error naming it.
#include <qkv/core/errors.h>
#include <qkv/datasets/shards.h>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const struct Scratch {
    std::string path = "/tmp/qkv_fuzz_shard." + std::to_string(::getpid()) + ".bin";
    ~Scratch() { ::unlink(path.c_str()); }
  } scratch;
  const std::string& path = scratch.path;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                static_cast<std::streamsize>(size));
  try {
    const qkv::TokenShard shard(path, 50257);
    std::vector<std::int64_t> out(64);
    for (std::int64_t at = 0; at < shard.size(); at += 64) {
      const auto n = std::min<std::int64_t>(64, shard.size() - at);
      shard.read(at, n, out.data());
      for (std::int64_t i = 0; i < n; ++i)
        if (out[static_cast<std::size_t>(i)] < 0 || out[static_cast<std::size_t>(i)] >= 50257) __builtin_trap();
    }
  } catch (const qkv::Error&) {
  }
  return 0;
}
