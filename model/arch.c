/* arch.c - the GPT's table of sites and tensors (see arch.h). */
#include "arch.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIMIT_DIM (1 << 20)            /* widths, contexts, heads */
#define LIMIT_LAYERS 4096
#define LIMIT_VOCAB (1 << 24)
#define LIMIT_TENSOR ((size_t)1 << 31) /* floats in one tensor: shapes are ints */
#define LIMIT_TOTAL 4e9                /* parameters */

static int n_ranks(const pm_arch *a) { return a->n_layer * PM_LINEARS_PER_LAYER + 1; }

int pm_arch_alloc(pm_arch *a) {
    a->n_head = a->n_hidden = a->rank = NULL;
    if (a->n_layer < 1 || a->n_layer > LIMIT_LAYERS) return -1;
    a->n_head = calloc((size_t)a->n_layer, sizeof *a->n_head);
    a->n_hidden = calloc((size_t)a->n_layer, sizeof *a->n_hidden);
    a->rank = calloc((size_t)n_ranks(a), sizeof *a->rank);
    if (!a->n_head || !a->n_hidden || !a->rank) {
        pm_arch_free(a);
        return -1;
    }
    return 0;
}

int pm_arch_uniform(pm_arch *a, int n_layer, int n_head, int n_embd, int n_hidden, int ctx, int vocab, bool bias,
                    bool tied) {
    memset(a, 0, sizeof *a);
    a->n_layer = n_layer;
    a->n_embd = n_embd;
    a->head_dim = n_head > 0 ? n_embd / n_head : 0;
    a->ctx = ctx;
    a->vocab = vocab;
    a->bias = bias;
    a->tied = tied;
    if (pm_arch_alloc(a) != 0) return -1;
    for (int l = 0; l < n_layer; l++) a->n_head[l] = n_head, a->n_hidden[l] = n_hidden;
    return 0;
}

int pm_arch_copy(pm_arch *dst, const pm_arch *src) {
    *dst = *src;
    if (pm_arch_alloc(dst) != 0) return -1;
    memcpy(dst->n_head, src->n_head, (size_t)src->n_layer * sizeof *dst->n_head);
    memcpy(dst->n_hidden, src->n_hidden, (size_t)src->n_layer * sizeof *dst->n_hidden);
    memcpy(dst->rank, src->rank, (size_t)n_ranks(src) * sizeof *dst->rank);
    return 0;
}

void pm_arch_free(pm_arch *a) {
    if (!a) return;
    free(a->n_head);
    free(a->n_hidden);
    free(a->rank);
    memset(a, 0, sizeof *a);
}

bool pm_arch_equal(const pm_arch *a, const pm_arch *b) {
    if (a->n_layer != b->n_layer || a->n_embd != b->n_embd || a->head_dim != b->head_dim || a->ctx != b->ctx ||
        a->vocab != b->vocab || a->bias != b->bias || a->tied != b->tied)
        return false;
    for (int l = 0; l < a->n_layer; l++)
        if (a->n_head[l] != b->n_head[l] || a->n_hidden[l] != b->n_hidden[l]) return false;
    for (int i = 0; i < n_ranks(a); i++)
        if (a->rank[i] != b->rank[i]) return false;
    return true;
}

bool pm_arch_is_uniform(const pm_arch *a) {
    for (int l = 0; l < a->n_layer; l++)
        if (a->n_head[l] != a->n_head[0] || a->n_hidden[l] != a->n_hidden[0]) return false;
    for (int i = 0; i < n_ranks(a); i++)
        if (a->rank[i] != 0) return false;
    return a->n_head[0] * a->head_dim == a->n_embd;
}

int pm_rank_slot(const pm_arch *a, int layer, pm_role r) {
    switch (r) {
    case PM_QKV: return layer * PM_LINEARS_PER_LAYER + 0;
    case PM_PROJ: return layer * PM_LINEARS_PER_LAYER + 1;
    case PM_FC: return layer * PM_LINEARS_PER_LAYER + 2;
    case PM_MPROJ: return layer * PM_LINEARS_PER_LAYER + 3;
    case PM_HEAD: return a->n_layer * PM_LINEARS_PER_LAYER;
    default: return -1;
    }
}

const char *pm_role_name(pm_role r) {
    static const char *const names[PM_ROLE_COUNT] = {"wte", "wpe", "ln1", "attn.qkv", "attn.proj", "ln2",
                                                     "mlp.fc", "mlp.proj", "lnf", "lm_head"};
    return r >= 0 && r < PM_ROLE_COUNT ? names[r] : "?";
}

static int range(const char *what, long v, long lo, long hi, char *err, size_t errlen) {
    if (v < lo || v > hi) {
        snprintf(err, errlen, "%s = %ld: expected an integer in [%ld, %ld]", what, v, lo, hi);
        return -1;
    }
    return 0;
}

/* out and in of a linear site of layer l (-1: the head). */
static void linear_shape(const pm_arch *a, int l, pm_role r, int *out, int *in) {
    int C = a->n_embd, A = l >= 0 ? a->n_head[l] * a->head_dim : 0, M = l >= 0 ? a->n_hidden[l] : 0;
    switch (r) {
    case PM_QKV: *out = 3 * A, *in = C; break;
    case PM_PROJ: *out = C, *in = A; break;
    case PM_FC: *out = M, *in = C; break;
    case PM_MPROJ: *out = C, *in = M; break;
    default: *out = a->vocab, *in = C; break; /* PM_HEAD */
    }
}

int pm_arch_check(const pm_arch *a, char *err, size_t errlen) {
    if (range("n-layer", a->n_layer, 1, LIMIT_LAYERS, err, errlen) ||
        range("n-embd", a->n_embd, 1, LIMIT_DIM, err, errlen) ||
        range("head width", a->head_dim, 1, LIMIT_DIM, err, errlen) ||
        range("ctx", a->ctx, 1, LIMIT_DIM, err, errlen) || range("vocab", a->vocab, 2, LIMIT_VOCAB, err, errlen))
        return -1;
    if (!a->n_head || !a->n_hidden || !a->rank) {
        snprintf(err, errlen, "architecture without its per-layer tables");
        return -1;
    }
    char what[64];
    for (int l = 0; l < a->n_layer; l++) {
        snprintf(what, sizeof what, "layer %d heads", l);
        if (range(what, a->n_head[l], 1, LIMIT_DIM, err, errlen)) return -1;
        if ((long)a->n_head[l] * a->head_dim > LIMIT_DIM) {
            snprintf(err, errlen, "layer %d: %d heads of width %d: expected an attention width of at most %d", l,
                     a->n_head[l], a->head_dim, LIMIT_DIM);
            return -1;
        }
        snprintf(what, sizeof what, "layer %d MLP width", l);
        if (range(what, a->n_hidden[l], 1, LIMIT_DIM, err, errlen)) return -1;
    }
    double total = 0;
    for (int l = -1; l < a->n_layer; l++)
        for (pm_role r = PM_QKV; r <= PM_HEAD; r++) {
            if ((l < 0) != (r == PM_HEAD) || pm_rank_slot(a, l, r) < 0) continue;
            int out, in, rk = a->rank[pm_rank_slot(a, l, r)];
            linear_shape(a, l, r, &out, &in);
            if ((size_t)out * (size_t)in > LIMIT_TENSOR) {
                snprintf(err, errlen, "n-embd = %d with vocab = %d: the %s matrix [%d, %d] would exceed 2^31 floats",
                         a->n_embd, a->vocab, pm_role_name(r), out, in);
                return -1;
            }
            int lim = out < in ? out : in;
            if (rk < 0 || rk > lim) {
                if (l >= 0) snprintf(err, errlen, "layer %d %s rank %d: expected 0 (dense) .. %d", l, pm_role_name(r), rk, lim);
                else snprintf(err, errlen, "%s rank %d: expected 0 (dense) .. %d", pm_role_name(r), rk, lim);
                return -1;
            }
            if (r == PM_HEAD && a->tied && rk != 0) {
                snprintf(err, errlen, "lm_head rank %d: a tied head is wte itself and cannot be factorized", rk);
                return -1;
            }
            if (r == PM_HEAD && a->tied) continue;
            total += rk ? (double)rk * (out + in) : (double)out * in;
        }
    if ((size_t)a->vocab * (size_t)a->n_embd > LIMIT_TENSOR || (size_t)a->ctx * (size_t)a->n_embd > LIMIT_TENSOR) {
        snprintf(err, errlen, "n-embd = %d with vocab = %d, ctx = %d: an embedding would exceed 2^31 floats", a->n_embd,
                 a->vocab, a->ctx);
        return -1;
    }
    total += (double)(a->vocab + a->ctx) * a->n_embd;
    if (total > LIMIT_TOTAL) {
        snprintf(err, errlen, "the configuration has %.3g parameters: expected at most 4e9", total);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ table */

typedef struct builder {
    pm_table *t;
    const pm_arch *a;
    int cap_site, cap_tensor;
    bool oom;
} builder;

static int add_site(builder *bd, pm_role r, int layer) {
    pm_table *t = bd->t;
    if (t->n_site == bd->cap_site) {
        int cap = bd->cap_site ? 2 * bd->cap_site : 64;
        pm_site *s = realloc(t->site, (size_t)cap * sizeof *s);
        if (!s) {
            bd->oom = true;
            return -1;
        }
        t->site = s, bd->cap_site = cap;
    }
    pm_site *s = &t->site[t->n_site];
    memset(s, 0, sizeof *s);
    if (layer >= 0) snprintf(s->name, sizeof s->name, "h.%d.%s", layer, pm_role_name(r));
    else snprintf(s->name, sizeof s->name, "%s", pm_role_name(r));
    s->role = r;
    s->layer = layer;
    s->linear = r == PM_QKV || r == PM_PROJ || r == PM_FC || r == PM_MPROJ || r == PM_HEAD;
    s->w = s->b = s->u = s->v = -1;
    if (s->linear) {
        linear_shape(bd->a, layer, r, &s->out, &s->in);
        s->rank = bd->a->rank[pm_rank_slot(bd->a, layer, r)];
    }
    return t->n_site++;
}

static int add_tensor(builder *bd, int site, pm_part part, int d0, int d1, pm_init init) {
    pm_table *t = bd->t;
    if (t->n_tensor == bd->cap_tensor) {
        int cap = bd->cap_tensor ? 2 * bd->cap_tensor : 128;
        pm_tensor *x = realloc(t->tensor, (size_t)cap * sizeof *x);
        if (!x) {
            bd->oom = true;
            return -1;
        }
        t->tensor = x, bd->cap_tensor = cap;
    }
    static const char *const suffix[4] = {"w", "b", "u", "v"};
    pm_tensor *x = &t->tensor[t->n_tensor];
    memset(x, 0, sizeof *x);
    const char *sn = t->site[site].name;
    /* the embeddings' tensors are named after their sites alone */
    if (t->site[site].role == PM_WTE || t->site[site].role == PM_WPE) snprintf(x->name, sizeof x->name, "%s", sn);
    else snprintf(x->name, sizeof x->name, "%s.%s", sn, suffix[part]);
    x->site = site;
    x->part = part;
    x->ndim = d1 > 0 ? 2 : 1;
    x->shape[0] = d0;
    x->shape[1] = d1 > 0 ? d1 : 1;
    x->init = init;
    x->decay = x->ndim == 2;
    int i = t->n_tensor++;
    pm_site *s = &t->site[site];
    if (part == PM_W) s->w = i;
    else if (part == PM_B) s->b = i;
    else if (part == PM_U) s->u = i;
    else s->v = i;
    return i;
}

/* A linear site's weight (dense, or its two factors) and bias. */
static void add_linear(builder *bd, pm_role r, int layer, pm_init init) {
    int s = add_site(bd, r, layer);
    if (s < 0) return;
    pm_site st = bd->t->site[s];
    if (st.rank > 0) {
        add_tensor(bd, s, PM_U, st.out, st.rank, PM_INIT_NORMAL);
        add_tensor(bd, s, PM_V, st.rank, st.in, PM_INIT_NORMAL);
    } else {
        add_tensor(bd, s, PM_W, st.out, st.in, init);
    }
    if (bd->a->bias && r != PM_HEAD) add_tensor(bd, s, PM_B, st.out, 0, PM_INIT_ZEROS);
}

static void add_norm(builder *bd, pm_role r, int layer) {
    int s = add_site(bd, r, layer);
    if (s < 0) return;
    add_tensor(bd, s, PM_W, bd->a->n_embd, 0, PM_INIT_ONES);
    if (bd->a->bias) add_tensor(bd, s, PM_B, bd->a->n_embd, 0, PM_INIT_ZEROS);
}

int pm_table_build(pm_table *t, const pm_arch *a, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    if (pm_arch_check(a, err, errlen) != 0) return -1;
    builder bd = {t, a, 0, 0, false};
    int C = a->n_embd;
    int s = add_site(&bd, PM_WTE, -1);
    if (s >= 0) add_tensor(&bd, s, PM_W, a->vocab, C, PM_INIT_NORMAL);
    s = add_site(&bd, PM_WPE, -1);
    if (s >= 0) add_tensor(&bd, s, PM_W, a->ctx, C, PM_INIT_NORMAL);
    for (int l = 0; l < a->n_layer && !bd.oom; l++) {
        add_norm(&bd, PM_LN1, l);
        add_linear(&bd, PM_QKV, l, PM_INIT_NORMAL);
        add_linear(&bd, PM_PROJ, l, PM_INIT_RESIDUAL);
        add_norm(&bd, PM_LN2, l);
        add_linear(&bd, PM_FC, l, PM_INIT_NORMAL);
        add_linear(&bd, PM_MPROJ, l, PM_INIT_RESIDUAL);
    }
    add_norm(&bd, PM_LNF, -1);
    if (a->tied) {
        s = add_site(&bd, PM_HEAD, -1);
        if (s >= 0) t->site[s].w = 0; /* wte */
    } else {
        add_linear(&bd, PM_HEAD, -1, PM_INIT_NORMAL);
    }
    if (bd.oom) {
        snprintf(err, errlen, "out of memory building the model's table of %d layers", a->n_layer);
        return -1;
    }
    return 0;
}

void pm_table_free(pm_table *t) {
    if (!t) return;
    free(t->site);
    free(t->tensor);
    memset(t, 0, sizeof *t);
}

int pm_table_tensor(const pm_table *t, const char *name) {
    for (int i = 0; i < t->n_tensor; i++)
        if (strcmp(t->tensor[i].name, name) == 0) return i;
    return -1;
}

int pm_table_site(const pm_table *t, const char *name) {
    for (int i = 0; i < t->n_site; i++)
        if (strcmp(t->site[i].name, name) == 0) return i;
    return -1;
}

int pm_table_site_of(const pm_table *t, int layer, pm_role r) {
    for (int i = 0; i < t->n_site; i++)
        if (t->site[i].layer == layer && t->site[i].role == r) return i;
    return -1;
}

bool pm_glob_match(const char *globs, const char *name) {
    char one[256];
    for (const char *p = globs; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n && (*p == ' ')) p++, n--;
        while (n && p[n - 1] == ' ') n--;
        if (n && n < sizeof one) {
            memcpy(one, p, n);
            one[n] = '\0';
            if (fnmatch(one, name, 0) == 0) return true;
        }
        p = comma ? comma + 1 : p + strlen(p);
    }
    return false;
}

size_t pm_arch_numel(const pm_arch *a) {
    size_t C = (size_t)a->n_embd, b = a->bias ? 1 : 0;
    size_t n = ((size_t)a->vocab + (size_t)a->ctx) * C + C * (1 + b); /* embeddings, lnf */
    for (int l = -1; l < a->n_layer; l++)
        for (pm_role r = PM_QKV; r <= PM_HEAD; r++) {
            if ((l < 0) != (r == PM_HEAD) || pm_rank_slot(a, l, r) < 0 || (r == PM_HEAD && a->tied)) continue;
            int out, in, rk = a->rank[pm_rank_slot(a, l, r)];
            linear_shape(a, l, r, &out, &in);
            n += rk ? (size_t)rk * ((size_t)out + (size_t)in) : (size_t)out * (size_t)in;
            if (r != PM_HEAD) n += b * (size_t)out;
        }
    return n + (size_t)a->n_layer * 2 * C * (1 + b); /* ln1, ln2 */
}
