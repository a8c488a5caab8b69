#!/usr/bin/env python3
"""Writes link-time stubs of the CUDA libraries that cudarc links (driver, NVRTC, cuRAND,
cuBLAS, cuBLASLt) into DIR, so a `--features cuda` binary can be linked on a machine with no
CUDA toolkit or driver. Each stub exports every function cudarc declares, with the real
library's soname: at run time the loader resolves the real libraries on the GPU host. The
stubs are never run (a stub binary started without a driver fails at the loader).

usage: cuda-stubs.py CUDARC_SRC_DIR OUT_DIR
"""
import pathlib
import re
import subprocess
import sys

LIBS = {
    # library: (sys module, soname)
    "cuda": ("driver", "libcuda.so.1"),
    "nvrtc": ("nvrtc", "libnvrtc.so.13"),
    "curand": ("curand", "libcurand.so.10"),
    "cublas": ("cublas", "libcublas.so.13"),
    "cublasLt": ("cublaslt", "libcublasLt.so.13"),
}

def main() -> int:
    src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for lib, (module, soname) in LIBS.items():
        text = (src / module / "sys" / "mod.rs").read_text()
        names = sorted(set(re.findall(r'extern "C" \{\s*(?:#\[[^\]]*\]\s*)*(?:pub )?fn (\w+)\(', text)))
        if not names:
            print(f"no functions found for {lib}", file=sys.stderr)
            return 1
        c = out / f"{lib}_stub.c"
        c.write_text("".join(f"void {n}(void) {{}}\n" for n in names))
        so = out / f"lib{lib}.so"
        subprocess.run(["cc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(so), str(c)], check=True)
        c.unlink()
        print(f"{so}: {len(names)} symbols, soname {soname}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
