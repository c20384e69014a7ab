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

#include "train/sampler.h"

/* Tokens per forward chunk: bounds the scratch memory of a long prompt. */
#define INF_CHUNK 64

/* ------------------------------------------------------------------ model */

static const float *vec(const inf_file *f, const char *name) {
    const inf_tensor *t = inf_file_find(f, name);
    return t ? (const float *)(const void *)t->data : NULL;
}

static int weight(inf_weight *w, const inf_file *f, const char *name, char *err, size_t errlen) {
    const inf_tensor *t = inf_file_find(f, name);
    if (!t) { /* inf_file_parse has checked every name; kept as a guard */
        snprintf(err, errlen, "model: tensor '%s' missing", name);
        return -1;
    }
    return inf_weight_init(w, t, err, errlen);
}

static int model_prepare(inf_model *m, char *err, size_t errlen) {
    const inf_file *f = &m->file;
    const inf_config *c = &f->cfg;
    m->n_layer = (int)c->n_layer, m->n_head = (int)c->n_head, m->C = (int)c->n_embd;
    m->D = m->C / m->n_head, m->M = (int)c->n_hidden, m->ctx = (int)c->ctx, m->V = (int)c->vocab;
    m->eps = c->ln_eps;
    m->wte = inf_file_find(f, "wte");
    m->wpe = inf_file_find(f, "wpe");
    m->lnf_w = vec(f, "lnf.w");
    m->lnf_b = c->bias ? vec(f, "lnf.b") : NULL;
    if (weight(&m->head, f, c->tied ? "wte" : "lm_head.w", err, errlen)) return -1;
    m->decode_bytes = (size_t)inf_file_find(f, c->tied ? "wte" : "lm_head.w")->bytes;
    m->layer = calloc((size_t)m->n_layer, sizeof *m->layer);
    if (!m->layer) {
        snprintf(err, errlen, "model: out of memory");
        return -1;
    }
    for (int l = 0; l < m->n_layer; l++) {
        inf_layer *L = &m->layer[l];
        char nm[INF_NAME_MAX + 1];
#define NAME(s) (snprintf(nm, sizeof nm, "h.%d.%s", l, s), nm)
        L->ln1_w = vec(f, NAME("ln1.w"));
        L->ln2_w = vec(f, NAME("ln2.w"));
        if (c->bias) {
            L->ln1_b = vec(f, NAME("ln1.b"));
            L->ln2_b = vec(f, NAME("ln2.b"));
            L->qkv_b = vec(f, NAME("attn.qkv.b"));
            L->proj_b = vec(f, NAME("attn.proj.b"));
            L->fc_b = vec(f, NAME("mlp.fc.b"));
            L->mproj_b = vec(f, NAME("mlp.proj.b"));
        }
        if (weight(&L->qkv, f, NAME("attn.qkv.w"), err, errlen) || weight(&L->proj, f, NAME("attn.proj.w"), err, errlen) ||
            weight(&L->fc, f, NAME("mlp.fc.w"), err, errlen) || weight(&L->mproj, f, NAME("mlp.proj.w"), err, errlen))
            return -1;
        const char *ws[4] = {"attn.qkv.w", "attn.proj.w", "mlp.fc.w", "mlp.proj.w"};
        for (int i = 0; i < 4; i++) m->decode_bytes += (size_t)inf_file_find(f, NAME(ws[i]))->bytes;
#undef NAME
    }
    return 0;
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
    inf_weight_free(&m->head);
    if (m->layer)
        for (int l = 0; l < m->n_layer; l++) {
            inf_weight_free(&m->layer[l].qkv);
            inf_weight_free(&m->layer[l].proj);
            inf_weight_free(&m->layer[l].fc);
            inf_weight_free(&m->layer[l].mproj);
        }
    free(m->layer);
    inf_file_close(&m->file);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------ session */

/* One stage of the decode step (a product, or attention): units (row blocks,
 * or heads) are claimed from `next` and counted in `done` when finished. On
 * its own cache line: the threads contend for it. */
struct inf_stage {
    alignas(64) atomic_int next;
    atomic_int done;
};

/* Stages per layer: qkv, attention, proj, fc, mproj; then the head. */
#define INF_STAGES_PER_LAYER 5

void inf_session_free(inf_session *s) {
    if (!s) return;
    for (int i = 0; i < s->nthr; i++) inf_kctx_free(&s->tk[i]);
    free(s->tk), free(s->tln), free(s->stage);
    inf_kctx_free(&s->k);
    free(s->kc), free(s->vc), free(s->x), free(s->a), free(s->qkv), free(s->y), free(s->h), free(s->att);
    free(s->row), free(s->probs);
    memset(s, 0, sizeof *s);
}

int inf_session_init(inf_session *s, const inf_model *m, inf_isa isa, int limbs, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->decode_par_min = INF_DECODE_PAR_MIN;
    inf_kctx_init(&s->k, isa, limbs);
    size_t cache = (size_t)m->n_layer * m->ctx * m->C, cap = INF_CHUNK < m->ctx ? INF_CHUNK : (size_t)m->ctx;
    s->cap = (int)cap;
    s->kc = malloc(cache * sizeof(float));
    s->vc = malloc(cache * sizeof(float));
    s->x = malloc(cap * m->C * sizeof(float));
    s->a = malloc(cap * m->C * sizeof(float));
    s->qkv = malloc(cap * 3 * m->C * sizeof(float));
    s->y = malloc(cap * m->C * sizeof(float));
    s->h = malloc(cap * m->M * sizeof(float));
    s->att = malloc(cap * m->n_head * (size_t)m->ctx * sizeof(float));
    s->row = malloc((size_t)(m->C > m->V ? m->C : m->V) * sizeof(float));
    s->probs = malloc((size_t)m->V * sizeof(double));
    s->stage = aligned_alloc(alignof(struct inf_stage),
                             ((size_t)m->n_layer * INF_STAGES_PER_LAYER + 2) * sizeof(struct inf_stage));
    if (!s->kc || !s->vc || !s->x || !s->a || !s->qkv || !s->y || !s->h || !s->att || !s->row || !s->probs ||
        !s->stage) {
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


static int decode_token(inf_session *s, int id, float *logits);

/* One chunk of T <= cap tokens at positions s->pos .. */
static int forward_chunk(inf_session *s, const int *ids, int T, float *logits, bool all_rows) {
    if (T == 1) return decode_token(s, ids[0], logits);
    const inf_model *m = s->m;
    int C = m->C, H = m->n_head, D = m->D, M = m->M, ctx = m->ctx, pos = s->pos;
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
        layernorm(s->a, s->x, L->ln1_w, L->ln1_b, T, C, m->eps);
        if (inf_matmul(&s->k, &L->qkv, s->a, T, s->qkv)) return -1;
        add_bias(s->qkv, L->qkv_b, T, 3 * C);
        /* cache [H, ctx, D] per layer: a head's keys are contiguous rows */
        float *kc = s->kc + (size_t)l * ctx * C, *vc = s->vc + (size_t)l * ctx * C;
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                const float *src = s->qkv + (size_t)t * 3 * C + (size_t)h * D; /* q of head h */
                size_t dst = ((size_t)h * ctx + (size_t)(pos + t)) * D;
                memcpy(kc + dst, src + C, (size_t)D * sizeof(float));
                memcpy(vc + dst, src + 2 * C, (size_t)D * sizeof(float));
            }
        long nth = (long)T * H;
        inf_fkernel dot = inf_fkernel_for(s->k.isa);
        inf_wsum_fn wsum = inf_wsum_for(s->k.isa);
        inf_softmax_fn softmax = inf_softmax_for(s->k.isa);
#pragma omp parallel for schedule(static) if (nth * (pos + T) * D >= (1 << 18))
        for (long th = 0; th < nth; th++) {
            int t = (int)(th / H), h = (int)(th % H), p = pos + t;
            const float *q = s->qkv + (size_t)t * 3 * C + (size_t)h * D; /* [D] */
            const float *kh = kc + (size_t)h * ctx * D, *vh = vc + (size_t)h * ctx * D; /* [ctx, D] */
            float *sc = s->att + (size_t)th * ctx;                        /* [p + 1] */
            dot(kh, q, D, sc, 0, p + 1); /* q . k_j, fixed order (kernels.h) */
            float inv = (float)(1.0 / softmax(sc, p + 1, scale));
            wsum(s->y + (size_t)t * C + (size_t)h * D, sc, inv, vh, p + 1, D, D);
        }
        if (inf_matmul(&s->k, &L->proj, s->y, T, s->a)) return -1;
        add_bias(s->a, L->proj_b, T, C);
        for (size_t i = 0; i < (size_t)T * C; i++) s->x[i] += s->a[i];
        layernorm(s->a, s->x, L->ln2_w, L->ln2_b, T, C, m->eps);
        if (inf_matmul(&s->k, &L->fc, s->a, T, s->h)) return -1;
        for (int t = 0; t < T; t++) gelu(s->h + (size_t)t * M, L->fc_b, M);
        if (inf_matmul(&s->k, &L->mproj, s->h, T, s->a)) return -1;
        add_bias(s->a, L->mproj_b, T, C);
        for (size_t i = 0; i < (size_t)T * C; i++) s->x[i] += s->a[i];
    }
    s->pos += T;
    if (!logits) return 0;
    int first = all_rows ? 0 : T - 1, n = T - first;
    layernorm(s->a, s->x + (size_t)first * C, m->lnf_w, m->lnf_b, n, C, m->eps);
    return inf_matmul(&s->k, &m->head, s->a, n, logits);
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

/* Units claimed at once: two row blocks for the integer kernels (a decode
 * kernel shares activation loads between a pair), 64 rows of f32. */
static int unit_chunk(const inf_weight *w) { return w->dtype == INF_F32 ? 4 : 2; }
static int row_blocks(const inf_weight *w) { return (w->N + INF_ROWS - 1) / INF_ROWS; }

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

/* What a product stage does with its rows [r0, r1) after the product. */
enum { POST_BIAS, POST_RESIDUAL, POST_GELU, POST_NONE };

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

/* The causal attention of one new token at position pos for the heads this
 * thread claims: its keys and values go into the layer's cache, y[h D ..] =
 * softmax(q k^T / sqrt(D)) v. The same operations as forward_chunk's. */
static void attention_stage(inf_session *s, struct inf_stage *st, const struct inf_stage *prev, int prev_n,
                            int l) {
    const inf_model *m = s->m;
    int C = m->C, H = m->n_head, D = m->D, ctx = m->ctx, p = s->pos, h, h1;
    if (!stage_open(st, H, prev, prev_n)) return;
    float *kc = s->kc + (size_t)l * ctx * C, *vc = s->vc + (size_t)l * ctx * C;
    inf_fkernel dot = inf_fkernel_for(s->k.isa);
    inf_wsum_fn wsum = inf_wsum_for(s->k.isa);
    inf_softmax_fn softmax = inf_softmax_for(s->k.isa);
    float scale = 1.0f / sqrtf((float)D);
    while (claim(st, H, 1, &h, &h1)) {
        const float *q = s->qkv + (size_t)h * D; /* [D] */
        float *kh = kc + (size_t)h * ctx * D, *vh = vc + (size_t)h * ctx * D; /* [ctx, D] */
        memcpy(kh + (size_t)p * D, q + C, (size_t)D * sizeof(float));
        memcpy(vh + (size_t)p * D, q + 2 * C, (size_t)D * sizeof(float));
        float *sc = s->att + (size_t)h * ctx; /* [p + 1] */
        dot(kh, q, D, sc, 0, p + 1);
        float inv = (float)(1.0 / softmax(sc, p + 1, scale));
        wsum(s->y + (size_t)h * D, sc, inv, vh, p + 1, D, D); /* y[h D ..] = sum_j p_j v_j */
        finish(st, 1);
    }
}

/* Thread tid's part of the decode step (x already holds the token's
 * embedding). Returns -1 if its scratch failed. */
static int decode_work(inf_session *s, int tid, float *logits) {
    const inf_model *m = s->m;
    int C = m->C, H = m->n_head;
    inf_kctx *k = &s->tk[tid];
    float *a = s->tln + (size_t)tid * C; /* [C] this thread's layer norm */
    struct inf_stage *st = s->stage, *prev = NULL;
    int prev_n = 0, rc = 0;
    for (int l = 0; l < m->n_layer; l++, st += INF_STAGES_PER_LAYER) {
        const inf_layer *L = &m->layer[l];
        if (stage_open(&st[0], row_blocks(&L->qkv), prev, prev_n)) {
            layernorm(a, s->x, L->ln1_w, L->ln1_b, 1, C, m->eps);
            rc |= product_stage(&st[0], NULL, 0, k, &L->qkv, a, s->qkv, L->qkv_b, POST_BIAS, NULL);
        }
        attention_stage(s, &st[1], &st[0], row_blocks(&L->qkv), l);
        rc |= product_stage(&st[2], &st[1], H, k, &L->proj, s->y, s->a, L->proj_b, POST_RESIDUAL, s->x);
        if (stage_open(&st[3], row_blocks(&L->fc), &st[2], row_blocks(&L->proj))) {
            layernorm(a, s->x, L->ln2_w, L->ln2_b, 1, C, m->eps);
            rc |= product_stage(&st[3], NULL, 0, k, &L->fc, a, s->h, L->fc_b, POST_GELU, NULL);
        }
        rc |= product_stage(&st[4], &st[3], row_blocks(&L->fc), k, &L->mproj, s->h, s->a, L->mproj_b,
                            POST_RESIDUAL, s->x);
        prev = &st[4], prev_n = row_blocks(&L->mproj);
    }
    if (logits && stage_open(st, row_blocks(&m->head), prev, prev_n)) {
        layernorm(a, s->x, m->lnf_w, m->lnf_b, 1, C, m->eps);
        rc |= product_stage(st, NULL, 0, k, &m->head, a, logits, NULL, POST_NONE, NULL);
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
    for (; s->nthr < n; s->nthr++) {
        inf_kctx_init(&s->tk[s->nthr], s->k.isa, s->k.limbs);
        if (inf_kctx_reserve(&s->tk[s->nthr], 1, m->C > m->M ? m->C : m->M)) {
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
    size_t nst = (size_t)m->n_layer * INF_STAGES_PER_LAYER + 2;
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
