/* optim.c - SGD with momentum, AdamW and global-norm clipping. */
#include "optim.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ops_internal.h"
#include "parallel.h"
#include "vecmath.h"
#include "errmsg.h"

static void init(ag_optim *o, ag_optim_kind kind, float lr, float weight_decay) {
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->lr = lr;
    o->n_groups = 1;
    o->group[0].weight_decay = weight_decay;
    o->group[0].lr_mult = 1.0f;
}

void ag_optim_adamw(ag_optim *o, float lr, float beta1, float beta2, float eps, float weight_decay) {
    init(o, AG_OPTIM_ADAMW, lr, weight_decay);
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
}

void ag_optim_sgd(ag_optim *o, float lr, float momentum, float weight_decay) {
    init(o, AG_OPTIM_SGD, lr, weight_decay);
    o->momentum = momentum;
}

int ag_optim_set_group(ag_optim *o, int g, float weight_decay, float lr_mult) {
    if (g < 0 || g >= AG_OPTIM_MAX_GROUPS) return -1;
    for (int i = o->n_groups; i < g; i++) o->group[i] = o->group[0];
    o->group[g].weight_decay = weight_decay;
    o->group[g].lr_mult = lr_mult;
    if (g >= o->n_groups) o->n_groups = g + 1;
    return 0;
}

static int check(const ag_optim *o, const ag_params *p, char *err, size_t errlen) {
    if (!p->grad) {
        ag_errf(err, errlen, "optimizer: the parameter set has no gradient buffer (allocate it with AG_PARAMS_GRAD)");
        return -1;
    }
    bool need_m = o->kind == AG_OPTIM_ADAMW || o->momentum != 0.0f;
    if (need_m && (!p->m || (o->kind == AG_OPTIM_ADAMW && !p->v))) {
        ag_errf(err, errlen, "optimizer: %s needs moment buffers (allocate the parameters with AG_PARAMS_MOMENTS)",
                o->kind == AG_OPTIM_ADAMW ? "AdamW" : "SGD with momentum");
        return -1;
    }
    if (!isfinite(o->lr) || o->lr < 0.0f) {
        ag_errf(err, errlen, "optimizer: learning rate %g must be finite and >= 0", (double)o->lr);
        return -1;
    }
    if (o->kind == AG_OPTIM_ADAMW) {
        if (!(o->beta1 >= 0.0f && o->beta1 < 1.0f) || !(o->beta2 >= 0.0f && o->beta2 < 1.0f)) {
            ag_errf(err, errlen, "optimizer: AdamW betas (%g, %g) must be in [0, 1)", (double)o->beta1,
                    (double)o->beta2);
            return -1;
        }
        if (!(o->eps > 0.0f) || !isfinite(o->eps)) {
            ag_errf(err, errlen, "optimizer: AdamW eps %g must be finite and > 0", (double)o->eps);
            return -1;
        }
    } else if (!(o->momentum >= 0.0f && o->momentum < 1.0f)) {
        ag_errf(err, errlen, "optimizer: SGD momentum %g must be in [0, 1)", (double)o->momentum);
        return -1;
    }
    for (int g = 0; g < o->n_groups; g++) {
        const ag_optim_group *gr = &o->group[g];
        if (!isfinite(gr->weight_decay) || gr->weight_decay < 0.0f || !isfinite(gr->lr_mult) || gr->lr_mult < 0.0f) {
            ag_errf(err, errlen, "optimizer: group %d has weight decay %g and lr multiplier %g; both must be finite and >= 0",
                    g, (double)gr->weight_decay, (double)gr->lr_mult);
            return -1;
        }
    }
    for (int i = 0; i < p->count; i++)
        if (p->group[i] < 0 || p->group[i] >= o->n_groups) {
            ag_errf(err, errlen, "optimizer: parameter %s is in group %d, but only groups 0..%d are configured",
                    p->names[i], p->group[i], o->n_groups - 1);
            return -1;
        }
    return 0;
}

/* AdamW (Loshchilov and Hutter, "Decoupled Weight Decay Regularization",
 * ICLR 2019, Algorithm 2), per element, with t = the step after increment:
 *   m_t = beta1 m_{t-1} + (1 - beta1) g_t
 *   v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
 *   mhat = m_t / (1 - beta1^t),  vhat = v_t / (1 - beta2^t)    (bias correction)
 *   theta_t = theta_{t-1} - lr (mhat / (sqrt(vhat) + eps) + lambda theta_{t-1})
 * The paper writes the step as eta_t (alpha mhat / (sqrt(vhat) + eps) + lambda
 * theta); here lr = eta_t alpha (schedule times base rate, times the group's
 * multiplier), so the decay is lr * lambda as in PyTorch's AdamW. The decay
 * acts on the weights directly and never passes through m or v: that is the
 * "decoupled" of the title.
 *
 * SGD with momentum (PyTorch's form, Sutskever et al. 2013), with the weight
 * decay as an L2 term in the gradient:
 *   g' = g + lambda theta,  b_t = mu b_{t-1} + g',  theta_t = theta_{t-1} - lr b_t
 * (b lives in the m buffer; with mu = 0 it is plain SGD and m is not used). */
#define OPT_BLOCK 16384 /* elements per parallel work item */

/* The AdamW update of n elements (the formula above). Elementwise IEEE
 * operations only (sqrtf is exactly rounded, and -std=c11 forbids FMA
 * contraction), so the SSE2, AVX2 and AVX-512 clones give the same bits. */
AG_SIMD_CLONES static void adamw_kernel(float *w, float *m, float *v, const float *g, long n, float lr, float wd,
                                        float b1, float b2, float eps, float ib1, float ib2) {
#pragma omp simd
    for (long j = 0; j < n; j++) {
        float gj = g[j];
        float mj = b1 * m[j] + (1.0f - b1) * gj;
        float vj = b2 * v[j] + (1.0f - b2) * gj * gj;
        m[j] = mj;
        v[j] = vj;
        w[j] -= lr * ((mj * ib1) / (sqrtf(vj * ib2) + eps) + wd * w[j]);
    }
}

/* The same update restricted to kept entries: afterwards w, m and v are zero
 * wherever mask is 0 (the mask multiplies, so a kept entry's bits are those
 * of adamw_kernel). */
AG_SIMD_CLONES static void adamw_kernel_masked(float *w, float *m, float *v, const float *g, const float *mk, long n,
                                               float lr, float wd, float b1, float b2, float eps, float ib1,
                                               float ib2) {
#pragma omp simd
    for (long j = 0; j < n; j++) {
        float gj = g[j];
        float mj = b1 * m[j] + (1.0f - b1) * gj;
        float vj = b2 * v[j] + (1.0f - b2) * gj * gj;
        m[j] = mj * mk[j];
        v[j] = vj * mk[j];
        w[j] = (w[j] - lr * ((mj * ib1) / (sqrtf(vj * ib2) + eps) + wd * w[j])) * mk[j];
    }
}

/* One block of the update: len elements at offset off of set p. */
static void update_block(const ag_optim *o, ag_params *p, size_t off, long len, float lr, float wd, float ib1,
                         float ib2) {
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps, mu = o->momentum;
    float *w = p->data + off, *g = p->grad + off; /* [len] */
    float *m = p->m ? p->m + off : NULL;          /* [len] */
    float *v = p->v ? p->v + off : NULL;          /* [len] */
    const float *mk = p->mask ? p->mask + off : NULL; /* [len] */
    if (o->kind == AG_OPTIM_ADAMW) {
        if (mk) adamw_kernel_masked(w, m, v, g, mk, len, lr, wd, b1, b2, eps, ib1, ib2);
        else adamw_kernel(w, m, v, g, len, lr, wd, b1, b2, eps, ib1, ib2);
    } else if (mu != 0.0f) {
        for (long j = 0; j < len; j++) {
            float bj = mu * m[j] + (g[j] + wd * w[j]);
            m[j] = mk ? bj * mk[j] : bj;
            w[j] -= lr * bj;
            if (mk) w[j] *= mk[j];
        }
    } else {
        for (long j = 0; j < len; j++) {
            w[j] -= lr * (g[j] + wd * w[j]);
            if (mk) w[j] *= mk[j];
        }
    }
}

int ag_optim_step_sets(ag_optim *o, ag_params *const *sets, int n_sets, char *err, size_t errlen) {
    size_t total = 0;
    for (int s = 0; s < n_sets; s++) {
        if (sets[s]->count == 0) continue;
        if (check(o, sets[s], err, errlen) != 0) return -1;
        total += sets[s]->n;
    }
    int64_t t = o->step + 1;
    float ib1 = 1.0f, ib2 = 1.0f;
    if (o->kind == AG_OPTIM_ADAMW) {
        ib1 = (float)(1.0 / (1.0 - pow((double)o->beta1, (double)t)));
        ib2 = (float)(1.0 / (1.0 - pow((double)o->beta2, (double)t)));
    }
    /* One parallel region for the whole update: the work items are blocks of
     * OPT_BLOCK elements of every parameter of every set in turn (item k
     * counts them in that order), dealt round-robin to the threads. The
     * update is elementwise, so the result does not depend on which thread
     * takes which block. */
    ag_join join = {0};
#pragma omp parallel if (total >= AG_PAR_MIN)
    {
        long nt = omp_get_num_threads(), th = omp_get_thread_num(), item = 0;
        for (int s = 0; s < n_sets; s++) {
            ag_params *p = sets[s];
            for (int i = 0; i < p->count; i++) {
                const ag_optim_group *gr = &o->group[p->group[i]];
                const float lr = o->lr * gr->lr_mult, wd = gr->weight_decay;
                long nn = (long)p->t[i].numel;
                for (long j0 = 0; j0 < nn; j0 += OPT_BLOCK, item++) {
                    if (item % nt != th) continue;
                    long len = nn - j0 < OPT_BLOCK ? nn - j0 : OPT_BLOCK;
                    update_block(o, p, p->offset[i] + (size_t)j0, len, lr, wd, ib1, ib2);
                }
            }
        }
        ag_region_join(&join);
    }
    o->step = t;
    return 0;
}

int ag_optim_step(ag_optim *o, ag_params *p, char *err, size_t errlen) {
    if (check(o, p, err, errlen) != 0) return -1;
    return ag_optim_step_sets(o, &p, 1, err, errlen);
}

double ag_grad_norm(const ag_params *p) { return ag_grad_norm_sets(&p, 1); }

double ag_grad_norm_sets(const ag_params *const *sets, int n_sets) {
    /* padding is zero in the grad buffers, so each flat buffer is summed whole;
     * the sets' sums are added in order */
    double sq = 0.0;
    for (int s = 0; s < n_sets; s++)
        if (sets[s]->grad && sets[s]->count) sq += ag_sum_blocks(AG_RED_SQ, sets[s]->grad, NULL, sets[s]->n);
    return sqrt(sq);
}

int ag_clip_grad_norm(ag_params *p, double max_norm, double *norm, char *err, size_t errlen) {
    return ag_clip_grad_norm_sets(&p, 1, max_norm, norm, err, errlen);
}

int ag_clip_grad_norm_sets(ag_params *const *sets, int n_sets, double max_norm, double *norm, char *err,
                           size_t errlen) {
    double n = ag_grad_norm_sets((const ag_params *const *)sets, n_sets);
    if (norm) *norm = n;
    if (!isfinite(n)) {
        const char *bad = "?";
        for (int s = 0; s < n_sets && bad[0] == '?'; s++) {
            const ag_params *p = sets[s];
            for (int i = 0; i < p->count && bad[0] == '?' && p->grad; i++)
                for (size_t j = 0; j < p->t[i].numel; j++)
                    if (!isfinite(p->t[i].grad[j])) {
                        bad = p->names[i];
                        break;
                    }
        }
        ag_errf(err, errlen, "gradient norm is %g: parameter %s has a non-finite gradient; "
                "gradients left unchanged", n, bad);
        return -1;
    }
    if (max_norm > 0.0 && n > max_norm) {
        float s = (float)(max_norm / n);
        for (int k = 0; k < n_sets; k++) {
            float *g = sets[k]->grad; /* [n] */
            if (!g) continue;
            long nn = (long)sets[k]->n;
#pragma omp parallel for schedule(static) if (sets[k]->n >= AG_PAR_MIN)
            for (long j = 0; j < nn; j++) g[j] *= s;
        }
    }
    return 0;
}
