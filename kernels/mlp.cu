// Fused batched MLP forward for the small tabular models Confidant serves.
//
// mlp_fused_f32 runs the whole MLP in one launch: each block copies every parameter into
// shared memory once, then walks tiles of rows through all layers (matmul + bias +
// activation per layer, softmax at the end) without touching global memory between
// layers. It is used when the parameters and two activation tiles fit in the block's
// shared memory; wider models use cuBLAS (through candle) per layer with bias_act_f32 as
// the fused epilogue.
//
// CPU reference: gpu::mlp::reference_forward (the same packed layout and loop order), which
// is tested against the engine's CPU forward pass.
#include "common.cuh"

#define MLP_MAX_LAYERS 8
#define MLP_NONE 0xffffffffu

enum { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2, ACT_TANH = 3, ACT_SIGMOID = 4 };

struct MlpLayer {
    uint32_t in, out, act, w_off, b_off;  // weight [in, out] row-major at w_off; b_off or MLP_NONE
};

struct MlpDesc {
    uint32_t n_layers, in_features, out_features, max_width;
    uint32_t norm_off;    // mean at norm_off, 1/std at norm_off + in_features; or MLP_NONE
    uint32_t softmax;     // 1: softmax over the last layer's outputs
    uint32_t param_len;   // floats in the packed parameter buffer
    uint32_t tile_rows;   // rows per shared-memory tile
    MlpLayer layers[MLP_MAX_LAYERS];
};

CONFIDANT_HD float confidant_activate(float v, uint32_t act) {
    switch (act) {
    case ACT_RELU: return v > 0.0f ? v : 0.0f;
    case ACT_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case ACT_TANH: return tanhf(v);
    case ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    default: return v;
    }
}

// Shared memory: params (rounded up to 4 floats) then two [tile_rows, max_width] tiles.
extern "C" __global__ void __launch_bounds__(256)
mlp_fused_f32(const float* __restrict__ params, const float* __restrict__ x,
              float* __restrict__ y, uint32_t rows, MlpDesc d) {
    extern __shared__ float smem[];
    const uint32_t tid = threadIdx.x, bs = blockDim.x;
    float* p = smem;
    float* h0 = smem + ((d.param_len + 3u) & ~3u);
    float* h1 = h0 + (size_t)d.tile_rows * d.max_width;
    for (uint32_t i = tid; i < d.param_len; i += bs) p[i] = params[i];
    __syncthreads();

    const uint32_t in = d.in_features;
    for (uint64_t r0 = (uint64_t)blockIdx.x * d.tile_rows; r0 < rows;
         r0 += (uint64_t)gridDim.x * d.tile_rows) {
        const uint32_t nr = (uint32_t)min((uint64_t)d.tile_rows, (uint64_t)rows - r0);
        const float* xt = x + r0 * in;
        for (uint32_t i = tid; i < nr * in; i += bs) {
            float v = xt[i];
            if (d.norm_off != MLP_NONE) {
                const uint32_t k = i % in;
                v = (v - p[d.norm_off + k]) * p[d.norm_off + in + k];
            }
            h0[i] = v;
        }
        __syncthreads();
        float* cur = h0;
        float* nxt = h1;
        for (uint32_t l = 0; l < d.n_layers && l < MLP_MAX_LAYERS; ++l) {
            const MlpLayer L = d.layers[l];
            for (uint32_t i = tid; i < nr * L.out; i += bs) {
                const uint32_t r = i / L.out, j = i % L.out;
                float acc = L.b_off != MLP_NONE ? p[L.b_off + j] : 0.0f;
                const float* hr = cur + (size_t)r * L.in;
                const float* w = p + L.w_off + j;
                for (uint32_t k = 0; k < L.in; ++k) acc = fmaf(hr[k], w[(size_t)k * L.out], acc);
                nxt[i] = confidant_activate(acc, L.act);
            }
            __syncthreads();
            float* t = cur; cur = nxt; nxt = t;
        }
        const uint32_t out = d.out_features;
        float* yt = y + r0 * out;
        if (d.softmax) {
            for (uint32_t r = tid; r < nr; r += bs) {
                const float* row = cur + (size_t)r * out;
                float m = -INFINITY;
                for (uint32_t j = 0; j < out; ++j) m = fmaxf(m, row[j]);
                float s = 0.0f;
                for (uint32_t j = 0; j < out; ++j) s += expf(row[j] - m);
                for (uint32_t j = 0; j < out; ++j) yt[(size_t)r * out + j] = expf(row[j] - m) / s;
            }
        } else {
            for (uint32_t i = tid; i < nr * out; i += bs) yt[i] = cur[i];
        }
        __syncthreads();
    }
}

// The epilogue of a cuBLAS layer: out = act(y + bias), bias broadcast over rows.
extern "C" __global__ void bias_act_f32(const float* __restrict__ y, const float* __restrict__ bias,
                                        float* __restrict__ out, uint64_t n, uint32_t cols,
                                        uint32_t act) {
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        const float b = bias != nullptr ? bias[i % cols] : 0.0f;
        out[i] = confidant_activate(y[i] + b, act);
    }
}
