/* ops_attention.c - causal multi-head self-attention, forward beside backward.
 *
 * Attention (Vaswani et al. 2017), per head with q, k, v [T, D]:
 *   S = q k^T / sqrt(D)                      [T, T]
 *   P_ij = exp(S_ij) / sum_{k<=i} exp(S_ik)  for j <= i, 0 for j > i
 *   out = P v                                [T, D]
 * P is an ordinary tensor between two tape ops (attn_probs, attn_apply), so a
 * distillation loss can read P and add into P.grad; the backward of
 * attn_probs then sees the sum of every contribution.
 *
 * Backward:
 *   dv = P^T dout,  dP = dout v^T                       (attn_apply)
 *   dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik)             (softmax, row form:
 *           O(T) per row, never the T x T Jacobian of a row)
 *   dq = dS k / sqrt(D),  dk = dS^T q / sqrt(D)         (attn_probs)
 *
 * Threads: each kernel is one `omp parallel for` over the B*H heads; a head's
 * products are computed whole on its own thread (ag_sgemm_whole: one
 * single-threaded cblas call each, so the bits depend only on the shapes,
 * not on the thread count), or by the direct kernels of attn_direct.c. The
 * small per-head products are not worth splitting; the heads are.
 */
#include <assert.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention_kernels.h"
#include "ops.h"
#include "parallel.h"
#include "vecmath.h"

/* Below this many floats a layout copy is not worth waking the threads
 * (see AG_PAR_MIN in ops_internal.h). */
#define PAR_COPY_MIN (1 << 19)

static inline int imin(int a, int b) { return a < b ? a : b; }

/* ============================================================ fast kernels */

/* The exponential is ag_exp_nonpos (vecmath.h): branch-free, so the `omp
 * simd` loops below vectorise it, with the same bits scalar or vectorised. */

/* row[0..n) <- softmax(row[0..n)), row[n..T) <- 0. */
AG_SIMD_CLONES static void causal_softmax_row(float *row, int n, int T) {
    float mx = row[0]; /* a max is exact in any order */
#pragma omp simd reduction(max : mx)
    for (int j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
#pragma omp simd
    for (int j = 0; j < n; j++) row[j] = ag_exp_nonpos(row[j] - mx);
    /* sum in 8 lanes (lane l takes j = l mod 8), then the lanes pairwise and
     * the tail in index order: an order fixed by this code, so it vectorises
     * without depending on the vector width */
    float lane[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) lane[l] += row[j + l];
    float sum = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (; j < n; j++) sum += row[j];
    float inv = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j < n; j++) row[j] *= inv;
    for (int j = n; j < T; j++) row[j] = 0.0f;
}

/* Where head h's [T, D] rows live: at (h / H) * sb + (h % H) * sh floats from
 * the base, rows ld floats apart. Contiguous heads [BH, T, D] are {1, T*D, 0,
 * D}; part p of a fused qkv [B, T, 3C] is {H, T*3C, D, 3C} from base + p*C;
 * an output [B, T, C] is {H, T*C, D, C}. */
typedef struct head_layout {
    int H;
    size_t sb, sh;
    int ld;
} head_layout;

static inline size_t head_off(const head_layout *l, int h) {
    return (size_t)(h / l->H) * l->sb + (size_t)(h % l->H) * l->sh;
}

static inline head_layout contiguous(int T, int D) {
    return (head_layout){1, (size_t)T * D, 0, D};
}

static void probs_fwd(float *P, const float *q, const float *k, const head_layout *L, int BH,
                      int T, int D, float scale) {
    int ld = L->ld;
    bool direct = ag_attn_direct(D);
    ag_join join = {0};
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int h = 0; h < BH; h++) {
            const float *qh = q + head_off(L, h), *kh = k + head_off(L, h); /* [T, D], stride ld */
            float *Ph = P + (size_t)h * T * T;                              /* [T, T] */
            for (int i0 = 0; i0 < T; i0 += AG_ATTN_BLOCK) {
                int i1 = imin(i0 + AG_ATTN_BLOCK, T), m = i1 - i0;
                /* S[i0:i1, 0:i1] = scale q[i0:i1] k[0:i1]^T; columns >= i1 are masked
                 * (the direct kernel computes only j <= i, all the softmax reads) */
                if (direct)
                    ag_attn_nt(D, m, i1, i0, scale, qh + (size_t)i0 * ld, ld, kh, ld, false, Ph + (size_t)i0 * T, T);
                else
                    ag_sgemm_whole(false, true, m, i1, D, scale, qh + (size_t)i0 * ld, ld, kh, ld, 0.0f,
                             Ph + (size_t)i0 * T, T);
                for (int i = i0; i < i1; i++) causal_softmax_row(Ph + (size_t)i * T, i + 1, T);
            }
        }
        ag_region_join(&join);
    }
}

void ag_attn_probs_fwd(float *P, const float *q, const float *k, int BH, int T, int D, float scale) {
    head_layout L = contiguous(T, D);
    probs_fwd(P, q, k, &L, BH, T, D, scale);
}

/* sum_j a[j] b[j] for j < n in 8 lanes, in an order fixed by this code (as
 * in causal_softmax_row), so it vectorises with the same bits everywhere. */
AG_SIMD_CLONES static float dot_lanes(const float *a, const float *b, int n) {
    float lane[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) lane[l] += a[j + l] * b[j + l];
    float sum = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (; j < n; j++) sum += a[j] * b[j];
    return sum;
}

/* q, k, dq, dk all in layout L. */
static void probs_bwd(float *dq, float *dk, const float *dP, const float *P, const float *q,
                      const float *k, const head_layout *L, int BH, int T, int D, float scale,
                      float *scratch, int nthreads) {
    size_t per_thread = ag_attn_scratch_floats(T);
    int ld = L->ld;
    bool direct = ag_attn_direct(D);
    ag_join join = {0};
#pragma omp parallel num_threads(nthreads)
    {
#pragma omp for schedule(static) nowait
        for (int h = 0; h < BH; h++) {
            float *dS = scratch + (size_t)omp_get_thread_num() * per_thread; /* [m, i1] */
            size_t o = head_off(L, h);
            const float *Ph = P + (size_t)h * T * T, *dPh = dP + (size_t)h * T * T; /* [T, T] */
            for (int i0 = 0; i0 < T; i0 += AG_ATTN_BLOCK) {
                int i1 = imin(i0 + AG_ATTN_BLOCK, T), m = i1 - i0;
                for (int i = i0; i < i1; i++) {
                    const float *p = Ph + (size_t)i * T, *g = dPh + (size_t)i * T; /* [T] */
                    float *ds = dS + (size_t)(i - i0) * i1;                        /* [i1] */
                    float dot = dot_lanes(p, g, i + 1); /* sum_k P_ik dP_ik */
#pragma omp simd
                    for (int j = 0; j <= i; j++) ds[j] = scale * p[j] * (g[j] - dot);
                    for (int j = i + 1; j < i1; j++) ds[j] = 0.0f;
                }
                if (direct) { /* the same products over the causal part only (j <= i) */
                    if (dq) ag_attn_nn(D, m, i1, i0, dS, i1, k + o, ld, true, dq + o + (size_t)i0 * ld, ld);
                    if (dk) ag_attn_tn(D, i1, m, i0, dS, i1, q + o + (size_t)i0 * ld, ld, dk + o, ld);
                    continue;
                }
                if (dq) /* dq[i0:i1] += dS[m, i1] k[0:i1] */
                    ag_sgemm_whole(false, false, m, D, i1, 1.0f, dS, i1, k + o, ld, 1.0f,
                             dq + o + (size_t)i0 * ld, ld);
                if (dk) /* dk[0:i1] += dS[m, i1]^T q[i0:i1] */
                    ag_sgemm_whole(true, false, i1, D, m, 1.0f, dS, i1, q + o + (size_t)i0 * ld, ld, 1.0f,
                             dk + o, ld);
            }
        }
        ag_region_join(&join);
    }
}

void ag_attn_probs_bwd(float *dq, float *dk, const float *dP, const float *P, const float *q,
                       const float *k, int BH, int T, int D, float scale, float *scratch,
                       int nthreads) {
    head_layout L = contiguous(T, D);
    probs_bwd(dq, dk, dP, P, q, k, &L, BH, T, D, scale, scratch, nthreads);
}

/* L[m, m] <- the lower triangle (diagonal included) of P's block at (i0, i0). */
static void lower_block(float *L, const float *Ph, int T, int i0, int m) {
    for (int r = 0; r < m; r++) {
        const float *src = Ph + (size_t)(i0 + r) * T + i0; /* [r + 1] */
        float *dst = L + (size_t)r * m;                      /* [m] */
#pragma omp simd
        for (int cidx = 0; cidx <= r; cidx++) dst[cidx] = src[cidx];
#pragma omp simd
        for (int cidx = r + 1; cidx < m; cidx++) dst[cidx] = 0.0f;
    }
}

/* v in layout Lv, out in layout Lo. */
static void apply_fwd(float *out, const float *P, const float *v, const head_layout *Lv,
                      const head_layout *Lo, int BH, int T, int D) {
    int lv = Lv->ld, lo = Lo->ld;
    bool direct = ag_attn_direct(D);
    ag_join join = {0};
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int h = 0; h < BH; h++) {
            float L[AG_ATTN_BLOCK * AG_ATTN_BLOCK]; /* masked diagonal block of P */
            const float *Ph = P + (size_t)h * T * T, *vh = v + head_off(Lv, h);
            float *oh = out + head_off(Lo, h);
            for (int i0 = 0; i0 < T; i0 += AG_ATTN_BLOCK) {
                int i1 = imin(i0 + AG_ATTN_BLOCK, T), m = i1 - i0;
                float *ob = oh + (size_t)i0 * lo; /* [m, D] */
                if (direct) { /* out[i] = sum_{j <= i} P[i, j] v[j], P read in place */
                    ag_attn_nn(D, m, i1, i0, Ph + (size_t)i0 * T, T, vh, lv, false, ob, lo);
                    continue;
                }
                if (i0 > 0) /* out[i0:i1] = P[i0:i1, 0:i0] v[0:i0] */
                    ag_sgemm_whole(false, false, m, D, i0, 1.0f, Ph + (size_t)i0 * T, T, vh, lv, 0.0f, ob, lo);
                lower_block(L, Ph, T, i0, m); /* out[i0:i1] += tril(P[i0:i1, i0:i1]) v[i0:i1] */
                ag_sgemm_whole(false, false, m, D, m, 1.0f, L, m, vh + (size_t)i0 * lv, lv,
                         i0 > 0 ? 1.0f : 0.0f, ob, lo);
            }
        }
        ag_region_join(&join);
    }
}

void ag_attn_apply_fwd(float *out, const float *P, const float *v, int BH, int T, int D) {
    head_layout L = contiguous(T, D);
    apply_fwd(out, P, v, &L, &L, BH, T, D);
}

/* v, dv in layout Lv, dout in layout Lo. */
static void apply_bwd(float *dP, float *dv, const float *dout, const float *P, const float *v,
                      const head_layout *Lv, const head_layout *Lo, int BH, int T, int D) {
    int lv = Lv->ld, lo = Lo->ld;
    bool direct = ag_attn_direct(D);
    ag_join join = {0};
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int h = 0; h < BH; h++) {
            float L[AG_ATTN_BLOCK * AG_ATTN_BLOCK]; /* masked diagonal block of P, then of dP */
            const float *Ph = P + (size_t)h * T * T, *vh = v + head_off(Lv, h);
            const float *gh = dout + head_off(Lo, h);
            for (int i0 = 0; i0 < T; i0 += AG_ATTN_BLOCK) {
                int i1 = imin(i0 + AG_ATTN_BLOCK, T), m = i1 - i0;
                const float *gb = gh + (size_t)i0 * lo; /* dout[i0:i1]  [m, D] */
                if (dP && direct) { /* dP[i, j] += dout[i] . v[j] for j <= i */
                    ag_attn_nt(D, m, i1, i0, 1.0f, gb, lo, vh, lv, true, dP + (size_t)h * T * T + (size_t)i0 * T, T);
                } else if (dP) {
                    float *dPb = dP + (size_t)h * T * T + (size_t)i0 * T; /* rows i0:i1 of dP */
                    if (i0 > 0) /* dP[i0:i1, 0:i0] += dout[i0:i1] v[0:i0]^T */
                        ag_sgemm_whole(false, true, m, i0, D, 1.0f, gb, lo, vh, lv, 1.0f, dPb, T);
                    /* diagonal block: lower triangle of dout[i0:i1] v[i0:i1]^T */
                    ag_sgemm_whole(false, true, m, m, D, 1.0f, gb, lo, vh + (size_t)i0 * lv, lv, 0.0f, L, m);
                    for (int r = 0; r < m; r++) {
                        float *dst = dPb + (size_t)r * T + i0; /* [r + 1] */
                        const float *src = L + (size_t)r * m;  /* [r + 1] */
#pragma omp simd
                        for (int cidx = 0; cidx <= r; cidx++) dst[cidx] += src[cidx];
                    }
                }
                if (dv && direct) { /* dv[j] += sum_{i >= j} P[i, j] dout[i], P read in place */
                    ag_attn_tn(D, i1, m, i0, Ph + (size_t)i0 * T, T, gb, lo, dv + head_off(Lv, h), lv);
                } else if (dv) {
                    float *dvh = dv + head_off(Lv, h);
                    if (i0 > 0) /* dv[0:i0] += P[i0:i1, 0:i0]^T dout[i0:i1] */
                        ag_sgemm_whole(true, false, i0, D, m, 1.0f, Ph + (size_t)i0 * T, T, gb, lo, 1.0f,
                                 dvh, lv);
                    lower_block(L, Ph, T, i0, m); /* dv[i0:i1] += tril(P_block)^T dout[i0:i1] */
                    ag_sgemm_whole(true, false, m, D, m, 1.0f, L, m, gb, lo, 1.0f, dvh + (size_t)i0 * lv, lv);
                }
            }
        }
        ag_region_join(&join);
    }
}

void ag_attn_apply_bwd(float *dP, float *dv, const float *dout, const float *P, const float *v,
                       int BH, int T, int D) {
    head_layout L = contiguous(T, D);
    apply_bwd(dP, dv, dout, P, v, &L, &L, BH, T, D);
}

/* ====================================================== naive references */

void ag_attn_probs_fwd_ref(float *P, const float *q, const float *k, int BH, int T, int D,
                           float scale) {
    for (int h = 0; h < BH; h++) {
        const float *qh = q + (size_t)h * T * D, *kh = k + (size_t)h * T * D;
        for (int i = 0; i < T; i++) {
            float *row = P + ((size_t)h * T + i) * T; /* [T] */
            double mx = -INFINITY, sum = 0.0;
            for (int j = 0; j <= i; j++) {
                double s = 0.0;
                for (int d = 0; d < D; d++) s += (double)qh[i * D + d] * kh[j * D + d];
                s *= scale;
                mx = s > mx ? s : mx;
            }
            for (int j = 0; j <= i; j++) {
                double s = 0.0;
                for (int d = 0; d < D; d++) s += (double)qh[i * D + d] * kh[j * D + d];
                sum += exp(s * scale - mx);
            }
            for (int j = 0; j < T; j++) {
                double s = 0.0;
                for (int d = 0; d < D && j <= i; d++) s += (double)qh[i * D + d] * kh[j * D + d];
                row[j] = j <= i ? (float)(exp(s * scale - mx) / sum) : 0.0f;
            }
        }
    }
}

int ag_attn_probs_bwd_ref(float *dq, float *dk, const float *dP, const float *P, const float *q,
                          const float *k, int BH, int T, int D, float scale) {
    double *dot = malloc((size_t)T * sizeof *dot); /* [T] sum_k P_ik dP_ik per row */
    if (!dot) return -1;
    for (int h = 0; h < BH; h++) {
        const float *Ph = P + (size_t)h * T * T, *dPh = dP + (size_t)h * T * T;
        size_t o = (size_t)h * T * D;
        for (int i = 0; i < T; i++) {
            dot[i] = 0.0;
            for (int j = 0; j <= i; j++) dot[i] += (double)Ph[i * T + j] * dPh[i * T + j];
        }
        for (int i = 0; i < T && dq; i++)
            for (int d = 0; d < D; d++) {
                double acc = 0.0; /* sum_j dS_ij k_jd */
                for (int j = 0; j <= i; j++)
                    acc += (double)Ph[i * T + j] * (dPh[i * T + j] - dot[i]) * k[o + j * D + d];
                dq[o + i * D + d] += (float)(acc * scale);
            }
        for (int j = 0; j < T && dk; j++)
            for (int d = 0; d < D; d++) {
                double acc = 0.0; /* sum_i dS_ij q_id */
                for (int i = j; i < T; i++)
                    acc += (double)Ph[i * T + j] * (dPh[i * T + j] - dot[i]) * q[o + i * D + d];
                dk[o + j * D + d] += (float)(acc * scale);
            }
    }
    free(dot);
    return 0;
}

void ag_attn_apply_fwd_ref(float *out, const float *P, const float *v, int BH, int T, int D) {
    for (int h = 0; h < BH; h++) {
        const float *Ph = P + (size_t)h * T * T;
        size_t o = (size_t)h * T * D;
        for (int i = 0; i < T; i++)
            for (int d = 0; d < D; d++) {
                double acc = 0.0;
                for (int j = 0; j <= i; j++) acc += (double)Ph[i * T + j] * v[o + j * D + d];
                out[o + i * D + d] = (float)acc;
            }
    }
}

void ag_attn_apply_bwd_ref(float *dP, float *dv, const float *dout, const float *P,
                           const float *v, int BH, int T, int D) {
    for (int h = 0; h < BH; h++) {
        const float *Ph = P + (size_t)h * T * T;
        size_t o = (size_t)h * T * D;
        for (int i = 0; i < T && dP; i++)
            for (int j = 0; j <= i; j++) {
                double acc = 0.0;
                for (int d = 0; d < D; d++) acc += (double)dout[o + i * D + d] * v[o + j * D + d];
                dP[(size_t)h * T * T + i * T + j] += (float)acc;
            }
        for (int j = 0; j < T && dv; j++)
            for (int d = 0; d < D; d++) {
                double acc = 0.0;
                for (int i = j; i < T; i++) acc += (double)Ph[i * T + j] * dout[o + i * D + d];
                dv[o + j * D + d] += (float)acc;
            }
    }
}

/* ============================================================== the ops */

/* ------------------------------------------------------------ split_heads
 * out[b, h, t, d] = x[b, t, part*C + h*D + d]        x: [B, T, nparts*C]
 * dx[b, t, part*C + h*D + d] += dout[b, h, t, d]      out: [B, H, T, D] */

static void split_heads_backward(ag_node *n) {
    ag_tensor *x = n->in[0], *out = n->out;
    if (!x->grad) return;
    int H = n->iarg[0], part = n->iarg[1], nparts = n->iarg[2];
    int B = x->shape[0], T = x->shape[1], W = x->shape[2], C = W / nparts, D = C / H;
#pragma omp parallel for schedule(static) if (x->numel > PAR_COPY_MIN)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) {
            float *dx = x->grad + ((size_t)b * T + t) * W + (size_t)part * C + (size_t)h * D; /* [D] */
            const float *g = out->grad + ((size_t)bh * T + t) * D;                           /* [D] */
#pragma omp simd
            for (int d = 0; d < D; d++) dx[d] += g[d];
        }
    }
}

ag_tensor *ag_split_heads(ag_ctx *c, ag_tensor *x, int n_head, int part, int nparts) {
    if (!x) return NULL;
    assert(x->ndim == 3 && nparts >= 1 && part >= 0 && part < nparts && n_head >= 1);
    int B = x->shape[0], T = x->shape[1], W = x->shape[2];
    assert(W % nparts == 0 && (W / nparts) % n_head == 0);
    int C = W / nparts, H = n_head, D = C / H;
    ag_tensor *out = ag_new(c, 4, (int[]){B, H, T, D}, "split_heads");
    if (!out) return NULL;
#pragma omp parallel for schedule(static) if (x->numel > PAR_COPY_MIN)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) { /* a loop, not memcpy: D is small, a call per row costs more */
            float *dst = out->data + ((size_t)bh * T + t) * D;                                 /* [D] */
            const float *src = x->data + ((size_t)b * T + t) * W + (size_t)part * C + (size_t)h * D; /* [D] */
#pragma omp simd
            for (int d = 0; d < D; d++) dst[d] = src[d];
        }
    }
    ag_node *n = ag_record(c, "split_heads", split_heads_backward, out, x, NULL, NULL);
    if (n) {
        n->iarg[0] = H;
        n->iarg[1] = part;
        n->iarg[2] = nparts;
    } else if (ag_error(c)) {
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------ merge_heads
 * out[b, t, h*D + d] = y[b, h, t, d]                  y: [B, H, T, D]
 * dy[b, h, t, d] += dout[b, t, h*D + d]                out: [B, T, H*D] */

static void merge_heads_backward(ag_node *n) {
    ag_tensor *y = n->in[0], *out = n->out;
    if (!y->grad) return;
    int B = y->shape[0], H = y->shape[1], T = y->shape[2], D = y->shape[3], C = H * D;
#pragma omp parallel for schedule(static) if (y->numel > PAR_COPY_MIN)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) {
            float *dy = y->grad + ((size_t)bh * T + t) * D;                               /* [D] */
            const float *g = out->grad + ((size_t)b * T + t) * C + (size_t)h * D;         /* [D] */
#pragma omp simd
            for (int d = 0; d < D; d++) dy[d] += g[d];
        }
    }
}

ag_tensor *ag_merge_heads(ag_ctx *c, ag_tensor *y) {
    if (!y) return NULL;
    assert(y->ndim == 4);
    int B = y->shape[0], H = y->shape[1], T = y->shape[2], D = y->shape[3], C = H * D;
    ag_tensor *out = ag_new(c, 3, (int[]){B, T, C}, "merge_heads");
    if (!out) return NULL;
#pragma omp parallel for schedule(static) if (y->numel > PAR_COPY_MIN)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) { /* a loop, not memcpy: D is small */
            float *dst = out->data + ((size_t)b * T + t) * C + (size_t)h * D; /* [D] */
            const float *src = y->data + ((size_t)bh * T + t) * D;           /* [D] */
#pragma omp simd
            for (int d = 0; d < D; d++) dst[d] = src[d];
        }
    }
    if (!ag_record(c, "merge_heads", merge_heads_backward, out, y, NULL, NULL) && ag_error(c))
        return NULL;
    return out;
}

/* ------------------------------------------------------------- attn_probs
 * P[B, H, T, T] = causal softmax(q k^T / sqrt(D)),  q, k: [B, H, T, D]
 * dq += dS k / sqrt(D), dk += dS^T q / sqrt(D), dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik)
 * saved: per-thread scratch for dS blocks; iarg[0] = its thread count. */

/* What both probs ops keep for their backward, in node n (NULL: nothing is
 * recorded, grad mode off): a softmax-backward scratch row block per thread
 * (iarg[0] = the thread count it was sized for) and the scale (farg[0]).
 * false when the context holds an error (n could not be recorded, or the
 * scratch could not be allocated). */
static bool save_probs_scratch(ag_ctx *c, ag_node *n, int T, float scale) {
    if (!n) return !ag_error(c);
    int nthreads = omp_get_max_threads();
    n->saved = ag_alloc(c, (size_t)nthreads * ag_attn_scratch_floats(T) * sizeof(float));
    if (!n->saved) return false;
    n->iarg[0] = nthreads;
    n->farg[0] = scale;
    return true;
}

static void attn_probs_backward(ag_node *n) {
    ag_tensor *q = n->in[0], *k = n->in[1], *P = n->out;
    int BH = q->shape[0] * q->shape[1], T = q->shape[2], D = q->shape[3];
    ag_attn_probs_bwd(q->grad, k->grad, P->grad, P->data, q->data, k->data, BH, T, D, n->farg[0],
                      n->saved, n->iarg[0]);
}

ag_tensor *ag_attn_probs(ag_ctx *c, ag_tensor *q, ag_tensor *k) {
    if (!q || !k) return NULL;
    assert(q->ndim == 4 && ag_same_shape(q, k));
    int B = q->shape[0], H = q->shape[1], T = q->shape[2], D = q->shape[3];
    float scale = 1.0f / sqrtf((float)D);
    ag_tensor *P = ag_new(c, 4, (int[]){B, H, T, T}, "attn_probs");
    if (!P) return NULL;
    ag_attn_probs_fwd(P->data, q->data, k->data, B * H, T, D, scale);
    ag_node *n = ag_record(c, "attn_probs", attn_probs_backward, P, q, k, NULL);
    return save_probs_scratch(c, n, T, scale) ? P : NULL;
}

/* ------------------------------------------------------------- attn_apply
 * out[B, H, T, D] = P[B, H, T, T] v[B, H, T, D]   (P's upper triangle taken as 0)
 * dP += dout v^T (lower triangle),  dv += P^T dout */

static void attn_apply_backward(ag_node *n) {
    ag_tensor *P = n->in[0], *v = n->in[1], *out = n->out;
    int BH = v->shape[0] * v->shape[1], T = v->shape[2], D = v->shape[3];
    ag_attn_apply_bwd(P->grad, v->grad, out->grad, P->data, v->data, BH, T, D);
}

ag_tensor *ag_attn_apply(ag_ctx *c, ag_tensor *P, ag_tensor *v) {
    if (!P || !v) return NULL;
    assert(P->ndim == 4 && v->ndim == 4);
    int B = v->shape[0], H = v->shape[1], T = v->shape[2], D = v->shape[3];
    assert(P->shape[0] == B && P->shape[1] == H && P->shape[2] == T && P->shape[3] == T);
    ag_tensor *out = ag_new(c, 4, v->shape, "attn_apply");
    if (!out) return NULL;
    ag_attn_apply_fwd(out->data, P->data, v->data, B * H, T, D);
    if (!ag_record(c, "attn_apply", attn_apply_backward, out, P, v, NULL) && ag_error(c))
        return NULL;
    return out;
}

/* ------------------------------------------------- attn_probs_qkv
 * The same P as attn_probs on split_heads(qkv, H, 0/1, 3), read straight from
 * the fused qkv [B, T, 3C] (q at columns [0, C), k at [C, 2C)); the backward
 * adds dq and dk into those columns of qkv's gradient.
 * iarg[0] = scratch thread count, iarg[1] = H. */

static head_layout qkv_layout(int H, int T, int C) {
    return (head_layout){H, (size_t)T * 3 * C, (size_t)(C / H), 3 * C};
}

static void attn_probs_qkv_backward(ag_node *n) {
    ag_tensor *x = n->in[0], *P = n->out;
    if (!x->grad) return;
    int H = n->iarg[1], B = x->shape[0], T = x->shape[1], C = x->shape[2] / 3, D = C / H;
    head_layout L = qkv_layout(H, T, C);
    probs_bwd(x->grad, x->grad + C, P->grad, P->data, x->data, x->data + C, &L, B * H, T, D,
              n->farg[0], n->saved, n->iarg[0]);
}

ag_tensor *ag_attn_probs_qkv(ag_ctx *c, ag_tensor *qkv, int n_head) {
    if (!qkv) return NULL;
    assert(qkv->ndim == 3 && n_head >= 1 && qkv->shape[2] % (3 * n_head) == 0);
    int B = qkv->shape[0], T = qkv->shape[1], C = qkv->shape[2] / 3, H = n_head, D = C / H;
    float scale = 1.0f / sqrtf((float)D);
    ag_tensor *P = ag_new(c, 4, (int[]){B, H, T, T}, "attn_probs_qkv");
    if (!P) return NULL;
    head_layout L = qkv_layout(H, T, C);
    probs_fwd(P->data, qkv->data, qkv->data + C, &L, B * H, T, D, scale);
    ag_node *n = ag_record(c, "attn_probs_qkv", attn_probs_qkv_backward, P, qkv, NULL, NULL);
    if (!save_probs_scratch(c, n, T, scale)) return NULL;
    if (n) n->iarg[1] = H;
    return P;
}

/* ---------------------------------------------- attn_apply_merge
 * out[b, t, h*D + d] = (P v)[b, h, t, d] with v read from columns [2C, 3C) of
 * qkv [B, T, 3C]: merge_heads(attn_apply(P, split_heads(qkv, H, 2, 3))).
 * dP += dout v^T (lower triangle), dqkv[.., 2C:3C] += P^T dout. */

static void attn_apply_merge_backward(ag_node *n) {
    ag_tensor *P = n->in[0], *x = n->in[1], *out = n->out;
    int H = P->shape[1], B = x->shape[0], T = x->shape[1], C = x->shape[2] / 3, D = C / H;
    head_layout Lv = qkv_layout(H, T, C), Lo = {H, (size_t)T * C, (size_t)D, C};
    apply_bwd(P->grad, x->grad ? x->grad + 2 * C : NULL, out->grad, P->data, x->data + 2 * C, &Lv,
              &Lo, B * H, T, D);
}

ag_tensor *ag_attn_apply_merge(ag_ctx *c, ag_tensor *P, ag_tensor *qkv) {
    if (!P || !qkv) return NULL;
    assert(P->ndim == 4 && qkv->ndim == 3);
    int B = qkv->shape[0], T = qkv->shape[1], H = P->shape[1];
    assert(H >= 1 && qkv->shape[2] % (3 * H) == 0);
    int C = qkv->shape[2] / 3, D = C / H;
    assert(P->shape[0] == B && P->shape[2] == T && P->shape[3] == T);
    ag_tensor *out = ag_new(c, 3, (int[]){B, T, C}, "attn_apply_merge");
    if (!out) return NULL;
    head_layout Lv = qkv_layout(H, T, C), Lo = {H, (size_t)T * C, (size_t)D, C};
    apply_fwd(out->data, P->data, qkv->data + 2 * C, &Lv, &Lo, B * H, T, D);
    if (!ag_record(c, "attn_apply_merge", attn_apply_merge_backward, out, P, qkv, NULL) &&
        ag_error(c))
        return NULL;
    return out;
}

/* ------------------------------------------------------ attention_qkv
 * out[b, t, h*D + d] = (P v)[b, h, t, d], P = causal softmax(q k^T / sqrt(D)),
 * q, k, v read from qkv [B, T, 3C]: attn_apply_merge(attn_probs_qkv(qkv, H),
 * qkv) without P's gradient tensor. Backward per head (same kernels, blocks
 * and order as the two ops, so the same bits):
 *   dP = dout v^T (lower triangle), dv += P^T dout      (as apply_merge)
 *   dS_ij = scale P_ij (dP_ij - sum_k P_ik dP_ik)        (in place over dP)
 *   dq += dS k, dk += dS^T q                             (as probs_qkv)
 * saved: P [B*H, T, T], per-thread dP scratch [nthreads, T, T]. */

typedef struct {
    float *P, *scratch; /* [B*H, T, T], [nthreads, T, T] */
    int nthreads, H;
    float scale;
} attqkv_saved;

static void attention_qkv_backward(ag_node *n) {
    ag_tensor *x = n->in[0], *out = n->out;
    if (!x->grad) return;
    const attqkv_saved *s = n->saved;
    int H = s->H, B = x->shape[0], T = x->shape[1], C = x->shape[2] / 3, D = C / H, BH = B * H;
    head_layout L = qkv_layout(H, T, C), Lo = {H, (size_t)T * C, (size_t)D, C};
    int ld = L.ld, lo = Lo.ld;
    float scale = s->scale;
    ag_join join = {0};
#pragma omp parallel num_threads(s->nthreads)
    {
#pragma omp for schedule(static) nowait
        for (int h = 0; h < BH; h++) {
            float *dP = s->scratch + (size_t)omp_get_thread_num() * T * T; /* [T, T], j <= i used */
            size_t o = head_off(&L, h);
            const float *Ph = s->P + (size_t)h * T * T, *gh = out->grad + head_off(&Lo, h);
            const float *qh = x->data + o, *kh = qh + C, *vh = qh + 2 * C;
            float *dq = x->grad + o, *dk = dq + C, *dv = dq + 2 * C;
            for (int i0 = 0; i0 < T; i0 += AG_ATTN_BLOCK) {
                int i1 = imin(i0 + AG_ATTN_BLOCK, T), m = i1 - i0;
                const float *gb = gh + (size_t)i0 * lo; /* dout[i0:i1] */
                ag_attn_nt(D, m, i1, i0, 1.0f, gb, lo, vh, ld, false, dP + (size_t)i0 * T, T);
                ag_attn_tn(D, i1, m, i0, Ph + (size_t)i0 * T, T, gb, lo, dv, ld);
            }
            for (int i0 = 0; i0 < T; i0 += AG_ATTN_BLOCK) {
                int i1 = imin(i0 + AG_ATTN_BLOCK, T), m = i1 - i0;
                for (int i = i0; i < i1; i++) {
                    const float *p = Ph + (size_t)i * T; /* [T] */
                    float *ds = dP + (size_t)i * T;      /* [T]: dP row in, dS row out */
                    float dot = dot_lanes(p, ds, i + 1);
#pragma omp simd
                    for (int j = 0; j <= i; j++) ds[j] = scale * p[j] * (ds[j] - dot);
                }
                ag_attn_nn(D, m, i1, i0, dP + (size_t)i0 * T, T, kh, ld, true, dq + (size_t)i0 * ld, ld);
                ag_attn_tn(D, i1, m, i0, dP + (size_t)i0 * T, T, qh + (size_t)i0 * ld, ld, dk, ld);
            }
        }
        ag_region_join(&join);
    }
}

ag_tensor *ag_attention_qkv(ag_ctx *c, ag_tensor *qkv, int n_head) {
    if (!qkv) return NULL;
    assert(qkv->ndim == 3 && n_head >= 1 && qkv->shape[2] % (3 * n_head) == 0);
    int B = qkv->shape[0], T = qkv->shape[1], C = qkv->shape[2] / 3, H = n_head, D = C / H, BH = B * H;
    if (!ag_attn_direct(D)) return ag_attn_apply_merge(c, ag_attn_probs_qkv(c, qkv, H), qkv);
    float scale = 1.0f / sqrtf((float)D);
    ag_tensor *out = ag_new(c, 3, (int[]){B, T, C}, "attention_qkv");
    float *P = ag_alloc(c, (size_t)BH * T * T * sizeof(float)); /* [BH, T, T] */
    if (!out || !P) return NULL;
    head_layout L = qkv_layout(H, T, C), Lo = {H, (size_t)T * C, (size_t)D, C};
    int ld = L.ld, lo = Lo.ld;
    ag_join join = {0};
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int h = 0; h < BH; h++) { /* probs_fwd then apply_fwd of one head (direct path) */
            const float *qh = qkv->data + head_off(&L, h), *kh = qh + C, *vh = qh + 2 * C;
            float *Ph = P + (size_t)h * T * T, *oh = out->data + head_off(&Lo, h);
            for (int i0 = 0; i0 < T; i0 += AG_ATTN_BLOCK) {
                int i1 = imin(i0 + AG_ATTN_BLOCK, T), m = i1 - i0;
                ag_attn_nt(D, m, i1, i0, scale, qh + (size_t)i0 * ld, ld, kh, ld, false, Ph + (size_t)i0 * T, T);
                for (int i = i0; i < i1; i++) causal_softmax_row(Ph + (size_t)i * T, i + 1, T);
            }
            for (int i0 = 0; i0 < T; i0 += AG_ATTN_BLOCK) {
                int i1 = imin(i0 + AG_ATTN_BLOCK, T), m = i1 - i0;
                ag_attn_nn(D, m, i1, i0, Ph + (size_t)i0 * T, T, vh, ld, false, oh + (size_t)i0 * lo, lo);
            }
        }
        ag_region_join(&join);
    }
    ag_node *n = ag_record(c, "attention_qkv", attention_qkv_backward, out, qkv, NULL, NULL);
    if (n) {
        attqkv_saved *s = ag_alloc(c, sizeof *s);
        int nthreads = omp_get_max_threads();
        float *scratch = ag_alloc(c, (size_t)nthreads * T * T * sizeof(float));
        if (!s || !scratch) return NULL;
        *s = (attqkv_saved){P, scratch, nthreads, H, scale};
        n->saved = s;
    } else if (ag_error(c)) {
        return NULL;
    }
    return out;
}

/* -------------------------------------------------------------- attention */

ag_tensor *ag_attention(ag_ctx *c, ag_tensor *q, ag_tensor *k, ag_tensor *v, ag_tensor **probs) {
    ag_tensor *P = ag_attn_probs(c, q, k);
    if (probs) *probs = P;
    return ag_attn_apply(c, P, v);
}
