#!/usr/bin/python3
"""What bf16 drift looks like in PyTorch: the reference for qkv's train.precision = "bf16" (bench/bf16_parity.sh).

Trains qkv's sort and reverse task shapes (tools/qkv_torch.py's Transformer and SeedModel, the shipped configs'
sizes, optimizers and schedules) twice from the same initial weights and batches: in float32, and with forward
and loss under torch.autocast("cpu", dtype=torch.bfloat16). Prints each final validation loss and their relative
difference. Run with Debian's torch (install libopenblas0-pthread first, or it is slow):
    /usr/bin/python3 tools/autocast_drift.py
"""
import copy
import math
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import qkv_torch  # noqa: E402

TASKS = {  # name: model config, task, optimizer, lr, weight decay, warmup, min_lr, steps
    "reverse": ({"kind": "seed", "vocab_size": 16, "seq_len": 12, "d_model": 64}, "adam", 3e-3, 0.0, 50, 1e-4, 300),
    "sort": ({"kind": "transformer", "vocab_size": 10, "seq_len": 8, "d_model": 64, "heads": 4, "layers": 2},
             "adamw", 2e-3, 0.01, 100, 1e-4, 1500),
}


def batch(task, cfg, n, gen):
    x = torch.randint(0, cfg["vocab_size"], (n, cfg["seq_len"]), generator=gen)
    return x, (x.flip(1) if task == "reverse" else x.sort(1).values)


def lr_at(step, lr, warmup, min_lr, total):
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * t)) / 2


def run(task, model, bf16):
    cfg, opt_name, lr, wd, warmup, min_lr, steps = TASKS[task]
    gen = torch.Generator().manual_seed(1)
    opt = (torch.optim.AdamW if opt_name == "adamw" else torch.optim.Adam)(model.parameters(), lr=lr, weight_decay=wd)
    val = batch(task, cfg, 512, torch.Generator().manual_seed(2))
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr, warmup, min_lr, steps)
        x, y = batch(task, cfg, 64, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x)[0].reshape(-1, cfg["vocab_size"]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(val[0])[0].float()
        return F.cross_entropy(logits.reshape(-1, cfg["vocab_size"]), val[1].reshape(-1)).item()


def main():
    torch.set_num_threads(2)
    print(f"{'task':8} {'steps':>6} {'fp32 loss':>12} {'bf16 loss':>12} {'rel diff':>9}")
    for task in TASKS:
        torch.manual_seed(0)
        model = qkv_torch.build_model(TASKS[task][0])
        f, b = run(task, copy.deepcopy(model), False), run(task, copy.deepcopy(model), True)
        print(f"{task:8} {TASKS[task][6]:6d} {f:12.6f} {b:12.6f} {100 * (b - f) / f:8.2f}%")


if __name__ == "__main__":
    main()
