// libFuzzer target for the file datasets: the first byte picks text or jsonl and a sequence length, the rest is the
// file. Any input must load or throw qkv::Error (never crash, hang or throw anything else).
#include <qkv/datasets/dataset.h>
#include <qkv/core/errors.h>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static const std::string path = "/tmp/qkv_fuzz_data." + std::to_string(::getpid());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data + 1), static_cast<std::streamsize>(size - 1));
  qkv::DataOptions o;
  o.task = data[0] & 1 ? "jsonl" : "text";
  o.seq_len = 1 + (data[0] >> 1) % 8;
  o.vocab_size = 8;
  o.val_size = 4;
  o.path = path;
  try {
    auto d = qkv::make_dataset(o, 0);
    const qkv::Batch b = d->next_batch(2);
    for (double v : b.inputs.to_vector()) (void)d->decode(static_cast<std::int64_t>(v));
    (void)qkv::CharVocab(d->vocab());  // a text vocabulary must read back as it is stored in model files
  } catch (const qkv::Error&) {
  }
  return 0;
}
