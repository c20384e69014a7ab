/* lowrank.c - truncated SVD factors of linear sites and the nuclear-norm
 * regulariser (see lowrank.h).
 *
 * Eckart and Young 1936, "The approximation of one matrix by another of lower
 * rank": the truncated SVD W_r = U_r S_r V_r^T minimises ||W - X||_F over
 * rank-r X, with error sqrt(sum_{i >= r} s_i^2). Stored as the balanced pair
 * U_r S_r^(1/2), S_r^(1/2) V_r^T.
 *
 * Nuclear norm (Fazel 2002; the proximal operator of lambda ||W||_* is
 * singular value thresholding, Cai, Candes and Shen 2010): every
 * CP_NUCLEAR_EVERY steps each dense selected site becomes
 * U max(S - tau, 0) V^T with tau = CP_NUCLEAR_EVERY x lr x lambda, which
 * drives its small singular values to exactly zero before it is factorized.
 */
#include "lowrank.h"

#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CP_NUCLEAR_EVERY 10

int cp_svd(const float *w, int n, int k, float *u, float *s, float *vt, char *err, size_t errlen) {
    int p = n < k ? n : k;
    float *a = malloc((size_t)n * k * sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory: an SVD of [%d, %d]", n, k);
        return -1;
    }
    memcpy(a, w, (size_t)n * k * sizeof *a);
    lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', n, k, a, k, s, u, p, vt, k);
    free(a);
    if (info != 0) {
        snprintf(err, errlen, "SVD of a [%d, %d] matrix failed (LAPACKE_sgesdd info %d%s)", n, k, (int)info,
                 info > 0 ? ": no convergence" : ": bad argument or out of memory");
        return -1;
    }
    return 0;
}

int cp_rank_for_energy(const float *s, int p, double energy) {
    double total = 0, acc = 0;
    for (int i = 0; i < p; i++) total += (double)s[i] * s[i];
    for (int r = 1; r <= p; r++) {
        acc += (double)s[r - 1] * s[r - 1];
        if (acc >= energy * total) return r;
    }
    return p;
}

/* u_r sqrt(s), sqrt(s) vt_r from a thin SVD (u [n, p], vt [p, k]). */
static void balanced(const float *u, const float *s, const float *vt, int n, int k, int p, int r, float *fu, float *fv) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < r; j++) fu[(size_t)i * r + j] = u[(size_t)i * p + j] * sqrtf(s[j]);
    for (int j = 0; j < r; j++)
        for (int c = 0; c < k; c++) fv[(size_t)j * k + c] = sqrtf(s[j]) * vt[(size_t)j * k + c];
}

static double residual(const float *w, const float *u, const float *v, int n, int k, int r) {
    double sum = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < k; c++) {
            double x = 0;
            for (int j = 0; j < r; j++) x += (double)u[(size_t)i * r + j] * v[(size_t)j * k + c];
            double d = (double)w[(size_t)i * k + c] - x;
            sum += d * d;
        }
    return sqrt(sum);
}

int cp_svd_factor(const float *w, int n, int k, int r, float *fu, float *fv, double *resid, char *err, size_t errlen) {
    int p = n < k ? n : k;
    if (r < 1 || r > p) {
        snprintf(err, errlen, "rank %d of a [%d, %d] matrix: expected 1 .. %d", r, n, k, p);
        return -1;
    }
    float *u = malloc((size_t)n * p * sizeof *u), *s = malloc((size_t)p * sizeof *s), *vt = malloc((size_t)p * k * sizeof *vt);
    int rc = -1;
    if (!u || !s || !vt) snprintf(err, errlen, "out of memory: an SVD of [%d, %d]", n, k);
    else if (cp_svd(w, n, k, u, s, vt, err, errlen) == 0) {
        balanced(u, s, vt, n, k, p, r, fu, fv);
        if (resid) *resid = residual(w, fu, fv, n, k, r);
        rc = 0;
    }
    free(u), free(s), free(vt);
    return rc;
}

static bool selected(const tr_gpt *m, const char *globs, int i) {
    const pm_site *s = &m->table.site[i];
    if (!s->linear || (s->role == PM_HEAD && m->arch.tied)) return false;
    return !globs || !globs[0] || pm_glob_match(globs, s->name);
}

int cp_lowrank_factorize(const tr_gpt *dense, const cp_lowrank_cfg *c, tr_gpt *out, int flags, char *err,
                         size_t errlen) {
    memset(out, 0, sizeof *out);
    if (c->rank <= 0 && !(c->energy > 0)) {
        snprintf(err, errlen, "low rank: expected rank > 0 or rank-energy in (0, 1]");
        return -1;
    }
    const pm_table *tb = &dense->table;
    const ag_params *p = &dense->params;
    int ns = tb->n_site, rc = -1, picked = 0;
    float **fu = calloc((size_t)ns, sizeof *fu), **fv = calloc((size_t)ns, sizeof *fv);
    int *rank = calloc((size_t)ns, sizeof *rank);
    pm_arch a = {0};
    if (!fu || !fv || !rank || pm_arch_copy(&a, &dense->arch) != 0) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (int i = 0; i < ns; i++) {
        const pm_site *s = &tb->site[i];
        if (!selected(dense, c->sites, i) || s->rank > 0) continue;
        int n = s->out, k = s->in, q = n < k ? n : k;
        if (c->rank > q) {
            snprintf(err, errlen, "rank %d: %s is [%d, %d]: expected a rank of at most min(out, in) = %d", c->rank,
                     s->name, n, k, q);
            goto done;
        }
        float *u = malloc((size_t)n * q * sizeof *u), *sv = malloc((size_t)q * sizeof *sv),
              *vt = malloc((size_t)q * k * sizeof *vt);
        const float *w = p->data + p->offset[s->w];
        int ok = u && sv && vt && cp_svd(w, n, k, u, sv, vt, err, errlen) == 0;
        if (!u || !sv || !vt) snprintf(err, errlen, "out of memory");
        if (ok) {
            int r = c->rank > 0 ? c->rank : cp_rank_for_energy(sv, q, c->energy);
            rank[i] = r;
            fu[i] = malloc((size_t)n * r * sizeof *fu[i]);
            fv[i] = malloc((size_t)r * k * sizeof *fv[i]);
            if (fu[i] && fv[i]) balanced(u, sv, vt, n, k, q, r, fu[i], fv[i]);
            else ok = 0, snprintf(err, errlen, "out of memory");
        }
        free(u), free(sv), free(vt);
        if (!ok) goto done;
        a.rank[pm_rank_slot(&a, s->layer, s->role)] = rank[i];
        picked++;
    }
    if (!picked) {
        snprintf(err, errlen, "rank-sites '%s' matches no dense linear site of the model (a tied head cannot be "
                 "factorized)", c->sites ? c->sites : "");
        goto done;
    }
    if (tr_gpt_init_arch(out, &a, flags, err, errlen) != 0) goto done;
    for (int i = 0; i < out->table.n_tensor; i++) {
        const pm_tensor *t = &out->table.tensor[i];
        float *dst = out->params.data + out->params.offset[i];
        int si = pm_table_site(tb, out->table.site[t->site].name);
        if (si >= 0 && rank[si] > 0 && (t->part == PM_U || t->part == PM_V)) {
            memcpy(dst, t->part == PM_U ? fu[si] : fv[si], out->params.t[i].numel * sizeof *dst);
            continue;
        }
        int j = pm_table_tensor(tb, t->name);
        memcpy(dst, p->data + p->offset[j], out->params.t[i].numel * sizeof *dst);
    }
    rc = 0;
done:
    for (int i = 0; fu && fv && i < ns; i++) free(fu[i]), free(fv[i]);
    free(fu), free(fv), free(rank);
    pm_arch_free(&a);
    return rc;
}

int cp_lowrank_init_model(const cp_set *s, tr_gpt *m, char *err, size_t errlen) {
    for (int i = 0; i < s->n_kinds; i++) {
        if (cp_kinds[i] != &cp_lowrank_kind) continue;
        const cp_lowrank_cfg *c = s->cfg[i];
        if (c->rank <= 0 && !(c->energy > 0)) return 0;
        /* a checkpoint already factorized at the selected sites (pare prune --rank): fine-tune its factors */
        int dense = 0, factored = 0;
        for (int j = 0; j < m->table.n_site; j++) {
            if (!selected(m, c->sites, j)) continue;
            if (m->table.site[j].rank > 0) factored++;
            else dense++;
        }
        if (factored > 0 && dense == 0) return 0;
        tr_gpt f;
        if (cp_lowrank_factorize(m, c, &f, m->params.flags, err, errlen) != 0) return -1;
        tr_gpt_free(m);
        *m = f;
        return 0;
    }
    return 0;
}

/* ------------------------------------------------------------ the policy */

typedef struct lowrank {
    tr_policy p;
    cp_lowrank_cfg cfg;
} lowrank;

static void lowrank_keys(pare_keys *k, void *cfgp) {
    cp_lowrank_cfg *c = cfgp;
    pare_opt r[] = {
        PARE_OPT_INT("rank", &c->rank, "0", 0, 1 << 20,
                     "factorize the rank-sites of the --init checkpoint at this rank by truncated SVD (0 = off)"),
        PARE_OPT_FLOAT("rank-energy", &c->energy, "0", 0, 1,
                       "or per site the smallest rank keeping this fraction of sum s_i^2 (0 = off)"),
        PARE_OPT_STRING("rank-sites", &c->sites, "", "globs of the sites to factorize (\"\" = every linear site)"),
        PARE_OPT_FLOAT("nuclear", &c->nuclear, "0", 0, 1e3,
                       "nuclear-norm lambda: dense rank-sites' singular values soft-thresholded every 10 steps"),
    };
    pare_keys_add(k, r, (int)(sizeof r / sizeof r[0]));
}

static bool lowrank_wanted(const void *cfgp) {
    const cp_lowrank_cfg *c = cfgp;
    return c->rank > 0 || c->energy > 0 || c->nuclear > 0;
}

static int lowrank_declare(tr_policy *pp, tr_trainer *t) {
    lowrank *lr = pp->user;
    const tr_gpt *m = t->model;
    int fact = 0, dense = 0;
    for (int i = 0; i < m->table.n_site; i++)
        if (selected(m, lr->cfg.sites, i)) m->table.site[i].rank > 0 ? fact++ : dense++;
    if ((lr->cfg.rank > 0 || lr->cfg.energy > 0) && fact == 0) {
        tr_trainer_fail(t, "lowrank: rank / rank-energy: the model has no factorized site among rank-sites '%s': "
                        "start from a dense checkpoint with --init CKPT (factorized by truncated SVD), or write the "
                        "factorized checkpoint with pare prune CKPT --rank R", lr->cfg.sites);
        return -1;
    }
    if (lr->cfg.nuclear > 0 && dense == 0) {
        tr_trainer_fail(t, "lowrank: nuclear: no dense site among rank-sites '%s' to regularise", lr->cfg.sites);
        return -1;
    }
    return 0;
}

/* Singular value thresholding of every dense selected site. */
static int lowrank_step(tr_policy *pp, tr_trainer *t) {
    lowrank *lr = pp->user;
    long done = t->step + 1;
    if (!(lr->cfg.nuclear > 0) || done % CP_NUCLEAR_EVERY != 0) return 0;
    tr_gpt *m = t->model;
    double tau = CP_NUCLEAR_EVERY * t->lr * lr->cfg.nuclear, total = 0;
    for (int i = 0; i < m->table.n_site; i++) {
        const pm_site *s = &m->table.site[i];
        if (!selected(m, lr->cfg.sites, i) || s->rank > 0) continue;
        int n = s->out, k = s->in, q = n < k ? n : k;
        float *w = m->params.data + m->params.offset[s->w];
        float *u = malloc((size_t)n * q * sizeof *u), *sv = malloc((size_t)q * sizeof *sv),
              *vt = malloc((size_t)q * k * sizeof *vt);
        char err[256];
        if (!u || !sv || !vt || cp_svd(w, n, k, u, sv, vt, err, sizeof err) != 0) {
            free(u), free(sv), free(vt);
            tr_trainer_fail(t, "lowrank: nuclear: %s: %s", s->name, u && sv && vt ? err : "out of memory");
            return -1;
        }
        for (int j = 0; j < q; j++) {
            total += sv[j];
            sv[j] = sv[j] > tau ? sv[j] - (float)tau : 0.0f;
        }
        for (int r = 0; r < n; r++)
            for (int c = 0; c < k; c++) {
                double x = 0;
                for (int j = 0; j < q; j++) x += (double)u[(size_t)r * q + j] * sv[j] * vt[(size_t)j * k + c];
                w[(size_t)r * k + c] = (float)x;
            }
        free(u), free(sv), free(vt);
    }
    ag_params_mask_apply(&m->params); /* a masked entry stays zero */
    tr_metric_set(t, "nuclear", lr->cfg.nuclear * total);
    return 0;
}

static void lowrank_describe(tr_policy *pp, tr_trainer *t, char *buf, size_t n) {
    lowrank *lr = pp->user;
    const tr_gpt *m = t->model;
    size_t u = (size_t)snprintf(buf, n, "lowrank:");
    size_t dense = 0, fact = 0;
    for (int i = 0; i < m->table.n_site; i++) {
        const pm_site *s = &m->table.site[i];
        if (!selected(m, lr->cfg.sites, i) || s->rank == 0) continue;
        dense += (size_t)s->out * s->in;
        fact += (size_t)s->rank * (s->out + s->in);
        if (u < n) u += (size_t)snprintf(buf + u, n - u, " %s r=%d", s->name, s->rank);
    }
    if (fact && u < n)
        u += (size_t)snprintf(buf + u, n - u, "; factors hold %zu weights instead of %zu (%.2fx)", fact, dense,
                              (double)fact / (double)dense);
    if (lr->cfg.nuclear > 0 && u < n)
        u += (size_t)snprintf(buf + u, n - u, "; nuclear-norm threshold %g every %d steps on the dense sites",
                              lr->cfg.nuclear, CP_NUCLEAR_EVERY);
}

static tr_policy *lowrank_create(const void *cfgp, char *err, size_t errlen) {
    const cp_lowrank_cfg *c = cfgp;
    if (c->rank > 0 && c->energy > 0) {
        snprintf(err, errlen, "rank %d and rank-energy %g exclude each other: give one", c->rank, c->energy);
        return NULL;
    }
    if (c->rank < 0 || !(c->energy >= 0 && c->energy <= 1) || !(c->nuclear >= 0)) {
        snprintf(err, errlen, "rank >= 0, rank-energy in [0, 1], nuclear >= 0 expected");
        return NULL;
    }
    lowrank *lr = calloc(1, sizeof *lr);
    if (!lr) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    lr->cfg = *c;
    lr->p = (tr_policy){.name = "lowrank", .user = lr, .declare = lowrank_declare, .after_step = lowrank_step,
                        .describe = lowrank_describe};
    return &lr->p;
}

static void lowrank_destroy(tr_policy *pp) { free(pp->user); }

const cp_kind cp_lowrank_kind = {
    .name = "lowrank",
    .summary = "low-rank factors of linear sites by truncated SVD; nuclear-norm-style regularisation",
    .cfg_size = sizeof(cp_lowrank_cfg),
    .keys = lowrank_keys,
    .wanted = lowrank_wanted,
    .create = lowrank_create,
    .destroy = lowrank_destroy,
};
