/* grid.h - the integer grids of pare: the one definition of how a float
 * becomes an integer code, for weights (fake quantization in training, the
 * exporter, the model file's storage types) and for activations (the static
 * int8 activations of A8 sites, and the runtime's float-exact limbs), and of
 * the float arithmetic of a quantized product. A leaf library (pare_grid): it
 * depends on nothing of pare's, so training, the exporter, the runtime and the
 * compression policies can all call it.
 *
 * Rounding: PyTorch's rule (torch.fake_quantize_per_tensor_affine and
 * _per_channel_affine, aten/src/ATen/native/quantized/cpu/kernels/
 * QuantizedOpKernels.cpp, checked on 1.13; ../shared/refs/pytorch-semantics.md),
 * every step one IEEE-754 binary32 operation:
 *
 *   inv = 1.0f / s                    (a multiplication by the inverse, not x / s)
 *   r   = nearbyint(x * inv)          (round half to even)
 *   q   = clamp(r + z, lo, hi)        (the zero point added after rounding)
 *   x'  = (q - z) * s                 (dequantized in float)
 *
 * and the straight-through estimator's mask is lo <= r + z <= hi (decided on
 * the rounded value before clamping). nearbyint is computed as
 * (v + 1.5 * 2^23) - 1.5 * 2^23 after clamping v to [-2^22, 2^22] (NaN to
 * -2^22): exactly round-half-to-even there, branch-free (so loops vectorise
 * with the same bits), and every value clamped away lies beyond every grid.
 *
 * Grids: b bits (2 .. 8),
 *   symmetric   q in [-(2^(b-1) - 1), 2^(b-1) - 1], z = 0   (8 bits: [-127, 127];
 *               4: [-7, 7]; 3: [-3, 3]; 2: [-1, 1], ternary)
 *   asymmetric  q in [0, 2^b - 1] with an integer zero point z in that range.
 * The symmetric grid drops the code -2^(b-1), so q(-w) = -q(w) and the largest
 * weight stays representable; it costs 1 / 2^b of the range.
 *
 * Scales from a range [mn, mx] (PyTorch's observers, _calculate_qparams):
 * the range is widened to contain 0 (mn' = min(mn, 0), mx' = max(mx, 0)), then
 *   symmetric   s = max(max(-mn', mx') / ((hi - lo) / 2), eps),  z = 0
 *   asymmetric  s = max((mx' - mn') / (hi - lo), eps),
 *               z = clamp(lo - nearbyint(mn' / s), lo, hi)   (a division here, as PyTorch)
 * with eps = 2^-23 (float32's epsilon): an all-zero group gets s = eps, codes
 * 0. Min-max scales of the old fixed schemes below are these formulas at 8 and
 * 4 bits.
 *
 * Weights are matrices W[N, K] (PyTorch's [out, in]) cut along the input
 * dimension into groups of G consecutive columns (G = K: one group per row,
 * "per output channel"); each (row, group) has its own scale and zero point.
 *
 * The quantized product (an A8 site: activation codes a with scale sa times
 * weight codes q): per output row and group g, the exact integer
 *   I_g = sum_{k in g} (q_k - z_g) a_k,
 * then in float, groups in order from +0,
 *   y = fmaf(s_g, (float)I_g, y),    out = y * sa.
 * The runtime's kernels (infer/kernels.c, every instruction set bit for bit)
 * compute exactly this, and training's forward of an A8 site calls them, so a
 * quantized site's output is the same bits in both (cp_qmatmul_ref is the
 * readable reference the tests compare with).
 *
 * Activations of float (A16) sites: limbs. The runtime's integer kernels
 * split each float activation row x[K] into L int8 limbs (L = 1, 2 or 3):
 *   sx = max|x| / 127,  u = x * (1 / sx)   (u = 0 when sx = 0)
 *   a0 = r127(u),                  r0 = u - a0
 *   a1 = r127(254 r0),             r1 = 254 r0 - a1
 *   a2 = r127(254 r1)
 *   x ~= sx (a0 + a1 / 254 + a2 / 254^2)
 * with r127(v) = clamp(nearbyint(v), -127, 127) (NaN -> -127). One limb is
 * ordinary dynamic symmetric int8 quantization; three carry about 23 bits
 * (float precision relative to the row's largest value). The per-element
 * functions are static inline, so the runtime's hot loop calls them at no
 * cost; its SIMD splitter (infer/kernels_x86.c) computes the same bytes and is
 * tested against them.
 */
#ifndef PARE_CP_GRID_H
#define PARE_CP_GRID_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- rounding and codes (static inline: the hot loops call these) -------- */

#define CP_RNE_LIMIT 4194304.0f   /* 2^22 */
#define CP_RNE_MAGIC 12582912.0f  /* 1.5 * 2^23 */
#define CP_SCALE_EPS 1.1920928955078125e-07f /* 2^-23, float32's epsilon (PyTorch's observers' eps) */

/* nearbyint(v) (half to even) of v clamped to [-2^22, 2^22]; NaN gives -2^22. */
static inline float cp_rne(float v) {
    v = v >= -CP_RNE_LIMIT ? v : -CP_RNE_LIMIT; /* also NaN */
    v = v <= CP_RNE_LIMIT ? v : CP_RNE_LIMIT;
    return (v + CP_RNE_MAGIC) - CP_RNE_MAGIC;
}

/* The code of x: clamp(nearbyint(x * inv) + zero, lo, hi). */
static inline int cp_code(float x, float inv, int zero, int lo, int hi) {
    int q = (int)cp_rne(x * inv) + zero;
    return q < lo ? lo : q > hi ? hi : q;
}

/* cp_code in float, for loops that vectorise: the same value (every step is
 * exact on these small integers). */
static inline float cp_code_f(float x, float inv, float zero, float lo, float hi) {
    float q = cp_rne(x * inv) + zero;
    q = q >= lo ? q : lo;
    return q <= hi ? q : hi;
}

/* The straight-through estimator's mask: lo <= nearbyint(x * inv) + zero <= hi. */
static inline bool cp_code_inside(float x, float inv, int zero, int lo, int hi) {
    int q = (int)cp_rne(x * inv) + zero;
    return q >= lo && q <= hi;
}

/* The dequantized value of a code: (q - zero) * scale. */
static inline float cp_decode(int q, int zero, float scale) { return (float)(q - zero) * scale; }

/* ---- grids ---------------------------------------------------------------- */

typedef struct cp_grid {
    int bits;       /* 2 .. 8 */
    bool symmetric; /* zero point 0 and q in [-(2^(b-1) - 1), 2^(b-1) - 1]; else [0, 2^b - 1] */
    int lo, hi;     /* the code range */
} cp_grid;

#define CP_BITS_MIN 2
#define CP_BITS_MAX 8

/* Fills g for bits (2 .. 8) and symmetry. Returns 0, or -1 with err naming
 * the bits and what was expected. */
int cp_grid_init(cp_grid *g, int bits, bool symmetric, char *err, size_t errlen);

/* The grid of bits and symmetry without checks (bits must be 2 .. 8). */
static inline cp_grid cp_grid_of(int bits, bool symmetric) {
    cp_grid g = {bits, symmetric, 0, 0};
    if (symmetric) g.hi = (1 << (bits - 1)) - 1, g.lo = -g.hi;
    else g.lo = 0, g.hi = (1 << bits) - 1;
    return g;
}

/* Scale and zero point of the range [mn, mx] on grid g (formulas above);
 * zero may be NULL for symmetric grids. mn and mx finite. */
void cp_grid_params(const cp_grid *g, float mn, float mx, float *scale, int *zero);

/* The min-max scale and zero point of w[0, n) (n >= 1, finite). */
void cp_grid_minmax(const cp_grid *g, const float *w, int n, float *scale, int *zero);

/* ---- the storage types' fixed schemes -------------------------------------- */

typedef enum cp_qscheme {
    CP_INT8_SYM = 0,  /* 8 bits symmetric: q in [-127, 127] (storage type q8) */
    CP_INT4_SYM = 1,  /* 4 bits symmetric: q in [-7, 7] (q4) */
    CP_INT4_ASYM = 2, /* 4 bits asymmetric: q in [0, 15] with zero point z in [0, 15] (q4a) */
} cp_qscheme;

/* The grid of a scheme (8 bits symmetric for an unknown one). */
static inline cp_grid cp_scheme_grid(cp_qscheme s) {
    return s == CP_INT4_SYM ? cp_grid_of(4, true) : s == CP_INT4_ASYM ? cp_grid_of(4, false) : cp_grid_of(8, true);
}

/* The code range [*lo, *hi] of a scheme (0, 0 when out of range). */
static inline void cp_code_range(cp_qscheme s, int *lo, int *hi) {
    if (s != CP_INT8_SYM && s != CP_INT4_SYM && s != CP_INT4_ASYM) {
        *lo = *hi = 0;
        return;
    }
    cp_grid g = cp_scheme_grid(s);
    *lo = g.lo, *hi = g.hi;
}

/* The code of one weight under scheme s with (scale, zero): cp_code with
 * inv = 1 / scale; a scale of 0 (padding rows, a caller's fixed zero scale)
 * gives the zero point (0 for the symmetric schemes). */
static inline int cp_quantize_value(cp_qscheme s, float w, float scale, int zero) {
    cp_grid g = cp_scheme_grid(s);
    if (g.symmetric) zero = 0;
    if (!(scale > 0.0f)) return zero;
    return cp_code(w, 1.0f / scale, zero, g.lo, g.hi);
}

/* The dequantized value of a code: scale * (q - zero) (zero ignored by the
 * symmetric schemes). */
static inline float cp_dequantize_value(cp_qscheme s, int q, float scale, int zero) {
    return cp_decode(q, s == CP_INT4_ASYM ? zero : 0, scale);
}

/* ---- activations: static codes (A8 sites) --------------------------------- */

/* The static activation code of x on the symmetric grid [-hi, hi] with
 * inverse scale inv (= 1.0f / sa): the runtime's A8 operand and training's
 * fake-quantized activation (x' = code * sa). */
static inline int8_t cp_act_code(float x, float inv, int hi) { return (int8_t)cp_code(x, inv, 0, -hi, hi); }

/* ---- activations: limbs (A16 sites in the runtime) ------------------------ */

/* The activation grid's weight of one limb relative to the one above it. */
#define CP_LIMB_BASE 254.0f
#define CP_LIMBS_MAX 3

/* r127(v) above: nearbyint, clamped to [-127, 127], NaN -> -127. */
static inline int8_t cp_limb_round(float v) { return (int8_t)cp_code(v, 1.0f, 0, -127, 127); }

/* The activation scale sx = max|x[0, K)| / 127 of one row (0 for a zero row). */
static inline float cp_act_scale(const float *x, int K) {
    float amax = 0.0f;
    for (int i = 0; i < K; i++) {
        float v = fabsf(x[i]);
        if (v > amax) amax = v;
    }
    return amax / 127.0f;
}

/* The L limbs of one activation value v under the row's inverse scale inv
 * (1 / sx, or 0 for a zero row): a[l * stride] for l < L, by the formulas above. */
static inline void cp_act_limbs(float v, float inv, int L, int8_t *a, size_t stride) {
    float u = v * inv;
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

/* The inverse scale the limbs use: 1 / sx, 0 for a zero row. */
static inline float cp_act_inv(float sx) { return sx > 0.0f ? 1.0f / sx : 0.0f; }

/* ---- the quantized product ------------------------------------------------- */

/* One group's step of a quantized product row: y + s_g * I_g, fused. */
static inline float cp_qacc(float y, float s, int32_t I) { return fmaf(s, (float)I, y); }

/* out[T, N] = the quantized product (formulas above) of activation codes
 * a[T, K] with per-token scales sa[T] and weight codes q[N, K] with scales
 * s[N, K / G] and zero points z[N, K / G] (NULL = 0). G divides K. The plain
 * reference of the runtime's kernels. */
void cp_qmatmul_ref(const int8_t *a, const float *sa, int T, const int8_t *q, const float *s, const int32_t *z,
                    int N, int K, int G, float *out);

/* ---- weights: groups and matrices ---------------------------------------- */

/* Name of a scheme ("int8", "int4", "int4-asym"), or "?" when out of range. */
const char *cp_qscheme_name(cp_qscheme s);

/* Min-max scale (and zero point, asymmetric only; z may be NULL otherwise)
 * of one group w[0, n) under scheme s, by the formulas above. n >= 1; w finite. */
void cp_group_params(cp_qscheme s, const float *w, int n, float *scale, int *zero);

/* Checks a grouping: N, K >= 1, group in {0} u [1, K] dividing K (0 means
 * per output channel, G = K). Returns the effective G, or -1 with a message
 * in err naming the value and what was expected. */
int cp_group_size(int N, int K, int group, char *err, size_t errlen);

/* Quantizes w[N, K] (row-major, finite) in groups of G columns (group 0 =
 * per row) with min-max scales. Writes q[N, K] (int8 codes; for CP_INT4_ASYM
 * the unsigned code 0..15), scale[N, K/G] and, for CP_INT4_ASYM only,
 * zero[N, K/G] (may be NULL for the symmetric schemes). All buffers are the
 * caller's. Returns 0, or -1 with err naming the problem: a bad scheme, a bad
 * group size, a non-finite weight (named by row and column), or zero == NULL
 * for CP_INT4_ASYM. */
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

/* Fake quantization: out[N, K] = dequantize(quantize(w)) with min-max scales,
 * without keeping the integers (out may equal w). Errors as cp_quantize. */
int cp_fake_quant(cp_qscheme s, const float *w, int N, int K, int group, float *out, char *err,
                  size_t errlen);

#endif
