/* runtime.c - the forward of a model file over one sequence with a KV cache,
 * generation and sampling (see runtime.h). */
#include "runtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void inf_session_free(inf_session *s) {
    if (!s) return;
    inf_kctx_free(&s->k);
    free(s->kc), free(s->vc), free(s->x), free(s->a), free(s->qkv), free(s->y), free(s->h), free(s->att);
    free(s->row), free(s->probs);
    memset(s, 0, sizeof *s);
}

int inf_session_init(inf_session *s, const inf_model *m, inf_isa isa, int limbs, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    s->m = m;
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
    if (!s->kc || !s->vc || !s->x || !s->a || !s->qkv || !s->y || !s->h || !s->att || !s->row || !s->probs) {
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

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

/* One chunk of T <= cap tokens at positions s->pos .. */
static int forward_chunk(inf_session *s, const int *ids, int T, float *logits, bool all_rows) {
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
        inf_axpy_fn axpy = inf_axpy_for(s->k.isa);
#pragma omp parallel for schedule(static) if (nth * (pos + T) * D >= (1 << 18))
        for (long th = 0; th < nth; th++) {
            int t = (int)(th / H), h = (int)(th % H), p = pos + t;
            const float *q = s->qkv + (size_t)t * 3 * C + (size_t)h * D; /* [D] */
            const float *kh = kc + (size_t)h * ctx * D, *vh = vc + (size_t)h * ctx * D; /* [ctx, D] */
            float *sc = s->att + (size_t)th * ctx;                        /* [p + 1] */
            dot(kh, q, D, sc, 0, p + 1); /* q . k_j, fixed order (kernels.h) */
            float mx = -INFINITY;
            for (int j = 0; j <= p; j++) {
                sc[j] *= scale;
                if (sc[j] > mx) mx = sc[j];
            }
            double sum = 0.0;
            for (int j = 0; j <= p; j++) {
                sc[j] = expf(sc[j] - mx);
                sum += sc[j];
            }
            float inv = (float)(1.0 / sum);
            float *yo = s->y + (size_t)t * C + (size_t)h * D; /* [D] */
            memset(yo, 0, (size_t)D * sizeof(float));
            for (int j = 0; j <= p; j++) axpy(yo, sc[j] * inv, vh + (size_t)j * D, D);
        }
        if (inf_matmul(&s->k, &L->proj, s->y, T, s->a)) return -1;
        add_bias(s->a, L->proj_b, T, C);
        for (size_t i = 0; i < (size_t)T * C; i++) s->x[i] += s->a[i];
        layernorm(s->a, s->x, L->ln2_w, L->ln2_b, T, C, m->eps);
        if (inf_matmul(&s->k, &L->fc, s->a, T, s->h)) return -1;
        add_bias(s->h, L->fc_b, T, M);
        for (size_t i = 0; i < (size_t)T * M; i++) {
            float v = s->h[i];
            s->h[i] = v / (1.0f + expf(-2.0f * GELU_K * (v + GELU_A * v * v * v)));
        }
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
