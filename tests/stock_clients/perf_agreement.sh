# Sourced by tests/stock_clients.sh and tests/stock_text_clients.sh. Defines
# `perf_agreement MODEL MAX_TRIALS HEADER...`, which measures Triton's perf_analyzer
# ($PERF_ANALYZER, over TLS to $ADDR with $CERT, sending -H HEADER for each HEADER, on
# $WORK/perf_input.json) against `confidant bench` at CONCURRENCY and BATCH: bench,
# perf_analyzer, bench, then tests/stock_clients/perf_compare.py. The caller defines `bench
# NAME` (a bench run writing $WORK/NAME/results.json) and sets VENV and WORK.
#
# A disagreement in throughput alone (perf_compare.py's exit 3) is measured again, up to
# PERF_ATTEMPTS triples in all (default 3): a shared 2-core CI machine can slow down for the
# whole of one client's run and not the runs beside it (CI once read perf_analyzer at 87
# infer/s between bench runs of 125 and 110 on the text model, its server-side compute 11.5 ms
# a request against 8.4 ms on a quiet VM). A client that miscounts disagrees every time and
# still fails. Any other failure (perf_analyzer failing, statistics that do not count its
# requests) fails at once.
perf_agreement() {
    local model=$1 max_trials=$2 attempts=${PERF_ATTEMPTS:-3} attempt rc header
    shift 2
    local headers=()
    for header in "$@"; do headers+=(-H "$header"); done
    [[ $attempts =~ ^[1-9][0-9]*$ ]] ||
        { echo "FAILED: PERF_ATTEMPTS must be a positive integer, got '$attempts'" >&2; exit 1; }
    for ((attempt = 1; ; attempt++)); do
        bench bench-before
        if ! "$PERF_ANALYZER" -m "$model" -b "$BATCH" -u "$ADDR" -i grpc --ssl-grpc-use-ssl \
            --ssl-grpc-root-certifications-file "$CERT" "${headers[@]}" \
            --input-data "$WORK/perf_input.json" --concurrency-range "$CONCURRENCY" \
            --measurement-interval 2000 --stability-percentage 25 --max-trials "$max_trials" \
            -f "$WORK/perf.csv" >"$WORK/perf.log" 2>&1; then
            cat "$WORK/perf.log" >&2
            echo "FAILED: perf_analyzer against $model" >&2
            exit 1
        fi
        sed -n '/^Request concurrency/,$p' "$WORK/perf.log"
        bench bench-after
        rc=0
        "$VENV/bin/python" tests/stock_clients/perf_compare.py --perf-log "$WORK/perf.log" \
            --perf-csv "$WORK/perf.csv" --concurrency "$CONCURRENCY" --batch "$BATCH" \
            --bench "$WORK/bench-before/results.json" "$WORK/bench-after/results.json" ||
            rc=$?
        [ "$rc" -eq 0 ] && return 0
        if [ "$rc" -ne 3 ] || [ "$attempt" -ge "$attempts" ]; then
            echo "FAILED: perf_analyzer against confidant bench (attempt $attempt of $attempts)" >&2
            exit 1
        fi
        echo "perf_analyzer and confidant bench disagreed (attempt $attempt of $attempts):" \
            "measuring all three again"
    done
}
