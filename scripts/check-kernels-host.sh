#!/usr/bin/env bash
# Checks the kernels' per-thread math without a GPU: compiles kernels/host_check/host_check.cu
# with nvcc as host code (the CONFIDANT_HD functions of kernels/*.cuh run on the CPU) and runs
# it against known-answer vectors and kernels/host_check/vectors.txt (written by the Rust CPU
# references). Exits non-zero on any mismatch.
#
#     bash scripts/check-kernels-host.sh            # host check
#     bash scripts/check-kernels-host.sh --gpu      # also build target/host_check/gpu_check,
#                                                   # the real kernels against the same vectors
#                                                   # (runs it when a GPU answers; else copy it
#                                                   # and vectors.txt to a GPU host)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
out="${CARGO_TARGET_DIR:-$root/target}/host_check"
mkdir -p "$out"
link=(-cudart static)
if [ -n "${CUDA_HOME:-}" ]; then link+=(-L"$CUDA_HOME/lib"); fi
# -ffp-contract=off: the fast sampler's float operations must round exactly as Rust's do (the
# device side uses the _rn intrinsics for the same reason).
nvcc -std=c++17 -O2 -Ikernels "${link[@]}" -Xcompiler -ffp-contract=off,-Wall \
    -o "$out/host_check" kernels/host_check/host_check.cu
"$out/host_check" kernels/host_check/vectors.txt
if [ "${1:-}" = "--gpu" ]; then
    nvcc -std=c++17 -O2 -arch="sm_${CUDA_COMPUTE_CAP}" -Ikernels "${link[@]}" \
        -o "$out/gpu_check" kernels/host_check/gpu_check.cu
    echo "built $out/gpu_check"
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "$out/gpu_check" kernels/host_check/vectors.txt
    fi
fi
