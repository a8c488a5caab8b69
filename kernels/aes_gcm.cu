// Device-side decryption of sealed STREAM chunks (AES-256-GCM, src/sealed/stream.rs): the
// ciphertext is copied to the device and decrypted there, so plaintext weights never exist
// in host memory. The per-thread math is in aes_gcm.cuh (CONFIDANT_HD, checked on the CPU by
// kernels/host_check); this file holds the thin kernel. Launched by src/gpu/aes_gcm.rs.
#include "aes_gcm.cuh"

struct GcmShared {
    AesTables tables;
    uint32_t rk[AES256_ROUND_KEY_WORDS];
    Gf128 hpow[GCM_LANES + 1];  // hpow[e - 1] = H^e, e = 1 ..= LANES + 1
    GhashTable hl;               // multiplies by H^LANES
    Gf128 share[GCM_LANES];
};

// One thread block of exactly GCM_LANES threads per chunk (grid-stride over chunks).
//
// region: the chunk bodies (plaintext_len bytes) then `count` 16-byte tags, 16-byte aligned;
// out: plaintext_len bytes, 16-byte aligned; chunk_size a multiple of 16; count = max(1,
// ceil(plaintext_len / chunk_size)) < 2^32; round_keys: the 60 expanded key words; aad:
// aad_len bytes; ok[c] is set to 1 when chunk c authenticates, 0 when not (the host
// zero-fills it first, so a launch that does nothing also reads as failure). The host
// (src/gpu/aes_gcm.rs) checks all of this before launching.
extern "C" __global__ void __launch_bounds__(GCM_LANES)
aes_gcm_stream_decrypt(uint8_t* __restrict__ out, const uint8_t* __restrict__ region,
                       uint64_t plaintext_len, uint32_t chunk_size, uint64_t count,
                       const uint32_t* __restrict__ round_keys, uint32_t prefix0, uint32_t prefix1,
                       const uint8_t* __restrict__ aad, uint32_t aad_len,
                       uint32_t* __restrict__ ok) {
    __shared__ GcmShared sh;
    if (blockDim.x != GCM_LANES) return;  // fail closed: ok stays 0
    const uint32_t t = threadIdx.x;
    aes_table_entry(sh.tables, AES_SBOX_DEVICE, (int)t);
    if (t < AES256_ROUND_KEY_WORDS) sh.rk[t] = round_keys[t];
    __syncthreads();
    // H = E_K(0); every lane derives it (no extra barrier) and lane t keeps H^(t+1).
    uint32_t hs[4] = {0, 0, 0, 0};
    aes256_encrypt_block(sh.tables, sh.rk, hs);
    const Gf128 h = gf_from_words(hs[0], hs[1], hs[2], hs[3]);
    sh.hpow[t] = gf_pow(h, t + 1);
    if (t == 0) sh.hpow[GCM_LANES] = gf_pow(h, GCM_LANES + 1);
    if (t == 1) ghash_table_init(sh.hl, gf_pow(h, GCM_LANES));
    __syncthreads();

    const uint32_t aad_blocks = (aad_len + 15) / 16;
    for (uint64_t c = blockIdx.x; c < count; c += gridDim.x) {
        const uint64_t start = c * (uint64_t)chunk_size;
        const uint64_t rest = plaintext_len > start ? plaintext_len - start : 0;
        const uint32_t len = rest < chunk_size ? (uint32_t)rest : chunk_size;
        const uint32_t nb = (len + 15) / 16;
        const uint32_t total = aad_blocks + nb;  // N, the GHASH blocks before the length block
        uint32_t nonce[3];
        stream_chunk_nonce(prefix0, prefix1, (uint32_t)c, c + 1 == count, nonce);

        Gf128 acc = {0, 0};
        uint32_t last = 0;
        bool any = false;
        for (uint32_t k = t; k < total; k += GCM_LANES) {
            Gf128 x;
            if (k < aad_blocks) {
                const uint32_t off = 16 * k;
                x = gf_load_partial(aad + off, aad_len - off);
            } else {
                const uint32_t b = k - aad_blocks;
                const uint64_t off = start + 16 * (uint64_t)b;
                uint32_t ks[4] = {nonce[0], nonce[1], nonce[2], b + 2};  // inc32(J0) + b
                aes256_encrypt_block(sh.tables, sh.rk, ks);
                if (16 * (b + 1) <= len) {
                    const uint4 cw = *reinterpret_cast<const uint4*>(region + off);
                    const uint32_t c0 = __byte_perm(cw.x, 0, 0x0123), c1 = __byte_perm(cw.y, 0, 0x0123);
                    const uint32_t c2 = __byte_perm(cw.z, 0, 0x0123), c3 = __byte_perm(cw.w, 0, 0x0123);
                    x = gf_from_words(c0, c1, c2, c3);
                    uint4 pw;
                    pw.x = cw.x ^ __byte_perm(ks[0], 0, 0x0123);
                    pw.y = cw.y ^ __byte_perm(ks[1], 0, 0x0123);
                    pw.z = cw.z ^ __byte_perm(ks[2], 0, 0x0123);
                    pw.w = cw.w ^ __byte_perm(ks[3], 0, 0x0123);
                    *reinterpret_cast<uint4*>(out + off) = pw;
                } else {
                    const uint32_t n = len - 16 * b;  // 1..15 bytes
                    x = gf_load_partial(region + off, n);
                    for (uint32_t i = 0; i < 16; ++i) {
                        if (i < n) {
                            const uint8_t kb = (uint8_t)(ks[i / 4] >> (24 - 8 * (i % 4)));
                            out[off + i] = region[off + i] ^ kb;
                        }
                    }
                }
            }
            acc = gf_xor(gf_mul_table(acc, sh.hl), x);
            last = k;
            any = true;
        }
        // Lane share: acc·H^(N - k_last + 1), an exponent in 2 ..= LANES + 1 (N - k_last is
        // 1 ..= LANES because every lane's last block is among the final LANES).
        Gf128 share = {0, 0};
        if (any) share = gf_mul(acc, sh.hpow[total - last]);
        sh.share[t] = share;
        __syncthreads();
        for (uint32_t width = GCM_LANES / 2; width > 0; width /= 2) {
            if (t < width) sh.share[t] = gf_xor(sh.share[t], sh.share[t + width]);
            __syncthreads();
        }
        if (t == 0) {
            const Gf128 lengths = {(uint64_t)aad_len * 8, (uint64_t)len * 8};
            const Gf128 s = gf_xor(sh.share[0], gf_mul(lengths, sh.hpow[0]));
            uint32_t j0[4] = {nonce[0], nonce[1], nonce[2], 1};
            aes256_encrypt_block(sh.tables, sh.rk, j0);
            const Gf128 tag = gf_xor(s, gf_from_words(j0[0], j0[1], j0[2], j0[3]));
            // Constant-time comparison with the stored tag.
            const uint8_t* stored = region + plaintext_len + 16 * c;
            uint32_t diff = 0;
            for (int i = 0; i < 16; ++i) diff |= (uint32_t)(stored[i] ^ (uint8_t)gf_byte(tag, i));
            ok[c] = diff == 0 ? 1u : 0u;
        }
        __syncthreads();  // sh.share is reused by the next chunk
    }
}
