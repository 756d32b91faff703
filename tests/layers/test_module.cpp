#include "../support.h"

#include <qkv/layers/gpt2.h>
#include <qkv/layers/models.h>

#include <atomic>
#include <fstream>
#include <thread>
#include <iterator>
#include <sstream>

using namespace qkv;

namespace {
struct Pair : Module {
  Pair() {
    a = register_module("a", std::make_shared<Linear>(3, 2));
    scale = register_parameter("scale", Tensor::ones({2}));
    b = register_module("b", std::make_shared<Linear>(2, 1, false));
  }
  std::string name() const override { return "Pair"; }
  Tensor forward(const Tensor& x) override { return b->forward(a->forward(x) * scale); }
  std::shared_ptr<Linear> a, b;
  Tensor scale;
};
}  // namespace

TEST_CASE("named_parameters: dotted names in registration order, depth first") {
  Pair p;
  std::vector<std::string> names;
  for (auto& [n, t] : p.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"scale", "a.weight", "a.bias", "b.weight"});
  CHECK(p.num_parameters() == 2 + 6 + 2 + 2);
  CHECK(p.parameter("a.bias").shape() == Shape{2});
  CHECK(p.parameters().size() == 4);
  for (auto& t : p.parameters()) CHECK(t.requires_grad());
  CHECK_ERROR(p.parameter("c.weight"), "Pair: no parameter named 'c.weight'");
}

TEST_CASE("a submodule registered twice is one set of parameters, under its first name (torch's remove_duplicate)") {
  struct Shared : Module {
    Shared() {
      inner = register_module("encoder", std::make_shared<Linear>(3, 3));
      register_module("decoder", inner);
    }
    std::string name() const override { return "Shared"; }
    std::shared_ptr<Linear> inner;
  } s;
  std::vector<std::string> names;
  for (auto& [n, t] : s.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"encoder.weight", "encoder.bias"});
  CHECK(s.num_parameters() == 12);
  CHECK_ERROR(s.to(kInt64), "Shared.to: parameters must be floating point (float32 or float64), got int64");
  CHECK(s.inner->weight.dtype() == kFloat32);
}

TEST_CASE("train/eval recurse; to(dtype) keeps the layers' handles valid; zero_grad") {
  Pair p;
  p.eval();
  CHECK(!p.a->is_training());
  p.train();
  CHECK(p.b->is_training());
  p.to(kFloat64);
  CHECK(p.a->weight.dtype() == kFloat64);
  CHECK(p.parameter("a.weight").dtype() == kFloat64);
  const Tensor y = p.forward(Tensor::ones({4, 3}, kFloat64));
  CHECK(y.shape() == Shape{4, 1});
  sum(y).backward();
  CHECK(p.a->weight.grad().defined());
  p.zero_grad();
  CHECK(!p.a->weight.grad().defined());
}

TEST_CASE("summary lists each parameter and the total") {
  Pair p;
  const std::string s = p.summary();
  CHECK(s.find("a.weight") != std::string::npos);
  CHECK(s.find("[2, 3]") != std::string::npos);
  CHECK(s.find("total") != std::string::npos);
  CHECK(s.find("12") != std::string::npos);
}

TEST_CASE("Sequential and ModuleList name children by index") {
  Sequential seq({std::make_shared<Linear>(4, 3), std::make_shared<Linear>(3, 2)});
  CHECK(seq.named_parameters()[2].first == "1.weight");
  CHECK(seq.forward(Tensor::ones({5, 4})).shape() == Shape{5, 2});
  ModuleList<Linear> list;
  list.push_back(std::make_shared<Linear>(2, 2));
  list.push_back(std::make_shared<Linear>(2, 2));
  CHECK(list.size() == 2);
  CHECK(list.named_parameters().back().first == "1.bias");
}

TEST_CASE("registration mistakes") {
  struct Bad : Module {
    std::string name() const override { return "Bad"; }
    void twice() {
      register_parameter("w", Tensor::ones({1}));
      register_parameter("w", Tensor::ones({1}));
    }
    void dotted() { register_parameter("a.b", Tensor::ones({1})); }
  };
  Bad b;
  CHECK_ERROR(b.twice(), "register_parameter: 'w' is already registered");
  CHECK_ERROR(b.dotted(), "name 'a.b' must be non-empty and contain no '.'");
  CHECK_ERROR(b.forward(Tensor::ones({1})), "Bad: this module does not take a single tensor input");
}

namespace {
// A running mean (a float buffer) and a step count (an int64 buffer) beside one weight, as a BatchNorm keeps them.
struct Tracked : Module {
  Tracked() {
    fc = register_module("fc", std::make_shared<Linear>(2, 2));
    running = register_buffer("running", Tensor::zeros({2}));
    count = register_buffer("count", Tensor::zeros({1}, kInt64));
  }
  std::string name() const override { return "Tracked"; }
  std::shared_ptr<Module> fresh() const override { return std::make_shared<Tracked>(); }
  std::shared_ptr<Linear> fc;
  Tensor running, count;
};
std::vector<std::string> names(const std::vector<std::pair<std::string, Tensor>>& list) {
  std::vector<std::string> out;
  for (const auto& [n, t] : list) out.push_back(n);
  return out;
}
}  // namespace

TEST_CASE("buffers: in state_dict (torch's order), moved by to(), never trained") {
  Tracked m;
  CHECK(names(m.named_parameters()) == std::vector<std::string>{"fc.weight", "fc.bias"});
  CHECK(names(m.named_buffers()) == std::vector<std::string>{"running", "count"});
  CHECK(names(m.state_dict()) == std::vector<std::string>{"running", "count", "fc.weight", "fc.bias"});
  CHECK_FALSE(m.running.requires_grad());
  m.to(kFloat64);
  CHECK(m.running.dtype() == kFloat64);
  CHECK(m.count.dtype() == kInt64);  // integer buffers keep their dtype, as torch's
  CHECK(m.fc->weight.dtype() == kFloat64);
  struct Clash : Module {
    std::string name() const override { return "Clash"; }
    void twice() {
      register_parameter("w", Tensor::ones({1}));
      register_buffer("w", Tensor::ones({1}));
    }
    void undefined() { register_buffer("u", Tensor()); }
  };
  Clash c;
  CHECK_ERROR(c.twice(), "register_buffer: 'w' is already registered");
  CHECK_ERROR(c.undefined(), "register_buffer: buffer 'u' is an undefined tensor");
}

TEST_CASE("clone: a deep copy of values, dtypes, ties and modes that shares nothing") {
  Generator gen(3);
  auto model = build_model({.kind = "gpt2", .vocab_size = 11, .seq_len = 6, .d_model = 8, .heads = 2, .layers = 2,
                            .causal = true, .tie_embeddings = true}, gen);
  model->eval();
  auto copy = clone(*model);  // std::shared_ptr<LanguageModel>
  CHECK(dynamic_cast<GPT2*>(copy.get()) != nullptr);
  CHECK_FALSE(copy->is_training());
  const auto a = model->state_dict(), b = copy->state_dict();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].first == b[i].first);
    CHECK(a[i].second.to_vector() == b[i].second.to_vector());
    CHECK(a[i].second.impl() != b[i].second.impl());
  }
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4}, {1, 4});
  CHECK(copy->logits(ids).to_vector() == model->logits(ids).to_vector());
  // Tied: the clone's head is its own wte (one tensor), not the original's.
  auto* g = dynamic_cast<GPT2*>(copy.get());
  CHECK(g->lm_head == nullptr);
  CHECK(copy->num_parameters() == model->num_parameters());
  // Changing the original leaves the copy alone (an EMA target keeps its own values).
  const auto before = copy->parameters()[0].to_vector();
  model->parameters()[0].copy_(Tensor::zeros(model->parameters()[0].shape()));
  CHECK(copy->parameters()[0].to_vector() == before);
  // Buffers and a user module with fresh(); float64 stays float64.
  Tracked t;
  t.running.copy_(Tensor::from({0.5, -2.0}));
  t.to(kFloat64);
  auto tc = clone(t);
  CHECK(tc->running.dtype() == kFloat64);
  CHECK(tc->running.to_vector() == t.running.to_vector());
  CHECK(tc->fc->weight.to_vector() == t.fc->weight.to_vector());
  // A module without fresh() says what to do.
  Pair p;
  CHECK_ERROR(p.clone(), "Pair: clone() needs fresh() (a new Pair of the same structure): override it");
}

TEST_CASE("clone of every built-in layer keeps its structure") {
  Generator gen(1);
  const std::vector<std::shared_ptr<Module>> layers = {
      std::make_shared<Linear>(3, 2, false, gen), std::make_shared<Embedding>(5, 3, gen),
      std::make_shared<LayerNorm>(LayerNormOptions{.d = 4, .eps = 1e-6, .bias = false}), std::make_shared<Dropout>(0.3, gen),
      std::make_shared<MLP>(4, 8, gen), std::make_shared<SelfAttention>(SelfAttentionOptions{.d_model = 4, .d_k = 2}, gen),
      std::make_shared<MultiHeadSelfAttention>(MultiHeadSelfAttentionOptions{.d_model = 4, .heads = 2}, gen),
      std::make_shared<TransformerBlock>(TransformerBlockOptions{.d_model = 4, .heads = 2}, gen),
      std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{std::make_shared<Linear>(2, 2, true, gen)})};
  for (const auto& m : layers) {
    INFO(m->name());
    const auto c = m->clone();
    CHECK(c->name() == m->name());
    CHECK(names(c->state_dict()) == names(m->state_dict()));
    for (std::size_t i = 0; i < c->state_dict().size(); ++i)
      CHECK(c->state_dict()[i].second.to_vector() == m->state_dict()[i].second.to_vector());
  }
}

TEST_CASE("forward hooks and pre-hooks: see, replace, remove; a block's attention reached from the model") {
  Generator gen(5);
  auto model = build_model({.kind = "transformer", .vocab_size = 9, .seq_len = 5, .d_model = 8, .heads = 2,
                            .layers = 2, .causal = true}, gen);
  auto* t = dynamic_cast<Transformer*>(model.get());
  REQUIRE(t != nullptr);
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4}, {1, 4});
  const auto clean = model->logits(ids).to_vector();
  MultiHeadSelfAttention& attn = *(*t->blocks)[0].attn;
  int calls = 0;
  Tensor seen;
  HookHandle look = attn.register_forward_hook([&](Module& m, const Tensor& in, const Tensor& out) {
    ++calls;
    CHECK(&m == &attn);
    CHECK(in.shape() == Shape({1, 4, 8}));
    seen = out.detach();
    return Tensor();
  });
  CHECK(model->logits(ids).to_vector() == clean);  // observing changes nothing
  CHECK(calls == 1);
  REQUIRE(seen.defined());
  CHECK(seen.shape() == Shape({1, 4, 8}));
  // Ablation: the block's attention output zeroed changes the logits; removing the hook restores them.
  HookHandle ablate = attn.register_forward_hook([](Module&, const Tensor&, const Tensor& out) { return out * 0.0; });
  CHECK(model->logits(ids).to_vector() != clean);
  ablate.remove();
  look.remove();
  CHECK(model->logits(ids).to_vector() == clean);
  CHECK(calls == 2);
  // A pre-hook replaces the input; Sequential calls its children through the hooks; forward -> attend runs once.
  Sequential seq({std::make_shared<Linear>(2, 2, false, gen), std::make_shared<Linear>(2, 1, false, gen)});
  const Tensor x = Tensor::from({1.0, -1.0});
  auto& first = *seq.named_children()[0].second;
  HookHandle pre = first.register_forward_pre_hook([](Module&, const Tensor& in) { return in * 2.0; });
  const Tensor doubled = seq(x);
  pre.remove();
  CHECK(allclose(doubled, seq(x * 2.0)));
  int block_calls = 0;
  (*t->blocks)[1].register_forward_hook([&](Module&, const Tensor&, const Tensor&) { ++block_calls; return Tensor(); });
  (*t->blocks)[1].forward(Tensor::randn({1, 3, 8}, gen));
  model->logits(ids);
  CHECK(block_calls == 2);
  CHECK_ERROR(attn.register_forward_hook(ForwardHook()), "MultiHeadSelfAttention.register_forward_hook: the hook is empty");
}

TEST_CASE("README's C++ tour is tests/consumer/main.cpp's, which ctest builds and runs") {
  const std::string consumer = test::read_source("tests/consumer/main.cpp"), readme = test::read_source("README.md");
  const auto begin = consumer.find("  // [readme]\n"), end = consumer.find("  // [/readme]");
  REQUIRE(begin != std::string::npos);
  REQUIRE(end != std::string::npos);
  std::string block;  // inside a function there: each non-empty line indented by two spaces
  std::istringstream lines(consumer.substr(begin + 14, end - begin - 14));
  for (std::string line; std::getline(lines, line);) block += (line.size() >= 2 ? line.substr(2) : line) + "\n";
  CHECK_MESSAGE(readme.find("using namespace qkv;\n\n" + block + "```") != std::string::npos,
                "README.md's C++ block differs from the one between the readme markers of tests/consumer/main.cpp");
}

TEST_CASE("hooks and inference on one model from two threads: every hook runs, every result exact") {
  Generator gen(5);
  auto model = build_model({.kind = "transformer", .vocab_size = 9, .seq_len = 5, .d_model = 8, .heads = 2,
                            .layers = 2, .causal = true}, gen);
  model->eval();
  auto& attn = *(*dynamic_cast<Transformer&>(*model).blocks)[0].attn;
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4}, {1, 4});
  const std::vector<double> clean = model->logits(ids).to_vector();
  std::atomic<int> counted{0};
  HookHandle count = attn.register_forward_hook([&](Module&, const Tensor&, const Tensor&) { ++counted; return Tensor(); });
  HookHandle ablate = attn.register_forward_hook([](Module&, const Tensor&, const Tensor& out) { return out * 0.0; });
  const std::vector<double> ablated = model->logits(ids).to_vector();
  REQUIRE(ablated != clean);
  constexpr int kEach = 200;
  std::atomic<int> wrong{0};
  const auto run = [&] {
    NoGradGuard no_grad;
    for (int i = 0; i < kEach; ++i)
      if (model->logits(ids).to_vector() != ablated) ++wrong;
  };
  std::thread a(run), b(run);
  a.join();
  b.join();
  CHECK(counted == 2 * kEach + 1);
  CHECK(wrong == 0);
}
