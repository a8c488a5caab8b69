#!/usr/bin/env bash
# Checks the kernels' per-thread math without a GPU: compiles kernels/host_check/host_check.cu
# with nvcc as host code (the CONFIDANT_HD functions of kernels/*.cuh run on the CPU) and runs
# it against known-answer vectors and kernels/host_check/vectors.txt (written by the Rust CPU
# references). Exits non-zero on any mismatch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
out="${CARGO_TARGET_DIR:-$root/target}/host_check"
mkdir -p "$out"
# -ffp-contract=off: the fast sampler's float operations must round exactly as Rust's do (the
# device side uses the _rn intrinsics for the same reason).
nvcc -std=c++17 -O2 -Ikernels -cudart static -L"$CUDA_HOME/lib" -Xcompiler -ffp-contract=off,-Wall \
    -o "$out/host_check" kernels/host_check/host_check.cu
"$out/host_check" kernels/host_check/vectors.txt
