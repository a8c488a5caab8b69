# Shared by scripts/trustee-interop.sh and scripts/kbs-client-interop.sh (sourced, not run):
# usage from the caller's header, step reporting, the confidant binary, process and log
# handling. The caller sets `set -Eeuo pipefail` and STEP before sourcing.

usage() {
    sed -n '2,/^set -Eeuo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
}

say() { printf '== %s\n' "$*"; }
fail() {
    printf 'FAIL [%s]: %s\n' "$STEP" "$*" >&2
    exit 1
}
step() {
    STEP=$1
    say "$1"
}

# The absolute path of the executable file $1, named $2 in the message if it is not one.
absolute_executable() {
    [[ -f $1 && -x $1 ]] || fail "$2 $1 is not an executable file"
    printf '%s/%s\n' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"
}

# The confidant binary: $CONFIDANT_BIN, else a fresh `cargo build` under $ROOT.
confidant_binary() {
    local bin
    if [[ -n ${CONFIDANT_BIN:-} ]]; then
        bin=$CONFIDANT_BIN
    else
        say "building confidant (cargo build --bin confidant)" >&2
        (cd "$ROOT" && cargo build --quiet --bin confidant) || fail "cargo build failed"
        bin=$ROOT/target/debug/confidant
    fi
    [[ -x $bin ]] || fail "confidant binary $bin is not executable"
    printf '%s\n' "$bin"
}

# Stops process $1 (if any): TERM, then KILL after 10 s.
stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2> /dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2> /dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2> /dev/null || true
}

# After a failure (exit status $1), the last lines of every log in directory $2.
show_logs_on_failure() {
    [[ $1 -ne 0 ]] || return 0
    printf 'FAIL [%s] (exit %d); the last lines of the logs:\n' "$STEP" "$1" >&2
    local log
    for log in "$2"/*.log; do
        [[ -f $log ]] || continue
        printf -- '--- %s\n' "$(basename "$log")" >&2
        tail -n 25 "$log" >&2
    done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
