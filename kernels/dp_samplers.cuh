// The privacy module's samplers (src/privacy/sampler.rs and sampler/fast.rs), ported
// statement by statement so that, fed the same 64-bit words, they return the same samples.
// Randomness comes only from chacha_next_u64 on a ChaChaStream, the twin of the Rust
// `DpRng::next_u64` on `gpu::chacha::ChaChaStream`; the CPU reference runs the *existing*
// Rust samplers over that stream (src/gpu/noise.rs), so there is one sampler logic.
//
// The exact samplers use 128-bit integers as the Rust code does (`unsigned __int128`, which
// nvcc supports in device code); the one 128-bit division is our own shift-subtract loop, so
// nothing depends on a compiler runtime routine. Floating point in the fast sampler goes
// through DADD/DMUL/DDIV, which on the device are the _rn intrinsics: nvcc would otherwise
// contract a*b+c into an FMA and the result would differ from Rust's in the last bit.
#pragma once
#include <math.h>

#include "chacha_stream.cuh"

typedef unsigned __int128 dp_u128;

// Status codes (the kernels OR them into a status word; src/gpu/noise.rs maps them).
#define DP_OK 0
#define DP_OVERFLOW 1
#define DP_INVALID 2
#define DP_OFF_GRID 4
#define DP_NON_FINITE 8

#ifdef __CUDA_ARCH__
#define DADD(a, b) __dadd_rn((a), (b))
#define DSUB(a, b) __dsub_rn((a), (b))
#define DMUL(a, b) __dmul_rn((a), (b))
#define DDIV(a, b) __ddiv_rn((a), (b))
#else
#define DADD(a, b) ((a) + (b))
#define DSUB(a, b) ((a) - (b))
#define DMUL(a, b) ((a) * (b))
#define DDIV(a, b) ((a) / (b))
#endif

CONFIDANT_HD int dp_clz64(uint64_t x) {
#ifdef __CUDA_ARCH__
    return __clzll((long long)x);
#else
    return x == 0 ? 64 : __builtin_clzll(x);
#endif
}

CONFIDANT_HD int dp_clz128(dp_u128 x) {
    const uint64_t hi = (uint64_t)(x >> 64), lo = (uint64_t)x;
    if (hi != 0) return dp_clz64(hi);
    if (lo != 0) return 64 + dp_clz64(lo);
    return 128;
}

// a * b, or false on overflow (Rust's u128::checked_mul), without a division.
CONFIDANT_HD bool dp_mul128(dp_u128 a, dp_u128 b, dp_u128* out) {
    const uint64_t ah = (uint64_t)(a >> 64), al = (uint64_t)a;
    const uint64_t bh = (uint64_t)(b >> 64), bl = (uint64_t)b;
    if (ah != 0 && bh != 0) return false;
    const dp_u128 low = (dp_u128)al * bl;
    const dp_u128 cross = ah != 0 ? (dp_u128)ah * bl : (dp_u128)al * bh;
    if ((cross >> 64) != 0) return false;
    const dp_u128 r = low + (cross << 64);
    if (r < low) return false;
    *out = r;
    return true;
}

// n / d and n % d, d != 0.
CONFIDANT_HD void dp_divmod128(dp_u128 n, dp_u128 d, dp_u128* q, dp_u128* r) {
    if (n < d) {
        *q = 0;
        *r = n;
        return;
    }
    if ((n >> 64) == 0) {
        const uint64_t n64 = (uint64_t)n, d64 = (uint64_t)d;
        *q = n64 / d64;
        *r = n64 % d64;
        return;
    }
    const int shift = dp_clz128(d) - dp_clz128(n);
    dp_u128 dd = d << shift, quotient = 0;
    for (int i = 0; i <= shift; ++i) {
        quotient <<= 1;
        if (n >= dd) {
            n -= dd;
            quotient |= 1;
        }
        dd >>= 1;
    }
    *q = quotient;
    *r = n;
}

// sampler::uniform_below.
CONFIDANT_HD dp_u128 dp_uniform_below(ChaChaStream& rng, dp_u128 n) {
    if (n <= 1) return 0;
    if ((n >> 64) == 0) {
        const uint64_t n64 = (uint64_t)n;
        dp_u128 m = (dp_u128)chacha_next_u64(rng) * n64;
        uint64_t low = (uint64_t)m;
        if (low < n64) {
            const uint64_t threshold = (0 - n64) % n64;
            while (low < threshold) {
                m = (dp_u128)chacha_next_u64(rng) * n64;
                low = (uint64_t)m;
            }
        }
        return m >> 64;
    }
    const dp_u128 mask = (~(dp_u128)0) >> dp_clz128(n - 1);
    for (;;) {
        // Rust evaluates the high word first; C++ leaves operand order unspecified, so name it.
        const uint64_t hi = chacha_next_u64(rng);
        const uint64_t lo = chacha_next_u64(rng);
        const dp_u128 x = (((dp_u128)hi << 64) | lo) & mask;
        if (x < n) return x;
    }
}

// sampler::bernoulli_exp_neg_unit: Bernoulli(exp(-num/den)) for num/den in [0, 1].
CONFIDANT_HD int dp_bernoulli_exp_neg_unit(ChaChaStream& rng, dp_u128 num, dp_u128 den,
                                           bool* result) {
    dp_u128 k = 1;
    for (;;) {
        dp_u128 d;
        if (!dp_mul128(den, k, &d)) return DP_OVERFLOW;
        if (!(dp_uniform_below(rng, d) < num)) break;
        k += 1;
    }
    *result = (k & 1) == 1;
    return DP_OK;
}

// sampler::bernoulli_exp_neg: Bernoulli(exp(-num/den)) for num/den >= 0.
CONFIDANT_HD int dp_bernoulli_exp_neg(ChaChaStream& rng, dp_u128 num, dp_u128 den, bool* result) {
    if (den == 0) return DP_OVERFLOW;
    dp_u128 whole, frac;
    dp_divmod128(num, den, &whole, &frac);
    for (dp_u128 i = 0; i < whole; ++i) {
        bool coin;
        const int st = dp_bernoulli_exp_neg_unit(rng, 1, 1, &coin);
        if (st != DP_OK) return st;
        if (!coin) {
            *result = false;
            return DP_OK;
        }
    }
    return dp_bernoulli_exp_neg_unit(rng, frac, den, result);
}

// sampler::discrete_laplace with scale t/s.
CONFIDANT_HD int dp_discrete_laplace(ChaChaStream& rng, dp_u128 t, dp_u128 s, int64_t* out) {
    if (t == 0 || s == 0) return DP_INVALID;
    for (;;) {
        const dp_u128 u = dp_uniform_below(rng, t);
        bool accept;
        int st = dp_bernoulli_exp_neg(rng, u, t, &accept);
        if (st != DP_OK) return st;
        if (!accept) continue;
        dp_u128 v = 0;
        for (;;) {
            bool coin;
            st = dp_bernoulli_exp_neg_unit(rng, 1, 1, &coin);
            if (st != DP_OK) return st;
            if (!coin) break;
            v += 1;
        }
        dp_u128 vt;
        if (!dp_mul128(v, t, &vt)) return DP_OVERFLOW;
        const dp_u128 x = vt + u;
        if (x < vt) return DP_OVERFLOW;
        dp_u128 y, rem;
        dp_divmod128(x, s, &y, &rem);
        const bool negative = (chacha_next_u64(rng) & 1) == 1;
        if (negative && y == 0) continue;
        if (y > (dp_u128)INT64_MAX) return DP_OVERFLOW;
        *out = negative ? -(int64_t)y : (int64_t)y;
        return DP_OK;
    }
}

// The parameters sampler::discrete_gaussian derives from sigma2 = a/b.
struct DgParams {
    dp_u128 a, b, t, bt, den;
};

// isqrt_ratio_floor, t, b·t² ≤ 2^40 and the denominator 2·a·b·t², as in discrete_gaussian.
CONFIDANT_HD int dp_gaussian_params(dp_u128 a, dp_u128 b, DgParams* p) {
    if (a == 0 || b == 0) return DP_INVALID;
    dp_u128 lo = 0, hi = (dp_u128)1 << 64;
    while (hi - lo > 1) {
        const dp_u128 mid = lo + (hi - lo) / 2;
        dp_u128 m2, v;
        const bool fits = dp_mul128(mid, mid, &m2) && dp_mul128(m2, b, &v) && v <= a;
        if (fits) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    const dp_u128 t = lo + 1;
    dp_u128 t2, bt2, d1, den;
    if (!(dp_mul128(t, t, &t2) && dp_mul128(t2, b, &bt2) && bt2 <= ((dp_u128)1 << 40)))
        return DP_OVERFLOW;
    if (!(dp_mul128(a, bt2, &d1) && dp_mul128(d1, 2, &den))) return DP_OVERFLOW;
    p->a = a;
    p->b = b;
    p->t = t;
    p->bt = b * t;  // ≤ b·t² ≤ 2^40
    p->den = den;
    return DP_OK;
}

// sampler::discrete_gaussian, given its parameters.
CONFIDANT_HD int dp_discrete_gaussian(ChaChaStream& rng, const DgParams& p, int64_t* out) {
    for (;;) {
        int64_t y;
        int st = dp_discrete_laplace(rng, p.t, 1, &y);
        if (st != DP_OK) return st;
        const uint64_t abs_y = y < 0 ? (uint64_t)0 - (uint64_t)y : (uint64_t)y;
        dp_u128 c;
        if (!dp_mul128((dp_u128)abs_y, p.bt, &c)) continue;
        c = c > p.a ? c - p.a : p.a - c;
        if ((c >> 64) != 0) continue;
        bool accept;
        st = dp_bernoulli_exp_neg(rng, c * c, p.den, &accept);
        if (st != DP_OK) return st;
        if (accept) {
            *out = y;
            return DP_OK;
        }
    }
}

// ---- The fast grid-Laplace sampler (sampler::fast::FastDiscreteLaplace::fill). ----

CONFIDANT_HD uint64_t dp_f64_bits(double x) {
#ifdef __CUDA_ARCH__
    return (uint64_t)__double_as_longlong(x);
#else
    uint64_t u;
    __builtin_memcpy(&u, &x, 8);
    return u;
#endif
}

CONFIDANT_HD double dp_f64_from_bits(uint64_t u) {
#ifdef __CUDA_ARCH__
    return __longlong_as_double((long long)u);
#else
    double x;
    __builtin_memcpy(&x, &u, 8);
    return x;
#endif
}

// libm::log (FreeBSD e_log.c, as in the Rust libm crate 0.2), operation for operation.
CONFIDANT_HD double dp_log(double x) {
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double lg1 = 6.666666666666735130e-01, lg2 = 3.999999999940941908e-01;
    const double lg3 = 2.857142874366239149e-01, lg4 = 2.222219843214978396e-01;
    const double lg5 = 1.818357216161805012e-01, lg6 = 1.531383769920937332e-01;
    const double lg7 = 1.479819860511658591e-01;
    const double x1p54 = 18014398509481984.0;  // 2^54
    uint64_t ui = dp_f64_bits(x);
    uint32_t hx = (uint32_t)(ui >> 32);
    int k = 0;
    if (hx < 0x00100000u || (hx >> 31) != 0) {
        if ((ui << 1) == 0) return DDIV(-1.0, DMUL(x, x));
        // NaN, as libm's (x - x) / 0.0 (written without a literal zero divisor, which nvcc flags).
        if ((hx >> 31) != 0) return DDIV(DSUB(x, x), DSUB(x, x));
        k -= 54;
        x = DMUL(x, x1p54);
        ui = dp_f64_bits(x);
        hx = (uint32_t)(ui >> 32);
    } else if (hx >= 0x7ff00000u) {
        return x;
    } else if (hx == 0x3ff00000u && (ui << 32) == 0) {
        return 0.0;
    }
    hx += 0x3ff00000u - 0x3fe6a09eu;
    k += (int)(hx >> 20) - 0x3ff;
    hx = (hx & 0x000fffffu) + 0x3fe6a09eu;
    ui = ((uint64_t)hx << 32) | (ui & 0xffffffffu);
    x = dp_f64_from_bits(ui);
    const double f = DSUB(x, 1.0);
    const double hfsq = DMUL(DMUL(0.5, f), f);
    const double s = DDIV(f, DADD(2.0, f));
    const double z = DMUL(s, s);
    const double w = DMUL(z, z);
    const double t1 = DMUL(w, DADD(lg2, DMUL(w, DADD(lg4, DMUL(w, lg6)))));
    const double t2 = DMUL(z, DADD(lg1, DMUL(w, DADD(lg3, DMUL(w, DADD(lg5, DMUL(w, lg7)))))));
    const double r = DADD(t2, t1);
    const double dk = (double)k;
    // s*(hfsq+r) + dk*LN2_LO - hfsq + f + dk*LN2_HI, left to right.
    return DADD(DADD(DSUB(DADD(DMUL(s, DADD(hfsq, r)), DMUL(dk, ln2_lo)), hfsq), f),
                DMUL(dk, ln2_hi));
}

// FastDiscreteLaplace's fields (src/privacy/sampler/fast.rs), computed on the host.
struct FastLaplaceParams {
    double scale;
    double shift;
    double cap_f;
    int64_t cap;
};

// fl(-log(U)·t) with U = fl(w >> 1)·2^-63.
CONFIDANT_HD double dp_inversion_value(uint64_t w, double scale) {
#ifdef __CUDA_ARCH__
    const double hi = __ull2double_rn(w >> 1);
#else
    const double hi = (double)(w >> 1);
#endif
    const double u = DMUL(hi, 1.0 / 9223372036854775808.0);
    return DMUL(-dp_log(u), scale);
}

CONFIDANT_HD int64_t dp_saturating_add(int64_t a, int64_t b) {
    // Both operands are non-negative here (magnitudes).
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

// FastDiscreteLaplace::tail, on its own stream.
CONFIDANT_HD int64_t dp_fast_laplace_tail(const FastLaplaceParams& p, ChaChaStream& rng) {
    int64_t g = p.cap;
    for (;;) {
        const double y = dp_inversion_value(chacha_next_u64(rng), p.scale);
        if (y < p.cap_f) return dp_saturating_add(g, (int64_t)y);
        g = dp_saturating_add(g, p.cap);
    }
}

// One sample of FastDiscreteLaplace::fill from its word w; the cold path (probability about
// 2^-10) reads stream (key, tail_nonce) from block 0.
CONFIDANT_HD int64_t dp_fast_laplace(const FastLaplaceParams& p, uint64_t w, const ConfidantChachaKey& key,
                                     uint64_t tail_nonce) {
    const double v = DADD(dp_inversion_value(w, p.scale), p.shift);
    int64_t magnitude;
    if (v < p.cap_f) {
        magnitude = (int64_t)v;
    } else {
        ChaChaStream tail;
        chacha_stream_init(tail, key, tail_nonce, 0);
        magnitude = dp_fast_laplace_tail(p, tail);
    }
    const uint64_t negative = w & 1;
    return (int64_t)(((uint64_t)magnitude ^ (0 - negative)) + negative);
}

// ---- Grids and permute-and-flip (mechanism::NoisyArgmax::release). ----

// Grid::to_steps: x rounded to the nearest multiple of step (a power of two), in steps.
CONFIDANT_HD int dp_to_steps(double x, double step, int64_t* out) {
    if (!(x - x == 0.0)) return DP_NON_FINITE;  // NaN or ±∞
    const double n = round(DDIV(x, step));
    if (fabs(n) >= 4503599627370496.0) return DP_OFF_GRID;  // 2^52
    *out = (int64_t)n;
    return DP_OK;
}

// NoisyArgmax::release on one row of scores: exact permute-and-flip. `order` is scratch for
// `classes` indices. eps_num/den are ε = num/den' and den = den'·divisor, as the Rust code
// computes them (the host checks that product for overflow).
CONFIDANT_HD int dp_permute_and_flip(ChaChaStream& rng, const float* row, uint32_t classes,
                                     double step, dp_u128 eps_num, dp_u128 den, uint32_t* order,
                                     uint32_t* label) {
    if (classes == 0) return DP_INVALID;
    int64_t best = INT64_MIN;
    for (uint32_t c = 0; c < classes; ++c) {
        int64_t n;
        const int st = dp_to_steps((double)row[c], step, &n);
        if (st != DP_OK) return st;
        best = n > best ? n : best;
        order[c] = c;
    }
    for (uint32_t i = classes - 1; i >= 1; --i) {
        const uint32_t j = (uint32_t)dp_uniform_below(rng, (dp_u128)i + 1);
        const uint32_t tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    for (uint32_t k = 0; k < classes; ++k) {
        const uint32_t r = order[k];
        int64_t n = 0;
        dp_to_steps((double)row[r], step, &n);  // succeeded above
        const uint64_t gap = (uint64_t)best - (uint64_t)n;  // best >= n
        dp_u128 num;
        if (!dp_mul128(eps_num, (dp_u128)gap, &num)) return DP_OVERFLOW;
        bool accept;
        const int st = dp_bernoulli_exp_neg(rng, num, den, &accept);
        if (st != DP_OK) return st;
        if (accept) {
            *label = r;
            return DP_OK;
        }
    }
    return DP_INVALID;  // unreachable: the best candidate has gap 0 and is always accepted
}

// FastLaplaceScores::release_in_place on one row, then the label policy::apply takes from the
// noisy scores (the first maximum): element i of the whole matrix (global index gi) reads
// word gi of stream (key, nonce) and, in the cold path, stream (key, nonce + 1 + gi), as
// grid_laplace's sample gi. noisy[c] = the released value; *label = the first argmax.
CONFIDANT_HD int dp_laplace_argmax(const ConfidantChachaKey& key, uint64_t nonce, uint64_t gi,
                                   const float* row, uint32_t classes, double step,
                                   const FastLaplaceParams& p, double* noisy, uint32_t* label) {
    if (classes == 0) return DP_INVALID;
    uint32_t w[16];
    int64_t best = 0;
    uint32_t best_c = 0;
    for (uint32_t c = 0; c < classes; ++c, ++gi) {
        if (c == 0 || gi % 8 == 0) chacha20_block(key, gi / 8, nonce, w);
        const uint32_t j = (uint32_t)(gi % 8);
        const uint64_t word = (uint64_t)w[2 * j] | ((uint64_t)w[2 * j + 1] << 32);
        int64_t n;
        const int st = dp_to_steps((double)row[c], step, &n);
        if (st != DP_OK) return st;
        const int64_t z = dp_fast_laplace(p, word, key, nonce + 1 + gi);
        // n + z with |n| < 2^52; the sum must stay below 2^53 (Grid's exactness bound).
        if ((z > 0 && n > INT64_MAX - z) || (z < 0 && n < INT64_MIN - z)) return DP_OFF_GRID;
        const int64_t s = n + z;
        if (s >= 9007199254740992ll || s <= -9007199254740992ll) return DP_OFF_GRID;
        noisy[c] = DMUL((double)s, step);
        if (c == 0 || s > best) {
            best = s;
            best_c = c;
        }
    }
    *label = best_c;
    return DP_OK;
}
