// The same models, shapes, optimizer and random batches as `qkv bench`, in libtorch (Debian's libtorch-dev),
// printing the same line. Built only when Torch is found; never required. Usage:
//   bench_libtorch tiny|small|medium|large|gpt2|llama [--steps N] [--warmup N] [--threads N] [--seq T] [--batch B]
//                  [--bf16 1]
// --seq and --batch change the config's sequence length and batch, as qkv bench's data.seq_len and
// train.batch_size overrides do. --bf16 1 runs forward and loss under CPU autocast to bfloat16 (torch.autocast's
// C++ switches), as qkv's train.precision = "bf16".
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

namespace {

struct Shape {
  std::string kind;
  int64_t vocab, seq, d, heads, layers, batch;
  int64_t kv_heads = 0, d_ff = 0;  // llama
};

Shape shape_of(const std::string& name) {
  if (name == "tiny") return {"seed", 16, 12, 32, 1, 1, 64};
  if (name == "small") return {"transformer", 64, 64, 128, 4, 2, 32};
  if (name == "medium") return {"transformer", 64, 128, 256, 4, 4, 16};
  if (name == "large") return {"transformer", 64, 256, 512, 8, 6, 8};
  if (name == "gpt2") return {"gpt2", 50257, 1024, 768, 12, 12, 4};  // GPT-2 small, bench/configs/gpt2.toml
  if (name == "llama") return {"llama", 49152, 256, 576, 9, 30, 4, 3, 1536};  // SmolLM2-135M, bench/configs/llama.toml
  std::fprintf(stderr, "unknown config %s (tiny, small, medium, large, gpt2, llama)\n", name.c_str());
  std::exit(2);
}

// softmax(q k^T / sqrt(d_k)) v, as qkv computes it.
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const auto scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(-1)));
  return torch::matmul(torch::softmax(scores, -1), v);
}

struct SeedModelImpl : torch::nn::Module {
  SeedModelImpl(const Shape& s)
      : tok(register_module("tok_emb", torch::nn::Embedding(s.vocab, s.d))),
        pos(register_module("pos_emb", torch::nn::Embedding(s.seq, s.d))),
        wq(register_module("w_q", torch::nn::Linear(torch::nn::LinearOptions(s.d, s.d).bias(false)))),
        wk(register_module("w_k", torch::nn::Linear(torch::nn::LinearOptions(s.d, s.d).bias(false)))),
        wv(register_module("w_v", torch::nn::Linear(torch::nn::LinearOptions(s.d, s.d).bias(false)))),
        head(register_module("head", torch::nn::Linear(s.d, s.vocab))) {}
  torch::Tensor forward(const torch::Tensor& ids) {
    const auto x = tok(ids) + pos(torch::arange(ids.size(1)));
    return head(attention(wq(x), wk(x), wv(x)));
  }
  torch::nn::Embedding tok, pos;
  torch::nn::Linear wq, wk, wv, head;
};
TORCH_MODULE(SeedModel);

struct BlockImpl : torch::nn::Module {
  BlockImpl(int64_t d, int64_t h)
      : heads(h),
        ln1(register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))),
        ln2(register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))),
        wq(register_module("w_q", torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)))),
        wk(register_module("w_k", torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)))),
        wv(register_module("w_v", torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)))),
        wo(register_module("w_o", torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)))),
        fc1(register_module("fc1", torch::nn::Linear(d, 4 * d))),
        fc2(register_module("fc2", torch::nn::Linear(4 * d, d))) {}
  torch::Tensor forward(torch::Tensor x) {
    const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
    const auto split = [&](const torch::Tensor& y) { return y.view({b, t, heads, d / heads}).transpose(1, 2); };
    const auto h = ln1(x);
    const auto a = attention(split(wq(h)), split(wk(h)), split(wv(h))).transpose(1, 2).reshape({b, t, d});
    x = x + wo(a);
    return x + fc2(torch::gelu(fc1(ln2(x))));
  }
  int64_t heads;
  torch::nn::LayerNorm ln1, ln2;
  torch::nn::Linear wq, wk, wv, wo, fc1, fc2;
};
TORCH_MODULE(Block);

struct TransformerImpl : torch::nn::Module {
  TransformerImpl(const Shape& s)
      : tok(register_module("tok_emb", torch::nn::Embedding(s.vocab, s.d))),
        pos(register_module("pos_emb", torch::nn::Embedding(s.seq, s.d))),
        blocks(register_module("blocks", torch::nn::ModuleList())),
        ln_f(register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.d})))),
        head(register_module("head", torch::nn::Linear(s.d, s.vocab))) {
    for (int64_t i = 0; i < s.layers; ++i) blocks->push_back(Block(s.d, s.heads));
  }
  torch::Tensor forward(const torch::Tensor& ids) {
    auto h = tok(ids) + pos(torch::arange(ids.size(1)));
    for (const auto& m : *blocks) h = m->as<Block>()->forward(h);
    return head(ln_f(h));
  }
  torch::nn::Embedding tok, pos;
  torch::nn::ModuleList blocks;
  torch::nn::LayerNorm ln_f;
  torch::nn::Linear head;
};
TORCH_MODULE(Transformer);

// GPT-2 as nanoGPT writes it (what qkv's model.kind = "gpt2" computes): fused c_attn, causal attention, tanh GELU,
// the head tied to wte.
struct GPT2BlockImpl : torch::nn::Module {
  GPT2BlockImpl(int64_t d, int64_t h)
      : heads(h),
        ln_1(register_module("ln_1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))),
        ln_2(register_module("ln_2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))),
        c_attn(register_module("c_attn", torch::nn::Linear(d, 3 * d))),
        c_proj(register_module("c_proj", torch::nn::Linear(d, d))),
        c_fc(register_module("c_fc", torch::nn::Linear(d, 4 * d))),
        mlp_proj(register_module("mlp_proj", torch::nn::Linear(4 * d, d))) {}
  torch::Tensor forward(torch::Tensor x) {
    const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
    const auto qkv = c_attn(ln_1(x)).split(d, 2);
    const auto split = [&](const torch::Tensor& y) { return y.view({b, t, heads, d / heads}).transpose(1, 2); };
    const auto q = split(qkv[0]), k = split(qkv[1]), v = split(qkv[2]);
    auto scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d / heads));
    scores = scores.masked_fill(torch::ones({t, t}, torch::kBool).triu(1), -INFINITY);
    const auto a = torch::matmul(torch::softmax(scores, -1), v).transpose(1, 2).reshape({b, t, d});
    x = x + c_proj(a);
    return x + mlp_proj(torch::gelu(c_fc(ln_2(x)), "tanh"));
  }
  int64_t heads;
  torch::nn::LayerNorm ln_1, ln_2;
  torch::nn::Linear c_attn, c_proj, c_fc, mlp_proj;
};
TORCH_MODULE(GPT2Block);

struct GPT2Impl : torch::nn::Module {
  GPT2Impl(const Shape& s)
      : wte(register_module("wte", torch::nn::Embedding(s.vocab, s.d))),
        wpe(register_module("wpe", torch::nn::Embedding(s.seq, s.d))),
        h(register_module("h", torch::nn::ModuleList())),
        ln_f(register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.d})))) {
    for (int64_t i = 0; i < s.layers; ++i) h->push_back(GPT2Block(s.d, s.heads));
  }
  torch::Tensor forward(const torch::Tensor& ids) {
    auto x = wte(ids) + wpe(torch::arange(ids.size(1)));
    for (const auto& m : *h) x = m->as<GPT2Block>()->forward(x);
    return torch::matmul(ln_f(x), wte->weight.t());
  }
  torch::nn::Embedding wte, wpe;
  torch::nn::ModuleList h;
  torch::nn::LayerNorm ln_f;
};
TORCH_MODULE(GPT2);

// Hugging Face's Llama (what qkv's model.kind = "llama" computes): RMSNorm, q/k/v/o projections without bias,
// rotate-half rotary embedding (theta 100000), key/value heads repeated for their query groups, causal attention,
// SwiGLU, the head tied to the embedding.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w) {
  return w * (x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-5));
}
torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const auto rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}
struct LlamaBlockImpl : torch::nn::Module {
  LlamaBlockImpl(const Shape& s)
      : heads(s.heads), kv(s.kv_heads), hd(s.d / s.heads),
        ln_1(register_parameter("input_layernorm", torch::ones({s.d}))),
        ln_2(register_parameter("post_attention_layernorm", torch::ones({s.d}))),
        q(register_module("q_proj", torch::nn::Linear(torch::nn::LinearOptions(s.d, s.d).bias(false)))),
        k(register_module("k_proj", torch::nn::Linear(torch::nn::LinearOptions(s.d, s.kv_heads * hd).bias(false)))),
        v(register_module("v_proj", torch::nn::Linear(torch::nn::LinearOptions(s.d, s.kv_heads * hd).bias(false)))),
        o(register_module("o_proj", torch::nn::Linear(torch::nn::LinearOptions(s.d, s.d).bias(false)))),
        gate(register_module("gate_proj", torch::nn::Linear(torch::nn::LinearOptions(s.d, s.d_ff).bias(false)))),
        up(register_module("up_proj", torch::nn::Linear(torch::nn::LinearOptions(s.d, s.d_ff).bias(false)))),
        down(register_module("down_proj", torch::nn::Linear(torch::nn::LinearOptions(s.d_ff, s.d).bias(false)))) {}
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& cos, const torch::Tensor& sin) {
    const int64_t b = x.size(0), t = x.size(1);
    const auto h = rms_norm(x, ln_1);
    const auto split = [&](const torch::Tensor& y, int64_t n) { return y.view({b, t, n, hd}).transpose(1, 2); };
    const auto qh = rotate(split(q(h), heads), cos, sin);
    const auto kh = rotate(split(k(h), kv), cos, sin).repeat_interleave(heads / kv, 1);
    const auto vh = split(v(h), kv).repeat_interleave(heads / kv, 1);
    auto scores = torch::matmul(qh, kh.transpose(-1, -2)) / std::sqrt(static_cast<double>(hd));
    scores = scores.masked_fill(torch::ones({t, t}, torch::kBool).triu(1), -INFINITY);
    x = x + o(torch::matmul(torch::softmax(scores, -1), vh).transpose(1, 2).reshape({b, t, heads * hd}));
    const auto m = rms_norm(x, ln_2);
    return x + down(torch::silu(gate(m)) * up(m));
  }
  int64_t heads, kv, hd;
  torch::Tensor ln_1, ln_2;
  torch::nn::Linear q, k, v, o, gate, up, down;
};
TORCH_MODULE(LlamaBlock);

struct LlamaImpl : torch::nn::Module {
  LlamaImpl(const Shape& s)
      : embed(register_module("embed_tokens", torch::nn::Embedding(s.vocab, s.d))),
        layers(register_module("layers", torch::nn::ModuleList())), norm(register_parameter("norm", torch::ones({s.d}))) {
    for (int64_t i = 0; i < s.layers; ++i) layers->push_back(LlamaBlock(s));
    const int64_t hd = s.d / s.heads;
    const auto inv = 1.0 / torch::pow(100000.0, torch::arange(0, hd, 2, torch::kFloat) / hd);
    const auto freqs = torch::outer(torch::arange(s.seq, torch::kFloat), inv);
    cos = torch::cat({freqs, freqs}, -1).cos();
    sin = torch::cat({freqs, freqs}, -1).sin();
  }
  torch::Tensor forward(const torch::Tensor& ids) {
    auto x = embed(ids);
    const auto c = cos.narrow(0, 0, ids.size(1)), sn = sin.narrow(0, 0, ids.size(1));
    for (const auto& m : *layers) x = m->as<LlamaBlock>()->forward(x, c, sn);
    return torch::matmul(rms_norm(x, norm), embed->weight.t());
  }
  torch::nn::Embedding embed;
  torch::nn::ModuleList layers;
  torch::Tensor norm, cos, sin;
};
TORCH_MODULE(Llama);

// A model of the shape's kind: its module (for the parameters) and its forward.
struct Built {
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(const torch::Tensor&)> forward;
};

template <class Model>
Built built(const Shape& s) {
  Model m(s);
  return {m.ptr(), [m](const torch::Tensor& x) mutable { return m->forward(x); }};
}

Built build(const Shape& s) {
  if (s.kind == "seed") return built<SeedModel>(s);
  if (s.kind == "gpt2") return built<GPT2>(s);
  if (s.kind == "llama") return built<Llama>(s);
  return built<Transformer>(s);
}

// Adam as qkv's default; gpt2 trains with AdamW (bench/configs/gpt2.toml).
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const Shape& s, torch::nn::Module& module) {
  if (s.kind == "gpt2" || s.kind == "llama")
    return std::make_unique<torch::optim::AdamW>(module.parameters(),
                                                 torch::optim::AdamWOptions(1e-3).weight_decay(0.1));
  return std::make_unique<torch::optim::Adam>(module.parameters(), torch::optim::AdamOptions(1e-3));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_libtorch tiny|small|medium|large|gpt2|llama [--steps N] [--warmup N] [--threads N] "
                         "[--seq T] [--batch B] [--bf16 1]\n");
    return 2;
  }
  Shape s = shape_of(argv[1]);
  int64_t steps = 50, warmup = 5;
  bool bf16 = false;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atol(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--warmup")) warmup = std::atol(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--seq")) s.seq = std::atol(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) s.batch = std::atol(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--bf16")) bf16 = std::atoi(argv[i + 1]) != 0;
  }
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  const Built model = build(s);
  const auto forward = model.forward;
  const auto optimizer = make_optimizer(s, *model.module);
  auto& opt = *optimizer;
  // Random batches drawn up front, as qkv bench does; targets: reversal for the seed task, copy otherwise.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> batches;
  for (int i = 0; i < 64; ++i) {
    auto x = torch::randint(s.vocab, {s.batch, s.seq}, torch::kLong);
    batches.emplace_back(x, s.kind == "seed" ? x.flip({1}) : x.clone());
  }
  const auto step = [&](int64_t i) {
    const auto& [x, y] = batches[static_cast<size_t>(i % 64)];
    at::autocast::set_cpu_enabled(bf16);  // torch.autocast("cpu", torch.bfloat16) around forward and loss
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    const auto logits = forward(x);
    const auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, s.vocab}), y.reshape({-1}));
    at::autocast::set_cpu_enabled(false);
    at::autocast::clear_cache();
    opt.zero_grad();
    loss.backward();
    opt.step();
  };
  for (int64_t i = 0; i < warmup; ++i) step(i);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) step(warmup + i);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double sps = static_cast<double>(steps) / secs;
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("steps_per_s=%.3f tokens_per_s=%.1f peak_rss_mb=%.1f threads=%d precision=%s\n", sps,
              sps * static_cast<double>(s.batch * s.seq), static_cast<double>(ru.ru_maxrss) / 1024.0, threads,
              bf16 ? "bf16" : "fp32");
  return 0;
}
