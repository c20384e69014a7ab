/* ops_loss.c - losses and reductions to a scalar, forward beside backward.
 *
 * Every scalar here is a sum accumulated in double in a fixed order: per-row
 * (or per-block) partial sums computed in parallel, then added serially in
 * index order. The result is therefore the same for any thread count.
 */
#include <assert.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "ops.h"
#include "ops_internal.h"
#include "parallel.h"
#include "vecmath.h"

#define SUM_MAX_BLOCKS 4096

/* One block's sum in double, in 8 lanes (lane l takes i = l mod 8), the lanes
 * added pairwise, then the tail in index order: an order fixed by this code,
 * so the clones vectorise it with the same bits, and 8 independent additions
 * instead of one chain (a double add's latency bounded the loop before). */
#define SUM_LANES(TERM)                                                                             \
    do {                                                                                           \
        for (; i + 8 <= n; i += 8)                                                                 \
            for (int l = 0; l < 8; l++) {                                                          \
                size_t j = i + (size_t)l;                                                          \
                lane[l] += (TERM);                                                                 \
            }                                                                                      \
        s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])); \
        for (size_t j = i; j < n; j++) s += (TERM);                                                \
    } while (0)

AG_SIMD_CLONES static double block_sum(ag_red_kind kind, const float *a, const float *b, size_t n) {
    double lane[8] = {0}, s = 0.0;
    size_t i = 0;
    switch (kind) {
    case AG_RED_SUM: SUM_LANES((double)a[j]); break;
    case AG_RED_ABS: SUM_LANES((double)fabsf(a[j])); break;
    case AG_RED_SQDIFF: SUM_LANES(((double)a[j] - b[j]) * ((double)a[j] - b[j])); break;
    case AG_RED_SQ: SUM_LANES((double)a[j] * a[j]); break;
    }
    return s;
}

double ag_sum_blocks(ag_red_kind kind, const float *a, const float *b, size_t n) {
    double part[SUM_MAX_BLOCKS];
    /* the block size depends on n only, never on the thread count */
    size_t bs = AG_SUM_BLOCK;
    if ((n + bs - 1) / bs > SUM_MAX_BLOCKS) bs = (n + SUM_MAX_BLOCKS - 1) / SUM_MAX_BLOCKS;
    long nblk = (long)((n + bs - 1) / bs);
    ag_join join = {0};
#pragma omp parallel if (nblk > 1)
    {
#pragma omp for schedule(static) nowait
        for (long k = 0; k < nblk; k++) {
            size_t i0 = (size_t)k * bs, i1 = i0 + bs < n ? i0 + bs : n;
            part[k] = block_sum(kind, a + i0, b ? b + i0 : NULL, i1 - i0);
        }
        ag_region_join(&join);
    }
    double total = 0.0;
    for (long k = 0; k < nblk; k++) total += part[k];
    return total;
}

static ag_tensor *new_scalar(ag_ctx *c, const char *name) {
    const int one = 1;
    return ag_new(c, 1, &one, name);
}

/* ----------------------------------------------------------- cross-entropy
 * Fused log-softmax + negative log-likelihood over rows r with t_r != ignore:
 *   loss = (1/n) sum_r (logsumexp(x_r) - x_r[t_r]),  n = number of such rows
 *   dx_r[v] += dloss/n (softmax(x_r)[v] - [v == t_r]);  ignored rows get 0
 * The forward writes softmax(x_r) (kept when a gradient is recorded), so the
 * backward is one pass without exp. */

typedef struct {
    int *targets; /* [N] */
    float *probs; /* [N, V] */
    int count;    /* rows not ignored */
} ce_saved;

static void cross_entropy_backward(ag_node *n) {
    ag_tensor *x = n->in[0], *out = n->out;
    const ce_saved *s = n->saved;
    if (s->count == 0 || !x->grad) return;
    size_t N = ag_rows(x);
    int V = ag_cols(x), ignore = n->iarg[0];
    float g = out->grad[0] / (float)s->count;
    const float *P = s->probs; /* [N, V] */
    float *dX = x->grad;       /* [N, V] */
    long nn = (long)N;
    ag_join join = {0};
#pragma omp parallel if (N * (size_t)V >= AG_PAR_MIN)
    {
#pragma omp for schedule(static) nowait
        for (long r = 0; r < nn; r++) {
            int t = s->targets[r];
            if (t == ignore) continue;
            const float *pr = P + (size_t)r * V;
            float *dr = dX + (size_t)r * V;
#pragma omp simd
            for (int v = 0; v < V; v++) dr[v] += g * pr[v];
            dr[t] -= g;
        }
        ag_region_join(&join);
    }
}

/* One row of the cross-entropy forward: *mx = max(x), p[V] = softmax(x), and
 * returns sum_v exp(x_v - mx): exp by ag_exp_nonpos, the sum in double in 8
 * lanes (an order fixed by this code). The clones give identical bits (see
 * vecmath.h). */
AG_SIMD_CLONES static double ce_row_exp(float *p, const float *x, int V, float *mx_out) {
    float mx = x[0]; /* a max is exact in any order */
#pragma omp simd reduction(max : mx)
    for (int v = 1; v < V; v++) mx = x[v] > mx ? x[v] : mx;
    *mx_out = mx;
#pragma omp simd
    for (int v = 0; v < V; v++) p[v] = ag_exp_nonpos(x[v] - mx);
    double lane[8] = {0};
    int v = 0;
    for (; v + 8 <= V; v += 8)
        for (int l = 0; l < 8; l++) lane[l] += p[v + l];
    double sum = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (; v < V; v++) sum += p[v];
    float inv = (float)(1.0 / sum);
#pragma omp simd
    for (int i = 0; i < V; i++) p[i] *= inv;
    return sum;
}

ag_tensor *ag_cross_entropy(ag_ctx *c, ag_tensor *logits, const int *targets, int ignore_index) {
    if (!logits || !targets) return NULL;
    size_t N = ag_rows(logits);
    int V = ag_cols(logits);
    int count = 0;
    for (size_t r = 0; r < N; r++) {
        int t = targets[r];
        if (t == ignore_index) continue;
        if (t < 0 || t >= V) {
            ag_fail(c, "cross_entropy: target %d at row %zu is outside [0, %d) and is not the "
                       "ignore index %d", t, r, V, ignore_index);
            return NULL;
        }
        count++;
    }
    ag_tensor *out = new_scalar(c, "cross_entropy");
    double *rowloss = ag_alloc(c, N * sizeof(double)); /* [N] */
    if (!out || !rowloss) return NULL;
    /* softmax rows: kept for the backward, scratch without one */
    float *probs = ag_alloc(c, N * (size_t)V * sizeof(float)); /* [N, V] */
    if (!probs) return NULL;
    ag_node *n = ag_record(c, "cross_entropy", cross_entropy_backward, out, logits, NULL, NULL);
    ce_saved *s = NULL;
    if (n) {
        s = ag_alloc(c, sizeof *s);
        int *tg = ag_alloc(c, N * sizeof(int));
        if (!s || !tg) return NULL;
        memcpy(tg, targets, N * sizeof(int));
        s->targets = tg;
        s->probs = probs;
        s->count = count;
        n->saved = s;
        n->iarg[0] = ignore_index;
    } else if (ag_error(c)) {
        return NULL;
    }
    const float *X = logits->data; /* [N, V] */
    long nn = (long)N;
    ag_join join = {0};
#pragma omp parallel if (N * (size_t)V >= AG_PAR_MIN / 4)
    {
#pragma omp for schedule(static) nowait
        for (long r = 0; r < nn; r++) {
            int t = targets[r];
            if (t == ignore_index) {
                rowloss[r] = 0.0;
                continue;
            }
            const float *xr = X + (size_t)r * V;
            float mx;
            double sum = ce_row_exp(probs + (size_t)r * V, xr, V, &mx);
            rowloss[r] = (double)mx + log(sum) - (double)xr[t];
        }
        ag_region_join(&join);
    }
    double total = 0.0;
    for (size_t r = 0; r < N; r++) total += rowloss[r];
    out->data[0] = count ? (float)(total / count) : 0.0f;
    return out;
}

/* ------------------------------------------------------------------ kl_div
 * Knowledge distillation (Hinton, Vinyals and Dean 2015). Per row, with
 * p = softmax(t / tau) (teacher) and q = softmax(s / tau) (student):
 *   KL_r = sum_v p_v (log p_v - log q_v),   loss = tau^2 (1/N) sum_r KL_r
 * The tau^2 keeps the soft-target gradient's size independent of tau.
 *   ds_v += dloss tau/N (q_v - p_v)
 *   dt_v += dloss tau/N p_v (log p_v - log q_v - KL_r)
 * log p and log q are formed as (x - max)/tau - log Z, never as log(p), so a
 * probability that underflows to 0 contributes exactly 0. */

typedef struct {
    float *p, *q;  /* [N, V] teacher and student probabilities */
    float *d;      /* [N, V] log p - log q (only when the teacher needs a gradient) */
    double *kl;    /* [N] KL_r */
} kl_saved;

static void kl_div_backward(ag_node *n) {
    ag_tensor *st = n->in[0], *te = n->in[1], *out = n->out;
    const kl_saved *s = n->saved;
    size_t N = ag_rows(st);
    int V = ag_cols(st);
    float tau = n->farg[0];
    float g = (float)((double)out->grad[0] * tau / (double)N);
    float *dS = st->grad, *dT = te->grad; /* [N, V] each, either may be NULL */
    long nn = (long)N;
#pragma omp parallel for schedule(static) if (N * (size_t)V >= AG_PAR_MIN)
    for (long r = 0; r < nn; r++) {
        size_t o = (size_t)r * V;
        const float *pr = s->p + o, *qr = s->q + o;
        if (dS)
            for (int v = 0; v < V; v++) dS[o + v] += g * (qr[v] - pr[v]);
        if (dT) {
            const float *dr = s->d + o;
            float kl = (float)s->kl[r];
            for (int v = 0; v < V; v++) dT[o + v] += g * pr[v] * (dr[v] - kl);
        }
    }
}

ag_tensor *ag_kl_div(ag_ctx *c, ag_tensor *student, ag_tensor *teacher, float tau) {
    if (!student || !teacher) return NULL;
    assert(student->numel == teacher->numel && ag_cols(student) == ag_cols(teacher));
    if (!(tau > 0.0f) || !isfinite(tau)) {
        ag_fail(c, "kl_div: temperature %g must be a finite number > 0", (double)tau);
        return NULL;
    }
    size_t N = ag_rows(student);
    int V = ag_cols(student);
    ag_tensor *out = new_scalar(c, "kl_div");
    if (!out) return NULL;
    ag_node *n = ag_record(c, "kl_div", kl_div_backward, out, student, teacher, NULL);
    if (!n && ag_error(c)) return NULL;
    kl_saved *s = ag_alloc(c, sizeof *s);
    float *pq = ag_alloc(c, 2 * N * (size_t)V * sizeof(float));
    double *kl = ag_alloc(c, N * sizeof(double));
    if (!s || !pq || !kl) return NULL;
    s->p = pq;
    s->q = pq + N * (size_t)V;
    s->kl = kl;
    s->d = NULL;
    if (n && teacher->grad) {
        s->d = ag_alloc(c, N * (size_t)V * sizeof(float));
        if (!s->d) return NULL;
    }
    if (n) {
        n->saved = s;
        n->farg[0] = tau;
    }
    const float *S = student->data, *T = teacher->data; /* [N, V] */
    float it = 1.0f / tau;
    long nn = (long)N;
#pragma omp parallel for schedule(static) if (N * (size_t)V >= AG_PAR_MIN / 4)
    for (long r = 0; r < nn; r++) {
        size_t o = (size_t)r * V;
        const float *sr = S + o, *tr = T + o;
        float *pr = s->p + o, *qr = s->q + o;
        float ms = sr[0], mt = tr[0];
        for (int v = 1; v < V; v++) {
            ms = sr[v] > ms ? sr[v] : ms;
            mt = tr[v] > mt ? tr[v] : mt;
        }
        double zs = 0.0, zt = 0.0;
        for (int v = 0; v < V; v++) {
            pr[v] = expf((tr[v] - mt) * it);
            qr[v] = expf((sr[v] - ms) * it);
            zt += pr[v];
            zs += qr[v];
        }
        float lzt = (float)log(zt), lzs = (float)log(zs);
        float ipt = (float)(1.0 / zt), iqs = (float)(1.0 / zs);
        double acc = 0.0;
        for (int v = 0; v < V; v++) {
            float lp = (tr[v] - mt) * it - lzt, lq = (sr[v] - ms) * it - lzs;
            pr[v] *= ipt;
            qr[v] *= iqs;
            acc += (double)pr[v] * (lp - lq);
            if (s->d) s->d[o + v] = lp - lq;
        }
        kl[r] = acc;
    }
    double total = 0.0;
    for (size_t r = 0; r < N; r++) total += kl[r];
    out->data[0] = (float)((double)tau * tau * total / (double)N);
    return out;
}

/* ----------------------------------------------------------------- prob_kl
 * KL between two tensors that already hold probability rows (attention
 * probabilities, MiniLM's relations): per row r over the last dimension,
 *   KL_r = sum_{j: p_j > 0} p_j (log p_j - log q_j),   loss = (1/N) sum_r KL_r
 * with p the teacher's row and q the student's. Entries where the teacher's
 * p is 0 (a causal mask's future positions, zero in both) contribute
 * nothing. q is read as max(q, FLT_MIN), so a student probability that
 * underflowed to 0 gives a large finite term instead of an infinity.
 *   dq_j += dloss (1/N) (-p_j / q_j)
 *   dp_j += dloss (1/N) (log p_j - log q_j + 1)     (p_j > 0) */

static void prob_kl_backward(ag_node *n) {
    ag_tensor *q = n->in[0], *p = n->in[1], *out = n->out;
    size_t N = ag_rows(q);
    int T = ag_cols(q);
    float g = (float)((double)out->grad[0] / (double)N);
    const float *Q = q->data, *Pv = p->data; /* [N, T] */
    float *dQ = q->grad, *dP = p->grad;      /* [N, T] or NULL */
    long nn = (long)(N * (size_t)T);
#pragma omp parallel for schedule(static) if ((size_t)nn >= AG_PAR_MIN)
    for (long i = 0; i < nn; i++) {
        if (!(Pv[i] > 0.0f)) continue;
        float qi = Q[i] > FLT_MIN ? Q[i] : FLT_MIN;
        if (dQ) dQ[i] += g * (-Pv[i] / qi);
        if (dP) dP[i] += g * (logf(Pv[i]) - logf(qi) + 1.0f);
    }
}

ag_tensor *ag_prob_kl(ag_ctx *c, ag_tensor *p_student, ag_tensor *p_teacher) {
    if (!p_student || !p_teacher) return NULL;
    assert(ag_same_shape(p_student, p_teacher));
    size_t N = ag_rows(p_student);
    int T = ag_cols(p_student);
    ag_tensor *out = new_scalar(c, "prob_kl");
    if (!out) return NULL;
    double *kl = ag_alloc(c, N * sizeof(double));
    if (!kl) return NULL;
    const float *Q = p_student->data, *Pv = p_teacher->data; /* [N, T] */
    long nn = (long)N;
#pragma omp parallel for schedule(static) if (N * (size_t)T >= AG_PAR_MIN)
    for (long r = 0; r < nn; r++) {
        const float *qr = Q + (size_t)r * T, *pr = Pv + (size_t)r * T;
        double acc = 0.0;
        for (int j = 0; j < T; j++)
            if (pr[j] > 0.0f) acc += (double)pr[j] * ((double)logf(pr[j]) - (double)logf(qr[j] > FLT_MIN ? qr[j] : FLT_MIN));
        kl[r] = acc;
    }
    double total = 0.0; /* rows in order: the same bits at any thread count */
    for (size_t r = 0; r < N; r++) total += kl[r];
    out->data[0] = (float)(total / (double)N);
    if (!ag_record(c, "prob_kl", prob_kl_backward, out, p_student, p_teacher, NULL) && ag_error(c)) return NULL;
    return out;
}

/* --------------------------------------------------------------------- mse
 * loss = (1/n) sum_i (a_i - b_i)^2
 * da_i += dloss 2 (a_i - b_i) / n;  db_i -= the same */

static void mse_backward(ag_node *n) {
    ag_tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    size_t N = a->numel;
    float k = (float)(2.0 * out->grad[0] / (double)N);
    const float *A = a->data, *Bv = b->data; /* [N] */
    float *dA = a->grad, *dB = b->grad;      /* [N] or NULL */
    long nn = (long)N;
#pragma omp parallel for schedule(static) if (N >= AG_PAR_MIN)
    for (long i = 0; i < nn; i++) {
        float d = k * (A[i] - Bv[i]);
        if (dA) dA[i] += d;
        if (dB) dB[i] -= d;
    }
}

ag_tensor *ag_mse(ag_ctx *c, ag_tensor *a, ag_tensor *b) {
    if (!a || !b) return NULL;
    assert(ag_same_shape(a, b));
    ag_tensor *out = new_scalar(c, "mse");
    if (!out) return NULL;
    out->data[0] = (float)(ag_sum_blocks(AG_RED_SQDIFF, a->data, b->data, a->numel) / (double)a->numel);
    if (!ag_record(c, "mse", mse_backward, out, a, b, NULL) && ag_error(c)) return NULL;
    return out;
}

/* ---------------------------------------------------------------------- l1
 * loss = sum_i |a_i|;  da_i += dloss sign(a_i), with sign(0) = 0 */

static void l1_backward(ag_node *n) {
    ag_tensor *a = n->in[0], *out = n->out;
    float g = out->grad[0];
    const float *A = a->data; /* [N] */
    float *dA = a->grad;      /* [N] */
    long nn = (long)a->numel;
#pragma omp parallel for schedule(static) if (a->numel >= AG_PAR_MIN)
    for (long i = 0; i < nn; i++) dA[i] += A[i] > 0.0f ? g : (A[i] < 0.0f ? -g : 0.0f);
}

ag_tensor *ag_l1(ag_ctx *c, ag_tensor *a) {
    if (!a) return NULL;
    ag_tensor *out = new_scalar(c, "l1");
    if (!out) return NULL;
    out->data[0] = (float)ag_sum_blocks(AG_RED_ABS, a->data, NULL, a->numel);
    if (!ag_record(c, "l1", l1_backward, out, a, NULL, NULL) && ag_error(c)) return NULL;
    return out;
}

/* -------------------------------------------------------------- sum, mean
 * sum = sum_i a_i;    da_i += dsum
 * mean = sum / n;     da_i += dmean / n */

static void sum_backward(ag_node *n) {
    ag_tensor *a = n->in[0], *out = n->out;
    float g = out->grad[0] * n->farg[0]; /* farg[0] = 1 for sum, 1/n for mean */
    float *dA = a->grad;                 /* [N] */
    long nn = (long)a->numel;
#pragma omp parallel for schedule(static) if (a->numel >= AG_PAR_MIN)
    for (long i = 0; i < nn; i++) dA[i] += g;
}

static ag_tensor *sum_scaled(ag_ctx *c, ag_tensor *a, bool mean) {
    if (!a) return NULL;
    const char *name = mean ? "mean" : "sum";
    ag_tensor *out = new_scalar(c, name);
    if (!out) return NULL;
    double s = ag_sum_blocks(AG_RED_SUM, a->data, NULL, a->numel);
    out->data[0] = (float)(mean ? s / (double)a->numel : s);
    ag_node *n = ag_record(c, name, sum_backward, out, a, NULL, NULL);
    if (n)
        n->farg[0] = mean ? (float)(1.0 / (double)a->numel) : 1.0f;
    else if (ag_error(c))
        return NULL;
    return out;
}

ag_tensor *ag_sum(ag_ctx *c, ag_tensor *a) { return sum_scaled(c, a, false); }
ag_tensor *ag_mean(ag_ctx *c, ag_tensor *a) { return sum_scaled(c, a, true); }
