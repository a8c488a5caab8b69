#!/usr/bin/env bash
# Puts a CUDA 13.0 compiler on PATH without a CUDA toolkit: nvcc, ptxas and the headers come
# from NVIDIA's PyPI wheels, installed once into target/cuda-venv. Source it:
#
#     source scripts/cuda-env.sh
#
# CUDA 13.0 is pinned (nvvm included: a newer nvvm emits PTX that 13.0's ptxas and the
# 580-series drivers reject).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
venv="$root/target/cuda-venv"
cu="$venv/lib/python3.11/site-packages/nvidia/cu13"
if ! command -v nvcc >/dev/null 2>&1 || [ "${CONFIDANT_PIP_NVCC:-0}" = 1 ]; then
    if [ ! -x "$cu/bin/nvcc" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check \
            "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88" \
            "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85"
    fi
    cu="$(cd "$venv"/lib/python3*/site-packages/nvidia/cu13 && pwd)"
    export PATH="$cu/bin:$PATH"
    export CUDA_HOME="$cu" CUDA_PATH="$cu" CUDA_ROOT="$cu"
    # Link-time stubs of the driver and the CUDA libraries cudarc links (cudarc searches
    # $CUDA_ROOT/lib/stubs), so `--features cuda` binaries link here; they run on a GPU host.
    if [ ! -e "$cu/lib/stubs/libcuda.so" ]; then
        cudarc_src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src 2>/dev/null | head -1 || true)"
        if [ -z "$cudarc_src" ]; then
            (cd "$root" && cargo fetch -q) && \
            cudarc_src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src | head -1)"
        fi
        python3 "$root/scripts/cuda-stubs.py" "$cudarc_src" "$cu/lib/stubs" >/dev/null
    fi
    # candle-kernels links the CUDA runtime too (-lcudart): the wheel ships only the soname.
    [ -e "$cu/lib/stubs/libcudart.so" ] || ln -s ../libcudart.so.13 "$cu/lib/stubs/libcudart.so"
fi
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
# candle-kernels' build (cudaforge) compiles its GGUF and MoE kernels into a static library:
# about six minutes of nvcc on one core, because cudaforge uses half the machine's threads
# unless told otherwise. On CI's two cores, .ci/run's clippy with `--features cuda` took
# 6 min 26 s with one thread and 3 min 27 s with both.
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
