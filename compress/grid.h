/* grid.h - the integer grids of pare: the one definition of how a float
 * becomes an integer code, for weights (export, fake quantization in
 * training) and for activations (the runtime's activation limbs). A leaf
 * library (pare_grid): it depends on nothing of pare's, so training, the
 * exporter, the runtime and the compression policies can all call it.
 *
 * Weights. A matrix W[N, K] (PyTorch's [out, in] layout) is cut along the
 * input dimension into groups of G consecutive columns (G = K: one group per
 * row, "per output channel"). Each (row, group) has its own scale s (and, for
 * the asymmetric scheme, zero point z). With round(v) = round half away from
 * zero (C's roundf, exact and the same on every machine) and clamp(v, lo, hi):
 *
 *   CP_INT8_SYM    s = absmax / 127            q = clamp(round(w / s), -127, 127)   w' = s * q
 *   CP_INT4_SYM    s = absmax / 7              q = clamp(round(w / s), -7, 7)       w' = s * q
 *   CP_INT4_ASYM   lo = min(0, min w), hi = max(0, max w), s = (hi - lo) / 15,
 *                  z = clamp(round(-lo / s), 0, 15)
 *                  q = clamp(round(w / s) + z, 0, 15)                               w' = s * (q - z)
 *
 * absmax, min and max are over the group; every operation is one IEEE-754
 * binary32 operation (w / s is a division, not a multiplication by 1/s), so
 * the integers are reproducible bit for bit. A group whose values are all 0
 * gets s = 0, z = 0 and q = 0 (and w' = 0).
 *
 * Why [-7, 7] and not [-8, 7] for int4: a symmetric grid keeps q(-w) = -q(w)
 * and keeps the largest weight representable (|w| <= 7 s), so the error bound
 * below holds for every weight; the unused code -8 costs 1/16 of the range.
 *
 * Error bound: for every scheme |w - w'| <= s / 2 (up to one rounding of
 * w / s, i.e. s/2 * (1 + 2^-23) in the worst case). For the asymmetric grid
 * the range [lo, hi] contains 0, so 0 is represented exactly (w' = 0).
 *
 * Activations: limbs. The runtime's integer kernels split each float
 * activation row x[K] into L int8 limbs (L = 1, 2 or 3) on the grid
 *
 *   sx = max|x| / 127,  u = x / sx   (u = 0 when sx = 0)
 *   a0 = r127(u),                  r0 = u - a0          (|r0| <= 1/2)
 *   a1 = r127(254 r0),             r1 = 254 r0 - a1
 *   a2 = r127(254 r1)
 *   x ~= sx (a0 + a1 / 254 + a2 / 254^2)
 *
 * with r127(v) = clamp(round(v), -127, 127) (NaN -> -127). One limb is
 * ordinary dynamic symmetric int8 activation quantization; three carry about
 * 23 bits (float precision relative to the row's largest value). The
 * per-element functions are static inline, so the runtime's hot loop calls
 * them at no cost; its SIMD splitter (infer/kernels_x86.c) computes the same
 * bytes and is tested against them.
 */
#ifndef PARE_CP_GRID_H
#define PARE_CP_GRID_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef enum cp_qscheme {
    CP_INT8_SYM = 0,  /* q in [-127, 127] */
    CP_INT4_SYM = 1,  /* q in [-7, 7] */
    CP_INT4_ASYM = 2, /* q in [0, 15] with zero point z in [0, 15] */
} cp_qscheme;

/* ---- per element (static inline: the hot loops call these) --------------- */

/* Round half away from zero of a finite float, as an int (|v| < 2^31). */
static inline int cp_round(float v) { return (int)roundf(v); }

/* The code range [*lo, *hi] of a scheme (0, 0 when out of range). */
static inline void cp_code_range(cp_qscheme s, int *lo, int *hi) {
    switch (s) {
    case CP_INT8_SYM: *lo = -127, *hi = 127; return;
    case CP_INT4_SYM: *lo = -7, *hi = 7; return;
    case CP_INT4_ASYM: *lo = 0, *hi = 15; return;
    }
    *lo = *hi = 0;
}

/* round(v) clamped to [lo, hi], clamping in float first so that no
 * conversion can overflow; NaN gives lo. */
static inline int cp_round_clamp(float v, int lo, int hi) {
    float r = roundf(v);
    if (!(r >= (float)lo)) return lo; /* also catches NaN */
    if (r > (float)hi) return hi;
    return (int)r;
}

/* The integer code of one weight under (s, scale, zero), by the formulas
 * above (q in the scheme's range; 0 when scale is 0 for symmetric schemes,
 * zero when scale is 0 for the asymmetric one). */
static inline int cp_quantize_value(cp_qscheme s, float w, float scale, int zero) {
    int lo, hi;
    cp_code_range(s, &lo, &hi);
    if (s == CP_INT4_ASYM) {
        if (!(scale > 0.0f)) return zero;
        /* round(w / s) + z, clamped: computed on the rounded integer so the
         * addition is exact */
        float r = roundf(w / scale);
        if (r < -32.0f) r = -32.0f;
        if (r > 32.0f) r = 32.0f;
        int q = (int)r + zero;
        return q < lo ? lo : q > hi ? hi : q;
    }
    if (!(scale > 0.0f)) return 0;
    return cp_round_clamp(w / scale, lo, hi);
}

/* The dequantized value of a code: scale * q, or scale * (q - zero). */
static inline float cp_dequantize_value(cp_qscheme s, int q, float scale, int zero) {
    if (s == CP_INT4_ASYM) return scale * (float)(q - zero);
    return scale * (float)q;
}

/* The activation grid's weight of one limb relative to the one above it. */
#define CP_LIMB_BASE 254.0f
#define CP_LIMBS_MAX 3

/* r127(v) above: round half away from zero, clamped to [-127, 127], NaN -> -127. */
static inline int8_t cp_limb_round(float v) {
    float r = roundf(v);
    if (!(r >= -127.0f)) return -127; /* also NaN */
    if (r > 127.0f) return 127;
    return (int8_t)r;
}

/* The activation scale sx = max|x[0, K)| / 127 of one row (0 for a zero row). */
static inline float cp_act_scale(const float *x, int K) {
    float amax = 0.0f;
    for (int i = 0; i < K; i++) {
        float v = fabsf(x[i]);
        if (v > amax) amax = v;
    }
    return amax / 127.0f;
}

/* The L limbs of one activation value v under the row scale sx:
 * a[l * stride] for l < L, by the formulas above. */
static inline void cp_act_limbs(float v, float sx, int L, int8_t *a, size_t stride) {
    float u = sx > 0.0f ? v / sx : 0.0f;
    int8_t q = cp_limb_round(u);
    a[0] = q;
    float r = u - (float)q;
    for (int l = 1; l < L; l++) {
        float w = r * CP_LIMB_BASE;
        int8_t ql = cp_limb_round(w);
        a[(size_t)l * stride] = ql;
        r = w - (float)ql;
    }
}

/* ---- weights: groups and matrices ---------------------------------------- */

/* Name of a scheme ("int8", "int4", "int4-asym"), or "?" when out of range. */
const char *cp_qscheme_name(cp_qscheme s);

/* Scale (and zero point, asymmetric only; z may be NULL otherwise) of one
 * group w[0, n) under scheme s, by the formulas above. n >= 1; w finite. */
void cp_group_params(cp_qscheme s, const float *w, int n, float *scale, int *zero);

/* Checks a grouping: N, K >= 1, group in {0} u [1, K] dividing K (0 means
 * per output channel, G = K). Returns the effective G, or -1 with a message
 * in err naming the value and what was expected. */
int cp_group_size(int N, int K, int group, char *err, size_t errlen);

/* Quantizes w[N, K] (row-major, finite) in groups of G columns (group 0 =
 * per row). Writes q[N, K] (int8 codes; for CP_INT4_ASYM the unsigned code
 * 0..15), scale[N, K/G] and, for CP_INT4_ASYM only, zero[N, K/G] (may be NULL
 * for the symmetric schemes). All buffers are the caller's. Returns 0, or -1
 * with err naming the problem: a bad scheme, a bad group size, a non-finite
 * weight (named by row and column), or zero == NULL for CP_INT4_ASYM. */
int cp_quantize(cp_qscheme s, const float *w, int N, int K, int group, int8_t *q, float *scale,
                uint8_t *zero, char *err, size_t errlen);

/* The codes q[N, K] of w[N, K] under FIXED parameters: scale[N, K/G] and,
 * for CP_INT4_ASYM, zero[N, K/G] given by the caller (a quantization-aware
 * checkpoint's), used exactly as given. They are validated first: every
 * scale finite and >= 0, every zero point inside the code range (CP_INT4_ASYM
 * needs them; the symmetric schemes accept zero == NULL or all zeros).
 * Returns 0, or -1 with err naming the first bad weight, scale or zero point
 * by row and group. */
int cp_quantize_fixed(cp_qscheme s, const float *w, int N, int K, int group, const float *scale,
                      const int32_t *zero, int8_t *q, char *err, size_t errlen);

/* Inverse of cp_quantize: out[N, K] = the dequantized weights. Arguments as
 * for cp_quantize (already validated by it); returns 0, or -1 with err on a
 * bad scheme or group size. */
int cp_dequantize(cp_qscheme s, const int8_t *q, const float *scale, const uint8_t *zero, int N, int K,
                  int group, float *out, char *err, size_t errlen);

/* Fake quantization: out[N, K] = dequantize(quantize(w)) without keeping the
 * integers (out may equal w). This is what a QAT forward computes and what
 * the exported file's integers reproduce exactly. Errors as cp_quantize. */
int cp_fake_quant(cp_qscheme s, const float *w, int N, int K, int group, float *out, char *err,
                  size_t errlen);

#endif
