/* optim.h - optimizers and gradient clipping over the flat parameter buffers.
 *
 * Every function here is a loop over ag_params' parallel buffers (data, grad,
 * m, v), view by view so that each view's optimizer group applies. Padding
 * between views is never touched. All updates are elementwise (each element
 * by one thread), and the one reduction (the gradient norm) runs in fixed
 * blocks added in order, so the same inputs give the same bits for any
 * thread count.
 *
 * Parameter groups: ag_params.group[i] names the group of view i; each group
 * has its own weight decay and learning-rate multiplier (for example group 0
 * = matrices with decay, group 1 = biases, norms and embeddings without).
 *
 * The step count `step` is public: a checkpoint saves it with m and v and
 * restores it before resuming, so bias correction continues exactly.
 */
#ifndef PARE_AG_OPTIM_H
#define PARE_AG_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "params.h"

#define AG_OPTIM_MAX_GROUPS 8

typedef enum { AG_OPTIM_SGD = 0, AG_OPTIM_ADAMW = 1 } ag_optim_kind;

typedef struct ag_optim_group {
    float weight_decay; /* AdamW: decoupled decay; SGD: L2 term added to the gradient */
    float lr_mult;      /* the group's learning rate is lr * lr_mult */
} ag_optim_group;

typedef struct ag_optim {
    ag_optim_kind kind;
    float lr;             /* base learning rate; a schedule sets it before each step */
    float beta1, beta2;   /* AdamW moment decay rates */
    float eps;            /* AdamW denominator guard */
    float momentum;       /* SGD momentum (0 = plain SGD) */
    int n_groups;         /* groups 0 .. n_groups-1 are configured */
    ag_optim_group group[AG_OPTIM_MAX_GROUPS];
    int64_t step;         /* steps taken so far (AdamW's t is step after the increment) */
} ag_optim;

/* Configures o as AdamW with one group (group 0: weight_decay, lr_mult 1)
 * and step 0. Never fails. */
void ag_optim_adamw(ag_optim *o, float lr, float beta1, float beta2, float eps, float weight_decay);

/* Configures o as SGD with momentum, one group (weight_decay, lr_mult 1) and
 * step 0. Never fails. */
void ag_optim_sgd(ag_optim *o, float lr, float momentum, float weight_decay);

/* Sets group g's weight decay and learning-rate multiplier. Groups between
 * the last configured one and g get group 0's settings. Returns 0, or -1 if
 * g is outside [0, AG_OPTIM_MAX_GROUPS). */
int ag_optim_set_group(ag_optim *o, int g, float weight_decay, float lr_mult);

/* Applies one update to every view of p from its gradient, then increments
 * o->step. The gradients are left as they are (the caller zeroes them).
 * Returns 0, or -1 with a message in err (errlen bytes, may be NULL) and
 * nothing changed when: p has no gradient buffer; AdamW or SGD with momentum
 * is used on a set allocated without AG_PARAMS_MOMENTS; a view's group is not
 * configured (the message names the view and its group); or o's
 * hyperparameters are invalid (lr, eps or decay not finite, beta not in
 * [0, 1)). When p has a mask (ag_params_mask_enable), masked entries of the
 * weights and of both moments are zero after the step. */
int ag_optim_step(ag_optim *o, ag_params *p, char *err, size_t errlen);

/* The same step over several parameter sets at once (a model's and its
 * policies' tensors): one step count, every set updated as ag_optim_step
 * would (empty sets are skipped). Errors as ag_optim_step, for any set. */
int ag_optim_step_sets(ag_optim *o, ag_params *const *sets, int n_sets, char *err, size_t errlen);

/* The global L2 norm of all gradients, accumulated in double in a fixed
 * order (blocks of the flat buffer in parallel, block sums in order).
 * Returns 0 when p has no gradient buffer. */
double ag_grad_norm(const ag_params *p);

/* Global-norm clipping (Pascanu, Mikolov and Bengio 2013): with
 * n = ag_grad_norm(p), if n > max_norm every gradient is multiplied by
 * max_norm / n, so the new norm is max_norm; otherwise nothing changes.
 * max_norm <= 0 only measures. *norm (may be NULL) receives n.
 * Returns 0, or -1 when n is not finite: then no gradient is changed and err
 * names the first view whose gradient holds a NaN or an infinity (a step
 * with it would destroy the parameters; the caller should skip it). */
int ag_clip_grad_norm(ag_params *p, double max_norm, double *norm, char *err, size_t errlen);

/* The norm and the clipping over several sets together (the global norm of
 * all their gradients; each set's sum of squares in its fixed order, the
 * sets' sums added in order). */
double ag_grad_norm_sets(const ag_params *const *sets, int n_sets);
int ag_clip_grad_norm_sets(ag_params *const *sets, int n_sets, double max_norm, double *norm, char *err,
                           size_t errlen);

#endif
