"""Writes the benchmark MLP (64 -> 256 -> 256 -> 2, f32, relu, relu, softmax) with random
weights: DIR/model.safetensors (PyTorch nn.Sequential names) and DIR/model.json (the
Confidant model config). Both servers load these same bytes.

Usage: make_model.py DIR [--seed N]
"""

import argparse
import json
import os
import struct

import numpy as np

LAYERS = [64, 256, 256, 2]
MODEL_ID = "peer-mlp"


def write_safetensors(path, tensors):
    """The safetensors format by hand (8-byte little-endian header length, JSON header, data),
    so the venv needs only numpy."""
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    tensors, layers = {}, []
    for i, (fan_in, fan_out) in enumerate(zip(LAYERS, LAYERS[1:])):
        bound = 1.0 / np.sqrt(fan_in)  # PyTorch's nn.Linear default initialisation
        name = str(2 * i)
        tensors[f"{name}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in)).astype("f4")
        tensors[f"{name}.bias"] = rng.uniform(-bound, bound, (fan_out,)).astype("f4")
        last = i == len(LAYERS) - 2
        layers.append(
            {
                "weight": f"{name}.weight",
                "bias": f"{name}.bias",
                "activation": "none" if last else "relu",
            }
        )
    write_safetensors(os.path.join(a.dir, "model.safetensors"), tensors)
    n = LAYERS[0]
    config = {
        "id": MODEL_ID,
        "version": "1.0.0",
        "description": "confidant bench peer comparison: random weights",
        "architecture": {"kind": "mlp", "output": "softmax", "layers": layers},
        "input": {
            "features": [f"x{i}" for i in range(n)],
            "min": [-1.0] * n,
            "max": [1.0] * n,
        },
        "labels": ["class0", "class1"],
    }
    with open(os.path.join(a.dir, "model.json"), "w") as f:
        json.dump(config, f, indent=2)


if __name__ == "__main__":
    main()
