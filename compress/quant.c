/* quant.c - quantization as a training policy (see quant.h; formulas and
 * papers in docs/quantization.md).
 *
 * Papers: fake quantization with the straight-through estimator (Bengio et
 * al. 2013; Jacob et al. 2018, "Quantization and Training of Neural Networks
 * for Efficient Integer-Arithmetic-Only Inference"); LSQ (Esser et al. 2020,
 * "Learned Step Size Quantization": ds = g (round(v) - v) inside, -Qn / Qp
 * outside, gradient scale 1 / sqrt(N Qp), initial s = 2 mean|x| / sqrt(Qp));
 * PACT (Choi et al. 2018: a learned clipping level alpha, dalpha = g where
 * x is clipped). The gradients themselves are autograd/ops_quant.c's.
 *
 * Layout of this file: keys; the per-site plan (keys, then override rules);
 * observers; the products and their parameters; the integer product op; the
 * policy's hooks; the checkpoint section QUNT; export; use outside training.
 */
#include "quant.h"
#include "dist/dist.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "infer/kernels.h"
#include "infer/types.h"

/* ------------------------------------------------------------ the keys */

static const char *const gran_names[3] = {"tensor", "channel", "group"};
static const char *const obs_names[5] = {"minmax", "ema", "percentile", "mse", "least-squares"};

static void quant_keys(pare_keys *k, void *cfgp) {
    cp_quant_cfg *c = cfgp;
    pare_opt r[] = {
        PARE_OPT_INT("w-bits", &c->w_bits, "0", 0, 16,
                     "weight bits of the linear sites, 2 .. 8 (0 = float weights: no quantization)"),
        PARE_OPT_INT("a-bits", &c->a_bits, "0", 0, 16,
                     "bits of the activations entering quantized sites, 2 .. 8: an integer product as the runtime "
                     "computes it (0 or 16 = float activations)"),
        PARE_OPT_ENUM("granularity", &c->granularity, "channel", "tensor|channel|group",
                      "one weight scale per tensor, per output channel, or per group of group-size inputs"),
        PARE_OPT_INT("group-size", &c->group_size, "32", 1, 1 << 20,
                     "inputs per weight scale with granularity group (a multiple of 32 dividing each input width)"),
        PARE_OPT_FLAG_ON("symmetric", &c->symmetric,
                         "weights on a symmetric grid; false: asymmetric with zero points (up to 4 bits)"),
        PARE_OPT_ENUM("observer", &c->observer, "minmax", "minmax|ema|percentile|mse|least-squares",
                      "what sets the scales of weights and activations"),
        PARE_OPT_FLOAT("ema-momentum", &c->ema_momentum, "0.01", 0, 1,
                       "the ema observer's c: range += c (batch range - range)"),
        PARE_OPT_FLOAT("percentile", &c->percentile, "99.99", 50, 100, "the percentile observer's coverage, in %"),
        PARE_OPT_FLAG("lsq", &c->lsq, "learned step sizes (LSQ): scales of weights and activations are trained"),
        PARE_OPT_FLAG("pact", &c->pact, "learned clipping levels of the activations (PACT)"),
        PARE_OPT_INT("freeze-step", &c->freeze_step, "0", 0, 2000000000,
                     "observers stop updating from this step on (0 = never)"),
        PARE_OPT_FLAG("quant-head", &c->quant_head, "quantize the LM head too (an untied one)"),
        PARE_OPT_STRING("quant-override", &c->overrides, "",
                        "per-site settings, \"GLOBS=SETTINGS;...\": e.g. \"h.*.mlp.*=w4,g32;lm_head=w8,a8;h.0.*=off\""),
    };
    pare_keys_add(k, r, (int)(sizeof r / sizeof r[0]));
}

static bool quant_wanted(const void *cfgp) {
    const cp_quant_cfg *c = cfgp;
    return c->w_bits > 0 || (c->a_bits > 0 && c->a_bits < 16) || (c->overrides && c->overrides[0]);
}

/* ------------------------------------------------ the per-site plan */

static bool is_bits(int b) { return b >= CP_BITS_MIN && b <= CP_BITS_MAX; }

/* Applies one SETTINGS list to s; err names the rule. */
static int apply_settings(cp_qspec *s, const char *set, int rule, char *err, size_t errlen) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", set);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        while (*tok == ' ') tok++;
        char *end = tok + strlen(tok);
        while (end > tok && end[-1] == ' ') *--end = '\0';
        char *num;
        long v;
        if ((tok[0] == 'w' || tok[0] == 'a' || tok[0] == 'g') && tok[1] && (v = strtol(tok + 1, &num, 10), !*num)) {
            if (tok[0] == 'w') s->w_bits = (int)v;
            else if (tok[0] == 'a') s->a_bits = v == 16 ? 0 : (int)v;
            else s->gran = CP_GRAN_GROUP, s->group = (int)v;
            if ((tok[0] == 'w' && v != 0 && !is_bits((int)v)) || (tok[0] == 'a' && v != 0 && v != 16 && !is_bits((int)v)) ||
                (tok[0] == 'g' && v < 1)) {
                snprintf(err, errlen, "quant-override rule %d: '%s': expected %s", rule, tok,
                         tok[0] == 'g' ? "a positive group size" : "2 to 8 bits (0 = float)");
                return -1;
            }
            continue;
        }
        int k;
        if (!strcmp(tok, "tensor")) s->gran = CP_GRAN_TENSOR;
        else if (!strcmp(tok, "channel")) s->gran = CP_GRAN_CHANNEL;
        else if (!strcmp(tok, "sym")) s->w_sym = true;
        else if (!strcmp(tok, "asym")) s->w_sym = false;
        else if (!strcmp(tok, "lsq")) s->lsq = true;
        else if (!strcmp(tok, "nolsq")) s->lsq = false;
        else if (!strcmp(tok, "pact")) s->pact = true;
        else if (!strcmp(tok, "nopact")) s->pact = false;
        else if (!strcmp(tok, "off")) s->w_bits = s->a_bits = 0, s->lsq = s->pact = false;
        else {
            for (k = 0; k < 5 && strcmp(tok, obs_names[k]); k++) {
            }
            if (k == 5) {
                snprintf(err, errlen, "quant-override rule %d: unknown setting '%s': expected wN, aN, gN, tensor, channel, "
                         "sym, asym, lsq, nolsq, pact, nopact, off or an observer (minmax, ema, percentile, mse, "
                         "least-squares)", rule, tok);
                return -1;
            }
            s->observer = k;
        }
    }
    return 0;
}

/* Checks site st's spec s against its shapes; `from` names where the
 * setting came from (a key, or an override rule). */
static int check_spec(const cp_qspec *s, const pm_site *st, const pm_table *t, const char *from, char *err,
                      size_t errlen) {
    if (!s->w_bits) {
        if (s->a_bits) {
            snprintf(err, errlen, "%s: site %s: a-bits %d without w-bits: the integer product needs quantized weights "
                     "(give w-bits too)", from, st->name, s->a_bits);
            return -1;
        }
        return 0;
    }
    if (!is_bits(s->w_bits)) {
        snprintf(err, errlen, "%s: w-bits %d (site %s): expected 2 to 8 (0 = float weights)", from, s->w_bits, st->name);
        return -1;
    }
    if (s->a_bits && !is_bits(s->a_bits)) {
        snprintf(err, errlen, "%s: a-bits %d (site %s): expected 2 to 8 (0 or 16 = float activations)", from, s->a_bits,
                 st->name);
        return -1;
    }
    if (!s->w_sym && s->w_bits > 4) {
        snprintf(err, errlen, "%s: symmetric false with w-bits %d (site %s): the model file stores zero points for "
                 "codes of up to 4 bits only (q4a): use w-bits <= 4 or symmetric weights", from, s->w_bits, st->name);
        return -1;
    }
    if (s->pact && !s->a_bits) {
        snprintf(err, errlen, "%s: pact (site %s): PACT learns the activations' clipping level: give a-bits too", from,
                 st->name);
        return -1;
    }
    if (s->observer < 0 || s->observer > 4) {
        snprintf(err, errlen, "%s: observer %d: expected minmax, ema, percentile, mse or least-squares", from, s->observer);
        return -1;
    }
    if (st->role == PM_HEAD && st->w >= 0 && t->tensor[st->w].site != st - t->site) {
        snprintf(err, errlen, "%s: site %s: a tied head is wte itself, and the embeddings' lookup cannot be quantized "
                 "in training (the trainer has no embedding hook): untie the head or leave it in float", from, st->name);
        return -1;
    }
    /* every product's input width: the site's (dense, V) and its rank (U) */
    int widths[2] = {st->in, st->rank}, nw = st->rank > 0 ? 2 : 1;
    for (int i = 0; i < nw; i++) {
        int K = widths[i];
        if (s->gran == CP_GRAN_GROUP && (s->group < 1 || K % s->group != 0 || s->group % 32 != 0)) {
            snprintf(err, errlen, "%s: group-size %d (site %s, input width %d): expected a multiple of 32 that divides "
                     "the input width (the model file's integer types store groups of multiples of 32)", from, s->group,
                     st->name, K);
            return -1;
        }
        if (K % 32 != 0) {
            snprintf(err, errlen, "%s: site %s has an input width of %d: the model file's integer types need widths "
                     "that are multiples of 32 (leave it in float with quant-override \"%s=off\")", from, st->name, K,
                     st->name);
            return -1;
        }
    }
    return 0;
}

int cp_quant_resolve(const cp_quant_cfg *cfg, const pm_table *t, cp_qspec *spec, char *err, size_t errlen) {
    char *from = calloc((size_t)t->n_site, 32);
    if (!from) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    cp_qspec base = {cfg->w_bits, cfg->symmetric, cfg->granularity, cfg->group_size,
                     cfg->a_bits == 16 ? 0 : cfg->a_bits, cfg->observer, cfg->lsq, cfg->pact};
    if (cfg->w_bits && !is_bits(cfg->w_bits)) {
        snprintf(err, errlen, "w-bits %d: expected 2 to 8 (0 = float weights)", cfg->w_bits);
        goto fail;
    }
    if (cfg->a_bits && cfg->a_bits != 16 && !is_bits(cfg->a_bits)) {
        snprintf(err, errlen, "a-bits %d: expected 2 to 8 (0 or 16 = float activations)", cfg->a_bits);
        goto fail;
    }
    for (int i = 0; i < t->n_site; i++) {
        const pm_site *st = &t->site[i];
        memset(&spec[i], 0, sizeof spec[i]);
        if (!st->linear) continue;
        spec[i] = base;
        snprintf(from + 32 * i, 32, "%s", "the keys");
        if (st->role == PM_HEAD && !cfg->quant_head) spec[i].w_bits = spec[i].a_bits = 0, spec[i].lsq = spec[i].pact = false;
    }
    /* the override rules, in order */
    if (cfg->overrides && cfg->overrides[0]) {
        char *rules = strdup(cfg->overrides), *save = NULL;
        if (!rules) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        int n = 0;
        for (char *r = strtok_r(rules, ";", &save); r; r = strtok_r(NULL, ";", &save)) {
            n++;
            char *eq = strchr(r, '=');
            if (!eq || eq == r || !eq[1]) {
                snprintf(err, errlen, "quant-override rule %d '%s': expected GLOBS=SETTINGS (e.g. h.*.mlp.*=w4,g32)", n, r);
                free(rules);
                goto fail;
            }
            *eq = '\0';
            int matched = 0;
            for (int i = 0; i < t->n_site; i++) {
                if (!t->site[i].linear || !pm_glob_match(r, t->site[i].name)) continue;
                if (apply_settings(&spec[i], eq + 1, n, err, errlen) != 0) {
                    free(rules);
                    goto fail;
                }
                snprintf(from + 32 * i, 32, "quant-override rule %d", n);
                matched++;
            }
            if (!matched) {
                snprintf(err, errlen, "quant-override rule %d: '%s' matches no linear site of this model (its sites: %s, "
                         "%s, ..., lm_head)", n, r, t->n_site > 3 ? t->site[3].name : "?",
                         t->n_site > 4 ? t->site[4].name : "?");
                free(rules);
                goto fail;
            }
        }
        free(rules);
    }
    int quantized = 0;
    for (int i = 0; i < t->n_site; i++) {
        if (!t->site[i].linear) continue;
        const char *f = from + 32 * i;
        if (check_spec(&spec[i], &t->site[i], t, f, err, errlen) != 0) goto fail;
        quantized += spec[i].w_bits > 0;
    }
    free(from);
    return quantized;
fail:
    free(from);
    return -1;
}

void cp_qspec_describe(const cp_qspec *s, char *buf, size_t n) {
    if (!s->w_bits) {
        snprintf(buf, n, "float");
        return;
    }
    char g[24];
    if (s->gran == CP_GRAN_GROUP) snprintf(g, sizeof g, "g%d", s->group);
    else snprintf(g, sizeof g, "%s", gran_names[s->gran]);
    int u = snprintf(buf, n, "W%d %s %s %s%s", s->w_bits, g, s->w_sym ? "sym" : "asym",
                     s->lsq ? "lsq" : obs_names[s->observer], "");
    if (u < 0 || (size_t)u >= n) return;
    if (s->a_bits)
        snprintf(buf + u, n - (size_t)u, ", A%d %s", s->a_bits,
                 s->pact ? "pact" : s->lsq ? "lsq" : obs_names[s->observer]);
    else
        snprintf(buf + u, n - (size_t)u, ", A16");
}

/* ------------------------------------------------------------ observers */

#define OBS_SAMPLE 65536
#define MSE_CANDIDATES 80
#define LSQ_FIT_ROUNDS 50

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Sum of squared errors of fake-quantizing x[0, n) with (s, z). */
static double fq_error(const cp_grid *g, const float *x, size_t n, float s, int z) {
    float inv = 1.0f / s;
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - (double)cp_decode(cp_code(x[i], inv, z, g->lo, g->hi), z, s);
        e += d * d;
    }
    return e;
}

/* The nearest-rank quantile of sorted v[0, n) at fraction p. */
static float quantile(const float *v, size_t n, double p) {
    double r = ceil(p * (double)n);
    size_t k = r < 1 ? 0 : (size_t)r - 1;
    return v[k < n ? k : n - 1];
}

/* Least squares: codes fixed, (s, z) solved; (s, z) fixed, codes re-rounded. */
static void lsq_fit(const cp_grid *g, const float *x, size_t n, float *s_io, int *z_io) {
    float s = *s_io;
    int z = *z_io;
    for (int round = 0; round < LSQ_FIT_ROUNDS; round++) {
        float inv = 1.0f / s;
        double sx = 0, sq = 0, sxq = 0, sqq = 0;
        for (size_t i = 0; i < n; i++) {
            double q = (double)(cp_code(x[i], inv, z, g->lo, g->hi) - z);
            sx += x[i], sq += q, sxq += (double)x[i] * q, sqq += q * q;
        }
        float ns;
        int nz = z;
        if (g->symmetric) {
            if (!(sqq > 0)) break;
            ns = (float)(sxq / sqq);
        } else {
            /* x ~ s' q' + b with q' = q + z the raw code: the affine fit, then z = -b / s' rounded */
            double sqr = sq + (double)z * (double)n, sqqr = sqq + 2.0 * z * sq + (double)z * z * (double)n;
            double sxqr = sxq + (double)z * sx, den = (double)n * sqqr - sqr * sqr;
            if (!(fabs(den) > 0)) break;
            double a = ((double)n * sxqr - sx * sqr) / den, b = (sx - a * sqr) / (double)n;
            if (!(a > 0)) break;
            ns = (float)a;
            nz = (int)cp_rne((float)(-b / a));
            nz = nz < g->lo ? g->lo : nz > g->hi ? g->hi : nz;
        }
        if (!(ns > CP_SCALE_EPS) || !isfinite(ns)) break;
        /* converged when no code changes */
        float ninv = 1.0f / ns;
        bool same = true;
        for (size_t i = 0; i < n && same; i++) same = cp_code(x[i], inv, z, g->lo, g->hi) == cp_code(x[i], ninv, nz, g->lo, g->hi);
        s = ns, z = nz;
        if (same) break;
    }
    *s_io = s, *z_io = z;
}

void cp_observe_range(int kind, const cp_grid *g, const float *x, size_t n, double pct, float *scratch, float *mn,
                      float *mx) {
    float lo = x[0], hi = x[0];
    for (size_t i = 1; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    *mn = lo, *mx = hi;
    if (kind == CP_OBS_PERCENTILE && scratch) {
        double p = pct / 100.0;
        if (g->symmetric) {
            for (size_t i = 0; i < n; i++) scratch[i] = fabsf(x[i]);
            qsort(scratch, n, sizeof *scratch, cmp_float);
            float c = quantile(scratch, n, p);
            *mn = -c, *mx = c;
        } else {
            memcpy(scratch, x, n * sizeof *scratch);
            qsort(scratch, n, sizeof *scratch, cmp_float);
            *mn = quantile(scratch, n, 1.0 - p), *mx = quantile(scratch, n, p);
        }
    } else if (kind == CP_OBS_MSE) {
        double best = INFINITY;
        float bmn = lo, bmx = hi;
        for (int i = 0; i < MSE_CANDIDATES; i++) {
            float f = 1.0f - 0.01f * (float)i, s;
            int z;
            cp_grid_params(g, lo * f, hi * f, &s, &z);
            double e = fq_error(g, x, n, s, z);
            if (e < best) best = e, bmn = lo * f, bmx = hi * f;
        }
        *mn = bmn, *mx = bmx;
    } else if (kind == CP_OBS_LSQFIT) {
        float s;
        int z;
        cp_grid_params(g, lo, hi, &s, &z);
        lsq_fit(g, x, n, &s, &z);
        if (g->symmetric) *mn = -s * (float)g->hi, *mx = s * (float)g->hi;
        else *mn = (float)(g->lo - z) * s, *mx = (float)(g->hi - z) * s;
    }
}

void cp_obs_update(cp_obs *o, const cp_grid *g, const float *x, size_t n, double momentum, double pct,
                   float *scratch) {
    const float *v = x;
    size_t m = n;
    if (o->kind >= CP_OBS_PERCENTILE && n > OBS_SAMPLE) { /* evenly strided sample */
        size_t stride = (n + OBS_SAMPLE - 1) / OBS_SAMPLE;
        m = 0;
        for (size_t i = 0; i < n; i += stride) scratch[m++] = x[i];
        v = scratch;
    }
    float mn, mx;
    float *work = v == scratch ? scratch + OBS_SAMPLE : scratch; /* percentile sorts a copy */
    cp_observe_range(o->kind, g, v, m, pct, work, &mn, &mx);
    /* data parallelism: each rank sees its own shard; the batch's range is the widest of the ranks' (exact), so
     * the observer's state stays the same bits on every rank. A failed exchange keeps this rank's range; the
     * ranks' next gradient exchange fails too and ends the run. */
    char derr[128];
    (void)pd_min_max(&mn, &mx, derr, sizeof derr);
    if (!o->seen) {
        o->mn = mn, o->mx = mx, o->seen = true;
    } else if (o->kind == CP_OBS_MINMAX) {
        o->mn = mn < o->mn ? mn : o->mn;
        o->mx = mx > o->mx ? mx : o->mx;
    } else {
        float c = (float)momentum;
        o->mn = o->mn + c * (mn - o->mn);
        o->mx = o->mx + c * (mx - o->mx);
    }
}

/* ------------------------------------------------------------ products */

typedef struct qprod {
    int site, tensor;     /* table indices: the site, and its weight tensor (.w, .v or .u; wte for a tied head) */
    pm_part part;         /* PM_W, PM_V, PM_U */
    cp_qspec spec;
    cp_grid wg;           /* the weights' grid */
    int ahi;              /* activations: codes in [-ahi, ahi]; 0 = float */
    int N, K, G, NS, seg; /* weight [N, K]; G: columns per scale in the file; NS scales of seg elements each */
    int dtype;            /* storage type in the file */
    /* state (checkpointed) */
    float *wscale;        /* [NS] */
    int32_t *wzero;       /* [NS] */
    float *ema_mn, *ema_mx; /* [NS] the weights' ema observer */
    bool w_init, ema_seen;
    cp_obs act;           /* the activations' observer */
    float ascale, ascale0; /* the current activation scale and its first value (collapse warnings) */
    bool a_init;
    float *lsq_w;         /* [NS] copy of the learned weight scales (export without the trainer) */
    float lsq_a, pact;    /* copies of the learned activation scale / clipping level */
    /* tensors: the trainer's declared ones, or copies outside training */
    int h_lsq_w, h_lsq_a, h_pact;
    ag_tensor *t_lsq_w, *t_lsq_a, *t_pact;
    /* the integer product (A8): codes, expanded scales and zero points, the runtime-layout weight */
    int8_t *codes;        /* [N, K] */
    float *fscale;        /* [N, K / G] */
    int32_t *fzero;       /* [N, K / G] */
    uint8_t *packed;
    uint64_t packed_bytes;
    inf_weight iw;
    bool iw_ready;
    /* this step's figures */
    double wclip, aclip;
    bool warned;
} qprod;

typedef struct quant {
    tr_policy p;
    cp_quant_cfg cfg;
    const pm_table *tb;   /* the model's table (the trainer's model, or the model given outside training) */
    cp_qspec *spec;       /* [n_site] */
    qprod *prod;
    int n_prod;
    int *first;           /* [n_site]: the site's first product, -1 */
    tr_trainer *t;        /* NULL outside training */
    bool calibrating, frozen;
    long step;            /* the trainer's step when the forward runs */
    inf_kctx k;
    float *scratch;       /* observers: 2 * OBS_SAMPLE floats */
    ag_params own;        /* learned tensors outside training (copies) */
    int warnings;
} quant;

static const char *part_suffix(pm_part p) { return p == PM_V ? ".v" : p == PM_U ? ".u" : ""; }

/* The file's storage type of a spec's weights. */
static int storage_of(const cp_qspec *s) {
    if (s->w_bits > 4) return INF_Q8;
    return s->w_sym ? INF_Q4 : INF_Q4A;
}

static void prod_free(qprod *q) {
    free(q->wscale), free(q->wzero), free(q->ema_mn), free(q->ema_mx), free(q->lsq_w);
    free(q->codes), free(q->fscale), free(q->fzero), free(q->packed);
    inf_weight_free(&q->iw);
}

static void free_products(quant *q) {
    for (int i = 0; i < q->n_prod; i++) prod_free(&q->prod[i]);
    free(q->prod), free(q->first), free(q->spec);
    q->prod = NULL, q->first = NULL, q->spec = NULL, q->n_prod = 0;
}

/* The products of table tb under the keys (q->spec, q->prod). */
static int make_products(quant *q, const pm_table *tb, char *err, size_t errlen) {
    free_products(q);
    q->tb = tb;
    q->spec = calloc((size_t)tb->n_site, sizeof *q->spec);
    q->first = malloc((size_t)tb->n_site * sizeof *q->first);
    q->prod = calloc((size_t)tb->n_site * 2, sizeof *q->prod);
    if (!q->spec || !q->first || !q->prod) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (cp_quant_resolve(&q->cfg, tb, q->spec, err, errlen) < 0) return -1;
    for (int i = 0; i < tb->n_site; i++) {
        const pm_site *st = &tb->site[i];
        q->first[i] = -1;
        if (!st->linear || !q->spec[i].w_bits) continue;
        q->first[i] = q->n_prod;
        pm_part parts[2] = {PM_V, PM_U};
        int np = st->rank > 0 ? 2 : 1;
        for (int j = 0; j < np; j++) {
            qprod *p = &q->prod[q->n_prod++];
            p->site = i;
            p->part = st->rank > 0 ? parts[j] : PM_W;
            p->tensor = st->rank > 0 ? (j == 0 ? st->v : st->u) : st->w;
            p->spec = q->spec[i];
            p->wg = cp_grid_of(p->spec.w_bits, p->spec.w_sym);
            p->ahi = p->spec.a_bits ? (1 << (p->spec.a_bits - 1)) - 1 : 0;
            const pm_tensor *x = &tb->tensor[p->tensor];
            p->N = x->shape[0], p->K = x->shape[1];
            p->G = p->spec.gran == CP_GRAN_GROUP ? p->spec.group : p->K;
            p->NS = p->spec.gran == CP_GRAN_TENSOR ? 1 : p->N * (p->K / p->G);
            p->seg = p->spec.gran == CP_GRAN_TENSOR ? p->K : p->G;
            p->dtype = storage_of(&p->spec);
            p->act.kind = p->spec.observer;
            p->h_lsq_w = p->h_lsq_a = p->h_pact = -1;
            size_t nk = (size_t)p->N * p->K, nf = (size_t)p->N * (p->K / p->G);
            p->wscale = calloc((size_t)p->NS, sizeof *p->wscale);
            p->wzero = calloc((size_t)p->NS, sizeof *p->wzero);
            p->ema_mn = calloc((size_t)p->NS, sizeof *p->ema_mn);
            p->ema_mx = calloc((size_t)p->NS, sizeof *p->ema_mx);
            p->lsq_w = calloc((size_t)p->NS, sizeof *p->lsq_w);
            p->codes = malloc(nk);
            p->fscale = malloc(nf * sizeof *p->fscale);
            p->fzero = calloc(nf, sizeof *p->fzero);
            if (!p->wscale || !p->wzero || !p->ema_mn || !p->ema_mx || !p->lsq_w || !p->codes || !p->fscale || !p->fzero) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
        }
    }
    if (!q->scratch && !(q->scratch = malloc(2 * OBS_SAMPLE * sizeof *q->scratch))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* The product of site index si, part. */
static qprod *product_of(quant *q, int si, pm_part part) {
    if (si < 0 || si >= q->tb->n_site || q->first[si] < 0) return NULL;
    qprod *p = &q->prod[q->first[si]];
    if (part == PM_U && p->part == PM_V) p++;
    return p->part == part ? p : NULL;
}

/* Whether observers update now: a training step before freeze-step, or
 * calibration. */
static bool observing(const quant *q, bool training) {
    if (q->frozen) return false;
    if (!training) return q->calibrating;
    return q->cfg.freeze_step == 0 || q->step < q->cfg.freeze_step;
}

/* Expensive weight observers run every few steps in training (always when
 * calibrating or when no scale exists yet). */
#define HEAVY_EVERY 16

/* The weights' scales and zero points [NS] (q->wscale, wzero) for weights w
 * [N * K]: the learned ones (LSQ), the stored ones, or the observer's. */
static void weight_params(quant *q, qprod *p, const float *w, bool update) {
    if (p->spec.lsq) {
        for (int j = 0; j < p->NS; j++) p->wscale[j] = p->t_lsq_w ? p->t_lsq_w->data[j] : p->lsq_w[j];
        return;
    }
    bool heavy = p->spec.observer >= CP_OBS_PERCENTILE;
    if (p->w_init && (!update || (heavy && !q->calibrating && q->step % HEAVY_EVERY != 0))) return;
    long ns = p->NS;
    size_t seg = p->spec.gran == CP_GRAN_TENSOR ? (size_t)p->N * p->K : (size_t)p->seg;
    bool pct = p->spec.observer == CP_OBS_PERCENTILE, par = ns > 1 && !pct && (size_t)p->N * p->K >= ((size_t)1 << 16);
    float *buf = pct ? (seg <= 2 * OBS_SAMPLE ? q->scratch : malloc(seg * sizeof *buf)) : NULL; /* percentile sorts */
    if (pct && !buf) return; /* out of memory: the previous scales stay */
#pragma omp parallel for schedule(static) if (par)
    for (long j = 0; j < ns; j++) {
        const float *x = w + (size_t)j * seg;
        float mn, mx;
        cp_observe_range(p->spec.observer, &p->wg, x, seg, q->cfg.percentile, buf, &mn, &mx);
        if (p->spec.observer == CP_OBS_EMA) {
            if (!p->ema_seen) p->ema_mn[j] = mn, p->ema_mx[j] = mx;
            else {
                float c = (float)q->cfg.ema_momentum;
                p->ema_mn[j] += c * (mn - p->ema_mn[j]);
                p->ema_mx[j] += c * (mx - p->ema_mx[j]);
            }
            mn = p->ema_mn[j], mx = p->ema_mx[j];
        }
        int z;
        cp_grid_params(&p->wg, mn, mx, &p->wscale[j], &z);
        p->wzero[j] = z;
    }
    if (buf && buf != q->scratch) free(buf);
    if (p->spec.observer == CP_OBS_EMA) p->ema_seen = true;
    p->w_init = true;
}

/* The activation scale of product p for input x (updating its observer
 * when asked). */
static float act_scale(quant *q, qprod *p, const ag_tensor *x, bool update) {
    if (p->spec.pact) return (p->t_pact ? p->t_pact->data[0] : p->pact) / (float)p->ahi;
    if (p->spec.lsq) return p->t_lsq_a ? p->t_lsq_a->data[0] : p->lsq_a;
    if (update || !p->a_init) {
        cp_grid g = cp_grid_of(p->spec.a_bits, true);
        cp_obs_update(&p->act, &g, x->data, x->numel, q->cfg.ema_momentum, q->cfg.percentile, q->scratch);
        cp_grid_params(&g, p->act.mn, p->act.mx, &p->ascale, NULL);
        if (!p->a_init) p->ascale0 = p->ascale;
        p->a_init = true;
    }
    return p->ascale;
}

/* The activation scale p uses now (without observing): PACT's alpha / hi,
 * LSQ's learned scale, or the observer's (copies kept current by
 * after_step and read from QUNT outside training). */
static float act_scale_now(const qprod *p) {
    if (p->spec.pact) return (p->t_pact ? p->t_pact->data[0] : p->pact) / (float)p->ahi;
    if (p->spec.lsq) return p->t_lsq_a ? p->t_lsq_a->data[0] : p->lsq_a;
    return p->ascale;
}

/* LSQ's initial step size, 2 mean|x| / sqrt(Qp) (Esser et al. 2020, sec. 2.2). */
static float lsq_init(const float *x, size_t n, int qp) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)x[i]);
    float v = (float)(2.0 * s / (double)n / sqrt((double)qp));
    return v > CP_SCALE_EPS ? v : CP_SCALE_EPS;
}

/* ---------------------------------------- the integer product (A8 sites) */

typedef struct {
    double *acc; /* [N] the bias gradient's column sums */
} ql_saved;

/* dx += g W', dW' += g^T x', db += sum over rows of g (rows in order, in double). */
static void qlinear_backward(ag_node *n) {
    ag_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *out = n->out;
    int R = (int)(x->numel / (size_t)w->shape[1]), K = w->shape[1], N = w->shape[0];
    const float *g = out->grad; /* [R, N] */
    if (x->grad) ag_sgemm(false, false, R, K, N, 1.0f, g, N, w->data, K, 1.0f, x->grad, K);
    if (w->grad) ag_sgemm(true, false, N, K, R, 1.0f, g, N, x->data, K, 1.0f, w->grad, K);
    if (b && b->grad) {
        double *acc = ((ql_saved *)n->saved)->acc;
        for (int j = 0; j < N; j++) acc[j] = 0;
        for (int r = 0; r < R; r++)
            for (int j = 0; j < N; j++) acc[j] += g[(size_t)r * N + j];
        for (int j = 0; j < N; j++) b->grad[j] += (float)acc[j];
    }
}

/* Rows per work item of the elementwise passes below. */
#define QL_ROWS 16

/* Whether p's integer dot products stay exact in float: every partial sum
 * of a group below 2^24, max|q - z| * max|a| * G < 2^24 (always for 4-bit
 * weights; for 8-bit ones with groups of up to 1040 inputs) ... */
static bool exact_sgemm(const qprod *p) {
    double wmax = p->wg.symmetric ? p->wg.hi : p->wg.hi - p->wg.lo;
    /* and where it is the faster way: int8 weights, or groups of at least 256 (int4's integer kernel beats
     * many small sgemms over groups of 32: docs/quantization.md) */
    return wmax * p->ahi * p->G < 16777216.0 && (p->dtype == INF_Q8 || p->G >= 256);
}

static ag_tensor *qlinear_out(ag_ctx *c, const ag_tensor *x, int N) {
    int shape[AG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = N;
    return ag_new(c, x->ndim, shape, "qlinear");
}

static ag_tensor *qlinear_record(ag_ctx *c, ag_tensor *out, ag_tensor *x, ag_tensor *w, ag_tensor *b) {
    int N = w->shape[0];
    ag_node *n = ag_record(c, "qlinear", qlinear_backward, out, x, w, b);
    if (n) {
        ql_saved *s = ag_alloc(c, sizeof *s);
        if (!s || !(s->acc = ag_alloc(c, (size_t)N * sizeof(double)))) return NULL;
        n->saved = s;
    } else if (ag_error(c)) {
        return NULL;
    }
    return out;
}

/* out = the quantized product of x' (fake-quantized activations: codes * sa)
 * and w' (codes of the weight), + b, exactly as the model file's runtime
 * computes it (compress/grid.h): per output and group the exact integer
 * I_g = sum_k (q_k - z) a_k, then y = fmaf(s_g, I_g, y) over the groups from
 * +0, then y * sa, then + b. Here the integers come from sgemm on
 * integer-valued floats (A = the activations' codes, W = q - z, both written
 * by the fake-quantization ops): while every partial sum stays below 2^24
 * (exact_sgemm) each fused multiply-add is exact whatever the order, so
 * these are the runtime's integer kernels' integers, at sgemm's speed.
 * Backward: the float product x' W'^T + b's. */
static ag_tensor *qlinear_exact(ag_ctx *c, ag_tensor *x, ag_tensor *w, ag_tensor *b, const qprod *p, const float *A,
                                const float *W, float sa) {
    if (!x || !w) return NULL;
    int K = w->shape[1], N = w->shape[0], R = (int)(x->numel / (size_t)K), G = p->G, NG = K / G;
    ag_tensor *out = qlinear_out(c, x, N);
    float *I = ag_alloc(c, (size_t)R * N * sizeof(float)), *sT = ag_alloc(c, (size_t)NG * N * sizeof(float));
    if (!out || !I || !sT) return NULL;
    float *Y = out->data;
    for (int g = 0; g < NG; g++)
        for (int n = 0; n < N; n++) sT[(size_t)g * N + n] = p->fscale[(size_t)n * NG + g];
    long nblk = (R + QL_ROWS - 1) / QL_ROWS;
    const float *bias = b ? b->data : NULL;
    for (int g = 0; g < NG; g++) {
        ag_sgemm(false, true, R, N, G, 1.0f, A + (size_t)g * G, K, W + (size_t)g * G, K, 0.0f, I, N);
        bool last = g == NG - 1;
#pragma omp parallel for schedule(static) if ((size_t)R * N >= ((size_t)1 << 18))
        for (long blk = 0; blk < nblk; blk++) {
            int r0 = (int)blk * QL_ROWS, r1 = r0 + QL_ROWS < R ? r0 + QL_ROWS : R;
            inf_qacc_rows(Y + (size_t)r0 * N, I + (size_t)r0 * N, sT + (size_t)g * N, r1 - r0, N, g == 0,
                          last ? sa : 0.0f, last ? bias : NULL);
        }
    }
    return qlinear_record(c, out, x, w, b);
}

/* The same product by the runtime's integer kernels themselves (inf_matmul
 * on the prepared weight iw, whose static activation scale is sa), for
 * products whose integers do not fit exact_sgemm's bound. */
static ag_tensor *qlinear(ag_ctx *c, inf_kctx *k, ag_tensor *x, ag_tensor *w, ag_tensor *b, const inf_weight *iw) {
    if (!x || !w) return NULL;
    int K = w->shape[1], N = w->shape[0], R = (int)(x->numel / (size_t)K);
    ag_tensor *out = qlinear_out(c, x, N);
    if (!out) return NULL;
    if (inf_matmul(k, iw, x->data, R, out->data) != 0) {
        ag_fail(c, "qlinear: out of memory for the kernels' scratch (%d rows of %d)", R, K);
        return NULL;
    }
    if (b)
        for (int r = 0; r < R; r++)
            for (int j = 0; j < N; j++) out->data[(size_t)r * N + j] += b->data[j];
    return qlinear_record(c, out, x, w, b);
}

/* The file's per-row scales and zero points [N, K / G] from the [NS] ones. */
static void expand_params(qprod *p) {
    int NG = p->K / p->G;
    for (int r = 0; r < p->N; r++)
        for (int g = 0; g < NG; g++) {
            int j = p->spec.gran == CP_GRAN_TENSOR ? 0 : r * NG + g;
            p->fscale[(size_t)r * NG + g] = p->wscale[j];
            p->fzero[(size_t)r * NG + g] = p->wzero[j];
        }
}

/* Lays the codes out for the runtime's kernels (once allocated, in place). */
static int prepare_integer_weight(qprod *p, float sa, char *err, size_t errlen) {
    expand_params(p);
    uint32_t shape[2] = {(uint32_t)p->N, (uint32_t)p->K};
    if (!p->packed) {
        if (inf_tensor_bytes(p->dtype, 2, shape, (uint32_t)p->G, &p->packed_bytes, err, errlen) != 0) return -1;
        if (!(p->packed = aligned_alloc(64, (p->packed_bytes + 63) / 64 * 64))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    if (inf_pack_codes(p->dtype, p->codes, p->N, p->K, p->G, p->fscale, p->fzero, p->packed, err, errlen) != 0) return -1;
    inf_tensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "quant");
    t.dtype = p->dtype, t.ndim = 2, t.shape[0] = shape[0], t.shape[1] = shape[1], t.shape[2] = t.shape[3] = 1;
    t.group = (uint32_t)p->G, t.bytes = p->packed_bytes, t.data = p->packed;
    if (p->iw_ready ? inf_weight_update(&p->iw, &t, err, errlen) : inf_weight_init(&p->iw, &t, err, errlen)) return -1;
    p->iw_ready = true;
    return inf_weight_set_act(&p->iw, p->spec.a_bits, sa, err, errlen);
}

/* ------------------------------------------------ one product, forward */

/* A constant arena tensor of n values. */
static ag_tensor *constant(ag_ctx *c, const float *v, int n, const char *name) {
    ag_tensor *t = ag_new(c, 1, &n, name);
    if (t) memcpy(t->data, v, (size_t)n * sizeof(float));
    return t;
}

/* The quantization-aware product of p: fake-quantized weights (STE or LSQ),
 * then the integer product with fake-quantized activations (A8), or the
 * float product (A16) through next (the rest of the trainer's chain, or
 * ag_linear outside training). */
static ag_tensor *product(quant *q, qprod *p, ag_ctx *c, ag_tensor *x, ag_tensor *w, ag_tensor *b, bool training,
                          tr_linear *l) {
    bool upd = observing(q, training);
    weight_params(q, p, w->data, upd);
    bool exact = p->ahi && exact_sgemm(p);
    float *W = NULL, *A = NULL;
    if (exact && (!(W = ag_alloc(c, w->numel * sizeof(float))) || !(A = ag_alloc(c, x->numel * sizeof(float)))))
        return NULL;
    ag_tensor *ws = p->spec.lsq && p->t_lsq_w ? p->t_lsq_w : constant(c, p->wscale, p->NS, "weight scales");
    size_t wclip = 0;
    ag_fq wq = {p->wg.lo, p->wg.hi, p->seg, p->wg.symmetric ? NULL : p->wzero, p->spec.lsq ? AG_FQ_LSQ : AG_FQ_STE,
                (float)(1.0 / sqrt((double)w->numel * p->wg.hi)), exact ? NULL : p->codes, training ? &wclip : NULL, W};
    ag_tensor *wf = ag_fake_quant(c, w, ws, &wq);
    if (!wf) return NULL;
    if (training) p->wclip = (double)wclip / (double)w->numel;
    if (!p->ahi) return l ? tr_linear_next(l, x, wf, b) : ag_linear(c, x, wf, b);
    /* A8: the activations' codes, then the integer product */
    float sa = act_scale(q, p, x, upd);
    ag_tensor *as = p->spec.pact ? p->t_pact : p->spec.lsq ? p->t_lsq_a : constant(c, &sa, 1, "activation scale");
    if (!as) as = constant(c, p->spec.pact ? &p->pact : &p->lsq_a, 1, "activation scale");
    size_t aclip = 0;
    ag_fq aq = {-p->ahi, p->ahi, p->K, NULL, p->spec.pact ? AG_FQ_PACT : p->spec.lsq ? AG_FQ_LSQ : AG_FQ_STE,
                (float)(1.0 / sqrt((double)x->numel * p->ahi)), NULL, training ? &aclip : NULL, A};
    ag_tensor *xf = ag_fake_quant(c, x, as, &aq);
    if (!xf) return NULL;
    if (training) p->aclip = (double)aclip / (double)x->numel;
    if (exact) {
        expand_params(p);
        return qlinear_exact(c, xf, wf, b, p, A, W, sa);
    }
    char why[256];
    if (prepare_integer_weight(p, sa, why, sizeof why) != 0) {
        ag_fail(c, "quant: %s%s: %s", q->tb->site[p->site].name, part_suffix(p->part), why);
        return NULL;
    }
    return qlinear(c, &q->k, xf, wf, b, &p->iw);
}

/* ------------------------------------------------------ the policy's hooks */

/* Declares the learned tensors (LSQ scales, PACT levels) of every product. */
static int quant_declare(tr_policy *pp, tr_trainer *t) {
    quant *q = pp->user;
    char err[512];
    q->t = t;
    if (make_products(q, &t->model->table, err, sizeof err) != 0) {
        tr_trainer_fail(t, "quant: %s", err);
        return -1;
    }
    for (int i = 0; i < q->n_prod; i++) {
        qprod *p = &q->prod[i];
        char name[64];
        const char *site = q->tb->site[p->site].name;
        if (p->spec.lsq) {
            snprintf(name, sizeof name, "%s%s.wscale", site, part_suffix(p->part));
            int shape[1] = {p->NS};
            if ((p->h_lsq_w = tr_declare(t, pp, name, 1, shape, TR_GROUP_NO_DECAY)) < 0) return -1;
            if (p->ahi && !p->spec.pact) { /* PACT's level, when asked, is the activations' learned parameter */
                snprintf(name, sizeof name, "%s%s.ascale", site, part_suffix(p->part));
                int one[1] = {1};
                if ((p->h_lsq_a = tr_declare(t, pp, name, 1, one, TR_GROUP_NO_DECAY)) < 0) return -1;
            }
        }
        if (p->spec.pact) {
            snprintf(name, sizeof name, "%s%s.alpha", site, part_suffix(p->part));
            int one[1] = {1};
            if ((p->h_pact = tr_declare(t, pp, name, 1, one, TR_GROUP_NO_DECAY)) < 0) return -1;
        }
    }
    return 0;
}

/* The declared tensors, now allocated; a fresh run's LSQ weight scales from
 * the paper's initialisation (and the zero points of asymmetric grids from
 * the min-max observer). */
static int quant_start(tr_policy *pp, tr_trainer *t) {
    quant *q = pp->user;
    q->step = t->step;
    for (int i = 0; i < q->n_prod; i++) {
        qprod *p = &q->prod[i];
        p->t_lsq_w = p->h_lsq_w >= 0 ? tr_extra(t, p->h_lsq_w) : NULL;
        p->t_lsq_a = p->h_lsq_a >= 0 ? tr_extra(t, p->h_lsq_a) : NULL;
        p->t_pact = p->h_pact >= 0 ? tr_extra(t, p->h_pact) : NULL;
        if (!p->t_lsq_w || p->w_init) continue;
        const float *w = tr_gpt_param(t->model, p->tensor)->data;
        size_t seg = p->spec.gran == CP_GRAN_TENSOR ? (size_t)p->N * p->K : (size_t)p->seg;
        for (int j = 0; j < p->NS; j++) {
            float s;
            int z = 0;
            cp_grid_minmax(&p->wg, w + (size_t)j * seg, (int)seg, &s, &z);
            p->wzero[j] = p->wg.symmetric ? 0 : z;
            p->t_lsq_w->data[j] = lsq_init(w + (size_t)j * seg, seg, p->wg.hi - p->wzero[j]);
        }
        p->w_init = true;
    }
    return 0;
}

/* Activations' learned parameters start from the first batch they see. */
static void init_learned_act(qprod *p, const ag_tensor *x) {
    if (p->a_init) return;
    if (p->t_lsq_a) p->t_lsq_a->data[0] = p->ascale0 = lsq_init(x->data, x->numel, p->ahi);
    if (p->t_pact) {
        cp_grid g = cp_grid_of(p->spec.a_bits, true);
        float mn, mx;
        cp_observe_range(CP_OBS_MINMAX, &g, x->data, x->numel, 0, NULL, &mn, &mx);
        float a = fmaxf(-mn, mx);
        p->t_pact->data[0] = a > CP_SCALE_EPS ? a : CP_SCALE_EPS;
        p->ascale0 = p->t_pact->data[0] / (float)p->ahi;
    }
    p->a_init = true;
}

static ag_tensor *quant_linear(tr_policy *pp, tr_linear *l, ag_tensor *x, ag_tensor *w, ag_tensor *b) {
    quant *q = pp->user;
    qprod *p = product_of(q, (int)(l->site - q->tb->site), l->part);
    if (!p) return tr_linear_next(l, x, w, b);
    q->step = l->t->step;
    if (p->ahi && (p->t_lsq_a || p->t_pact)) init_learned_act(p, x);
    return product(q, p, l->c, x, w, b, l->training, l);
}

/* After the optimizer step: learned scales stay positive (PyTorch clamps
 * them to eps as well); this step's clip rates and scales as metrics, and
 * the warnings. */
static int quant_after_step(tr_policy *pp, tr_trainer *t) {
    quant *q = pp->user;
    double wmax = 0, amax = 0, amin = INFINITY;
    int warn = 0;
    for (int i = 0; i < q->n_prod; i++) {
        qprod *p = &q->prod[i];
        ag_tensor *ts[3] = {p->t_lsq_w, p->t_lsq_a, p->t_pact};
        for (int j = 0; j < 3; j++)
            if (ts[j])
                for (size_t e = 0; e < ts[j]->numel; e++)
                    if (!(ts[j]->data[e] >= CP_SCALE_EPS)) ts[j]->data[e] = CP_SCALE_EPS;
        if (p->t_lsq_w) memcpy(p->lsq_w, p->t_lsq_w->data, (size_t)p->NS * sizeof(float));
        if (p->t_lsq_a) p->lsq_a = p->t_lsq_a->data[0];
        if (p->t_pact) p->pact = p->t_pact->data[0];
        wmax = fmax(wmax, p->wclip);
        float sa = p->ahi ? act_scale_now(p) : 0.0f;
        if (p->ahi) amax = fmax(amax, p->aclip), amin = fmin(amin, sa);
        bool bad = p->wclip > 0.5 || (p->ahi && (p->aclip > 0.5 || (p->ascale0 > 0 && sa < 1e-3f * p->ascale0)));
        p->warned = bad;
        warn += bad;
    }
    q->warnings = warn;
    tr_metric_set(t, "q.wclip", wmax);
    if (amax > 0 || isfinite(amin)) tr_metric_set(t, "q.aclip", amax);
    if (isfinite(amin)) tr_metric_set(t, "q.ascale.min", amin);
    tr_metric_set(t, "q.warn", warn);
    /* per site, as many as the trainer's metric table takes ("q.NAME@SITE") */
    for (int i = 0; i < q->n_prod; i++) {
        qprod *p = &q->prod[i];
        char name[64];
        const char *site = q->tb->site[p->site].name;
        double mean = 0;
        for (int j = 0; j < p->NS; j++) mean += p->wscale[j];
        snprintf(name, sizeof name, "q.wclip@%s%s", site, part_suffix(p->part));
        tr_metric_set(t, name, p->wclip);
        snprintf(name, sizeof name, "q.wscale@%s%s", site, part_suffix(p->part));
        tr_metric_set(t, name, mean / p->NS);
        if (!p->ahi) continue;
        snprintf(name, sizeof name, "q.aclip@%s%s", site, part_suffix(p->part));
        tr_metric_set(t, name, p->aclip);
        snprintf(name, sizeof name, "q.ascale@%s%s", site, part_suffix(p->part));
        tr_metric_set(t, name, act_scale_now(p));
    }
    return 0;
}

static bool spec_equal(const cp_qspec *a, const cp_qspec *b) {
    if (!a->w_bits || !b->w_bits) return a->w_bits == b->w_bits;
    return a->w_bits == b->w_bits && a->w_sym == b->w_sym && a->gran == b->gran &&
           (a->gran != CP_GRAN_GROUP || a->group == b->group) && a->a_bits == b->a_bits &&
           a->observer == b->observer && a->lsq == b->lsq && a->pact == b->pact;
}

static void quant_describe(tr_policy *pp, tr_trainer *t, char *buf, size_t n) {
    (void)t;
    quant *q = pp->user;
    size_t u = (size_t)snprintf(buf, n, "quant: %d products", q->n_prod);
    /* one line per distinct setting, with its sites */
    bool *done = calloc((size_t)q->tb->n_site, 1);
    for (int i = 0; done && i < q->tb->n_site && u < n; i++) {
        if (!q->tb->site[i].linear || done[i]) continue;
        char d[96];
        cp_qspec_describe(&q->spec[i], d, sizeof d);
        u += (size_t)snprintf(buf + u, n - u, "\n  %s:", d);
        for (int j = i; j < q->tb->n_site && u < n; j++) {
            if (!q->tb->site[j].linear || done[j] || !spec_equal(&q->spec[i], &q->spec[j])) continue;
            done[j] = true;
            u += (size_t)snprintf(buf + u, n - u, " %s", q->tb->site[j].name);
        }
    }
    free(done);
    if (u < n && q->cfg.freeze_step) snprintf(buf + u, n - u, "\n  observers freeze at step %d", q->cfg.freeze_step);
}

/* ------------------------------------------------------------ QUNT */

#define QUNT_VERSION 1u

static int quant_save(tr_policy *pp, tr_trainer *t, tr_ckpt_writer *w) {
    (void)t;
    quant *q = pp->user;
    tr_ckpt_begin(w, "QUNT");
    tr_wr_u32(w, QUNT_VERSION);
    tr_wr_u32(w, (uint32_t)q->n_prod);
    tr_wr_u32(w, q->frozen ? 1u : 0u);
    for (int i = 0; i < q->n_prod; i++) {
        qprod *p = &q->prod[i];
        if (p->t_lsq_w) memcpy(p->lsq_w, p->t_lsq_w->data, (size_t)p->NS * sizeof(float));
        if (p->t_lsq_a) p->lsq_a = p->t_lsq_a->data[0];
        if (p->t_pact) p->pact = p->t_pact->data[0];
        tr_wr_u32(w, (uint32_t)p->tensor);
        tr_wr_u32(w, (uint32_t)p->NS);
        tr_wr_u32(w, (p->w_init ? 1u : 0u) | (p->ema_seen ? 2u : 0u) | (p->a_init ? 4u : 0u) | (p->act.seen ? 8u : 0u));
        tr_wr_f32s(w, p->wscale, (size_t)p->NS);
        for (int j = 0; j < p->NS; j++) tr_wr_u32(w, (uint32_t)p->wzero[j]);
        tr_wr_f32s(w, p->ema_mn, (size_t)p->NS);
        tr_wr_f32s(w, p->ema_mx, (size_t)p->NS);
        tr_wr_f32s(w, p->lsq_w, (size_t)p->NS);
        float a[6] = {p->act.mn, p->act.mx, p->ascale, p->ascale0, p->lsq_a, p->pact};
        tr_wr_f32s(w, a, 6);
    }
    tr_ckpt_end(w);
    return 0;
}

/* Reads QUNT into q's products (made for the same model and keys). */
static int read_qunt(quant *q, const tr_ckpt_file *f, char *err, size_t errlen) {
    tr_rd rd;
    if (tr_rd_open(&rd, f, "QUNT") != 0) {
        snprintf(err, errlen, "%s", rd.err);
        return -1;
    }
    uint32_t ver = 0, n = 0, frozen = 0;
    tr_rd_u32(&rd, "version", &ver);
    tr_rd_u32(&rd, "products", &n);
    tr_rd_u32(&rd, "frozen", &frozen);
    if (!rd.failed && (ver != QUNT_VERSION || n != (uint32_t)q->n_prod))
        tr_rd_fail(&rd, "version %u with %u products: this configuration expects version %u with %d",
                   ver, n, QUNT_VERSION, q->n_prod);
    q->frozen = frozen != 0;
    for (int i = 0; i < q->n_prod && !rd.failed; i++) {
        qprod *p = &q->prod[i];
        uint32_t ti = 0, ns = 0, flags = 0;
        tr_rd_u32(&rd, "tensor", &ti);
        tr_rd_u32(&rd, "scales", &ns);
        if (!rd.failed && (ti != (uint32_t)p->tensor || ns != (uint32_t)p->NS)) {
            tr_rd_fail(&rd, "product %d is tensor %u with %u scales: this configuration makes %s with %d",
                       i, ti, ns, q->tb->tensor[p->tensor].name, p->NS);
            break;
        }
        tr_rd_u32(&rd, "flags", &flags);
        tr_rd_f32s(&rd, "weight scales", p->wscale, (size_t)p->NS);
        for (int j = 0; j < p->NS; j++) {
            uint32_t z = 0;
            tr_rd_u32(&rd, "weight zero points", &z);
            p->wzero[j] = (int32_t)z;
            if (!rd.failed && (p->wzero[j] < p->wg.lo || p->wzero[j] > p->wg.hi))
                tr_rd_fail(&rd, "%s: zero point %d: expected %d..%d", q->tb->tensor[p->tensor].name,
                           p->wzero[j], p->wg.lo, p->wg.hi);
        }
        tr_rd_f32s(&rd, "ema minima", p->ema_mn, (size_t)p->NS);
        tr_rd_f32s(&rd, "ema maxima", p->ema_mx, (size_t)p->NS);
        tr_rd_f32s(&rd, "learned weight scales", p->lsq_w, (size_t)p->NS);
        float a[6] = {0};
        tr_rd_f32s(&rd, "activations", a, 6);
        p->act.mn = a[0], p->act.mx = a[1], p->ascale = a[2], p->ascale0 = a[3], p->lsq_a = a[4], p->pact = a[5];
        p->w_init = flags & 1, p->ema_seen = flags & 2, p->a_init = flags & 4, p->act.seen = flags & 8;
        for (int j = 0; j < p->NS && !rd.failed; j++)
            if (p->w_init && !(isfinite(p->wscale[j]) && p->wscale[j] > 0))
                tr_rd_fail(&rd, "%s: scale %d is %g: expected finite and > 0",
                           q->tb->tensor[p->tensor].name, j, (double)p->wscale[j]);
        if (!rd.failed && p->ahi && p->a_init && !p->spec.lsq && !p->spec.pact && !(isfinite(p->ascale) && p->ascale > 0))
            tr_rd_fail(&rd, "%s: activation scale %g: expected finite and > 0",
                       q->tb->tensor[p->tensor].name, (double)p->ascale);
    }
    if (tr_rd_done(&rd) != 0) {
        snprintf(err, errlen, "%s", rd.err);
        return -1;
    }
    return 0;
}

static int quant_load(tr_policy *pp, tr_trainer *t, const tr_ckpt_file *f) {
    quant *q = pp->user;
    if (!tr_ckpt_find(f, "QUNT")) return 0; /* a float checkpoint (--resume of one that had no quantization) */
    char err[512];
    if (read_qunt(q, f, err, sizeof err) != 0) {
        tr_trainer_fail(t, "quant: %s", err);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ export */

/* The values, codes and parameters product p gives weights w (its current
 * state, no update): w' into out (may be NULL), codes into p->codes,
 * per-row params into p->fscale / fzero. */
static void fake_quant_weights(quant *q, qprod *p, const float *w, float *out) {
    weight_params(q, p, w, false);
    size_t seg = (size_t)p->seg;
    for (size_t i = 0; i < (size_t)p->N * p->K; i++) {
        int j = p->spec.gran == CP_GRAN_TENSOR ? 0 : (int)(i / seg);
        float s = p->wscale[j], inv = 1.0f / s;
        int z = p->wg.symmetric ? 0 : p->wzero[j];
        int code = cp_code(w[i], inv, z, p->wg.lo, p->wg.hi);
        p->codes[i] = (int8_t)code;
        if (out) out[i] = cp_decode(code, z, s);
    }
    expand_params(p);
}

/* Loads the checkpoint's state (without a trainer) for model m. */
static int setup_offline(quant *q, const tr_gpt *m, const tr_ckpt_file *f, char *err, size_t errlen) {
    if (make_products(q, &m->table, err, errlen) != 0) return -1;
    if (!tr_ckpt_find(f, "QUNT")) {
        snprintf(err, errlen, "checkpoint %s has no QUNT section: its configuration asks for quantization, but it was "
                 "not written by a quantization-aware run", f->path);
        return -1;
    }
    if (read_qunt(q, f, err, errlen) != 0) return -1;
    for (int i = 0; i < q->n_prod; i++)
        if (!q->prod[i].w_init) {
            snprintf(err, errlen, "checkpoint %s: %s has no weight scales yet (saved before its first step)", f->path,
                     m->table.tensor[q->prod[i].tensor].name);
            return -1;
        }
    return 0;
}

static int quant_export(tr_policy *pp, const tr_gpt *m, const tr_ckpt_file *f, pm_plan *plan, char *err,
                        size_t errlen) {
    quant *q = pp->user;
    if (setup_offline(q, m, f, err, errlen) != 0) return -1;
    for (int i = 0; i < q->n_prod; i++) {
        qprod *p = &q->prod[i];
        const pm_tensor *x = &m->table.tensor[p->tensor];
        pm_plan_entry *e = pm_plan_find(plan, x->name);
        int pi = pm_table_tensor(&plan->table, x->name);
        if (!e || plan->table.tensor[pi].shape[0] != p->N || plan->table.tensor[pi].shape[1] != p->K) {
            snprintf(err, errlen, "the plan's tensor %s is not the model's [%d, %d] (another policy changed the "
                     "architecture before quantization's export)", x->name, p->N, p->K);
            return -1;
        }
        size_t nk = (size_t)p->N * p->K, nf = (size_t)p->N * (p->K / p->G);
        float *vals = pm_plan_alloc(plan, nk * sizeof(float)), *sc = pm_plan_alloc(plan, nf * sizeof(float));
        int32_t *zp = pm_plan_alloc(plan, nf * sizeof(int32_t));
        if (!vals || !sc || !zp) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        fake_quant_weights(q, p, tr_gpt_param((tr_gpt *)m, p->tensor)->data, vals);
        memcpy(sc, p->fscale, nf * sizeof(float));
        memcpy(zp, p->fzero, nf * sizeof(int32_t));
        e->data = vals;
        snprintf(e->type, sizeof e->type, "%s", inf_type_name(p->dtype));
        e->group = p->G == p->K ? 0 : p->G;
        e->scale = sc;
        e->zero = p->wg.symmetric ? NULL : zp;
        if (p->ahi) {
            e->act_bits = p->spec.a_bits;
            e->act_scale = act_scale_now(p);
            if (!(e->act_scale > 0)) {
                snprintf(err, errlen, "%s: no activation scale yet (the checkpoint was saved before its first step)",
                         x->name);
                return -1;
            }
        }
        snprintf(e->by, sizeof e->by, "quant");
    }
    return 0;
}

/* ------------------------------------------------- outside training */

static ag_tensor *offline_linear(void *user, ag_ctx *c, const pm_site *site, pm_part part, ag_tensor *x,
                                 ag_tensor *w, ag_tensor *b) {
    quant *q = user;
    qprod *p = product_of(q, (int)(site - q->tb->site), part);
    if (!p) return ag_linear(c, x, w, b);
    return product(q, p, c, x, w, b, false, NULL);
}

int cp_quant_forward(tr_policy *pp, const tr_gpt *m, const tr_ckpt_file *f, tr_gpt_fwd *fwd, char *err, size_t errlen) {
    quant *q = pp->user;
    if (setup_offline(q, m, f, err, errlen) != 0) return -1;
    /* the learned values as constant tensors of the policy's own */
    ag_params_free(&q->own);
    ag_params_init(&q->own);
    for (int i = 0; i < q->n_prod; i++) {
        qprod *p = &q->prod[i];
        int one[1] = {1}, ns[1] = {p->NS};
        if (p->spec.lsq) p->h_lsq_w = ag_params_add(&q->own, "w", 1, ns, 0);
        if (p->spec.lsq && p->ahi && !p->spec.pact) p->h_lsq_a = ag_params_add(&q->own, "a", 1, one, 0);
        if (p->spec.pact) p->h_pact = ag_params_add(&q->own, "p", 1, one, 0);
    }
    if (q->own.count && ag_params_alloc(&q->own, 0) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < q->n_prod; i++) {
        qprod *p = &q->prod[i];
        if (p->h_lsq_w >= 0) (p->t_lsq_w = ag_param(&q->own, p->h_lsq_w)), memcpy(p->t_lsq_w->data, p->lsq_w, (size_t)p->NS * sizeof(float));
        if (p->h_lsq_a >= 0) (p->t_lsq_a = ag_param(&q->own, p->h_lsq_a))->data[0] = p->lsq_a;
        if (p->h_pact >= 0) (p->t_pact = ag_param(&q->own, p->h_pact))->data[0] = p->pact;
    }
    memset(fwd, 0, sizeof *fwd);
    fwd->linear = offline_linear;
    fwd->user = q;
    return 0;
}

tr_policy *cp_quant_of(const cp_set *s) {
    for (int i = 0; i < s->n_kinds; i++)
        if (cp_kinds[i] == &cp_quant_kind) return s->policy[i];
    return NULL;
}

void cp_quant_calibrate(tr_policy *p, bool on) { ((quant *)p->user)->calibrating = on; }

void cp_quant_freeze(tr_policy *p) {
    quant *q = p->user;
    q->calibrating = false;
    q->frozen = true;
}

int cp_quant_codes(tr_policy *pp, const tr_gpt *m, int tensor, int8_t *codes, float *scales, int32_t *zeros, int *G) {
    quant *q = pp->user;
    for (int i = 0; i < q->n_prod; i++) {
        qprod *p = &q->prod[i];
        if (p->tensor != tensor) continue;
        fake_quant_weights(q, p, tr_gpt_param((tr_gpt *)m, tensor)->data, NULL);
        size_t nf = (size_t)p->N * (p->K / p->G);
        memcpy(codes, p->codes, (size_t)p->N * p->K);
        memcpy(scales, p->fscale, nf * sizeof(float));
        memcpy(zeros, p->fzero, nf * sizeof(int32_t));
        *G = p->G;
        return 0;
    }
    return -1;
}

/* ------------------------------------------------------------ the kind */

static tr_policy *quant_create(const void *cfgp, char *err, size_t errlen) {
    const cp_quant_cfg *c = cfgp;
    if (c->w_bits && !is_bits(c->w_bits)) {
        snprintf(err, errlen, "w-bits %d: expected 2 to 8 (0 = float weights)", c->w_bits);
        return NULL;
    }
    if (c->a_bits && c->a_bits != 16 && !is_bits(c->a_bits)) {
        snprintf(err, errlen, "a-bits %d: expected 2 to 8 (0 or 16 = float activations)", c->a_bits);
        return NULL;
    }
    if (c->granularity < 0 || c->granularity > 2 || c->observer < 0 || c->observer > 4) {
        snprintf(err, errlen, "granularity %d or observer %d: expected tensor|channel|group and "
                 "minmax|ema|percentile|mse|least-squares", c->granularity, c->observer);
        return NULL;
    }
    quant *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->cfg = *c;
    ag_params_init(&q->own);
    inf_kctx_init(&q->k, inf_isa_best(), 1);
    q->p = (tr_policy){.name = "quant", .user = q, .declare = quant_declare, .on_start = quant_start,
                       .linear = quant_linear, .after_step = quant_after_step, .describe = quant_describe,
                       .save = quant_save, .load = quant_load, .export = quant_export};
    return &q->p;
}

static void quant_destroy(tr_policy *pp) {
    quant *q = pp->user;
    free_products(q);
    free(q->scratch);
    inf_kctx_free(&q->k);
    ag_params_free(&q->own);
    free(q);
}

const cp_kind cp_quant_kind = {
    .name = "quant",
    .summary = "quantization: fake-quantized weights and activations (QAT), observers, LSQ, PACT, per-site settings",
    .cfg_size = sizeof(cp_quant_cfg),
    .keys = quant_keys,
    .wanted = quant_wanted,
    .create = quant_create,
    .destroy = quant_destroy,
};
