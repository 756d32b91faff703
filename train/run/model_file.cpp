#include "qkv/train/run/model_file.h"

#include <qkv/datasets/bpe.h>

#include <nlohmann/json.hpp>

#include <set>

namespace qkv {

const char* version() { return "0.1.0"; }

std::map<std::string, std::string> model_metadata(const ModelConfig& m, const BpeTokenizer* tok) {
  nlohmann::json mj = nlohmann::json::object();
  for (const ModelField& f : model_fields()) std::visit([&](auto member) { mj[f.name] = m.*member; }, f.member);
  for (const auto& option : m.with_defaults().options)  // (not a structured binding: clang 14 cannot capture one)
    std::visit([&](const auto& x) { mj[option.first] = x; }, option.second);
  std::map<std::string, std::string> meta = {{"format", "qkv"}, {"qkv.version", version()}, {"qkv.model", mj.dump()}};
  if (tok && tok->rules()) {  // a tokenizer.json tokenizer travels as its file
    meta["qkv.tokenizer.json"] = tok->tokenizer_json();
    meta["qkv.tokenizer.hash"] = tok->hash();
  } else if (tok) {  // the tokenizer travels with the model (docs/tokens.md)
    meta["qkv.tokenizer.vocab"] = tok->vocab_json();
    meta["qkv.tokenizer.merges"] = tok->merges_txt();
    meta["qkv.tokenizer.hash"] = tok->hash();
    if (const auto extra = tok->declared_specials(); !extra.empty()) meta["qkv.tokenizer.specials"] = nlohmann::json(extra).dump();
  }
  return meta;
}

std::map<std::string, std::string> model_metadata(const ModelConfig& m, const Config& c, const Dataset& data) {
  auto meta = model_metadata(m, data.tokenizer().get());
  meta["qkv.data"] = data_to_json(c);
  if (!data.vocab().empty()) meta["qkv.vocab"] = data.vocab();
  return meta;
}

namespace {

// One "qkv.model" value into its ModelConfig field, checked for type and range (the config key's range), so a
// crafted file cannot make qkv build something enormous before its tensors are compared.
void read_model_field(const ModelField& f, const nlohmann::json& v, ModelConfig& m, const std::string& source) {
  const auto bad = [&](const char* expected) {
    fail("{}: qkv.model: \"{}\" must be {}, got {}", source, f.name, expected, v.dump());
  };
  const auto out_of_range = [&] {
    fail("{}: qkv.model: \"{}\" = {} is out of range (expected {} to {})", source, f.name, v.dump(), f.min, f.max);
  };
  std::visit(
      [&](auto member) {
        using T = std::remove_reference_t<decltype(m.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (!v.is_string()) bad("a string");
          m.*member = v.get<std::string>();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!v.is_boolean()) bad("true or false");
          m.*member = v.get<bool>();
        } else if constexpr (std::is_same_v<T, double>) {
          if (!v.is_number()) bad("a number");
          const double x = v.get<double>();
          if (!(x >= f.min && x <= f.max)) out_of_range();
          m.*member = x;
        } else {
          if (!v.is_number_integer()) bad("an integer");
          if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(f.max)) out_of_range();
          const auto x = v.get<std::int64_t>();
          if (double(x) < f.min || double(x) > f.max) out_of_range();
          m.*member = x;
        }
      },
      f.member);
}

}  // namespace

ModelConfig model_config_from_json(const std::string& text, const std::string& source) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  QKV_CHECK(!j.is_discarded() && j.is_object(), "{}: the qkv.model metadata is not a JSON object", source);
  // What no file can do without; the other fields default as in ModelConfig (0.1 files have no "dropout").
  static const std::set<std::string> required = {"kind", "vocab_size", "seq_len", "d_model"};
  ModelConfig m;
  for (const ModelField& f : model_fields()) {
    if (j.contains(f.name)) read_model_field(f, j[f.name], m, source);
    else QKV_CHECK(!required.count(f.name), "{}: qkv.model metadata has no \"{}\"", source, f.name);
  }
  try {
    for (const ModelOptionSpec& o : model_kind(m.kind).options) {  // the kind's own options; absent ones default
      if (!j.contains(o.name)) continue;
      const nlohmann::json& v = j[o.name];
      ModelOption value = o.default_value;
      std::visit(
          [&](auto& x) {
            using T = std::decay_t<decltype(x)>;
            const bool ok = std::is_same_v<T, std::string> ? v.is_string()
                            : std::is_same_v<T, bool>      ? v.is_boolean()
                            : std::is_same_v<T, double>    ? v.is_number()
                                                           : v.is_number_integer();
            QKV_CHECK(ok, "\"{}\" must be of the type of {}, got {}", o.name, nlohmann::json(x).dump(), v.dump());
            x = v.get<T>();
          },
          value);
      m.options[o.name] = value;
    }
    m = m.with_defaults();
    check_model_config(m);  // a known kind, and its own rules
  } catch (const Error& e) {
    fail("{}: qkv.model: {}", source, e.what());
  }
  return m;
}

Config config_from_metadata(const std::map<std::string, std::string>& meta, const std::string& path) {
  const auto it = meta.find("qkv.data");
  return it == meta.end() ? Config() : config_from_data_json(it->second, path);
}

void check_model_file(const ModelConfig& mc, const SafetensorsFile& f, const std::string& path) {
  double held = 0;
  for (const auto& [name, t] : f.tensors) held += double(t.numel());
  if (const Tensor tok = f.find("tok_emb.weight"); tok.defined())  // the sizes a reader is most likely to get wrong
    QKV_CHECK(tok.dim() == 2 && tok.size(0) == mc.vocab_size && tok.size(1) == mc.d_model,
              "{}: the qkv.model metadata says vocab_size = {} and d_model = {}, but tok_emb.weight is {}", path,
              mc.vocab_size, mc.d_model, tok.shape().str());
  const double want = parameter_count(mc);
  QKV_CHECK(want == held,
            "{}: the qkv.model metadata describes a {} model of {:.0f} parameters, but the file's tensors hold {:.0f}: "
            "the metadata does not match the weights",
            path, mc.kind, want, held);
  check_finite_tensors(f.tensors, path, "this model cannot be used");
}

void check_finite_tensors(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& where,
                          const std::string& consequence) {
  for (const auto& [name, t] : tensors)
    if (const auto bad = t.count_non_finite(); bad > 0)
      fail("{}: tensor '{}' has {} value{} that {} not finite (NaN or inf){}{}", where, name, bad, bad == 1 ? "" : "s",
           bad == 1 ? "is" : "are", consequence.empty() ? "" : "; ", consequence);
}

void check_finite_weights(const Module& module, const std::string& where, const std::string& consequence) {
  const auto named = module.named_parameters();
  check_finite_tensors(std::vector<std::pair<std::string, Tensor>>(named.begin(), named.end()), where, consequence);
}

}  // namespace qkv
