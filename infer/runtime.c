/* runtime.c - the forward of a model file over one sequence with a KV cache,
 * generation and sampling (see runtime.h). */
#include "runtime.h"

#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "types.h"

#include "train/sampler.h"

/* Tokens per forward chunk: bounds the scratch memory of a long prompt. */
#define INF_CHUNK 64

/* ------------------------------------------------------------------ model */

/* What a decode-step stage reads and writes (session buffers). */
enum { BUF_LN, BUF_QKV, BUF_Y, BUF_A, BUF_H, BUF_R, BUF_LOGITS };

/* What a product stage does with its rows [r0, r1) after the product. */
enum { POST_BIAS, POST_RESIDUAL, POST_GELU, POST_NONE };

enum { STEP_PRODUCT, STEP_ATTENTION };

struct inf_step {
    int kind;                  /* STEP_PRODUCT or STEP_ATTENTION */
    int layer;
    const inf_weight *w;       /* the product's weight */
    int in, out;               /* BUF_*: in = BUF_LN is the thread's layer norm of x with ln_w, ln_b */
    const float *ln_w, *ln_b;
    const float *b;            /* bias of the output rows, or NULL */
    int post;                  /* POST_* */
    int units;                 /* row blocks (products) or heads (attention) */
    bool head;                 /* part of the LM head: skipped when no logits are wanted */
};

/* The tensor of table tensor i (validated by the reader), or NULL for i < 0. */
static const inf_tensor *tensor(const inf_file *f, int i) { return i >= 0 ? f->by_table[i] : NULL; }
static const float *vec(const inf_file *f, int i) {
    const inf_tensor *t = tensor(f, i);
    return t ? (const float *)(const void *)t->data : NULL;
}

/* One product's weight, with its static activations when the file has an
 * activation record for it (an A8 site). */
static int weight_init(inf_weight *w, const inf_tensor *t, char *err, size_t errlen) {
    if (inf_weight_init(w, t, err, errlen)) return -1;
    return t->act_bits ? inf_weight_set_act(w, t->act_bits, t->act_scale, err, errlen) : 0;
}

/* A linear site's weights (dense, or its two factors) and bias. */
static int linear_init(inf_linear *L, const inf_file *f, const pm_site *st, size_t *bytes, char *err, size_t errlen) {
    L->out = st->out, L->in = st->in, L->rank = st->rank;
    L->b = vec(f, st->b);
    if (st->rank > 0) {
        *bytes += (size_t)tensor(f, st->u)->bytes + (size_t)tensor(f, st->v)->bytes;
        return weight_init(&L->u, tensor(f, st->u), err, errlen) || weight_init(&L->v, tensor(f, st->v), err, errlen)
                   ? -1
                   : 0;
    }
    *bytes += (size_t)tensor(f, st->w)->bytes;
    return weight_init(&L->w, tensor(f, st->w), err, errlen);
}

static void linear_free(inf_linear *L) {
    inf_weight_free(&L->w);
    inf_weight_free(&L->u);
    inf_weight_free(&L->v);
}

static int row_blocks(const inf_weight *w) { return (w->N + INF_ROWS - 1) / INF_ROWS; }

/* Appends the stages of linear site L (its V product first when factorized)
 * to m->step: input `in` (with ln_w, ln_b when in = BUF_LN), output `out`
 * and post-op `post` with L's bias. */
static void add_product(inf_model *m, const inf_linear *L, int layer, int in, const float *ln_w, const float *ln_b,
                        int out, int post, bool head) {
    if (L->rank > 0) {
        m->step[m->n_steps++] = (inf_step){STEP_PRODUCT, layer, &L->v, in, BUF_R, ln_w, ln_b, NULL, POST_NONE,
                                           row_blocks(&L->v), head};
        in = BUF_R, ln_w = ln_b = NULL;
    }
    const inf_weight *w = L->rank > 0 ? &L->u : &L->w;
    m->step[m->n_steps++] = (inf_step){STEP_PRODUCT, layer, w, in, out, ln_w, ln_b, L->b, post, row_blocks(w), head};
}

/* The decode step's stages in order: per layer qkv (its layer norm first),
 * attention, proj (+ residual), fc (layer norm first, GELU), mproj (+
 * residual); then the head; a factorized site's V product before its U
 * product. */
static int build_steps(inf_model *m, char *err, size_t errlen) {
    size_t most = (size_t)m->n_layer * 9 + 2;
    m->step = calloc(most, sizeof *m->step);
    if (!m->step) {
        snprintf(err, errlen, "model: out of memory");
        return -1;
    }
    for (int l = 0; l < m->n_layer; l++) {
        const inf_layer *L = &m->layer[l];
        add_product(m, &L->qkv, l, BUF_LN, L->ln1_w, L->ln1_b, BUF_QKV, POST_BIAS, false);
        m->step[m->n_steps++] = (inf_step){STEP_ATTENTION, l, NULL, BUF_QKV, BUF_Y, NULL, NULL, NULL, POST_NONE, L->H, false};
        add_product(m, &L->proj, l, BUF_Y, NULL, NULL, BUF_A, POST_RESIDUAL, false);
        add_product(m, &L->fc, l, BUF_LN, L->ln2_w, L->ln2_b, BUF_H, POST_GELU, false);
        add_product(m, &L->mproj, l, BUF_H, NULL, NULL, BUF_A, POST_RESIDUAL, false);
    }
    add_product(m, &m->head, -1, BUF_LN, m->lnf_w, m->lnf_b, BUF_LOGITS, POST_NONE, true);
    return 0;
}

/* Sets the model up from the file's table of sites (model/arch.h). */
static int model_prepare(inf_model *m, char *err, size_t errlen) {
    const inf_file *f = &m->file;
    const pm_arch *a = &f->arch;
    const pm_table *tb = &f->table;
    m->n_layer = a->n_layer, m->C = a->n_embd, m->D = a->head_dim, m->ctx = a->ctx, m->V = a->vocab;
    m->eps = f->ln_eps;
    m->max_R = 1;
    m->layer = calloc((size_t)m->n_layer, sizeof *m->layer);
    if (!m->layer) {
        snprintf(err, errlen, "model: out of memory");
        return -1;
    }
    for (int l = 0; l < m->n_layer; l++) {
        inf_layer *L = &m->layer[l];
        L->H = a->n_head[l], L->A = a->n_head[l] * a->head_dim, L->M = a->n_hidden[l];
        L->kv_off = m->kv_floats;
        m->kv_floats += (size_t)L->A * (size_t)m->ctx;
        if (L->H > m->max_H) m->max_H = L->H;
        if (L->A > m->max_A) m->max_A = L->A;
        if (L->M > m->max_M) m->max_M = L->M;
    }
    for (int i = 0; i < tb->n_site; i++) {
        const pm_site *st = &tb->site[i];
        inf_layer *L = st->layer >= 0 ? &m->layer[st->layer] : NULL;
        if (st->linear && st->rank > m->max_R) m->max_R = st->rank;
        inf_linear *lin = NULL;
        switch (st->role) {
        case PM_WTE: m->wte = tensor(f, st->w); break;
        case PM_WPE: m->wpe = tensor(f, st->w); break;
        case PM_LN1: L->ln1_w = vec(f, st->w), L->ln1_b = vec(f, st->b); break;
        case PM_LN2: L->ln2_w = vec(f, st->w), L->ln2_b = vec(f, st->b); break;
        case PM_LNF: m->lnf_w = vec(f, st->w), m->lnf_b = vec(f, st->b); break;
        case PM_QKV: lin = &L->qkv; break;
        case PM_PROJ: lin = &L->proj; break;
        case PM_FC: lin = &L->fc; break;
        case PM_MPROJ: lin = &L->mproj; break;
        case PM_HEAD: lin = &m->head; break;
        default: break;
        }
        if (lin && linear_init(lin, f, st, &m->decode_bytes, err, errlen)) return -1;
    }
    return build_steps(m, err, errlen);
}

int inf_model_parse(inf_model *m, const uint8_t *buf, size_t len, const char *name, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (inf_file_parse(&m->file, buf, len, name, err, errlen)) return -1;
    return model_prepare(m, err, errlen);
}

int inf_model_open(inf_model *m, const char *path, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (inf_file_open(&m->file, path, err, errlen)) return -1;
    return model_prepare(m, err, errlen);
}

void inf_model_close(inf_model *m) {
    if (!m) return;
    linear_free(&m->head);
    if (m->layer)
        for (int l = 0; l < m->n_layer; l++) {
            linear_free(&m->layer[l].qkv);
            linear_free(&m->layer[l].proj);
            linear_free(&m->layer[l].fc);
            linear_free(&m->layer[l].mproj);
        }
    free(m->layer);
    free(m->step);
    inf_file_close(&m->file);
    memset(m, 0, sizeof *m);
}

const char *inf_model_storage(const inf_model *m) {
    const char *name = NULL;
    for (int i = 0; i < m->n_steps; i++) {
        const inf_step *sp = &m->step[i];
        if (sp->kind != STEP_PRODUCT || (sp->head && m->file.arch.tied)) continue; /* a tied head is wte */
        const char *t = inf_type_name(sp->w->dtype);
        if (name && strcmp(name, t) != 0) return "mixed";
        name = t;
    }
    return name ? name : "?";
}

/* ------------------------------------------------------------------ session */

/* One stage of the decode step (a product, or attention): units (row blocks,
 * or heads) are claimed from `next` and counted in `done` when finished. On
 * its own cache line: the threads contend for it. */
struct inf_stage {
    alignas(64) atomic_int next;
    atomic_int done;
};

void inf_session_free(inf_session *s) {
    if (!s) return;
    for (int i = 0; i < s->nthr; i++) inf_kctx_free(&s->tk[i]);
    free(s->tk), free(s->tln), free(s->stage);
    inf_kctx_free(&s->k);
    free(s->kc), free(s->vc), free(s->x), free(s->a), free(s->qkv), free(s->y), free(s->h), free(s->r);
    free(s->att), free(s->row), free(s->probs);
    memset(s, 0, sizeof *s);
}

/* Largest buffer a session allocates, in bytes: a file may describe a model
 * whose cache cannot exist (a factorized layer of 2^20 heads is a small
 * file); it is refused with a message instead of being handed to malloc. */
#define INF_SESSION_MAX_BYTES ((double)(1ull << 38))

int inf_session_init(inf_session *s, const inf_model *m, inf_isa isa, int limbs, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->decode_par_min = INF_DECODE_PAR_MIN;
    inf_kctx_init(&s->k, isa, limbs);
    size_t cache = m->kv_floats, cap = INF_CHUNK < m->ctx ? INF_CHUNK : (size_t)m->ctx;
    double biggest = (double)cache;
    if ((double)cap * m->max_H * m->ctx > biggest) biggest = (double)cap * m->max_H * m->ctx;
    if ((double)cap * 3 * m->max_A > biggest) biggest = (double)cap * 3 * m->max_A;
    if (biggest * sizeof(float) > INF_SESSION_MAX_BYTES) {
        snprintf(err, errlen, "session: a buffer of %.3g floats (KV cache or attention rows) is too large", biggest);
        return -1;
    }
    s->cap = (int)cap;
    s->kc = malloc(cache * sizeof(float));
    s->vc = malloc(cache * sizeof(float));
    s->x = malloc(cap * m->C * sizeof(float));
    s->a = malloc(cap * m->C * sizeof(float));
    s->qkv = malloc(cap * 3 * (size_t)m->max_A * sizeof(float));
    s->y = malloc(cap * (size_t)m->max_A * sizeof(float));
    s->h = malloc(cap * (size_t)m->max_M * sizeof(float));
    s->r = malloc(cap * (size_t)m->max_R * sizeof(float));
    s->att = malloc(cap * (size_t)m->max_H * (size_t)m->ctx * sizeof(float));
    s->row = malloc((size_t)(m->C > m->V ? m->C : m->V) * sizeof(float));
    s->probs = malloc((size_t)m->V * sizeof(double));
    s->stage = aligned_alloc(alignof(struct inf_stage), ((size_t)m->n_steps + 1) * sizeof(struct inf_stage));
    if (!s->kc || !s->vc || !s->x || !s->a || !s->qkv || !s->y || !s->h || !s->r || !s->att || !s->row ||
        !s->probs || !s->stage) {
        snprintf(err, errlen, "session: out of memory (KV cache of %zu floats)", 2 * cache);
        inf_session_free(s);
        return -1;
    }
    return 0;
}

void inf_session_reset(inf_session *s) { s->pos = 0; }

/* out[T, C] = layer norm of x[T, C] (mean and variance in double, as the
 * training op does). b may be NULL. */
static void layernorm(float *out, const float *x, const float *w, const float *b, int T, int C, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C;
        float *yr = out + (size_t)t * C;
        double sum = 0;
        for (int j = 0; j < C; j++) sum += xr[j];
        double mu = sum / C, var = 0;
        for (int j = 0; j < C; j++) var += (xr[j] - mu) * (xr[j] - mu);
        float m = (float)mu, rs = (float)(1.0 / sqrt(var / C + (double)eps));
        for (int j = 0; j < C; j++) yr[j] = (xr[j] - m) * rs * w[j] + (b ? b[j] : 0.0f);
    }
}

static void add_bias(float *x, const float *b, int T, int N) {
    if (!b) return;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < N; j++) x[(size_t)t * N + j] += b[j];
}

/* out[T, out] = x[T, in] W^T of linear site L (no bias), or (x V^T) U^T
 * through the session's rank scratch when factorized. */
static int linear(inf_session *s, const inf_linear *L, const float *x, int T, float *out) {
    if (L->rank > 0) return inf_matmul(&s->k, &L->v, x, T, s->r) || inf_matmul(&s->k, &L->u, s->r, T, out) ? -1 : 0;
    return inf_matmul(&s->k, &L->w, x, T, out);
}

static int decode_token(inf_session *s, int id, float *logits);

/* One chunk of T <= cap tokens at positions s->pos .. */
static int forward_chunk(inf_session *s, const int *ids, int T, float *logits, bool all_rows) {
    const inf_model *m = s->m;
    if (T == 1) return decode_token(s, ids[0], logits);
    int C = m->C, D = m->D, ctx = m->ctx, pos = s->pos;
    const inf_type_traits *te = inf_type(m->wte->dtype), *tp = inf_type(m->wpe->dtype);
    for (int t = 0; t < T; t++) { /* x = wte[id] + wpe[pos] */
        float *xr = s->x + (size_t)t * C;
        te->row(m->wte, (size_t)ids[t], xr);
        tp->row(m->wpe, (size_t)(pos + t), s->row);
        for (int j = 0; j < C; j++) xr[j] += s->row[j];
    }
    float scale = 1.0f / sqrtf((float)D);
    inf_gelu_fn gelu = inf_gelu_for(s->k.isa);
    for (int l = 0; l < m->n_layer; l++) {
        const inf_layer *L = &m->layer[l];
        int H = L->H, A = L->A, M = L->M;
        layernorm(s->a, s->x, L->ln1_w, L->ln1_b, T, C, m->eps);
        if (linear(s, &L->qkv, s->a, T, s->qkv)) return -1; /* [T, 3A] */
        add_bias(s->qkv, L->qkv.b, T, 3 * A);
        /* cache [H, ctx, D] per layer: a head's keys are contiguous rows */
        float *kc = s->kc + L->kv_off, *vc = s->vc + L->kv_off;
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                const float *src = s->qkv + (size_t)t * 3 * A + (size_t)h * D; /* q of head h */
                size_t dst = ((size_t)h * ctx + (size_t)(pos + t)) * D;
                memcpy(kc + dst, src + A, (size_t)D * sizeof(float));
                memcpy(vc + dst, src + 2 * A, (size_t)D * sizeof(float));
            }
        long nth = (long)T * H;
        inf_fkernel dot = inf_fkernel_for(s->k.isa);
        inf_wsum_fn wsum = inf_wsum_for(s->k.isa);
        inf_softmax_fn softmax = inf_softmax_for(s->k.isa);
#pragma omp parallel for schedule(static) if (nth * (pos + T) * D >= (1 << 18))
        for (long th = 0; th < nth; th++) {
            int t = (int)(th / H), h = (int)(th % H), p = pos + t;
            const float *q = s->qkv + (size_t)t * 3 * A + (size_t)h * D; /* [D] */
            const float *kh = kc + (size_t)h * ctx * D, *vh = vc + (size_t)h * ctx * D; /* [ctx, D] */
            float *sc = s->att + (size_t)th * ctx;                        /* [p + 1] */
            dot(kh, q, D, sc, 0, p + 1); /* q . k_j, fixed order (kernels.h) */
            float inv = (float)(1.0 / softmax(sc, p + 1, scale));
            wsum(s->y + (size_t)t * A + (size_t)h * D, sc, inv, vh, p + 1, D, D);
        }
        if (linear(s, &L->proj, s->y, T, s->a)) return -1; /* [T, C] */
        add_bias(s->a, L->proj.b, T, C);
        for (size_t i = 0; i < (size_t)T * C; i++) s->x[i] += s->a[i];
        layernorm(s->a, s->x, L->ln2_w, L->ln2_b, T, C, m->eps);
        if (linear(s, &L->fc, s->a, T, s->h)) return -1; /* [T, M] */
        for (int t = 0; t < T; t++) gelu(s->h + (size_t)t * M, L->fc.b, M);
        if (linear(s, &L->mproj, s->h, T, s->a)) return -1; /* [T, C] */
        add_bias(s->a, L->mproj.b, T, C);
        for (size_t i = 0; i < (size_t)T * C; i++) s->x[i] += s->a[i];
    }
    s->pos += T;
    if (!logits) return 0;
    int first = all_rows ? 0 : T - 1, n = T - first;
    layernorm(s->a, s->x + (size_t)first * C, m->lnf_w, m->lnf_b, n, C, m->eps);
    return linear(s, &m->head, s->a, n, logits);
}

/* ------------------------------------------------------------------ decode step */

/* The forward of one token (decode with the KV cache) runs in one parallel
 * region instead of one per product: waking a sleeping OpenMP thread
 * (OMP_WAIT_POLICY=PASSIVE) costs tens of microseconds, and a token has about
 * 30 products and attention stages of a few microseconds each.
 *
 * Each stage (a product, or the attention of the layer's heads) is cut into
 * units (16-row blocks, or heads); threads claim units from the stage's
 * counter and count them done; a stage's inputs are ready when the stage
 * before it has all its units done. A unit is computed by one thread with the
 * same code whichever thread that is (the layer norms and activation limbs a
 * product reads are made by every thread that takes part, from the same
 * inputs, into its own scratch), so the logits are the same bits for any
 * thread count and any timing. A thread that wakes late simply finds the
 * early stages claimed and joins where work is left: nobody waits for it to
 * arrive, only for claimed units to finish. */

/* Spins this many times (pause) on a counter before yielding the CPU to the
 * scheduler on each further try: a stage lasts microseconds, but the other
 * thread may have been descheduled. */
#define INF_SPIN 4000

static void spin_wait(const atomic_int *c, int target) {
    for (unsigned i = 0; atomic_load_explicit(c, memory_order_acquire) < target; i++) {
        if (i < INF_SPIN) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
}

/* Units claimed at once: the storage type's decode_blocks (types.h): two
 * row blocks for the integer kernels (a decode kernel shares activation
 * loads between a pair), 64 rows of f32. */
static int unit_chunk(const inf_weight *w) { return inf_type(w->dtype)->decode_blocks; }

/* Claims the next chunk of st's n units: *u0.. *u1; false when none is left. */
static bool claim(struct inf_stage *st, int n, int chunk, int *u0, int *u1) {
    if (atomic_load_explicit(&st->next, memory_order_relaxed) >= n) return false;
    int u = atomic_fetch_add_explicit(&st->next, chunk, memory_order_relaxed);
    if (u >= n) return false;
    *u0 = u, *u1 = u + chunk < n ? u + chunk : n;
    return true;
}

static void finish(struct inf_stage *st, int units) {
    atomic_fetch_add_explicit(&st->done, units, memory_order_release);
}

/* True when st still has units to claim; then waits until the stage before
 * it (prev, with prev_n units; NULL for the first) is done. */
static bool stage_open(struct inf_stage *st, int n, const struct inf_stage *prev, int prev_n) {
    if (atomic_load_explicit(&st->next, memory_order_relaxed) >= n) return false;
    if (prev) spin_wait(&prev->done, prev_n);
    return true;
}

/* out = W x for the rows this thread claims, then the rows' post-op:
 * POST_BIAS: out += b; POST_GELU: out = gelu(out + b); POST_RESIDUAL:
 * res += out + b (res = the residual stream x). Returns -1 when the
 * activation scratch could not be made (it is reserved, so never in practice). */
static int product_stage(struct inf_stage *st, const struct inf_stage *prev, int prev_n, inf_kctx *k,
                         const inf_weight *w, const float *x, float *out, const float *b, int post, float *res) {
    int n = row_blocks(w), chunk = unit_chunk(w), u0, u1;
    if (!stage_open(st, n, prev, prev_n)) return 0;
    if (inf_matvec_prepare(k, w, x)) return -1;
    while (claim(st, n, chunk, &u0, &u1)) {
        inf_matvec_rows(k, w, x, out, u0, u1);
        int r0 = u0 * INF_ROWS, r1 = u1 * INF_ROWS < w->N ? u1 * INF_ROWS : w->N;
        if (post == POST_GELU) {
            inf_gelu_for(k->isa)(out + r0, b ? b + r0 : NULL, r1 - r0);
        } else if (post != POST_NONE) {
            if (b)
                for (int r = r0; r < r1; r++) out[r] += b[r];
            if (post == POST_RESIDUAL)
                for (int r = r0; r < r1; r++) res[r] += out[r];
        }
        finish(st, u1 - u0);
    }
    return 0;
}

/* The causal attention of one new token at position pos for the heads of
 * layer l this thread claims: its keys and values go into the layer's cache,
 * y[h D ..] = softmax(q k^T / sqrt(D)) v. The same operations as
 * forward_chunk's. */
static void attention_stage(inf_session *s, struct inf_stage *st, const struct inf_stage *prev, int prev_n,
                            int l) {
    const inf_model *m = s->m;
    const inf_layer *L = &m->layer[l];
    int H = L->H, A = L->A, D = m->D, ctx = m->ctx, p = s->pos, h, h1;
    if (!stage_open(st, H, prev, prev_n)) return;
    float *kc = s->kc + L->kv_off, *vc = s->vc + L->kv_off;
    inf_fkernel dot = inf_fkernel_for(s->k.isa);
    inf_wsum_fn wsum = inf_wsum_for(s->k.isa);
    inf_softmax_fn softmax = inf_softmax_for(s->k.isa);
    float scale = 1.0f / sqrtf((float)D);
    while (claim(st, H, 1, &h, &h1)) {
        const float *q = s->qkv + (size_t)h * D; /* [D]; its k at + A, its v at + 2A */
        float *kh = kc + (size_t)h * ctx * D, *vh = vc + (size_t)h * ctx * D; /* [ctx, D] */
        memcpy(kh + (size_t)p * D, q + A, (size_t)D * sizeof(float));
        memcpy(vh + (size_t)p * D, q + 2 * A, (size_t)D * sizeof(float));
        float *sc = s->att + (size_t)h * ctx; /* [p + 1] */
        dot(kh, q, D, sc, 0, p + 1);
        float inv = (float)(1.0 / softmax(sc, p + 1, scale));
        wsum(s->y + (size_t)h * D, sc, inv, vh, p + 1, D, D); /* y[h D ..] = sum_j p_j v_j */
        finish(st, 1);
    }
}

/* The session buffer a stage reads or writes. */
static float *buffer(inf_session *s, int which, float *logits) {
    switch (which) {
    case BUF_QKV: return s->qkv;
    case BUF_Y: return s->y;
    case BUF_A: return s->a;
    case BUF_H: return s->h;
    case BUF_R: return s->r;
    default: return logits; /* BUF_LOGITS */
    }
}

/* Thread tid's part of the decode step (x already holds the token's
 * embedding): the model's stages in order (model_prepare's build_steps),
 * each waiting for the one before it. Returns -1 if its scratch failed. */
static int decode_work(inf_session *s, int tid, float *logits) {
    const inf_model *m = s->m;
    int C = m->C;
    inf_kctx *k = &s->tk[tid];
    float *ln = s->tln + (size_t)tid * C; /* [C] this thread's layer norm */
    const struct inf_stage *prev = NULL;
    int prev_n = 0, rc = 0;
    for (int i = 0; i < m->n_steps; i++) {
        const inf_step *sp = &m->step[i];
        struct inf_stage *st = &s->stage[i];
        if (sp->head && !logits) break;
        if (sp->kind == STEP_ATTENTION) {
            attention_stage(s, st, prev, prev_n, sp->layer);
        } else if (stage_open(st, sp->units, prev, prev_n)) {
            const float *x = ln;
            if (sp->in == BUF_LN) layernorm(ln, s->x, sp->ln_w, sp->ln_b, 1, C, m->eps);
            else x = buffer(s, sp->in, logits);
            rc |= product_stage(st, NULL, 0, k, sp->w, x, buffer(s, sp->out, logits), sp->b, sp->post, s->x);
        }
        prev = st, prev_n = sp->units;
    }
    return rc;
}

/* Per-thread scratch of the decode step for n threads (made once). */
static int decode_scratch(inf_session *s, int n) {
    if (n <= s->nthr) return 0;
    const inf_model *m = s->m;
    inf_kctx *tk = realloc(s->tk, (size_t)n * sizeof *tk);
    if (!tk) return -1;
    s->tk = tk;
    float *tln = realloc(s->tln, (size_t)n * m->C * sizeof(float));
    if (!tln) return -1;
    s->tln = tln;
    int K = m->C; /* the widest input of any product */
    if (m->max_A > K) K = m->max_A;
    if (m->max_M > K) K = m->max_M;
    if (m->max_R > K) K = m->max_R;
    for (; s->nthr < n; s->nthr++) {
        inf_kctx_init(&s->tk[s->nthr], s->k.isa, s->k.limbs);
        if (inf_kctx_reserve(&s->tk[s->nthr], 1, K)) {
            inf_kctx_free(&s->tk[s->nthr]);
            return -1;
        }
    }
    return 0;
}

/* One token at position s->pos (the cache has room): logits[V] if not NULL. */
static int decode_token(inf_session *s, int id, float *logits) {
    const inf_model *m = s->m;
    int C = m->C, nth = omp_in_parallel() || m->decode_bytes < s->decode_par_min ? 1 : ag_get_threads();
    if (nth < 1) nth = 1;
    if (decode_scratch(s, nth)) return -1;
    const inf_type_traits *te = inf_type(m->wte->dtype), *tp = inf_type(m->wpe->dtype);
    te->row(m->wte, (size_t)id, s->x);
    tp->row(m->wpe, (size_t)s->pos, s->row);
    for (int j = 0; j < C; j++) s->x[j] += s->row[j];
    size_t nst = (size_t)m->n_steps + 1;
    for (size_t i = 0; i < nst; i++) {
        atomic_init(&s->stage[i].next, 0);
        atomic_init(&s->stage[i].done, 0);
    }
    int rc = 0;
    if (nth == 1) {
        rc = decode_work(s, 0, logits);
    } else {
        atomic_int *left = &s->stage[nst - 1].done;
        atomic_int failed = 0;
#pragma omp parallel num_threads(nth)
        {
            int tid = omp_get_thread_num(), n = omp_get_num_threads();
            if (decode_work(s, tid, logits)) atomic_store(&failed, 1);
            /* thread 0 leaves last, so that it does not go to sleep in the
             * region's closing barrier waiting for a late thread */
            if (tid > 0) atomic_fetch_add_explicit(left, 1, memory_order_release);
            else spin_wait(left, n - 1);
        }
        rc = atomic_load(&failed) ? -1 : 0;
    }
    s->pos += 1;
    return rc;
}

int inf_forward(inf_session *s, const int *ids, int T, float *logits, bool all_rows, char *err, size_t errlen) {
    const inf_model *m = s->m;
    if (T < 1 || s->pos + T > m->ctx) {
        snprintf(err, errlen, "forward: %d tokens at position %d: the context holds %d", T, s->pos, m->ctx);
        return -1;
    }
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= m->V) {
            snprintf(err, errlen, "forward: token %d at index %d: expected an id in [0, %d)", ids[t], t, m->V);
            return -1;
        }
    for (int t0 = 0; t0 < T; t0 += s->cap) {
        int n = T - t0 < s->cap ? T - t0 : s->cap;
        bool last = t0 + n == T;
        float *lg = all_rows ? logits + (size_t)t0 * m->V : last ? logits : NULL;
        if (forward_chunk(s, ids + t0, n, lg, all_rows)) {
            snprintf(err, errlen, "forward: out of memory for kernel scratch");
            return -1;
        }
    }
    return 0;
}

int inf_generate(inf_session *s, const int *ids, int n_prompt, int n_new, double temperature, int top_k,
                 int stop_id, ag_rng *rng, int *out, void (*on_token)(void *user, int id), void *user, char *err,
                 size_t errlen) {
    const inf_model *m = s->m;
    if (n_prompt < 1 || n_new < 0) {
        snprintf(err, errlen, "generate: expected a prompt of at least one token and n >= 0");
        return -1;
    }
    float *logits = malloc((size_t)m->V * sizeof(float));
    if (!logits) {
        snprintf(err, errlen, "generate: out of memory");
        return -1;
    }
    memmove(out, ids, (size_t)n_prompt * sizeof *out);
    int len = n_prompt, rc = 0;
    bool have = false; /* logits of the current sequence are in `logits` */
    for (int k = 0; k < n_new; k++) {
        if (!have) {
            int T = len < m->ctx ? len : m->ctx;
            inf_session_reset(s);
            rc = inf_forward(s, out + (len - T), T, logits, false, err, errlen);
        }
        if (rc) break;
        int id = tr_sample_pick(logits, m->V, temperature, top_k, rng, s->probs);
        out[len++] = id;
        if (on_token) on_token(user, id);
        if (id == stop_id || k + 1 == n_new) break;
        if (s->pos < m->ctx) { /* room in the cache: one more row */
            rc = inf_forward(s, &id, 1, logits, false, err, errlen);
            have = true;
        } else { /* the window slides: recompute it */
            have = false;
        }
    }
    free(logits);
    return rc ? -1 : len;
}
