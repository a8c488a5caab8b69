#!/usr/bin/env bash
# Stock clients against a sealed text embedding model (all-MiniLM-L6-v2) served by the real
# binary, over TLS with an API key and a purpose: Triton's `tritonclient[grpc]` 2.41.0
# (BYTES in, FP32 out) and the `openai` Python client (`/v1/embeddings`, `/v1/models`) must
# get the embeddings `confidant predict --text` prints (cosine >= 0.9999 for every text); and
# Triton's `perf_analyzer` (from the same wheel) drives the model with real sentences as a
# BYTES tensor, over TLS with the API key and purpose headers, and its throughput must agree
# with `confidant bench` on the same sentences at the same concurrency and batch within 20%
# (and the ModelStatistics it reads must count its requests).
#
# The model comes from scripts/fetch-minilm.sh (PyPI, cached outside the repository). The
# clients live in virtual environments of their own: $TRITON_VENV (default
# target/stock-venv, as tests/stock_clients.sh makes it) and $OPENAI_VENV (default
# target/openai-venv); each is created and filled from PyPI if absent. perf_analyzer needs
# libb64-0d (apt-get, as root) and libcudart.so.12 (PyPI nvidia-cuda-runtime-cu12), not a GPU.
# Skips (exit 0, with a message) only when PyPI cannot be reached and something is missing;
# once the tools are installed, any disagreement, and perf_analyzer failing, fails.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${PYTHON:-python3}
BIN=${CONFIDANT_BIN:-$REPO/target/debug/confidant}
TRITON_VENV=${TRITON_VENV:-$REPO/target/stock-venv}
OPENAI_VENV=${OPENAI_VENV:-$REPO/target/openai-venv}

skip_or_fail() {
    if ! "$PYTHON" -c \
        'import urllib.request; urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=15)' \
        2>/dev/null; then
        echo "stock text clients: SKIPPED: PyPI is unreachable ($1)"
        exit 0
    fi
    echo "stock text clients: FAILED: $1 with PyPI reachable" >&2
    exit 1
}
[ -x "$BIN" ] || cargo build --bin confidant
if ! "$TRITON_VENV/bin/python" -c 'import tritonclient.grpc, numpy, nvidia.cuda_runtime' \
    2>/dev/null; then
    [ -x "$TRITON_VENV/bin/python" ] || "$PYTHON" -m venv "$TRITON_VENV"
    "$TRITON_VENV/bin/pip" install --quiet --disable-pip-version-check \
        'tritonclient[grpc]==2.41.0' 'protobuf>=3.20,<5' numpy nvidia-cuda-runtime-cu12 ||
        skip_or_fail "pip install tritonclient[grpc] nvidia-cuda-runtime-cu12"
fi
if ! "$OPENAI_VENV/bin/python" -c 'import openai' 2>/dev/null; then
    [ -x "$OPENAI_VENV/bin/python" ] || "$PYTHON" -m venv "$OPENAI_VENV"
    "$OPENAI_VENV/bin/pip" install --quiet --disable-pip-version-check openai ||
        skip_or_fail "pip install openai"
fi
"$TRITON_VENV/bin/pip" list 2>/dev/null |
    grep -E '^(tritonclient|grpcio|numpy|nvidia-cuda-runtime-cu12) ' || true
"$OPENAI_VENV/bin/pip" list 2>/dev/null | grep -E '^(openai|httpx2?) ' || true
MODEL_DIR=$(bash scripts/fetch-minilm.sh) || skip_or_fail "scripts/fetch-minilm.sh"
# perf_analyzer's shared libraries: libb64 from Debian, the CUDA runtime from its wheel.
VENV=$TRITON_VENV
source tests/stock_clients/perf_analyzer_env.sh

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=scripts/lib/minilm.sh
source scripts/lib/minilm.sh
seal_minilm "$BIN" "$MODEL_DIR" "$WORK"
KEY=$("$BIN" keys create --data-dir "$WORK/data" --principal search-app --purposes search |
    "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')

RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --metrics-listen off --data-dir "$WORK/data" --model "$WORK/minilm.sealed" \
    --key-file "$WORK/minilm.dek" --publisher-key "$WORK/keys/publisher.pub" \
    >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
for _ in $(seq 1 600); do
    grep -q '^confidant: serving on' "$WORK/serve.out" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.err" >&2; exit 1; }
    sleep 0.1
done
ADDR=$(sed -n 's/^confidant: serving on https:\/\/\([^ ]*\).*/\1/p' "$WORK/serve.out")
HTTP=$(sed -n 's/^confidant: embeddings API on //p' "$WORK/serve.out")
CERT=$WORK/data/tls/cert.pem
[ -n "$ADDR" ] && [ -n "$HTTP" ] || { echo "server did not start" >&2; exit 1; }

TEXTS='["Confidential clinical note: the patient denied chest pain.", "", "Schöne Grüße aus Köln — 日本語のテキスト", "claims"]'
ARGS=()
while IFS= read -r t; do ARGS+=(--text "$t"); done < <(
    "$PYTHON" -c 'import json, sys; print("\n".join(json.loads(sys.argv[1])))' "$TEXTS")
"$BIN" predict --addr "https://$ADDR" --tls-ca "$CERT" --api-key "$KEY" --purpose search \
    --model minilm "${ARGS[@]}" >"$WORK/reference.json"

common=(--ca "$CERT" --api-key "$KEY" --purpose search --model minilm --texts "$TEXTS"
    --reference "$WORK/reference.json")
"$TRITON_VENV/bin/python" tests/stock_clients/text_clients.py --client triton --grpc "$ADDR" \
    "${common[@]}"
"$OPENAI_VENV/bin/python" tests/stock_clients/text_clients.py --client openai --http "$HTTP" \
    "${common[@]}"

# perf_analyzer against `confidant bench` at the same concurrency and batch size, on the same
# real sentences (perf_analyzer's random bytes would not be valid text): a BYTES tensor of
# shape [batch, 1] from each, as tritonclient sends it. The sentences are of similar length in
# tokens (15 to 18: a batch is padded to its longest text), and there are 9 of them, a count
# coprime with 2 × batch (for batch 1, 2 and 4) so that each of perf_analyzer's two workers,
# whose requests start concurrency × batch sentences apart, goes through all of them (with 8,
# each worker kept to its own half, and the one with the shorter half sent more requests:
# perf_analyzer 26% above bench at batch 4). Bench sends every sentence equally often.
# PERF_CONCURRENCY and PERF_BATCH override the defaults (2 and 1).
CONCURRENCY=${PERF_CONCURRENCY:-2}
BATCH=${PERF_BATCH:-1}
SENTENCES=tests/stock_clients/sentences.jsonl
"$PYTHON" -c '
import json, sys
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
print(json.dumps({"data": [{"text": [t]} for t in texts]}, ensure_ascii=False))' "$SENTENCES" \
    >"$WORK/perf_input.json"
bench() {
    "$BIN" bench --addr "https://$ADDR" --tls-ca "$CERT" --api-key "$KEY" --purpose search \
        --model minilm --protocol oip --input-jsonl "$SENTENCES" --batch "$BATCH" \
        --concurrency "$CONCURRENCY" --window 2s --out "$WORK/$1"
}
# bench, perf_analyzer, bench: perf_analyzer must agree with a bench run beside it (the
# machine drifts between runs a minute apart; perf_compare.py and perf_agreement.sh explain).
# shellcheck source=tests/stock_clients/perf_agreement.sh
source tests/stock_clients/perf_agreement.sh
perf_agreement minilm 10 "x-api-key:$KEY" "x-purpose:search"
echo "stock text clients: OK"
