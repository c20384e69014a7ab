/* ops_elementwise.c - add, mul, scale, GELU and reshape, forward beside backward.
 *
 * Parallel loops: every output element is written by exactly one thread and
 * every sum over rows (the gradient of a broadcast operand) runs in row order
 * inside one thread per column block, so results do not depend on the thread
 * count. Loops below AG_PAR_MIN elements stay serial (a parallel region costs
 * more than it saves there).
 */
#include <assert.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>

#include "ops.h"
#include "ops_internal.h"
#include "parallel.h"
#include "vecmath.h"

/* Number of times b repeats inside a, asserting that b's shape is a's
 * trailing dimensions (or a's whole shape). */
static size_t broadcast_reps(const ag_tensor *a, const ag_tensor *b) {
    assert(b->ndim <= a->ndim);
    for (int i = 0; i < b->ndim; i++) assert(b->shape[i] == a->shape[a->ndim - b->ndim + i]);
    (void)a;
    return a->numel / b->numel;
}

/* Broadcast loops run over work items of one row r (one repeat of b) and up
 * to BC_BLOCK of its columns [j0, j1), so a same-shape operation (one row of
 * all N elements) is split across threads as well as a bias over many rows. */
#define BC_BLOCK 4096

typedef struct {
    size_t nb, per_row; /* row length, work items per row */
} bc_split;

static bc_split bc_make(size_t nb) { return (bc_split){nb, (nb + BC_BLOCK - 1) / BC_BLOCK}; }

static void bc_item(const bc_split *s, long it, size_t *r, size_t *j0, size_t *j1) {
    *r = (size_t)it / s->per_row;
    *j0 = ((size_t)it % s->per_row) * BC_BLOCK;
    *j1 = *j0 + BC_BLOCK < s->nb ? *j0 + BC_BLOCK : s->nb;
}

/* Columns [j0, j1) of the column sums, rows in order; vectorised across
 * columns (each column is its own sum, so the bits do not change). */
AG_SIMD_CLONES static void colsum_block(double *acc, const float *g, const float *x, size_t rows, size_t cols,
                                        size_t j0, size_t j1) {
    for (size_t r = 0; r < rows; r++) {
        const float *gr = g + r * cols; /* [cols] */
        if (x) {
            const float *xr = x + r * cols; /* [cols] */
#pragma omp simd
            for (size_t j = j0; j < j1; j++) acc[j - j0] += (double)gr[j] * xr[j];
        } else {
#pragma omp simd
            for (size_t j = j0; j < j1; j++) acc[j - j0] += gr[j];
        }
    }
}

void ag_colsum_add_share(float *db, const float *g, const float *x, size_t rows, size_t cols, int t, int nt) {
    long nblk = (long)((cols + AG_COL_BLOCK - 1) / AG_COL_BLOCK);
    long b0 = nblk * t / nt, b1 = nblk * (t + 1) / nt; /* this thread's blocks */
    for (long blk = b0; blk < b1; blk++) {
        size_t j0 = (size_t)blk * AG_COL_BLOCK;
        size_t j1 = j0 + AG_COL_BLOCK < cols ? j0 + AG_COL_BLOCK : cols;
        double acc[AG_COL_BLOCK] = {0};
        colsum_block(acc, g, x, rows, cols, j0, j1);
        for (size_t j = j0; j < j1; j++) db[j] += (float)acc[j - j0];
    }
}

void ag_colsum_add(float *db, const float *g, const float *x, size_t rows, size_t cols) {
    /* db[j] += sum_r g[r,j] (* x[r,j]), each column summed in row order in
     * double by the one thread that owns its block of AG_COL_BLOCK columns. */
    long nblk = (long)((cols + AG_COL_BLOCK - 1) / AG_COL_BLOCK);
    ag_join join = {0};
#pragma omp parallel if (rows * cols >= AG_PAR_MIN && nblk > 1)
    {
#pragma omp for schedule(static) nowait
        for (long blk = 0; blk < nblk; blk++) {
            size_t j0 = (size_t)blk * AG_COL_BLOCK;
            size_t j1 = j0 + AG_COL_BLOCK < cols ? j0 + AG_COL_BLOCK : cols;
            double acc[AG_COL_BLOCK] = {0};
            colsum_block(acc, g, x, rows, cols, j0, j1);
            for (size_t j = j0; j < j1; j++) db[j] += (float)acc[j - j0];
        }
        ag_region_join(&join);
    }
}

/* --------------------------------------------------------------------- add
 * out[r, j] = a[r, j] + b[j]   (b repeated over the r = 0..reps leading rows)
 * da[r, j] += dout[r, j];  db[j] += sum_r dout[r, j] */

static void add_backward(ag_node *n) {
    ag_tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    size_t N = a->numel, nb = b->numel, reps = N / nb;
    const float *g = out->grad; /* [reps, nb] */
    float *da = a->grad, *db = b->grad; /* [reps, nb], [nb] (or NULL) */
    long nn = (long)N;
    /* both gradients in one parallel region; a barrier between them only if
     * they share memory (add(x, x)) */
    bool alias = da && db && ag_overlaps(da, N, db, nb);
    ag_join join = {0};
#pragma omp parallel if (N >= AG_PAR_MIN)
    {
        if (da) {
#pragma omp for simd schedule(static) nowait
            for (long i = 0; i < nn; i++) da[i] += g[i];
        }
        if (alias) {
#pragma omp barrier
        }
        if (db && reps == 1) {
#pragma omp for simd schedule(static) nowait
            for (long i = 0; i < nn; i++) db[i] += g[i];
        } else if (db) {
            ag_colsum_add_share(db, g, NULL, reps, nb, omp_get_thread_num(), omp_get_num_threads());
        }
        ag_region_join(&join);
    }
}

/* The forward of add and mul: out[r, j] = a[r, j] (+ or *) b[j], split over
 * (row, column block) items so that same-shape operands use every thread. */
static ag_tensor *broadcast_forward(ag_ctx *c, ag_tensor *a, ag_tensor *b, bool mul) {
    size_t reps = broadcast_reps(a, b), nb = b->numel;
    ag_tensor *out = ag_new(c, a->ndim, a->shape, mul ? "mul" : "add");
    if (!out) return NULL;
    const float *A = a->data, *Bv = b->data; /* [reps, nb], [nb] */
    float *O = out->data;                    /* [reps, nb] */
    bc_split sp = bc_make(nb);
    long items = (long)(reps * sp.per_row);
    ag_join join = {0};
#pragma omp parallel if (a->numel >= AG_PAR_MIN && items > 1)
    {
#pragma omp for schedule(static) nowait
        for (long it = 0; it < items; it++) {
            size_t r, j0, j1;
            bc_item(&sp, it, &r, &j0, &j1);
            const float *ar = A + r * nb;
            float *orow = O + r * nb;
            if (mul) {
#pragma omp simd
                for (size_t j = j0; j < j1; j++) orow[j] = ar[j] * Bv[j];
            } else {
#pragma omp simd
                for (size_t j = j0; j < j1; j++) orow[j] = ar[j] + Bv[j];
            }
        }
        ag_region_join(&join);
    }
    return out;
}

ag_tensor *ag_add(ag_ctx *c, ag_tensor *a, ag_tensor *b) {
    if (!a || !b) return NULL;
    ag_tensor *out = broadcast_forward(c, a, b, false);
    if (!out) return NULL;
    if (!ag_record(c, "add", add_backward, out, a, b, NULL) && ag_error(c)) return NULL;
    return out;
}

/* --------------------------------------------------------------------- mul
 * out[r, j] = a[r, j] * b[j]
 * da[r, j] += dout[r, j] * b[j];  db[j] += sum_r dout[r, j] * a[r, j] */

static void mul_backward(ag_node *n) {
    ag_tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    size_t N = a->numel, nb = b->numel, reps = N / nb;
    const float *g = out->grad; /* [reps, nb] */
    if (a->grad) {
        float *da = a->grad; /* [reps, nb] */
        const float *Bv = b->data; /* [nb] */
        bc_split sp = bc_make(nb);
        long items = (long)(reps * sp.per_row);
#pragma omp parallel for schedule(static) if (N >= AG_PAR_MIN && items > 1)
        for (long it = 0; it < items; it++) {
            size_t r, j0, j1;
            bc_item(&sp, it, &r, &j0, &j1);
            const float *gr = g + r * nb;
            float *dar = da + r * nb;
#pragma omp simd
            for (size_t j = j0; j < j1; j++) dar[j] += gr[j] * Bv[j];
        }
    }
    if (b->grad) {
        if (reps == 1) {
            float *db = b->grad; /* [nb] */
            const float *A = a->data; /* [nb] */
            long nn = (long)N;
#pragma omp parallel for simd schedule(static) if (N >= AG_PAR_MIN)
            for (long i = 0; i < nn; i++) db[i] += g[i] * A[i];
        } else {
            ag_colsum_add(b->grad, g, a->data, reps, nb);
        }
    }
}

ag_tensor *ag_mul(ag_ctx *c, ag_tensor *a, ag_tensor *b) {
    if (!a || !b) return NULL;
    ag_tensor *out = broadcast_forward(c, a, b, true);
    if (!out) return NULL;
    if (!ag_record(c, "mul", mul_backward, out, a, b, NULL) && ag_error(c)) return NULL;
    return out;
}

/* ------------------------------------------------------------------- scale
 * out = s a;  da += s dout */

static void scale_backward(ag_node *n) {
    ag_tensor *a = n->in[0], *out = n->out;
    float s = n->farg[0];
    long nn = (long)a->numel;
    const float *g = out->grad; /* [N] */
    float *da = a->grad;        /* [N] */
#pragma omp parallel for simd schedule(static) if (a->numel >= AG_PAR_MIN)
    for (long i = 0; i < nn; i++) da[i] += s * g[i];
}

ag_tensor *ag_scale(ag_ctx *c, ag_tensor *a, float s) {
    if (!a) return NULL;
    ag_tensor *out = ag_new(c, a->ndim, a->shape, "scale");
    if (!out) return NULL;
    long nn = (long)a->numel;
    const float *A = a->data; /* [N] */
    float *O = out->data;     /* [N] */
#pragma omp parallel for simd schedule(static) if (a->numel >= AG_PAR_MIN)
    for (long i = 0; i < nn; i++) O[i] = s * A[i];
    ag_node *n = ag_record(c, "scale", scale_backward, out, a, NULL, NULL);
    if (n)
        n->farg[0] = s;
    else if (ag_error(c))
        return NULL;
    return out;
}

/* -------------------------------------------------------------------- gelu
 * GELU, tanh form (Hendrycks and Gimpel 2016):
 *   y = 0.5 x (1 + tanh(u)),  u = k (x + 0.044715 x^3),  k = sqrt(2/pi)
 * computed through the exact identity 0.5 (1 + tanh(u)) = s = 1 / (1 + e^(-2u)),
 * which has no cancellation near u = 0:
 *   y = x s
 *   dy/dx = s + 0.5 x (1 - tanh(u)^2) du/dx = s + 2 x s (1 - s) k (1 + 3 * 0.044715 x^2)
 * s comes from ag_inv_1p_exp (vecmath.h), which vectorises (glibc's expf does
 * not) and is exact in the tails: s = 1 for large x, 0 for very negative x.
 * The kernels are compiled for SSE2, AVX2 and AVX-512 with identical results
 * (AG_SIMD_CLONES). The backward recomputes s from the input instead of
 * saving it. */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f
#define GELU_BLOCK 8192 /* elements per parallel work item */

/* -2u, the argument of the exponential; forward and backward share it so
 * they see the same s. */
static inline float gelu_m2u(float x) { return -2.0f * GELU_K * (x + GELU_A * x * x * x); }

/* y[n] = GELU(x[n]) */
AG_SIMD_CLONES static void gelu_fwd_kernel(float *y, const float *x, long n) {
#pragma omp simd
    for (long i = 0; i < n; i++) y[i] = x[i] * ag_inv_1p_exp(gelu_m2u(x[i]));
}

/* dx[n] += g[n] GELU'(x[n]) */
AG_SIMD_CLONES static void gelu_bwd_kernel(float *dx, const float *x, const float *g, long n) {
#pragma omp simd
    for (long i = 0; i < n; i++) {
        float xi = x[i], s = ag_inv_1p_exp(gelu_m2u(xi));
        float d = s + 2.0f * xi * s * (1.0f - s) * GELU_K * (1.0f + 3.0f * GELU_A * xi * xi);
        dx[i] += g[i] * d;
    }
}

static void gelu_backward(ag_node *n) {
    ag_tensor *a = n->in[0], *out = n->out;
    size_t N = a->numel;
    long nblk = (long)((N + GELU_BLOCK - 1) / GELU_BLOCK);
    const float *x = a->data, *g = out->grad; /* [N] */
    float *dx = a->grad;                      /* [N] */
    ag_join join = {0};
#pragma omp parallel if (N >= AG_PAR_MIN)
    {
#pragma omp for schedule(static) nowait
        for (long b = 0; b < nblk; b++) {
            size_t i0 = (size_t)b * GELU_BLOCK, len = N - i0 < GELU_BLOCK ? N - i0 : GELU_BLOCK;
            gelu_bwd_kernel(dx + i0, x + i0, g + i0, (long)len);
        }
        ag_region_join(&join);
    }
}

ag_tensor *ag_gelu(ag_ctx *c, ag_tensor *a) {
    if (!a) return NULL;
    ag_tensor *out = ag_new(c, a->ndim, a->shape, "gelu");
    if (!out) return NULL;
    size_t N = a->numel;
    long nblk = (long)((N + GELU_BLOCK - 1) / GELU_BLOCK);
    const float *x = a->data; /* [N] */
    float *y = out->data;     /* [N] */
    ag_join join = {0};
#pragma omp parallel if (N >= AG_PAR_MIN)
    {
#pragma omp for schedule(static) nowait
        for (long b = 0; b < nblk; b++) {
            size_t i0 = (size_t)b * GELU_BLOCK, len = N - i0 < GELU_BLOCK ? N - i0 : GELU_BLOCK;
            gelu_fwd_kernel(y + i0, x + i0, (long)len);
        }
        ag_region_join(&join);
    }
    if (!ag_record(c, "gelu", gelu_backward, out, a, NULL, NULL) && ag_error(c)) return NULL;
    return out;
}

/* ----------------------------------------------------------------- reshape
 * A view: out shares a's data and grad, so the gradient written into out's
 * grad is a's gradient; no node is recorded. */

ag_tensor *ag_reshape(ag_ctx *c, ag_tensor *a, int ndim, const int *shape) {
    if (!a) return NULL;
    return ag_view(c, a, ndim, shape);
}
