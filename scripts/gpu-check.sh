#!/usr/bin/env bash
# One-command GPU check. On a GPU host, in one pass (and, between the kernel tests and the end
# to end run, cuda:0's attestation evidence: `attest gpu-evidence`, then `attest verify`):
#   1. builds with --features cuda,experimental (the host's nvcc; profile `gpu`; experimental
#      adds only the DP-noise kernels, which no server path calls, so they are checked): the server, the
#      kernel-vs-reference tests and the GPU benchmarks;
#   2. runs every kernel-vs-reference test (tests/cuda_gpu.rs, tests/cuda_kernels.rs,
#      tests/cuda_noise.rs);
#   3. serves the demo model on cuda:0 and predicts through it, end to end over gRPC;
#   4. runs the GPU benchmarks (P4 load paths, P5 fused MLP, noise GB/s) and prints their
#      table;
#   5. measures what receipts cost the demo on the CPU with the server and the client on cores
#      of their own (issue 22 item 3; a 2-vCPU VM cannot separate them): batch 1 at
#      concurrency 8 and 32, informational, about a minute.
# Full logs go to LOGDIR. It fits in 11 minutes on an H100/H200.
#
# usage: scripts/gpu-check.sh LOGDIR                 build here, then run
#        scripts/gpu-check.sh --build-only BINDIR    build and collect the binaries (a machine
#                                                   with Rust and nvcc, no GPU needed)
#        scripts/gpu-check.sh --prebuilt BINDIR LOGDIR   run binaries built by --build-only
#                                                   (a GPU host without a Rust toolchain)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

build() {
    local out="$1"
    mkdir -p "$out"
    if ! command -v nvcc >/dev/null 2>&1; then
        # shellcheck source=/dev/null
        source scripts/cuda-env.sh
    fi
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    local msgs
    msgs="$(mktemp)"
    cargo build --profile gpu --features cuda,experimental --bin confidant --message-format=json-render-diagnostics >"$msgs"
    cargo test --profile gpu --features cuda,experimental --no-run --test cuda_gpu --test cuda_kernels --test cuda_noise --message-format=json-render-diagnostics >>"$msgs"
    cargo bench --profile gpu --features cuda,experimental --no-run --bench gpu --message-format=json-render-diagnostics >>"$msgs"
    python3 - "$msgs" "$out" <<'PY'
import json, shutil, sys
msgs, out = sys.argv[1], sys.argv[2]
for line in open(msgs):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        t = m["target"]
        name = t["name"] if t["kind"] != ["bin"] else "confidant"
        if t["kind"] == ["bench"]:
            name = "bench-" + name
        shutil.copy(m["executable"], f"{out}/{name}")
        print(f"{out}/{name}")
PY
    rm -f "$msgs"
    bash scripts/check-kernels-host.sh --gpu >/dev/null
    cp target/host_check/gpu_check "$out/gpu_check"
}

libpath() {
    # The CUDA libraries the binaries link (cudarc: driver, NVRTC, cuRAND, cuBLAS, cuBLASLt;
    # candle-kernels: the runtime).
    local dirs=""
    for lib in libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
        local f
        f="$(ldconfig -p 2>/dev/null | awk -v l="$lib" '$1 == l {print $NF; exit}')"
        if [ -z "$f" ]; then
            f="$(find /usr/local/nvidia /usr/local/cuda* /usr/lib /opt /usr/local/lib -name "$lib" 2>/dev/null | head -1 || true)"
        fi
        [ -n "$f" ] && dirs="$dirs:$(dirname "$f")"
    done
    echo "${dirs#:}"
}

run() {
    local bin="$1" logs="$2"
    mkdir -p "$logs"
    export LD_LIBRARY_PATH="$(libpath)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # A GPU is expected here: the GPU tests fail instead of skipping when none is visible.
    export CONFIDANT_EXPECT_GPU=1
    local status=0
    {
        echo "== host"
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || true
        echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    } 2>&1 | tee "$logs/host.txt"

    echo "== kernel-vs-reference tests"
    for t in cuda_gpu cuda_kernels cuda_noise; do
        if [ -x "$bin/$t" ]; then
            if ! "$bin/$t" --test-threads=1 --nocapture >"$logs/test-$t.txt" 2>&1; then
                status=1
                echo "FAILED: $t (see $logs/test-$t.txt)"
                tail -40 "$logs/test-$t.txt"
            fi
            grep -E '^test |test result|max rel err|bit-identical|GB/s' "$logs/test-$t.txt" || true
        else
            echo "missing test binary $t"; status=1
        fi
    done

    if [ -x "$bin/gpu_check" ]; then
        echo "== kernels/host_check/gpu_check: the compiled kernels against the reference vectors"
        if ! "$bin/gpu_check" kernels/host_check/vectors.txt >"$logs/gpu_check.txt" 2>&1; then
            status=1; echo "FAILED: gpu_check"
        fi
        tail -5 "$logs/gpu_check.txt"
    fi

    echo "== GPU attestation: cuda:0's evidence through NVML for a fresh nonce, verified offline"
    # Not a pass/fail step: a GPU outside CC mode gives no evidence (NVML refuses), and that is
    # the fail-closed path to record. Evidence that does come back is kept as a vector.
    local nonce now ev="$logs/gpu-evidence"
    nonce="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    if "$bin/confidant" attest gpu-evidence --device 0 --nonce "$nonce" --out "$ev" \
        >"$logs/gpu-evidence.json" 2>"$logs/gpu-evidence.err"; then
        echo "collected: $(cat "$logs/gpu-evidence.json")"
        echo "$nonce" >"$ev/nonce.hex"
        echo "$now" >"$ev/at.txt"
        "$bin/confidant" attest verify --gpu-evidence "$ev/report.bin" --gpu-chain "$ev/chain.pem" \
            --nonce "$nonce" --at "$now" >"$logs/gpu-verdict.json" 2>&1 \
            && echo "authenticity: accept" || echo "authenticity: REJECT (see gpu-verdict.json)"
        printf 'measurements = "any"\ni_understand_this_accepts_any_guest = true\n[gpu]\ncc_mode = "on"\n' \
            >"$logs/gpu-policy.toml"
        "$bin/confidant" attest verify --gpu-evidence "$ev/report.bin" --gpu-chain "$ev/chain.pem" \
            --nonce "$nonce" --at "$now" --policy "$logs/gpu-policy.toml" \
            >"$logs/gpu-verdict-cc-on.json" 2>&1 \
            && echo "[gpu] cc_mode = on without RIMs: accept (unexpected)" \
            || echo "[gpu] cc_mode = on without RIMs: refused, as it must be (gpu-verdict-cc-on.json)"
    else
        echo "no GPU evidence (fail closed: a server on cuda:0 stays NOT_SERVING for a key whose"
        echo "policy needs a GPU): $(tail -1 "$logs/gpu-evidence.err")"
    fi

    echo "== end to end: the demo served on cuda:0 and on the CPU, the same rows through both"
    local csv=tests/fixtures/breast_cancer_test.csv
    for dev in cuda:0 cpu; do
        local data port tag="${dev%%:*}"
        data="$(mktemp -d)"
        port=$((20000 + RANDOM % 20000))
        "$bin/confidant" serve --device "$dev" --data-dir "$data" --listen "127.0.0.1:$port" \
            --metrics-listen off --http-listen off >>"$logs/serve.txt" 2>&1 &
        local pid=$!
        for _ in $(seq 1 240); do
            grep -q "serving on https://127.0.0.1:$port" "$logs/serve.txt" && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if "$bin/confidant" predict --addr "https://127.0.0.1:$port" --tls-ca "$data/tls/cert.pem" \
            --data-dir "$data" --model demo --input-csv "$csv" >"$logs/predict-$tag.json" 2>>"$logs/serve.txt"; then
            echo "predict on $dev: ok ($(wc -c <"$logs/predict-$tag.json") bytes)"
        else
            status=1; echo "FAILED: predict on $dev"; cat "$logs/predict-$tag.json"; tail -20 "$logs/serve.txt"
        fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    grep -E 'model device|decrypted into CUDA' "$logs/serve.txt" | head -4 || true
    python3 - "$logs/predict-cuda.json" "$logs/predict-cpu.json" <<'PY' || status=1
import json, sys
g, c = (json.load(open(p)) for p in sys.argv[1:3])
go, co = g["outputs"], c["outputs"]
assert len(go) == len(co) and len(go) > 0, (len(go), len(co))
err = max(abs(a - b) / max(1.0, abs(b)) for r, s in zip(go, co) for a, b in zip(r, s))
same = sum(1 for a, b in zip(g["labels"], c["labels"]) if a == b)
print(f"cuda:0 vs cpu over {len(go)} rows: max rel err {err:.2e}, labels equal {same}/{len(go)}")
sys.exit(0 if err <= 1e-5 and same == len(go) else 1)
PY

    echo "== GPU benchmarks"
    if [ -x "$bin/bench-gpu" ]; then
        CRITERION_HOME="${CRITERION_HOME:-$logs/criterion}" "$bin/bench-gpu" --bench >"$logs/bench.txt" 2>&1 || status=1
        sed -n '/== GPU summary/,$p' "$logs/bench.txt"
    else
        echo "missing bench binary"; status=1
    fi

    echo "== receipts' cost: receipts/plain, the servers on the upper half of the CPUs, the client on the lower"
    # Not a pass/fail step: BENCHMARKS.md ("Receipts") records what it reads.
    for c in 8 32; do
        timeout 120 bash scripts/receipts-cost.sh -p pinned -d cpu -b 1 -c "$c" -r 3 "$bin/confidant" \
            >"$logs/receipts-c$c.txt" 2>&1 \
            || echo "concurrency $c did not finish (see $logs/receipts-c$c.txt)"
        grep -E '^receipts-cost:' "$logs/receipts-c$c.txt" | head -1 || true
        tail -1 "$logs/receipts-c$c.txt"
    done
    return $status
}

case "${1:-}" in
    --build-only) build "${2:?BINDIR}" ;;
    --prebuilt) run "${2:?BINDIR}" "${3:?LOGDIR}" ;;
    ""|-h|--help) sed -n '2,21p' "$0"; exit 2 ;;
    *)
        logs="$1"
        bin="$logs/bin"
        build "$bin" >"$logs.build.txt" 2>&1 || { cat "$logs.build.txt"; exit 1; }
        run "$bin" "$logs"
        ;;
esac
