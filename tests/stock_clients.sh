#!/usr/bin/env bash
# Stock clients against the real server: Triton's `tritonclient[grpc]` from PyPI (live,
# ready, metadata, infer; outputs checked against the Rust client) and a Python gRPC health
# check (grpcurl is not packaged for this Debian). Installs into target/stock-venv.
#
# Skips (exit 0, with a message) only when PyPI cannot be reached.
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
if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    'tritonclient[grpc]' numpy grpcio-health-checking; then
    if ! "$VENV/bin/python" -c \
        'import urllib.request; urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=15)' \
        2>/dev/null; then
        echo "stock clients: SKIPPED: PyPI is unreachable, cannot install tritonclient[grpc]"
        exit 0
    fi
    echo "stock clients: pip install failed with PyPI reachable" >&2
    exit 1
fi
"$VENV/bin/pip" list 2>/dev/null | grep -E '^(tritonclient|grpcio|protobuf|numpy) ' || true

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# Demo mode prints the demo key and the address; port 0 picks a free port.
RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" \
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
"$VENV/bin/python" tests/stock_clients/health_check.py --url "$ADDR" --ca "$CERT"
echo "stock clients: OK"
