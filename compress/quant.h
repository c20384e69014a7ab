/* quant.h - round-to-nearest weight quantization: the one set of rounding and
 * scale routines that training's fake quantization and the exporter share, so
 * that a model file holds exactly the integers training simulated.
 *
 * A weight matrix W[N, K] (PyTorch's [out, in] layout) is cut along the input
 * dimension into groups of G consecutive columns (G = K: one group per row,
 * "per output channel"). Each (row, group) has its own scale s (and, for the
 * asymmetric scheme, zero point z). With round(v) = round half away from zero
 * (C's roundf, exact and the same on every machine) and clamp(v, lo, hi):
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
 */
#ifndef PARE_CP_QUANT_H
#define PARE_CP_QUANT_H

#include <stddef.h>
#include <stdint.h>

typedef enum cp_qscheme {
    CP_INT8_SYM = 0,  /* q in [-127, 127] */
    CP_INT4_SYM = 1,  /* q in [-7, 7] */
    CP_INT4_ASYM = 2, /* q in [0, 15] with zero point z in [0, 15] */
} cp_qscheme;

/* Name of a scheme ("int8", "int4", "int4-asym"), or "?" when out of range. */
const char *cp_qscheme_name(cp_qscheme s);

/* Round half away from zero of a finite float, as an int (|v| < 2^31). */
int cp_round(float v);

/* Scale (and zero point, asymmetric only; z may be NULL otherwise) of one
 * group w[0, n) under scheme s, by the formulas above. n >= 1; w finite. */
void cp_group_params(cp_qscheme s, const float *w, int n, float *scale, int *zero);

/* The integer code of one weight under (s, scale, zero), by the formulas
 * above (q in the scheme's range; 0 when scale is 0 for symmetric schemes,
 * zero when scale is 0 for the asymmetric one). */
int cp_quantize_value(cp_qscheme s, float w, float scale, int zero);

/* The dequantized value of a code: scale * q, or scale * (q - zero). */
float cp_dequantize_value(cp_qscheme s, int q, float scale, int zero);

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
