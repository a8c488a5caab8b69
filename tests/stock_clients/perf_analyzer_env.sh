# Sourced by tests/stock_clients.sh and tests/stock_text_clients.sh, with VENV set to a virtual
# environment holding `tritonclient[grpc]==2.41.0` and `nvidia-cuda-runtime-cu12`: makes
# Triton's perf_analyzer binary from that wheel runnable and sets PERF_ANALYZER to it.
# perf_analyzer needs libb64 (Debian's libb64-0d, installed here with apt-get, as root) and
# libcudart.so.12 (from the nvidia-cuda-runtime-cu12 wheel, put on LD_LIBRARY_PATH), not a
# GPU. Fails (exit 1) when either cannot be had.
PERF_ANALYZER=$VENV/bin/perf_analyzer
[ -x "$PERF_ANALYZER" ] || { echo "FAILED: the tritonclient wheel has no perf_analyzer" >&2; exit 1; }
if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
    apt-get install -y -q libb64-0d >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q libb64-0d >/dev/null; } ||
        { echo "FAILED: cannot install libb64-0d (apt-get, as root)" >&2; exit 1; }
fi
CUDART_DIR=$("$VENV/bin/python" -c \
    'import nvidia.cuda_runtime as m, os; print(os.path.join(list(m.__path__)[0], "lib"))') ||
    { echo "FAILED: nvidia-cuda-runtime-cu12 is not installed in $VENV" >&2; exit 1; }
export LD_LIBRARY_PATH=$CUDART_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
"$PERF_ANALYZER" --version
