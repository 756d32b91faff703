#include "qkv/layers/models.h"

#include <qkv/layers/gpt2.h>
#include <qkv/layers/llama.h>

#include <qkv/core/ops.h>

#include <fmt/ranges.h>

#include <sstream>

namespace qkv {

Tensor LanguageModel::embed(Embedding& tok, Embedding& pos, const Tensor& ids, std::int64_t start) const {
  check_ids(ids);
  const Tensor positions = Tensor::arange(double(start), double(start + ids.size(1)), 1.0, kInt64);
  return tok(ids) + pos(positions);
}

void LanguageModel::check_ids(const Tensor& ids) const {
  // ids is (B, T) int64
  QKV_CHECK(ids.dim() == 2 && ids.dtype() == kInt64, "{}: expected int64 token ids (B, T), got {} of shape {}", name(),
            dtype_name(ids.dtype()), ids.shape().str());
  const std::int64_t t = ids.size(1);
  QKV_CHECK(t <= config_.seq_len, "{}: sequence length {} exceeds the positional table (seq_len = {})", name(), t,
            config_.seq_len);
  const std::int64_t* p = ids.data<std::int64_t>();
  for (std::int64_t i = 0; i < ids.numel(); ++i)
    QKV_CHECK(p[i] >= 0 && p[i] < config_.vocab_size,
              "{}: token id {} at (batch {}, position {}) is out of range for vocab_size = {}", name(), p[i], i / t,
              i % t, config_.vocab_size);
}

Tensor LanguageModel::logits_cached(const Tensor&, KVCache&) {
  check_cached_generation();  // throws: a model without a cache_widths override has no cached generation
  fail("{}: logits_cached is not implemented", name());
}

namespace {
void slice_dropouts(Module& m, std::int64_t first, std::int64_t total) {
  if (auto* d = dynamic_cast<Dropout*>(&m)) d->set_batch_slice(first, total);
  for (const auto& [name, child] : m.named_children()) slice_dropouts(*child, first, total);
}
}  // namespace

void LanguageModel::set_batch_slice(std::int64_t first, std::int64_t total) { slice_dropouts(*this, first, total); }

// "dropout_stream s0 s1 s2 s3 spare has_spare": the generator's whole state; the spare normal printed in its
// shortest form that reads back to the same double.
std::string LanguageModel::extra_state() const {
  const Generator::State st = dropout_stream_->state();
  return fmt::format("dropout_stream {} {} {} {} {} {}", st.s[0], st.s[1], st.s[2], st.s[3], st.spare_normal, int(st.has_spare));
}

void LanguageModel::set_extra_state(const std::string& state) {
  std::istringstream in(state);
  std::string tag;
  Generator::State st;
  int has_spare = -1;
  in >> tag >> st.s[0] >> st.s[1] >> st.s[2] >> st.s[3] >> st.spare_normal >> has_spare;
  QKV_CHECK(tag == "dropout_stream" && !in.fail() && (in >> std::ws).eof() && (has_spare == 0 || has_spare == 1),
            "{}.set_extra_state: expected 'dropout_stream' and six numbers, got '{}'", name(), state);
  st.has_spare = has_spare == 1;
  dropout_stream_->set_state(st);
}

std::shared_ptr<Generator> LanguageModel::start_dropout_stream(const Generator& gen) {
  dropout_stream_ = std::make_shared<Generator>(gen);
  return dropout_stream_;
}

void LanguageModel::check_cached_generation() const {
  QKV_CHECK(config_.causal, "{}: cached generation needs a causal model (model.causal = true)", name());
  QKV_CHECK(!cache_widths().empty(), "{}: this model does not implement cached generation (logits_cached, cache_widths)",
            name());
}

std::vector<std::pair<std::int64_t, std::int64_t>> LanguageModel::model_wide_cache() const {
  return std::vector<std::pair<std::int64_t, std::int64_t>>(static_cast<std::size_t>(config_.layers),
                                                            {config_.d_model, config_.d_model});
}

KVCache LanguageModel::make_cache(std::int64_t batch) const {
  check_cached_generation();
  QKV_CHECK(batch > 0, "{}: make_cache: batch must be positive, got {}", name(), batch);
  KVCache cache;
  for (const auto& [kw, vw] : cache_widths())
    cache.layers.push_back({Tensor::zeros({batch, config_.seq_len, kw}, param_dtype()),
                            Tensor::zeros({batch, config_.seq_len, vw}, param_dtype())});
  return cache;
}

Tensor LanguageModel::logits(const Tensor& ids, KVCache& cache) {
  check_cached_generation();
  QKV_CHECK(cache.layers.size() == cache_widths().size() && cache.layers[0].k.defined(),
            "{}: the cache was not made by this model's make_cache ({} layers, expected {})", name(),
            cache.layers.size(), cache_widths().size());
  QKV_CHECK(ids.dim() == 2 && ids.size(0) == cache.layers[0].k.size(0),
            "{}: cached step: expected token ids (B, n) with B = {} as the cache, got shape {}", name(),
            cache.layers[0].k.size(0), ids.shape().str());
  QKV_CHECK(cache.length + ids.size(1) <= config_.seq_len,
            "{}: cached step: {} tokens seen + {} new exceed the positional table (seq_len = {}); continue from a new "
            "cache over the last tokens (a sliding window)",
            name(), cache.length, ids.size(1), config_.seq_len);
  NoGradGuard no_grad;
  Tensor out = logits_cached(ids, cache);
  cache.length += ids.size(1);
  return out;
}

SeedModel::SeedModel(const ModelConfig& c, Generator& gen) : LanguageModel(c) {
  tok_emb = register_module("tok_emb", std::make_shared<Embedding>(c.vocab_size, c.d_model, gen));
  pos_emb = register_module("pos_emb", std::make_shared<Embedding>(c.seq_len, c.d_model, gen));
  attn = register_module("attn", std::make_shared<SelfAttention>(SelfAttentionOptions{.d_model = c.d_model,
                                                                                      .d_k = c.d_k,
                                                                                      .d_v = c.d_v,
                                                                                      .bias = c.attn_bias,
                                                                                      .causal = c.causal},
                                                                 gen));
  head = register_module("head", std::make_shared<Linear>(attn->options().d_v, c.vocab_size, true, gen));
  start_dropout_stream(gen);  // unused (no dropout), kept so every model saves the same state
}

AttentionResult SeedModel::attend(const Tensor& ids, const Tensor& key_padding_mask, bool need_weights) {
  auto [out, weights] = attn->attend(embed(*tok_emb, *pos_emb, ids), key_padding_mask, need_weights);
  // (1, B, 1, T, T): one layer, one head
  return {(*head)(out), need_weights ? unsqueeze(unsqueeze(weights, 1), 0) : Tensor()};
}

Tensor SeedModel::logits_cached(const Tensor& ids, KVCache& cache) {
  return (*head)(attn->attend_cached(embed(*tok_emb, *pos_emb, ids, cache.length), cache.layers[0], cache.length));
}

std::vector<std::pair<std::int64_t, std::int64_t>> SeedModel::cache_widths() const {
  return {{attn->options().d_k, attn->options().d_v}};
}

Transformer::Transformer(const ModelConfig& c, Generator& gen) : LanguageModel(c) {
  tok_emb = register_module("tok_emb", std::make_shared<Embedding>(c.vocab_size, c.d_model, gen));
  pos_emb = register_module("pos_emb", std::make_shared<Embedding>(c.seq_len, c.d_model, gen));
  blocks = register_module("blocks", std::make_shared<ModuleList<TransformerBlock>>());
  for (std::int64_t i = 0; i < c.layers; ++i)
    blocks->push_back(std::make_shared<TransformerBlock>(TransformerBlockOptions{.d_model = c.d_model,
                                                                                 .heads = c.heads,
                                                                                 .d_ff = c.d_ff,
                                                                                 .causal = c.causal,
                                                                                 .attn_bias = c.attn_bias,
                                                                                 .dropout = c.dropout},
                                                         gen));
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(c.d_model));
  head = register_module("head", std::make_shared<Linear>(c.d_model, c.vocab_size, true, gen));
  const auto stream = start_dropout_stream(gen);
  for (const auto& block : *blocks) block->drop->set_generator(stream);
}

AttentionResult Transformer::attend(const Tensor& ids, const Tensor& key_padding_mask, bool need_weights) {
  auto [h, weights] = attend_blocks(*blocks, embed(*tok_emb, *pos_emb, ids), key_padding_mask, need_weights);
  return {(*head)((*ln_f)(h)), weights};  // weights (L, B, H, T, T)
}

Tensor Transformer::logits_cached(const Tensor& ids, KVCache& cache) {
  const Tensor h = forward_blocks_cached(*blocks, embed(*tok_emb, *pos_emb, ids, cache.length), cache);
  return (*head)((*ln_f)(h));
}

std::vector<std::pair<std::int64_t, std::int64_t>> Transformer::cache_widths() const { return model_wide_cache(); }

namespace {

double embedding_parameters(const ModelConfig& c) { return double(c.vocab_size + c.seq_len) * double(c.d_model); }
double seed_dk(const ModelConfig& c) { return double(c.d_k ? c.d_k : c.d_model); }
double seed_dv(const ModelConfig& c) { return double(c.d_v ? c.d_v : c.d_model); }
double transformer_dff(const ModelConfig& c) { return double(c.d_ff ? c.d_ff : 4 * c.d_model); }

const ModelKind kSeedKind{
    .name = "seed",
    .build = [](const ModelConfig& c, Generator& gen) -> std::shared_ptr<LanguageModel> {
      return std::make_shared<SeedModel>(c, gen);
    },
    .check = [](const ModelConfig&) {},
    .parameters =
        [](const ModelConfig& c) {
          const double d = double(c.d_model), v = double(c.vocab_size), dk = seed_dk(c), dv = seed_dv(c);
          const double bias = c.attn_bias ? 2 * dk + dv : 0;
          return embedding_parameters(c) + d * (2 * dk + dv) + bias + dv * v + v;  // w_q, w_k, w_v, head (with bias)
        },
    .flops_per_token =
        [](const ModelConfig& c, std::int64_t t) {
          const double d = double(c.d_model), v = double(c.vocab_size), tt = double(t), dk = seed_dk(c), dv = seed_dv(c);
          return 2 * d * (2 * dk + dv) + 2 * tt * dk + 2 * tt * dv + 2 * dv * v;  // projections, scores, mix, head
        },
    .activations_per_token = [](const ModelConfig& c) { return 10 * double(c.d_model) + 2 + 4 * double(c.vocab_size); },
};

const ModelKind kTransformerKind{
    .name = "transformer",
    .build = [](const ModelConfig& c, Generator& gen) -> std::shared_ptr<LanguageModel> {
      return std::make_shared<Transformer>(c, gen);
    },
    .check = [](const ModelConfig& c) { check_heads("model", c.d_model, c.heads); },
    .parameters =
        [](const ModelConfig& c) {
          const double d = double(c.d_model), v = double(c.vocab_size), dff = transformer_dff(c);
          const double attention = 4 * d * d + (c.attn_bias ? 4 * d : 0);
          const double block = 2 * d + attention + 2 * d + (d * dff + dff) + (dff * d + d);  // ln1, attn, ln2, mlp
          return embedding_parameters(c) + double(c.layers) * block + 2 * d + d * v + v;     // ln_f, head
        },
    .flops_per_token =
        [](const ModelConfig& c, std::int64_t t) {
          const double d = double(c.d_model), v = double(c.vocab_size), tt = double(t), dff = transformer_dff(c);
          const double per_layer = 2 * 4 * d * d + 2 * 2 * tt * d + 2 * 2 * d * dff;
          return double(c.layers) * per_layer + 2 * d * v;
        },
    .activations_per_token =
        [](const ModelConfig& c) {
          const double d = double(c.d_model), block = 16 * d + 3 * transformer_dff(c) + 2 * double(c.heads);
          // recompute: every block's input, and one block's activations at a time in the backward
          const double trunk = c.recompute ? double(c.layers) * d + block : double(c.layers) * block;
          return trunk + 4 * d + 4 * double(c.vocab_size);
        },
    .can_recompute = true,
};

// Model kind -> its entry: a new model is one class and one register_model_kind call.
std::vector<ModelKind>& registry() {
  static std::vector<ModelKind> r = {kSeedKind, kTransformerKind, gpt2_model_kind(), llama_model_kind()};
  return r;
}

}  // namespace

void register_model_kind(const ModelKind& kind) {
  QKV_CHECK(!kind.name.empty() && kind.build && kind.check && kind.parameters && kind.flops_per_token &&
                kind.activations_per_token,
            "register_model_kind: '{}': every field (name, build, check, parameters, flops_per_token, "
            "activations_per_token) must be set", kind.name);
  for (ModelKind& k : registry())
    if (k.name == kind.name) {
      k = kind;
      return;
    }
  registry().push_back(kind);
}

const ModelKind& model_kind(const std::string& name) {
  for (const ModelKind& k : registry())
    if (k.name == name) return k;
  fail("model: unknown kind '{}' (expected {})", name, fmt::join(model_kinds(), " or "));
}

namespace {
const ModelOptionSpec* find_option(const ModelKind& kind, const std::string& name) {
  for (const ModelOptionSpec& o : kind.options)
    if (o.name == name) return &o;
  return nullptr;
}
}  // namespace

template <class T>
T ModelConfig::option(const std::string& name) const {
  const ModelOptionSpec* spec = find_option(model_kind(kind), name);
  QKV_CHECK(spec != nullptr, "model: kind \"{}\" has no option '{}'", kind, name);
  const auto it = options.find(name);
  const ModelOption& v = it != options.end() ? it->second : spec->default_value;
  const T* p = std::get_if<T>(&v);
  QKV_CHECK(p != nullptr && v.index() == spec->default_value.index(), "model: option '{}' of kind \"{}\" holds a value of another type", name, kind);
  return *p;
}
template std::int64_t ModelConfig::option<std::int64_t>(const std::string&) const;
template double ModelConfig::option<double>(const std::string&) const;
template bool ModelConfig::option<bool>(const std::string&) const;
template std::string ModelConfig::option<std::string>(const std::string&) const;

ModelConfig ModelConfig::with_defaults() const {
  ModelConfig out = *this;
  out.options.clear();
  for (const ModelOptionSpec& o : model_kind(kind).options) {
    const auto it = options.find(o.name);
    out.options[o.name] = it != options.end() ? it->second : o.default_value;
  }
  return out;
}

std::string kinds_with_option(const std::string& name) {
  std::vector<std::string> names;
  for (const ModelKind& k : registry())
    if (find_option(k, name)) names.push_back(k.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

std::string recompute_kinds() {
  std::vector<std::string> names;
  for (const ModelKind& k : registry())
    if (k.can_recompute) names.push_back(k.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

std::vector<std::string> model_kinds() {
  std::vector<std::string> names;
  for (const ModelKind& k : registry()) names.push_back(k.name);
  return names;
}

void check_model_config(const ModelConfig& c) {
  QKV_CHECK(c.vocab_size > 0 && c.seq_len > 0 && c.d_model > 0,
            "model: vocab_size, seq_len and d_model must be positive, got {}, {} and {}", c.vocab_size, c.seq_len,
            c.d_model);
  QKV_CHECK(c.layers > 0, "model: layers must be positive, got {}", c.layers);
  const ModelKind& kind = model_kind(c.kind);
  for (const auto& [name, value] : c.options) {
    const ModelOptionSpec* spec = find_option(kind, name);
    QKV_CHECK(spec != nullptr, "model: '{}' is not an option of kind \"{}\"{}", name, c.kind,
              kinds_with_option(name).empty() ? "" : fmt::format(" (it is one of {})", kinds_with_option(name)));
    QKV_CHECK(value.index() == spec->default_value.index(), "model: option '{}' has the wrong type", name);
    if (const auto* i = std::get_if<std::int64_t>(&value))
      QKV_CHECK(double(*i) >= spec->min && double(*i) <= spec->max, "model: {} = {} is out of range ({} to {})", name,
                *i, spec->min, spec->max);
    if (const auto* d = std::get_if<double>(&value))
      QKV_CHECK(*d >= spec->min && *d <= spec->max, "model: {} = {} is out of range ({} to {})", name, *d, spec->min,
                spec->max);
  }
  kind.check(c);
}

double parameter_count(const ModelConfig& c) { return model_kind(c.kind).parameters(c); }

double flops_per_token(const ModelConfig& c, std::int64_t t) { return model_kind(c.kind).flops_per_token(c, t); }

std::shared_ptr<LanguageModel> build_model(const ModelConfig& c, Generator& gen) {
  check_model_config(c);
  return model_kind(c.kind).build(c, gen);
}

const std::vector<ModelField>& model_fields() {
  using M = ModelConfig;
  static const std::vector<ModelField> fields = {
      {"kind", &M::kind, 0, 0,
       "the model (seed: one SelfAttention layer and a head; transformer; gpt2: GPT-2's architecture; llama: "
       "Llama's, Qwen2's and Mistral's, with the model.<option> keys marked llama)"},
      {"vocab_size", &M::vocab_size, 1, 2e6, "token ids 0..vocab_size-1", false},
      {"seq_len", &M::seq_len, 1, 1e6, "positional table size: the longest sequence the model takes", false},
      {"d_model", &M::d_model, 1, 1e5, "embedding width"},
      {"d_k", &M::d_k, 0, 1e5, "seed: query/key width (0 = d_model)"},
      {"d_v", &M::d_v, 0, 1e5, "seed: value width (0 = d_model)"},
      {"heads", &M::heads, 1, 1e4, "transformer, gpt2, llama: attention heads (must divide d_model; llama: query heads)"},
      {"layers", &M::layers, 1, 1e4, "transformer, gpt2, llama: blocks"},
      {"d_ff", &M::d_ff, 0, 1e6, "transformer, gpt2, llama: MLP width (0 = 4 * d_model; llama: intermediate_size)"},
      {"causal", &M::causal, 0, 0, "token i attends only to tokens j <= i"},
      {"attn_bias", &M::attn_bias, 0, 0, "biases on the attention projections"},
      {"dropout", &M::dropout, 0, 0.999,
       "transformer, gpt2: dropout before each residual add (gpt2: and on the embeddings)"},
      {"bias", &M::bias, 0, 0, "gpt2: biases in every Linear and LayerNorm (nanoGPT's bias)"},
      {"tie_embeddings", &M::tie_embeddings, 0, 0, "gpt2, llama: the output head is the token embedding (one tensor)"},
      {"norm_eps", &M::norm_eps, 1e-12, 1, "gpt2: LayerNorm eps; llama: RMSNorm eps (rms_norm_eps)"},
      {"recompute", &M::recompute, 0, 0,
       "transformer, gpt2, llama: activation checkpointing: each block keeps only its input in the forward and recomputes "
       "its activations in the backward (less memory, about a third more compute; the same gradients)"},
  };
  return fields;
}

std::shared_ptr<Module> LanguageModel::fresh() const {
  Generator throwaway;
  std::shared_ptr<LanguageModel> copy = build_model(config_, throwaway);
  copy->dropout_stream_->set_state(dropout_stream_->state());
  return copy;
}

}  // namespace qkv
