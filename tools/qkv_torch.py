"""PyTorch twins of qkv's layers and models, with the same parameter names (state-dict keys).

Used by tools/gen_fixtures.py to write the parity fixtures, and by tools that load qkv's exported weights.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def causal_mask(t):
    return torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)


def attention(q, k, v, causal, key_padding_mask):
    """q, k (..., T, d_k); v (..., T, d_v); key_padding_mask broadcastable to (..., T, T), True = padding."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(causal_mask(q.shape[-2]), float("-inf"))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask.bool(), float("-inf"))
    w = torch.softmax(scores, -1)
    return w @ v, w


class SelfAttention(nn.Module):
    """The explicit W^Q, W^K, W^V math: q = x W^Q, k = x W^K, v = x W^V, softmax(q k^T / sqrt(d_k)) v."""

    def __init__(self, d_model, d_k=None, d_v=None, bias=False, causal=False):
        super().__init__()
        d_k, d_v = d_k or d_model, d_v or d_model
        self.w_q = nn.Linear(d_model, d_k, bias=bias)
        self.w_k = nn.Linear(d_model, d_k, bias=bias)
        self.w_v = nn.Linear(d_model, d_v, bias=bias)
        self.causal = causal

    def forward(self, x, key_padding_mask=None):
        pad = None if key_padding_mask is None else key_padding_mask[:, None, :]
        return attention(self.w_q(x), self.w_k(x), self.w_v(x), self.causal, pad)


class MultiHeadSelfAttention(nn.Module):
    """Split-projection multi-head attention; the fixture script checks it against nn.MultiheadAttention."""

    def __init__(self, d_model, heads, causal=False, bias=False):
        super().__init__()
        self.w_q = nn.Linear(d_model, d_model, bias=bias)
        self.w_k = nn.Linear(d_model, d_model, bias=bias)
        self.w_v = nn.Linear(d_model, d_model, bias=bias)
        self.w_o = nn.Linear(d_model, d_model, bias=bias)
        self.heads, self.causal = heads, causal

    def forward(self, x, key_padding_mask=None):
        b, t, d = x.shape
        split = lambda y: y.reshape(b, t, self.heads, d // self.heads).permute(0, 2, 1, 3)
        pad = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        out, w = attention(split(self.w_q(x)), split(self.w_k(x)), split(self.w_v(x)), self.causal, pad)
        return self.w_o(out.permute(0, 2, 1, 3).reshape(b, t, d)), w


class MLP(nn.Module):
    def __init__(self, d, d_ff):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-LN: x + drop(attn(ln1(x))), then + drop(mlp(ln2(x))); dropout is the identity in eval mode."""

    def __init__(self, d_model, heads, d_ff=0, causal=False, attn_bias=False, dropout=0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, heads, causal, attn_bias)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, d_ff or 4 * d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        a, w = self.attn(self.ln1(x))
        x = x + self.drop(a)
        return x + self.drop(self.mlp(self.ln2(x))), w


class SeedModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["d_model"])
        self.pos_emb = nn.Embedding(cfg["seq_len"], cfg["d_model"])
        self.attn = SelfAttention(cfg["d_model"], cfg.get("d_k") or None, cfg.get("d_v") or None,
                                  cfg.get("attn_bias", False), cfg.get("causal", False))
        self.head = nn.Linear(cfg.get("d_v") or cfg["d_model"], cfg["vocab_size"])

    def forward(self, ids):
        x = self.tok_emb(ids) + self.pos_emb(torch.arange(ids.shape[1]))
        out, w = self.attn(x)
        return self.head(out), [w[:, None]]


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d_model"]
        self.tok_emb = nn.Embedding(cfg["vocab_size"], d)
        self.pos_emb = nn.Embedding(cfg["seq_len"], d)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, cfg["heads"], cfg.get("d_ff", 0), cfg.get("causal", False), cfg.get("attn_bias", False),
                             cfg.get("dropout", 0.0))
            for _ in range(cfg["layers"]))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg["vocab_size"])

    def forward(self, ids):
        h = self.tok_emb(ids) + self.pos_emb(torch.arange(ids.shape[1]))
        maps = []
        for block in self.blocks:
            h, w = block(h)
            maps.append(w)
        return self.head(self.ln_f(h)), maps


def build_model(cfg):
    return SeedModel(cfg) if cfg["kind"] == "seed" else Transformer(cfg)
