"""Sends the same random rows to the peer (plaintext) and to Confidant (TLS, API key) over
the Open Inference Protocol, and fails unless every output agrees within 1e-5.

Usage: check_agreement.py --peer HOST:PORT --confidant HOST:PORT --ca CERT --api-key KEY
"""

import argparse
import sys

import grpc
import numpy as np

import oip_stubs
from make_model import MODEL_ID

pb2, pb2_grpc = oip_stubs.load()


def infer(stub, x, metadata=()):
    req = pb2.ModelInferRequest(
        model_name=MODEL_ID,
        inputs=[
            pb2.ModelInferRequest.InferInputTensor(
                name="input__0", datatype="FP32", shape=list(x.shape)
            )
        ],
        raw_input_contents=[x.astype("<f4").tobytes()],
    )
    resp = stub.ModelInfer(req, metadata=metadata, timeout=30)
    return np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(resp.outputs[0].shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True)
    ap.add_argument("--confidant", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--api-key", required=True)
    a = ap.parse_args()
    x = np.random.default_rng(7).uniform(-1, 1, (64, 64)).astype("f4")
    peer = pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(a.peer))
    with open(a.ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    ours = pb2_grpc.GRPCInferenceServiceStub(grpc.secure_channel(a.confidant, creds))
    y_peer = infer(peer, x)
    y_ours = infer(ours, x, metadata=(("x-api-key", a.api_key),))
    diff = float(np.abs(y_peer - y_ours).max())
    same_argmax = bool((y_peer.argmax(1) == y_ours.argmax(1)).all())
    print(f"agreement: 64 rows, max |peer - confidant| = {diff:.3g}, same argmax: {same_argmax}")
    if not (diff <= 1e-5 and same_argmax):
        sys.exit("outputs disagree")


if __name__ == "__main__":
    main()
