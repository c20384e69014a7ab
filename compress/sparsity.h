/* sparsity.h - sparsity and pruning as one training policy: masks over the
 * prunable linear weights, L1 and group-lasso regularisation, magnitude
 * pruning (per site or one global threshold), structured pruning of whole
 * attention heads and MLP neurons, N:M sparsity, one-shot / iterative /
 * gradual schedules, and dynamic sparse training (SET, RigL).
 * docs/sparsity.md has the formulas, the papers and the results.
 *
 * Prunable: the weights of the linear sites whose names match prune-sites
 * (default: every linear site; a tied head is the embedding and is never
 * prunable; embeddings, norms and biases never are, except that a pruned
 * head or neuron takes its biases with it). A factorized site's prunable
 * tensors are its two factors.
 *
 * Masks live in the parameter store (autograd/params.h): the optimizer keeps
 * masked weights and both moments exactly zero, the trainer zeroes masked
 * gradients, checkpoints keep the masks. A mask only grows (never regrows)
 * under magnitude, structured and N:M pruning; SET and RigL move it.
 *
 * Pruning events (magnitude, heads, neurons, nm) happen after step t (t
 * steps done) at the sparsity the schedule gives:
 *   oneshot    t = t0: s_f
 *   gradual    t = t0 + k dt, k = 0..n, n = floor((t_end - t0) / dt):
 *              s = s_f + (s_i - s_f) (1 - k / n)^3, s_i = 0        (Zhu and Gupta 2017)
 *   iterative  the same events; each removes the same fraction of the weights
 *              still there: s = 1 - (1 - s_f)^((k + 1) / (n + 1))    (Han et al. 2015)
 * with t0 = prune-start, t_end = prune-end (0 = halfway from t0 to the last
 * step), dt = prune-every. Unstructured counts follow PyTorch's
 * l1_unstructured: round(s x n) entries (round half to even) with the
 * smallest |w|, masked entries counted first.
 *
 * Dynamic sparse training (set, rigl): the masks are at the sparsity from the
 * first step (per-site densities uniform or ERK), and every dst-every steps
 * until dst-end a fraction f_t = (alpha / 2)(1 + cos(pi t / t_end)) of each
 * site's active weights with the smallest |w| is dropped and as many regrown:
 * SET (Mocanu et al. 2018) at random, RigL (Evci et al. 2020) where the dense
 * gradient is largest. Regrown weights start at zero with zero moments.
 */
#ifndef PARE_CP_SPARSITY_H
#define PARE_CP_SPARSITY_H

#include <stdbool.h>
#include <stddef.h>

#include "policy.h"

typedef enum cp_prune_kind {
    CP_PRUNE_NONE = 0, CP_PRUNE_MAGNITUDE, CP_PRUNE_HEADS, CP_PRUNE_NEURONS, CP_PRUNE_NM, CP_PRUNE_SET, CP_PRUNE_RIGL
} cp_prune_kind;
typedef enum cp_schedule { CP_SCHED_ONESHOT = 0, CP_SCHED_ITERATIVE, CP_SCHED_GRADUAL } cp_schedule;
typedef enum cp_scope { CP_SCOPE_SITE = 0, CP_SCOPE_GLOBAL } cp_scope;
typedef enum cp_score { CP_SCORE_NORM = 0, CP_SCORE_LOSS, CP_SCORE_ACTIVATION } cp_score;
typedef enum cp_density { CP_DENSITY_UNIFORM = 0, CP_DENSITY_ERK } cp_density;

/* The keys of the sparsity policy (each field's key in its comment). */
typedef struct cp_sparsity_cfg {
    int prune;            /* prune: cp_prune_kind (none|magnitude|heads|neurons|nm|set|rigl) */
    double sparsity;      /* sparsity: final fraction s_f of weights (heads, neurons: of units) removed, [0, 1) */
    int schedule;         /* schedule: cp_schedule */
    int start, end, every;/* prune-start t0, prune-end (0 = halfway to the last step), prune-every dt */
    const char *sites;    /* prune-sites: globs of prunable sites ("" = every linear site) */
    int scope;            /* prune-scope: site (each site / layer alone) or global (one threshold) */
    int score;            /* prune-score: norm | loss (heads) | activation (neurons) */
    int calib_batches;    /* calib-batches: training batches scoring heads by loss, neurons by activation */
    const char *nm;       /* nm: "N:M" */
    const char *plan;     /* sparsity-plan: "glob=s,glob=s" or "@FILE" (pare sensitivity --plan-out) */
    double l1;            /* l1: lambda of lambda sum |w| */
    bool l1_proximal;     /* l1-proximal: soft-threshold after each step instead of the subgradient */
    double group_lasso;   /* group-lasso: lambda of lambda sum_g ||w_g||_2 over heads and neurons */
    int density;          /* density: cp_density (set, rigl) */
    int dst_every;        /* dst-every: steps between mask updates */
    double dst_fraction;  /* dst-fraction: alpha, the first update's fraction */
    int dst_end;          /* dst-end: last update step (0 = 3/4 of the steps) */
} cp_sparsity_cfg;

extern const cp_kind cp_sparsity_kind;

/* round(amount x n) with round half to even, as PyTorch's pruning counts
 * (Python's round): 0.25 x 10 -> 2, 0.35 x 10 -> 4, 0.45 x 10 -> 4. */
size_t cp_prune_count(double amount, size_t n);

/* Magnitude pruning of several tensors with one threshold (n_t = 1: one
 * tensor alone): w[i] has n[i] entries and mask[i] (1 kept, 0 removed; an
 * existing mask, or all 1). Sets mask to 0 on the round(amount x N)
 * entries, N = sum n[i], of smallest |w|, entries already masked counted
 * first (ties: lower tensor, then lower index, first). amount in [0, 1].
 * Returns that count (the entries masked, those already masked included),
 * or (size_t)-1 when out of memory. */
size_t cp_magnitude_prune(const float *const *w, float *const *mask, const size_t *n, int n_t, double amount);

/* N:M: in every group of m consecutive entries of a row of w [rows, cols]
 * (cols divisible by m), masks the m - n smallest |w| (masked first), so at
 * most n stay. With frac < 1 only round(frac x rows x cols) of those
 * candidates, the smallest, are masked (a gradual ramp to (m - n) / m).
 * Returns the entries masked. */
size_t cp_nm_prune(const float *w, float *mask, int rows, int cols, int n, int m, double frac);

/* Parses "N:M" (1 <= N < M <= 64). Returns 0, or -1 with err ("nm '3:2': expected N < M"). */
int cp_nm_parse(const char *spec, int *n, int *m, char *err, size_t errlen);

/* The target sparsity of the pruning event after `done` steps, or -1 when
 * there is none (see the top of this file). end >= start; every >= 1. */
double cp_schedule_at(int schedule, double s_final, int start, int end, int every, long done);

/* RigL's update fraction at step t: (alpha / 2)(1 + cos(pi t / t_end)), 0 past t_end. */
double cp_dst_fraction(double alpha, long t, long t_end);

/* ERK densities (Evci et al. 2020, after Mocanu et al. 2018): density_i =
 * eps (out_i + in_i) / (out_i in_i), eps chosen so that sum density_i n_i =
 * (1 - s) sum n_i, densities above 1 set to 1 and eps solved again for the
 * rest. out, in, dens: [n_t]. */
void cp_erk_densities(const int *out, const int *in, int n_t, double s, double *dens);

/* Runs the policy's final pruning now, as a one-shot event at its final
 * sparsity (pare prune: no training). p is a sparsity policy added to t and
 * prepared (tr_trainer_prepare). Returns 0, or -1 with t->err. */
int cp_sparsity_apply_now(tr_policy *p, tr_trainer *t);

/* ---- physically removing pruned heads and neurons --------------------- */

/* The heads and MLP units a model can lose without changing its function:
 * a head whose value rows and value biases, or whose proj columns, are all
 * zero; a unit whose fc row and bias, or whose mproj column, are all zero
 * (gelu(0) = 0). At least one head and one unit stay in every layer. */
typedef struct cp_shrink {
    pm_arch arch;           /* the smaller architecture (ranks as the source's) */
    unsigned char **keep_head; /* [n_layer][source heads] 1 = kept */
    unsigned char **keep_unit; /* [n_layer][source MLP units] */
    int removed_heads, removed_units;
} cp_shrink;

/* Finds what m can lose (zeroes s first). Returns 0, or -1 with err (out of
 * memory; a factorized site whose rank exceeds its smaller shape). */
int cp_shrink_find(cp_shrink *s, const tr_gpt *m, char *err, size_t errlen);
void cp_shrink_free(cp_shrink *s); /* s may be zeroed */

/* Copies tensor `name` of the source (values src, in the source table's
 * shape) into dst in the small architecture's shape: kept qkv rows and
 * biases and proj columns, kept fc rows and biases and mproj columns, other
 * tensors as they are. */
void cp_shrink_gather(const cp_shrink *s, const pm_table *src_table, const char *name, const float *src, float *dst);

/* A new model of the small architecture (flags as tr_gpt_init) holding m's
 * kept weights (and masks). Returns 0, or -1 with err; out is freed then. */
int cp_shrink_model(const cp_shrink *s, const tr_gpt *m, tr_gpt *out, int flags, char *err, size_t errlen);

/* Rewrites plan (of m's architecture) for the small one: pm_plan_set_arch,
 * every entry's storage type and group kept, data gathered from the old
 * entry's (or m's) values into plan-owned buffers. Returns 0, or -1 with err. */
int cp_shrink_plan(const cp_shrink *s, const tr_gpt *m, pm_plan *plan, char *err, size_t errlen);

#endif
