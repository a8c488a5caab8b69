"""Drives a Confidant text embedding model with the stock clients and checks that they get
the same embeddings as `confidant predict --text` (cosine >= 0.9999 for every text):

- Triton's `tritonclient[grpc]`: ModelMetadata names the BYTES input and the FP32 output;
  infer with a BYTES tensor of shape [n, 1] (and [n]);
- the `openai` client: `client.embeddings.create(model=..., input=[...])` against
  `/v1/embeddings` (floats and base64), and `client.models.list()`.

Run by tests/stock_text_clients.sh; `--client triton|openai` picks one (each lives in its
own virtual environment)."""

import argparse
import json
import math
import sys


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return 1.0 if na == 0 and nb == 0 else dot / (na * nb)


def same(got, want, what):
    check(len(got) == len(want), f"{what}: {len(got)} embeddings")
    worst = min(cosine(g, w) for g, w in zip(got, want))
    check(worst >= 0.9999, f"{what}: every cosine with confidant predict >= 0.9999 (min {worst:.7f})")


def triton(a, texts, want):
    import numpy as np
    import tritonclient.grpc as grpcclient

    headers = {"x-api-key": a.api_key, "x-purpose": a.purpose}
    client = grpcclient.InferenceServerClient(url=a.grpc, ssl=True, root_certificates=a.ca)
    md = client.get_model_metadata(a.model, headers=headers)
    check([(t.name, t.datatype) for t in md.inputs] == [("text", "BYTES")], "metadata: BYTES input")
    check([(t.name, t.datatype) for t in md.outputs] == [("embedding", "FP32")], "metadata: FP32 output")
    for shape in ([len(texts), 1], [len(texts)]):
        data = np.array([t.encode("utf-8") for t in texts], dtype=np.object_).reshape(shape)
        inp = grpcclient.InferInput("text", shape, "BYTES")
        inp.set_data_from_numpy(data)
        out = grpcclient.InferRequestedOutput("embedding")
        result = client.infer(a.model, [inp], outputs=[out], headers=headers)
        got = result.as_numpy("embedding")
        check(got.shape == (len(texts), len(want[0])), f"tritonclient BYTES {shape}: shape {got.shape}")
        same(got.tolist(), want, f"tritonclient BYTES {shape}")


def openai_client(a, texts, want):
    import openai

    client = openai.OpenAI(
        base_url=a.http,
        api_key=a.api_key,
        default_headers={"x-purpose": a.purpose},
        http_client=openai.DefaultHttpxClient(verify=a.ca),
    )
    ids = [m.id for m in client.models.list()]
    check(a.model in ids, f"openai models.list: {ids}")
    r = client.embeddings.create(model=a.model, input=texts)
    same([d.embedding for d in r.data], want, "openai embeddings.create (float)")
    check(r.usage.prompt_tokens > 0, f"openai usage.prompt_tokens {r.usage.prompt_tokens}")
    r = client.embeddings.create(model=a.model, input=texts, encoding_format="base64")
    import base64
    import struct

    rows = []
    for d in r.data:
        raw = d.embedding
        if isinstance(raw, str):
            b = base64.b64decode(raw)
            raw = list(struct.unpack(f"<{len(b) // 4}f", b))
        rows.append(raw)
    same(rows, want, "openai embeddings.create (base64)")
    try:
        client.embeddings.create(model=a.model, input=["x"], extra_headers={"x-purpose": "nope"})
        check(False, "a purpose the key does not hold is refused")
    except openai.PermissionDeniedError as e:
        check(e.status_code == 403, "openai: a purpose the key does not hold is a 403")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["triton", "openai"], required=True)
    ap.add_argument("--grpc")
    ap.add_argument("--http")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--purpose", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--reference", required=True)
    a = ap.parse_args()
    texts = json.loads(a.texts)
    want = json.load(open(a.reference))["embeddings"]
    if a.client == "triton":
        triton(a, texts, want)
    else:
        openai_client(a, texts, want)


if __name__ == "__main__":
    main()
