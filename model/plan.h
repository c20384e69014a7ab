/* plan.h - an export plan: for every tensor of the model file to be written,
 * its values and how it is stored.
 *
 * `pare export` fills a plan in three steps: every tensor of the model as f32
 * (its data borrowed from the model); then the command's keys (--format
 * q8|q4|... stores the linear weights in that storage type); then the export
 * hook of every policy the checkpoint was trained with, which overrides what
 * it knows better: a quantization-aware run's storage types, group sizes,
 * scales and zero points (so the file holds the integers training
 * simulated), a pruned run's masks or its smaller shapes (pm_plan_set_arch
 * and a gathered copy of the kept rows and columns), a factorized run's
 * factors. The writer (infer/export.h) then packs each entry with its storage
 * type's row of the traits table.
 */
#ifndef PARE_PM_PLAN_H
#define PARE_PM_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "arch.h"

#define PM_TYPE_NAME_MAX 15

typedef struct pm_plan_entry {
    const float *data;   /* the tensor's values, row-major [shape] (borrowed or owned by the plan) */
    char type[PM_TYPE_NAME_MAX + 1]; /* storage type: "f32", "q8", "q4", "q4a", ... */
    int group;           /* columns per scale; 0 = one per output row (quantized types only) */
    const float *scale;  /* [rows, cols / G] fixed scales (a quantization-aware checkpoint's), or NULL: computed */
    const int32_t *zero; /* [rows, cols / G] fixed zero points, or NULL */
    const uint8_t *mask; /* [rows * cols], 1 = kept, for storage types that store only kept weights; or NULL */
    int act_bits;        /* > 0: the product this weight computes takes static activations of act_bits bits
                            (symmetric) with scale act_scale (an A8 site; the model file's activation record) */
    float act_scale;
    char by[32];         /* what set the entry ("default", "--format", a policy's name), for messages */
} pm_plan_entry;

typedef struct pm_plan {
    pm_arch arch;          /* the file's architecture (owned): the model's, or a smaller one */
    pm_table table;        /* its sites and tensors (owned) */
    pm_plan_entry *entry;  /* [table.n_tensor]: entry i describes table tensor i */
    bool q8_dense;         /* int8 entries stay dense q8 (else each is written as q8 or q8s, the smaller) */
    void **owned;          /* buffers the plan frees */
    int n_owned, cap_owned;
} pm_plan;

/* A plan for architecture a (copied): every entry f32 with no data yet.
 * Returns 0, or -1 with err (a bad architecture, out of memory); the caller
 * frees p with pm_plan_free either way. */
int pm_plan_init(pm_plan *p, const pm_arch *a, char *err, size_t errlen);

/* Replaces the plan's architecture by a (for example with fewer heads or a
 * narrower MLP): the table is rebuilt and every entry reset to f32 with no
 * data. Returns 0, or -1 with err (the old plan is then unchanged). */
int pm_plan_set_arch(pm_plan *p, const pm_arch *a, char *err, size_t errlen);

/* bytes of zeroed memory owned by the plan (freed by pm_plan_free), or NULL. */
void *pm_plan_alloc(pm_plan *p, size_t bytes);

void pm_plan_free(pm_plan *p); /* p may be NULL or zeroed */

/* The entry of the tensor with this name, or NULL. */
pm_plan_entry *pm_plan_find(pm_plan *p, const char *tensor_name);

#endif
