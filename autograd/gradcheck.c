#include "gradcheck.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

void ag_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed) {
    ag_rng r;
    ag_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * ag_rng_uniform(&r);
}

/* L = sum_i R_i y_i in double, from a forward pass without a tape. */
static int eval_loss(ag_gc_fn f, void *user, ag_params *in, ag_ctx *c, const float *R, size_t nr,
                     double *L) {
    ag_ctx_reset(c);
    ag_set_grad(c, false);
    ag_tensor *y = f(c, in, user);
    ag_set_grad(c, true);
    if (!y || y->numel != nr) return -1;
    double s = 0.0;
    for (size_t i = 0; i < nr; i++) s += (double)R[i] * (double)y->data[i];
    *L = s;
    return 0;
}

int ag_gradcheck(ag_gc_fn f, void *user, ag_params *in, double eps, uint64_t seed,
                 ag_gc_result *res) {
    memset(res, 0, sizeof *res);
    res->max_err = INFINITY;
    ag_ctx *c = ag_ctx_new();
    float *analytic = malloc((in->n ? in->n : 1) * sizeof(float));
    float *R = NULL;
    int rc = -1;
    if (!c || !analytic) goto done;

    /* Analytic gradient: backward seeded with R. */
    ag_params_zero_grad(in);
    ag_tensor *y = f(c, in, user);
    if (!y || !y->grad) goto done;
    size_t nr = y->numel;
    R = malloc(nr * sizeof(float));
    if (!R) goto done;
    ag_fill_uniform(R, nr, -1.0f, 1.0f, seed ^ 0x5eedULL);
    if (nr == 1) R[0] = 1.0f;
    ag_backward_seed(c, y, R);
    memcpy(analytic, in->grad, in->n * sizeof(float));
    res->evaluations = 1;

    res->max_err = 0.0;
    for (int ti = 0; ti < in->count; ti++) {
        ag_tensor *t = &in->t[ti];
        double diff2 = 0.0, an2 = 0.0, nu2 = 0.0;
        const float *ga = analytic + in->offset[ti];
        for (size_t j = 0; j < t->numel; j++) {
            float x0 = t->data[j];
            double Lp, Lm;
            t->data[j] = (float)(x0 + eps);
            double hp = (double)t->data[j] - x0; /* the step actually taken in float */
            int e1 = eval_loss(f, user, in, c, R, nr, &Lp);
            t->data[j] = (float)(x0 - eps);
            double hm = x0 - (double)t->data[j];
            int e2 = eval_loss(f, user, in, c, R, nr, &Lm);
            t->data[j] = x0;
            res->evaluations += 2;
            if (e1 || e2) {
                res->max_err = INFINITY;
                goto done;
            }
            double num = (Lp - Lm) / (hp + hm);
            double d = (double)ga[j] - num;
            diff2 += d * d;
            an2 += (double)ga[j] * ga[j];
            nu2 += num * num;
        }
        double denom = fmax(fmax(sqrt(an2), sqrt(nu2)), 1e-12);
        double err = sqrt(diff2) / denom;
        if (err > res->max_err || ti == 0) {
            res->max_err = err;
            res->worst_tensor = ti;
            res->analytic_norm = sqrt(an2);
            res->numeric_norm = sqrt(nu2);
        }
    }
    rc = 0;
done:
    free(R);
    free(analytic);
    ag_ctx_free(c);
    return rc;
}
