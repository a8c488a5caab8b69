// AES-256 (FIPS 197) with T-tables, GF(2^128) arithmetic and GHASH (NIST SP 800-38D) for
// device-side decryption of sealed STREAM chunks (src/sealed/stream.rs). Everything here is
// CONFIDANT_HD: kernels/aes_gcm.cu runs it with its tables in shared memory, and
// kernels/host_check runs the same functions on the CPU against known answers. The CPU
// reference is src/gpu/aes_gcm.rs.
//
// Side channels: the T-table and GHASH-table lookups are indexed by secret-dependent values,
// as in every table-based GPU AES. Bank-conflict timing is observable only to code on the
// same SM; SECURITY.md trusts a GPU in CC mode together with the CVM, so no co-tenant runs
// there.
#pragma once
#include "common.cuh"

#define AES_SBOX_VALUES \
    0x63, 0x7c, 0x77, 0x7b, 0xf2, 0x6b, 0x6f, 0xc5, 0x30, 0x01, 0x67, 0x2b, 0xfe, 0xd7, 0xab, 0x76, \
    0xca, 0x82, 0xc9, 0x7d, 0xfa, 0x59, 0x47, 0xf0, 0xad, 0xd4, 0xa2, 0xaf, 0x9c, 0xa4, 0x72, 0xc0, \
    0xb7, 0xfd, 0x93, 0x26, 0x36, 0x3f, 0xf7, 0xcc, 0x34, 0xa5, 0xe5, 0xf1, 0x71, 0xd8, 0x31, 0x15, \
    0x04, 0xc7, 0x23, 0xc3, 0x18, 0x96, 0x05, 0x9a, 0x07, 0x12, 0x80, 0xe2, 0xeb, 0x27, 0xb2, 0x75, \
    0x09, 0x83, 0x2c, 0x1a, 0x1b, 0x6e, 0x5a, 0xa0, 0x52, 0x3b, 0xd6, 0xb3, 0x29, 0xe3, 0x2f, 0x84, \
    0x53, 0xd1, 0x00, 0xed, 0x20, 0xfc, 0xb1, 0x5b, 0x6a, 0xcb, 0xbe, 0x39, 0x4a, 0x4c, 0x58, 0xcf, \
    0xd0, 0xef, 0xaa, 0xfb, 0x43, 0x4d, 0x33, 0x85, 0x45, 0xf9, 0x02, 0x7f, 0x50, 0x3c, 0x9f, 0xa8, \
    0x51, 0xa3, 0x40, 0x8f, 0x92, 0x9d, 0x38, 0xf5, 0xbc, 0xb6, 0xda, 0x21, 0x10, 0xff, 0xf3, 0xd2, \
    0xcd, 0x0c, 0x13, 0xec, 0x5f, 0x97, 0x44, 0x17, 0xc4, 0xa7, 0x7e, 0x3d, 0x64, 0x5d, 0x19, 0x73, \
    0x60, 0x81, 0x4f, 0xdc, 0x22, 0x2a, 0x90, 0x88, 0x46, 0xee, 0xb8, 0x14, 0xde, 0x5e, 0x0b, 0xdb, \
    0xe0, 0x32, 0x3a, 0x0a, 0x49, 0x06, 0x24, 0x5c, 0xc2, 0xd3, 0xac, 0x62, 0x91, 0x95, 0xe4, 0x79, \
    0xe7, 0xc8, 0x37, 0x6d, 0x8d, 0xd5, 0x4e, 0xa9, 0x6c, 0x56, 0xf4, 0xea, 0x65, 0x7a, 0xae, 0x08, \
    0xba, 0x78, 0x25, 0x2e, 0x1c, 0xa6, 0xb4, 0xc6, 0xe8, 0xdd, 0x74, 0x1f, 0x4b, 0xbd, 0x8b, 0x8a, \
    0x70, 0x3e, 0xb5, 0x66, 0x48, 0x03, 0xf6, 0x0e, 0x61, 0x35, 0x57, 0xb9, 0x86, 0xc1, 0x1d, 0x9e, \
    0xe1, 0xf8, 0x98, 0x11, 0x69, 0xd9, 0x8e, 0x94, 0x9b, 0x1e, 0x87, 0xe9, 0xce, 0x55, 0x28, 0xdf, \
    0x8c, 0xa1, 0x89, 0x0d, 0xbf, 0xe6, 0x42, 0x68, 0x41, 0x99, 0x2d, 0x0f, 0xb0, 0x54, 0xbb, 0x16, \

#ifdef __CUDACC__
__constant__ uint8_t AES_SBOX_DEVICE[256] = {AES_SBOX_VALUES};
#endif
static const uint8_t AES_SBOX_HOST[256] = {AES_SBOX_VALUES};

// AES-256: 14 rounds, 15 round keys of 4 big-endian words.
#define AES256_ROUND_KEY_WORDS 60

// The four encryption T-tables and the S-box (for the last round and the key schedule).
struct AesTables {
    uint32_t te[4][256];
    uint8_t sbox[256];
};

CONFIDANT_HD uint8_t aes_xtime(uint8_t x) { return (uint8_t)((x << 1) ^ ((x >> 7) * 0x1b)); }

CONFIDANT_HD uint32_t aes_rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

// Entry i of the four T-tables, from the S-box: Te0[i] = (2s, s, s, 3s), Te_k = Te0 >>> 8k.
CONFIDANT_HD void aes_table_entry(AesTables& t, const uint8_t* sbox, int i) {
    const uint8_t s = sbox[i];
    const uint8_t s2 = aes_xtime(s);
    const uint8_t s3 = (uint8_t)(s2 ^ s);
    const uint32_t te0 = ((uint32_t)s2 << 24) | ((uint32_t)s << 16) | ((uint32_t)s << 8) | s3;
    t.te[0][i] = te0;
    t.te[1][i] = aes_rotr(te0, 8);
    t.te[2][i] = aes_rotr(te0, 16);
    t.te[3][i] = aes_rotr(te0, 24);
    t.sbox[i] = s;
}

CONFIDANT_HD uint32_t aes_load_be32(const uint8_t* p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

CONFIDANT_HD uint32_t aes_sub_word(const uint8_t* sbox, uint32_t w) {
    return ((uint32_t)sbox[w >> 24] << 24) | ((uint32_t)sbox[(w >> 16) & 0xff] << 16) |
           ((uint32_t)sbox[(w >> 8) & 0xff] << 8) | sbox[w & 0xff];
}

// FIPS 197 §5.2 key expansion for Nk = 8, Nr = 14.
CONFIDANT_HD void aes256_expand_key(const uint8_t key[32], const uint8_t* sbox,
                                    uint32_t rk[AES256_ROUND_KEY_WORDS]) {
    for (int i = 0; i < 8; ++i) rk[i] = aes_load_be32(key + 4 * i);
    uint32_t rcon = 0x01;
    for (int i = 8; i < AES256_ROUND_KEY_WORDS; ++i) {
        uint32_t temp = rk[i - 1];
        if (i % 8 == 0) {
            temp = aes_sub_word(sbox, (temp << 8) | (temp >> 24)) ^ (rcon << 24);
            rcon = aes_xtime((uint8_t)rcon);
        } else if (i % 8 == 4) {
            temp = aes_sub_word(sbox, temp);
        }
        rk[i] = rk[i - 8] ^ temp;
    }
}

// One block: the state as four big-endian words, in and out.
CONFIDANT_HD void aes256_encrypt_block(const AesTables& t, const uint32_t* rk, uint32_t s[4]) {
    uint32_t s0 = s[0] ^ rk[0], s1 = s[1] ^ rk[1], s2 = s[2] ^ rk[2], s3 = s[3] ^ rk[3];
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int r = 1; r < 14; ++r) {
        const uint32_t* k = rk + 4 * r;
        const uint32_t t0 = t.te[0][s0 >> 24] ^ t.te[1][(s1 >> 16) & 0xff] ^
                            t.te[2][(s2 >> 8) & 0xff] ^ t.te[3][s3 & 0xff] ^ k[0];
        const uint32_t t1 = t.te[0][s1 >> 24] ^ t.te[1][(s2 >> 16) & 0xff] ^
                            t.te[2][(s3 >> 8) & 0xff] ^ t.te[3][s0 & 0xff] ^ k[1];
        const uint32_t t2 = t.te[0][s2 >> 24] ^ t.te[1][(s3 >> 16) & 0xff] ^
                            t.te[2][(s0 >> 8) & 0xff] ^ t.te[3][s1 & 0xff] ^ k[2];
        const uint32_t t3 = t.te[0][s3 >> 24] ^ t.te[1][(s0 >> 16) & 0xff] ^
                            t.te[2][(s1 >> 8) & 0xff] ^ t.te[3][s2 & 0xff] ^ k[3];
        s0 = t0;
        s1 = t1;
        s2 = t2;
        s3 = t3;
    }
    const uint32_t* k = rk + 56;
    const uint8_t* sb = t.sbox;
    s[0] = (((uint32_t)sb[s0 >> 24] << 24) | ((uint32_t)sb[(s1 >> 16) & 0xff] << 16) |
            ((uint32_t)sb[(s2 >> 8) & 0xff] << 8) | sb[s3 & 0xff]) ^ k[0];
    s[1] = (((uint32_t)sb[s1 >> 24] << 24) | ((uint32_t)sb[(s2 >> 16) & 0xff] << 16) |
            ((uint32_t)sb[(s3 >> 8) & 0xff] << 8) | sb[s0 & 0xff]) ^ k[1];
    s[2] = (((uint32_t)sb[s2 >> 24] << 24) | ((uint32_t)sb[(s3 >> 16) & 0xff] << 16) |
            ((uint32_t)sb[(s0 >> 8) & 0xff] << 8) | sb[s1 & 0xff]) ^ k[2];
    s[3] = (((uint32_t)sb[s3 >> 24] << 24) | ((uint32_t)sb[(s0 >> 16) & 0xff] << 16) |
            ((uint32_t)sb[(s1 >> 8) & 0xff] << 8) | sb[s2 & 0xff]) ^ k[3];
}

// ---- GF(2^128) in GCM's bit order: hi holds bytes 0-7 big-endian, lo bytes 8-15. ----

struct Gf128 {
    uint64_t hi, lo;
};

CONFIDANT_HD Gf128 gf_xor(Gf128 a, Gf128 b) {
    Gf128 r = {a.hi ^ b.hi, a.lo ^ b.lo};
    return r;
}

// X·Y by SP 800-38D Algorithm 1, branch-free (the operands may be secret).
CONFIDANT_HD Gf128 gf_mul(Gf128 x, Gf128 y) {
    Gf128 z = {0, 0}, v = y;
    for (int i = 0; i < 128; ++i) {
        const uint64_t word = i < 64 ? x.hi : x.lo;
        const uint64_t bit = (word >> (63 - (i & 63))) & 1;
        const uint64_t m = 0 - bit;
        z.hi ^= v.hi & m;
        z.lo ^= v.lo & m;
        const uint64_t lsb = v.lo & 1;
        v.lo = (v.lo >> 1) | (v.hi << 63);
        v.hi = (v.hi >> 1) ^ (0xe100000000000000ull & (0 - lsb));
    }
    return z;
}

// Shoup's 4-bit tables for multiplying by a fixed M (OpenSSL gcm_init_4bit): table[i] = i·M
// for the 4-bit polynomial i, and the reduction constants for a 4-bit shift.
struct GhashTable {
    Gf128 m[16];
};

CONFIDANT_HD uint64_t ghash_rem4(int i) {
    // OpenSSL's rem_4bit[i] (the reduction of the 4 bits shifted out, << 48), which is
    // linear in i: the XOR of rem_4bit[1], [2], [4], [8] over the set bits. Computed rather
    // than looked up, so it needs no table and no secret-indexed load.
    const uint64_t r = ((0 - (uint64_t)(i & 1)) & 0x1C20) ^ ((0 - (uint64_t)((i >> 1) & 1)) & 0x3840) ^
                       ((0 - (uint64_t)((i >> 2) & 1)) & 0x7080) ^ ((0 - (uint64_t)((i >> 3) & 1)) & 0xE100);
    return r << 48;
}

CONFIDANT_HD Gf128 gf_shift_right1(Gf128 v) {
    const uint64_t t = 0xe100000000000000ull & (0 - (v.lo & 1));
    Gf128 r = {(v.hi >> 1) ^ t, (v.hi << 63) | (v.lo >> 1)};
    return r;
}

CONFIDANT_HD void ghash_table_init(GhashTable& t, Gf128 m) {
    Gf128 zero = {0, 0};
    t.m[0] = zero;
    t.m[8] = m;
    t.m[4] = gf_shift_right1(t.m[8]);
    t.m[2] = gf_shift_right1(t.m[4]);
    t.m[1] = gf_shift_right1(t.m[2]);
    t.m[3] = gf_xor(t.m[2], t.m[1]);
    for (int i = 1; i < 4; ++i) t.m[4 + i] = gf_xor(t.m[4], t.m[i]);
    for (int i = 1; i < 8; ++i) t.m[8 + i] = gf_xor(t.m[8], t.m[i]);
}

// The nibble of x at byte b (0 = first byte), high or low half.
CONFIDANT_HD int gf_byte(Gf128 x, int b) {
    return b < 8 ? (int)((x.hi >> (8 * (7 - b))) & 0xff) : (int)((x.lo >> (8 * (15 - b))) & 0xff);
}

// x·M with M's table (OpenSSL gcm_gmult_4bit).
CONFIDANT_HD Gf128 gf_mul_table(Gf128 x, const GhashTable& t) {
    int nlo = gf_byte(x, 15);
    int nhi = nlo >> 4;
    nlo &= 0xf;
    Gf128 z = t.m[nlo];
    int cnt = 15;
    for (;;) {
        int rem = (int)(z.lo & 0xf);
        z.lo = (z.hi << 60) | (z.lo >> 4);
        z.hi = (z.hi >> 4) ^ ghash_rem4(rem);
        z.hi ^= t.m[nhi].hi;
        z.lo ^= t.m[nhi].lo;
        if (--cnt < 0) break;
        nlo = gf_byte(x, cnt);
        nhi = nlo >> 4;
        nlo &= 0xf;
        rem = (int)(z.lo & 0xf);
        z.lo = (z.hi << 60) | (z.lo >> 4);
        z.hi = (z.hi >> 4) ^ ghash_rem4(rem);
        z.hi ^= t.m[nlo].hi;
        z.lo ^= t.m[nlo].lo;
    }
    return z;
}

// y^e for e >= 1, square and multiply.
CONFIDANT_HD Gf128 gf_pow(Gf128 y, uint32_t e) {
    Gf128 result = {0, 0};
    bool have = false;
    Gf128 base = y;
    while (e != 0) {
        if (e & 1) {
            result = have ? gf_mul(result, base) : base;
            have = true;
        }
        e >>= 1;
        if (e != 0) base = gf_mul(base, base);
    }
    return result;
}

CONFIDANT_HD Gf128 gf_from_words(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3) {
    Gf128 r = {((uint64_t)w0 << 32) | w1, ((uint64_t)w2 << 32) | w3};
    return r;
}

// 16 bytes (at most `len` of them, the rest zero) as a field element.
CONFIDANT_HD Gf128 gf_load_partial(const uint8_t* p, uint32_t len) {
    uint8_t b[16];
    for (int i = 0; i < 16; ++i) b[i] = (uint32_t)i < len ? p[i] : 0;
    return gf_from_words(aes_load_be32(b), aes_load_be32(b + 4), aes_load_be32(b + 8),
                         aes_load_be32(b + 12));
}

// ---- The STREAM chunk layout (src/sealed/stream.rs) and the lane-parallel GHASH. ----

// Lanes per chunk: X-block k' (AAD blocks, then ciphertext blocks) goes to lane k' mod LANES,
// which folds its blocks by Horner with H^LANES; lane t's fold, times H^(N - k'_last + 1),
// is its share of GHASH = Σ X_i·H^(N+1-i) (1-based i, N = AAD + ciphertext blocks); the
// length block adds L·H. So each lane needs one power from H^2..H^(LANES+1), the same for
// every chunk, and the shares XOR together. The Rust reference uses the same lanes.
#define GCM_LANES 256

// The nonce of chunk `index`: prefix(7) ‖ u32_be(index) ‖ last, as three big-endian words;
// prefix0 = prefix bytes 0-3, prefix1 = bytes 4-6 in its low 24 bits.
CONFIDANT_HD void stream_chunk_nonce(uint32_t prefix0, uint32_t prefix1, uint32_t index,
                                     bool last, uint32_t n[3]) {
    n[0] = prefix0;
    n[1] = (prefix1 << 8) | (index >> 24);
    n[2] = (index << 8) | (last ? 1u : 0u);
}

// One GHASH block of a chunk, for the lane that owns it: X-block k is AAD block k when
// k < aad_blocks, else ciphertext block b = k - aad_blocks, which is also decrypted into
// out (CTR counter b + 2, i.e. inc32(J0) + b). body/out point at the chunk's first byte and
// hold len bytes; `aligned` says both are 16-byte aligned, which lets the device use 16-byte
// loads and stores (otherwise, and on the host, it goes byte by byte). Folds the block into
// the lane accumulator: acc = acc·H^LANES ⊕ X_k.
CONFIDANT_HD void gcm_lane_block(const AesTables& tables, const uint32_t* rk, const GhashTable& hl,
                                 const uint32_t nonce[3], uint32_t k, const uint8_t* aad,
                                 uint32_t aad_len, const uint8_t* body, uint32_t len, uint8_t* out,
                                 bool aligned, Gf128& acc) {
    const uint32_t aad_blocks = (aad_len + 15) / 16;
    Gf128 x;
    if (k < aad_blocks) {
        x = gf_load_partial(aad + 16 * k, aad_len - 16 * k);
    } else {
        const uint32_t b = k - aad_blocks;
        const uint32_t off = 16 * b;
        uint32_t ks[4] = {nonce[0], nonce[1], nonce[2], b + 2};
        aes256_encrypt_block(tables, rk, ks);
#ifdef __CUDA_ARCH__
        if (aligned && off + 16 <= len) {
            const uint4 cw = *reinterpret_cast<const uint4*>(body + off);
            const uint32_t c0 = __byte_perm(cw.x, 0, 0x0123), c1 = __byte_perm(cw.y, 0, 0x0123);
            const uint32_t c2 = __byte_perm(cw.z, 0, 0x0123), c3 = __byte_perm(cw.w, 0, 0x0123);
            x = gf_from_words(c0, c1, c2, c3);
            uint4 pw;
            pw.x = cw.x ^ __byte_perm(ks[0], 0, 0x0123);
            pw.y = cw.y ^ __byte_perm(ks[1], 0, 0x0123);
            pw.z = cw.z ^ __byte_perm(ks[2], 0, 0x0123);
            pw.w = cw.w ^ __byte_perm(ks[3], 0, 0x0123);
            *reinterpret_cast<uint4*>(out + off) = pw;
            acc = gf_xor(gf_mul_table(acc, hl), x);
            return;
        }
#endif
        const uint32_t n = len - off < 16 ? len - off : 16;
        x = gf_load_partial(body + off, n);
        for (uint32_t i = 0; i < 16; ++i) {
            if (i < n) out[off + i] = body[off + i] ^ (uint8_t)(ks[i / 4] >> (24 - 8 * (i % 4)));
        }
    }
    acc = gf_xor(gf_mul_table(acc, hl), x);
}

// A lane's share of GHASH: acc·H^(total - last + 1); hpow[e - 1] = H^e. Zero for a lane
// with no block (any == false).
CONFIDANT_HD Gf128 gcm_lane_share(Gf128 acc, uint32_t last, bool any, uint32_t total,
                                  const Gf128* hpow) {
    Gf128 zero = {0, 0};
    return any ? gf_mul(acc, hpow[total - last]) : zero;
}

// The tag check once the shares are XORed: E_K(J0) ⊕ shares ⊕ L·H against the stored tag,
// in constant time. True when they match.
CONFIDANT_HD bool gcm_finish(const AesTables& tables, const uint32_t* rk, Gf128 h, Gf128 shares,
                             const uint32_t nonce[3], uint32_t aad_len, uint32_t len,
                             const uint8_t* stored) {
    const Gf128 lengths = {(uint64_t)aad_len * 8, (uint64_t)len * 8};
    const Gf128 s = gf_xor(shares, gf_mul(lengths, h));
    uint32_t j0[4] = {nonce[0], nonce[1], nonce[2], 1};
    aes256_encrypt_block(tables, rk, j0);
    const Gf128 tag = gf_xor(s, gf_from_words(j0[0], j0[1], j0[2], j0[3]));
    uint32_t diff = 0;
    for (int i = 0; i < 16; ++i) diff |= (uint32_t)(stored[i] ^ (uint8_t)gf_byte(tag, i));
    return diff == 0;
}
