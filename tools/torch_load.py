#!/usr/bin/python3
"""Load a qkv safetensors file into the equivalent PyTorch model and run it.

    /usr/bin/python3 tools/torch_load.py runs/reverse/model.safetensors --tokens "3 1 4 1 5"
    /usr/bin/python3 tools/torch_load.py runs/text/model.safetensors --tokens "This Lic" --json

The file is read with the standard library and numpy alone (8-byte header length, JSON header, raw buffer), to
show how little the format needs; the model is rebuilt from the "qkv.model" metadata with tools/qkv_torch.py.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qkv_torch  # noqa: E402

NP_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64}


def read_safetensors(path):
    """Returns ({name: numpy array}, metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    buf = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        raw = buf[b:e]
        if info["dtype"] == "BF16":  # numpy has no bfloat16: widen to float32 by shifting into the high half
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=NP_DTYPES[info["dtype"]])
        tensors[name] = arr.reshape(info["shape"])
    return tensors, meta


def load_model(path):
    tensors, meta = read_safetensors(path)
    cfg = json.loads(meta["qkv.model"])
    model = qkv_torch.build_model(cfg)
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta


def encode(meta, text):
    vocab = meta.get("qkv.vocab")
    if vocab:
        return [vocab.index(ch) for ch in text]
    return [int(t) for t in text.split()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--json", action="store_true", help="print tokens, predictions and logits as JSON")
    args = ap.parse_args()
    model, meta = load_model(args.model)
    ids = encode(meta, args.tokens)
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    preds = logits.argmax(-1)[0].tolist()
    if args.json:
        print(json.dumps({"tokens": ids, "predictions": preds, "logits": logits[0].tolist()}))
    else:
        print("tokens:     ", ids)
        print("predictions:", preds)


if __name__ == "__main__":
    main()
