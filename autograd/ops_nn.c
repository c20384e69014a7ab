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
#pragma omp parallel for schedule(static) if (N * C >= AG_PAR_MIN && nblk > 1)
    for (long blk = 0; blk < nblk; blk++) {
        size_t j0 = (size_t)blk * AG_COL_BLOCK;
        size_t j1 = j0 + AG_COL_BLOCK < C ? j0 + AG_COL_BLOCK : C;
        for (size_t i = 0; i < N; i++) {
            const float *gi = g + i * C;
            float *dr = dt + (size_t)ids[i] * C;
            for (size_t j = j0; j < j1; j++) dr[j] += gi[j];
        }
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
#pragma omp parallel for schedule(static) if (N * (size_t)C >= AG_PAR_MIN)
    for (long i = 0; i < nn; i++)
        memcpy(O + (size_t)i * C, W + (size_t)ids[i] * C, (size_t)C * sizeof(float));
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

/* Sum of x[0..n) in double with four partial sums (a fixed order). */
static double row_sum(const float *x, int n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        s0 += x[j];
        s1 += x[j + 1];
        s2 += x[j + 2];
        s3 += x[j + 3];
    }
    for (; j < n; j++) s0 += x[j];
    return (s0 + s1) + (s2 + s3);
}

static void layernorm_backward(ag_node *n) {
    ag_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *out = n->out;
    const ln_saved *s = n->saved;
    size_t N = ag_rows(x);
    int C = ag_cols(x);
    const float *X = x->data, *W = w->data, *G = out->grad; /* [N, C], [C], [N, C] */
    if (x->grad) {
        float *dX = x->grad; /* [N, C] */
        long nn = (long)N;
#pragma omp parallel for schedule(static) if (N * (size_t)C >= AG_PAR_MIN)
        for (long r = 0; r < nn; r++) {
            const float *xr = X + (size_t)r * C, *gr = G + (size_t)r * C;
            float *dxr = dX + (size_t)r * C;
            float mu = s->mean[r], rs = s->rstd[r];
            double sg = 0.0, sgx = 0.0;
            for (int j = 0; j < C; j++) {
                float g = gr[j] * W[j];
                sg += g;
                sgx += (double)g * ((xr[j] - mu) * rs);
            }
            float mg = (float)(sg / C), mgx = (float)(sgx / C);
            for (int j = 0; j < C; j++) {
                float xh = (xr[j] - mu) * rs;
                dxr[j] += rs * (gr[j] * W[j] - mg - xh * mgx);
            }
        }
    }
    if (w->grad || (b && b->grad)) {
        /* column blocks in parallel, rows in order: deterministic */
        long nblk = (C + AG_COL_BLOCK - 1) / AG_COL_BLOCK;
#pragma omp parallel for schedule(static) if (N * (size_t)C >= AG_PAR_MIN && nblk > 1)
        for (long blk = 0; blk < nblk; blk++) {
            int j0 = (int)blk * AG_COL_BLOCK, j1 = j0 + AG_COL_BLOCK < C ? j0 + AG_COL_BLOCK : C;
            double aw[AG_COL_BLOCK] = {0}, ab[AG_COL_BLOCK] = {0};
            for (size_t r = 0; r < N; r++) {
                const float *xr = X + r * C, *gr = G + r * C;
                float mu = s->mean[r], rs = s->rstd[r];
                for (int j = j0; j < j1; j++) {
                    aw[j - j0] += (double)gr[j] * ((xr[j] - mu) * rs);
                    ab[j - j0] += gr[j];
                }
            }
            for (int j = j0; j < j1; j++) {
                if (w->grad) w->grad[j] += (float)aw[j - j0];
                if (b && b->grad) b->grad[j] += (float)ab[j - j0];
            }
        }
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
#pragma omp parallel for schedule(static) if (N * (size_t)C >= AG_PAR_MIN)
    for (long r = 0; r < nn; r++) {
        const float *xr = X + (size_t)r * C;
        float *yr = Y + (size_t)r * C;
        double mu = row_sum(xr, C) / C;
        double v0 = 0, v1 = 0;
        int j = 0;
        for (; j + 2 <= C; j += 2) {
            double d0 = xr[j] - mu, d1 = xr[j + 1] - mu;
            v0 += d0 * d0;
            v1 += d1 * d1;
        }
        for (; j < C; j++) v0 += (xr[j] - mu) * (xr[j] - mu);
        float m = (float)mu;
        float rs = (float)(1.0 / sqrt((v0 + v1) / C + (double)eps));
        if (s) {
            s->mean[r] = m;
            s->rstd[r] = rs;
        }
        if (Bv)
            for (j = 0; j < C; j++) yr[j] = (xr[j] - m) * rs * W[j] + Bv[j];
        else
            for (j = 0; j < C; j++) yr[j] = (xr[j] - m) * rs * W[j];
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
