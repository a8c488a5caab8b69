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
// region: the chunk bodies (plaintext_len bytes), then `count` 16-byte tags; out:
// plaintext_len bytes. With both 16-byte aligned and chunk_size a multiple of 16 the blocks
// move as 16-byte vectors, else byte by byte. count = max(1, ceil(plaintext_len /
// chunk_size)) < 2^32, chunk_size <= 64 MiB; round_keys: the 60 expanded key words; aad:
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
    // The host hands over 256-byte-aligned allocations and chunk sizes that are multiples of 16;
    // checked here too, so a misaligned buffer takes the byte path instead of faulting.
    const bool aligned = ((((uintptr_t)region) | ((uintptr_t)out) | chunk_size) & 15) == 0;
    for (uint64_t c = blockIdx.x; c < count; c += gridDim.x) {
        const uint64_t start = c * (uint64_t)chunk_size;
        const uint64_t rest = plaintext_len > start ? plaintext_len - start : 0;
        const uint32_t len = rest < chunk_size ? (uint32_t)rest : chunk_size;
        const uint32_t nb = (len + 15) / 16;
        const uint32_t total = aad_blocks + nb;  // N, the GHASH blocks before the length block
        uint32_t nonce[3];
        stream_chunk_nonce(prefix0, prefix1, (uint32_t)c, c + 1 == count, nonce);

        const uint8_t* body = region + start;
        uint8_t* dst = out + start;
        Gf128 acc = {0, 0};
        uint32_t last = 0;
        bool any = false;
        for (uint32_t k = t; k < total; k += GCM_LANES) {
            gcm_lane_block(sh.tables, sh.rk, sh.hl, nonce, k, aad, aad_len, body, len, dst, aligned,
                           acc);
            last = k;
            any = true;
        }
        // Every lane's last block is among the final LANES, so the power is H^2..H^(LANES+1).
        sh.share[t] = gcm_lane_share(acc, last, any, total, sh.hpow);
        __syncthreads();
        for (uint32_t width = GCM_LANES / 2; width > 0; width /= 2) {
            if (t < width) sh.share[t] = gf_xor(sh.share[t], sh.share[t + width]);
            __syncthreads();
        }
        if (t == 0) {
            const bool good = gcm_finish(sh.tables, sh.rk, sh.hpow[0], sh.share[0], nonce, aad_len,
                                         len, region + plaintext_len + 16 * c);
            ok[c] = good ? 1u : 0u;
        }
        __syncthreads();  // sh.share is reused by the next chunk
    }
}
