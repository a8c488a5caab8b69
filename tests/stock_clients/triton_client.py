"""Drives Confidant with Triton's stock Python client (tritonclient[grpc]) over TLS and checks
live, ready, metadata and infer; infer outputs must equal the Rust client's."""

import argparse
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--rows", required=True)
    ap.add_argument("--reference", required=True)
    a = ap.parse_args()
    headers = {"x-api-key": a.api_key}
    client = grpcclient.InferenceServerClient(url=a.url, ssl=True, root_certificates=a.ca)

    check(client.is_server_live(), "is_server_live (no key)")
    check(client.is_server_ready(), "is_server_ready (no key)")
    check(client.is_model_ready("demo", headers=headers), "is_model_ready demo")
    check(not client.is_model_ready("nope", headers=headers), "is_model_ready nope is false")
    meta = client.get_server_metadata(headers=headers)
    check(meta.name == "confidant", f"server metadata name {meta.name!r}")
    md = client.get_model_metadata("demo", headers=headers)
    check(
        [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [("input__0", "FP32", [-1, 30])],
        "model metadata inputs",
    )
    check([t.name for t in md.outputs] == ["output__0"], "model metadata outputs")

    rows = np.array(json.loads(a.rows), dtype=np.float32)
    inp = grpcclient.InferInput("input__0", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows)
    out = grpcclient.InferRequestedOutput("output__0")
    # priority travels as Triton's uint64_param, one of the two fields added to InferParameter.
    result = client.infer(
        "demo", [inp], outputs=[out], headers=headers, request_id="stock-1", priority=1
    )
    got = result.as_numpy("output__0")
    want = np.array(json.load(open(a.reference))["outputs"], dtype=np.float32)
    check(got is not None and got.shape == want.shape, f"infer output shape {None if got is None else got.shape}")
    check(np.array_equal(got, want), f"infer outputs equal the Rust client's (max diff {np.abs(got - want).max():.3g})")
    check(result.get_response().id == "stock-1", "request id echoed")

    # Triton's extensions, decoded by the stock client from Triton's own messages.
    config = client.get_model_config("demo", headers=headers).config
    check(config.max_batch_size > 0, f"model config max_batch_size {config.max_batch_size}")
    check(
        [(i.name, list(i.dims)) for i in config.input] == [("input__0", [30])],
        "model config input (dims without the batch dimension)",
    )
    stats = client.get_inference_statistics("demo", headers=headers).model_stats
    check(len(stats) == 1 and stats[0].name == "demo", "inference statistics for demo")
    s = stats[0].inference_stats
    # The reference Predict (confidant.v1) and this infer are the two successful requests so
    # far; the refused calls below come after.
    check(s.success.count == 2 and s.queue.count == 2, f"statistics count both requests: {s.success.count}")
    check(stats[0].inference_count == 2 * rows.shape[0], f"inference count {stats[0].inference_count}")
    check(s.compute_infer.ns > 0 and s.success.ns >= s.compute_infer.ns, "statistics durations")
    index = client.get_model_repository_index(headers=headers).models
    check([(m.name, m.state) for m in index] == [("demo", "READY")], "repository index")

    # Without a key: UNAUTHENTICATED, as on confidant.v1.
    try:
        client.infer("demo", [inp])
        check(False, "infer without a key is refused")
    except InferenceServerException as e:
        check("UNAUTHENTICATED" in str(e.status()), f"infer without a key: {e.status()}")
    # A wrong output name: INVALID_ARGUMENT naming it.
    try:
        client.infer("demo", [inp], outputs=[grpcclient.InferRequestedOutput("OUTPUT0")], headers=headers)
        check(False, "unknown output is refused")
    except InferenceServerException as e:
        check("INVALID_ARGUMENT" in str(e.status()) and "OUTPUT0" in e.message(), f"unknown output: {e.status()}")


if __name__ == "__main__":
    main()
