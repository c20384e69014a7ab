/* ops_matmul.c - matrix products through cblas_sgemm, forward beside backward. */
#include <assert.h>
#include <omp.h>
#include <string.h>

#include "ops.h"
#include "ops_internal.h"
#include "parallel.h"

/* ------------------------------------------------------------------ matmul
 * out = op(a) op(b). For one batch:  dA += dOut op(b)^T (transposed back if
 * ta), dB += op(a)^T dOut (transposed back if tb). */

typedef struct {
    int batch, M, N, K;
    size_t sa, sb, so; /* per-batch strides (0 for a shared 2-D operand) */
} mm_shape;

static void matmul_backward(ag_node *n) {
    ag_tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    const mm_shape *s = n->saved;
    bool ta = n->iarg[0], tb = n->iarg[1];
    int lda = ta ? s->M : s->K, ldb = tb ? s->K : s->N;
    for (int i = 0; i < s->batch; i++) {
        const float *A = a->data + i * s->sa, *B = b->data + i * s->sb;
        const float *dO = out->grad + i * s->so; /* [M, N] */
        if (a->grad) {
            float *dA = a->grad + i * s->sa;
            if (!ta) /* dA[M,K] += dO[M,N] op(B)^T */
                ag_sgemm(false, !tb, s->M, s->K, s->N, 1.0f, dO, s->N, B, ldb, 1.0f, dA, lda);
            else /* dA[K,M] += op(B)[K,N] dO^T */
                ag_sgemm(tb, true, s->K, s->M, s->N, 1.0f, B, ldb, dO, s->N, 1.0f, dA, lda);
        }
        if (b->grad) {
            float *dB = b->grad + i * s->sb;
            if (!tb) /* dB[K,N] += op(A)^T dO */
                ag_sgemm(!ta, false, s->K, s->N, s->M, 1.0f, A, lda, dO, s->N, 1.0f, dB, ldb);
            else /* dB[N,K] += dO^T op(A) */
                ag_sgemm(true, ta, s->N, s->K, s->M, 1.0f, dO, s->N, A, lda, 1.0f, dB, ldb);
        }
    }
}

ag_tensor *ag_matmul(ag_ctx *c, ag_tensor *a, ag_tensor *b, bool ta, bool tb) {
    if (!a || !b) return NULL;
    assert(a->ndim >= 2 && b->ndim >= 2);
    mm_shape s;
    int ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    s.M = ta ? ac : ar;
    s.K = ta ? ar : ac;
    s.N = tb ? br : bc;
    assert((tb ? bc : br) == s.K);
    int shape[AG_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 2] = s.M;
    shape[a->ndim - 1] = s.N;
    if (b->ndim == 2 && !ta) { /* fold a's leading dims into M */
        s.M = (int)(a->numel / (size_t)ac);
        s.batch = 1;
        s.sa = s.sb = s.so = 0;
    } else if (b->ndim == 2) {
        s.batch = (int)(a->numel / ((size_t)ar * ac));
        s.sa = (size_t)ar * ac;
        s.sb = 0;
        s.so = (size_t)s.M * s.N;
    } else {
        assert(a->ndim == b->ndim && a->numel / ((size_t)ar * ac) == b->numel / ((size_t)br * bc));
        s.batch = (int)(a->numel / ((size_t)ar * ac));
        s.sa = (size_t)ar * ac;
        s.sb = (size_t)br * bc;
        s.so = (size_t)s.M * s.N;
    }
    ag_tensor *out = ag_new(c, a->ndim, shape, "matmul");
    if (!out) return NULL;
    int lda = ta ? s.M : s.K, ldb = tb ? s.K : s.N;
    if (s.batch == 1 && s.sa == 0) /* folded: the row count is M of all leading dims */
        lda = ta ? s.M : s.K;
    for (int i = 0; i < s.batch; i++)
        ag_sgemm(ta, tb, s.M, s.N, s.K, 1.0f, a->data + i * s.sa, lda, b->data + i * s.sb, ldb,
                 0.0f, out->data + i * s.so, s.N);
    ag_node *n = ag_record(c, "matmul", matmul_backward, out, a, b, NULL);
    if (n) {
        mm_shape *saved = ag_alloc(c, sizeof *saved);
        if (!saved) return NULL;
        *saved = s;
        n->saved = saved;
        n->iarg[0] = ta;
        n->iarg[1] = tb;
    } else if (ag_error(c)) {
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------------ linear
 * out[N,Co] = x[N,Ci] w[Co,Ci]^T + bias[Co]
 * dx[N,Ci] += dout[N,Co] w[Co,Ci];  dw[Co,Ci] += dout^T x;  dbias += sum_rows dout */

static void linear_backward(ag_node *n) {
    ag_tensor *x = n->in[0], *w = n->in[1], *bias = n->in[2], *out = n->out;
    int N = (int)ag_rows(x), Ci = ag_cols(x), Co = w->shape[0];
    /* The gradients are independent: one parallel region in which threads
     * claim the units of dW and of dx (ag_sgemm_units: cut by the shapes, so
     * the bits do not depend on who takes which), then share the bias sums,
     * instead of three regions. */
    ag_gemm gw = {true, false, Co, Ci, N, 1.0f, out->grad, Co, x->data, Ci, 1.0f, w->grad, Ci}; /* dw[Co,Ci] += dout^T x */
    ag_gemm gx = {false, false, N, Ci, Co, 1.0f, out->grad, Co, w->data, Ci, 1.0f, x->grad, Ci}; /* dx[N,Ci] += dout w */
    ag_units uw = ag_sgemm_units(Co, Ci, N), ux = ag_sgemm_units(N, Ci, Co);
    int nw = w->grad ? uw.count : 0, nx = x->grad ? ux.count : 0;
    bool bgrad = bias && bias->grad;
    bool par = ag_get_threads() > 1 && (nw + nx > 1 || (bgrad && (size_t)N * Co >= AG_PAR_MIN));
    ag_join j = {0};
#pragma omp parallel num_threads(ag_get_threads()) if (par)
    {
#pragma omp for schedule(dynamic, 1) nowait
        for (int i = 0; i < nw + nx; i++) {
            if (i < nw) ag_gemm_unit(&gw, uw, i);
            else ag_gemm_unit(&gx, ux, i - nw);
        }
        if (bgrad) /* column sums in row order, in double; each column by one thread */
            ag_colsum_add_share(bias->grad, out->grad, NULL, (size_t)N, (size_t)Co, omp_get_thread_num(),
                                omp_get_num_threads());
        ag_region_join(&j);
    }
}

ag_tensor *ag_linear(ag_ctx *c, ag_tensor *x, ag_tensor *w, ag_tensor *bias) {
    if (!x || !w) return NULL;
    assert(w->ndim == 2 && ag_cols(x) == w->shape[1]);
    assert(!bias || (int)bias->numel == w->shape[0]);
    int N = (int)ag_rows(x), Ci = ag_cols(x), Co = w->shape[0];
    int shape[AG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = Co;
    ag_tensor *out = ag_new(c, x->ndim, shape, "linear");
    if (!out) return NULL;
    /* out = x w^T (+ bias): threads claim units; a unit first fills its block
     * of out with the bias, then adds x w^T onto it (beta = 1) */
    ag_gemm g = {false, true, N, Co, Ci, 1.0f, x->data, Ci, w->data, Ci, bias ? 1.0f : 0.0f, out->data, Co};
    ag_units u = ag_sgemm_units(N, Co, Ci);
    ag_join j = {0};
#pragma omp parallel num_threads(ag_get_threads()) if (u.count > 1 && ag_get_threads() > 1)
    {
#pragma omp for schedule(dynamic, 1) nowait
        for (int i = 0; i < u.count; i++) {
            if (bias) {
                int r0, r1, c0 = 0, c1 = Co;
                ag_unit_range(u, u.dim == 'N' ? Co : N, i, &r0, &r1);
                if (u.dim == 'N') c0 = r0, c1 = r1, r0 = 0, r1 = N;
                for (int r = r0; r < r1; r++)
                    memcpy(out->data + (size_t)r * Co + c0, bias->data + c0, (size_t)(c1 - c0) * sizeof(float));
            }
            ag_gemm_unit(&g, u, i);
        }
        ag_region_join(&j);
    }
    if (!ag_record(c, "linear", linear_backward, out, x, w, bias) && ag_error(c)) return NULL;
    return out;
}
