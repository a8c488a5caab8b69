// The ChaCha20 stream the DP samplers read (kernels/noise.cu), on top of the block function
// in chacha20.cuh (D. J. Bernstein's original layout: 64-bit block counter in words 12-13,
// 64-bit nonce/stream id in words 14-15). Word j of stream (key, nonce) is word j mod 16 of
// block j div 16, which is what rand_chacha's ChaCha20Rng::from_seed(key) + set_stream(nonce)
// produces; the CPU reference is src/gpu/chacha.rs. Everything here is CONFIDANT_HD so
// kernels/host_check runs it on the CPU.
#pragma once
#include "chacha20.cuh"

// The key from four 64-bit kernel arguments (word 2i in the low half of k[i]).
CONFIDANT_HD ConfidantChachaKey chacha_key_from_u64(uint64_t k0, uint64_t k1, uint64_t k2,
                                                    uint64_t k3) {
    ConfidantChachaKey key;
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

// One 64-byte block: out[0..16] = ChaCha20(key, counter, nonce).
CONFIDANT_HD void chacha20_block(const ConfidantChachaKey& key, uint64_t counter, uint64_t nonce,
                                 uint32_t out[16]) {
    confidant_chacha20_block(key.w, counter, nonce, out);
}

// A sequential reader of one stream, 64-bit words (two consecutive 32-bit words, the first
// in the low half, as rand_core's BlockRng::next_u64 reads them). The host-side twin is
// `ChaChaStream` in src/gpu/chacha.rs; the samplers consume randomness only through
// chacha_next_u64, exactly as the Rust samplers consume it through `DpRng::next_u64`.
struct ChaChaStream {
    ConfidantChachaKey key;
    uint64_t nonce;
    uint64_t next_block;  // the counter of the block to compute when buf runs out
    uint32_t pos;         // 64-bit words of buf already read (8 = empty)
    uint32_t buf[16];
};

CONFIDANT_HD void chacha_stream_init(ChaChaStream& s, const ConfidantChachaKey& key, uint64_t nonce,
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
