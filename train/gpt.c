/* gpt.c - the GPT decoder of gpt.h: parameters, GPT-2 initialisation, forward.
 * The backward is the tape's: every step of the forward below is an op. */
#include "gpt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"

tr_gpt_config tr_gpt_config_default(void) {
    tr_gpt_config c = {.n_layer = 2, .n_head = 4, .n_embd = 64, .mlp_ratio = 4,
                       .ctx = 64, .vocab = 256, .bias = true, .tied = false};
    return c;
}

#define LIMIT_DIM (1 << 20)   /* widths, contexts, layers */
#define LIMIT_VOCAB (1 << 24)
#define LIMIT_TENSOR ((size_t)1 << 31) /* floats in one tensor: shapes are ints */

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
    size_t C = (size_t)cfg->n_embd;
    size_t big = (size_t)cfg->mlp_ratio * C * C; /* largest matrix besides the embeddings */
    if ((size_t)cfg->vocab * C > LIMIT_TENSOR || (size_t)cfg->ctx * C > LIMIT_TENSOR ||
        big > LIMIT_TENSOR || 3 * C * C > LIMIT_TENSOR) {
        snprintf(err, errlen, "n-embd = %d with vocab = %d, ctx = %d, mlp-ratio = %d: a tensor would exceed 2^31 floats",
                 cfg->n_embd, cfg->vocab, cfg->ctx, cfg->mlp_ratio);
        return -1;
    }
    double total = (double)tr_gpt_config_numel(cfg);
    if (total > 4e9) {
        snprintf(err, errlen, "the configuration has %.3g parameters: expected at most 4e9", total);
        return -1;
    }
    return 0;
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

/* ---------------------------------------------------------------- declaring */

static int add(ag_params *p, const char *name, int d0, int d1, int *fail) {
    int shape[2] = {d0, d1};
    int ndim = d1 > 0 ? 2 : 1;
    int group = ndim >= 2 ? TR_GROUP_DECAY : TR_GROUP_NO_DECAY;
    int i = ag_params_add(p, name, ndim, shape, group);
    if (i < 0) *fail = 1;
    return i;
}

static int add_l(ag_params *p, int l, const char *what, int d0, int d1, int *fail) {
    char name[64];
    snprintf(name, sizeof name, "h.%d.%s", l, what);
    return add(p, name, d0, d1, fail);
}

int tr_gpt_declare(const tr_gpt_config *cfg, ag_params *p, tr_gpt *idx, char *err, size_t errlen) {
    if (tr_gpt_config_check(cfg, err, errlen) != 0) return -1;
    int C = cfg->n_embd, V = cfg->vocab, M = cfg->mlp_ratio * cfg->n_embd, L = cfg->n_layer;
    bool b = cfg->bias;
    int fail = 0;
    tr_gpt_layer *layer = NULL;
    if (idx) {
        layer = calloc((size_t)L, sizeof *layer);
        if (!layer) {
            snprintf(err, errlen, "out of memory: %d layer records", L);
            return -1;
        }
    }
    tr_gpt tmp;
    tr_gpt *x = idx ? idx : &tmp;
    x->wte = add(p, "wte", V, C, &fail);
    x->wpe = add(p, "wpe", cfg->ctx, C, &fail);
    for (int l = 0; l < L; l++) {
        tr_gpt_layer y;
        y.ln1_w = add_l(p, l, "ln1.w", C, 0, &fail);
        y.ln1_b = b ? add_l(p, l, "ln1.b", C, 0, &fail) : -1;
        y.qkv_w = add_l(p, l, "attn.qkv.w", 3 * C, C, &fail);
        y.qkv_b = b ? add_l(p, l, "attn.qkv.b", 3 * C, 0, &fail) : -1;
        y.proj_w = add_l(p, l, "attn.proj.w", C, C, &fail);
        y.proj_b = b ? add_l(p, l, "attn.proj.b", C, 0, &fail) : -1;
        y.ln2_w = add_l(p, l, "ln2.w", C, 0, &fail);
        y.ln2_b = b ? add_l(p, l, "ln2.b", C, 0, &fail) : -1;
        y.fc_w = add_l(p, l, "mlp.fc.w", M, C, &fail);
        y.fc_b = b ? add_l(p, l, "mlp.fc.b", M, 0, &fail) : -1;
        y.mproj_w = add_l(p, l, "mlp.proj.w", C, M, &fail);
        y.mproj_b = b ? add_l(p, l, "mlp.proj.b", C, 0, &fail) : -1;
        if (layer) layer[l] = y;
    }
    x->lnf_w = add(p, "lnf.w", C, 0, &fail);
    x->lnf_b = b ? add(p, "lnf.b", C, 0, &fail) : -1;
    x->lm_head = cfg->tied ? x->wte : add(p, "lm_head.w", V, C, &fail);
    if (fail) {
        free(layer);
        snprintf(err, errlen, "out of memory declaring the model's parameters");
        return -1;
    }
    if (idx) idx->layer = layer;
    return 0;
}

int tr_gpt_init(tr_gpt *m, const tr_gpt_config *cfg, int flags, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    ag_params_init(&m->params);
    if (tr_gpt_config_check(cfg, err, errlen) != 0) return -1;
    m->cfg = *cfg;
    if (tr_gpt_declare(cfg, &m->params, m, err, errlen) != 0) {
        tr_gpt_free(m);
        return -1;
    }
    if (ag_params_alloc(&m->params, flags) != 0) {
        snprintf(err, errlen, "out of memory: %zu floats of parameters (x%d buffers)", m->params.n,
                 1 + !!(flags & AG_PARAMS_GRAD) + 2 * !!(flags & AG_PARAMS_MOMENTS));
        tr_gpt_free(m);
        return -1;
    }
    return 0;
}

void tr_gpt_free(tr_gpt *m) {
    if (!m) return;
    ag_params_free(&m->params);
    free(m->layer);
    m->layer = NULL;
}

/* ---------------------------------------------------------- initialisation */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

void tr_gpt_init_weights(tr_gpt *m, uint64_t seed) {
    ag_rng r;
    ag_rng_seed(&r, seed);
    float resid_std = TR_GPT_INIT_STD / sqrtf(2.0f * (float)m->cfg.n_layer);
    for (int i = 0; i < m->params.count; i++) {
        ag_tensor *t = ag_param(&m->params, i);
        const char *name = m->params.names[i];
        if (t->ndim >= 2) {
            float std = (ends_with(name, "attn.proj.w") || ends_with(name, "mlp.proj.w")) ? resid_std
                                                                                         : TR_GPT_INIT_STD;
            for (size_t j = 0; j < t->numel; j++) t->data[j] = std * ag_rng_normal(&r);
        } else {
            float v = ends_with(name, ".w") ? 1.0f : 0.0f; /* layer norm gains 1, biases 0 */
            for (size_t j = 0; j < t->numel; j++) t->data[j] = v;
        }
    }
}

/* ------------------------------------------------------------------ forward */

/* The parameter with index i, passed through the caller's weight hook. */
static ag_tensor *W(ag_ctx *c, tr_gpt *m, const tr_gpt_fwd *opt, int i) {
    if (i < 0) return NULL;
    ag_tensor *w = ag_param(&m->params, i);
    if (opt && opt->weight) {
        ag_tensor *u = opt->weight(opt->user, c, i, w);
        if (!u) ag_fail(c, "the forward's weight hook failed on %s", m->params.names[i]);
        return u;
    }
    return w;
}

/* Bias, or NULL without one (a missing bias is not an error). */
static ag_tensor *Bias(ag_ctx *c, tr_gpt *m, const tr_gpt_fwd *opt, int i, bool *bad) {
    if (i < 0) return NULL;
    ag_tensor *b = W(c, m, opt, i);
    if (!b) *bad = true;
    return b;
}

ag_tensor *tr_gpt_forward(ag_ctx *c, tr_gpt *m, const int *ids, int B, int T, const tr_gpt_fwd *opt) {
    const tr_gpt_config *cfg = &m->cfg;
    if (B < 1 || T < 1 || T > cfg->ctx) {
        ag_fail(c, "gpt forward: batch %d x length %d: expected batch >= 1 and 1 <= length <= ctx = %d", B, T,
                cfg->ctx);
        return NULL;
    }
    int C = cfg->n_embd, H = cfg->n_head;
    bool bad = false;

    /* x[B,T,C] = wte[ids] + wpe[0..T) */
    int ishape[2] = {B, T};
    ag_tensor *tok = ag_embedding(c, W(c, m, opt, m->wte), ids, 2, ishape); /* [B,T,C] */
    ag_tensor *wpe = W(c, m, opt, m->wpe);                                  /* [ctx,C] */
    ag_tensor *pos = NULL;                                                  /* [T,C] */
    if (wpe) {
        int pshape[2] = {T, C};
        if (T == cfg->ctx) {
            pos = wpe;
        } else {
            /* the first T rows of wpe: a view sharing data and grad */
            pos = ag_alloc(c, sizeof *pos);
            if (pos) {
                *pos = *wpe;
                ag_tensor_set_shape(pos, 2, pshape);
            }
        }
    }
    ag_tensor *x = ag_add(c, tok, pos); /* [B,T,C] */
    if (opt && opt->hidden) opt->hidden[0] = x;

    for (int l = 0; l < cfg->n_layer; l++) {
        const tr_gpt_layer *y = &m->layer[l];
        /* attention sub-block */
        ag_tensor *a = ag_layernorm(c, x, W(c, m, opt, y->ln1_w), Bias(c, m, opt, y->ln1_b, &bad),
                                    TR_GPT_LN_EPS);                                       /* [B,T,C] */
        ag_tensor *qkv = ag_linear(c, a, W(c, m, opt, y->qkv_w), Bias(c, m, opt, y->qkv_b, &bad)); /* [B,T,3C] */
        /* q, k, v read in place from qkv (no head copies): the same bits as
         * split_heads + attention + merge_heads (test_attention). A caller
         * that reads P gets it as a tensor (two ops); otherwise one fused op
         * keeps P to itself and needs no gradient for it (same bits). */
        ag_tensor *merged; /* [B,T,C] */
        if (opt && opt->probs) {
            ag_tensor *P = ag_attn_probs_qkv(c, qkv, H); /* [B,H,T,T] */
            opt->probs[l] = P;
            merged = ag_attn_apply_merge(c, P, qkv);
        } else {
            merged = ag_attention_qkv(c, qkv, H);
        }
        ag_tensor *proj = ag_linear(c, merged, W(c, m, opt, y->proj_w), Bias(c, m, opt, y->proj_b, &bad));
        x = ag_add(c, x, proj);
        /* MLP sub-block */
        ag_tensor *h = ag_layernorm(c, x, W(c, m, opt, y->ln2_w), Bias(c, m, opt, y->ln2_b, &bad),
                                    TR_GPT_LN_EPS);                                       /* [B,T,C] */
        ag_tensor *fc = ag_linear(c, h, W(c, m, opt, y->fc_w), Bias(c, m, opt, y->fc_b, &bad)); /* [B,T,M] */
        ag_tensor *g = ag_gelu(c, fc);
        ag_tensor *mp = ag_linear(c, g, W(c, m, opt, y->mproj_w), Bias(c, m, opt, y->mproj_b, &bad)); /* [B,T,C] */
        x = ag_add(c, x, mp);
        if (opt && opt->hidden) opt->hidden[l + 1] = x;
    }
    ag_tensor *f = ag_layernorm(c, x, W(c, m, opt, m->lnf_w), Bias(c, m, opt, m->lnf_b, &bad), TR_GPT_LN_EPS);
    ag_tensor *logits = ag_linear(c, f, W(c, m, opt, m->lm_head), NULL); /* [B,T,V] */
    if (bad || ag_error(c)) return NULL;
    return logits;
}
