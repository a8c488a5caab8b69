#!/usr/bin/env bash
# Compiles every kernels/*.cu for Hopper (sm_90) with nvcc and ptxas -v, and fails on a
# compile error or on any register spill (a spill turns a register-resident loop into
# local-memory traffic). Needs no GPU: nvcc comes from PyPI wheels (scripts/cuda-env.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if ! command -v nvcc >/dev/null 2>&1; then
    # shellcheck source=/dev/null
    source scripts/cuda-env.sh
fi
arch="${CUDA_ARCH:-sm_90}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
fail=0
for cu in kernels/*.cu; do
    name="$(basename "$cu" .cu)"
    if ! nvcc -cubin -arch="$arch" -O3 -std=c++17 -Ikernels -Xptxas -v "$cu" -o "$out/$name.cubin" \
        >"$out/$name.log" 2>&1; then
        echo "FAIL $cu: compile error"
        cat "$out/$name.log"
        fail=1
        continue
    fi
    # ptxas prints, per kernel: "Compiling entry function 'X'", then the stack frame and
    # spill line, then "Used N registers".
    python3 - "$cu" "$out/$name.log" <<'PY' || fail=1
import re, sys
cu, log = sys.argv[1], open(sys.argv[2]).read()
fn, bad = None, False
rows = []
for line in log.splitlines():
    m = re.search(r"Compiling entry function '(\w+)'", line) or re.search(r"Function properties for (\w+)", line)
    if m:
        fn = m.group(1)
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and fn:
        stack, st, ld = map(int, m.groups())
        rows.append([fn, stack, st, ld, None])
        if st or ld:
            bad = True
    m = re.search(r"Used (\d+) registers", line)
    if m and rows and rows[-1][4] is None:
        rows[-1][4] = int(m.group(1))
for fn, stack, st, ld, regs in rows:
    flag = "SPILL" if (st or ld) else "ok"
    print(f"{flag:5} {cu}:{fn}: {regs} registers, {stack} B stack, {st} B spill stores, {ld} B spill loads")
if not rows:
    print(f"FAIL {cu}: no kernels reported by ptxas")
    sys.exit(1)
sys.exit(1 if bad else 0)
PY
done
exit $fail
