#!/usr/bin/python3
"""Writes the PyTorch reference fixtures that qkv's tests read (tests/fixtures/*.json).

Run with Debian's torch:  /usr/bin/python3 tools/gen_fixtures.py
Tests never import torch; they only read these small JSON files. Every case stores its float64 inputs, the
output, a cotangent and the gradient of sum(output * cotangent) with respect to each floating input.
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qkv_torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")
torch.manual_seed(1234)


def t2j(t):
    t = t.detach()
    if t.dtype == torch.int64:
        return {"shape": list(t.shape), "ids": t.reshape(-1).tolist()}
    return {"shape": list(t.shape), "data": [float(v) for v in t.double().reshape(-1).tolist()]}


def rnd(*shape, positive=False):
    x = torch.randn(*shape, dtype=torch.float64)
    return x.abs() + 0.5 if positive else x


def op_case(name, fn, inputs, **args):
    """fn(*inputs) -> tensor; float inputs get gradients."""
    leaves = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    out = fn(*leaves)
    cot = None
    if out.requires_grad:  # comparisons, all and any are not differentiable: values only
        cot = torch.randn(out.shape, dtype=torch.float64)
        (out * cot).sum().backward()
    return {
        "op": name,
        "args": args,
        "inputs": [t2j(x) for x in inputs],
        "out": t2j(out),
        "cotangent": t2j(cot) if cot is not None else None,
        "grads": [t2j(x.grad) if x.grad is not None else None for x in leaves],
    }


def ops_cases():
    c = []
    A, B = rnd(3, 4), rnd(3, 4)
    c.append(op_case("add", torch.add, [A, B]))
    c.append(op_case("add", torch.add, [rnd(2, 3, 4), rnd(4)]))
    c.append(op_case("add", torch.add, [rnd(2, 1, 4), rnd(3, 1)]))
    c.append(op_case("sub", torch.sub, [rnd(2, 3), rnd(1, 3)]))
    c.append(op_case("mul", torch.mul, [rnd(2, 3, 4), rnd(3, 1)]))
    c.append(op_case("div", torch.div, [rnd(2, 3), rnd(2, 1, positive=True)]))
    c.append(op_case("add_scalar", lambda x: x + 1.5, [A], s=1.5))
    c.append(op_case("mul_scalar", lambda x: x * -2.5, [A], s=-2.5))
    c.append(op_case("neg", torch.neg, [A]))
    c.append(op_case("pow", lambda x: torch.pow(x, 3.0), [A], p=3.0))
    c.append(op_case("pow", lambda x: torch.pow(x, 0.5), [rnd(3, 4, positive=True)], p=0.5))
    c.append(op_case("exp", torch.exp, [A]))
    c.append(op_case("log", torch.log, [rnd(3, 4, positive=True)]))
    c.append(op_case("sqrt", torch.sqrt, [rnd(3, 4, positive=True)]))
    c.append(op_case("tanh", torch.tanh, [A]))
    c.append(op_case("sigmoid", torch.sigmoid, [A]))
    c.append(op_case("relu", torch.relu, [A]))
    c.append(op_case("gelu", lambda x: F.gelu(x), [rnd(5, 4) * 2], approximate=False))
    c.append(op_case("gelu", lambda x: F.gelu(x, approximate="tanh"), [rnd(5, 4) * 2], approximate=True))
    c.append(op_case("matmul", torch.matmul, [rnd(3, 4), rnd(4, 5)]))
    c.append(op_case("matmul", torch.matmul, [rnd(2, 3, 4), rnd(4, 5)]))
    c.append(op_case("matmul", torch.matmul, [rnd(2, 3, 4), rnd(2, 4, 5)]))
    c.append(op_case("matmul", torch.matmul, [rnd(2, 1, 3, 4), rnd(3, 4, 2)]))
    c.append(op_case("matmul", torch.matmul, [rnd(4), rnd(2, 4, 3)]))
    c.append(op_case("matmul", torch.matmul, [rnd(2, 3, 4), rnd(4)]))
    c.append(op_case("transpose", lambda x: x.transpose(0, 2), [rnd(2, 3, 4)], dim0=0, dim1=2))
    c.append(op_case("permute", lambda x: x.permute(2, 0, 3, 1), [rnd(2, 3, 4, 5)], dims=[2, 0, 3, 1]))
    c.append(op_case("reshape", lambda x: x.reshape(4, -1), [rnd(2, 3, 4)], shape=[4, -1]))
    c.append(op_case("concat", lambda x, y, z: torch.cat([x, y, z], 1), [rnd(2, 1, 3), rnd(2, 2, 3), rnd(2, 3, 3)],
                     dim=1))
    c.append(op_case("narrow", lambda x: x.narrow(1, 1, 2), [rnd(2, 4, 3)], dim=1, start=1, length=2))
    c.append(op_case("slice", lambda x: x[:, -3:-1], [rnd(2, 4)], dim=1, start=-3, end=-1))
    c.append(op_case("sum", lambda x: x.sum(), [rnd(3, 4)]))
    c.append(op_case("sum_dims", lambda x: x.sum(dim=(0, 2), keepdim=True), [rnd(2, 3, 4)], dims=[0, 2], keepdim=True))
    c.append(op_case("sum_dims", lambda x: x.sum(dim=-1), [rnd(2, 3, 4)], dims=[-1], keepdim=False))
    c.append(op_case("mean", lambda x: x.mean(), [rnd(3, 4)]))
    c.append(op_case("mean_dims", lambda x: x.mean(dim=1, keepdim=True), [rnd(2, 3, 4)], dims=[1], keepdim=True))
    c.append(op_case("max_dim", lambda x: x.max(dim=1).values, [rnd(2, 5, 3)], dim=1, keepdim=False))
    c.append(op_case("max_dim", lambda x: x.max(dim=-1, keepdim=True).values, [rnd(2, 5, 3)], dim=-1, keepdim=True))
    c.append(op_case("max", lambda x: x.max(), [rnd(3, 4)]))
    c.append(op_case("softmax", lambda x: torch.softmax(x, -1), [rnd(2, 3, 5) * 3], dim=-1))
    c.append(op_case("softmax", lambda x: torch.softmax(x, 1), [rnd(2, 3, 5) * 3], dim=1))
    c.append(op_case("log_softmax", lambda x: torch.log_softmax(x, -1), [rnd(4, 6) * 3], dim=-1))
    c.append(op_case("log_softmax", lambda x: torch.log_softmax(x, 0), [rnd(4, 6) * 3], dim=0))
    tgt = torch.tensor([1, -100, 4, 0, 2, -100], dtype=torch.int64)
    logits = rnd(6, 5) * 2
    for red in ["mean", "sum", "none"]:
        c.append(op_case("cross_entropy", lambda x, t, red=red: F.cross_entropy(x, t, reduction=red), [logits, tgt],
                         reduction=red, ignore_index=-100))
    tgt2 = torch.tensor([1, 3, 4, 3], dtype=torch.int64)
    c.append(op_case("cross_entropy", lambda x, t: F.cross_entropy(x, t, ignore_index=3), [rnd(4, 5), tgt2],
                     reduction="mean", ignore_index=3))
    causal = torch.triu(torch.ones(4, 4, dtype=torch.float64), diagonal=1)
    c.append(op_case("masked_fill", lambda x, m: x.masked_fill(m.bool(), -1e9), [rnd(2, 4, 4), causal], value=-1e9))
    pad = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.float64).reshape(2, 1, 4)
    c.append(op_case("masked_fill", lambda x, m: x.masked_fill(m.bool(), 0.0), [rnd(2, 3, 4), pad], value=0.0))
    ids = torch.tensor([[1, 4, 1], [0, 2, 4]], dtype=torch.int64)
    c.append(op_case("embedding", lambda w, i: F.embedding(i, w), [rnd(5, 3), ids]))
    return c


def math_cases():
    """Pointwise math (core/ops/math.cpp) and statistics (core/ops/reduce.cpp)."""
    c = []
    A = rnd(3, 4)
    c.append(op_case("sin", torch.sin, [A]))
    c.append(op_case("cos", torch.cos, [A]))
    c.append(op_case("abs", torch.abs, [A]))
    c.append(op_case("sign", torch.sign, [A]))
    c.append(op_case("rsqrt", torch.rsqrt, [rnd(3, 4, positive=True)]))
    c.append(op_case("erf", torch.erf, [A]))
    c.append(op_case("log1p", torch.log1p, [rnd(3, 4, positive=True) - 0.4]))
    c.append(op_case("silu", F.silu, [A * 2]))
    c.append(op_case("clamp", lambda x: torch.clamp(x, -0.5, 0.7), [A], min=-0.5, max=0.7))
    c.append(op_case("clamp", lambda x: torch.clamp(x, min=0.1), [A], min=0.1, max=None))
    B = rnd(3, 4)
    B[0, :2] = A[0, :2]  # ties split the gradient
    c.append(op_case("maximum", torch.maximum, [A, B]))
    c.append(op_case("minimum", torch.minimum, [A, B]))
    c.append(op_case("maximum", torch.maximum, [rnd(2, 3, 4), rnd(4)]))
    c.append(op_case("min", torch.min, [A]))
    c.append(op_case("min_dim", lambda x: torch.min(x, 1).values, [rnd(2, 3, 4)], dim=1, keepdim=False))
    c.append(op_case("var", lambda x: torch.var(x, [1], correction=1), [rnd(2, 5, 3)], dims=[1], correction=1,
                     keepdim=False))
    c.append(op_case("var", lambda x: torch.var(x, [0, 2], correction=0, keepdim=True), [rnd(2, 5, 3)], dims=[0, 2],
                     correction=0, keepdim=True))
    c.append(op_case("std", lambda x: torch.std(x, [-1]), [rnd(4, 6)], dims=[-1], correction=1, keepdim=False))
    c.append(op_case("logsumexp", lambda x: torch.logsumexp(x, 1), [rnd(2, 5, 3) * 10], dim=1, keepdim=False))
    c.append(op_case("cumsum", lambda x: torch.cumsum(x, 1), [rnd(2, 5, 3)], dim=1))
    c.append(op_case("norm", lambda x: torch.linalg.vector_norm(x), [A], p=2.0, dims=None, keepdim=False))
    c.append(op_case("norm", lambda x: torch.linalg.vector_norm(x, 3.0, [1], keepdim=True), [A], p=3.0, dims=[1],
                     keepdim=True))
    c.append(op_case("norm", lambda x: torch.linalg.vector_norm(x, 1.0, [0]), [A], p=1.0, dims=[0], keepdim=False))
    # Shapes, sorting and einsum (core/ops/shape.cpp, random.cpp, matmul.cpp).
    c.append(op_case("tril", lambda x: torch.tril(x, 1), [rnd(2, 3, 4)], k=1))
    c.append(op_case("triu", lambda x: torch.triu(x, -1), [rnd(4, 3)], k=-1))
    c.append(op_case("sort", lambda x: torch.sort(x, dim=1, descending=True, stable=True).values, [rnd(2, 5, 3)], dim=1,
                     descending=True))
    c.append(op_case("sort_indices", lambda x: torch.sort(x, dim=-1, stable=True).indices, [rnd(3, 6)], dim=-1,
                     descending=False))
    c.append(op_case("topk", lambda x: torch.topk(x, 2, 0).values, [rnd(5, 3)], k=2, dim=0, largest=True))
    c.append(op_case("topk", lambda x: torch.topk(x, 3, -1, largest=False).values, [rnd(2, 6)], k=3, dim=-1,
                     largest=False))
    for eq, shapes in (("ij,jk->ik", [(3, 4), (4, 5)]), ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
                       ("i,j->ij", [(3,), (4,)]), ("ij,ij->", [(3, 4), (3, 4)]), ("bij,bj->bi", [(2, 3, 4), (2, 4)]),
                       ("ijk,kj->ki", [(2, 3, 4), (4, 3)]), ("ab,cd->dbc", [(2, 3), (4, 5)])):
        c.append(op_case("einsum", lambda x, y, e=eq: torch.einsum(e, x, y), [rnd(*shapes[0]), rnd(*shapes[1])],
                         equation=eq))
    return c


def compare_index_cases():
    """Comparisons, where, all/any and the indexing ops (own seed, so adding them left ops.json unchanged)."""
    torch.manual_seed(4321)
    c = []
    a = torch.randint(-2, 3, (3, 4)).double()  # small integers, so == and != have both outcomes
    b = torch.randint(-2, 3, (4,)).double()
    for name in ["eq", "ne", "lt", "le", "gt", "ge"]:
        fn = getattr(torch, name)
        c.append(op_case(name, lambda x, y, fn=fn: fn(x, y).double(), [a, b]))
        c.append(op_case(name + "_scalar", lambda x, fn=fn: fn(x, 1.0).double(), [a], s=1.0))
    ids = torch.randint(0, 3, (2, 5))
    c.append(op_case("eq", lambda x, y: torch.eq(x, y).double(), [ids, torch.randint(0, 3, (2, 5))]))
    cond = (torch.rand(2, 1, 4) > 0.5).double()
    c.append(op_case("where", lambda m, x, y: torch.where(m.bool(), x, y), [cond, rnd(2, 3, 4), rnd(3, 1)]))
    for name in ["all", "any"]:
        fn = getattr(torch, name)
        c.append(op_case(name, lambda x, fn=fn: fn(x).double(), [a]))
        c.append(op_case(name, lambda x, fn=fn: fn(x).double(), [torch.ones(2, 3, dtype=torch.float64)]))
        c.append(op_case(name + "_dim", lambda x, fn=fn: fn(x, 1, keepdim=True).double(), [a], dim=1, keepdim=True))
        c.append(op_case(name + "_dim", lambda x, fn=fn: fn(x, 0).double(), [a], dim=0, keepdim=False))
    c.append(op_case("gather", lambda x, i: torch.gather(x, 1, i), [rnd(3, 5), torch.randint(0, 5, (3, 4))], dim=1))
    c.append(op_case("gather", lambda x, i: torch.gather(x, 0, i), [rnd(4, 3, 2), torch.randint(0, 4, (2, 3, 2))],
                     dim=0))
    c.append(op_case("gather", lambda x, i: torch.gather(x, -1, i), [rnd(2, 3, 4), torch.randint(0, 4, (2, 2, 6))],
                     dim=-1))
    c.append(op_case("index_select", lambda x, i: torch.index_select(x, 1, i), [rnd(2, 5, 3),
                     torch.tensor([4, 0, 4, 2])], dim=1))
    c.append(op_case("index_select", lambda x, i: torch.index_select(x, 0, i), [rnd(4, 3), torch.tensor([3, 1])], dim=0))
    c.append(op_case("flip", lambda x: torch.flip(x, [0, 2]), [rnd(2, 3, 4)], dims=[0, 2]))
    c.append(op_case("flip", lambda x: torch.flip(x, [-1]), [rnd(3, 5)], dims=[-1]))
    c.append(op_case("stack", lambda x, y, z: torch.stack([x, y, z], 1), [rnd(2, 3), rnd(2, 3), rnd(2, 3)], dim=1))
    c.append(op_case("stack", lambda x, y: torch.stack([x, y], -1), [rnd(2, 3), rnd(2, 3)], dim=-1))
    return c


def randomize(module):
    """Non-default values everywhere (LayerNorm's ones/zeros would hide bugs in its weight/bias gradients)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


def layer_case(kind, options, module, x, mask=None, call=None):
    """Runs module in float64 and records params, output, attention weights and every gradient."""
    module = module.double()
    params = dict(module.named_parameters())
    x = x.clone()
    if x.is_floating_point():
        x.requires_grad_(True)
    out = call(module, x, mask) if call else module(x)
    weights = None
    if isinstance(out, tuple):
        out, weights = out
        if isinstance(weights, list):
            weights = weights[0]
    cot = torch.randn(out.shape, dtype=torch.float64)
    (out * cot).sum().backward()
    return {
        "layer": kind,
        "options": options,
        "params": {n: t2j(p) for n, p in params.items()},
        "input": t2j(x),
        "mask": None if mask is None else t2j(mask),
        "out": t2j(out),
        "weights": None if weights is None else t2j(weights),
        "cotangent": t2j(cot),
        "grad_input": t2j(x.grad) if x.is_floating_point() else None,
        "grads": {n: t2j(p.grad) for n, p in params.items()},
    }


def split_mha_case(d, h, causal, bias, x, mask):
    """nn.MultiheadAttention with in_proj split into w_q, w_k, w_v and out_proj as w_o: the authority for the
    multi-head layer's math. Gradients of in_proj are split back into the three projections."""
    mha = nn.MultiheadAttention(d, h, bias=bias, batch_first=True).double()
    randomize(mha)
    x = x.clone().requires_grad_(True)
    attn_mask = qkv_torch.causal_mask(x.shape[1]) if causal else None
    out, w = mha(x, x, x, attn_mask=attn_mask, key_padding_mask=None if mask is None else mask.bool(),
                 need_weights=True, average_attn_weights=False)
    cot = torch.randn(out.shape, dtype=torch.float64)
    (out * cot).sum().backward()
    wq, wk, wv = mha.in_proj_weight.detach().chunk(3)
    gq, gk, gv = mha.in_proj_weight.grad.chunk(3)
    params = {"w_q.weight": wq, "w_k.weight": wk, "w_v.weight": wv, "w_o.weight": mha.out_proj.weight.detach()}
    grads = {"w_q.weight": gq, "w_k.weight": gk, "w_v.weight": gv, "w_o.weight": mha.out_proj.weight.grad}
    if bias:
        bq, bk, bv = mha.in_proj_bias.detach().chunk(3)
        dq, dk, dv = mha.in_proj_bias.grad.chunk(3)
        params.update({"w_q.bias": bq, "w_k.bias": bk, "w_v.bias": bv, "w_o.bias": mha.out_proj.bias.detach()})
        grads.update({"w_q.bias": dq, "w_k.bias": dk, "w_v.bias": dv, "w_o.bias": mha.out_proj.bias.grad})
    # Our explicit twin must agree with nn.MultiheadAttention, since the block and models use it.
    twin = qkv_torch.MultiHeadSelfAttention(d, h, causal, bias).double()
    twin.load_state_dict(params)
    twin_out, twin_w = twin(x.detach(), None if mask is None else mask.bool())
    assert torch.allclose(twin_out, out, atol=1e-12) and torch.allclose(twin_w, w, atol=1e-12)
    return {
        "layer": "multi_head_self_attention",
        "options": {"d_model": d, "heads": h, "causal": causal, "bias": bias},
        "params": {n: t2j(p) for n, p in params.items()},
        "input": t2j(x), "mask": None if mask is None else t2j(mask),
        "out": t2j(out), "weights": t2j(w), "cotangent": t2j(cot), "grad_input": t2j(x.grad),
        "grads": {n: t2j(g) for n, g in grads.items()},
    }


def layers_cases():
    c = []
    c.append(layer_case("linear", {"in": 5, "out": 3, "bias": True}, randomize(nn.Linear(5, 3)), rnd(2, 4, 5)))
    c.append(layer_case("linear", {"in": 5, "out": 3, "bias": False}, randomize(nn.Linear(5, 3, bias=False)),
                        rnd(4, 5)))
    c.append(layer_case("embedding", {"num": 7, "dim": 3}, nn.Embedding(7, 3),
                        torch.tensor([[1, 6, 1], [0, 2, 5]], dtype=torch.int64)))
    sa = lambda m, x, mask: m(x, mask)
    pad = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.float64)
    for causal in (False, True):
        for bias in (False, True):
            opts = {"d_model": 6, "d_k": 4, "d_v": 3, "bias": bias, "causal": causal}
            c.append(layer_case("self_attention", opts, randomize(qkv_torch.SelfAttention(6, 4, 3, bias, causal)),
                                rnd(2, 5, 6), call=sa))
    c.append(layer_case("self_attention", {"d_model": 6, "d_k": 4, "d_v": 3, "bias": False, "causal": False},
                        randomize(qkv_torch.SelfAttention(6, 4, 3)), rnd(2, 5, 6), mask=pad, call=sa))
    c.append(layer_case("self_attention", {"d_model": 4, "d_k": 0, "d_v": 0, "bias": False, "causal": True},
                        randomize(qkv_torch.SelfAttention(4, causal=True)), rnd(1, 3, 4), mask=pad[:1, :3], call=sa))
    c.append(split_mha_case(8, 2, False, False, rnd(2, 5, 8), None))
    c.append(split_mha_case(8, 4, True, True, rnd(2, 5, 8), None))
    c.append(split_mha_case(8, 2, False, False, rnd(2, 5, 8), pad))
    c.append(layer_case("layer_norm", {"d": 6}, randomize(nn.LayerNorm(6)), rnd(2, 3, 6) * 2 + 1))
    c.append(layer_case("mlp", {"d": 6, "d_ff": 10}, randomize(qkv_torch.MLP(6, 10)), rnd(2, 3, 6)))
    c.append(layer_case("transformer_block", {"d_model": 8, "heads": 2, "d_ff": 12, "causal": True, "attn_bias": True},
                        randomize(qkv_torch.TransformerBlock(8, 2, 12, True, True)), rnd(2, 4, 8)))
    ids = torch.tensor([[3, 1, 4, 1, 5], [2, 7, 1, 8, 2]], dtype=torch.int64)
    seed_cfg = {"kind": "seed", "vocab_size": 9, "seq_len": 6, "d_model": 8, "d_k": 4, "d_v": 5,
                "causal": False, "attn_bias": False}
    c.append(layer_case("model", seed_cfg, randomize(qkv_torch.build_model(seed_cfg)), ids))
    tr_cfg = {"kind": "transformer", "vocab_size": 9, "seq_len": 6, "d_model": 8, "heads": 2, "layers": 2, "d_ff": 16,
              "causal": True, "attn_bias": False}
    c.append(layer_case("model", tr_cfg, randomize(qkv_torch.build_model(tr_cfg)), ids))
    return c


OPTIM_CONFIGS = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.01}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adam", {"lr": 0.01, "amsgrad": True}),
    ("adam", {"lr": 0.02, "amsgrad": True, "weight_decay": 0.05}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "betas": [0.85, 0.95]}),
    ("adam", {"lr": 0.01, "clip_grad_norm": 0.05}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "clip_grad_value": 0.01}),
]


def optim_trajectory(name, cfg, init, x, y, dtype, steps=25):
    """A 4-5-2 tanh MLP on fixed data: loss before each step and all parameters after each step."""
    fc1, fc2 = nn.Linear(4, 5).to(dtype), nn.Linear(5, 2).to(dtype)
    model = nn.ModuleDict({"fc1": fc1, "fc2": fc2})
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(init[n])
    kw = {k: v for k, v in cfg.items() if k not in ("clip_grad_norm", "clip_grad_value")}
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](
        model.parameters(), **kw)
    x, y = x.to(dtype), y.to(dtype)
    losses, params = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((fc2(torch.tanh(fc1(x))) - y) ** 2).mean()
        loss.backward()
        if "clip_grad_norm" in cfg:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip_grad_norm"])
        if "clip_grad_value" in cfg:
            torch.nn.utils.clip_grad_value_(model.parameters(), cfg["clip_grad_value"])
        opt.step()
        losses.append(loss.item())
        params.append({n: t2j(p) for n, p in model.named_parameters()})
    return {"losses": losses, "params": params}


def schedule_lrs(kind, warmup, total, min_lr, step_size=7, gamma=0.5, base=0.1, n=30):
    from torch.optim import lr_scheduler as L
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    if kind == "cosine":
        main = L.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_lr)
    elif kind == "linear":
        main = L.LinearLR(opt, start_factor=1.0, end_factor=min_lr / base, total_iters=total - warmup)
    elif kind == "step":
        main = L.StepLR(opt, step_size=step_size, gamma=gamma)
    else:
        main = L.ConstantLR(opt, factor=1.0, total_iters=0)
    sched = main
    if warmup > 0:
        sched = L.SequentialLR(opt, [L.LinearLR(opt, start_factor=1.0 / warmup, end_factor=1.0,
                                                total_iters=max(warmup - 1, 1)), main], milestones=[warmup])
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return {"kind": kind, "warmup_steps": warmup, "total_steps": total, "min_lr": min_lr, "step_size": step_size,
            "gamma": gamma, "base_lr": base, "lrs": lrs}


def optim_fixture():
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    fc1, fc2 = nn.Linear(4, 5).double(), nn.Linear(5, 2).double()
    init = {"fc1." + n: p.detach().clone() for n, p in fc1.named_parameters()}
    init.update({"fc2." + n: p.detach().clone() for n, p in fc2.named_parameters()})
    runs = []
    for name, cfg in OPTIM_CONFIGS:
        runs.append({"optimizer": name, "config": cfg,
                     "float64": optim_trajectory(name, cfg, init, x, y, torch.float64),
                     "float32": optim_trajectory(name, cfg, init, x, y, torch.float32)})
    schedules = [schedule_lrs("cosine", 5, 30, 1e-4), schedule_lrs("cosine", 0, 30, 0.0),
                 schedule_lrs("linear", 4, 30, 1e-3), schedule_lrs("step", 3, 30, 0.0),
                 schedule_lrs("constant", 4, 30, 0.0), schedule_lrs("constant", 0, 30, 0.0)]
    return {"x": t2j(x), "y": t2j(y), "init": {n: t2j(p) for n, p in init.items()}, "runs": runs,
            "schedules": schedules}


SOMETIMES_CONFIGS = [
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1}),
]


def sometimes_trajectory(name, cfg, init, x, y, steps=30):
    """Parameters that get a gradient only on some steps: an empty step() before any backward, fc1 frozen (its
    output detached) for the first 10 steps, fc3 used every third step; gradients set to None between steps, so
    torch skips a parameter without one and its own step count stays behind."""
    mods = {n: nn.Linear(*shape).double() for n, shape in (("fc1", (4, 5)), ("fc2", (5, 2)), ("fc3", (5, 2)))}
    model = nn.ModuleDict(mods)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(init[n])
    opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](model.parameters(), **cfg)
    opt.step()
    losses, params = [], []
    for s in range(steps):
        opt.zero_grad(set_to_none=True)
        h = torch.tanh(mods["fc1"](x))
        if s < 10:
            h = h.detach()
        out = mods["fc2"](h) + mods["fc3"](h) if s % 3 == 2 else mods["fc2"](h)
        loss = ((out - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        params.append({n: t2j(p) for n, p in model.named_parameters()})
    return {"optimizer": name, "config": cfg, "losses": losses, "params": params,
            "param_steps": {n: int(opt.state[p]["step"]) for n, p in model.named_parameters()}}


def optim_sometimes_fixture():
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    init = {}
    for n, shape in (("fc1", (4, 5)), ("fc2", (5, 2)), ("fc3", (5, 2))):
        init.update({n + "." + k: p.detach().clone() for k, p in nn.Linear(*shape).double().named_parameters()})
    runs = [sometimes_trajectory(name, cfg, init, x, y) for name, cfg in SOMETIMES_CONFIGS]
    return {"generator": "tools/gen_fixtures.py", "torch": torch.__version__, "x": t2j(x), "y": t2j(y),
            "init": {n: t2j(p) for n, p in init.items()}, "runs": runs}


def autograd_fixture():
    """Tensor hooks, retain_grad and torch.autograd.grad on one small graph: x (3, 4) and w (4, 2) are leaves,
    h = tanh(x @ w), y = sum(h * h) + 0.5 * sum(x * x) (x reaches y by two paths)."""
    x, w = rnd(3, 4), rnd(4, 2)

    def graph(xl, wl):
        h = torch.tanh(xl @ wl)
        return h, (h * h).sum() + 0.5 * (xl * xl).sum()

    # Hooks: h's gradient doubled, x's squared (it sees the sum over both paths, once); h retains its gradient,
    # registered after its hook, so it holds the doubled one.
    xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
    h, y = graph(xl, wl)
    h.register_hook(lambda g: g * 2)
    h.retain_grad()
    xl.register_hook(lambda g: g * g)
    y.backward()
    hooks = {"x_grad": t2j(xl.grad), "w_grad": t2j(wl.grad), "h_grad": t2j(h.grad)}
    # autograd.grad: d y / d (h, x, w), and d h / d x against a cotangent.
    xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
    h, y = graph(xl, wl)
    dh, dx, dw = torch.autograd.grad([y], [h, xl, wl], retain_graph=True)
    cot = torch.randn(3, 2, dtype=torch.float64)
    (dx_cot,) = torch.autograd.grad([h], [xl], [cot])
    return {"generator": "tools/gen_fixtures.py", "torch": torch.__version__, "x": t2j(x), "w": t2j(w),
            "hooks": hooks, "grad": {"h": t2j(dh), "x": t2j(dx), "w": t2j(dw)},
            "cotangent": t2j(cot), "grad_h_x": t2j(dx_cot)}


def edge_cases():
    """Gradients at ties and infinities (torch's rules), with non-finite numbers written as strings (JSON has none)."""
    torch.manual_seed(39)  # its own seed: the cotangents are the same whether or not the other fixtures are written
    c = []
    inf, nan = math.inf, math.nan
    T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    for name, fn in (("max", torch.max), ("min", torch.min)):
        c.append(op_case(name, fn, [T(1, 3, 3, 2)]))
        c.append(op_case(name, fn, [T(-1, -3, -3, 2, -3, 2)]))
        c.append(op_case(name, fn, [T(inf, 0, inf, -inf)]))
        c.append(op_case(name, fn, [T(-inf, -inf, 0, -inf)]))
        c.append(op_case(name, fn, [T(1, nan, 3, nan)]))
        c.append(op_case(name, fn, [torch.tensor([[2.0, 7.0], [7.0, 7.0]], dtype=torch.float64)]))
    for rows in ([[inf, 0.0]], [[-inf, -inf], [0.0, 1.0]], [[inf, inf, 1.0]], [[-inf, 0.0, 1.0]], [[inf, -inf]],
                 [[nan, 1.0]]):
        c.append(op_case("logsumexp", lambda x: torch.logsumexp(x, 1), [torch.tensor(rows, dtype=torch.float64)],
                         dim=1, keepdim=False))
    return c


def finite_json(cases):
    """Replaces inf, -inf and NaN in every "data" list by the strings "inf", "-inf" and "nan"."""
    def fix(v):
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return v
    return fix(cases)


def write(name, cases):
    payload = {"generator": "tools/gen_fixtures.py", "torch": torch.__version__, "cases": cases}
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(payload, f, separators=(",", ":"), allow_nan=False)
    print(f"wrote {len(cases)} cases to tests/fixtures/{name}.json")


def main():
    os.makedirs(OUT, exist_ok=True)
    if sys.argv[1:] == ["ops_edges"]:  # the one fixture with its own seed can be written alone
        write("ops_edges", finite_json(edge_cases()))
        return 0
    write("ops", ops_cases())
    write("layers", layers_cases())
    payload = {"generator": "tools/gen_fixtures.py", "torch": torch.__version__, **optim_fixture()}
    with open(os.path.join(OUT, "optim.json"), "w") as f:
        json.dump(payload, f, separators=(",", ":"))
    print("wrote tests/fixtures/optim.json")
    write("compare_index", compare_index_cases())
    with open(os.path.join(OUT, "optim_sometimes.json"), "w") as f:
        json.dump(optim_sometimes_fixture(), f, separators=(",", ":"))
    print("wrote tests/fixtures/optim_sometimes.json")
    with open(os.path.join(OUT, "autograd.json"), "w") as f:
        json.dump(autograd_fixture(), f, separators=(",", ":"))
    print("wrote tests/fixtures/autograd.json")
    write("ops_math", math_cases())  # last: each fixture's random draws stay what they were when it was added
    write("ops_edges", finite_json(edge_cases()))  # no random draws


if __name__ == "__main__":
    sys.exit(main())
