"""The standard gRPC health check (grpcio-health-checking) over TLS: the server and both
inference services report SERVING."""

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--ca", required=True)
    a = ap.parse_args()
    with open(a.ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    stub = health_pb2_grpc.HealthStub(grpc.secure_channel(a.url, creds))
    for service in ["", "confidant.v1.Inference", "inference.GRPCInferenceService"]:
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        if status != health_pb2.HealthCheckResponse.SERVING:
            sys.exit(f"FAILED: health {service!r}: {status}")
        print(f"ok: health {service!r} SERVING")


if __name__ == "__main__":
    main()
