/* kernels.c - dispatch, activation limbs, weight preparation and the scalar
 * reference kernels (the SIMD ones are in kernels_x86.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "autograd/vecmath.h"
#include "compress/grid.h"
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

/* A type's kernels for isa (types.h): its entry for isa, else the next
 * lower instruction set's; NULL for an unknown type or isa. */
static const inf_type_traits *row_for(inf_isa isa, int dtype) {
    return (int)isa >= 0 && (int)isa < INF_ISA_COUNT ? inf_type(dtype) : NULL;
}

inf_qkernel inf_qkernel_for(inf_isa isa, int dtype) {
    const inf_type_traits *tr = row_for(isa, dtype);
    for (int i = tr ? (int)isa : -1; i >= 0; i--)
        if (tr->tile[i]) return tr->tile[i];
    return NULL;
}

inf_dkernel inf_dkernel_for(inf_isa isa, int dtype) {
    const inf_type_traits *tr = row_for(isa, dtype);
    for (int i = tr ? (int)isa : -1; i >= 0; i--)
        if (tr->deq[i]) return tr->deq[i];
    return NULL;
}

static inf_fkernel matvec_for(inf_isa isa, int dtype) {
    const inf_type_traits *tr = row_for(isa, dtype);
    for (int i = tr ? (int)isa : -1; i >= 0; i--)
        if (tr->matvec[i]) return tr->matvec[i];
    return NULL;
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

inf_fkernel inf_fkernel_for(inf_isa isa) { return matvec_for(isa, INF_F32); }

/* ------------------------------------------------------------------ context */

void inf_kctx_init(inf_kctx *k, inf_isa isa, int limbs) {
    memset(k, 0, sizeof *k);
    inf_isa best = inf_isa_best();
    k->isa = isa > best ? best : isa;
    k->limbs = limbs < 1 ? 1 : limbs > 3 ? 3 : limbs;
    k->L = k->limbs;
}

void inf_kctx_free(inf_kctx *k) {
    if (!k) return;
    free(k->a);
    free(k->au);
    free(k->sx);
    free(k->asum);
    free(k->apk);
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

/* The activation grid of compress/grid.h, one row: its scale and limbs. */
void inf_act_token_scalar(const float *x, int K, int L, float *sx_out, int8_t *a) {
    float sx = cp_act_scale(x, K), inv = cp_act_inv(sx);
    *sx_out = sx;
    for (int i = 0; i < K; i++) cp_act_limbs(x[i], inv, L, a + i, (size_t)K);
}

/* A static A8 site's codes of one row (compress/grid.h, cp_act_code), and
 * their + 128 form when au is not NULL. */
void inf_act_static_scalar(const float *x, int K, float inv, int hi, int8_t *a, uint8_t *au) {
    for (int i = 0; i < K; i++) a[i] = cp_act_code(x[i], inv, hi);
    if (au)
        for (int i = 0; i < K; i++) au[i] = (uint8_t)(a[i] + 128);
}

void inf_group_sums_scalar(const int8_t *a, int K, int G, int32_t *out) {
    for (int g = 0; g < K / G; g++) {
        int32_t s = 0;
        for (int i = g * G; i < (g + 1) * G; i++) s += a[i];
        out[g] = s;
    }
}

/* The limbs of each column of a[L, K] packed into one word (kernels.h:
 * inf_kctx.apk), the operand the q8s kernels gather. */
static void pack_limbs(const int8_t *a, int L, int K, uint32_t *out) {
    for (int i = 0; i < K; i++) {
        uint32_t v = (uint16_t)(int16_t)a[i];
        if (L > 1) v |= (uint32_t)(uint8_t)a[K + i] << 16;
        if (L > 2) v |= (uint32_t)(uint8_t)a[2 * K + i] << 24;
        out[i] = v;
    }
}

/* inf_quantize_act, making only what the kernels of one storage type read
 * (its row's act flags: the +128 limbs for int8's VNNI operand, the group
 * sums for int4's zero points). A weight with a static activation scale (an
 * A8 site, w->act_hi > 0) gets one operand, the codes of compress/grid.h's
 * cp_act_code with that scale (k->sx[t] = the scale); float activations get
 * k->limbs limbs. */
static int quantize_act(inf_kctx *k, const inf_weight *w, const float *x, int T, int K, int G, unsigned need) {
    bool stat = w && w->act_hi > 0;
    int L = stat ? 1 : k->limbs, NG = K / G;
    bool need_u = need & INF_ACT_U8, need_sum = need & INF_ACT_SUMS, need_pack = need & INF_ACT_PACK;
    size_t na = (size_t)T * L * K, ns = (size_t)T * L * NG;
    size_t ca = k->cap_a, cs = k->cap_s;
    if (grow((void **)&k->a, &ca, na, 1) || grow((void **)&k->au, &k->cap_a, na, 1) ||
        grow((void **)&k->sx, &k->cap_t, (size_t)T, sizeof(float)) ||
        grow((void **)&k->asum, &cs, ns, sizeof(int32_t)) ||
        (need_pack && grow((void **)&k->apk, &k->cap_p, (size_t)T * K, sizeof(uint32_t))))
        return -1;
    k->cap_s = cs;
    k->L = L;
    for (int t = 0; t < T; t++) {
        int8_t *a0 = k->a + (size_t)t * L * K; /* [L, K] */
        uint8_t *u0 = need_u ? k->au + (size_t)t * L * K : NULL;
        bool made_u = false;
        if (stat) {
            k->sx[t] = w->act_scale;
#if defined(__x86_64__)
            if (k->isa == INF_ISA_AVX512) inf_act_static_avx512(x + (size_t)t * K, K, w->act_inv, w->act_hi, a0, u0);
            else
#endif
                inf_act_static_scalar(x + (size_t)t * K, K, w->act_inv, w->act_hi, a0, u0);
            made_u = need_u;
        } else {
#if defined(__x86_64__)
            if (k->isa == INF_ISA_AVX512) {
                inf_act_token_avx512(x + (size_t)t * K, K, L, &k->sx[t], a0, u0);
                made_u = need_u;
            } else
#endif
                inf_act_token_scalar(x + (size_t)t * K, K, L, &k->sx[t], a0);
        }
        if (need_pack) pack_limbs(a0, L, K, k->apk + (size_t)t * K);
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

int inf_quantize_act(inf_kctx *k, const float *x, int T, int K, int G) {
    return quantize_act(k, NULL, x, T, K, G, INF_ACT_LIMBS | INF_ACT_U8 | INF_ACT_SUMS | INF_ACT_PACK);
}

int inf_quantize_act_static(inf_kctx *k, const inf_weight *w, const float *x, int T) {
    return quantize_act(k, w, x, T, w->K, w->G, INF_ACT_LIMBS | INF_ACT_U8 | INF_ACT_SUMS | INF_ACT_PACK);
}

int inf_kctx_reserve(inf_kctx *k, int T, int K) {
    size_t na = (size_t)T * k->limbs * K, ca = k->cap_a, cs = k->cap_s;
    if (grow((void **)&k->a, &ca, na, 1) || grow((void **)&k->au, &k->cap_a, na, 1) ||
        grow((void **)&k->sx, &k->cap_t, (size_t)T, sizeof(float)) || grow((void **)&k->asum, &cs, na, sizeof(int32_t)) ||
        grow((void **)&k->apk, &k->cap_p, (size_t)T * K, sizeof(uint32_t)))
        return -1;
    k->cap_s = cs;
    return 0;
}

int inf_matvec_prepare(inf_kctx *k, const inf_weight *w, const float *x) {
    const inf_type_traits *tr = inf_type(w->dtype);
    if (!tr->act) return 0;
    return quantize_act(k, w, x, 1, w->K, w->G, tr->act);
}

/* Rows [rb0 * 16, min(rb1 * 16, N)) of out[T, N]: the type's tile kernel on
 * the limbs in k, or its matrix-vector kernel on x (T = 1). */
static void rows(const inf_type_traits *tr, const inf_kctx *k, const inf_weight *w, const float *x, int T,
                 float *out, int rb0, int rb1) {
    if (tr->act) {
        inf_qkernel_for(k->isa, w->dtype)(k, w, T, out, rb0, rb1);
    } else {
        int r1 = rb1 * INF_ROWS < w->N ? rb1 * INF_ROWS : w->N;
        matvec_for(k->isa, w->dtype)(w->f32, x, w->K, out, rb0 * INF_ROWS, r1);
    }
}

void inf_matvec_rows(const inf_kctx *k, const inf_weight *w, const float *x, float *out, int rb0, int rb1) {
    rows(inf_type(w->dtype), k, w, x, 1, out, rb0, rb1);
}

/* ------------------------------------------------------------------ weights */

int inf_weight_init(inf_weight *w, const inf_tensor *t, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    const inf_type_traits *tr = inf_type(t->dtype);
    if (t->ndim != 2 || !tr) {
        snprintf(err, errlen, "tensor '%s': a matrix (2-D) of a known storage type was expected", t->name);
        return -1;
    }
    w->dtype = t->dtype;
    w->N = (int)t->shape[0];
    w->K = (int)t->shape[1];
    w->G = tr->group_multiple ? (int)t->group : w->K;
    w->NB = (w->N + INF_ROWS - 1) / INF_ROWS;
    w->NG = w->K / w->G;
    return tr->prepare(w, t, err, errlen);
}

int inf_weight_update(inf_weight *w, const inf_tensor *t, char *err, size_t errlen) {
    if (t->dtype != w->dtype || t->ndim != 2 || (int)t->shape[0] != w->N || (int)t->shape[1] != w->K ||
        (inf_type(t->dtype)->group_multiple && (int)t->group != w->G)) {
        snprintf(err, errlen, "tensor '%s': updating a weight of another type or shape", t->name);
        return -1;
    }
    return inf_type(t->dtype)->prepare(w, t, err, errlen);
}

void inf_weight_free(inf_weight *w) {
    if (!w) return;
    free(w->corr);
    free(w->soff);
    memset(w, 0, sizeof *w);
}

int inf_weight_set_act(inf_weight *w, int bits, float sa, char *err, size_t errlen) {
    if (bits == 0) {
        w->act_hi = 0, w->act_scale = w->act_inv = 0.0f;
        return 0;
    }
    if (bits < CP_BITS_MIN || bits > CP_BITS_MAX || !isfinite(sa) || !(sa > 0.0f)) {
        snprintf(err, errlen, "activation grid of %d bits with scale %g: expected %d..%d bits and a finite scale > 0",
                 bits, (double)sa, CP_BITS_MIN, CP_BITS_MAX);
        return -1;
    }
    if (!inf_type(w->dtype) || !inf_type(w->dtype)->act) {
        snprintf(err, errlen, "static %d-bit activations on a %s weight: expected an integer storage type (q8, q4, "
                 "q4a, q8s)", bits, inf_type_name(w->dtype));
        return -1;
    }
    w->act_hi = (1 << (bits - 1)) - 1;
    w->act_scale = sa;
    w->act_inv = 1.0f / sa;
    return 0;
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
    int K = w->K, G = w->G, NG = w->NG, L = k->L;
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
    int K = w->K, G = w->G, NG = w->NG, L = k->L;
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

/* q8s: each (row block, group)'s chunks, the exact integer sums per limb
 * over each row's entries, then q8's epilogue: the bits of q8 for the same
 * codes and scales. */
void inf_q8s_scalar(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG, NC = w->NC, L = k->L;
    const inf_blk_q8s *qd = (const inf_blk_q8s *)(const void *)w->slots;
    for (int rb = rb0; rb < rb1; rb++)
        for (int t = 0; t < T; t++) {
            float y[3][INF_ROWS] = {{0}};
            for (int g = 0; g < NG; g++) {
                int32_t I[3][INF_ROWS] = {{0}};
                for (int c = 0; c < NC; c++) {
                    size_t u = ((size_t)rb * NG + g) * NC + c;
                    for (int l = 0; l < L; l++) {
                        const int8_t *a = inf_limb(k, K, t, l) + (size_t)g * G + (size_t)c * INF_Q8S_CHUNK;
                        for (uint64_t j = w->soff[u]; j < w->soff[u + 1]; j++)
                            for (int i = 0; i < INF_ROWS; i++)
                                for (int e = 0; e < 4; e++) I[l][i] += qd[j].q[i][e] * a[qd[j].idx[i][e]];
                    }
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

/* q8nm: entry e of block row i at column 8 kb + 4 (e / 2) + its position. */
void inf_q8nm_scalar(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG, L = k->L;
    for (int rb = rb0; rb < rb1; rb++) {
        const inf_blk_q8nm *blk = (const inf_blk_q8nm *)(const void *)w->codes + (size_t)rb * (K / 8);
        for (int t = 0; t < T; t++) {
            float y[3][INF_ROWS] = {{0}};
            for (int g = 0; g < NG; g++) {
                int32_t I[3][INF_ROWS] = {{0}};
                for (int l = 0; l < L; l++) {
                    const int8_t *a = inf_limb(k, K, t, l);
                    for (int kb = g * G / 8; kb < (g + 1) * G / 8; kb++)
                        for (int i = 0; i < INF_ROWS; i++)
                            for (int e = 0; e < 4; e++) {
                                int col = 8 * kb + 4 * (e / 2) + ((blk[kb].pos[i] >> (2 * e)) & 3);
                                I[l][i] += blk[kb].q[i][e] * a[col];
                            }
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

void inf_deq_q8nm_scalar(const inf_weight *w, float *out, int ldo, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG;
    for (int rb = rb0; rb < rb1; rb++) {
        const inf_blk_q8nm *blk = (const inf_blk_q8nm *)(const void *)w->codes + (size_t)rb * (K / 8);
        for (int k = 0; k < K; k++)
            for (int i = 0; i < INF_ROWS; i++) out[(size_t)k * ldo + rb * INF_ROWS + i] = 0.0f;
        for (int kb = 0; kb < K / 8; kb++)
            for (int i = 0; i < INF_ROWS; i++)
                for (int e = 0; e < 4; e++) {
                    int col = 8 * kb + 4 * (e / 2) + ((blk[kb].pos[i] >> (2 * e)) & 3);
                    const float *s = w->scales + ((size_t)rb * NG + col / G) * INF_ROWS;
                    if (blk[kb].q[i][e]) out[(size_t)col * ldo + rb * INF_ROWS + i] = s[i] * (float)blk[kb].q[i][e];
                }
    }
}

void inf_deq_q8s_scalar(const inf_weight *w, float *out, int ldo, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG, NC = w->NC;
    const inf_blk_q8s *qd = (const inf_blk_q8s *)(const void *)w->slots;
    for (int rb = rb0; rb < rb1; rb++) {
        for (int k = 0; k < K; k++)
            for (int i = 0; i < INF_ROWS; i++) out[(size_t)k * ldo + rb * INF_ROWS + i] = 0.0f;
        for (int g = 0; g < NG; g++) {
            const float *s = w->scales + ((size_t)rb * NG + g) * INF_ROWS;
            for (int c = 0; c < NC; c++) {
                size_t u = ((size_t)rb * NG + g) * NC + c, c0 = (size_t)g * G + (size_t)c * INF_Q8S_CHUNK;
                for (uint64_t j = w->soff[u]; j < w->soff[u + 1]; j++)
                    for (int i = 0; i < INF_ROWS; i++)
                        for (int e = 0; e < 4; e++)
                            if (qd[j].q[i][e])
                                out[(c0 + qd[j].idx[i][e]) * ldo + rb * INF_ROWS + i] = s[i] * (float)qd[j].q[i][e];
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

void inf_qacc_rows_scalar(float *y, const float *I, const float *s, int R, int N, bool first, float sa, const float *b) {
    for (int r = 0; r < R; r++)
        for (int n = 0; n < N; n++) {
            size_t i = (size_t)r * N + n;
            float v = fmaf(s[n], I[i], first ? 0.0f : y[i]);
            if (sa > 0.0f) {
                v = v * sa;
                if (b) v = v + b[n];
            }
            y[i] = v;
        }
}

void inf_qacc_rows(float *y, const float *I, const float *s, int R, int N, bool first, float sa, const float *b) {
#if defined(__x86_64__)
    if (inf_isa_best() >= INF_ISA_AVX2) {
        inf_qacc_rows_avx2(y, I, s, R, N, first, sa, b);
        return;
    }
#endif
    inf_qacc_rows_scalar(y, I, s, R, N, first, sa, b);
}

/* ------------------------------------------------------------------ matmul */

/* Weights below which dequantizing for the GEMM path runs on one thread
 * (float work: the threshold of the f32 products, types.c). */
#define INF_DEQ_PAR_MIN ((size_t)1 << 18)

/* Whether an A8 product's integer dot products stay exact in float (every
 * partial sum of a group below 2^24): int8 codes with groups of at most 1040
 * inputs, int4 codes (|q - z| <= 15) always. */
static bool exact_in_float(const inf_weight *w) {
    if (inf_type(w->dtype)->from_q8) return false; /* no dense codes to convert: the integer kernel */
    double qmax = w->dtype == INF_Q8 ? 127.0 : 15.0;
    return w->act_hi > 0 && qmax * w->act_hi * w->G < 16777216.0;
}

/* Row blocks [rb0, rb1) of an integer weight's codes minus zero points, as
 * floats, transposed: out[k * ldo + r] = q[r, k] - z (no scales). */
static void codes_to_float(const inf_weight *w, float *out, int ldo, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG;
    for (int rb = rb0; rb < rb1; rb++) {
        if (w->dtype == INF_Q8) {
            const inf_blk_q8 *blk = (const inf_blk_q8 *)(const void *)w->codes + (size_t)rb * (K / 4);
            for (int kk = 0; kk < K; kk++)
                for (int i = 0; i < INF_ROWS; i++)
                    out[(size_t)kk * ldo + rb * INF_ROWS + i] = (float)blk[kk / 4].q[i][kk % 4];
        } else {
            const inf_blk_q4 *blk = (const inf_blk_q4 *)(const void *)w->codes + (size_t)rb * (K / 8);
            for (int kk = 0; kk < K; kk++) {
                int j = kk % 8;
                const int32_t *z = w->corr + ((size_t)rb * NG + kk / G) * INF_ROWS; /* q4, q4a: the zero points */
                for (int i = 0; i < INF_ROWS; i++) {
                    uint8_t b = blk[kk / 8].q[i][j % 4];
                    out[(size_t)kk * ldo + rb * INF_ROWS + i] = (float)((j < 4 ? (b & 15) : (b >> 4)) - z[i]);
                }
            }
        }
    }
}

/* An A8 product of T tokens through sgemm on integer-valued floats: the
 * activations' codes and the weight's codes as floats, one sgemm per group
 * giving the exact integers I_g (exact_in_float), then the kernels' own
 * epilogue y = fmaf(s_g, I_g, y), y * sa (inf_qacc_rows): the same bits as
 * the integer kernels, at sgemm's speed for prompts. */
static int matmul_exact(inf_kctx *k, const inf_weight *w, const float *x, int T, float *out) {
    int N = w->N, K = w->K, G = w->G, NG = w->NG, ldo = w->NB * INF_ROWS;
    size_t nw = (size_t)K * ldo, na = (size_t)T * K, ni = (size_t)T * N, ns = (size_t)NG * N;
    size_t cw = k->cap_w;
    if (grow((void **)&k->wbuf, &cw, nw + na + ni + ns, sizeof(float))) return -1;
    k->cap_w = cw;
    float *W = k->wbuf, *A = W + nw, *I = A + na, *sT = I + ni;
    int nb = w->NB;
    bool avx2 = k->isa >= INF_ISA_AVX2;
#pragma omp parallel for schedule(static) if ((size_t)N * K >= INF_DEQ_PAR_MIN)
    for (int b = 0; b < nb; b++) {
#if defined(__x86_64__)
        if (avx2 && w->dtype == INF_Q8) inf_codes_f32_q8_avx2(w, W, ldo, b, b + 1);
        else
#endif
            codes_to_float(w, W, ldo, b, b + 1);
    }
#if defined(__x86_64__)
    if (avx2) inf_act_codes_f32_avx2(x, na, w->act_inv, w->act_hi, A);
    else
#endif
        for (size_t i = 0; i < na; i++) A[i] = (float)cp_act_code(x[i], w->act_inv, w->act_hi);
    for (int g = 0; g < NG; g++)
        for (int n = 0; n < N; n++)
            sT[(size_t)g * N + n] = w->scales[((size_t)(n / INF_ROWS) * NG + g) * INF_ROWS + n % INF_ROWS];
    for (int g = 0; g < NG; g++) {
        ag_sgemm(false, false, T, N, G, 1.0f, A + (size_t)g * G, K, W + (size_t)g * G * ldo, ldo, 0.0f, I, N);
        inf_qacc_rows(out, I, sT + (size_t)g * N, T, N, g == 0, g == NG - 1 ? w->act_scale : 0.0f, NULL);
    }
    return 0;
}

int inf_matmul(inf_kctx *k, const inf_weight *w, const float *x, int T, float *out) {
    const inf_type_traits *tr = inf_type(w->dtype);
    /* prompts of A8 sites without VNNI: sgemm on the integer codes where one group is a long product
     * (int8 codes, or groups of at least 256 inputs); int4's small groups are faster in its integer
     * kernel, and with VNNI (INF_ISA_AVX512) every A8 prompt is: the tile kernel runs W8A8 prompts of
     * the "small" model 1.9x faster than this path (3,740 -> 7,104 tokens/s, one thread, the same bits) */
    if (k->isa < INF_ISA_AVX512 && T >= INF_GEMM_MIN_T && exact_in_float(w) && (w->dtype == INF_Q8 || w->G >= 256))
        return matmul_exact(k, w, x, T, out);
    if (T >= tr->gemm_min_t && w->act_hi == 0) { /* an A8 site always runs the integer kernel */
        if (w->f32) { /* float weights: one sgemm on them */
            ag_sgemm(false, true, T, w->N, w->K, 1.0f, x, w->K, w->f32, w->K, 0.0f, out, w->N);
            return 0;
        }
        int ldo = w->NB * INF_ROWS; /* dequantize to [K, ldo], then one sgemm */
        size_t cw = k->cap_w;
        if (grow((void **)&k->wbuf, &cw, (size_t)w->K * ldo, sizeof(float))) return -1;
        k->cap_w = cw;
        inf_dkernel d = inf_dkernel_for(k->isa, w->dtype);
        int nb = w->NB;
#pragma omp parallel for schedule(static) if ((size_t)w->N * w->K >= INF_DEQ_PAR_MIN)
        for (int b = 0; b < nb; b++) d(w, k->wbuf, ldo, b, b + 1);
        ag_sgemm(false, false, T, w->N, w->K, 1.0f, x, w->K, k->wbuf, ldo, 0.0f, out, w->N);
        return 0;
    }
    if (tr->act && quantize_act(k, w, x, T, w->K, w->G, tr->act)) return -1;
    /* work items of mm_blocks row blocks (a decode kernel may share its
     * activation loads between two; each row's arithmetic is the same either
     * way), split over the threads when the product is large enough */
    int nb = w->NB, per = tr->mm_blocks, np = (nb + per - 1) / per;
    size_t work = (size_t)w->N * w->K * T, min = T == 1 ? tr->par_min_decode : tr->par_min_batch;
#pragma omp parallel for schedule(static) if (work >= min)
    for (int b = 0; b < np; b++) rows(tr, k, w, x, T, out, per * b, per * b + per < nb ? per * b + per : nb);
    return 0;
}
