"""Generates the Open Inference Protocol Python stubs at run time (grpcio-tools) from the
repository's proto/inference/grpc_predict_v2.proto, and imports them."""

import importlib
import os
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load():
    """Returns (pb2, pb2_grpc) for package `inference`."""
    from grpc_tools import protoc  # imported here: only the venv has it

    out = tempfile.mkdtemp(prefix="oip-stubs-")
    proto_dir = os.path.join(REPO, "proto")
    # The service and the Triton extension messages it imports.
    protos = ["grpc_predict_v2.proto", "triton_extensions.proto", "triton_model_config.proto"]
    rc = protoc.main(
        [
            "protoc",
            f"-I{proto_dir}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *(os.path.join(proto_dir, "inference", name) for name in protos),
        ]
    )
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed ({rc})")
    sys.path.insert(0, out)
    pb2 = importlib.import_module("inference.grpc_predict_v2_pb2")
    pb2_grpc = importlib.import_module("inference.grpc_predict_v2_pb2_grpc")
    return pb2, pb2_grpc
