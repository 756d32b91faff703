#include "run_support.h"

#include <qkv/train/io/files.h>
#include <qkv/layers/save.h>
#include <qkv/train/run/checkpoint.h>
#include <qkv/train/run/memory.h>
#include <qkv/train/run/model_file.h>
#include <qkv/train/run/run_dir.h>
#include <qkv/train/run/step.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>

using namespace qkv;
using namespace qkv::test;
namespace fs = std::filesystem;

TEST_CASE("the memory estimate refuses what cannot fit, naming the keys; shipped configs fit") {
  for (const char* name : {"reverse", "sort", "recall"}) {
    const Config c = shipped(name, {});
    CHECK(estimate_memory(c, c.data.vocab_size).total() < 1e9);
  }
  CHECK_ERROR(train(shipped("reverse", {"run.name=\"huge\"", "model.d_model=100000"}), quiet()),
              "parameters and optimizer state");
  CHECK_ERROR(train(shipped("sort", {"run.name=\"huge\"", "model.layers=10000", "model.d_model=1024"}), quiet()),
              "model.layers");
  CHECK_ERROR(train(shipped("reverse", {"run.name=\"huge\"", "train.batch_size=10000000", "data.seq_len=100000"}), quiet()),
              "train.batch_size / train.grad_accum_steps x data.seq_len");
  CHECK_ERROR(train(shipped("reverse", {"run.name=\"huge\"", "data.val_size=10000000", "data.seq_len=100000"}), quiet()),
              "data.val_size x data.seq_len");
  CHECK_FALSE(fs::exists(out_dir() + "/huge"));  // refused before the run directory was made
  // A data file counts: its bytes and the ids made from them (a 197 MB text was estimated at 1 MB).
  const fs::path box = test::scratch_dir("estimate");
  std::ofstream(box / "t.txt") << std::string(1 << 20, 'a');
  const Config text = shipped("reverse", {"data.task=\"text\"", "model.causal=true",
                                          "data.path=\"" + (box / "t.txt").string() + "\""});
  CHECK(estimate_memory(text, 1).data_bytes >= 5 * (1 << 20));
  CHECK(estimate_memory(shipped("reverse", {}), 16).data_bytes < (1 << 20));
}
