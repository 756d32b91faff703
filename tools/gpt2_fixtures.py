#!/usr/bin/python3
"""Writes the GPT-2 parity fixtures: two small random GPT-2s saved as the field saves them, and their logits and
greedy generations from a reference written here from the architecture (not from qkv, not from transformers).

Run with Debian's torch:  /usr/bin/python3 tools/gpt2_fixtures.py
  tests/fixtures/gpt2_hf/       config.json (Hugging Face's GPT2Config keys) + model.safetensors in Hugging Face's
                                layout: GPT2Model's names (h.0.attn.c_attn.weight, no "transformer."), Conv1D
                                weights stored (in, out), the attn.bias / attn.masked_bias buffers, no lm_head.
  tests/fixtures/gpt2_nanogpt/  config.json (nanoGPT's GPTConfig) + model.safetensors in nanoGPT's layout:
                                transformer.h.0.attn.c_attn.weight as nn.Linear (out, in), bias=False, and
                                lm_head.weight written out (the same values as wte: nanoGPT ties them).
  tests/fixtures/gpt2_parity.json  per layout: two prompts' logits (float64 reference from the float32 weights)
                                and 64 greedy tokens after a prompt: Hugging Face's with GPT-2's tanh GELU
                                (gelu_new), nanoGPT's with the exact GELU its model.py has (nn.GELU()).
The weights are drawn wider than GPT-2's 0.02 so that every greedy step has a clear winner (checked: the top two
logits differ by at least 1e-3 at every step, and float32 and float64 greedy agree).
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")

VOCAB, POSITIONS, D, HEADS, LAYERS, EPS = 96, 80, 32, 4, 2, 1e-5
GREEDY = 64


def weights(gen, bias):
    """Random GPT-2 weights under qkv's / nanoGPT's names, nn.Linear layout (out, in)."""
    def n(*shape, std=0.3):
        return torch.randn(*shape, generator=gen) * std

    w = {"transformer.wte.weight": n(VOCAB, D, std=0.2), "transformer.wpe.weight": n(POSITIONS, D, std=0.2)}
    for i in range(LAYERS):
        b = f"transformer.h.{i}."
        for name, out_f, in_f in (("attn.c_attn", 3 * D, D), ("attn.c_proj", D, D), ("mlp.c_fc", 4 * D, D),
                                  ("mlp.c_proj", D, 4 * D)):
            w[b + name + ".weight"] = n(out_f, in_f, std=1.0 / math.sqrt(in_f))
            if bias:
                w[b + name + ".bias"] = n(out_f, std=0.1)
        for ln in ("ln_1", "ln_2"):
            w[b + ln + ".weight"] = 1 + n(D, std=0.1)
            if bias:
                w[b + ln + ".bias"] = n(D, std=0.1)
    w["transformer.ln_f.weight"] = 1 + n(D, std=0.1)
    if bias:
        w["transformer.ln_f.bias"] = n(D, std=0.1)
    return {k: v.float() for k, v in w.items()}


def forward(w, ids, gelu="tanh"):
    """ids (B, T) -> logits (B, T, V) in the dtype of w: GPT-2 as published (pre-LN, tied head), with the tanh GELU
    (GPT-2's gelu_new) or nanoGPT's exact one (gelu="none")."""
    def get(name):
        return w.get(name)

    def ln(x, name):
        bias = get(name + ".bias")
        return F.layer_norm(x, (D,), get(name + ".weight"), bias, EPS)

    def lin(x, name):
        return F.linear(x, get(name + ".weight"), get(name + ".bias"))

    B, T = ids.shape
    hd = D // HEADS
    x = get("transformer.wte.weight")[ids] + get("transformer.wpe.weight")[torch.arange(T)]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for i in range(LAYERS):
        b = f"transformer.h.{i}."
        q, k, v = lin(ln(x, b + "ln_1"), b + "attn.c_attn").split(D, dim=2)
        q, k, v = (t.view(B, T, HEADS, hd).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, D)
        x = x + lin(y, b + "attn.c_proj")
        x = x + lin(F.gelu(lin(ln(x, b + "ln_2"), b + "mlp.c_fc"), approximate=gelu), b + "mlp.c_proj")
    return ln(x, "transformer.ln_f") @ get("transformer.wte.weight").T


def greedy(w, prompt, gelu):
    ids = list(prompt)
    for _ in range(GREEDY):
        logits = forward(w, torch.tensor([ids]), gelu)[0, -1]
        top = torch.topk(logits, 2).values
        assert float(top[0] - top[1]) > 1e-3, "a near tie: choose another seed"
        ids.append(int(logits.argmax()))
    return ids[len(prompt):]


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def hf_layout(w):
    """GPT2Model's names and Conv1D's (in, out) weights, with the buffers Hugging Face saves."""
    out = {}
    for name, t in w.items():
        short = name[len("transformer."):]
        conv1d = any(short.endswith(s) for s in ("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        out[short] = t.T.contiguous() if conv1d else t
    for i in range(LAYERS):
        out[f"h.{i}.attn.bias"] = torch.tril(torch.ones(POSITIONS, POSITIONS)).view(1, 1, POSITIONS, POSITIONS)
        out[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return out


def write_dir(name, files):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for file, content in files.items():
        if file.endswith(".json"):
            with open(os.path.join(d, file), "w") as f:
                json.dump(content, f, indent=2)
                f.write("\n")
        else:
            write_safetensors(os.path.join(d, file), *content)


def case(w, gen, gelu):
    prompts = torch.randint(0, VOCAB, (2, 8), generator=gen)
    w64 = {k: v.double() for k, v in w.items()}
    logits = forward(w64, prompts, gelu)
    start = [int(i) for i in torch.randint(0, VOCAB, (4,), generator=gen)]
    tokens = greedy(w64, start, gelu)
    assert tokens == greedy(w, start, gelu), "float32 and float64 greedy differ: choose another seed"
    return {"ids": prompts.reshape(-1).tolist(), "shape": list(logits.shape),
            "logits": [float(v) for v in logits.reshape(-1)], "prompt": start, "greedy": tokens}


def main():
    gen = torch.Generator().manual_seed(2026)
    hf = weights(gen, bias=True)
    nano = weights(gen, bias=False)
    write_dir("gpt2_hf", {
        "config.json": {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": VOCAB,
                        "n_positions": POSITIONS, "n_ctx": POSITIONS, "n_embd": D, "n_layer": LAYERS, "n_head": HEADS,
                        "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": EPS,
                        "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "scale_attn_weights": True,
                        "initializer_range": 0.02},
        "model.safetensors": (hf_layout(hf), {"format": "pt"}),
    })
    nano_file = dict(nano)
    nano_file["lm_head.weight"] = nano["transformer.wte.weight"]
    write_dir("gpt2_nanogpt", {
        "config.json": {"block_size": POSITIONS, "vocab_size": VOCAB, "n_layer": LAYERS, "n_head": HEADS, "n_embd": D,
                        "dropout": 0.0, "bias": False},
        "model.safetensors": (nano_file, {"format": "pt"}),
    })
    with open(os.path.join(OUT, "gpt2_parity.json"), "w") as f:
        json.dump({"tool": "tools/gpt2_fixtures.py", "torch": torch.__version__,
                   "huggingface": case(hf, gen, "tanh"), "nanogpt": case(nano, gen, "none")}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
