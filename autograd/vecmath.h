/* vecmath.h - element functions that vectorise, with the same bits on every
 * x86-64 (internal to autograd, not public API).
 *
 * glibc's expf is a function call that the compiler cannot vectorise without
 * -ffast-math, and a loop around it runs one element at a time. The functions
 * here are plain IEEE arithmetic in a fixed order, branch-free (clamps are bit
 * blends), so a `#pragma omp simd` loop around them vectorises, and the
 * vector code gives exactly the scalar code's bits: the build uses -std=c11,
 * under which GCC does not contract a * b + c into an FMA (-ffp-contract=off),
 * and every operation used (+, -, *, /, compare, integer bit operations) is
 * exactly rounded in SSE2, AVX2 and AVX-512 alike.
 *
 * AG_SIMD_CLONES marks a kernel that GCC compiles three times (baseline
 * x86-64 = SSE2, AVX2, AVX-512F) and picks from once, at load time, by the
 * CPU's features (an ifunc). Because of the above, the three clones give
 * identical results: the dispatch changes the speed, never the bits, so runs
 * on machines with different vector units still agree bit for bit.
 * tests/test_ops.c checks a vectorised kernel against the scalar formula.
 */
#ifndef PARE_AG_VECMATH_H
#define PARE_AG_VECMATH_H

#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define AG_SIMD_CLONES __attribute__((target_clones("default", "avx2", "avx512f")))
#else
#define AG_SIMD_CLONES
#endif

/* exp(x) for x <= 0 (or NaN), within 1.1e-7 relative of exp (glibc's expf:
 * 6e-8). Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2, exp(r) by its
 * Taylor polynomial of degree 7 (remainder < 5e-9), times 2^n made in the
 * exponent bits. x below -87 is clamped to -87 (exp(-87) = 1.6e-38, a normal
 * float); a NaN stays NaN (and n is zeroed so the integer conversion is
 * defined). */
static inline float ag_exp_nonpos(float x) {
    union {
        float f;
        int32_t i;
    } ux = {.f = x}, lo = {.f = -87.0f}, un;
    int32_t below = -(int32_t)(x < -87.0f); /* all ones where x < -87 */
    ux.i = (ux.i & ~below) | (lo.i & below);
    x = ux.f;
    un.f = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round(x / ln2), |.| <= 126 */
    un.i &= -(int32_t)(un.f == un.f);                      /* NaN -> 0 */
    float n = un.f;
    float r = x - n * 0.693145751953125f; /* ln2, high part: the product is exact */
    r = r - n * 1.428606820e-6f;          /* ln2, low part */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        int32_t i;
        float f;
    } two_n = {.i = ((int32_t)n + 127) << 23};
    return p * two_n.f;
}

/* 1 / (1 + exp(z)) for any z (the logistic function of -z), from one
 * ag_exp_nonpos: with E = exp(-|z|), it is 1 / (1 + E) for z <= 0 and
 * E / (1 + E) for z > 0, so nothing overflows. E is flushed to 0 below
 * exp(-87) (the error is under 1.2e-38 absolute), so the tails are exact:
 * 1 for z -> -inf, 0 for z -> +inf. NaN gives NaN. */
static inline float ag_inv_1p_exp(float z) {
    union {
        float f;
        int32_t i;
    } w = {.f = z};
    w.i |= INT32_MIN; /* -|z| */
    float e = ag_exp_nonpos(w.f);
    union {
        float f;
        int32_t i;
    } ue = {.f = e};
    ue.i &= -(int32_t)!(w.f < -87.0f); /* flush: 0 where -|z| < -87 */
    float num = z > 0.0f ? ue.f : 1.0f;
    return num / (1.0f + ue.f);
}

#endif
