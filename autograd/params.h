/* params.h - all parameters of a model in one contiguous buffer.
 *
 * data, grad and the optimizer moments m and v are four parallel buffers of
 * the same length; each parameter is a named view (an ag_tensor) at the same
 * offset in all four. Zeroing grads, clipping, masking, checkpointing and the
 * optimizer step are therefore single loops over flat arrays.
 *
 * Use: declare every parameter with ag_params_add (which only records the
 * shape), then call ag_params_alloc once; after that the views are valid.
 * Each view starts on a 64-byte boundary; the padding between views is zero
 * in every buffer and stays zero under every optimizer.
 */
#ifndef PARE_AG_PARAMS_H
#define PARE_AG_PARAMS_H

#include "tensor.h"

enum {
    AG_PARAMS_GRAD = 1,     /* allocate grad (training) */
    AG_PARAMS_MOMENTS = 2,  /* allocate m and v (optimizers) */
};

typedef struct ag_params {
    float *data;             /* [n] */
    float *grad;             /* [n] or NULL */
    float *m, *v;            /* [n] or NULL: first and second moments */
    float *mask;             /* [n] or NULL: 1 keeps an entry, 0 removes it (ag_params_mask_enable) */
    size_t n;                /* floats in each buffer, padding included */
    ag_tensor *t;            /* [count] the named views */
    size_t *offset;          /* [count] offset of each view in the buffers */
    int *group;              /* [count] optimizer group of each view */
    char **names;            /* [count] owned copies of the names */
    int count, cap;
    int flags;
} ag_params;

/* Initialises an empty parameter set. */
void ag_params_init(ag_params *p);

/* Frees the buffers and views. p may be NULL. */
void ag_params_free(ag_params *p);

/* Declares a parameter (before ag_params_alloc). `group` is the optimizer
 * group index (for example 0 = decayed, 1 = not decayed). Returns its index,
 * or -1 when out of memory or when called after ag_params_alloc. */
int ag_params_add(ag_params *p, const char *name, int ndim, const int *shape, int group);

/* Allocates the zero-filled buffers named by flags (data always) and points
 * the views at them. Returns 0, or -1 when out of memory. */
int ag_params_alloc(ag_params *p, int flags);

/* The view with this index. */
static inline ag_tensor *ag_param(ag_params *p, int i) { return &p->t[i]; }

/* Index of the parameter with this name, or -1. */
int ag_params_find(const ag_params *p, const char *name);

/* Sets every gradient to zero (no-op without grads). */
void ag_params_zero_grad(ag_params *p);

/* Masks (pruning): gives p a mask buffer with every entry kept (1; padding
 * 0). Idempotent. Returns 0, or -1 when out of memory or p is not allocated.
 * With a mask, the optimizers keep masked entries of data and of both
 * moments exactly zero (ag_optim_step). */
int ag_params_mask_enable(ag_params *p);

/* grad *= mask (no-op without a mask or grads): after a backward, before
 * clipping, so masked entries neither move nor count in the norm. */
void ag_params_mask_grads(ag_params *p);

/* data, m and v *= mask (no-op without a mask): after a mask changed. */
void ag_params_mask_apply(ag_params *p);

/* Entries of view i that the mask removes (0 without a mask). */
size_t ag_params_masked(const ag_params *p, int i);

/* Number of real (non-padding) parameters. */
size_t ag_params_numel(const ag_params *p);

#endif
