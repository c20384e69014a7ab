/* gradcheck.h - compare an op's backward with central finite differences.
 *
 * The function under test maps the tensors of an ag_params set (its inputs)
 * to one output tensor y. The check contracts y with fixed random weights R
 * (seeded), L = sum_i R_i y_i, accumulated in double, and compares for every
 * input element the analytic dL/dx (R seeded into backward) with
 * (L(x + eps) - L(x - eps)) / (2 eps).
 *
 * The error of one input tensor is the vector relative error
 *   ||g_analytic - g_numeric||_2 / max(||g_analytic||_2, ||g_numeric||_2, 1e-12)
 * so that a wrong factor of 2 (error 1/3) or a missing term fails for any
 * tolerance below about 0.1, while float32 rounding in the forward stays
 * around 1e-4 .. 1e-3.
 */
#ifndef PARE_AG_GRADCHECK_H
#define PARE_AG_GRADCHECK_H

#include <stdint.h>

#include "ops.h"
#include "params.h"

/* Builds the output from the inputs (in->t[0..count)). Returns NULL on error. */
typedef ag_tensor *(*ag_gc_fn)(ag_ctx *c, ag_params *in, void *user);

typedef struct ag_gc_result {
    double max_err;     /* largest per-tensor vector relative error */
    int worst_tensor;   /* index of the input with that error */
    double analytic_norm, numeric_norm; /* of that input's gradient */
    int evaluations;    /* forward passes run */
} ag_gc_result;

/* Runs the check on every element of every tensor in `in` (which must have
 * been allocated with AG_PARAMS_GRAD; its data is restored afterwards).
 * Returns 0 when the function ran (compare res->max_err with your tolerance),
 * -1 when it returned NULL or had no gradient (res->max_err is then +inf). */
int ag_gradcheck(ag_gc_fn f, void *user, ag_params *in, double eps, uint64_t seed,
                 ag_gc_result *res);

/* Fills x[n] with uniform values in [lo, hi) from a seeded generator. */
void ag_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed);

#endif
