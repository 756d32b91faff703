#include "../support.h"

#include <qkv/layers/models.h>
#include <qkv/layers/save.h>
#include <qkv/optim/save.h>

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

TEST_CASE("a C++ loop with dropout resumed from save(model) + save(opt) is bit-identical: the dropout stream is saved") {
  const ModelConfig config{.kind = "transformer", .vocab_size = 11, .seq_len = 6, .d_model = 16, .heads = 2,
                           .layers = 2, .causal = true, .dropout = 0.3};
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2}, {2, 6});
  struct Loop {
    std::shared_ptr<LanguageModel> model;
    std::unique_ptr<AdamW> opt;
    explicit Loop(const ModelConfig& c) {
      Generator gen(3);
      model = build_model(c, gen);
      opt = std::make_unique<AdamW>(model->named_parameters(), AdamOptions{.lr = 1e-2});
    }
    void steps(int n, const Tensor& ids) {
      for (int i = 0; i < n; ++i) {
        opt->zero_grad();
        cross_entropy(reshape(model->logits(ids), {-1, 11}), reshape(ids, {-1})).backward();
        opt->step();
      }
    }
  };
  Loop a(config);
  a.steps(3, ids);
  const std::string model_file = test::temp_file("dropout_model.safetensors"), opt_file = test::temp_file("dropout_opt.safetensors");
  save(*a.model, model_file);
  save(*a.opt, opt_file);
  CHECK(read_safetensors(model_file).metadata.at("qkv.extra_state").rfind("dropout_stream ", 0) == 0);
  a.steps(3, ids);
  Loop b(config);
  b.steps(1, ids);  // moves its dropout stream elsewhere: load must put it back
  load(*b.model, model_file);
  load(*b.opt, opt_file);
  b.steps(3, ids);
  const auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
  for (std::size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i].first);
    CHECK(pb[i].second.to_vector() == pa[i].second.to_vector());
  }
  write_safetensors(model_file, a.model->state_dict(), {{"qkv.extra_state", "dropout_stream 1 2"}});
  CHECK_ERROR(load(*b.model, model_file), "metadata 'qkv.extra_state': Transformer.set_extra_state: expected 'dropout_stream' and six numbers, got 'dropout_stream 1 2'");
}

TEST_CASE("load from a file read for it: the parameters take the file's tensors, no second copy") {
  auto a = build_model({.kind = "transformer", .vocab_size = 8, .seq_len = 4, .d_model = 8, .heads = 2, .layers = 1});
  const std::string path = test::temp_file("handoff.safetensors");
  save(*a, path);
  std::shared_ptr<LanguageModel> b;
  {
    const NoInitGuard built_for_loading;
    b = build_model(a->config());
  }
  SafetensorsFile file = read_safetensors(path);
  const void* data = file.find("head.weight").raw_data();
  load(*b, std::move(file), path);
  CHECK(file.tensors.empty());
  CHECK(b->parameter("head.weight").raw_data() == data);
  for (const auto& [name, p] : a->named_parameters()) CHECK(b->parameter(name).to_vector() == p.to_vector());
}
