# shellcheck shell=bash
# Shell helpers the peer comparisons share (sourced by run.sh and run_text.sh; $PY is the
# Python the calling script chose).

# A free TCP port on the loopback interface.
free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until FILE has a line starting with PREFIX (the server's ready line), while PID
# lives, for at most TENTHS tenths of a second (default 300).
wait_for() {
    local file=$1 prefix=$2 pid=$3 tenths=${4:-300}
    for _ in $(seq 1 "$tenths"); do
        if grep -q "^$prefix" "$file" 2>/dev/null; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then cat "$file" "$file.err" >&2 || true; return 1; fi
        sleep 0.1
    done
    echo "timed out waiting for $file" >&2
    return 1
}
