/* gpt.c - the GPT decoder of gpt.h: parameters from the model's table,
 * GPT-2 initialisation, forward. The backward is the tape's: every step of
 * the forward below is an op. */
#include "gpt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/rng.h"
#include "keys.h"

tr_gpt_config tr_gpt_config_default(void) {
    tr_gpt_config c = {0};
    pare_keys k = {.n = 0};
    tr_model_keys(&k, &c);
    char err[256];
    if (pare_opts_defaults(k.row, k.n, err, sizeof err) != 0) abort(); /* a bad default in keys.c is a bug */
    c.vocab = 256;
    return c;
}

#define LIMIT_DIM (1 << 20) /* widths, contexts, layers */
#define LIMIT_VOCAB (1 << 24)

static int check_range(const char *name, int v, int lo, int hi, char *err, size_t errlen) {
    if (v < lo || v > hi) {
        snprintf(err, errlen, "%s = %d: expected an integer in [%d, %d]", name, v, lo, hi);
        return -1;
    }
    return 0;
}

int tr_gpt_config_check(const tr_gpt_config *cfg, char *err, size_t errlen) {
    if (check_range("n-layer", cfg->n_layer, 1, 4096, err, errlen) ||
        check_range("n-head", cfg->n_head, 1, LIMIT_DIM, err, errlen) ||
        check_range("n-embd", cfg->n_embd, 1, LIMIT_DIM, err, errlen) ||
        check_range("mlp-ratio", cfg->mlp_ratio, 1, 64, err, errlen) ||
        check_range("ctx", cfg->ctx, 1, LIMIT_DIM, err, errlen) ||
        check_range("vocab", cfg->vocab, 2, LIMIT_VOCAB, err, errlen))
        return -1;
    if (cfg->n_embd % cfg->n_head != 0) {
        snprintf(err, errlen, "n-head = %d does not divide n-embd = %d: expected the width to be a multiple of the head count",
                 cfg->n_head, cfg->n_embd);
        return -1;
    }
    if ((long)cfg->mlp_ratio * cfg->n_embd > LIMIT_DIM) {
        snprintf(err, errlen, "mlp-ratio = %d with n-embd = %d: expected an MLP width of at most %d", cfg->mlp_ratio,
                 cfg->n_embd, LIMIT_DIM);
        return -1;
    }
    pm_arch a;
    if (pm_arch_uniform(&a, cfg->n_layer, cfg->n_head, cfg->n_embd, cfg->mlp_ratio * cfg->n_embd, cfg->ctx,
                        cfg->vocab, cfg->bias, cfg->tied) != 0) {
        snprintf(err, errlen, "out of memory checking a model of %d layers", cfg->n_layer);
        return -1;
    }
    int rc = pm_arch_check(&a, err, errlen);
    pm_arch_free(&a);
    return rc;
}

size_t tr_gpt_config_numel(const tr_gpt_config *cfg) {
    size_t C = (size_t)cfg->n_embd, V = (size_t)cfg->vocab, M = (size_t)cfg->mlp_ratio * C;
    size_t b = cfg->bias ? 1 : 0;
    size_t per_layer = (C + b * C)          /* ln1 */
                       + 3 * C * C + b * 3 * C /* qkv */
                       + C * C + b * C      /* proj */
                       + (C + b * C)        /* ln2 */
                       + M * C + b * M      /* fc */
                       + C * M + b * C;     /* mlp proj */
    return V * C + (size_t)cfg->ctx * C + (size_t)cfg->n_layer * per_layer + (C + b * C) +
           (cfg->tied ? 0 : V * C);
}

int tr_gpt_config_arch(const tr_gpt_config *cfg, pm_arch *a, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    if (tr_gpt_config_check(cfg, err, errlen) != 0) return -1;
    if (pm_arch_uniform(a, cfg->n_layer, cfg->n_head, cfg->n_embd, cfg->mlp_ratio * cfg->n_embd, cfg->ctx,
                        cfg->vocab, cfg->bias, cfg->tied) != 0) {
        snprintf(err, errlen, "out of memory: a model of %d layers", cfg->n_layer);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- building */

int tr_gpt_init_arch(tr_gpt *m, const pm_arch *a, int flags, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    ag_params_init(&m->params);
    if (pm_arch_check(a, err, errlen) != 0) return -1;
    if (pm_arch_copy(&m->arch, a) != 0 || !(m->layer = calloc((size_t)a->n_layer, sizeof *m->layer))) {
        snprintf(err, errlen, "out of memory: a model of %d layers", a->n_layer);
        tr_gpt_free(m);
        return -1;
    }
    if (pm_table_build(&m->table, &m->arch, err, errlen) != 0) {
        tr_gpt_free(m);
        return -1;
    }
    /* one parameter per table tensor, in table order */
    for (int i = 0; i < m->table.n_tensor; i++) {
        const pm_tensor *t = &m->table.tensor[i];
        if (ag_params_add(&m->params, t->name, t->ndim, t->shape, t->decay ? TR_GROUP_DECAY : TR_GROUP_NO_DECAY) != i) {
            snprintf(err, errlen, "out of memory declaring the model's parameters");
            tr_gpt_free(m);
            return -1;
        }
    }
    const pm_table *tb = &m->table;
    m->wte = pm_table_site_of(tb, -1, PM_WTE);
    m->wpe = pm_table_site_of(tb, -1, PM_WPE);
    m->lnf = pm_table_site_of(tb, -1, PM_LNF);
    m->head = pm_table_site_of(tb, -1, PM_HEAD);
    for (int l = 0; l < a->n_layer; l++)
        m->layer[l] = (tr_gpt_layer){pm_table_site_of(tb, l, PM_LN1), pm_table_site_of(tb, l, PM_QKV),
                                     pm_table_site_of(tb, l, PM_PROJ), pm_table_site_of(tb, l, PM_LN2),
                                     pm_table_site_of(tb, l, PM_FC), pm_table_site_of(tb, l, PM_MPROJ)};
    if (ag_params_alloc(&m->params, flags) != 0) {
        snprintf(err, errlen, "out of memory: %zu floats of parameters (x%d buffers)", m->params.n,
                 1 + !!(flags & AG_PARAMS_GRAD) + 2 * !!(flags & AG_PARAMS_MOMENTS));
        tr_gpt_free(m);
        return -1;
    }
    return 0;
}

int tr_gpt_init(tr_gpt *m, const tr_gpt_config *cfg, int flags, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    pm_arch a;
    if (tr_gpt_config_arch(cfg, &a, err, errlen) != 0) return -1;
    int rc = tr_gpt_init_arch(m, &a, flags, err, errlen);
    pm_arch_free(&a);
    return rc;
}

void tr_gpt_free(tr_gpt *m) {
    if (!m) return;
    ag_params_free(&m->params);
    pm_table_free(&m->table);
    pm_arch_free(&m->arch);
    free(m->layer);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------- initialisation */

void tr_gpt_init_weights(tr_gpt *m, uint64_t seed) {
    ag_rng r;
    ag_rng_seed(&r, seed);
    float resid_std = TR_GPT_INIT_STD / sqrtf(2.0f * (float)m->arch.n_layer);
    for (int i = 0; i < m->table.n_tensor; i++) {
        ag_tensor *t = tr_gpt_param(m, i);
        pm_init init = m->table.tensor[i].init;
        if (init == PM_INIT_NORMAL || init == PM_INIT_RESIDUAL) {
            float std = init == PM_INIT_RESIDUAL ? resid_std : TR_GPT_INIT_STD;
            for (size_t j = 0; j < t->numel; j++) t->data[j] = std * ag_rng_normal(&r);
        } else {
            float v = init == PM_INIT_ONES ? 1.0f : 0.0f; /* layer norm gains 1, biases 0 */
            for (size_t j = 0; j < t->numel; j++) t->data[j] = v;
        }
    }
}

/* ------------------------------------------------------------------ forward */

/* Table tensor i as a parameter, or NULL when absent (i < 0). */
static ag_tensor *P(tr_gpt *m, int i) { return i >= 0 ? tr_gpt_param(m, i) : NULL; }

/* One matrix product of a linear site, through the caller's hook. */
static ag_tensor *product(ag_ctx *c, const tr_gpt_fwd *opt, const pm_site *s, pm_part part, ag_tensor *x,
                          ag_tensor *w, ag_tensor *b) {
    if (!x) return NULL;
    if (!opt || !opt->linear) return ag_linear(c, x, w, b);
    ag_tensor *y = opt->linear(opt->user, c, s, part, x, w, b);
    if (!y && !ag_error(c)) ag_fail(c, "the forward's linear hook failed on %s", s->name);
    return y;
}

/* out = x W^T + b of linear site si, or x V^T U^T + b when factorized. */
static ag_tensor *linear_site(ag_ctx *c, tr_gpt *m, const tr_gpt_fwd *opt, int si, ag_tensor *x) {
    const pm_site *s = &m->table.site[si];
    ag_tensor *b = P(m, s->b);
    if (s->rank > 0) {
        ag_tensor *h = product(c, opt, s, PM_V, x, P(m, s->v), NULL); /* [.., rank] */
        return product(c, opt, s, PM_U, h, P(m, s->u), b);
    }
    return product(c, opt, s, PM_W, x, P(m, s->w), b);
}

/* Layer norm of site si (gain, and bias when the model has biases). */
static ag_tensor *norm_site(ag_ctx *c, tr_gpt *m, int si, ag_tensor *x) {
    const pm_site *s = &m->table.site[si];
    return ag_layernorm(c, x, P(m, s->w), P(m, s->b), TR_GPT_LN_EPS);
}

ag_tensor *tr_gpt_forward(ag_ctx *c, tr_gpt *m, const int *ids, int B, int T, const tr_gpt_fwd *opt) {
    const pm_arch *a = &m->arch;
    if (B < 1 || T < 1 || T > a->ctx) {
        ag_fail(c, "gpt forward: batch %d x length %d: expected batch >= 1 and 1 <= length <= ctx = %d", B, T,
                a->ctx);
        return NULL;
    }
    int C = a->n_embd;

    /* x[B,T,C] = wte[ids] + wpe[0..T) */
    int ishape[2] = {B, T};
    ag_tensor *tok = ag_embedding(c, P(m, m->table.site[m->wte].w), ids, 2, ishape); /* [B,T,C] */
    ag_tensor *wpe = P(m, m->table.site[m->wpe].w);                                   /* [ctx,C] */
    ag_tensor *pos = wpe;                                                            /* [T,C] */
    if (T < a->ctx) {
        /* the first T rows of wpe: a view sharing data and grad */
        pos = ag_alloc(c, sizeof *pos);
        if (pos) {
            int pshape[2] = {T, C};
            *pos = *wpe;
            ag_tensor_set_shape(pos, 2, pshape);
        }
    }
    ag_tensor *x = ag_add(c, tok, pos); /* [B,T,C] */
    if (opt && opt->hidden) opt->hidden[0] = x;

    for (int l = 0; l < a->n_layer; l++) {
        const tr_gpt_layer *y = &m->layer[l];
        int H = a->n_head[l];
        /* attention sub-block */
        ag_tensor *qkv = linear_site(c, m, opt, y->qkv, norm_site(c, m, y->ln1, x)); /* [B,T,3A] */
        if (opt && opt->qkv) opt->qkv[l] = qkv;
        /* q, k, v read in place from qkv (no head copies): the same bits as
         * split_heads + attention + merge_heads (test_attention). A caller
         * that reads P gets it as a tensor (two ops); otherwise one fused op
         * keeps P to itself and needs no gradient for it (same bits). */
        ag_tensor *merged; /* [B,T,A] */
        if (opt && opt->probs) {
            ag_tensor *Pr = ag_attn_probs_qkv(c, qkv, H); /* [B,H,T,T] */
            opt->probs[l] = Pr;
            merged = ag_attn_apply_merge(c, Pr, qkv);
        } else {
            merged = ag_attention_qkv(c, qkv, H);
        }
        x = ag_add(c, x, linear_site(c, m, opt, y->proj, merged));
        /* MLP sub-block */
        ag_tensor *fc = linear_site(c, m, opt, y->fc, norm_site(c, m, y->ln2, x)); /* [B,T,M] */
        x = ag_add(c, x, linear_site(c, m, opt, y->mproj, ag_gelu(c, fc)));          /* [B,T,C] */
        if (opt && opt->hidden) opt->hidden[l + 1] = x;
    }
    ag_tensor *logits = linear_site(c, m, opt, m->head, norm_site(c, m, m->lnf, x)); /* [B,T,V] */
    if (ag_error(c)) return NULL;
    return logits;
}

double tr_gpt_step_bytes(const pm_arch *a, int B, int T, bool training) {
    double C = a->n_embd, per_token = 4.0 * C + 2.0 * a->vocab; /* embeddings, final norm, logits and their softmax */
    for (int l = 0; l < a->n_layer; l++) {
        double A = (double)a->n_head[l] * a->head_dim, M = a->n_hidden[l];
        per_token += 6.0 * C + 4.0 * A + 2.0 * (double)a->n_head[l] * T + 3.0 * M;
    }
    return 4.0 * per_token * (double)B * (double)T * (training ? 3.0 : 1.0);
}

int tr_gpt_check_batch(const pm_arch *a, int B, int T, bool training, char *err, size_t errlen) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return 0; /* unknown: no check */
    double have = (double)pages * (double)page, need = tr_gpt_step_bytes(a, B, T, training);
    if (need <= 0.9 * have) return 0;
    snprintf(err, errlen, "--batch %d x %d tokens: about %.3g GB of activations%s, this machine has %.3g GB: expected a "
             "smaller --batch", B, T, need / 1e9, training ? " and gradients" : "", have / 1e9);
    return -1;
}
