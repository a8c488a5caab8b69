"""The text peer: a seed-style Python Open Inference Protocol server that embeds texts with
PyTorch (sentence-transformers), the way a team would first serve all-MiniLM-L6-v2.

grpcio's thread pool (as its examples use), one `SentenceTransformer.encode` call per request
(the request's texts, padded to its longest, one forward pass: no batching across requests),
float32 on the CPU, mean pooling and L2 normalization (the model's own modules), no TLS, no
authentication, no audit. It answers the BYTES tensor `[n, 1]` (Triton's raw encoding: each
element a 4-byte little-endian length and its UTF-8 bytes, or `bytes_contents`) that
`confidant bench --input-jsonl` and tritonclient send, under the model id, tensor names and
output layout Confidant gives the same model (`text` in, `embedding` FP32 `[n, 384]` out).

Usage: text_peer_server.py --model-dir DIR --port PORT [--model-id minilm] [--workers N]
       [--torch-threads N] [--max-tokens 256]
"""

import argparse
import struct
import sys
from concurrent import futures

import grpc
import numpy as np
import torch
from sentence_transformers import SentenceTransformer

import oip_stubs

pb2, pb2_grpc = oip_stubs.load()

INPUT = "text"
OUTPUT = "embedding"
MAX_TEXTS = 1024


def decode_bytes(tensor, raw):
    """The texts of a BYTES tensor of shape [n] or [n, 1]; raises ValueError."""
    shape = list(tensor.shape)
    if tensor.datatype != "BYTES" or not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise ValueError(
            f"input {tensor.name!r}: expected BYTES [n, 1], got {tensor.datatype} {shape}"
        )
    n = shape[0]
    if not 0 < n <= MAX_TEXTS:
        raise ValueError(f"{n} texts: 1 to {MAX_TEXTS} per request")
    if raw is None:
        items = list(tensor.contents.bytes_contents)
    else:
        items, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise ValueError("raw BYTES: truncated length prefix")
            (size,) = struct.unpack_from("<I", raw, at)
            at += 4
            if at + size > len(raw):
                raise ValueError("raw BYTES: element runs past the end")
            items.append(raw[at : at + size])
            at += size
    if len(items) != n:
        raise ValueError(f"shape says {n} texts, found {len(items)}")
    return [b.decode("utf-8") for b in items]


class Service(pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, model, model_id):
        self.model = model
        self.model_id = model_id
        # sentence-transformers 6 renamed get_sentence_embedding_dimension.
        dim = getattr(model, "get_embedding_dimension", None)
        self.width = (dim or model.get_sentence_embedding_dimension)()

    def ServerLive(self, request, context):
        return pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        return pb2.ModelReadyResponse(ready=request.name == self.model_id)

    def ServerMetadata(self, request, context):
        return pb2.ServerMetadataResponse(name="python-text-peer", version="0", extensions=[])

    def ModelMetadata(self, request, context):
        if request.name != self.model_id:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
        T = pb2.ModelMetadataResponse.TensorMetadata
        return pb2.ModelMetadataResponse(
            name=self.model_id,
            versions=["1.0.0"],
            platform="pytorch",
            inputs=[T(name=INPUT, datatype="BYTES", shape=[-1, 1])],
            outputs=[T(name=OUTPUT, datatype="FP32", shape=[-1, self.width])],
        )

    def ModelInfer(self, request, context):
        if request.model_name != self.model_id:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model_name}")
        if len(request.inputs) != 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "one BYTES input expected")
        raw = request.raw_input_contents[0] if request.raw_input_contents else None
        try:
            texts = decode_bytes(request.inputs[0], raw)
        except (ValueError, UnicodeDecodeError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        with torch.inference_mode():
            y = self.model.encode(
                texts,
                batch_size=len(texts),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        y = np.ascontiguousarray(y, dtype="<f4")
        out = pb2.ModelInferResponse.InferOutputTensor(
            name=OUTPUT, datatype="FP32", shape=list(y.shape)
        )
        return pb2.ModelInferResponse(
            model_name=self.model_id,
            model_version="1.0.0",
            id=request.id,
            outputs=[out],
            raw_output_contents=[y.tobytes()],
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model-id", default="minilm")
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=256)
    a = ap.parse_args()
    torch.set_num_threads(a.torch_threads)
    model = SentenceTransformer(a.model_dir, device="cpu")
    model.max_seq_length = a.max_tokens
    model.eval()
    with torch.inference_mode():
        model.encode(["warm up"], show_progress_bar=False)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=a.workers),
        options=[("grpc.max_receive_message_length", 16 << 20)],
    )
    pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Service(model, a.model_id), server)
    server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    print(
        f"peer: serving on http://127.0.0.1:{a.port} (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {a.workers} workers)",
        flush=True,
    )
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
