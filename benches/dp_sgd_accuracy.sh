#!/usr/bin/env bash
# Reproduces the DP-SGD accuracy table of BENCHMARKS.md: test accuracy of `confidant train`
# (the tuned defaults), mean of 5 seeds, δ = 1e-5, on the fixed splits in tests/fixtures/splits.
#
#   benches/dp_sgd_accuracy.sh                      # the table (release build)
#   EPSILONS="1" SEEDS="1 2" benches/dp_sgd_accuracy.sh
#   VALIDATION=1 benches/dp_sgd_accuracy.sh         # tune: train on 4/5 of each training
#                                                   # split, score on every fifth row
#   LOGISTIC_FLAGS="--lr 2" MLP_FLAGS="--epochs 40" benches/dp_sgd_accuracy.sh
#
# Each line: model, dataset, ε, mean accuracy, min, max, and the per-seed accuracies. A last
# line per model ("no DP") is the non-private baseline: the same trainer with --no-dp and
# NODP_FLAGS (default: plain SGD, 100 epochs, batch 32, lr 0.1; the DP learning rates are far
# too large without clipping).
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-"1 2 3 4 5"}
EPSILONS=${EPSILONS:-"1 3 8"}
DELTA=${DELTA:-1e-5}
LOGISTIC_FLAGS=${LOGISTIC_FLAGS:-}
MLP_FLAGS=${MLP_FLAGS:-}
NODP_FLAGS=${NODP_FLAGS:-"--epochs 100 --batch-size 32 --lr 0.1 --lr-schedule constant"}
BIN=${BIN:-target/release/confidant}
SPLITS=tests/fixtures/splits

if [[ -z ${SKIP_BUILD:-} ]]; then
    cargo build --release --quiet --bin confidant
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# train.csv and test.csv for a dataset: the fixed split, or (VALIDATION=1) a hold-out of the
# last 20% of the training split, so that tuning never looks at the test rows.
prepare() {
    local name=$1
    if [[ -n ${VALIDATION:-} ]]; then
        # Every fifth row: the rows are in the original file order (digits groups writers),
        # so a contiguous tail would be a different population.
        awk 'NR == 1 || (NR - 1) % 5 != 0' "$SPLITS/${name}_train.csv" >"$work/${name}_train.csv"
        awk 'NR == 1 || (NR - 1) % 5 == 0' "$SPLITS/${name}_train.csv" >"$work/${name}_test.csv"
    else
        cp "$SPLITS/${name}_train.csv" "$SPLITS/${name}_test.csv" "$work/"
    fi
}

accuracy() {
    "$BIN" evaluate --weights "$work/m.safetensors" --config "$work/m.json" \
        --data "$work/$1_test.csv" --label target |
        sed -E 's/.*"accuracy":([0-9.eE+-]+).*/\1/'
}

# run MODEL DATASET HIDDEN FLAGS...
run() {
    local model=$1 name=$2 hidden=$3
    shift 3
    local flags=("$@")
    prepare "$name"
    for eps in $EPSILONS "no DP"; do
        local accs=()
        for seed in $SEEDS; do
            local privacy=(--epsilon "$eps" --delta "$DELTA" "${flags[@]}")
            # shellcheck disable=SC2206 # NODP_FLAGS is meant to split
            [[ $eps == "no DP" ]] && privacy=(--no-dp $NODP_FLAGS)
            "$BIN" train --data "$work/${name}_train.csv" --label target --hidden "$hidden" \
                "${privacy[@]}" --seed "$seed" --out "$work/m.safetensors" \
                --config "$work/m.json" >"$work/train.json" 2>/dev/null
            accs+=("$(accuracy "$name")")
        done
        printf '%s\n' "${accs[@]}" | awk -v m="$model" -v d="$name" -v e="$eps" '
            { s += $1; v[NR] = $1; if (NR == 1 || $1 < lo) lo = $1; if (NR == 1 || $1 > hi) hi = $1 }
            END {
                line = sprintf("| %s | %s | %s | %.4f | %.4f | %.4f |", m, d, e, s / NR, lo, hi)
                for (i = 1; i <= NR; i++) line = line sprintf(" %.4f", v[i])
                print line " |"
            }'
    done
}

echo "| model | dataset | ε | mean | min | max | per seed |"
echo "|---|---|---|---|---|---|---|"
# shellcheck disable=SC2086 # the flag variables are meant to split
run "logistic regression" breast_cancer "" $LOGISTIC_FLAGS
# shellcheck disable=SC2086
run "MLP 32 (ReLU)" digits 32 $MLP_FLAGS
