#!/usr/bin/env bash
# The cost of receipts (issue 22 item 3), measured as BENCHMARKS.md ("Receipts") reports it:
# receipts/plain throughput of `confidant bench` against the same server, with the server's and
# the client's CPU time an answer, for one or more builds side by side.
#
#     bash scripts/receipts-cost.sh [-c CONC] [-b BATCH] [-r ROUNDS] [-p pinned|shared] [-d DEVICE] [SPEC...]
#
# SPEC is a confidant binary [default: target/release/confidant], optionally prefixed with
# environment variables for its server: `VAR=1,OTHER=2@path/to/confidant`. Every SPEC gets its
# own server (embedded demo defaults, its own data directory and port), all started at once and
# left running. Each round runs, for each server in turn, a plain bench point and then the same
# point with --receipts (`--window 1500ms --max-trials 3 --warmup 300ms`, OIP). While each
# point runs, the server's and the client's CPU time (/proc/PID/stat, user + system) is read
# over 3 s and divided by the answers in that time. `pinned` puts the servers on the upper half of
# the CPUs and the client on the lower half (`taskset`: vCPU 1 and vCPU 0 on a 2-vCPU VM; on a
# larger host each side gets cores of its own, and tokio starts a worker per core it may use);
# `shared` [default] lets them share every CPU. The client is the
# first SPEC's binary. Printed per SPEC: the mean receipts/plain ratio of the rounds (± the
# standard error), the mean throughputs, and the CPU an answer plain and what receipts add.
# `-d DEVICE` is passed to each server as `--device` (default: the server's own, `auto`, which
# is the first GPU in a CUDA build on a GPU host).
#
# Needs python3 and, for `pinned`, taskset. Numbers from a shared VM swing from run to run:
# compare builds within one run, never across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
CONC=8 BATCH=1 ROUNDS=5 PIN=shared
DEVICE=()
while getopts "c:b:r:p:d:" opt; do
    case $opt in
        c) CONC=$OPTARG ;;
        b) BATCH=$OPTARG ;;
        r) ROUNDS=$OPTARG ;;
        p) PIN=$OPTARG ;;
        d) DEVICE=(--device "$OPTARG") ;;
        *) echo "usage: $0 [-c CONC] [-b BATCH] [-r ROUNDS] [-p pinned|shared] [-d DEVICE] [SPEC...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
SPECS=("$@")
[[ ${#SPECS[@]} -gt 0 ]] || SPECS=(target/release/confidant)
case $PIN in
    pinned)
        CPUS=$(nproc)
        [[ $CPUS -ge 2 ]] || { echo "-p pinned needs at least 2 CPUs, this host has $CPUS" >&2; exit 2; }
        HALF=$((CPUS / 2))
        SERVER_CPU=(taskset -c "$HALF-$((CPUS - 1))") CLIENT_CPU=(taskset -c "0-$((HALF - 1))") ;;
    shared) SERVER_CPU=() CLIENT_CPU=() ;;
    *) echo "-p must be pinned or shared, not '$PIN'" >&2; exit 2 ;;
esac

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

binary_of() { local spec=$1; [[ $spec == *@* ]] && echo "${spec#*@}" || echo "$spec"; }
envs_of() { local spec=$1; [[ $spec == *@* ]] && echo "${spec%@*}" | tr ',' ' ' || true; }
CLIENT=$(binary_of "${SPECS[0]}")
BASE_PORT=$((52000 + RANDOM % 5000))

for i in "${!SPECS[@]}"; do
    bin=$(binary_of "${SPECS[$i]}")
    [[ -x $bin ]] || { echo "no executable confidant at '$bin'" >&2; exit 2; }
    mkdir -p "$WORK/$i"
    # shellcheck disable=SC2046 # the variables are words on purpose
    env $(envs_of "${SPECS[$i]}") "${SERVER_CPU[@]}" "$bin" serve --data-dir "$WORK/$i" \
        --listen "127.0.0.1:$((BASE_PORT + i))" --http-listen off --metrics-listen off "${DEVICE[@]}" \
        >"$WORK/$i/server.log" 2>&1 &
    PIDS+=($!)
done
for i in "${!SPECS[@]}"; do
    for _ in $(seq 300); do
        grep -q "serving on" "$WORK/$i/server.log" 2>/dev/null && break
        kill -0 "${PIDS[$i]}" 2>/dev/null || { cat "$WORK/$i/server.log" >&2; exit 1; }
        sleep 0.2
    done
    grep -q "serving on" "$WORK/$i/server.log" || { echo "server $i did not start" >&2; exit 1; }
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
point() { # server index, plain|receipts
    local i=$1 mode=$2 out="$WORK/point"
    local extra=()
    [[ $mode == receipts ]] && extra=(--receipts)
    rm -rf "$out" && mkdir -p "$out"
    "${CLIENT_CPU[@]}" "$CLIENT" bench --addr "https://127.0.0.1:$((BASE_PORT + i))" \
        --data-dir "$WORK/$i" --model demo --batch "$BATCH" --concurrency "$CONC" \
        --window 1500ms --max-trials 3 --warmup 300ms "${extra[@]}" --out "$out" \
        >"$out/log" 2>&1 &
    local client=$!
    sleep 0.5
    # A bench that failed at once (its start, the model, the key) has no CPU time to read.
    if ! kill -0 "$client" 2>/dev/null; then
        wait "$client" || { echo "the $mode bench point failed:" >&2; cat "$out/log" >&2; exit 1; }
        echo "the $mode bench point ended within 0.5 s; nothing to measure" >&2
        exit 1
    fi
    local c0 s0 t0 c1 s1 t1
    c0=$(ticks "$client") s0=$(ticks "${PIDS[$i]}") t0=$(date +%s.%N)
    sleep 3
    c1=$(ticks "$client") s1=$(ticks "${PIDS[$i]}") t1=$(date +%s.%N)
    wait "$client" || { echo "the $mode bench point failed:" >&2; cat "$out/log" >&2; exit 1; }
    python3 - "$out/results.json" "$i" "$mode" "$s0" "$s1" "$c0" "$c1" "$t0" "$t1" "$HZ" \
        >>"$WORK/data" <<'PY'
import json, sys
path, i, mode, s0, s1, c0, c1, t0, t1, hz = sys.argv[1:]
r = json.load(open(path))[0]
if r["errors"]:
    sys.exit(f"{r['errors']} errors in a {mode} point: {r['errors_by_code']}")
answers = r["requests_per_s"] * (float(t1) - float(t0))
per = lambda a, b: (float(b) - float(a)) / float(hz) * 1e6 / answers
print(i, mode, r["requests_per_s"], per(s0, s1), per(c0, c1))
PY
}

echo "receipts-cost: batch $BATCH, concurrency $CONC, $ROUNDS rounds, $PIN${SERVER_CPU[*]:+ (servers: ${SERVER_CPU[*]}, client: ${CLIENT_CPU[*]})}, $(nproc) vCPUs" >&2
for round in $(seq "$ROUNDS"); do
    for i in "${!SPECS[@]}"; do
        point "$i" plain
        point "$i" receipts
    done
    echo "round $round done" >&2
done

python3 - "$WORK/data" "${SPECS[@]}" <<'PY'
import statistics as st, sys
rows = [line.split() for line in open(sys.argv[1])]
specs = sys.argv[2:]
runs = {}
for i, mode, rps, server, client in rows:
    runs.setdefault(int(i), {}).setdefault(mode, []).append((float(rps), float(server), float(client)))
def mean_se(v):
    se = st.stdev(v) / len(v) ** 0.5 if len(v) > 1 else 0.0
    return f"{st.mean(v):.3f} ± {se:.3f}"
for i in sorted(runs):
    plain, rec = runs[i]["plain"], runs[i]["receipts"]
    ratio = [r[0] / p[0] for p, r in zip(plain, rec)]
    server = [r[1] - p[1] for p, r in zip(plain, rec)]
    client = [r[2] - p[2] for p, r in zip(plain, rec)]
    print(f"{specs[i]}: receipts/plain {mean_se(ratio)}; req/s plain {st.mean(p[0] for p in plain):.0f}, "
          f"receipts {st.mean(r[0] for r in rec):.0f}; server µs an answer {st.mean(p[1] for p in plain):.1f} "
          f"+ {mean_se(server)}; client {st.mean(p[2] for p in plain):.1f} + {mean_se(client)}")
PY
