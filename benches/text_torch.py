#!/usr/bin/env python3
"""PyTorch's side of benches/text.rs: all-MiniLM-L6-v2 (sentence-transformers), the same 32
texts cut to exactly 128 tokens, forward + mean pooling + normalization on pre-tokenized
input, torch.set_num_threads(2), float32, no grad. Prints the median and the minimum of
--runs timed calls (after warm-up) in milliseconds, as JSON.

    /work/.venvs/bert/bin/python benches/text_torch.py "$(bash scripts/fetch-minilm.sh)"
"""
import argparse
import json
import statistics
import time

import torch
from sentence_transformers import SentenceTransformer


def texts():
    return [
        (f"Request {i}: confidential computing protects data in use by performing "
         "computation in a hardware-based, attested trusted execution environment. ") * 8
        for i in range(32)
    ]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.model_dir, device="cpu")
    model.max_seq_length = 128
    model.eval()
    features = model.tokenize(texts())
    assert features["input_ids"].shape == (32, 128), features["input_ids"].shape
    with torch.inference_mode():
        for _ in range(5):
            model(features)
        times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            out = model(features)["sentence_embedding"]
            times.append((time.perf_counter() - t0) * 1e3)
    assert out.shape == (32, 384)
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "median_ms": statistics.median(times), "min_ms": min(times), "runs": a.runs,
    }))


if __name__ == "__main__":
    main()
