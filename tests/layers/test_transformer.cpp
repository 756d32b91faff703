#include "../support.h"

#include <qkv/layers/transformer.h>

using namespace qkv;
using test::LayerRun;

TEST_CASE("LayerNorm, MLP and the pre-LN block match torch") {
  const auto plain = [](Module& m, const Tensor& x, const Tensor&) { return LayerRun{m.forward(x), {}}; };
  const std::map<std::string, test::LayerSpec> specs = {
      {"layer_norm", {[](const nlohmann::json& o) { return std::make_shared<LayerNorm>(o["d"]); }, plain}},
      {"mlp", {[](const nlohmann::json& o) { return std::make_shared<MLP>(o["d"], o["d_ff"]); }, plain}},
      {"transformer_block",
       {[](const nlohmann::json& o) {
          return std::make_shared<TransformerBlock>(TransformerBlockOptions{
              .d_model = o["d_model"], .heads = o["heads"], .d_ff = o["d_ff"], .causal = o["causal"],
              .attn_bias = o["attn_bias"]});
        },
        [](Module& m, const Tensor& x, const Tensor&) {
          auto [out, w] = static_cast<TransformerBlock&>(m).attend(x);
          return LayerRun{out, w};
        }}},
  };
  CHECK(test::check_layers_against_torch(specs) == 3);
}

TEST_CASE("block parameter names") {
  TransformerBlock b({.d_model = 8, .heads = 2, .attn_bias = true});
  std::vector<std::string> names;
  for (auto& [n, t] : b.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"ln1.weight", "ln1.bias", "attn.w_q.weight", "attn.w_q.bias",
                                          "attn.w_k.weight", "attn.w_k.bias", "attn.w_v.weight", "attn.w_v.bias",
                                          "attn.w_o.weight", "attn.w_o.bias", "ln2.weight", "ln2.bias",
                                          "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"});
  CHECK(b.mlp->fc1->weight.shape() == Shape{32, 8});  // d_ff defaults to 4 * d_model
}

TEST_CASE("Dropout is active in training and the identity in eval") {
  Generator g(0);
  Dropout d(0.5, g);
  const Tensor x = Tensor::ones({100});
  const auto train = d.forward(x).to_vector();
  CHECK(std::count(train.begin(), train.end(), 0.0) > 20);
  d.eval();
  CHECK(d.forward(x).to_vector() == x.to_vector());
  CHECK_ERROR(Dropout(-0.1), "Dropout: p must be in [0, 1], got -0.1");
}

// Under mpirun each rank holds some rows of the batch: its masks must be those rows of one process's masks, and
// the stream must end where one process's ends.
TEST_CASE("Dropout on a batch slice draws that slice's rows of the whole batch's masks") {
  Generator g(7);
  Dropout whole(0.5, g), top(0.5, g), bottom(0.5, g);
  const Tensor x = Tensor::ones({4, 3, 5});
  const auto all = whole.forward(x).to_vector();
  top.set_batch_slice(0, 4);
  bottom.set_batch_slice(2, 4);
  const auto a = top.forward(narrow(x, 0, 0, 2)).to_vector(), b = bottom.forward(narrow(x, 0, 2, 2)).to_vector();
  CHECK(std::vector<double>(all.begin(), all.begin() + 30) == a);
  CHECK(std::vector<double>(all.begin() + 30, all.end()) == b);
  CHECK(top.generator().state().s == whole.generator().state().s);
  CHECK(bottom.generator().state().s == whole.generator().state().s);
  CHECK_ERROR(bottom.forward(x), "Dropout: 4 rows from row 2 do not fit the batch slice of 4 rows");
  CHECK_ERROR(bottom.set_batch_slice(5, 4), "batch slice from row 5 of 4 is not a slice");
}

TEST_CASE("LayerNorm bad input") {
  LayerNorm ln(4);
  CHECK_ERROR(ln.forward(Tensor::ones({2, 3})), "LayerNorm: expected input (..., 4), got shape [2, 3]");
}
