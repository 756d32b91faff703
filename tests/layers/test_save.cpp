#include "../support.h"

#include <qkv/layers/models.h>
#include <qkv/layers/save.h>

#include <filesystem>

using namespace qkv;

TEST_CASE("module save and strict load by name") {
  auto m = build_model({.kind = "transformer", .vocab_size = 8, .seq_len = 4, .d_model = 8, .heads = 2, .layers = 1});
  const std::string path = test::temp_file("model.safetensors");
  save(*m, path, {{"format", "qkv"}});
  auto n = build_model({.kind = "transformer", .vocab_size = 8, .seq_len = 4, .d_model = 8, .heads = 2, .layers = 1});
  load(*n, path);
  for (std::size_t i = 0; i < m->parameters().size(); ++i)
    CHECK(m->parameters()[i].to_vector() == n->parameters()[i].to_vector());
  // A different model: every problem in one error, by name.
  auto other = build_model({.kind = "transformer", .vocab_size = 9, .seq_len = 4, .d_model = 8, .heads = 2, .layers = 2});
  const std::string msg = test::error_of([&] { load(*other, path); });
  CHECK(msg.find("missing keys: blocks.1.ln1.weight") != std::string::npos);
  CHECK(msg.find("shape mismatches: tok_emb.weight (file [8, 8], model [9, 8])") != std::string::npos);
  CHECK(msg.find("head.weight (file [8, 8], model [9, 8])") != std::string::npos);
  auto smaller = build_model({.kind = "seed", .vocab_size = 8, .seq_len = 4, .d_model = 8});
  CHECK(test::error_of([&] { load(*smaller, path); }).find("unexpected keys: blocks.0.ln1.weight") != std::string::npos);
  CHECK_NOTHROW(load(*other, path, /*strict=*/false));
  // An int64 tensor where a weight belongs is named as such (it read as a shape mismatch of equal shapes).
  auto f = read_safetensors(path);
  for (auto& [name, t] : f.tensors)
    if (name == "head.weight") t = Tensor::zeros(t.shape(), kInt64);
  CHECK_ERROR(load(*n, f, "crafted", true), "int64 tensors where float weights belong: head.weight");
}

namespace {
struct WithBuffers : Module {
  WithBuffers() {
    w = register_parameter("w", Tensor::zeros({2}));
    mean = register_buffer("mean", Tensor::zeros({2}));
    seen = register_buffer("seen", Tensor::zeros({1}, kInt64));
  }
  std::string name() const override { return "WithBuffers"; }
  Tensor w, mean, seen;
};
}  // namespace

TEST_CASE("buffers are saved and loaded with the parameters; an integer/float swap is named") {
  WithBuffers a;
  a.w.copy_(Tensor::from({1.0, 2.0}));
  a.mean.copy_(Tensor::from({0.25, -4.0}));
  a.seen.copy_(Tensor::from(std::vector<std::int64_t>{7}, {1}));
  const std::string path = test::temp_file("buffers.safetensors");
  save(a, path);
  WithBuffers b;
  load(b, path);
  CHECK(b.w.to_vector() == a.w.to_vector());
  CHECK(b.mean.to_vector() == a.mean.to_vector());
  CHECK(b.seen.to_vector() == a.seen.to_vector());
  auto f = read_safetensors(path);
  for (auto& [name, t] : f.tensors)
    if (name == "seen") t = Tensor::zeros(t.shape());
  CHECK_ERROR(load(b, f, "crafted", true), "float tensors where int64 buffers belong: seen");
}
