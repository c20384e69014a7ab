/* gradcheck_common.h - the gradient check's step and tolerance, and two
 * deliberately broken ops, shared by test_gradcheck.c and
 * test_gradcheck_broken.c so that both use exactly the same check.
 *
 * Tolerance: ag_gradcheck's vector relative error
 *     ||g_analytic - g_numeric|| / max(||g_analytic||, ||g_numeric||)
 * with central differences of step GC_EPS must stay below GC_TOL for every
 * input of every op. In float32 the real ops stay far below that at this
 * step (rounding of the forward divided by 2 eps, plus eps^2 truncation).
 * Measured: at most 1e-4 over every row of test_gradcheck (2e-6 for the
 * linear ops, 1e-4 for cross-entropy and KL). A backward that is wrong by a
 * factor of 2 scores 0.5 and one that misses a term of a product rule scores
 * 0.5 as well, so GC_TOL = 1e-3 leaves a margin of ten on the pass side and
 * five hundred on the fail side; it also catches an error worth 0.1% of the
 * gradient's norm.
 */
#ifndef PARE_TESTS_GRADCHECK_COMMON_H
#define PARE_TESTS_GRADCHECK_COMMON_H

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

#define GC_EPS 1e-2
#define GC_TOL 1e-3

/* out = 2 a, but the backward forgets the 2: da += dout. */
static inline void broken_double_backward(ag_node *n) {
    ag_tensor *a = n->in[0], *out = n->out;
    for (size_t i = 0; i < a->numel; i++) a->grad[i] += out->grad[i];
}

static inline ag_tensor *broken_double(ag_ctx *c, ag_tensor *a) {
    if (!a) return NULL;
    ag_tensor *out = ag_new(c, a->ndim, a->shape, "broken_double");
    if (!out) return NULL;
    for (size_t i = 0; i < a->numel; i++) out->data[i] = 2.0f * a->data[i];
    if (!ag_record(c, "broken_double", broken_double_backward, out, a, NULL, NULL) && ag_error(c))
        return NULL;
    return out;
}

/* out = a * a, but the backward keeps one term of the product rule:
 * da += dout a (the correct gradient is 2 dout a). */
static inline void broken_square_backward(ag_node *n) {
    ag_tensor *a = n->in[0], *out = n->out;
    for (size_t i = 0; i < a->numel; i++) a->grad[i] += out->grad[i] * a->data[i];
}

static inline ag_tensor *broken_square(ag_ctx *c, ag_tensor *a) {
    if (!a) return NULL;
    ag_tensor *out = ag_new(c, a->ndim, a->shape, "broken_square");
    if (!out) return NULL;
    for (size_t i = 0; i < a->numel; i++) out->data[i] = a->data[i] * a->data[i];
    if (!ag_record(c, "broken_square", broken_square_backward, out, a, NULL, NULL) && ag_error(c))
        return NULL;
    return out;
}

static inline ag_tensor *gc_broken_double_fn(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return broken_double(c, ag_param(in, 0));
}

static inline ag_tensor *gc_broken_square_fn(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return broken_square(c, ag_param(in, 0));
}

#endif
