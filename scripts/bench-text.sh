#!/usr/bin/env bash
# The in-process CPU comparison of issue 19: all-MiniLM-L6-v2, batch 32 x 128 tokens,
# 2 threads, Confidant's engine (benches/text.rs, criterion) against PyTorch
# (benches/text_torch.py, sentence-transformers, torch.set_num_threads(2)), side by side in
# one run: PyTorch, then Confidant, then PyTorch again; prints both and the ratio
# (PyTorch time / Confidant time; > 1 means Confidant is faster).
#
#     PYTHON=/work/.venvs/bert/bin/python bash scripts/bench-text.sh
#
# $PYTHON needs torch and sentence-transformers (CPU is enough). PROFILE=dev builds the bench
# in the dev profile (dependencies, candle included, at opt-level 2; this crate at 0) instead
# of the optimized bench profile, when a release build of the dependency graph is too slow.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DIR=$(bash scripts/fetch-minilm.sh)
export CONFIDANT_MINILM_DIR=$DIR RAYON_NUM_THREADS=2
PROFILE=${PROFILE:-bench}
cargo bench --bench text --profile "$PROFILE" --no-run >&2
torch1=$("$PYTHON" benches/text_torch.py "$DIR" --threads 2)
cargo bench --bench text --profile "$PROFILE" -- --warm-up-time 3 --measurement-time 15 minilm/forward_b32_t128 \
    | tee target/bench-text.txt >&2
torch2=$("$PYTHON" benches/text_torch.py "$DIR" --threads 2)
"$PYTHON" - "$torch1" "$torch2" <<'PY'
import json, re, sys
t1, t2 = json.loads(sys.argv[1]), json.loads(sys.argv[2])
text = open("target/bench-text.txt").read()
m = re.search(r"minilm/forward_b32_t128\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", text)
value, unit = float(m.group(1)), m.group(2)
ours = value * {"ms": 1.0, "s": 1e3, "µs": 1e-3, "us": 1e-3}[unit]
torch_ms = min(t1["median_ms"], t2["median_ms"])
print(json.dumps({"confidant_ms": ours, "torch_median_ms": [t1["median_ms"], t2["median_ms"]],
                  "torch": t1["torch"], "threads": t1["threads"],
                  "ratio_torch_over_confidant": torch_ms / ours}))
PY
