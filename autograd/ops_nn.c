/* ops_nn.c - embedding, layer norm and softmax, forward beside backward.
 *
 * All three work row by row over the last dimension and run their rows in
 * parallel (each row by one thread). Row sums (mean, variance, softmax
 * normaliser, the backward's dot products) are accumulated in double: it
 * costs little next to the exp and the memory traffic, and keeps rows of
 * 1536 values accurate to float precision. Sums over rows into a parameter
 * gradient go column block by column block, rows in order, so the result is
 * the same for any thread count.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "ops.h"
#include "ops_internal.h"
#include "parallel.h"
#include "vecmath.h"

/* --------------------------------------------------------------- embedding
 * out[i, :] = table[ids[i], :]          (i over the N = prod(shape) positions)
 * dtable[ids[i], :] += dout[i, :]       (rows in order i = 0..N, per column block) */

static void embedding_backward(ag_node *n) {
    ag_tensor *table = n->in[0], *out = n->out;
    const int *ids = n->saved; /* [N] */
    size_t N = ag_rows(out), C = (size_t)ag_cols(table);
    const float *g = out->grad; /* [N, C] */
    float *dt = table->grad;    /* [V, C] */
    long nblk = (long)((C + AG_COL_BLOCK - 1) / AG_COL_BLOCK);
    ag_join join = {0};
#pragma omp parallel if (N * C >= AG_PAR_MIN && nblk > 1)
    {
#pragma omp for schedule(static) nowait
        for (long blk = 0; blk < nblk; blk++) {
            size_t j0 = (size_t)blk * AG_COL_BLOCK;
            size_t j1 = j0 + AG_COL_BLOCK < C ? j0 + AG_COL_BLOCK : C;
            for (size_t i = 0; i < N; i++) {
                const float *gi = g + i * C;
                float *dr = dt + (size_t)ids[i] * C;
                for (size_t j = j0; j < j1; j++) dr[j] += gi[j];
            }
        }
        ag_region_join(&join);
    }
}

ag_tensor *ag_embedding(ag_ctx *c, ag_tensor *table, const int *ids, int ndim, const int *shape) {
    if (!table || !ids) return NULL;
    assert(table->ndim == 2 && ndim >= 1 && ndim < AG_MAX_DIMS);
    int V = table->shape[0], C = table->shape[1];
    int oshape[AG_MAX_DIMS];
    size_t N = 1;
    for (int i = 0; i < ndim; i++) {
        oshape[i] = shape[i];
        N *= (size_t)shape[i];
    }
    oshape[ndim] = C;
    for (size_t i = 0; i < N; i++)
        if (ids[i] < 0 || ids[i] >= V) {
            ag_fail(c, "embedding %s: token id %d at position %zu is outside [0, %d)",
                    table->name ? table->name : "?", ids[i], i, V);
            return NULL;
        }
    ag_tensor *out = ag_new(c, ndim + 1, oshape, "embedding");
    if (!out) return NULL;
    const float *W = table->data; /* [V, C] */
    float *O = out->data;         /* [N, C] */
    long nn = (long)N;
    ag_join join = {0};
#pragma omp parallel if (N * (size_t)C >= AG_PAR_MIN)
    {
#pragma omp for schedule(static) nowait
        for (long i = 0; i < nn; i++)
            memcpy(O + (size_t)i * C, W + (size_t)ids[i] * C, (size_t)C * sizeof(float));
        ag_region_join(&join);
    }
    ag_node *n = ag_record(c, "embedding", embedding_backward, out, table, NULL, NULL);
    if (n) {
        int *saved = ag_alloc(c, N * sizeof(int));
        if (!saved) return NULL;
        memcpy(saved, ids, N * sizeof(int));
        n->saved = saved;
    } else if (ag_error(c)) {
        return NULL;
    }
    return out;
}

/* --------------------------------------------------------------- layernorm
 * Layer normalisation (Ba, Kiros and Hinton 2016), per row of C values:
 *   mu = mean(x),  var = mean((x - mu)^2),  r = 1 / sqrt(var + eps)
 *   xh = (x - mu) r,  y = xh w + b
 * Backward with g = dy w (per element):
 *   dx = r (g - mean(g) - xh mean(g xh))
 *   dw += sum_rows dy xh,  db += sum_rows dy
 * The forward saves mu and r per row; xh is recomputed from them. */

typedef struct {
    float *mean, *rstd; /* [N], [N] */
} ln_saved;

/* Sums over a row in double, in 8 lanes (lane l takes j = l mod 8), the lanes
 * added pairwise, then the tail in index order: an order fixed by this code,
 * so the clones of the kernels below vectorise it with the same bits. */
#define LN_LANES 8

static inline double lanes_total(const double *lane) {
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* One row forward: y[C] = (x - mu) r w + b (b may be NULL); returns mu and r. */
AG_SIMD_CLONES static void ln_row_fwd(float *y, const float *x, const float *w, const float *b, int C, float eps,
                                      float *mean, float *rstd) {
    double lane[LN_LANES] = {0};
    int j = 0;
    for (; j + LN_LANES <= C; j += LN_LANES)
        for (int l = 0; l < LN_LANES; l++) lane[l] += x[j + l];
    double sum = lanes_total(lane);
    for (; j < C; j++) sum += x[j];
    double mu = sum / C;
    double vl[LN_LANES] = {0};
    for (j = 0; j + LN_LANES <= C; j += LN_LANES)
        for (int l = 0; l < LN_LANES; l++) {
            double d = x[j + l] - mu;
            vl[l] += d * d;
        }
    double var = lanes_total(vl);
    for (; j < C; j++) var += (x[j] - mu) * (x[j] - mu);
    float m = (float)mu;
    float rs = (float)(1.0 / sqrt(var / C + (double)eps));
    *mean = m;
    *rstd = rs;
    if (b) {
#pragma omp simd
        for (int i = 0; i < C; i++) y[i] = (x[i] - m) * rs * w[i] + b[i];
    } else {
#pragma omp simd
        for (int i = 0; i < C; i++) y[i] = (x[i] - m) * rs * w[i];
    }
}

/* One row backward: dx[C] += r (g w - mean(g w) - xh mean(g w xh)). */
AG_SIMD_CLONES static void ln_row_bwd(float *dx, const float *x, const float *g, const float *w, int C, float mu,
                                      float rs) {
    double sl[LN_LANES] = {0}, xl[LN_LANES] = {0};
    int j = 0;
    for (; j + LN_LANES <= C; j += LN_LANES)
        for (int l = 0; l < LN_LANES; l++) {
            float gw = g[j + l] * w[j + l];
            sl[l] += gw;
            xl[l] += (double)gw * ((x[j + l] - mu) * rs);
        }
    double sg = lanes_total(sl), sgx = lanes_total(xl);
    for (; j < C; j++) {
        float gw = g[j] * w[j];
        sg += gw;
        sgx += (double)gw * ((x[j] - mu) * rs);
    }
    float mg = (float)(sg / C), mgx = (float)(sgx / C);
#pragma omp simd
    for (int i = 0; i < C; i++) {
        float xh = (x[i] - mu) * rs;
        dx[i] += rs * (g[i] * w[i] - mg - xh * mgx);
    }
}

/* Columns [j0, j1) of dw and db over all N rows, rows in order: aw[j - j0] +=
 * g xh, ab[j - j0] += g. Each column is its own sum, so vectorising across
 * columns changes nothing. */
AG_SIMD_CLONES static void ln_cols_bwd(double *aw, double *ab, const float *X, const float *G, const float *mean,
                                       const float *rstd, size_t N, int C, int j0, int j1) {
    for (size_t r = 0; r < N; r++) {
        const float *xr = X + r * C, *gr = G + r * C;
        float mu = mean[r], rs = rstd[r];
#pragma omp simd
        for (int j = j0; j < j1; j++) {
            aw[j - j0] += (double)gr[j] * ((xr[j] - mu) * rs);
            ab[j - j0] += gr[j];
        }
    }
}

static void layernorm_backward(ag_node *n) {
    ag_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *out = n->out;
    const ln_saved *s = n->saved;
    size_t N = ag_rows(x);
    int C = ag_cols(x);
    const float *X = x->data, *W = w->data, *G = out->grad; /* [N, C], [C], [N, C] */
    bool cols = w->grad || (b && b->grad);
    /* the input gradient's rows and the weight/bias gradients' column blocks
     * write different buffers: one parallel region, no barrier between them */
    bool alias = x->grad && cols && (ag_overlaps(x->grad, x->numel, w->grad, C) ||
                                     (b && ag_overlaps(x->grad, x->numel, b->grad, C)));
    long nn = (long)N, nblk = (C + AG_COL_BLOCK - 1) / AG_COL_BLOCK;
    ag_join join = {0};
#pragma omp parallel if (N * (size_t)C >= AG_PAR_MIN)
    {
        if (x->grad) {
            float *dX = x->grad; /* [N, C] */
#pragma omp for schedule(static) nowait
            for (long r = 0; r < nn; r++)
                ln_row_bwd(dX + (size_t)r * C, X + (size_t)r * C, G + (size_t)r * C, W, C, s->mean[r], s->rstd[r]);
        }
        if (alias) {
#pragma omp barrier
        }
        if (cols) {
            /* column blocks in parallel, rows in order: deterministic */
#pragma omp for schedule(static) nowait
            for (long blk = 0; blk < nblk; blk++) {
                int j0 = (int)blk * AG_COL_BLOCK, j1 = j0 + AG_COL_BLOCK < C ? j0 + AG_COL_BLOCK : C;
                double aw[AG_COL_BLOCK] = {0}, ab[AG_COL_BLOCK] = {0};
                ln_cols_bwd(aw, ab, X, G, s->mean, s->rstd, N, C, j0, j1);
                for (int j = j0; j < j1; j++) {
                    if (w->grad) w->grad[j] += (float)aw[j - j0];
                    if (b && b->grad) b->grad[j] += (float)ab[j - j0];
                }
            }
        }
        ag_region_join(&join);
    }
}

ag_tensor *ag_layernorm(ag_ctx *c, ag_tensor *x, ag_tensor *w, ag_tensor *b, float eps) {
    if (!x || !w) return NULL;
    int C = ag_cols(x);
    assert((int)w->numel == C && (!b || (int)b->numel == C));
    size_t N = ag_rows(x);
    ag_tensor *out = ag_new(c, x->ndim, x->shape, "layernorm");
    if (!out) return NULL;
    ag_node *n = ag_record(c, "layernorm", layernorm_backward, out, x, w, b);
    ln_saved *s = NULL;
    if (n) {
        s = ag_alloc(c, sizeof *s);
        float *buf = ag_alloc(c, 2 * N * sizeof(float));
        if (!s || !buf) return NULL;
        s->mean = buf;
        s->rstd = buf + N;
        n->saved = s;
    } else if (ag_error(c)) {
        return NULL;
    }
    const float *X = x->data, *W = w->data, *Bv = b ? b->data : NULL; /* [N, C], [C], [C] */
    float *Y = out->data;                                           /* [N, C] */
    long nn = (long)N;
    ag_join join = {0};
#pragma omp parallel if (N * (size_t)C >= AG_PAR_MIN)
    {
#pragma omp for schedule(static) nowait
        for (long r = 0; r < nn; r++) {
            float m, rs;
            ln_row_fwd(Y + (size_t)r * C, X + (size_t)r * C, W, Bv, C, eps, &m, &rs);
            if (s) {
                s->mean[r] = m;
                s->rstd[r] = rs;
            }
        }
        ag_region_join(&join);
    }
    return out;
}

/* ----------------------------------------------------------------- softmax
 * y = exp(x - max) / sum(exp(x - max)) per row (the max makes it overflow-free)
 * dx = y (dy - sum(dy y))            (O(C) per row, no C x C Jacobian) */

static void softmax_backward(ag_node *n) {
    ag_tensor *x = n->in[0], *out = n->out;
    size_t N = ag_rows(x);
    int C = ag_cols(x);
    const float *Y = out->data, *G = out->grad; /* [N, C] */
    float *dX = x->grad;                        /* [N, C] */
    long nn = (long)N;
#pragma omp parallel for schedule(static) if (N * (size_t)C >= AG_PAR_MIN)
    for (long r = 0; r < nn; r++) {
        const float *yr = Y + (size_t)r * C, *gr = G + (size_t)r * C;
        float *dxr = dX + (size_t)r * C;
        double dot = 0.0;
        for (int j = 0; j < C; j++) dot += (double)gr[j] * yr[j];
        float d = (float)dot;
        for (int j = 0; j < C; j++) dxr[j] += yr[j] * (gr[j] - d);
    }
}

void ag_softmax_rows(float *y, const float *x, size_t N, int C) {
    long nn = (long)N;
#pragma omp parallel for schedule(static) if (N * (size_t)C >= AG_PAR_MIN / 4)
    for (long r = 0; r < nn; r++) {
        const float *xr = x + (size_t)r * C;
        float *yr = y + (size_t)r * C;
        float mx = xr[0];
        for (int j = 1; j < C; j++) mx = xr[j] > mx ? xr[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < C; j++) {
            yr[j] = expf(xr[j] - mx);
            sum += yr[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < C; j++) yr[j] *= inv;
    }
}

ag_tensor *ag_softmax(ag_ctx *c, ag_tensor *x) {
    if (!x) return NULL;
    ag_tensor *out = ag_new(c, x->ndim, x->shape, "softmax");
    if (!out) return NULL;
    ag_softmax_rows(out->data, x->data, ag_rows(x), ag_cols(x));
    if (!ag_record(c, "softmax", softmax_backward, out, x, NULL, NULL) && ag_error(c)) return NULL;
    return out;
}
