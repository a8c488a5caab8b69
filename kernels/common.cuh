// Shared helpers for Confidant's kernels. Header only; every .cu includes it.
#pragma once
#include <stdint.h>

// Functions marked CONFIDANT_HD compile for both the device and the host, so the host
// harness in kernels/host_check/ can run the same code on the CPU (without a GPU).
#ifdef __CUDACC__
#define CONFIDANT_HD __host__ __device__ __forceinline__
#else
#define CONFIDANT_HD inline
#endif
