#!/usr/bin/env bash
# nvcc for the lint-only `cargo clippy --features cuda` of .ci/run (NVCC=scripts/lint-nvcc.sh).
#
# clippy reads Rust metadata and links nothing, so it never uses the PTX and the static
# library that candle-kernels' build script compiles from candle's CUDA sources: about 4.5 min
# of nvcc on CI's two cores, for output the lint throws away. For that one crate (cargo sets
# CARGO_PKG_NAME for a build script and its children), this writes the files nvcc would have
# written, empty: a `.ptx` per source for `--ptx`, an object for `-c`, an empty archive for
# `--lib`. Every other call (our own kernels in kernels/, `--version`) goes to the real nvcc.
#
# Never use it for a build that runs or links: candle's CUDA kernels would be empty. GPU hosts
# build with the real nvcc (scripts/gpu-check.sh --build), and .ci/run compiles our kernels for
# real (scripts/check-kernels.sh).
set -euo pipefail

real="$(command -v nvcc)"
if [[ "${CARGO_PKG_NAME:-}" != candle-kernels ]]; then
    exec "$real" "$@"
fi

out="" outdir="" mode="" sources=()
prev=""
for a in "$@"; do
    case "$prev" in
    -o) out="$a" ;;
    --output-directory) outdir="$a" ;;
    esac
    case "$a" in
    --ptx) mode=ptx ;;
    -c) mode=obj ;;
    --lib) mode=lib ;;
    *.cu) sources+=("$a") ;;
    esac
    prev="$a"
done

case "$mode" in
ptx)
    [[ -n "$outdir" && ${#sources[@]} -gt 0 ]] || exec "$real" "$@"
    for s in "${sources[@]}"; do
        name="$(basename "$s")"
        : >"$outdir/${name%.cu}.ptx"
    done
    ;;
obj)
    [[ -n "$out" ]] || exec "$real" "$@"
    : >"$out"
    ;;
lib)
    [[ -n "$out" ]] || exec "$real" "$@"
    printf '!<arch>\n' >"$out"
    ;;
*)
    exec "$real" "$@"
    ;;
esac
