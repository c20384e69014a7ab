/* sparsity.c - sparsity and pruning as a training policy (see sparsity.h;
 * docs/sparsity.md has the formulas and results).
 *
 * Papers and the formula each part implements:
 *   L1 (Tibshirani 1996): loss + lambda sum |w|; subgradient lambda sign(w), or
 *     the proximal step w <- sign(w) max(|w| - lr lambda, 0) after each update
 *     (soft thresholding; Parikh and Boyd 2014, "Proximal Algorithms").
 *   Group lasso (Yuan and Lin 2006; for networks Wen et al. 2016, "Learning
 *     Structured Sparsity in Deep Neural Networks"): lambda sum_g ||w_g||_2,
 *     groups = one attention head (its qkv rows and biases, its proj columns)
 *     or one MLP unit (its fc row and bias, its mproj column); subgradient
 *     lambda w_g / ||w_g||, or the block soft-threshold
 *     w_g <- w_g max(0, 1 - lr lambda / ||w_g||).
 *   Magnitude pruning (Han et al. 2015, "Learning both Weights and
 *     Connections"): remove the round(s n) smallest |w| (PyTorch's
 *     l1_unstructured count), per site or over all sites at once
 *     (global_unstructured).
 *   Gradual pruning (Zhu and Gupta 2017, "To prune, or not to prune"):
 *     s_t = s_f + (s_i - s_f)(1 - (t - t0) / (n dt))^3 every dt steps.
 *   Heads (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"):
 *     importance = the loss change when the head is masked on calibration
 *     batches, or the L2 norm of its weights; neurons by weight norm or by
 *     E|a_i| ||W_mproj[:, i]|| (the mean size of their contribution).
 *   N:M (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks"):
 *     the M - N smallest |w| of every M consecutive inputs of a row.
 *   SET (Mocanu et al. 2018) and RigL (Evci et al. 2020, "Rigging the
 *     Lottery"): drop the round(f_t a) smallest active |w| of each site (a
 *     active weights), f_t = (alpha / 2)(1 + cos(pi t / t_end)), regrow as
 *     many at random (SET) or where |dL/dw| of the dense gradient is largest
 *     (RigL); ERK densities eps (out + in) / (out in).
 */
#include "sparsity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ counting */

size_t cp_prune_count(double amount, size_t n) {
    double k = nearbyint(amount * (double)n); /* the default rounding mode: half to even */
    if (k < 0) k = 0;
    if (k > (double)n) k = (double)n;
    return (size_t)k;
}

typedef struct scored {
    float score;
    uint32_t t;
    uint32_t i;
} scored;

static int cmp_scored(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Reorders a[0, n) so that a[0, k) are the k first under cmp (a total
 * order), in no particular order among themselves: quickselect with a
 * median-of-three pivot, O(n) on average instead of a full sort's n log n. */
static void select_k(scored *a, size_t n, size_t k, int (*cmp)(const void *, const void *)) {
    size_t lo = 0, hi = n; /* the k-th boundary lies in [lo, hi) */
    while (hi - lo > 16 && k > lo && k < hi) {
        size_t mid = lo + (hi - lo) / 2;
        scored x = a[lo], y = a[mid], z = a[hi - 1], piv;
        if (cmp(&x, &y) > 0) { scored t = x; x = y; y = t; }
        if (cmp(&y, &z) > 0) { scored t = y; y = z; z = t; }
        if (cmp(&x, &y) > 0) { scored t = x; x = y; y = t; }
        piv = y;
        size_t i = lo, j = hi - 1; /* Hoare partition: [lo, p] <= piv <= (p, hi) */
        for (;;) {
            while (cmp(&a[i], &piv) < 0) i++;
            while (cmp(&a[j], &piv) > 0) j--;
            if (i >= j) break;
            scored t = a[i];
            a[i] = a[j], a[j] = t;
            i++, j--;
        }
        if (k <= j) hi = j + 1;
        else lo = j + 1;
    }
    if (hi - lo > 1) qsort(a + lo, hi - lo, sizeof *a, cmp);
}

/* |w|, or -1 for an entry already masked (so it is counted first). */
static inline float mag(const float *w, const float *mask, size_t j) {
    return mask[j] == 0.0f ? -1.0f : fabsf(w[j]);
}

size_t cp_magnitude_prune(const float *const *w, float *const *mask, const size_t *n, int n_t, double amount) {
    size_t total = 0;
    for (int t = 0; t < n_t; t++) total += n[t];
    size_t k = cp_prune_count(amount, total);
    if (k == 0) return 0;
    scored *s = malloc(total * sizeof *s);
    if (!s) return (size_t)-1;
    size_t u = 0;
    for (int t = 0; t < n_t; t++)
        for (size_t j = 0; j < n[t]; j++) s[u++] = (scored){mag(w[t], mask[t], j), (uint32_t)t, (uint32_t)j};
    select_k(s, total, k, cmp_scored);
    for (size_t j = 0; j < k; j++) mask[s[j].t][s[j].i] = 0.0f;
    free(s);
    return k;
}

size_t cp_nm_prune(const float *w, float *mask, int rows, int cols, int n, int m, double frac) {
    size_t groups = (size_t)rows * (size_t)(cols / m), per = (size_t)(m - n);
    size_t nc = groups * per;
    scored *c = malloc((nc ? nc : 1) * sizeof *c);
    if (!c) return (size_t)-1;
    scored g[64];
    size_t u = 0;
    for (size_t gi = 0; gi < groups; gi++) {
        size_t base = gi * (size_t)m; /* rows are contiguous, so group gi starts at gi * m */
        for (int j = 0; j < m; j++) g[j] = (scored){mag(w, mask, base + (size_t)j), 0, (uint32_t)(base + (size_t)j)};
        qsort(g, (size_t)m, sizeof g[0], cmp_scored);
        for (size_t j = 0; j < per; j++) c[u++] = g[j];
    }
    size_t k = frac >= 1.0 ? nc : cp_prune_count(frac, nc);
    if (k < nc) select_k(c, nc, k, cmp_scored);
    size_t masked = 0;
    for (size_t j = 0; j < k; j++)
        if (mask[c[j].i] != 0.0f) mask[c[j].i] = 0.0f, masked++;
    free(c);
    return masked;
}

int cp_nm_parse(const char *spec, int *n, int *m, char *err, size_t errlen) {
    char *end;
    long a = strtol(spec ? spec : "", &end, 10);
    if (end == spec || *end != ':') {
        snprintf(err, errlen, "nm '%s': expected N:M, for example 2:4", spec ? spec : "");
        return -1;
    }
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (end == p || *end) {
        snprintf(err, errlen, "nm '%s': expected N:M, for example 2:4", spec);
        return -1;
    }
    if (a < 1 || b > 64 || a >= b) {
        snprintf(err, errlen, "nm '%s': expected 1 <= N < M <= 64 (at most N of every M consecutive weights stay)",
                 spec);
        return -1;
    }
    *n = (int)a, *m = (int)b;
    return 0;
}

double cp_schedule_at(int schedule, double s_f, int start, int end, int every, long done) {
    if (schedule == CP_SCHED_ONESHOT) return done == start ? s_f : -1.0;
    if (done < start || done > end || (done - start) % every != 0) return -1.0;
    long k = (done - start) / every, n = (end - start) / every;
    if (n == 0) return s_f;
    if (schedule == CP_SCHED_GRADUAL) {
        double r = 1.0 - (double)k / (double)n;
        return s_f + (0.0 - s_f) * r * r * r;
    }
    return 1.0 - pow(1.0 - s_f, (double)(k + 1) / (double)(n + 1));
}

double cp_dst_fraction(double alpha, long t, long t_end) {
    if (t > t_end || t_end <= 0) return 0.0;
    return 0.5 * alpha * (1.0 + cos(3.14159265358979323846 * (double)t / (double)t_end));
}

void cp_erk_densities(const int *out, const int *in, int n_t, double s, double *dens) {
    bool *dense = calloc((size_t)(n_t ? n_t : 1), sizeof *dense);
    if (!dense) { /* uniform as a fallback: still a valid distribution */
        for (int i = 0; i < n_t; i++) dens[i] = 1.0 - s;
        return;
    }
    for (;;) {
        double total = 0, budget = 0, raw_sum = 0;
        for (int i = 0; i < n_t; i++) total += (double)out[i] * in[i];
        budget = (1.0 - s) * total;
        for (int i = 0; i < n_t; i++) {
            double n = (double)out[i] * in[i];
            if (dense[i]) budget -= n;
            else raw_sum += (double)(out[i] + in[i]); /* raw_i n_i = (out + in) */
        }
        double eps = raw_sum > 0 ? budget / raw_sum : 0;
        bool again = false;
        for (int i = 0; i < n_t; i++) {
            double d = dense[i] ? 1.0 : eps * (double)(out[i] + in[i]) / ((double)out[i] * in[i]);
            if (!dense[i] && d > 1.0) dense[i] = true, again = true;
            dens[i] = d > 1.0 ? 1.0 : (d < 0 ? 0 : d);
        }
        if (!again) break;
    }
    free(dense);
}

/* ------------------------------------------------------ heads and units */

enum { U_ALL, U_IN, U_VALUE, U_OUT };
typedef void (*visit_fn)(size_t off, void *u);

/* Calls fn on the flat offset (in the parameter buffers) of every entry of
 * head or unit idx of layer l: U_IN its qkv rows and biases (fc row and
 * bias), U_VALUE only the value rows and biases, U_OUT its proj (mproj)
 * columns, U_ALL both sides. A factorized site's rows are U's, its columns V's. */
static void unit_visit(const tr_gpt *m, int l, bool head, int idx, int which, visit_fn fn, void *u) {
    const pm_table *tb = &m->table;
    const ag_params *p = &m->params;
    const pm_site *in = &tb->site[head ? m->layer[l].qkv : m->layer[l].fc];
    const pm_site *out = &tb->site[head ? m->layer[l].proj : m->layer[l].mproj];
    int D = head ? m->arch.head_dim : 1, A = head ? m->arch.n_head[l] * D : m->arch.n_hidden[l];
    if (which != U_OUT) {
        int rt = in->rank > 0 ? in->u : in->w; /* [3A, X] or [M, X] */
        size_t X = (size_t)p->t[rt].shape[1];
        int j0 = head ? (which == U_VALUE ? 2 : 0) : 0, j1 = head ? 3 : 1;
        for (int j = j0; j < j1; j++)
            for (int d = 0; d < D; d++) {
                size_t row = (size_t)j * A + (size_t)idx * D + (size_t)d;
                for (size_t x = 0; x < X; x++) fn(p->offset[rt] + row * X + x, u);
                if (in->b >= 0) fn(p->offset[in->b] + row, u);
            }
    }
    if (which == U_ALL || which == U_OUT) {
        int ct = out->rank > 0 ? out->v : out->w; /* [Y, A] */
        size_t Y = (size_t)p->t[ct].shape[0];
        for (size_t y = 0; y < Y; y++)
            for (int d = 0; d < D; d++) fn(p->offset[ct] + y * (size_t)A + (size_t)idx * D + (size_t)d, u);
    }
}

typedef struct acc {
    const float *x;
    float *y;
    double sum;
    size_t n;
    bool any;
} acc;

static void v_sumsq(size_t off, void *u) {
    acc *a = u;
    a->sum += (double)a->x[off] * a->x[off];
}
static void v_nonzero(size_t off, void *u) {
    acc *a = u;
    a->any |= a->x[off] != 0.0f;
}
static void v_zero(size_t off, void *u) { ((acc *)u)->y[off] = 0.0f; }
static void v_save(size_t off, void *u) {
    acc *a = u;
    a->y[a->n++] = a->x[off];
}
static void v_restore(size_t off, void *u) {
    acc *a = u;
    ((float *)a->x)[off] = a->y[a->n++];
}
static void v_count(size_t off, void *u) {
    (void)off;
    ((acc *)u)->n++;
}

static bool unit_zero(const tr_gpt *m, const float *buf, int l, bool head, int idx, int which) {
    acc a = {.x = buf};
    unit_visit(m, l, head, idx, which, v_nonzero, &a);
    return !a.any;
}

static double unit_norm(const tr_gpt *m, int l, bool head, int idx, int which) {
    acc a = {.x = m->params.data};
    unit_visit(m, l, head, idx, which, v_sumsq, &a);
    return sqrt(a.sum);
}

/* ------------------------------------------------------------ shrinking */

void cp_shrink_free(cp_shrink *s) {
    if (!s) return;
    for (int l = 0; s->keep_head && l < s->arch.n_layer; l++) free(s->keep_head[l]);
    for (int l = 0; s->keep_unit && l < s->arch.n_layer; l++) free(s->keep_unit[l]);
    free(s->keep_head);
    free(s->keep_unit);
    pm_arch_free(&s->arch);
    memset(s, 0, sizeof *s);
}

int cp_shrink_find(cp_shrink *s, const tr_gpt *m, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    const pm_arch *a = &m->arch;
    if (pm_arch_copy(&s->arch, a) != 0 || !(s->keep_head = calloc((size_t)a->n_layer, sizeof *s->keep_head)) ||
        !(s->keep_unit = calloc((size_t)a->n_layer, sizeof *s->keep_unit))) {
        snprintf(err, errlen, "out of memory");
        cp_shrink_free(s);
        return -1;
    }
    const float *w = m->params.data;
    for (int l = 0; l < a->n_layer; l++) {
        int H = a->n_head[l], M = a->n_hidden[l], kh = 0, ku = 0;
        s->keep_head[l] = calloc((size_t)H, 1);
        s->keep_unit[l] = calloc((size_t)M, 1);
        if (!s->keep_head[l] || !s->keep_unit[l]) {
            snprintf(err, errlen, "out of memory");
            cp_shrink_free(s);
            return -1;
        }
        for (int h = 0; h < H; h++) {
            s->keep_head[l][h] = !(unit_zero(m, w, l, true, h, U_VALUE) || unit_zero(m, w, l, true, h, U_OUT));
            kh += s->keep_head[l][h];
        }
        for (int i = 0; i < M; i++) {
            s->keep_unit[l][i] = !(unit_zero(m, w, l, false, i, U_IN) || unit_zero(m, w, l, false, i, U_OUT));
            ku += s->keep_unit[l][i];
        }
        if (kh == 0) s->keep_head[l][0] = 1, kh = 1; /* every layer keeps a head and a unit */
        if (ku == 0) s->keep_unit[l][0] = 1, ku = 1;
        s->removed_heads += H - kh;
        s->removed_units += M - ku;
        s->arch.n_head[l] = kh;
        s->arch.n_hidden[l] = ku;
    }
    char why[256];
    if (pm_arch_check(&s->arch, why, sizeof why) != 0) {
        snprintf(err, errlen, "the model without its pruned heads and units is not valid: %s (a factorized site's "
                 "rank must not exceed its smaller shape)", why);
        cp_shrink_free(s);
        return -1;
    }
    return 0;
}

void cp_shrink_gather(const cp_shrink *s, const pm_table *st, const char *name, const float *src, float *dst) {
    int ti = pm_table_tensor(st, name);
    const pm_tensor *t = &st->tensor[ti];
    const pm_site *site = &st->site[t->site];
    int rows = t->shape[0], cols = t->ndim > 1 ? t->shape[1] : 1, l = site->layer;
    bool rows_side = t->part == PM_W || t->part == PM_U || t->part == PM_B; /* [out, ..] tensors and biases */
    bool cols_side = t->part == PM_W || t->part == PM_V;                   /* [.., in] tensors */
    const unsigned char *keep = NULL;
    int D = 1, A = 1;
    bool by_row = false, by_col = false;
    if (site->role == PM_QKV || site->role == PM_PROJ) {
        keep = s->keep_head[l];
        D = s->arch.head_dim;
        by_row = site->role == PM_QKV && rows_side;
        by_col = site->role == PM_PROJ && cols_side;
        A = by_row ? rows / 3 : cols; /* the source layer's attention width */
    } else if (site->role == PM_FC || site->role == PM_MPROJ) {
        keep = s->keep_unit[l];
        by_row = site->role == PM_FC && rows_side;
        by_col = site->role == PM_MPROJ && cols_side;
    }
    size_t u = 0;
    if (by_row) {
        for (int r = 0; r < rows; r++) {
            int unit = site->role == PM_QKV ? (r % A) / D : r;
            if (!keep[unit]) continue;
            memcpy(dst + u, src + (size_t)r * cols, (size_t)cols * sizeof *dst);
            u += (size_t)cols;
        }
    } else if (by_col) {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                if (keep[site->role == PM_PROJ ? c / D : c]) dst[u++] = src[(size_t)r * cols + c];
    } else {
        memcpy(dst, src, (size_t)rows * cols * sizeof *dst);
    }
}

int cp_shrink_model(const cp_shrink *s, const tr_gpt *m, tr_gpt *out, int flags, char *err, size_t errlen) {
    if (tr_gpt_init_arch(out, &s->arch, flags, err, errlen) != 0) return -1;
    const ag_params *sp = &m->params;
    if (sp->mask && ag_params_mask_enable(&out->params) != 0) {
        snprintf(err, errlen, "out of memory");
        tr_gpt_free(out);
        return -1;
    }
    for (int i = 0; i < out->table.n_tensor; i++) {
        const char *name = out->table.tensor[i].name;
        int j = pm_table_tensor(&m->table, name);
        cp_shrink_gather(s, &m->table, name, sp->data + sp->offset[j], out->params.data + out->params.offset[i]);
        if (sp->mask)
            cp_shrink_gather(s, &m->table, name, sp->mask + sp->offset[j], out->params.mask + out->params.offset[i]);
    }
    ag_params_mask_apply(&out->params);
    return 0;
}

int cp_shrink_plan(const cp_shrink *s, const tr_gpt *m, pm_plan *plan, char *err, size_t errlen) {
    pm_table old;
    if (pm_table_build(&old, &plan->arch, err, errlen) != 0) {
        pm_table_free(&old);
        return -1;
    }
    int n_old = plan->table.n_tensor, rc = -1;
    pm_plan_entry *saved = malloc((size_t)n_old * sizeof *saved);
    if (!saved) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    memcpy(saved, plan->entry, (size_t)n_old * sizeof *saved);
    if (pm_plan_set_arch(plan, &s->arch, err, errlen) != 0) goto done;
    for (int i = 0; i < plan->table.n_tensor; i++) {
        const pm_tensor *t = &plan->table.tensor[i];
        int j = pm_table_tensor(&old, t->name), mj = pm_table_tensor(&m->table, t->name);
        pm_plan_entry *e = &plan->entry[i], *o = &saved[j];
        const float *src = o->data ? o->data : m->params.data + m->params.offset[mj];
        *e = *o;
        size_t n_new = (size_t)t->shape[0] * (size_t)(t->ndim > 1 ? t->shape[1] : 1);
        size_t n_src = (size_t)old.tensor[j].shape[0] * (size_t)(old.tensor[j].ndim > 1 ? old.tensor[j].shape[1] : 1);
        if (n_new == n_src) {
            e->data = src;
            continue;
        }
        if (o->scale || o->zero) {
            snprintf(err, errlen, "%s has fixed scales (set by %s) and loses rows or columns with the pruned heads "
                     "and units: the sparsity export must come before the one that sets scales", t->name, o->by);
            goto done;
        }
        float *buf = pm_plan_alloc(plan, n_new * sizeof *buf);
        if (!buf) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        cp_shrink_gather(s, &old, t->name, src, buf);
        e->data = buf;
        if (o->mask) {
            float *mf = malloc(n_src * sizeof *mf), *mg = malloc(n_new * sizeof *mg);
            uint8_t *mk = pm_plan_alloc(plan, n_new);
            if (!mf || !mg || !mk) {
                free(mf);
                free(mg);
                snprintf(err, errlen, "out of memory");
                goto done;
            }
            for (size_t q = 0; q < n_src; q++) mf[q] = o->mask[q];
            cp_shrink_gather(s, &old, t->name, mf, mg);
            for (size_t q = 0; q < n_new; q++) mk[q] = mg[q] != 0.0f;
            e->mask = mk;
            free(mf);
            free(mg);
        }
    }
    rc = 0;
done:
    free(saved);
    pm_table_free(&old);
    return rc;
}

/* ------------------------------------------------------------ the policy */

typedef struct seg {
    int param;    /* parameter index */
    int site;     /* table site */
    int rows, cols;
    size_t n;
    double final; /* this tensor's final sparsity */
} seg;

typedef struct sparsity {
    tr_policy p;
    cp_sparsity_cfg cfg;
    int nm_n, nm_m;
    double s_final;
    int end, dst_end;   /* resolved */
    seg *seg;
    int n_seg;
    size_t n_prunable;
    bool *layer_heads, *layer_units; /* [n_layer] layers whose heads / units are in scope */
    int n_layer;
    ag_rng rng;         /* SET's regrowth (saved in the checkpoint) */
    float *gstash;      /* RigL: |dense gradient| of every prunable entry at an update step */
    bool stashed;
    uint64_t moved_total;
    ag_ctx *cc;         /* calibration */
    tr_batch cb;
    double *act;        /* [sum M_l] mean |activation| of every unit */
    int *act_off;       /* [n_layer] */
} sparsity;

static bool is_structured(int k) { return k == CP_PRUNE_HEADS || k == CP_PRUNE_NEURONS; }
static bool is_dst(int k) { return k == CP_PRUNE_SET || k == CP_PRUNE_RIGL; }
static const char *const prune_names = "none|magnitude|heads|neurons|nm|set|rigl";
static const char *kind_name(int k) {
    static const char *const n[] = {"none", "magnitude", "heads", "neurons", "nm", "set", "rigl"};
    return k >= 0 && k <= CP_PRUNE_RIGL ? n[k] : "?";
}

static void sparsity_keys(pare_keys *k, void *cfgp) {
    cp_sparsity_cfg *c = cfgp;
    pare_opt r[] = {
        PARE_OPT_ENUM("prune", &c->prune, "none", prune_names,
                      "pruning: magnitude, whole heads, MLP neurons, N:M, or dynamic sparse training (set, rigl)"),
        PARE_OPT_FLOAT("sparsity", &c->sparsity, "0.5", 0, 1,
                       "final fraction of prunable weights removed (heads, neurons: of the units); below 1"),
        PARE_OPT_ENUM("schedule", &c->schedule, "oneshot", "oneshot|iterative|gradual",
                      "when to prune: once at prune-start, iteratively, or gradually (Zhu and Gupta's cubic)"),
        PARE_OPT_INT("prune-start", &c->start, "0", 0, 2000000000, "step of the first pruning event"),
        PARE_OPT_INT("prune-end", &c->end, "0", 0, 2000000000,
                     "step of the last pruning event (0 = halfway from prune-start to the last step)"),
        PARE_OPT_INT("prune-every", &c->every, "100", 1, 2000000000, "steps between pruning events"),
        PARE_OPT_STRING("prune-sites", &c->sites, "",
                        "globs of the prunable linear sites, \"h.*.mlp.*,lm_head\" (\"\" = every linear site)"),
        PARE_OPT_ENUM("prune-scope", &c->scope, "site", "site|global",
                      "magnitude, heads, neurons: each site (layer) alone, or one threshold over all"),
        PARE_OPT_ENUM("prune-score", &c->score, "norm", "norm|loss|activation",
                      "importance of heads (norm, loss on calibration batches) and neurons (norm, activation)"),
        PARE_OPT_INT("calib-batches", &c->calib_batches, "4", 1, 100000, "training batches that score heads and neurons"),
        PARE_OPT_STRING("nm", &c->nm, "2:4", "N:M sparsity for prune nm: at most N of every M consecutive inputs stay"),
        PARE_OPT_STRING("sparsity-plan", &c->plan, "",
                        "per-site final sparsity for magnitude pruning: \"glob=s,glob=s\" or @FILE (pare sensitivity)"),
        PARE_OPT_FLOAT("l1", &c->l1, "0", 0, 1e3, "L1 regularisation lambda sum |w| of the prunable weights (0 = off)"),
        PARE_OPT_FLAG("l1-proximal", &c->l1_proximal,
                      "L1 and group lasso by their proximal (soft-threshold) step after each update: exact zeros"),
        PARE_OPT_FLOAT("group-lasso", &c->group_lasso, "0", 0, 1e3,
                       "group lasso lambda sum ||w_g|| over heads and neurons (0 = off)"),
        PARE_OPT_ENUM("density", &c->density, "erk", "uniform|erk", "set, rigl: per-site densities"),
        PARE_OPT_INT("dst-every", &c->dst_every, "100", 1, 2000000000, "set, rigl: steps between mask updates"),
        PARE_OPT_FLOAT("dst-fraction", &c->dst_fraction, "0.3", 0, 1,
                       "set, rigl: fraction of active weights moved at the first update (cosine-decayed)"),
        PARE_OPT_INT("dst-end", &c->dst_end, "0", 0, 2000000000, "set, rigl: last mask update (0 = 3/4 of the steps)"),
    };
    pare_keys_add(k, r, (int)(sizeof r / sizeof r[0]));
}

static bool sparsity_wanted(const void *cfgp) {
    const cp_sparsity_cfg *c = cfgp;
    return c->prune != CP_PRUNE_NONE || c->l1 > 0 || c->group_lasso > 0;
}

/* Is site i prunable under the globs? */
static bool prunable_site(const tr_gpt *m, const char *globs, int i) {
    const pm_site *s = &m->table.site[i];
    if (!s->linear || (s->role == PM_HEAD && m->arch.tied)) return false;
    return !globs || !globs[0] || pm_glob_match(globs, s->name);
}

/* The prunable tensors of m: one per dense site, two per factorized one. */
static int build_segs(const tr_gpt *m, const char *globs, seg **out, int *n_out, char *err, size_t errlen) {
    seg *sg = calloc((size_t)m->table.n_site * 2 + 1, sizeof *sg);
    int n = 0;
    if (!sg) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < m->table.n_site; i++) {
        if (!prunable_site(m, globs, i)) continue;
        const pm_site *s = &m->table.site[i];
        int ts[2] = {s->rank > 0 ? s->u : s->w, s->rank > 0 ? s->v : -1};
        for (int k = 0; k < 2; k++) {
            if (ts[k] < 0) continue;
            const ag_tensor *t = &m->params.t[ts[k]];
            sg[n++] = (seg){ts[k], i, t->shape[0], t->shape[1], t->numel, 0};
        }
    }
    *out = sg;
    *n_out = n;
    return 0;
}

/* Parses the sparsity plan into per-segment final sparsities. */
static int apply_plan(sparsity *s, const tr_gpt *m, char *err, size_t errlen) {
    for (int i = 0; i < s->n_seg; i++) s->seg[i].final = s->s_final;
    const char *spec = s->cfg.plan;
    if (!spec || !spec[0]) return 0;
    char *text = NULL;
    if (spec[0] == '@') {
        FILE *f = fopen(spec + 1, "r");
        if (!f) {
            snprintf(err, errlen, "sparsity-plan %s: cannot open the file", spec + 1);
            return -1;
        }
        size_t cap = 1 << 16, len = 0;
        text = malloc(cap);
        if (text) len = fread(text, 1, cap - 1, f);
        fclose(f);
        if (!text) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        text[len] = '\0';
    } else {
        text = strdup(spec);
        if (!text) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    bool *set = calloc((size_t)s->n_seg + 1, sizeof *set);
    int rc = set ? 0 : -1;
    for (char *p = text; rc == 0 && *p;) {
        size_t len = strcspn(p, ",\n");
        char item[256];
        snprintf(item, sizeof item, "%.*s", (int)(len < 255 ? len : 255), p);
        p += len + (p[len] != '\0');
        char *b = item;
        while (*b == ' ') b++;
        if (!*b || *b == '#') continue;
        char *eq = strrchr(b, '=');
        char *end = NULL;
        double v = eq ? strtod(eq + 1, &end) : NAN;
        if (!eq || end == eq + 1 || (*end && *end != ' ') || !(v >= 0 && v < 1)) {
            snprintf(err, errlen, "sparsity-plan: '%s': expected GLOB=S with S in [0, 1)", b);
            rc = -1;
            break;
        }
        *eq = '\0';
        int hits = 0;
        for (int i = 0; i < s->n_seg; i++)
            if (!set[i] && pm_glob_match(b, m->table.site[s->seg[i].site].name)) s->seg[i].final = v, set[i] = 1, hits++;
        (void)hits;
    }
    free(set);
    free(text);
    return rc;
}

static const float *pdata(const tr_trainer *t, const seg *g) { return t->model->params.data + t->model->params.offset[g->param]; }

/* ---- calibration (heads by loss, neurons by activation) ---- */

static ag_tensor *calib_linear(void *user, ag_ctx *c, const pm_site *site, pm_part part, ag_tensor *x, ag_tensor *w,
                               ag_tensor *b) {
    sparsity *s = user;
    if (s->act && site->role == PM_MPROJ && (part == PM_W || part == PM_V)) { /* x = gelu(fc) [B, T, M] */
        int M = x->shape[x->ndim - 1];
        size_t rows = x->numel / (size_t)M;
        double *a = s->act + s->act_off[site->layer];
        for (size_t r = 0; r < rows; r++)
            for (int i = 0; i < M; i++) a[i] += fabsf(x->data[r * M + i]);
    }
    return ag_linear(c, x, w, b);
}

/* Mean cross-entropy of the model on the calibration batches (the same
 * batches at every call: a generator seeded from the run's seed). */
static int calib_loss(sparsity *s, tr_trainer *t, double *loss) {
    if (!s->cc && !(s->cc = ag_ctx_new())) {
        tr_trainer_fail(t, "sparsity: out of memory");
        return -1;
    }
    if (!s->cb.x && tr_batch_init(&s->cb, t->cfg.batch, t->data->ctx, t->err, sizeof t->err) != 0) return -1;
    ag_rng r;
    ag_rng_seed(&r, t->cfg.seed ^ 0x9e3779b97f4a7c15ull);
    tr_gpt_fwd f = {.linear = calib_linear, .user = s};
    ag_set_grad(s->cc, false);
    double sum = 0;
    for (int i = 0; i < s->cfg.calib_batches; i++) {
        if (ag_ctx_reset(s->cc) != 0 || tr_data_train_batch(t->data, &r, &s->cb, t->err, sizeof t->err) != 0) return -1;
        ag_tensor *lg = tr_gpt_forward(s->cc, t->model, s->cb.x, s->cb.B, s->cb.T, &f);
        ag_tensor *ce = lg ? ag_cross_entropy(s->cc, lg, s->cb.y, TR_IGNORE) : NULL;
        if (!ce) {
            tr_trainer_fail(t, "sparsity: calibration forward: %s", ag_error(s->cc) ? ag_error(s->cc) : "failed");
            return -1;
        }
        sum += ce->data[0];
    }
    *loss = sum / s->cfg.calib_batches;
    return 0;
}

/* ---- events ---- */

typedef struct unit_ref {
    float score;
    int layer, idx;
} unit_ref;

static int cmp_unit(const void *a, const void *b) {
    const unit_ref *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    if (x->layer != y->layer) return x->layer - y->layer;
    return x->idx - y->idx;
}

/* Structured pruning to a fraction `target` of the units in scope. */
static int prune_units(sparsity *s, tr_trainer *t, double target) {
    tr_gpt *m = t->model;
    ag_params *p = &m->params;
    bool head = s->cfg.prune == CP_PRUNE_HEADS;
    int L = m->arch.n_layer, total = 0;
    for (int l = 0; l < L; l++)
        if ((head ? s->layer_heads : s->layer_units)[l]) total += head ? m->arch.n_head[l] : m->arch.n_hidden[l];
    unit_ref *u = calloc((size_t)total + 1, sizeof *u);
    int *alive = calloc((size_t)L, sizeof *alive);
    float *saved = NULL;
    int rc = -1, n = 0;
    if (!u || !alive) goto oom;
    double base = 0;
    if (s->cfg.score == CP_SCORE_LOSS || s->cfg.score == CP_SCORE_ACTIVATION) {
        size_t na = 0;
        if (s->cfg.score == CP_SCORE_ACTIVATION) {
            memset(s->act, 0, sizeof(double) * (size_t)(s->act_off[L - 1] + m->arch.n_hidden[L - 1]));
        } else {
            acc c = {0};
            unit_visit(m, 0, head, 0, U_ALL, v_count, &c);
            for (int l = 1; l < L; l++) {
                acc d = {0};
                unit_visit(m, l, head, 0, U_ALL, v_count, &d);
                if (d.n > c.n) c.n = d.n;
            }
            na = c.n;
            if (!(saved = malloc(na * sizeof *saved))) goto oom;
        }
        if (calib_loss(s, t, &base) != 0) goto done;
    }
    for (int l = 0; l < L; l++) {
        if (!(head ? s->layer_heads : s->layer_units)[l]) continue;
        int U = head ? m->arch.n_head[l] : m->arch.n_hidden[l];
        for (int i = 0; i < U; i++) {
            unit_ref r = {0, l, i};
            if (unit_zero(m, p->mask, l, head, i, U_ALL)) r.score = -INFINITY; /* already pruned: first */
            else if (s->cfg.score == CP_SCORE_NORM) r.score = (float)unit_norm(m, l, head, i, U_ALL);
            else if (s->cfg.score == CP_SCORE_ACTIVATION) {
                double tokens = (double)s->cfg.calib_batches * s->cb.B * s->cb.T;
                r.score = (float)(s->act[s->act_off[l] + i] / tokens * unit_norm(m, l, head, i, U_OUT));
            } else {
                acc sv = {.x = p->data, .y = saved};
                unit_visit(m, l, head, i, U_ALL, v_save, &sv);
                acc z = {.y = p->data};
                unit_visit(m, l, head, i, U_ALL, v_zero, &z);
                double lm;
                int bad = calib_loss(s, t, &lm);
                acc rs = {.x = p->data, .y = saved};
                unit_visit(m, l, head, i, U_ALL, v_restore, &rs);
                if (bad) goto done;
                r.score = (float)(lm - base);
            }
            u[n++] = r;
            alive[l]++;
        }
    }
    /* how many go: per layer (site scope) or over all layers (global), always leaving one per layer */
    bool *drop = calloc((size_t)n + 1, sizeof *drop);
    if (!drop) goto oom;
    if (s->cfg.scope == CP_SCOPE_GLOBAL) {
        qsort(u, (size_t)n, sizeof *u, cmp_unit);
        size_t k = cp_prune_count(target, (size_t)n), done = 0;
        for (int j = 0; j < n && done < k; j++)
            if (alive[u[j].layer] > 1) drop[j] = true, alive[u[j].layer]--, done++;
    } else {
        int j0 = 0;
        for (int l = 0; l < L; l++) {
            int j1 = j0;
            while (j1 < n && u[j1].layer == l) j1++;
            if (j1 == j0) continue;
            qsort(u + j0, (size_t)(j1 - j0), sizeof *u, cmp_unit);
            size_t k = cp_prune_count(target, (size_t)(j1 - j0));
            if (k > (size_t)(j1 - j0 - 1)) k = (size_t)(j1 - j0 - 1);
            for (size_t q = 0; q < k; q++) drop[j0 + (int)q] = true;
            j0 = j1;
        }
    }
    for (int j = 0; j < n; j++)
        if (drop[j]) {
            acc z = {.y = p->mask};
            unit_visit(m, u[j].layer, head, u[j].idx, U_ALL, v_zero, &z);
        }
    free(drop);
    ag_params_mask_apply(p);
    rc = 0;
    goto done;
oom:
    tr_trainer_fail(t, "sparsity: out of memory");
done:
    free(u);
    free(alive);
    free(saved);
    return rc;
}

/* One pruning event after `done` steps at target sparsity (the schedule's
 * for s_final; per-site finals scale with it). */
static int prune_event(sparsity *s, tr_trainer *t, long done, bool now) {
    ag_params *p = &t->model->params;
    const cp_sparsity_cfg *c = &s->cfg;
    int sched = now ? CP_SCHED_ONESHOT : c->schedule;
    long when = now ? c->start : done;
    double target = cp_schedule_at(sched, s->s_final, c->start, s->end, c->every, when);
    if (target < 0) return 0;
    if (is_structured(c->prune)) return prune_units(s, t, target);
    if (c->prune == CP_PRUNE_NM) {
        double frac = s->s_final > 0 ? target / s->s_final : 1.0;
        for (int i = 0; i < s->n_seg; i++) {
            seg *g = &s->seg[i];
            if (cp_nm_prune(pdata(t, g), p->mask + p->offset[g->param], g->rows, g->cols, s->nm_n, s->nm_m,
                            frac > 1 ? 1 : frac) == (size_t)-1)
                goto oom;
        }
    } else if (c->scope == CP_SCOPE_GLOBAL) {
        const float **w = malloc((size_t)s->n_seg * sizeof *w);
        float **mk = malloc((size_t)s->n_seg * sizeof *mk);
        size_t *n = malloc((size_t)s->n_seg * sizeof *n);
        size_t r = 0;
        if (w && mk && n) {
            for (int i = 0; i < s->n_seg; i++)
                w[i] = pdata(t, &s->seg[i]), mk[i] = p->mask + p->offset[s->seg[i].param], n[i] = s->seg[i].n;
            r = cp_magnitude_prune(w, mk, n, s->n_seg, target);
        }
        bool bad = !w || !mk || !n || r == (size_t)-1;
        free(w);
        free(mk);
        free(n);
        if (bad) goto oom;
    } else {
        for (int i = 0; i < s->n_seg; i++) {
            seg *g = &s->seg[i];
            double tg = cp_schedule_at(sched, g->final, c->start, s->end, c->every, when);
            const float *w = pdata(t, g);
            float *mk = p->mask + p->offset[g->param];
            if (tg > 0 && cp_magnitude_prune(&w, &mk, &g->n, 1, tg) == (size_t)-1) goto oom;
        }
    }
    ag_params_mask_apply(p);
    return 0;
oom:
    tr_trainer_fail(t, "sparsity: out of memory");
    return -1;
}

/* SET / RigL: the masks at the run's sparsity before the first step (the
 * smallest |w| of each site go; with random initial weights that is a random
 * mask). */
static int dst_init(sparsity *s, tr_trainer *t) {
    ag_params *p = &t->model->params;
    int *out = calloc((size_t)s->n_seg + 1, sizeof *out), *in = calloc((size_t)s->n_seg + 1, sizeof *in);
    double *d = calloc((size_t)s->n_seg + 1, sizeof *d);
    int rc = -1;
    if (!out || !in || !d) {
        tr_trainer_fail(t, "sparsity: out of memory");
        goto done;
    }
    for (int i = 0; i < s->n_seg; i++) out[i] = s->seg[i].rows, in[i] = s->seg[i].cols;
    if (s->cfg.density == CP_DENSITY_ERK) cp_erk_densities(out, in, s->n_seg, s->s_final, d);
    else
        for (int i = 0; i < s->n_seg; i++) d[i] = 1.0 - s->s_final;
    for (int i = 0; i < s->n_seg; i++) {
        seg *g = &s->seg[i];
        const float *w = pdata(t, g);
        float *mk = p->mask + p->offset[g->param];
        g->final = 1.0 - d[i];
        if (cp_magnitude_prune(&w, &mk, &g->n, 1, 1.0 - d[i]) == (size_t)-1) {
            tr_trainer_fail(t, "sparsity: out of memory");
            goto done;
        }
    }
    ag_params_mask_apply(p);
    rc = 0;
done:
    free(out);
    free(in);
    free(d);
    return rc;
}

static bool dst_due(const sparsity *s, const tr_trainer *t, long done) {
    return is_dst(s->cfg.prune) && done % s->cfg.dst_every == 0 && done <= s->dst_end && done < t->cfg.steps;
}

static int cmp_desc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* One SET / RigL update after `done` steps. Returns the weights moved, or -1. */
static long dst_update(sparsity *s, tr_trainer *t, long done) {
    ag_params *p = &t->model->params;
    double f = cp_dst_fraction(s->cfg.dst_fraction, done, s->dst_end);
    long moved = 0;
    for (int i = 0; i < s->n_seg; i++) {
        seg *g = &s->seg[i];
        float *w = p->data + p->offset[g->param], *mk = p->mask + p->offset[g->param];
        float *mm = p->m + p->offset[g->param], *vv = p->v + p->offset[g->param];
        size_t active = 0;
        for (size_t j = 0; j < g->n; j++) active += mk[j] != 0.0f;
        size_t k = cp_prune_count(f, active);
        if (k == 0 || active == g->n) continue;
        scored *a = malloc((active ? active : 1) * sizeof *a), *c = malloc((g->n - active + k) * sizeof *c);
        unsigned char *dropped = calloc(g->n, 1);
        if (!a || !c || !dropped) {
            free(a), free(c), free(dropped);
            tr_trainer_fail(t, "sparsity: out of memory");
            return -1;
        }
        size_t na = 0, nc = 0;
        for (size_t j = 0; j < g->n; j++)
            if (mk[j] != 0.0f) a[na++] = (scored){fabsf(w[j]), 0, (uint32_t)j};
        select_k(a, na, k, cmp_scored);
        for (size_t j = 0; j < k; j++) mk[a[j].i] = 0.0f, dropped[a[j].i] = 1;
        size_t goff = 0; /* this tensor's place in the stash */
        for (int q = 0; q < i; q++) goff += s->seg[q].n;
        const float *gs = s->gstash ? s->gstash + goff : NULL;
        for (size_t j = 0; j < g->n; j++)
            if (mk[j] == 0.0f) c[nc++] = (scored){gs ? gs[j] : 0.0f, 0, (uint32_t)j};
        if (s->cfg.prune == CP_PRUNE_RIGL) {
            select_k(c, nc, k, cmp_desc); /* the largest dense gradients, lower index on ties */
        } else {
            for (size_t j = 0; j < k; j++) { /* a uniform random k-subset: partial Fisher-Yates */
                size_t r = j + (size_t)ag_rng_below(&s->rng, nc - j);
                scored tmp = c[j];
                c[j] = c[r], c[r] = tmp;
            }
        }
        for (size_t j = 0; j < k; j++) {
            uint32_t q = c[j].i;
            mk[q] = 1.0f, w[q] = 0.0f, mm[q] = 0.0f, vv[q] = 0.0f;
            moved += !dropped[q];
        }
        free(a), free(c), free(dropped);
    }
    ag_params_mask_apply(p);
    return moved;
}

/* ---- regularisers ---- */

typedef struct gl_acc {
    float *x, *g;
    double scale;
} gl_acc;

static void v_add_scaled(size_t off, void *u) {
    gl_acc *a = u;
    a->g[off] += (float)(a->scale * a->x[off]);
}
static void v_scale(size_t off, void *u) {
    gl_acc *a = u;
    a->x[off] *= (float)a->scale;
}

/* Group lasso over the heads and units in scope: subgradient (grad != NULL)
 * or block soft-threshold with tau. Returns sum_g ||w_g||. */
static double group_lasso(sparsity *s, tr_trainer *t, double lambda, double tau, bool prox) {
    tr_gpt *m = t->model;
    double total = 0;
    for (int l = 0; l < m->arch.n_layer; l++)
        for (int h = 0; h < 2; h++) {
            bool head = h == 0;
            if (!(head ? s->layer_heads : s->layer_units)[l]) continue;
            int U = head ? m->arch.n_head[l] : m->arch.n_hidden[l];
            for (int i = 0; i < U; i++) {
                double nrm = unit_norm(m, l, head, i, U_ALL);
                total += nrm;
                if (nrm == 0) continue;
                gl_acc a = {m->params.data, m->params.grad, 0};
                if (prox) {
                    a.scale = nrm > tau ? 1.0 - tau / nrm : 0.0;
                    unit_visit(m, l, head, i, U_ALL, v_scale, &a);
                } else {
                    a.scale = lambda / nrm;
                    unit_visit(m, l, head, i, U_ALL, v_add_scaled, &a);
                }
            }
        }
    return total;
}

/* ---- the hooks ---- */

static int sparsity_declare(tr_policy *pp, tr_trainer *t) {
    sparsity *s = pp->user;
    cp_sparsity_cfg *c = &s->cfg;
    tr_gpt *m = t->model;
    char err[512];
    if (build_segs(m, c->sites, &s->seg, &s->n_seg, err, sizeof err) != 0) {
        tr_trainer_fail(t, "sparsity: %s", err);
        return -1;
    }
    if (s->n_seg == 0) {
        tr_trainer_fail(t, "sparsity: prune-sites '%s' matches no linear site of the model (a tied head is the "
                        "embedding and is not prunable): expected globs such as h.*.mlp.fc", c->sites);
        return -1;
    }
    for (int i = 0; i < s->n_seg; i++) s->n_prunable += s->seg[i].n;
    int L = s->n_layer = m->arch.n_layer;
    s->layer_heads = calloc((size_t)L, sizeof *s->layer_heads);
    s->layer_units = calloc((size_t)L, sizeof *s->layer_units);
    s->act_off = calloc((size_t)L, sizeof *s->act_off);
    if (!s->layer_heads || !s->layer_units || !s->act_off) {
        tr_trainer_fail(t, "sparsity: out of memory");
        return -1;
    }
    int nh = 0, nu = 0, sum_m = 0;
    for (int l = 0; l < L; l++) {
        s->layer_heads[l] = prunable_site(m, c->sites, m->layer[l].qkv);
        s->layer_units[l] = prunable_site(m, c->sites, m->layer[l].fc);
        nh += s->layer_heads[l], nu += s->layer_units[l];
        s->act_off[l] = sum_m;
        sum_m += m->arch.n_hidden[l];
    }
    if (c->prune == CP_PRUNE_HEADS && nh == 0) {
        tr_trainer_fail(t, "sparsity: prune heads: prune-sites '%s' matches no attn.qkv site", c->sites);
        return -1;
    }
    if (c->prune == CP_PRUNE_NEURONS && nu == 0) {
        tr_trainer_fail(t, "sparsity: prune neurons: prune-sites '%s' matches no mlp.fc site", c->sites);
        return -1;
    }
    if (c->prune == CP_PRUNE_NEURONS && c->score == CP_SCORE_ACTIVATION &&
        !(s->act = calloc((size_t)sum_m, sizeof *s->act))) {
        tr_trainer_fail(t, "sparsity: out of memory");
        return -1;
    }
    if (c->prune == CP_PRUNE_NM)
        for (int i = 0; i < s->n_seg; i++)
            if (s->seg[i].cols % s->nm_m) {
                tr_trainer_fail(t, "sparsity: nm %d:%d: %s has %d inputs, not a multiple of %d", s->nm_n, s->nm_m,
                                m->params.names[s->seg[i].param], s->seg[i].cols, s->nm_m);
                return -1;
            }
    s->end = c->end ? c->end : c->start + (t->cfg.steps - c->start) / 2;
    s->dst_end = c->dst_end ? c->dst_end : (int)((3L * t->cfg.steps) / 4);
    if (c->prune != CP_PRUNE_NONE && !is_dst(c->prune)) {
        if (s->end < c->start) {
            tr_trainer_fail(t, "sparsity: prune-end %d comes before prune-start %d", s->end, c->start);
            return -1;
        }
        if (c->schedule == CP_SCHED_GRADUAL && s->end - c->start < c->every) {
            tr_trainer_fail(t, "sparsity: a gradual schedule needs prune-end - prune-start (%d) >= prune-every (%d)",
                            s->end - c->start, c->every);
            return -1;
        }
    }
    if (apply_plan(s, m, err, sizeof err) != 0) {
        tr_trainer_fail(t, "sparsity: %s", err);
        return -1;
    }
    if (c->prune == CP_PRUNE_RIGL && !(s->gstash = calloc(s->n_prunable, sizeof *s->gstash))) {
        tr_trainer_fail(t, "sparsity: out of memory");
        return -1;
    }
    ag_rng_seed(&s->rng, t->cfg.seed ^ 0x5e7c0ffee1234567ull);
    if (c->prune != CP_PRUNE_NONE && tr_trainer_enable_masks(t) != 0) return -1;
    return 0;
}

static void report(sparsity *s, tr_trainer *t, bool per_site) {
    const float *d = t->model->params.data;
    size_t zeros = 0;
    int i = 0;
    tr_metric_set(t, "sparsity", 0); /* first, so the per-site figures cannot crowd it out */
    while (i < s->n_seg) {
        int site = s->seg[i].site;
        size_t z = 0, n = 0;
        for (; i < s->n_seg && s->seg[i].site == site; i++) {
            const float *w = d + t->model->params.offset[s->seg[i].param];
            for (size_t j = 0; j < s->seg[i].n; j++) z += w[j] == 0.0f;
            n += s->seg[i].n;
        }
        zeros += z;
        if (per_site) {
            char name[64];
            snprintf(name, sizeof name, "sp.%s", t->model->table.site[site].name);
            tr_metric_set(t, name, (double)z / (double)n);
        }
    }
    tr_metric_set(t, "sparsity", (double)zeros / (double)s->n_prunable);
}

static int sparsity_start(tr_policy *pp, tr_trainer *t) {
    sparsity *s = pp->user;
    if (t->step != 0) return 0;
    int rc = 0;
    if (is_dst(s->cfg.prune)) rc = dst_init(s, t);
    else if (s->cfg.prune != CP_PRUNE_NONE) rc = prune_event(s, t, 0, false);
    return rc;
}

static int sparsity_backward(tr_policy *pp, tr_trainer *t) {
    sparsity *s = pp->user;
    ag_params *p = &t->model->params;
    const cp_sparsity_cfg *c = &s->cfg;
    if (c->l1 > 0) {
        double sum = 0;
        for (int i = 0; i < s->n_seg; i++) {
            const float *w = p->data + p->offset[s->seg[i].param];
            float *g = p->grad + p->offset[s->seg[i].param];
            for (size_t j = 0; j < s->seg[i].n; j++) {
                sum += fabsf(w[j]);
                if (!c->l1_proximal) g[j] += (float)(c->l1 * ((w[j] > 0) - (w[j] < 0)));
            }
        }
        tr_metric_set(t, "l1", c->l1 * sum);
    }
    if (c->group_lasso > 0 && !c->l1_proximal)
        tr_metric_set(t, "group_lasso", c->group_lasso * group_lasso(s, t, c->group_lasso, 0, false));
    if (s->gstash && dst_due(s, t, t->step + 1)) { /* RigL grows where the dense gradient is largest */
        size_t u = 0;
        for (int i = 0; i < s->n_seg; i++) {
            const float *g = p->grad + p->offset[s->seg[i].param];
            for (size_t j = 0; j < s->seg[i].n; j++) s->gstash[u++] = fabsf(g[j]);
        }
        s->stashed = true;
    }
    return 0;
}

static int sparsity_step(tr_policy *pp, tr_trainer *t) {
    sparsity *s = pp->user;
    const cp_sparsity_cfg *c = &s->cfg;
    ag_params *p = &t->model->params;
    long done = t->step + 1;
    bool changed = done == 1;
    if (c->l1_proximal && (c->l1 > 0 || c->group_lasso > 0)) {
        double tau = t->lr * c->l1;
        if (c->l1 > 0)
            for (int i = 0; i < s->n_seg; i++) {
                float *w = p->data + p->offset[s->seg[i].param];
                for (size_t j = 0; j < s->seg[i].n; j++) {
                    float a = fabsf(w[j]) - (float)tau;
                    w[j] = a > 0 ? copysignf(a, w[j]) : 0.0f;
                }
            }
        if (c->group_lasso > 0)
            tr_metric_set(t, "group_lasso",
                          c->group_lasso * group_lasso(s, t, c->group_lasso, t->lr * c->group_lasso, true));
    }
    if (dst_due(s, t, done)) {
        if (c->prune == CP_PRUNE_RIGL && !s->stashed) {
            tr_trainer_fail(t, "sparsity: rigl: no dense gradient was kept for the update at step %ld", done);
            return -1;
        }
        long moved = dst_update(s, t, done);
        if (moved < 0) return -1;
        s->stashed = false;
        s->moved_total += (uint64_t)moved;
        tr_metric_set(t, "moved", (double)moved);
        changed = true;
    }
    if (is_dst(c->prune)) tr_metric_set(t, "moved_total", (double)s->moved_total);
    if (c->prune != CP_PRUNE_NONE && !is_dst(c->prune) &&
        cp_schedule_at(c->schedule, s->s_final, c->start, s->end, c->every, done) >= 0) {
        if (prune_event(s, t, done, false) != 0) return -1;
        changed = true;
    }
    bool eval = done == t->cfg.steps || (t->cfg.eval_every > 0 && done % t->cfg.eval_every == 0);
    report(s, t, changed || eval);
    return 0;
}

int cp_sparsity_apply_now(tr_policy *pp, tr_trainer *t) {
    sparsity *s = pp->user;
    if (!t->prepared && tr_trainer_prepare(t) != 0) return -1;
    if (is_dst(s->cfg.prune)) return dst_init(s, t);
    if (s->cfg.prune == CP_PRUNE_NONE) return 0;
    return prune_event(s, t, s->cfg.start, true);
}

#define SPRS_VERSION 1u

static int sparsity_save(tr_policy *pp, tr_trainer *t, tr_ckpt_writer *w) {
    (void)t;
    sparsity *s = pp->user;
    tr_ckpt_begin(w, "SPRS");
    tr_wr_u32(w, SPRS_VERSION);
    for (int k = 0; k < 4; k++) tr_wr_u64(w, s->rng.s[k]);
    tr_wr_u64(w, s->moved_total);
    tr_ckpt_end(w);
    return 0;
}

static int sparsity_load(tr_policy *pp, tr_trainer *t, const tr_ckpt_file *f) {
    sparsity *s = pp->user;
    if (!tr_ckpt_find(f, "SPRS")) return 0; /* a checkpoint of a run without this policy: a fresh state */
    tr_rd rd;
    uint32_t ver = 0;
    uint64_t r[4] = {0}, moved = 0;
    if (tr_rd_open(&rd, f, "SPRS") == 0 && tr_rd_u32(&rd, "version", &ver) == 0 && ver != SPRS_VERSION)
        tr_rd_fail(&rd, "field version = %u: this pare reads version %u", ver, SPRS_VERSION);
    for (int k = 0; k < 4; k++) tr_rd_u64(&rd, "rng", &r[k]);
    tr_rd_u64(&rd, "moved_total", &moved);
    if (tr_rd_done(&rd) != 0) {
        tr_trainer_fail(t, "sparsity: checkpoint %s: %s", f->path, rd.err);
        return -1;
    }
    if ((r[0] | r[1] | r[2] | r[3]) == 0) {
        tr_trainer_fail(t, "sparsity: checkpoint %s: section SPRS: the generator's state is all zero", f->path);
        return -1;
    }
    memcpy(s->rng.s, r, sizeof r);
    s->moved_total = moved;
    return 0;
}

static void sparsity_describe(tr_policy *pp, tr_trainer *t, char *buf, size_t n) {
    sparsity *s = pp->user;
    const cp_sparsity_cfg *c = &s->cfg;
    static const char *const sched[] = {"one-shot", "iterative", "gradual (cubic)"};
    size_t u = (size_t)snprintf(buf, n, "sparsity: %d prunable tensors, %zu weights", s->n_seg, s->n_prunable);
    if (c->prune == CP_PRUNE_NONE) {
    } else if (is_dst(c->prune)) {
        if (u < n)
            u += (size_t)snprintf(buf + u, n - u, "; %s at %g (%s densities), %g of the active weights moved every %d "
                                  "steps until step %d, cosine-decayed", c->prune == CP_PRUNE_SET ? "SET" : "RigL",
                                  s->s_final, c->density == CP_DENSITY_ERK ? "ERK" : "uniform", c->dst_fraction,
                                  c->dst_every, s->dst_end);
    } else if (u < n) {
        u += (size_t)snprintf(buf + u, n - u, "; %s pruning to %g%s%s, %s", kind_name(c->prune), s->s_final,
                              c->prune == CP_PRUNE_NM ? " (" : "", c->prune == CP_PRUNE_NM ? c->nm : "",
                              sched[c->schedule]);
        if (c->prune == CP_PRUNE_NM && u < n) u += (size_t)snprintf(buf + u, n - u, ")");
        if (u < n && c->schedule == CP_SCHED_ONESHOT) u += (size_t)snprintf(buf + u, n - u, " at step %d", c->start);
        else if (u < n)
            u += (size_t)snprintf(buf + u, n - u, " from step %d to %d every %d", c->start, s->end, c->every);
        if (u < n && (c->schedule == CP_SCHED_ONESHOT ? c->start : s->end) > t->cfg.steps)
            u += (size_t)snprintf(buf + u, n - u, " (beyond --steps %d: a resume with more steps reaches it)",
                                  t->cfg.steps);
        if (u < n && c->prune != CP_PRUNE_NM)
            u += (size_t)snprintf(buf + u, n - u, ", %s", c->scope == CP_SCOPE_GLOBAL ? "one global threshold" : "per site");
        if (u < n && is_structured(c->prune))
            u += (size_t)snprintf(buf + u, n - u, ", scored by %s",
                                  c->score == CP_SCORE_NORM ? "weight norm" : c->score == CP_SCORE_LOSS ? "calibration loss" : "activation");
    }
    if (c->l1 > 0 && u < n) u += (size_t)snprintf(buf + u, n - u, "; L1 %g%s", c->l1, c->l1_proximal ? " (proximal)" : "");
    if (c->group_lasso > 0 && u < n) u += (size_t)snprintf(buf + u, n - u, "; group lasso %g", c->group_lasso);
}

/* Export: a structurally pruned model's heads and units go (the plan gets
 * the smaller architecture and gathered tensors); masked weights are zeros
 * in the dense storage types, and every pruned tensor's entry carries its
 * mask for the storage types that store only kept weights. */
static int sparsity_export(tr_policy *pp, const tr_gpt *m, const tr_ckpt_file *f, pm_plan *plan, char *err,
                           size_t errlen) {
    (void)f;
    sparsity *s = pp->user;
    if (is_structured(s->cfg.prune)) {
        cp_shrink sh;
        if (cp_shrink_find(&sh, m, err, errlen) != 0) return -1;
        int rc = sh.removed_heads + sh.removed_units > 0 ? cp_shrink_plan(&sh, m, plan, err, errlen) : 0;
        cp_shrink_free(&sh);
        return rc;
    }
    if (!m->params.mask) return 0;
    seg *sg = NULL;
    int ns = 0;
    if (build_segs(m, s->cfg.sites, &sg, &ns, err, errlen) != 0) return -1;
    for (int i = 0; i < ns; i++) {
        pm_plan_entry *e = pm_plan_find(plan, m->params.names[sg[i].param]);
        if (!e) continue;
        uint8_t *mk = pm_plan_alloc(plan, sg[i].n);
        if (!mk) {
            free(sg);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        const float *src = m->params.mask + m->params.offset[sg[i].param];
        for (size_t j = 0; j < sg[i].n; j++) mk[j] = src[j] != 0.0f;
        e->mask = mk;
    }
    free(sg);
    return 0;
}

static tr_policy *sparsity_create(const void *cfgp, char *err, size_t errlen) {
    const cp_sparsity_cfg *c = cfgp;
    int nn = 0, mm = 0;
    if (c->prune < CP_PRUNE_NONE || c->prune > CP_PRUNE_RIGL) {
        snprintf(err, errlen, "prune %d: expected one of %s", c->prune, prune_names);
        return NULL;
    }
    if (!(c->sparsity >= 0 && c->sparsity < 1)) {
        snprintf(err, errlen, "sparsity %g: expected a fraction in [0, 1) (at least one weight must stay)", c->sparsity);
        return NULL;
    }
    if (c->prune == CP_PRUNE_NM && cp_nm_parse(c->nm, &nn, &mm, err, errlen) != 0) return NULL;
    if (c->every < 1 || c->dst_every < 1 || c->calib_batches < 1) {
        snprintf(err, errlen, "prune-every, dst-every and calib-batches: expected at least 1");
        return NULL;
    }
    if (!(c->dst_fraction >= 0 && c->dst_fraction <= 1)) {
        snprintf(err, errlen, "dst-fraction %g: expected a fraction in [0, 1]", c->dst_fraction);
        return NULL;
    }
    if (c->end && c->end < c->start) {
        snprintf(err, errlen, "prune-end %d comes before prune-start %d", c->end, c->start);
        return NULL;
    }
    if (is_structured(c->prune) && c->score == (c->prune == CP_PRUNE_HEADS ? CP_SCORE_ACTIVATION : CP_SCORE_LOSS)) {
        snprintf(err, errlen, "prune-score %s: heads are scored by norm or loss, neurons by norm or activation",
                 c->score == CP_SCORE_LOSS ? "loss" : "activation");
        return NULL;
    }
    if (c->plan && c->plan[0] && (c->prune != CP_PRUNE_MAGNITUDE || c->scope == CP_SCOPE_GLOBAL)) {
        snprintf(err, errlen, "sparsity-plan gives per-site sparsities: it needs prune magnitude with prune-scope site");
        return NULL;
    }
    if (!(c->l1 >= 0) || !(c->group_lasso >= 0)) {
        snprintf(err, errlen, "l1 and group-lasso: expected >= 0");
        return NULL;
    }
    sparsity *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *c;
    s->nm_n = nn, s->nm_m = mm;
    s->s_final = c->prune == CP_PRUNE_NM ? (double)(mm - nn) / mm : c->sparsity;
    s->p = (tr_policy){.name = "sparsity", .user = s, .declare = sparsity_declare, .on_start = sparsity_start,
                       .after_backward = sparsity_backward, .after_step = sparsity_step, .save = sparsity_save,
                       .load = sparsity_load, .describe = sparsity_describe, .export = sparsity_export};
    return &s->p;
}

static void sparsity_destroy(tr_policy *pp) {
    sparsity *s = pp->user;
    free(s->seg);
    free(s->layer_heads);
    free(s->layer_units);
    free(s->gstash);
    free(s->act);
    free(s->act_off);
    ag_ctx_free(s->cc);
    tr_batch_free(&s->cb);
    free(s);
}

const cp_kind cp_sparsity_kind = {
    .name = "sparsity",
    .summary = "masks, L1 and group lasso, magnitude / structured / N:M pruning on a schedule, SET and RigL",
    .cfg_size = sizeof(cp_sparsity_cfg),
    .keys = sparsity_keys,
    .wanted = sparsity_wanted,
    .create = sparsity_create,
    .destroy = sparsity_destroy,
};
