// ChaCha20 block function (D. J. Bernstein's layout: 256-bit key, 64-bit block counter in
// words 12-13, 64-bit stream id in words 14-15), shared by the kernels that need a
// counter-based CSPRNG. Word j of stream (key, stream) is word j % 16 of block j / 16, the
// same stream as rand_chacha's ChaCha20Rng seeded with the key and set_stream(stream).
#pragma once
#include "common.cuh"

CONFIDANT_HD uint32_t confidant_rotl32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

#define CONFIDANT_QR(a, b, c, d)                                                            \
    a += b; d ^= a; d = confidant_rotl32(d, 16);                                           \
    c += d; b ^= c; b = confidant_rotl32(b, 12);                                           \
    a += b; d ^= a; d = confidant_rotl32(d, 8);                                            \
    c += d; b ^= c; b = confidant_rotl32(b, 7);

// Writes block `counter` of stream (key, stream) to out[0..16].
CONFIDANT_HD void confidant_chacha20_block(const uint32_t key[8], uint64_t counter,
                                           uint64_t stream, uint32_t out[16]) {
    uint32_t x0 = 0x61707865u, x1 = 0x3320646eu, x2 = 0x79622d32u, x3 = 0x6b206574u;
    uint32_t x4 = key[0], x5 = key[1], x6 = key[2], x7 = key[3];
    uint32_t x8 = key[4], x9 = key[5], x10 = key[6], x11 = key[7];
    uint32_t x12 = (uint32_t)counter, x13 = (uint32_t)(counter >> 32);
    uint32_t x14 = (uint32_t)stream, x15 = (uint32_t)(stream >> 32);
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int i = 0; i < 10; ++i) {
        CONFIDANT_QR(x0, x4, x8, x12);
        CONFIDANT_QR(x1, x5, x9, x13);
        CONFIDANT_QR(x2, x6, x10, x14);
        CONFIDANT_QR(x3, x7, x11, x15);
        CONFIDANT_QR(x0, x5, x10, x15);
        CONFIDANT_QR(x1, x6, x11, x12);
        CONFIDANT_QR(x2, x7, x8, x13);
        CONFIDANT_QR(x3, x4, x9, x14);
    }
    out[0] = x0 + 0x61707865u;  out[1] = x1 + 0x3320646eu;
    out[2] = x2 + 0x79622d32u;  out[3] = x3 + 0x6b206574u;
    out[4] = x4 + key[0];       out[5] = x5 + key[1];
    out[6] = x6 + key[2];       out[7] = x7 + key[3];
    out[8] = x8 + key[4];       out[9] = x9 + key[5];
    out[10] = x10 + key[6];     out[11] = x11 + key[7];
    out[12] = x12 + (uint32_t)counter;
    out[13] = x13 + (uint32_t)(counter >> 32);
    out[14] = x14 + (uint32_t)stream;
    out[15] = x15 + (uint32_t)(stream >> 32);
}

// The key as a kernel argument (passed by value).
struct ConfidantChachaKey {
    uint32_t w[8];
};
