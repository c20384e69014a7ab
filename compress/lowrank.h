/* lowrank.h - low-rank factorization of linear sites by truncated SVD, and
 * a nuclear-norm-style regulariser that pushes dense sites toward low rank
 * before they are factorized (docs/sparsity.md, "Low rank").
 *
 * A linear site's W [out, in] = U S V^T (LAPACKE's sgesdd) is replaced by the
 * factors U_r sqrt(S_r) [out, r] and sqrt(S_r) V_r^T [r, in] (balanced: both
 * factors carry the same scale, which trains better than U_r S_r and V_r^T).
 * By Eckart and Young (1936) this is the best rank-r approximation in the
 * Frobenius norm: ||W - U V||_F = sqrt(sum_{i >= r} s_i^2). The rank is the
 * key rank for every selected site, or per site the smallest r with
 * sum_{i < r} s_i^2 >= rank-energy x sum_i s_i^2.
 *
 * `pare train --init DENSE.ckpt --rank R` (cp_lowrank_init_model) and
 * `pare prune DENSE.ckpt --rank R` build the factorized model from the dense
 * checkpoint; training then fine-tunes the factors like any other tensors.
 */
#ifndef PARE_CP_LOWRANK_H
#define PARE_CP_LOWRANK_H

#include <stddef.h>

#include "policy.h"

typedef struct cp_lowrank_cfg {
    int rank;          /* rank: the rank of every factorized site (0 = off) */
    double energy;     /* rank-energy: per site, the smallest rank keeping this fraction of the energy (0 = off) */
    const char *sites; /* rank-sites: globs of the sites to factorize ("" = every linear site) */
    double nuclear;    /* nuclear: lambda of the singular-value soft-threshold on dense sites (0 = off) */
} cp_lowrank_cfg;

extern const cp_kind cp_lowrank_kind;

/* Thin SVD of w [n, k] (row-major): u [n, p], s [p] (descending), vt [p, k],
 * p = min(n, k), by LAPACKE_sgesdd. Returns 0, or -1 with err (out of
 * memory, no convergence). */
int cp_svd(const float *w, int n, int k, float *u, float *s, float *vt, char *err, size_t errlen);

/* The smallest r in [1, p] with sum_{i < r} s_i^2 >= energy x sum s_i^2. */
int cp_rank_for_energy(const float *s, int p, double energy);

/* Balanced rank-r factors of w [n, k]: u [n, r], v [r, k] with w ~ u v;
 * *resid (may be NULL) gets ||w - u v||_F computed in double. r in
 * [1, min(n, k)]. Returns 0, or -1 with err. */
int cp_svd_factor(const float *w, int n, int k, int r, float *u, float *v, double *resid, char *err, size_t errlen);

/* A new model (flags as tr_gpt_init) of dense's architecture with every
 * dense linear site matching c->sites (a tied head never) factorized at
 * c->rank or by c->energy; every other tensor copied. Returns 0, or -1 with
 * err naming the site ("rank 200: h.0.attn.proj is [128, 128]: expected at
 * most 128", neither rank nor rank-energy set); out is freed then. */
int cp_lowrank_factorize(const tr_gpt *dense, const cp_lowrank_cfg *c, tr_gpt *out, int flags, char *err,
                         size_t errlen);

/* For `pare train --init CKPT`: when the lowrank keys parsed into s ask for
 * factors (rank or rank-energy), replaces m (the checkpoint's model) by its
 * factorized model with the same parameter flags; otherwise (or when every
 * selected site is factorized already, as `pare prune --rank` writes) leaves it.
 * Returns 0, or -1 with err (m is unchanged then). */
int cp_lowrank_init_model(const cp_set *s, tr_gpt *m, char *err, size_t errlen);

#endif
