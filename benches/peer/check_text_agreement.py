"""Sends the bench's sentences to the text peer (plaintext) and to Confidant (TLS, API key,
purpose) over the Open Inference Protocol, 32 per request and then the first 32 one by one,
and fails unless every embedding agrees: cosine >= 0.9999 between the two servers' vectors.

Usage: check_text_agreement.py --peer HOST:PORT --confidant HOST:PORT --ca CERT
       --api-key KEY --purpose PURPOSE --sentences FILE.jsonl [--model minilm]
"""

import argparse
import json
import struct
import sys

import grpc
import numpy as np

import oip_stubs

pb2, pb2_grpc = oip_stubs.load()

MIN_COSINE = 0.9999


def infer(stub, model, texts, metadata=()):
    raw = b"".join(struct.pack("<I", len(b)) + b for b in (t.encode("utf-8") for t in texts))
    req = pb2.ModelInferRequest(
        model_name=model,
        inputs=[
            pb2.ModelInferRequest.InferInputTensor(
                name="text", datatype="BYTES", shape=[len(texts), 1]
            )
        ],
        raw_input_contents=[raw],
    )
    resp = stub.ModelInfer(req, metadata=metadata, timeout=60)
    out = resp.outputs[0]
    if out.datatype != "FP32" or list(out.shape)[:1] != [len(texts)]:
        sys.exit(f"unexpected output {out.name} {out.datatype} {list(out.shape)}")
    return np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(out.shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True)
    ap.add_argument("--confidant", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--purpose", required=True)
    ap.add_argument("--sentences", required=True)
    ap.add_argument("--model", default="minilm")
    a = ap.parse_args()
    with open(a.sentences, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    peer = pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(a.peer))
    with open(a.ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    ours = pb2_grpc.GRPCInferenceServiceStub(grpc.secure_channel(a.confidant, creds))
    md = (("x-api-key", a.api_key), ("x-purpose", a.purpose))
    groups = [texts[i : i + 32] for i in range(0, len(texts), 32)] + [[t] for t in texts[:32]]
    worst = 1.0
    for g in groups:
        p = infer(peer, a.model, g)
        c = infer(ours, a.model, g, md)
        if p.shape != c.shape:
            sys.exit(f"shapes differ: peer {p.shape}, confidant {c.shape}")
        cos = (p * c).sum(1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(c, axis=1))
        worst = min(worst, float(cos.min()))
    n = sum(len(g) for g in groups)
    print(
        f"agreement: {n} embeddings ({len(texts)} sentences in batches of 32, then 32 alone), "
        f"lowest cosine(peer, confidant) = {worst:.7f}"
    )
    if not worst >= MIN_COSINE:
        sys.exit(f"embeddings disagree: cosine {worst:.7f} < {MIN_COSINE}")


if __name__ == "__main__":
    main()
