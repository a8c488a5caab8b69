#!/usr/bin/env bash
# Peer comparison: Confidant against a seed-style Python Open Inference Protocol server
# (grpcio + numpy, one forward per request), same MLP, same weights, same client.
#
#   benches/peer/run.sh            # results in target/peer-run/
#
# Environment: WINDOW (2s), MAX_TRIALS (6), WARMUP (1s), BATCH (1,32), CONCURRENCY (1,8,32),
# PYTHON (python3), PEER_WORKERS (10), PEER_BLAS_THREADS (1: numpy's BLAS threads, see
# BENCHMARKS.md), SERVER_THREADS (Confidant's compute threads; unset: one per core).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
WORK=$REPO/target/peer-run
VENV=$REPO/target/peer-venv
WINDOW=${WINDOW:-2s}
MAX_TRIALS=${MAX_TRIALS:-6}
WARMUP=${WARMUP:-1s}
BATCH=${BATCH:-1,32}
CONCURRENCY=${CONCURRENCY:-1,8,32}
PYTHON=${PYTHON:-python3}

echo "== release build"
cargo build --release --bin confidant
BIN=$REPO/target/release/confidant

echo "== venv ($VENV): grpcio, grpcio-tools, numpy"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check grpcio grpcio-tools numpy
PY=$VENV/bin/python

rm -rf "$WORK"
mkdir -p "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== model: random weights, sealed for Confidant"
"$PY" benches/peer/make_model.py "$WORK/model"
"$BIN" keygen --out "$WORK/keys" >/dev/null
"$BIN" seal --weights "$WORK/model/model.safetensors" --config "$WORK/model/model.json" \
    --signing-key "$WORK/keys/publisher.key" --out "$WORK/model.sealed" \
    --key-out "$WORK/model.dek" >/dev/null
mkdir -p "$WORK/data"
API_KEY=$("$BIN" keys create --data-dir "$WORK/data" --principal bench |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')

# shellcheck source=benches/peer/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

echo "== start Confidant (release, TLS) and the peer (plaintext)"
CPORT=$(free_port)
[ -n "${SERVER_THREADS:-}" ] && export RAYON_NUM_THREADS=$SERVER_THREADS
RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$CPORT" --data-dir "$WORK/data" \
    --model "$WORK/model.sealed" --key-file "$WORK/model.dek" \
    --publisher-key "$WORK/keys/publisher.pub" >"$WORK/confidant.log" 2>"$WORK/confidant.log.err" &
PIDS+=($!)
wait_for "$WORK/confidant.log" "confidant: serving on" "${PIDS[-1]}"
PPORT=$(free_port)
(cd benches/peer && OPENBLAS_NUM_THREADS=${PEER_BLAS_THREADS:-1} \
    OMP_NUM_THREADS=${PEER_BLAS_THREADS:-1} exec "$PY" peer_server.py --model "$WORK/model/model.safetensors" \
    --port "$PPORT" --workers "${PEER_WORKERS:-10}") >"$WORK/peer.log" 2>"$WORK/peer.log.err" &
PIDS+=($!)
wait_for "$WORK/peer.log" "peer: serving on" "${PIDS[-1]}"

echo "== outputs agree"
(cd benches/peer && "$PY" check_agreement.py --peer "127.0.0.1:$PPORT" \
    --confidant "localhost:$CPORT" --ca "$WORK/data/tls/cert.pem" --api-key "$API_KEY")

COMMON=(--protocol oip --model peer-mlp --batch "$BATCH" --concurrency "$CONCURRENCY"
    --window "$WINDOW" --max-trials "$MAX_TRIALS" --warmup "$WARMUP")

# The client's own thread pools must not follow the server's setting.
unset RAYON_NUM_THREADS
echo "== bench the peer (http://127.0.0.1:$PPORT)"
RUST_LOG=warn "$BIN" bench --addr "http://127.0.0.1:$PPORT" --input-range=-1,1 \
    "${COMMON[@]}" --label peer --out "$WORK/peer" | tee "$WORK/peer.txt"
# The peer idles while Confidant is measured, and the reverse; stop it to be sure.
kill "${PIDS[1]}" 2>/dev/null || true

echo "== bench Confidant (https://localhost:$CPORT)"
RUST_LOG=warn "$BIN" bench --addr "https://localhost:$CPORT" --tls-ca "$WORK/data/tls/cert.pem" \
    --api-key "$API_KEY" "${COMMON[@]}" --label confidant \
    --baseline "$WORK/peer/results.json" --baseline-label "python peer" \
    --out "$WORK/confidant" | tee "$WORK/confidant.txt"

echo
echo "== results in $WORK: peer/ and confidant/ (results.json, results.csv);"
echo "   plot of both: $WORK/confidant/latency_throughput.svg"
