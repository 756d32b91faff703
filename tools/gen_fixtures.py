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
import torch.nn.functional as F

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
    cot = torch.randn(out.shape, dtype=torch.float64)
    (out * cot).sum().backward()
    return {
        "op": name,
        "args": args,
        "inputs": [t2j(x) for x in inputs],
        "out": t2j(out),
        "cotangent": t2j(cot),
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


def main():
    os.makedirs(OUT, exist_ok=True)
    payload = {"generator": "tools/gen_fixtures.py", "torch": torch.__version__, "cases": ops_cases()}
    with open(os.path.join(OUT, "ops.json"), "w") as f:
        json.dump(payload, f, separators=(",", ":"))
    print(f"wrote {len(payload['cases'])} op cases to tests/fixtures/ops.json")


if __name__ == "__main__":
    sys.exit(main())
