// DP noise on the device: the ChaCha20 keystream, the privacy module's samplers over
// per-sample ChaCha20 streams, and permute-and-flip noisy argmax over score rows. The math is
// in chacha_stream.cuh and dp_samplers.cuh (CONFIDANT_HD, checked on the CPU by
// kernels/host_check); the kernels here only map threads to samples. Launched by
// src/gpu/noise.rs, whose CPU reference runs the Rust samplers over the same streams.
//
// Stream scheme (key K drawn from the OS inside the TEE, nonce base b chosen by the host):
//   chacha20_fill        words of stream (K, b) from block counter0 on
//   grid_laplace         sample i: word i (64-bit) of stream (K, b); its rare tail reads
//                        stream (K, b + 1 + i)                     -> nonces b ..= b + n
//   discrete_laplace,    sample i: stream (K, b + i) from block 0 -> nonces b .. b + n
//   discrete_gaussian
//   noisy_argmax         row r: stream (K, b + r) from block 0     -> nonces b .. b + rows
// Distinct (K, nonce, counter) triples never repeat within a call; the host advances b (or
// draws a fresh K) between calls so they never repeat across calls either.
#include "dp_samplers.cuh"

#define CONFIDANT_GRID_STRIDE(i, n)                                                            \
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                \
         i += (uint64_t)gridDim.x * blockDim.x)

// out[j] = word (16·counter0 + j) of stream (key, nonce), j < n. One thread per 64-byte block,
// written as four 16-byte stores when out is 16-byte aligned.
extern "C" __global__ void chacha20_fill(uint32_t* __restrict__ out, uint64_t n, uint64_t k0,
                                         uint64_t k1, uint64_t k2, uint64_t k3, uint64_t nonce,
                                         uint64_t counter0) {
    const ConfidantChachaKey key = chacha_key_from_u64(k0, k1, k2, k3);
    const bool aligned = ((uintptr_t)out & 15) == 0;
    const uint64_t blocks = n / 16 + (n % 16 != 0);
    CONFIDANT_GRID_STRIDE(b, blocks) {
        uint32_t w[16];
        chacha20_block(key, counter0 + b, nonce, w);
        const uint64_t base = 16 * b;
        if (aligned && base + 16 <= n) {
            uint4* o = reinterpret_cast<uint4*>(out + base);
            o[0] = make_uint4(w[0], w[1], w[2], w[3]);
            o[1] = make_uint4(w[4], w[5], w[6], w[7]);
            o[2] = make_uint4(w[8], w[9], w[10], w[11]);
            o[3] = make_uint4(w[12], w[13], w[14], w[15]);
        } else {
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                if (base + j < n) out[base + j] = w[j];
            }
        }
    }
}

// out[i] = FastDiscreteLaplace::fill's sample i, in grid steps. One thread per ChaCha block,
// which holds the words of 8 samples.
extern "C" __global__ void grid_laplace(int64_t* __restrict__ out, uint64_t n, uint64_t k0,
                                        uint64_t k1, uint64_t k2, uint64_t k3, uint64_t nonce,
                                        double scale, double shift, double cap_f, int64_t cap) {
    const ConfidantChachaKey key = chacha_key_from_u64(k0, k1, k2, k3);
    const FastLaplaceParams p = {scale, shift, cap_f, cap};
    const uint64_t blocks = n / 8 + (n % 8 != 0);
    CONFIDANT_GRID_STRIDE(b, blocks) {
        uint32_t w[16];
        chacha20_block(key, b, nonce, w);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const uint64_t i = 8 * b + j;
            if (i < n) {
                const uint64_t word = (uint64_t)w[2 * j] | ((uint64_t)w[2 * j + 1] << 32);
                out[i] = dp_fast_laplace(p, word, key, nonce + 1 + i);
            }
        }
    }
}

// out[i] = sampler::discrete_laplace(scale = t/s) on stream (key, nonce + i). Errors (overflow,
// a zero parameter) OR a DP_* code into *status and write 0.
extern "C" __global__ void discrete_laplace(int64_t* __restrict__ out, uint64_t n, uint64_t k0,
                                            uint64_t k1, uint64_t k2, uint64_t k3,
                                            uint64_t nonce, uint64_t t_lo, uint64_t t_hi,
                                            uint64_t s_lo, uint64_t s_hi,
                                            uint32_t* __restrict__ status) {
    const ConfidantChachaKey key = chacha_key_from_u64(k0, k1, k2, k3);
    const dp_u128 t = ((dp_u128)t_hi << 64) | t_lo, s = ((dp_u128)s_hi << 64) | s_lo;
    CONFIDANT_GRID_STRIDE(i, n) {
        ChaChaStream rng;
        chacha_stream_init(rng, key, nonce + i, 0);
        int64_t y = 0;
        const int st = dp_discrete_laplace(rng, t, s, &y);
        if (st != DP_OK) atomicOr(status, (uint32_t)st);
        out[i] = st == DP_OK ? y : 0;
    }
}

// out[i] = sampler::discrete_gaussian(sigma2 = a/b) on stream (key, nonce + i).
extern "C" __global__ void discrete_gaussian(int64_t* __restrict__ out, uint64_t n, uint64_t k0,
                                             uint64_t k1, uint64_t k2, uint64_t k3,
                                             uint64_t nonce, uint64_t a_lo, uint64_t a_hi,
                                             uint64_t b_lo, uint64_t b_hi,
                                             uint32_t* __restrict__ status) {
    const ConfidantChachaKey key = chacha_key_from_u64(k0, k1, k2, k3);
    DgParams p;
    const int pst = dp_gaussian_params(((dp_u128)a_hi << 64) | a_lo, ((dp_u128)b_hi << 64) | b_lo, &p);
    if (pst != DP_OK) {
        atomicOr(status, (uint32_t)pst);
        return;
    }
    CONFIDANT_GRID_STRIDE(i, n) {
        ChaChaStream rng;
        chacha_stream_init(rng, key, nonce + i, 0);
        int64_t y = 0;
        const int st = dp_discrete_gaussian(rng, p, &y);
        if (st != DP_OK) atomicOr(status, (uint32_t)st);
        out[i] = st == DP_OK ? y : 0;
    }
}

// labels[r] = NoisyArgmax::release on row r of scores [rows, classes] (row-major f32), on
// stream (key, nonce + r). order: rows·classes u32 of scratch. step = the grid step (a power
// of two); ε = eps_num/eps_den and den = eps_den·divisor (NoisyArgmax's fields). Errors OR a
// DP_* code into *status and write UINT32_MAX.
extern "C" __global__ void noisy_argmax(uint32_t* __restrict__ labels,
                                        const float* __restrict__ scores, uint64_t rows,
                                        uint32_t classes, uint32_t* __restrict__ order,
                                        uint64_t k0, uint64_t k1, uint64_t k2, uint64_t k3,
                                        uint64_t nonce, double step, uint64_t eps_lo,
                                        uint64_t eps_hi, uint64_t den_lo, uint64_t den_hi,
                                        uint32_t* __restrict__ status) {
    const ConfidantChachaKey key = chacha_key_from_u64(k0, k1, k2, k3);
    const dp_u128 eps = ((dp_u128)eps_hi << 64) | eps_lo, den = ((dp_u128)den_hi << 64) | den_lo;
    CONFIDANT_GRID_STRIDE(r, rows) {
        ChaChaStream rng;
        chacha_stream_init(rng, key, nonce + r, 0);
        uint32_t label = 0;
        const uint64_t off = r * (uint64_t)classes;
        const int st = dp_permute_and_flip(rng, scores + off, classes, step, eps, den, order + off, &label);
        if (st != DP_OK) atomicOr(status, (uint32_t)st);
        labels[r] = st == DP_OK ? label : 0xffffffffu;
    }
}

// FastLaplaceScores on each row of scores [rows, classes] (grid step `step`, sampler fields
// scale/shift/cap) and the label of each noisy row (first maximum): the report-noisy-max
// form of the Laplace-scores policy. noisy: rows·classes f64. Uses nonces nonce ..=
// nonce + rows·classes. Errors OR a DP_* code into *status and write UINT32_MAX.
extern "C" __global__ void laplace_argmax(uint32_t* __restrict__ labels, double* __restrict__ noisy,
                                          const float* __restrict__ scores, uint64_t rows,
                                          uint32_t classes, uint64_t k0, uint64_t k1, uint64_t k2,
                                          uint64_t k3, uint64_t nonce, double step, double scale,
                                          double shift, double cap_f, int64_t cap,
                                          uint32_t* __restrict__ status) {
    const ConfidantChachaKey key = chacha_key_from_u64(k0, k1, k2, k3);
    const FastLaplaceParams p = {scale, shift, cap_f, cap};
    CONFIDANT_GRID_STRIDE(r, rows) {
        const uint64_t off = r * (uint64_t)classes;
        uint32_t label = 0;
        const int st = dp_laplace_argmax(key, nonce, off, scores + off, classes, step, p, noisy + off, &label);
        if (st != DP_OK) atomicOr(status, (uint32_t)st);
        labels[r] = st == DP_OK ? label : 0xffffffffu;
    }
}
