#!/usr/bin/python3
"""Writes the Llama-family parity fixtures: small random models saved as Hugging Face saves them, and their logits
and greedy generations from a reference written here from the architecture (modeling_llama / modeling_qwen2 as
published: RMSNorm in float32, rotate-half rotary embedding with float32 angles, grouped-query attention by
repeating key/value heads, SwiGLU), not from qkv and not from transformers.

Run with Debian's torch:  /usr/bin/python3 tools/llama_fixtures.py
  tests/fixtures/llama_gqa/    LlamaForCausalLM: 4 query heads over 2 key/value heads, untied head, rope_scaling
                               llama3 (an original context of 16, so all three frequency bands occur), float32.
  tests/fixtures/qwen2_mqa/    Qwen2ForCausalLM: 1 key/value head (multi-query), head_dim 12 (not d_model / heads),
                               q/k/v biases, tied, rope_scaling linear, bfloat16 weights in two shards with
                               model.safetensors.index.json.
  tests/fixtures/llama_bias/   LlamaForCausalLM with attention_bias and mlp_bias (biases on q, k, v, o and the MLP),
                               multi-head (4 and 4), float16 weights, generation_config.json.
  tests/fixtures/llama_parity.json  per model: two prompts' logits (float64 reference from the stored weights) and
                               24 greedy tokens after a prompt.
Weights are drawn wide (std 1/sqrt(fan_in)) so every greedy step has a clear winner (checked: top two logits differ
by at least 1e-3 at each step, and float32 and float64 greedy agree).
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")
VOCAB, POSITIONS, D, LAYERS, DFF = 96, 64, 32, 2, 48
GREEDY = 24

CASES = {
    "llama_gqa": dict(arch="LlamaForCausalLM", model_type="llama", heads=4, kv_heads=2, head_dim=8, tied=False,
                      qkv_bias=False, o_bias=False, mlp_bias=False, theta=10000.0, eps=1e-5,
                      scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 16},
                      dtype="F32", shards=1),
    "qwen2_mqa": dict(arch="Qwen2ForCausalLM", model_type="qwen2", heads=4, kv_heads=1, head_dim=12, tied=True,
                      qkv_bias=True, o_bias=False, mlp_bias=False, theta=1000000.0, eps=1e-6,
                      scaling={"rope_type": "linear", "factor": 2.0}, dtype="BF16", shards=2),
    "llama_bias": dict(arch="LlamaForCausalLM", model_type="llama", heads=4, kv_heads=4, head_dim=8, tied=False,
                       qkv_bias=True, o_bias=True, mlp_bias=True, theta=500000.0, eps=1e-6, scaling=None,
                       dtype="F16", shards=1),
}
TORCH_DTYPE = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def weights(gen, c):
    """Random weights under Hugging Face's names, nn.Linear layout (out, in), rounded to the file's dtype."""
    def n(*shape, std):
        return torch.randn(*shape, generator=gen) * std

    H, KV, HD = c["heads"], c["kv_heads"], c["head_dim"]
    w = {"model.embed_tokens.weight": n(VOCAB, D, std=0.5)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for name, out_f, in_f, bias in (("self_attn.q_proj", H * HD, D, c["qkv_bias"]),
                                        ("self_attn.k_proj", KV * HD, D, c["qkv_bias"]),
                                        ("self_attn.v_proj", KV * HD, D, c["qkv_bias"]),
                                        ("self_attn.o_proj", D, H * HD, c["o_bias"]),
                                        ("mlp.gate_proj", DFF, D, c["mlp_bias"]), ("mlp.up_proj", DFF, D, c["mlp_bias"]),
                                        ("mlp.down_proj", D, DFF, c["mlp_bias"])):
            w[p + name + ".weight"] = n(out_f, in_f, std=1.0 / math.sqrt(in_f))
            if bias:
                w[p + name + ".bias"] = n(out_f, std=0.1)
        w[p + "input_layernorm.weight"] = 1 + n(D, std=0.1)
        w[p + "post_attention_layernorm.weight"] = 1 + n(D, std=0.1)
    w["model.norm.weight"] = 1 + n(D, std=0.1)
    if not c["tied"]:
        w["lm_head.weight"] = n(VOCAB, D, std=1.0 / math.sqrt(D))
    return {k: v.to(TORCH_DTYPE[c["dtype"]]).float() for k, v in w.items()}


def inv_freq(c):
    """modeling_rope_utils: the default rule, linear and llama3 scaling, in float32 torch ops."""
    hd, base = c["head_dim"], c["theta"]
    inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    s = c["scaling"]
    if s is None:
        return inv
    if s["rope_type"] == "linear":
        return inv / s["factor"]
    factor, low, high, old = s["factor"], s["low_freq_factor"], s["high_freq_factor"], s["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv
    inv_l = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, inv_l)


def forward(w, c, ids):
    """ids (B, T) -> logits (B, T, V) in the dtype of w."""
    dt = w["model.embed_tokens.weight"].dtype
    H, KV, HD = c["heads"], c["kv_heads"], c["head_dim"]

    def rms(x, name):
        h = x.float() if dt != torch.float64 else x
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + c["eps"])
        return w[name] * h.to(dt)

    def lin(x, name):
        return F.linear(x, w[name + ".weight"], w.get(name + ".bias"))

    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    B, T = ids.shape
    freqs = torch.arange(T).float()[:, None] * inv_freq(c)[None, :]  # float32, as Hugging Face
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(dt), emb.sin().to(dt)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    x = w["model.embed_tokens.weight"][ids]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = rms(x, p + "input_layernorm.weight")
        q = lin(h, p + "self_attn.q_proj").view(B, T, H, HD).transpose(1, 2)
        k = lin(h, p + "self_attn.k_proj").view(B, T, KV, HD).transpose(1, 2)
        v = lin(h, p + "self_attn.v_proj").view(B, T, KV, HD).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)  # repeat_kv: query head i reads key/value head i // (H / KV)
        v = v.repeat_interleave(H // KV, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HD)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, H * HD)
        x = x + lin(y, p + "self_attn.o_proj")
        h = rms(x, p + "post_attention_layernorm.weight")
        x = x + lin(F.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    head = w["model.embed_tokens.weight"] if c["tied"] else w["lm_head.weight"]
    return rms(x, "model.norm.weight") @ head.T


def greedy(w, c, prompt):
    ids = list(prompt)
    for _ in range(GREEDY):
        logits = forward(w, c, torch.tensor([ids]))[0, -1]
        top = torch.topk(logits, 2).values
        assert float(top[0] - top[1]) > 1e-3, "a near tie: choose another seed"
        ids.append(int(logits.argmax()))
    return ids[len(prompt):]


def safetensors_bytes(tensors, dtype, metadata):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous().to(TORCH_DTYPE[dtype])
        data = t.numpy().tobytes() if dtype == "F32" else t.view(torch.int16).numpy().tobytes()  # numpy has no bf16
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def hf_config(c):
    cfg = {"architectures": [c["arch"]], "model_type": c["model_type"], "vocab_size": VOCAB, "hidden_size": D,
           "intermediate_size": DFF, "num_hidden_layers": LAYERS, "num_attention_heads": c["heads"],
           "num_key_value_heads": c["kv_heads"], "head_dim": c["head_dim"], "max_position_embeddings": POSITIONS,
           "rms_norm_eps": c["eps"], "rope_theta": c["theta"], "rope_scaling": c["scaling"], "hidden_act": "silu",
           "tie_word_embeddings": c["tied"], "initializer_range": 0.02, "attention_dropout": 0.0,
           "bos_token_id": 1, "eos_token_id": 2, "use_cache": True,
           "torch_dtype": {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[c["dtype"]]}
    if c["model_type"] == "llama":
        cfg.update({"attention_bias": c["qkv_bias"], "mlp_bias": c["mlp_bias"], "pretraining_tp": 1})
    else:
        cfg.update({"use_sliding_window": False, "sliding_window": 4096, "max_window_layers": LAYERS})
    return cfg


def write_case(name, c, w):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(c), f, indent=2)
        f.write("\n")
    if name == "llama_bias":
        with open(os.path.join(d, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 1, "eos_token_id": 2, "do_sample": True, "temperature": 0.6, "top_p": 0.9}, f,
                      indent=2)
            f.write("\n")
    names = list(w)
    if c["shards"] == 1:
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(safetensors_bytes(w, c["dtype"], {"format": "pt"}))
        return
    per = (len(names) + c["shards"] - 1) // c["shards"]
    index = {"metadata": {"total_size": 0}, "weight_map": {}}
    for s in range(c["shards"]):
        part = names[s * per:(s + 1) * per]
        file = f"model-{s + 1:05d}-of-{c['shards']:05d}.safetensors"
        blob = safetensors_bytes({k: w[k] for k in part}, c["dtype"], {"format": "pt"})
        with open(os.path.join(d, file), "wb") as f:
            f.write(blob)
        for k in part:
            index["weight_map"][k] = file
            index["metadata"]["total_size"] += w[k].numel() * (4 if c["dtype"] == "F32" else 2)
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def case(w, c, gen):
    prompts = torch.randint(0, VOCAB, (2, 9), generator=gen)
    w64 = {k: v.double() for k, v in w.items()}
    logits = forward(w64, c, prompts)
    logits32 = forward(w, c, prompts)
    assert (logits32.double() - logits).abs().max() < 1e-4
    start = [int(i) for i in torch.randint(0, VOCAB, (5,), generator=gen)]
    tokens = greedy(w64, c, start)
    assert tokens == greedy(w, c, start), "float32 and float64 greedy differ: choose another seed"
    return {"ids": prompts.reshape(-1).tolist(), "shape": list(logits.shape),
            "logits": [float(v) for v in logits.reshape(-1)], "prompt": start, "greedy": tokens}


def main():
    gen = torch.Generator().manual_seed(2027)
    out = {"tool": "tools/llama_fixtures.py", "torch": torch.__version__}
    for name, c in CASES.items():
        w = weights(gen, c)
        write_case(name, c, w)
        out[name] = case(w, c, gen)
    with open(os.path.join(OUT, "llama_parity.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
