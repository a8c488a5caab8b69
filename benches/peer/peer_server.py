"""The peer: a seed-style Python Open Inference Protocol server (grpcio + numpy).

One numpy forward pass per request, no batching, a thread pool as grpcio's examples use,
no TLS and no authentication: what a team writes first. It serves the MLP written by
make_model.py under the same id, tensor names and outputs as Confidant.

Usage: peer_server.py --model DIR/model.safetensors --port PORT [--workers N]
"""

import argparse
import json
import struct
import sys
from concurrent import futures

import grpc
import numpy as np

import oip_stubs
from make_model import MODEL_ID

pb2, pb2_grpc = oip_stubs.load()


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        out[name] = np.frombuffer(data[base + lo : base + hi], dtype="<f4").reshape(t["shape"])
    return out


class Mlp:
    def __init__(self, tensors):
        self.layers = [
            (tensors[f"{i}.weight"].T.copy(), tensors[f"{i}.bias"]) for i in (0, 2, 4)
        ]
        self.features = self.layers[0][0].shape[0]
        self.outputs = self.layers[-1][0].shape[1]

    def forward(self, x):
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0)
        x = x - x.max(axis=1, keepdims=True)
        e = np.exp(x)
        return (e / e.sum(axis=1, keepdims=True)).astype("<f4")


class Service(pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, mlp):
        self.mlp = mlp

    def ServerLive(self, request, context):
        return pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        return pb2.ModelReadyResponse(ready=request.name == MODEL_ID)

    def ServerMetadata(self, request, context):
        return pb2.ServerMetadataResponse(name="python-peer", version="0", extensions=[])

    def ModelMetadata(self, request, context):
        if request.name != MODEL_ID:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
        T = pb2.ModelMetadataResponse.TensorMetadata
        return pb2.ModelMetadataResponse(
            name=MODEL_ID,
            versions=["1.0.0"],
            platform="numpy",
            inputs=[T(name="input__0", datatype="FP32", shape=[-1, self.mlp.features])],
            outputs=[T(name="output__0", datatype="FP32", shape=[-1, self.mlp.outputs])],
        )

    def ModelInfer(self, request, context):
        if request.model_name != MODEL_ID:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model_name}")
        if len(request.inputs) != 1 or request.inputs[0].datatype != "FP32":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "one FP32 input expected")
        shape = list(request.inputs[0].shape)
        if request.raw_input_contents:
            x = np.frombuffer(request.raw_input_contents[0], dtype="<f4")
        else:
            x = np.asarray(request.inputs[0].contents.fp32_contents, dtype="<f4")
        if len(shape) != 2 or shape[1] != self.mlp.features or x.size != shape[0] * shape[1]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad shape {shape}")
        y = self.mlp.forward(x.reshape(shape))
        out = pb2.ModelInferResponse.InferOutputTensor(
            name="output__0", datatype="FP32", shape=list(y.shape)
        )
        return pb2.ModelInferResponse(
            model_name=MODEL_ID,
            model_version="1.0.0",
            id=request.id,
            outputs=[out],
            raw_output_contents=[y.tobytes()],
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=10)
    a = ap.parse_args()
    mlp = Mlp(read_safetensors(a.model))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=a.workers),
        options=[("grpc.max_receive_message_length", 16 << 20)],
    )
    pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Service(mlp), server)
    server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    print(f"peer: serving on http://127.0.0.1:{a.port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
