// ChaCha20 (D. J. Bernstein, 2008), original layout: words 0-3 the constants, 4-11 the 256-bit
// key, 12-13 a 64-bit block counter (low word first), 14-15 a 64-bit nonce (the stream id).
// Word j of stream (key, nonce) is word j mod 16 of block j div 16, which is what
// rand_chacha's ChaCha20Rng::from_seed(key) + set_stream(nonce) produces; the CPU reference is
// src/gpu/chacha.rs. Everything here is CONFIDANT_HD so kernels/host_check runs it on the CPU.
#pragma once
#include "common.cuh"

// The key as the eight little-endian words of the 32 key bytes.
struct ChaChaKey {
    uint32_t w[8];
};

// The key from four 64-bit kernel arguments (word 2i in the low half of k[i]).
CONFIDANT_HD ChaChaKey chacha_key_from_u64(uint64_t k0, uint64_t k1, uint64_t k2, uint64_t k3) {
    ChaChaKey key;
    key.w[0] = (uint32_t)k0;
    key.w[1] = (uint32_t)(k0 >> 32);
    key.w[2] = (uint32_t)k1;
    key.w[3] = (uint32_t)(k1 >> 32);
    key.w[4] = (uint32_t)k2;
    key.w[5] = (uint32_t)(k2 >> 32);
    key.w[6] = (uint32_t)k3;
    key.w[7] = (uint32_t)(k3 >> 32);
    return key;
}

CONFIDANT_HD uint32_t chacha_rotl(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

#define CHACHA_QR(a, b, c, d)                                                                  \
    a += b; d ^= a; d = chacha_rotl(d, 16);                                                    \
    c += d; b ^= c; b = chacha_rotl(b, 12);                                                    \
    a += b; d ^= a; d = chacha_rotl(d, 8);                                                     \
    c += d; b ^= c; b = chacha_rotl(b, 7);

// One 64-byte block: out[0..16] = ChaCha20(key, counter, nonce). Fully unrolled on scalars so
// the whole state stays in registers (out must be indexed with constants after inlining).
CONFIDANT_HD void chacha20_block(const ChaChaKey& key, uint64_t counter, uint64_t nonce,
                                 uint32_t out[16]) {
    const uint32_t c0 = 0x61707865u, c1 = 0x3320646eu, c2 = 0x79622d32u, c3 = 0x6b206574u;
    const uint32_t n12 = (uint32_t)counter, n13 = (uint32_t)(counter >> 32);
    const uint32_t n14 = (uint32_t)nonce, n15 = (uint32_t)(nonce >> 32);
    uint32_t x0 = c0, x1 = c1, x2 = c2, x3 = c3;
    uint32_t x4 = key.w[0], x5 = key.w[1], x6 = key.w[2], x7 = key.w[3];
    uint32_t x8 = key.w[4], x9 = key.w[5], x10 = key.w[6], x11 = key.w[7];
    uint32_t x12 = n12, x13 = n13, x14 = n14, x15 = n15;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int i = 0; i < 10; ++i) {
        CHACHA_QR(x0, x4, x8, x12)
        CHACHA_QR(x1, x5, x9, x13)
        CHACHA_QR(x2, x6, x10, x14)
        CHACHA_QR(x3, x7, x11, x15)
        CHACHA_QR(x0, x5, x10, x15)
        CHACHA_QR(x1, x6, x11, x12)
        CHACHA_QR(x2, x7, x8, x13)
        CHACHA_QR(x3, x4, x9, x14)
    }
    out[0] = x0 + c0;
    out[1] = x1 + c1;
    out[2] = x2 + c2;
    out[3] = x3 + c3;
    out[4] = x4 + key.w[0];
    out[5] = x5 + key.w[1];
    out[6] = x6 + key.w[2];
    out[7] = x7 + key.w[3];
    out[8] = x8 + key.w[4];
    out[9] = x9 + key.w[5];
    out[10] = x10 + key.w[6];
    out[11] = x11 + key.w[7];
    out[12] = x12 + n12;
    out[13] = x13 + n13;
    out[14] = x14 + n14;
    out[15] = x15 + n15;
}

// A sequential reader of one stream, 64-bit words (two consecutive 32-bit words, the first
// in the low half, as rand_core's BlockRng::next_u64 reads them). The host-side twin is
// `ChaChaStream` in src/gpu/chacha.rs; the samplers consume randomness only through
// chacha_next_u64, exactly as the Rust samplers consume it through `DpRng::next_u64`.
struct ChaChaStream {
    ChaChaKey key;
    uint64_t nonce;
    uint64_t next_block;  // the counter of the block to compute when buf runs out
    uint32_t pos;         // 64-bit words of buf already read (8 = empty)
    uint32_t buf[16];
};

CONFIDANT_HD void chacha_stream_init(ChaChaStream& s, const ChaChaKey& key, uint64_t nonce,
                                     uint64_t block) {
    s.key = key;
    s.nonce = nonce;
    s.next_block = block;
    s.pos = 8;
}

CONFIDANT_HD uint64_t chacha_next_u64(ChaChaStream& s) {
    if (s.pos >= 8) {
        chacha20_block(s.key, s.next_block, s.nonce, s.buf);
        s.next_block += 1;
        s.pos = 0;
    }
    const uint32_t i = 2 * s.pos;
    s.pos += 1;
    return (uint64_t)s.buf[i] | ((uint64_t)s.buf[i + 1] << 32);
}
