// Adversarial-sensitivity screening on the device.
//
// perturb_rows_f32 writes `copies` perturbed copies of each row (row 0's copies first, as
// engine::screening does): copy value i is x + sigma[f] * z_i, where z_i is a standard normal
// drawn by Box-Muller from words 2i and 2i+1 of the ChaCha20 stream (key, stream). Each
// thread computes one ChaCha20 block and so eight values.
//
// sensitivity_scores_f32 takes the outputs of the batch [rows + rows * copies, width] (the
// rows first, then their copies) and writes each row's mean |Δoutput| over its copies.
//
// CPU reference: gpu::sensitivity::{reference_perturb, reference_scores}.
#include "chacha20.cuh"

CONFIDANT_HD float confidant_box_muller(uint32_t w0, uint32_t w1) {
    const double u1 = ((double)(w0 >> 8) + 1.0) * (1.0 / 16777216.0);  // (0, 1]
    const double u2 = (double)(w1 >> 8) * (1.0 / 16777216.0);          // [0, 1)
#ifdef __CUDA_ARCH__
    return (float)(sqrt(-2.0 * log(u1)) * cospi(2.0 * u2));
#else
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
#endif
}

extern "C" __global__ void __launch_bounds__(256)
perturb_rows_f32(const float* __restrict__ x, const float* __restrict__ sigma,
                 float* __restrict__ out, uint32_t rows, uint32_t width, uint32_t copies,
                 ConfidantChachaKey key, uint64_t stream) {
    const uint64_t n = (uint64_t)rows * copies * width;
    const uint64_t blocks = (n + 7) / 8;
    for (uint64_t b = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; b < blocks;
         b += (uint64_t)gridDim.x * blockDim.x) {
        uint32_t w[16];
        confidant_chacha20_block(key.w, b, stream, w);
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            const uint64_t i = b * 8 + t;
            if (i < n) {
                const uint32_t f = (uint32_t)(i % width);
                const uint64_t r = i / ((uint64_t)copies * width);
                const float z = confidant_box_muller(w[2 * t], w[2 * t + 1]);
                out[i] = __fadd_rn(x[r * width + f], __fmul_rn(sigma[f], z));
            }
        }
    }
}

// One warp per row.
extern "C" __global__ void sensitivity_scores_f32(const float* __restrict__ outputs,
                                                  float* __restrict__ scores, uint32_t rows,
                                                  uint32_t width, uint32_t copies) {
    const uint32_t lane = threadIdx.x & 31u;
    const uint64_t warp = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const uint64_t warps = ((uint64_t)gridDim.x * blockDim.x) >> 5;
    const float* perturbed = outputs + (uint64_t)rows * width;
    for (uint64_t r = warp; r < rows; r += warps) {
        const float* base = outputs + r * width;
        const float* c = perturbed + r * copies * width;
        float s = 0.0f;
        for (uint64_t i = lane; i < (uint64_t)copies * width; i += 32)
            s += fabsf(c[i] - base[i % width]);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) scores[r] = s / (float)((uint64_t)copies * width);
    }
}
