/* tensor.h - the one data type of the engine.
 *
 * A tensor is float32, contiguous, row-major, with 1 to 4 dimensions. `data`
 * and `grad` are views: they point into a parameter buffer (ag_params) or into
 * the step's arena (ag_ctx), never into memory the tensor owns.
 */
#ifndef PARE_AG_TENSOR_H
#define PARE_AG_TENSOR_H

#include <stdbool.h>
#include <stddef.h>

#define AG_MAX_DIMS 4

typedef struct ag_tensor {
    float *data;              /* [numel] */
    float *grad;              /* [numel]; NULL when no gradient flows into this tensor */
    size_t numel;             /* product of shape[0..ndim) */
    int ndim;                 /* 1..AG_MAX_DIMS */
    int shape[AG_MAX_DIMS];   /* unused trailing entries are 1 */
    bool requires_grad;       /* true iff grad != NULL */
    const char *name;         /* for messages; static or owned by whoever made the tensor */
} ag_tensor;

/* Sets t's shape from ndim sizes and recomputes numel. Sizes must be >= 1. */
void ag_tensor_set_shape(ag_tensor *t, int ndim, const int *shape);

/* Size of the last dimension, and the number of rows (numel / last). */
static inline int ag_cols(const ag_tensor *t) { return t->shape[t->ndim - 1]; }
static inline size_t ag_rows(const ag_tensor *t) { return t->numel / (size_t)ag_cols(t); }

/* True when a and b have the same ndim and sizes. */
bool ag_same_shape(const ag_tensor *a, const ag_tensor *b);

/* Writes "name[2,3,4]" into buf (at most n bytes) and returns buf. */
const char *ag_shape_str(const ag_tensor *t, char *buf, size_t n);

#endif
