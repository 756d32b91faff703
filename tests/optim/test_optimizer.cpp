#include "../support.h"

#include <qkv/layers/linear.h>
#include <qkv/optim/optimizer.h>

#include <cmath>

using namespace qkv;

namespace {

struct Net : Module {
  Net() {
    fc1 = register_module("fc1", std::make_shared<Linear>(4, 5));
    fc2 = register_module("fc2", std::make_shared<Linear>(5, 2));
  }
  std::string name() const override { return "Net"; }
  Tensor forward(const Tensor& x) override { return fc2->forward(tanh(fc1->forward(x))); }
  std::shared_ptr<Linear> fc1, fc2;
};

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, const nlohmann::json& c, NamedParameters params) {
  if (kind == "sgd")
    return std::make_unique<SGD>(params, SGDOptions{.lr = c["lr"],
                                                    .momentum = c.value("momentum", 0.0),
                                                    .dampening = c.value("dampening", 0.0),
                                                    .nesterov = c.value("nesterov", false),
                                                    .weight_decay = c.value("weight_decay", 0.0)});
  const auto betas = c.value("betas", std::vector<double>{0.9, 0.999});
  AdamOptions o{.lr = c["lr"], .beta1 = betas[0], .beta2 = betas[1], .eps = c.value("eps", 1e-8),
                .weight_decay = c.value("weight_decay", kind == "adamw" ? 1e-2 : 0.0),
                .amsgrad = c.value("amsgrad", false)};
  if (kind == "adamw") return std::make_unique<AdamW>(params, o);
  return std::make_unique<Adam>(params, o);
}

// One training step of the fixture's model: loss = mean((net(x) - y)^2), then clipping, then the update.
double train_step(Net& net, Optimizer& opt, const Tensor& x, const Tensor& y, const nlohmann::json& cfg) {
  opt.zero_grad();
  const Tensor diff = net.forward(x) - y;
  const Tensor loss = mean(diff * diff);
  loss.backward();
  if (cfg.contains("clip_grad_norm")) clip_grad_norm(net.parameters(), cfg["clip_grad_norm"]);
  if (cfg.contains("clip_grad_value")) clip_grad_value(net.parameters(), cfg["clip_grad_value"]);
  opt.step();
  return loss.item();
}

}  // namespace

TEST_CASE("25-step trajectories match torch.optim for every optimizer and option") {
  const auto& f = test::fixture("optim");
  int runs = 0;
  for (const auto& run : f["runs"]) {
    for (const DType dtype : {kFloat64, kFloat32}) {
      const std::string key = dtype == kFloat64 ? "float64" : "float32";
      const double rtol = dtype == kFloat64 ? 1e-6 : 1e-5;
      INFO(run["optimizer"].get<std::string>(), " ", run["config"].dump(), " ", key);
      Net net;
      net.to(dtype);
      test::load_params(net, f["init"], dtype);
      auto opt = make_optimizer(run["optimizer"], run["config"], net.named_parameters());
      const Tensor x = test::tensor_from(f["x"], dtype), y = test::tensor_from(f["y"], dtype);
      const auto& ref = run[key];
      for (std::size_t s = 0; s < 25; ++s) {
        const double loss = train_step(net, *opt, x, y, run["config"]);
        CHECK(loss == doctest::Approx(ref["losses"][s].get<double>()).epsilon(rtol));
        for (const auto& name_p : net.named_parameters()) {
          const auto& name = name_p.first;
          const auto& p = name_p.second;
          CHECK_CLOSE(p, test::tensor_from(ref["params"][s][name], dtype), rtol, rtol * 1e-2);
        }
      }
    }
    ++runs;
  }
  CHECK(runs == 14);
}

TEST_CASE("save state, load into a fresh optimizer, continue: bit-identical to an uninterrupted run") {
  const auto& f = test::fixture("optim");
  for (const std::string kind : {"sgd", "adam", "adamw"}) {
    const nlohmann::json cfg = {{"lr", 0.01}, {"momentum", 0.9}, {"amsgrad", true}, {"weight_decay", 0.01}};
    const Tensor x = test::tensor_from(f["x"], kFloat32), y = test::tensor_from(f["y"], kFloat32);
    Net a, b;
    test::load_params(a, f["init"], kFloat32);
    test::load_params(b, f["init"], kFloat32);
    auto opt_a = make_optimizer(kind, cfg, a.named_parameters());
    auto opt_b = make_optimizer(kind, cfg, b.named_parameters());
    for (int s = 0; s < 10; ++s) {
      train_step(a, *opt_a, x, y, cfg);
      train_step(b, *opt_b, x, y, cfg);
    }
    const OptimizerState saved = opt_b->state_dict();
    std::vector<Tensor> saved_params;
    for (auto& p : b.parameters()) saved_params.push_back(p.clone());
    // A fresh model and optimizer, restored from the saved tensors.
    Net c;
    for (std::size_t i = 0; i < saved_params.size(); ++i) c.parameters()[i].copy_(saved_params[i]);
    auto opt_c = make_optimizer(kind, cfg, c.named_parameters());
    opt_c->load_state_dict(saved);
    CHECK(opt_c->steps() == 10);
    for (int s = 0; s < 10; ++s) {
      train_step(a, *opt_a, x, y, cfg);
      train_step(c, *opt_c, x, y, cfg);
    }
    for (std::size_t i = 0; i < a.parameters().size(); ++i)
      CHECK(a.parameters()[i].to_vector() == c.parameters()[i].to_vector());
  }
}

TEST_CASE("clip_grad_norm returns the norm before clipping and scales like torch") {
  const Tensor p = Tensor::zeros({2}).requires_grad_(), q = Tensor::zeros({1}).requires_grad_();
  p.set_grad(Tensor::from({3.0f, 0.0f}));
  q.set_grad(Tensor::from({4.0f}));
  CHECK(clip_grad_norm({p, q}, 1.0) == doctest::Approx(5.0));
  CHECK(p.grad().to_vector()[0] == doctest::Approx(3.0 / (5.0 + 1e-6)));
  CHECK(q.grad().to_vector()[0] == doctest::Approx(4.0 / (5.0 + 1e-6)));
  CHECK(clip_grad_norm({p, q}, 10.0) == doctest::Approx(1.0).epsilon(1e-5));  // below max_norm: unchanged
  CHECK(q.grad().to_vector()[0] == doctest::Approx(0.8).epsilon(1e-5));
  clip_grad_value({p, q}, 0.5);
  CHECK(p.grad().to_vector()[0] == doctest::Approx(0.5));
}

TEST_CASE("parameters without a gradient are skipped") {
  Net net;
  const auto before = net.fc2->weight.to_vector();
  Adam opt(net.named_parameters(), {});
  sum(net.fc1->forward(Tensor::ones({1, 4}))).backward();
  opt.step();
  CHECK(net.fc2->weight.to_vector() == before);
}

TEST_CASE("invalid hyperparameters name the parameter and the value") {
  Net net;
  const auto ps = net.named_parameters();
  CHECK_ERROR(SGD(ps, {.lr = -1}), "SGD: invalid lr = -1 (must be >= 0)");
  CHECK_ERROR(SGD(ps, {.momentum = -0.5}), "SGD: invalid momentum = -0.5");
  CHECK_ERROR(SGD(ps, {.nesterov = true}), "SGD: nesterov requires momentum > 0 and dampening = 0");
  CHECK_ERROR(Adam(ps, {.beta1 = 1.0}), "Adam: invalid beta1 = 1 (must be in [0, 1))");
  CHECK_ERROR(Adam(ps, {.beta2 = -0.1}), "Adam: invalid beta2 = -0.1");
  CHECK_ERROR(AdamW(ps, {.eps = 0}), "AdamW: invalid eps = 0 (must be > 0)");
  CHECK_ERROR(Adam(ps, {.weight_decay = -1}), "Adam: invalid weight_decay = -1 (must be >= 0)");
  CHECK_ERROR(clip_grad_norm(net.parameters(), 0.0), "clip_grad_norm: invalid max_norm = 0 (must be > 0)");
  Adam opt(ps, {});
  CHECK_ERROR(opt.set_lr(-0.1), "set_lr: invalid lr = -0.1");
  OptimizerState bad = opt.state_dict();
  bad.tensors["fc9.weight.exp_avg"] = Tensor::zeros({1});
  CHECK_ERROR(opt.load_state_dict(bad), "load_state_dict: unexpected state entry 'fc9.weight.exp_avg'");
}

TEST_CASE("make_optimizer builds each registered optimizer by name, and names them for an unknown one") {
  const Tensor w = Tensor::ones({2}).requires_grad_();
  CHECK(optimizer_names() == std::vector<std::string>{"sgd", "adam", "adamw"});
  CHECK(dynamic_cast<SGD*>(make_optimizer("sgd", {{"w", w}}, {.momentum = 0.5}).get())->options().momentum == 0.5);
  CHECK(dynamic_cast<AdamW*>(make_optimizer("adamw", {{"w", w}}, {.betas = {0.9, 0.95}}).get())->options().beta2 == 0.95);
  CHECK_ERROR(make_optimizer("adam", {{"w", w}}, {.betas = {0.9}}), "Adam: betas must be (beta1, beta2), got 1 values");
  CHECK(dynamic_cast<AdamW*>(make_optimizer("adam", {{"w", w}}, {}).get()) == nullptr);
  CHECK_ERROR(make_optimizer("lion", {{"w", w}}, {}), "optimizer: unknown name 'lion' (expected sgd, adam, adamw)");
}

TEST_CASE("parameter groups: each group updates as its own optimizer would; saved and restored by state_dict") {
  const auto run = [](bool grouped, const std::string& kind) {
    Generator gen(9);
    const Tensor a = Tensor::randn({3, 2}, gen, kFloat64).requires_grad_();
    const Tensor b = Tensor::randn({4}, gen, kFloat64).requires_grad_();
    const auto make = [&](ParamGroups groups, double lr, double wd) -> std::unique_ptr<Optimizer> {
      if (kind == "sgd") return std::make_unique<SGD>(std::move(groups), SGDOptions{.lr = lr, .momentum = 0.9, .weight_decay = wd});
      if (kind == "adam") return std::make_unique<Adam>(std::move(groups), AdamOptions{.lr = lr, .weight_decay = wd});
      return std::make_unique<AdamW>(std::move(groups), AdamOptions{.lr = lr, .weight_decay = wd});
    };
    std::vector<std::unique_ptr<Optimizer>> opts;
    if (grouped) {
      opts.push_back(make({{.params = {{"a", a}}}, {.params = {{"b", b}}, .lr = 0.05, .weight_decay = 0.0}}, 0.1, 0.2));
    } else {
      opts.push_back(make({{.params = {{"a", a}}}}, 0.1, 0.2));
      opts.push_back(make({{.params = {{"b", b}}}}, 0.05, 0.0));
    }
    for (int step = 0; step < 5; ++step) {
      for (auto& o : opts) o->zero_grad();
      sum(mul(a, a) * 3.0 + 0.0).backward();
      sum(exp(b)).backward();
      for (auto& o : opts) o->step();
    }
    auto v = a.to_vector();
    for (double x : b.to_vector()) v.push_back(x);
    return v;
  };
  for (const std::string kind : {"sgd", "adam", "adamw"}) {
    INFO(kind);
    CHECK(run(true, kind) == run(false, kind));
  }

  const Tensor w = Tensor::ones({2}).requires_grad_(), bias = Tensor::ones({2}).requires_grad_();
  AdamW opt({{.params = {{"w", w}}}, {.params = {{"bias", bias}}, .lr = 0.01, .weight_decay = 0.0}},
            {.lr = 0.1, .weight_decay = 0.5});
  CHECK(opt.num_groups() == 2);
  CHECK(opt.group_lr(1) == doctest::Approx(0.01));
  CHECK(opt.group_weight_decay(0) == 0.5);
  opt.set_lr(0.05);  // what a schedule does: every group scaled by the same factor
  CHECK(opt.group_lr(0) == doctest::Approx(0.05));
  CHECK(opt.group_lr(1) == doctest::Approx(0.005));
  const OptimizerState state = opt.state_dict();
  CHECK(state.scalars.at("group.1.lr") == doctest::Approx(0.005));
  CHECK(state.scalars.at("group.1.weight_decay") == 0.0);
  AdamW other({{.params = {{"w", w}}}, {.params = {{"bias", bias}}}}, {.lr = 0.1, .weight_decay = 0.5});
  other.load_state_dict(state);
  CHECK(other.group_lr(1) == doctest::Approx(0.005));
  CHECK(other.group_weight_decay(1) == 0.0);
  AdamW one({{"w", w}, {"bias", bias}}, {.lr = 0.1});
  CHECK_ERROR(one.load_state_dict(state), "AdamW: load_state_dict: the state has 2 parameter groups, this optimizer 1");
}

TEST_CASE("parameter group and dtype errors name the optimizer and the parameter") {
  const Tensor w = Tensor::ones({2}).requires_grad_();
  CHECK_ERROR(SGD(ParamGroups{{.params = {{"w", w}}}, {.params = {{"w", w}}}}, {}),
              "SGD: parameters 'w' (group 0) and 'w' (group 1) are the same tensor: pass it once");
  CHECK_ERROR(Adam(ParamGroups{{.params = {{"w", w}}, .lr = -0.5}}, {}),
              "Adam: parameter group 0: invalid lr = -0.5 (must be >= 0)");
  CHECK_ERROR(AdamW(ParamGroups{{.params = {{"w", w}}, .weight_decay = -1.0}}, {}),
              "AdamW: parameter group 0: invalid weight_decay = -1");
  CHECK_ERROR(SGD(ParamGroups{{.params = {{"x", Tensor()}}}}, {}), "SGD: parameter 'x' must be a defined leaf tensor");

  // A module converted to float64 after the optimizer made float32 state: named, not an internal error.
  Linear layer(2, 2);
  Adam opt(layer.named_parameters(), {});
  sum(layer.forward(Tensor::ones({1, 2}))).backward();
  opt.step();
  layer.to(kFloat64);
  opt.zero_grad();
  sum(layer.forward(Tensor::ones({1, 2}, kFloat64))).backward();
  CHECK_ERROR(opt.step(), "Adam: state 'weight.exp_avg' is float32 [2, 2] but parameter 'weight' is now float64 [2, 2]");
}

TEST_CASE("retain_state keeps the chosen parameters' state (a shard); state_bytes counts it; scale_grads") {
  const Tensor a = Tensor::ones({3}).requires_grad_(), b = Tensor::ones({5}).requires_grad_();
  Adam opt({{"a", a}, {"b", b}}, {});
  (sum(a) + sum(b)).backward();
  scale_grads({a, b}, 0.5);
  CHECK(a.grad().to_vector() == std::vector<double>{0.5, 0.5, 0.5});
  opt.step();
  CHECK(opt.state_bytes() == 2 * (3 + 5) * 4);  // exp_avg and exp_avg_sq, float32
  opt.retain_state([](std::size_t i) { return i == 1; });  // "b"
  CHECK(opt.state_bytes() == 2 * 5 * 4);
  CHECK(opt.state_dict().tensors.count("a.exp_avg") == 0);
  CHECK(opt.state_dict().tensors.count("b.exp_avg") == 1);
}

namespace {
struct Branches : Module {  // fc2 always, fc3 every third step, fc1 frozen for the first 10 (the fixture's model)
  Branches() {
    fc1 = register_module("fc1", std::make_shared<Linear>(4, 5));
    fc2 = register_module("fc2", std::make_shared<Linear>(5, 2));
    fc3 = register_module("fc3", std::make_shared<Linear>(5, 2));
  }
  std::string name() const override { return "Branches"; }
  Tensor forward_at(const Tensor& x, int step) {
    Tensor h = tanh(fc1->forward(x));
    if (step < 10) h = h.detach();
    return step % 3 == 2 ? fc2->forward(h) + fc3->forward(h) : fc2->forward(h);
  }
  std::shared_ptr<Linear> fc1, fc2, fc3;
};
}  // namespace

TEST_CASE("parameters with a gradient on some steps only: torch's trajectory, each with its own step count") {
  const auto& f = test::fixture("optim_sometimes");
  const Tensor x = test::tensor_from(f["x"]), y = test::tensor_from(f["y"]);
  int runs = 0;
  for (const auto& run : f["runs"]) {
    INFO(run["optimizer"].get<std::string>(), " ", run["config"].dump());
    Branches net;
    net.to(kFloat64);
    test::load_params(net, f["init"], kFloat64);
    auto opt = make_optimizer(run["optimizer"], run["config"], net.named_parameters());
    opt->step();  // before any backward: counts nothing for any parameter
    for (int s = 0; s < 30; ++s) {
      opt->zero_grad();
      const Tensor diff = net.forward_at(x, s) - y;
      const Tensor loss = mean(diff * diff);
      loss.backward();
      opt->step();
      CHECK(loss.item() == doctest::Approx(run["losses"][s].get<double>()).epsilon(1e-6));
      for (const auto& name_p : net.named_parameters()) {
        const auto& name = name_p.first;
        const auto& p = name_p.second;
        CHECK_CLOSE(p, test::tensor_from(run["params"][s][name]), 1e-6, 1e-8);
      }
    }
    const auto& named = opt->params();
    for (std::size_t i = 0; i < named.size(); ++i)
      CHECK(opt->param_steps(i) == run["param_steps"][named[i].first].get<std::int64_t>());
    CHECK(opt->steps() == 31);
    ++runs;
  }
  CHECK(runs == 3);
}

TEST_CASE("per-parameter step counts are saved; a state saved without them gives each parameter the global step") {
  const Tensor a = Tensor::ones({2}).requires_grad_(), b = Tensor::ones({2}).requires_grad_();
  Adam opt({{"a", a}, {"b", b}}, {.lr = 0.1});
  for (int s = 0; s < 4; ++s) {
    opt.zero_grad();
    (s < 3 ? sum(a * a) : sum(a * a) + sum(b * b)).backward();
    opt.step();
  }
  const OptimizerState st = opt.state_dict();
  CHECK(st.scalars.at("a.step") == 4);
  CHECK(st.scalars.at("b.step") == 1);
  CHECK(st.scalars.at("step") == 4);
  Adam restored({{"a", a.detach().clone().requires_grad_()}, {"b", b.detach().clone().requires_grad_()}}, {.lr = 0.1});
  restored.load_state_dict(st);
  CHECK(restored.param_steps(0) == 4);
  CHECK(restored.param_steps(1) == 1);
  OptimizerState old = st;  // as written before parameters had their own counts
  old.scalars.erase("a.step");
  old.scalars.erase("b.step");
  restored.load_state_dict(old);
  CHECK(restored.param_steps(0) == 4);
  CHECK(restored.param_steps(1) == 4);
  old.scalars["b.step"] = 1.5;
  CHECK_ERROR(restored.load_state_dict(old), "Adam: load_state_dict: 'b.step' = 1.5 is not a count");
}

TEST_CASE("parameters are told apart by identity: one tensor twice is refused, equal names are fine") {
  Net one, two;
  const Tensor w = one.fc1->weight;
  CHECK_ERROR(Adam({{.params = {{"fc1.weight", w}}}, {.params = {{"encoder.weight", w}}, .lr = 0.1}}, {}),
              "Adam: parameters 'fc1.weight' (group 0) and 'encoder.weight' (group 1) are the same tensor: pass it once");
  NamedParameters both = one.named_parameters();
  for (auto& np : two.named_parameters()) both.push_back(np);
  AdamW opt(both, {.lr = 0.01});
  CHECK(opt.state_key(0) == "fc1.weight");
  CHECK(opt.state_key(4) == "fc1.weight#2");
  const Tensor x = Tensor::ones({1, 4});
  sum(one.forward(x)).backward();
  sum(two.forward(x) * 2.0).backward();
  opt.step();
  const OptimizerState st = opt.state_dict();
  CHECK(st.tensors.size() == 16);  // exp_avg and exp_avg_sq of 8 tensors
  CHECK_CLOSE(st.tensors.at("fc2.bias#2.exp_avg"), two.fc2->bias.grad() * 0.1, 1e-6, 1e-7);
  AdamW again(both, {.lr = 0.01});
  again.load_state_dict(st);
  CHECK(again.state_dict().tensors.at("fc2.bias#2.exp_avg").to_vector() == st.tensors.at("fc2.bias#2.exp_avg").to_vector());
}
