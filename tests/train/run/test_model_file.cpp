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

TEST_CASE("every ModelConfig field round-trips through a model file's metadata") {
  const ModelConfig m{.kind = "transformer", .vocab_size = 19, .seq_len = 33, .d_model = 24, .d_k = 5, .d_v = 7,
                      .heads = 3, .layers = 4, .d_ff = 40, .causal = true, .attn_bias = true, .dropout = 0.25,
                      .bias = false, .tie_embeddings = false, .norm_eps = 1e-6, .recompute = true};
  for (const ModelField& f : model_fields())  // each field differs from its default, so a dropped one shows
    std::visit([&](auto member) { CHECK_MESSAGE(m.*member != ModelConfig{}.*member, f.name); }, f.member);
  const Config c;
  const auto data = make_dataset(c.data, 0);
  const auto meta = model_metadata(m, c, *data);
  CHECK(model_config_from_json(meta.at("qkv.model")) == m);
}
