/* kernels.c - dispatch, activation limbs, weight preparation and the scalar
 * reference kernels (the SIMD ones are in kernels_x86.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "autograd/vecmath.h"
#include "kernels_internal.h"

/* ------------------------------------------------------------------ dispatch */

int inf_isa_supported(inf_isa isa) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    switch (isa) {
    case INF_ISA_SCALAR: return 1;
    case INF_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case INF_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
               __builtin_cpu_supports("fma");
    default: return 0;
    }
#else
    return isa == INF_ISA_SCALAR;
#endif
}

inf_isa inf_isa_best(void) {
    static int best = -1;
    if (best < 0) {
        int b = INF_ISA_SCALAR;
        for (int i = INF_ISA_AVX512; i > INF_ISA_SCALAR; i--)
            if (inf_isa_supported((inf_isa)i)) {
                b = i;
                break;
            }
        const char *env = getenv("PARE_ISA");
        if (env)
            for (int i = 0; i < INF_ISA_COUNT; i++)
                if (!strcmp(env, inf_isa_name((inf_isa)i)) && i < b) b = i;
        best = b;
    }
    return (inf_isa)best;
}

const char *inf_isa_name(inf_isa isa) {
    switch (isa) {
    case INF_ISA_SCALAR: return "scalar";
    case INF_ISA_AVX2: return "avx2";
    case INF_ISA_AVX512: return "avx512";
    default: return "?";
    }
}

inf_qkernel inf_qkernel_for(inf_isa isa, int dtype) {
    bool q8 = dtype == INF_Q8;
    if (dtype != INF_Q8 && dtype != INF_Q4 && dtype != INF_Q4A) return NULL;
#if defined(__x86_64__)
    if (isa == INF_ISA_AVX512) return q8 ? inf_q8_avx512 : inf_q4_avx512;
    if (isa == INF_ISA_AVX2) return q8 ? inf_q8_avx2 : inf_q4_avx2;
#endif
    return q8 ? inf_q8_scalar : inf_q4_scalar;
}

inf_dkernel inf_dkernel_for(inf_isa isa, int dtype) {
    bool q8 = dtype == INF_Q8;
    if (dtype != INF_Q8 && dtype != INF_Q4 && dtype != INF_Q4A) return NULL;
#if defined(__x86_64__)
    if (isa == INF_ISA_AVX512) return q8 ? inf_deq_q8_avx512 : inf_deq_q4_avx512;
#else
    (void)isa;
#endif
    return q8 ? inf_deq_q8_scalar : inf_deq_q4_scalar;
}

/* GELU and the softmax numerators are the training ops' own arithmetic: the
 * same expressions, with the exponential of autograd/vecmath.h (pare's
 * branch-free exp and logistic function, plain IEEE operations in a fixed
 * order). GCC compiles each function for SSE2, AVX2 and AVX-512 (target
 * clones, picked at load time) and, with contraction off, every clone gives
 * the same bits, so one function serves every instruction set, and the
 * runtime's activations are the training forward's bits for the same
 * inputs. */
AG_SIMD_CLONES void inf_gelu(float *x, const float *b, int n) {
    if (b) {
#pragma omp simd
        for (int i = 0; i < n; i++) {
            float v = x[i] + b[i];
            x[i] = v * ag_inv_1p_exp(-2.0f * INF_GELU_K * (v + INF_GELU_A * v * v * v));
        }
    } else {
#pragma omp simd
        for (int i = 0; i < n; i++) {
            float v = x[i];
            x[i] = v * ag_inv_1p_exp(-2.0f * INF_GELU_K * (v + INF_GELU_A * v * v * v));
        }
    }
}

AG_SIMD_CLONES double inf_softmax(float *sc, int n, float scale) {
#pragma omp simd
    for (int j = 0; j < n; j++) sc[j] *= scale;
    float mx = -INFINITY; /* a maximum is exact in any order; NaN never wins it */
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < n; j++) mx = sc[j] > mx ? sc[j] : mx;
#pragma omp simd
    for (int j = 0; j < n; j++) sc[j] = ag_exp_nonpos(sc[j] - mx);
    double sum = 0.0;
    for (int j = 0; j < n; j++) sum += sc[j];
    return sum;
}

inf_softmax_fn inf_softmax_for(inf_isa isa) {
    (void)isa;
    return inf_softmax;
}

inf_gelu_fn inf_gelu_for(inf_isa isa) {
    (void)isa;
    return inf_gelu;
}

void inf_wsum_scalar(float *y, const float *c, float scale, const float *v, int m, int n, int ldv) {
    for (int i = 0; i < n; i++) y[i] = 0.0f;
    for (int j = 0; j < m; j++) {
        float a = c[j] * scale;
        const float *vj = v + (size_t)j * ldv;
        for (int i = 0; i < n; i++) y[i] = y[i] + a * vj[i];
    }
}

inf_wsum_fn inf_wsum_for(inf_isa isa) {
#if defined(__x86_64__)
    if (isa == INF_ISA_AVX512) return inf_wsum_avx512;
#else
    (void)isa;
#endif
    return inf_wsum_scalar;
}

inf_fkernel inf_fkernel_for(inf_isa isa) {
#if defined(__x86_64__)
    if (isa == INF_ISA_AVX512) return inf_f32_avx512;
    if (isa == INF_ISA_AVX2) return inf_f32_avx2;
#endif
    return inf_f32_scalar;
}

/* ------------------------------------------------------------------ context */

void inf_kctx_init(inf_kctx *k, inf_isa isa, int limbs) {
    memset(k, 0, sizeof *k);
    inf_isa best = inf_isa_best();
    k->isa = isa > best ? best : isa;
    k->limbs = limbs < 1 ? 1 : limbs > 3 ? 3 : limbs;
}

void inf_kctx_free(inf_kctx *k) {
    if (!k) return;
    free(k->a);
    free(k->au);
    free(k->sx);
    free(k->asum);
    free(k->wbuf);
    memset(k, 0, sizeof *k);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    void *q = realloc(*p, need * elem);
    if (!q) return -1;
    *p = q;
    *cap = need;
    return 0;
}

static int8_t limb_round(float v) {
    float r = roundf(v);
    if (!(r >= -127.0f)) return -127; /* also NaN */
    if (r > 127.0f) return 127;
    return (int8_t)r;
}

void inf_act_token_scalar(const float *x, int K, int L, float *sx_out, int8_t *a) {
    float amax = 0.0f;
    for (int i = 0; i < K; i++) {
        float v = fabsf(x[i]);
        if (v > amax) amax = v;
    }
    float sx = amax / 127.0f;
    *sx_out = sx;
    for (int i = 0; i < K; i++) {
        float u = sx > 0.0f ? x[i] / sx : 0.0f;
        int8_t q = limb_round(u);
        a[i] = q;
        float r = u - (float)q;
        for (int l = 1; l < L; l++) {
            float v = r * 254.0f;
            int8_t ql = limb_round(v);
            a[(size_t)l * K + i] = ql;
            r = v - (float)ql;
        }
    }
}

void inf_group_sums_scalar(const int8_t *a, int K, int G, int32_t *out) {
    for (int g = 0; g < K / G; g++) {
        int32_t s = 0;
        for (int i = g * G; i < (g + 1) * G; i++) s += a[i];
        out[g] = s;
    }
}

/* inf_quantize_act, making only what the kernels of one storage type read:
 * the +128 limbs for int8 (VNNI), the group sums for int4; dtype < 0 = both. */
static int quantize_act(inf_kctx *k, const float *x, int T, int K, int G, int dtype) {
    int L = k->limbs, NG = K / G;
    bool need_u = dtype != INF_Q4 && dtype != INF_Q4A, need_sum = dtype != INF_Q8;
    size_t na = (size_t)T * L * K, ns = (size_t)T * L * NG;
    size_t ca = k->cap_a, cs = k->cap_s;
    if (grow((void **)&k->a, &ca, na, 1) || grow((void **)&k->au, &k->cap_a, na, 1) ||
        grow((void **)&k->sx, &k->cap_t, (size_t)T, sizeof(float)) ||
        grow((void **)&k->asum, &cs, ns, sizeof(int32_t)))
        return -1;
    k->cap_s = cs;
    for (int t = 0; t < T; t++) {
        int8_t *a0 = k->a + (size_t)t * L * K; /* [L, K] */
        bool made_u = false;
#if defined(__x86_64__)
        if (k->isa == INF_ISA_AVX512) {
            inf_act_token_avx512(x + (size_t)t * K, K, L, &k->sx[t], a0, need_u ? k->au + (size_t)t * L * K : NULL);
            made_u = need_u;
        } else
#endif
            inf_act_token_scalar(x + (size_t)t * K, K, L, &k->sx[t], a0);
        for (int l = 0; l < L; l++) {
            const int8_t *al = a0 + (size_t)l * K;
            uint8_t *ul = k->au + ((size_t)t * L + l) * K;
            int32_t *sl = k->asum + ((size_t)t * L + l) * NG;
            if (need_u && !made_u)
                for (int i = 0; i < K; i++) ul[i] = (uint8_t)(al[i] + 128);
            if (need_sum) {
#if defined(__x86_64__)
                if (k->isa == INF_ISA_AVX512) inf_group_sums_avx512(al, K, G, sl);
                else
#endif
                    inf_group_sums_scalar(al, K, G, sl);
            }
        }
    }
    return 0;
}

int inf_quantize_act(inf_kctx *k, const float *x, int T, int K, int G) { return quantize_act(k, x, T, K, G, -1); }

int inf_kctx_reserve(inf_kctx *k, int T, int K) {
    size_t na = (size_t)T * k->limbs * K, ca = k->cap_a, cs = k->cap_s;
    if (grow((void **)&k->a, &ca, na, 1) || grow((void **)&k->au, &k->cap_a, na, 1) ||
        grow((void **)&k->sx, &k->cap_t, (size_t)T, sizeof(float)) || grow((void **)&k->asum, &cs, na, sizeof(int32_t)))
        return -1;
    k->cap_s = cs;
    return 0;
}

int inf_matvec_prepare(inf_kctx *k, const inf_weight *w, const float *x) {
    if (w->dtype == INF_F32) return 0;
    return quantize_act(k, x, 1, w->K, w->G, w->dtype);
}

void inf_matvec_rows(const inf_kctx *k, const inf_weight *w, const float *x, float *out, int rb0, int rb1) {
    if (w->dtype == INF_F32) {
        int r1 = rb1 * INF_ROWS < w->N ? rb1 * INF_ROWS : w->N;
        inf_fkernel_for(k->isa)(w->f32, x, w->K, out, rb0 * INF_ROWS, r1);
        return;
    }
    inf_qkernel_for(k->isa, w->dtype)(k, w, 1, out, rb0, rb1);
}

/* ------------------------------------------------------------------ weights */

int inf_weight_init(inf_weight *w, const inf_tensor *t, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    if (t->ndim != 2) {
        snprintf(err, errlen, "tensor '%s': a matrix (2-D) was expected", t->name);
        return -1;
    }
    w->dtype = t->dtype;
    w->N = (int)t->shape[0];
    w->K = (int)t->shape[1];
    if (t->dtype == INF_F32) {
        w->f32 = (const float *)(const void *)t->data;
        w->G = w->K;
        return 0;
    }
    const inf_type_traits *tr = inf_type(t->dtype);
    w->G = (int)t->group;
    w->NB = (w->N + INF_ROWS - 1) / INF_ROWS;
    w->NG = w->K / w->G;
    w->codes = t->data;
    size_t codes_bytes = (size_t)w->NB * (size_t)(w->K / tr->cols_per_block) * (size_t)tr->block_bytes;
    w->scales = (const float *)(const void *)(t->data + codes_bytes);
    size_t n = (size_t)w->NB * w->NG * INF_ROWS;
    w->corr = malloc(n * sizeof *w->corr);
    if (!w->corr) {
        snprintf(err, errlen, "tensor '%s': out of memory", t->name);
        return -1;
    }
    if (t->dtype == INF_Q8) {
        const inf_blk_q8 *b = (const inf_blk_q8 *)(const void *)w->codes;
        for (int rb = 0; rb < w->NB; rb++)
            for (int g = 0; g < w->NG; g++)
                for (int i = 0; i < INF_ROWS; i++) {
                    int32_t s = 0;
                    for (int kc = g * w->G / 4; kc < (g + 1) * w->G / 4; kc++)
                        for (int j = 0; j < 4; j++) s += b[(size_t)rb * (w->K / 4) + kc].q[i][j];
                    w->corr[((size_t)rb * w->NG + g) * INF_ROWS + i] = 128 * s;
                }
    } else {
        const uint8_t *z = (const uint8_t *)(w->scales + n);
        for (size_t i = 0; i < n; i++) w->corr[i] = t->dtype == INF_Q4A ? z[i] : 8;
    }
    return 0;
}

void inf_weight_free(inf_weight *w) {
    if (!w) return;
    free(w->corr);
    memset(w, 0, sizeof *w);
}

/* ------------------------------------------------------------------ scalar */

float inf_dot_f32_ref(const float *x, const float *w, int K) {
    float lane[16] = {0};
    int K16 = K & ~15;
    for (int k0 = 0; k0 < K16; k0 += 16)
        for (int j = 0; j < 16; j++) lane[j] = fmaf(x[k0 + j], w[k0 + j], lane[j]);
    for (int j = 0; j < 8; j++) lane[j] += lane[j + 8];
    for (int j = 0; j < 4; j++) lane[j] += lane[j + 4];
    for (int j = 0; j < 2; j++) lane[j] += lane[j + 2];
    float s = lane[0] + lane[1];
    for (int k = K16; k < K; k++) s = fmaf(x[k], w[k], s);
    return s;
}

void inf_f32_scalar(const float *w, const float *x, int K, float *out, int r0, int r1) {
    for (int r = r0; r < r1; r++) out[r] = inf_dot_f32_ref(x, w + (size_t)r * K, K);
}

void inf_q8_scalar(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG, L = k->limbs;
    for (int rb = rb0; rb < rb1; rb++) {
        const inf_blk_q8 *blk = (const inf_blk_q8 *)(const void *)w->codes + (size_t)rb * (K / 4);
        for (int t = 0; t < T; t++) {
            float y[3][INF_ROWS] = {{0}};
            for (int g = 0; g < NG; g++) {
                int32_t I[3][INF_ROWS] = {{0}};
                for (int l = 0; l < L; l++) {
                    const int8_t *a = inf_limb(k, K, t, l);
                    for (int kc = g * G / 4; kc < (g + 1) * G / 4; kc++)
                        for (int i = 0; i < INF_ROWS; i++)
                            for (int j = 0; j < 4; j++) I[l][i] += blk[kc].q[i][j] * a[4 * kc + j];
                }
                const float *s = w->scales + ((size_t)rb * NG + g) * INF_ROWS;
                for (int l = 0; l < L; l++)
                    for (int i = 0; i < INF_ROWS; i++) y[l][i] = fmaf(s[i], (float)I[l][i], y[l][i]);
            }
            for (int i = 0; i < INF_ROWS; i++) {
                int r = rb * INF_ROWS + i;
                if (r < w->N) out[(size_t)t * w->N + r] = inf_finish(L, y[0][i], y[1][i], y[2][i]) * k->sx[t];
            }
        }
    }
}

void inf_q4_scalar(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG, L = k->limbs;
    for (int rb = rb0; rb < rb1; rb++) {
        const inf_blk_q4 *blk = (const inf_blk_q4 *)(const void *)w->codes + (size_t)rb * (K / 8);
        for (int t = 0; t < T; t++) {
            float y[3][INF_ROWS] = {{0}};
            for (int g = 0; g < NG; g++) {
                int32_t I[3][INF_ROWS] = {{0}};
                const int32_t *z = w->corr + ((size_t)rb * NG + g) * INF_ROWS;
                for (int l = 0; l < L; l++) {
                    const int8_t *a = inf_limb(k, K, t, l);
                    for (int kc = g * G / 8; kc < (g + 1) * G / 8; kc++)
                        for (int i = 0; i < INF_ROWS; i++)
                            for (int j = 0; j < 4; j++) {
                                uint8_t b = blk[kc].q[i][j];
                                I[l][i] += (b & 15) * a[8 * kc + j] + (b >> 4) * a[8 * kc + 4 + j];
                            }
                    int32_t as = inf_limb_sum(k, NG, t, l)[g];
                    for (int i = 0; i < INF_ROWS; i++) I[l][i] -= z[i] * as;
                }
                const float *s = w->scales + ((size_t)rb * NG + g) * INF_ROWS;
                for (int l = 0; l < L; l++)
                    for (int i = 0; i < INF_ROWS; i++) y[l][i] = fmaf(s[i], (float)I[l][i], y[l][i]);
            }
            for (int i = 0; i < INF_ROWS; i++) {
                int r = rb * INF_ROWS + i;
                if (r < w->N) out[(size_t)t * w->N + r] = inf_finish(L, y[0][i], y[1][i], y[2][i]) * k->sx[t];
            }
        }
    }
}

void inf_deq_q8_scalar(const inf_weight *w, float *out, int ldo, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG;
    for (int rb = rb0; rb < rb1; rb++) {
        const inf_blk_q8 *blk = (const inf_blk_q8 *)(const void *)w->codes + (size_t)rb * (K / 4);
        for (int k = 0; k < K; k++) {
            const float *s = w->scales + ((size_t)rb * NG + k / G) * INF_ROWS;
            for (int i = 0; i < INF_ROWS; i++)
                out[(size_t)k * ldo + rb * INF_ROWS + i] = s[i] * (float)blk[k / 4].q[i][k % 4];
        }
    }
}

void inf_deq_q4_scalar(const inf_weight *w, float *out, int ldo, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG;
    for (int rb = rb0; rb < rb1; rb++) {
        const inf_blk_q4 *blk = (const inf_blk_q4 *)(const void *)w->codes + (size_t)rb * (K / 8);
        for (int k = 0; k < K; k++) {
            size_t gi = ((size_t)rb * NG + k / G) * INF_ROWS;
            int j = k % 8;
            for (int i = 0; i < INF_ROWS; i++) {
                uint8_t b = blk[k / 8].q[i][j % 4];
                int nib = j < 4 ? (b & 15) : (b >> 4);
                out[(size_t)k * ldo + rb * INF_ROWS + i] = w->scales[gi + i] * (float)(nib - w->corr[gi + i]);
            }
        }
    }
}

/* ------------------------------------------------------------------ matmul */

/* Work (multiply-adds) below which a product runs on one thread: waking a
 * sleeping OpenMP thread (OMP_WAIT_POLICY=PASSIVE) costs tens of
 * microseconds, more than a small layer's whole product. */
#define INF_PAR_MIN (1 << 18)

/* The same for the integer kernels, which are about ten times faster per
 * weight than f32: a decode product of the "small" model (at most 384 x 1536
 * weights) takes about 15 us on one thread, less than one wake-up, and
 * splitting it made 2-thread decode 2.7x slower than 1 thread under
 * OMP_WAIT_POLICY=PASSIVE (docs/inference.md). Batched products (prompts)
 * cross this line and use every thread. */
#define INF_QPAR_MIN (1 << 22)

/* The same for batched int8 products (prompts, evaluation): 4M multiply-adds,
 * the size from which ag_sgemm splits f32 products. At the nanoGPT baseline's
 * 64-token prompt (products of 1M to 4M multiply-adds) under
 * OMP_WAIT_POLICY=PASSIVE, splitting from 1M made the int8 prompt 0.83-0.96x
 * f32 at 2 threads, from 4M 0.95-1.07x (paired runs, docs/inference.md). */
#define INF_QPAR_BATCH_MIN (1 << 22)

int inf_matmul(inf_kctx *k, const inf_weight *w, const float *x, int T, float *out) {
    if (w->dtype == INF_F32) {
        if (T == 1) {
            inf_fkernel f = inf_fkernel_for(k->isa);
            int nblk = (w->N + INF_ROWS - 1) / INF_ROWS;
#pragma omp parallel for schedule(static) if ((size_t)w->N * w->K >= INF_PAR_MIN)
            for (int b = 0; b < nblk; b++) {
                int r1 = (b + 1) * INF_ROWS < w->N ? (b + 1) * INF_ROWS : w->N;
                f(w->f32, x, w->K, out, b * INF_ROWS, r1);
            }
        } else {
            ag_sgemm(false, true, T, w->N, w->K, 1.0f, x, w->K, w->f32, w->K, 0.0f, out, w->N);
        }
        return 0;
    }
    if (T >= INF_GEMM_MIN_T && w->dtype != INF_Q8) { /* int4: dequantize, then one sgemm */
        int ldo = w->NB * INF_ROWS;
        size_t cw = k->cap_w;
        if (grow((void **)&k->wbuf, &cw, (size_t)w->K * ldo, sizeof(float))) return -1;
        k->cap_w = cw;
        inf_dkernel d = inf_dkernel_for(k->isa, w->dtype);
        int nb = w->NB;
#pragma omp parallel for schedule(static) if ((size_t)w->N * w->K >= INF_PAR_MIN)
        for (int b = 0; b < nb; b++) d(w, k->wbuf, ldo, b, b + 1);
        ag_sgemm(false, false, T, w->N, w->K, 1.0f, x, w->K, k->wbuf, ldo, 0.0f, out, w->N);
        return 0;
    }
    if (quantize_act(k, x, T, w->K, w->G, w->dtype)) return -1;
    inf_qkernel f = inf_qkernel_for(k->isa, w->dtype);
    /* work items of two row blocks: a decode kernel may share its activation
     * loads between them (each row's arithmetic is the same either way) */
    int nb = w->NB, np = (nb + 1) / 2;
    size_t work = (size_t)w->N * w->K * T;
#pragma omp parallel for schedule(static) if (work >= (T == 1 ? INF_QPAR_MIN : INF_QPAR_BATCH_MIN))
    for (int b = 0; b < np; b++) f(k, w, T, out, 2 * b, 2 * b + 2 < nb ? 2 * b + 2 : nb);
    return 0;
}
