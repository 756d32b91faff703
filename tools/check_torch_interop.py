#!/usr/bin/python3
"""Trains three small qkv models (seed, transformer, causal text), exports each, and checks that PyTorch
(tools/torch_load.py) computes the same logits as `qkv predict --json`, to 1e-5. Exits 77 (skipped) where
Debian's python3-torch is not installed. Usage: check_torch_interop.py QKV_BINARY WORK_DIR"""
import json
import os
import subprocess
import sys

try:
    import torch  # noqa: F401
except ImportError:
    print("torch is not installed for /usr/bin/python3: skipping the interop check")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import torch_load  # noqa: E402


def run(*args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(args)}\n{r.stderr}")
    return r.stdout


def main():
    qkv, work = sys.argv[1], sys.argv[2]
    cases = [("reverse", ["train.steps=30", "schedule.warmup_steps=0"], "3 1 4 1 5 9 2 6 5 3 5 8", "f32"),
             ("sort", ["train.steps=20", "model.attn_bias=true", "schedule.warmup_steps=0"], "7 1 8 2 8 1 8 2", "f32"),
             # configs/text.toml has model.dropout = 0.1: the twin builds nn.Dropout from the metadata (eval mode)
             ("text", ["train.steps=20", "schedule.warmup_steps=0", "train.eval_every=20"], "This License", "bf16")]
    worst = 0.0
    for name, overrides, tokens, dtype in cases:
        run(qkv, "train", os.path.join(ROOT, "configs", name + ".toml"), f'run.out_dir="{work}"', *overrides, "--force")
        run_dir = os.path.join(work, name)
        exported = os.path.join(run_dir, f"model.{dtype}.safetensors")
        run(qkv, "export", run_dir, "--dtype", dtype, "--out", exported)
        ours = json.loads(run(qkv, "predict", exported, "--tokens", tokens, "--json"))
        model, meta = torch_load.load_model(exported)
        dropout = json.loads(meta["qkv.model"]).get("dropout", 0.0)
        assert all(m.p == dropout for m in model.modules() if isinstance(m, torch.nn.Dropout)), "twin dropout"
        ids = torch_load.encode(meta, tokens)
        with torch.no_grad():
            logits, _ = model(torch.tensor([ids]))
        theirs = logits[0]
        mine = torch.tensor(ours["logits"], dtype=torch.float32)
        assert ours["tokens"] == ids, (ours["tokens"], ids)
        err = (mine - theirs).abs().max().item()
        worst = max(worst, err)
        print(f"{name} ({dtype}): {len(ids)} tokens x {theirs.shape[1]} logits (largest |logit| "
              f"{theirs.abs().max().item():.2f}), max absolute difference {err:.2e}")
        assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-5), f"{name}: logits differ (max rel {err})"
        assert ours["predictions"] == theirs.argmax(-1).tolist()
    print(f"interop ok: PyTorch reproduces qkv's logits (worst absolute difference {worst:.2e})")


if __name__ == "__main__":
    main()
