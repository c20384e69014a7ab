/* kernels_internal.h - what the scalar and SIMD kernels share (internal). */
#ifndef PARE_INF_KERNELS_INTERNAL_H
#define PARE_INF_KERNELS_INTERNAL_H

#include "kernels.h"
#include "types.h"

/* 1/254, the weight of one limb relative to the one above it (compress/grid.h). */
#define INF_LIMB_INV (1.0f / 254.0f)

/* Per limb l, a row accumulates y_l += s_g * I_l,g over its groups (one
 * fused multiply-add per group); the limbs are joined once per row:
 * y = y0 + (y1 + y2 / 254) / 254. SIMD kernels do the same operations in the
 * same order. */
static inline float inf_finish(int L, float y0, float y1, float y2) {
    if (L == 1) return y0;
    if (L == 2) return y0 + y1 * INF_LIMB_INV;
    return y0 + (y1 + y2 * INF_LIMB_INV) * INF_LIMB_INV;
}

/* Limb l of token t (int8 and +128 forms) and its group sums. */
static inline const int8_t *inf_limb(const inf_kctx *k, int K, int t, int l) {
    return k->a + ((size_t)t * k->L + l) * K;
}
static inline const uint8_t *inf_limb_u(const inf_kctx *k, int K, int t, int l) {
    return k->au + ((size_t)t * k->L + l) * K;
}
static inline const int32_t *inf_limb_sum(const inf_kctx *k, int NG, int t, int l) {
    return k->asum + ((size_t)t * k->L + l) * NG;
}

/* Limbs of one activation row x[K]: *sx and a[L, K] on the grid of
 * compress/grid.h (the scalar version calls its cp_act_scale and
 * cp_act_limbs). The AVX-512 version rounds half away from zero as roundf
 * does (t = trunc(v), then t + sign(v) when |v - t| >= 1/2), so both give
 * the same bytes. */
void inf_act_token_scalar(const float *x, int K, int L, float *sx, int8_t *a);
/* The same, also writing the limbs + 128 into au[L, K] unless au is NULL. */
void inf_act_token_avx512(const float *x, int K, int L, float *sx, int8_t *a, uint8_t *au);

/* A static A8 site's codes of one row x[K] with inverse scale inv on
 * [-hi, hi] (cp_act_code), and their + 128 form into au unless au is NULL;
 * the AVX-512 version gives the same bytes (nearbyint as vrndscaleps). */
void inf_act_static_scalar(const float *x, int K, float inv, int hi, int8_t *a, uint8_t *au);
void inf_act_static_avx512(const float *x, int K, float inv, int hi, int8_t *a, uint8_t *au);

/* out[g] = a[g G] + ... + a[g G + G - 1] for the K / G groups (G a multiple
 * of 32); the AVX-512 build's version gives the same integers. */
void inf_group_sums_scalar(const int8_t *a, int K, int G, int32_t *out);
void inf_group_sums_avx512(const int8_t *a, int K, int G, int32_t *out);

void inf_q8s_scalar(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_q8s_avx2(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_q8s_avx512(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_q8nm_scalar(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_q8nm_avx2(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_q8nm_avx512(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
/* inf_q8nm_avx512 without VBMI (what it runs on a CPU without it; for the tests) */
void inf_q8nm_avx512_shifts(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_deq_q8nm_scalar(const inf_weight *w, float *out, int ldo, int rb0, int rb1);
void inf_deq_q8s_scalar(const inf_weight *w, float *out, int ldo, int rb0, int rb1);
void inf_q8_scalar(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_q4_scalar(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_f32_scalar(const float *w, const float *x, int K, float *out, int r0, int r1);

void inf_deq_q8_scalar(const inf_weight *w, float *out, int ldo, int rb0, int rb1);
void inf_deq_q4_scalar(const inf_weight *w, float *out, int ldo, int rb0, int rb1);
void inf_deq_q8_avx512(const inf_weight *w, float *out, int ldo, int rb0, int rb1);
void inf_deq_q4_avx512(const inf_weight *w, float *out, int ldo, int rb0, int rb1);

/* GELU's constants: the training op's (autograd/ops_elementwise.c). */
#define INF_GELU_K 0.7978845608028654f      /* sqrt(2/pi) */
#define INF_GELU_A 0.044715f

double inf_softmax(float *sc, int n, float scale);
void inf_gelu(float *x, const float *b, int n);

void inf_wsum_scalar(float *y, const float *c, float scale, const float *v, int m, int n, int ldv);
void inf_wsum_avx512(float *y, const float *c, float scale, const float *v, int m, int n, int ldv);

void inf_qacc_rows_scalar(float *y, const float *I, const float *s, int R, int N, bool first, float sa, const float *b);
void inf_qacc_rows_avx2(float *y, const float *I, const float *s, int R, int N, bool first, float sa, const float *b);

void inf_codes_f32_q8_avx2(const inf_weight *w, float *out, int ldo, int rb0, int rb1);
void inf_act_codes_f32_avx2(const float *x, size_t n, float inv, int hi, float *out);

void inf_q8_avx2(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_q4_avx2(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_f32_avx2(const float *w, const float *x, int K, float *out, int r0, int r1);

void inf_q8_avx512(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_q4_avx512(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
void inf_f32_avx512(const float *w, const float *x, int K, float *out, int r0, int r1);

#endif
