/* gguf.c - GGUF v3 for llama.cpp (see gguf.h). */
#include "gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fp16 */

uint16_t gg_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);       /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);      /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                                        /* below 2^-14: subnormal half */
        float a;
        memcpy(&a, &ax, 4);
        /* a * 2^24 rounded to nearest even, exactly (the value is below 2^10) */
        float r = (a * 16777216.0f + 12582912.0f) - 12582912.0f;
        return (uint16_t)(sign | (uint32_t)r);
    }
    uint32_t mant = ax & 0x7fffffu, e = (ax >> 23) - 112u; /* rebias 127 -> 15 */
    uint32_t h = (e << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;     /* carries into the exponent correctly */
    return (uint16_t)(sign | h);
}

float gg_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-08f; /* 2^-24 */
        return sign ? -v : v;
    }
    if (e == 31) x = sign | 0x7f800000u | (m << 13);
    else x = sign | ((e + 112u) << 23) | (m << 13);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* -------------------------------------------------------------- blocks */

static void q8_0_row(const float *x, void *out, int K) {
    gg_block_q8_0 *b = out;
    for (int i = 0; i < K / GG_BLOCK; i++, x += GG_BLOCK) {
        float amax = 0.0f;
        for (int j = 0; j < GG_BLOCK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        b[i].d = gg_fp16(d);
        for (int j = 0; j < GG_BLOCK; j++) b[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void q8_0_deq(const void *in, float *y, int K) {
    const gg_block_q8_0 *b = in;
    for (int i = 0; i < K / GG_BLOCK; i++) {
        float d = gg_fp32(b[i].d);
        for (int j = 0; j < GG_BLOCK; j++) y[i * GG_BLOCK + j] = (float)b[i].qs[j] * d;
    }
}

static void q4_0_row(const float *x, void *out, int K) {
    gg_block_q4_0 *b = out;
    for (int i = 0; i < K / GG_BLOCK; i++, x += GG_BLOCK) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < GG_BLOCK; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
        float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
        b[i].d = gg_fp16(d);
        for (int j = 0; j < GG_BLOCK / 2; j++) {
            int8_t a = (int8_t)(x[j] * id + 8.5f), c = (int8_t)(x[j + 16] * id + 8.5f);
            uint8_t lo = (uint8_t)(a < 15 ? a : 15), hi = (uint8_t)(c < 15 ? c : 15);
            b[i].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

static void q4_0_deq(const void *in, float *y, int K) {
    const gg_block_q4_0 *b = in;
    for (int i = 0; i < K / GG_BLOCK; i++) {
        float d = gg_fp32(b[i].d);
        for (int j = 0; j < GG_BLOCK / 2; j++) {
            y[i * GG_BLOCK + j] = (float)((b[i].qs[j] & 15) - 8) * d;
            y[i * GG_BLOCK + j + 16] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void q4_1_row(const float *x, void *out, int K) {
    gg_block_q4_1 *b = out;
    for (int i = 0; i < K / GG_BLOCK; i++, x += GG_BLOCK) {
        float mn = INFINITY, mx = -INFINITY;
        for (int j = 0; j < GG_BLOCK; j++) mn = x[j] < mn ? x[j] : mn, mx = x[j] > mx ? x[j] : mx;
        float d = (mx - mn) / 15.0f, id = d ? 1.0f / d : 0.0f;
        b[i].d = gg_fp16(d), b[i].m = gg_fp16(mn);
        for (int j = 0; j < GG_BLOCK / 2; j++) {
            int8_t a = (int8_t)((x[j] - mn) * id + 0.5f), c = (int8_t)((x[j + 16] - mn) * id + 0.5f);
            uint8_t lo = (uint8_t)(a < 15 ? a : 15), hi = (uint8_t)(c < 15 ? c : 15);
            b[i].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

static void q4_1_deq(const void *in, float *y, int K) {
    const gg_block_q4_1 *b = in;
    for (int i = 0; i < K / GG_BLOCK; i++) {
        float d = gg_fp32(b[i].d), m = gg_fp32(b[i].m);
        for (int j = 0; j < GG_BLOCK / 2; j++) {
            y[i * GG_BLOCK + j] = (float)(b[i].qs[j] & 15) * d + m;
            y[i * GG_BLOCK + j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

static void f32_row(const float *x, void *out, int K) { memcpy(out, x, (size_t)K * sizeof(float)); }
static void f32_deq(const void *in, float *y, int K) { memcpy(y, in, (size_t)K * sizeof(float)); }

static const gg_type_traits traits[] = {
    {GG_F32, "f32", 1, 4, f32_row, f32_deq},
    {GG_Q8_0, "q8_0", GG_BLOCK, (int)sizeof(gg_block_q8_0), q8_0_row, q8_0_deq},
    {GG_Q4_0, "q4_0", GG_BLOCK, (int)sizeof(gg_block_q4_0), q4_0_row, q4_0_deq},
    {GG_Q4_1, "q4_1", GG_BLOCK, (int)sizeof(gg_block_q4_1), q4_1_row, q4_1_deq},
};
#define N_TRAITS ((int)(sizeof traits / sizeof traits[0]))

const gg_type_traits *gg_type(int id) {
    for (int i = 0; i < N_TRAITS; i++)
        if (traits[i].id == id) return &traits[i];
    return NULL;
}

int gg_type_from_name(const char *name) {
    for (int i = 0; i < N_TRAITS; i++)
        if (!strcmp(traits[i].name, name)) return traits[i].id;
    return -1;
}

/* -------------------------------------------------------------- writer */

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
    bool oom;
} wbuf;

static void put(wbuf *b, const void *x, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->n, x, n);
    b->n += n;
}
static void put_u32(wbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(wbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(wbuf *b, const char *s, size_t n) { put_u64(b, n), put(b, s, n); }
static void put_key(wbuf *b, const char *k, uint32_t type) { put_str(b, k, strlen(k)), put_u32(b, type); }
static void kv_u32(wbuf *b, const char *k, uint32_t v) { put_key(b, k, GGV_U32), put_u32(b, v); }
static void kv_f32(wbuf *b, const char *k, float v) { put_key(b, k, GGV_F32), put(b, &v, 4); }
static void kv_bool(wbuf *b, const char *k, bool v) {
    uint8_t x = v;
    put_key(b, k, GGV_BOOL), put(b, &x, 1);
}
static void kv_str(wbuf *b, const char *k, const char *v) { put_key(b, k, GGV_STRING), put_str(b, v, strlen(v)); }
static void pad(wbuf *b, size_t align) {
    static const uint8_t z[GG_ALIGN] = {0};
    while (b->n % align) put(b, z, 1);
}

/* GPT-2's byte-to-unicode map: byte -> code point. */
static uint32_t byte_unicode(int c) {
    if ((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255)) return (uint32_t)c;
    int n = 0;
    for (int i = 0; i < c; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255))) n++;
    return 256u + (uint32_t)n;
}

static size_t utf8(uint32_t cp, char *o) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    o[0] = (char)(0xc0 | (cp >> 6)), o[1] = (char)(0x80 | (cp & 0x3f));
    return 2; /* every code point of the map is below 0x800 */
}

typedef struct wtensor {
    char name[64];
    uint32_t ndim;
    uint64_t ne[2];
    int type;
    const float *data; /* NULL: zeros */
    uint64_t bytes, offset;
} wtensor;

static int check_finite(const float *w, size_t n, const char *name, char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(w[i])) {
            snprintf(err, errlen, "gguf: tensor '%s' value %zu is %g: expected finite weights", name, i, (double)w[i]);
            return -1;
        }
    return 0;
}

int gg_write_plan(const pm_plan *p, const tr_vocab *v, int wtype, const char *source, const char *run,
                  const char *path, char *err, size_t errlen) {
    const pm_arch *a = &p->arch;
    const pm_table *tb = &p->table;
    const gg_type_traits *wt = gg_type(wtype);
    if (!wt) {
        snprintf(err, errlen, "gguf: weight type %d: expected f32, q8_0, q4_0 or q4_1", wtype);
        return -1;
    }
    if (v->size != a->vocab) {
        snprintf(err, errlen, "gguf: the vocabulary has %d symbols, the model's vocab is %d", v->size, a->vocab);
        return -1;
    }
    int C = a->n_embd, H = a->n_head[0], M = a->n_hidden[0], L = a->n_layer;
    for (int l = 0; l < L; l++) {
        if (a->n_head[l] != H || a->n_hidden[l] != M) {
            snprintf(err, errlen, "gguf: layer %d has %d heads and an MLP width of %d, layer 0 %d and %d: llama.cpp's gpt2 "
                     "architecture has one head count and one MLP width for all layers", l, a->n_head[l], a->n_hidden[l],
                     H, M);
            return -1;
        }
    }
    for (int i = 0; i < 4 * L + 1; i++)
        if (a->rank[i]) {
            snprintf(err, errlen, "gguf: the model has factorized (low-rank) sites: llama.cpp's gpt2 architecture has "
                     "dense matrices only (export the factorized model in pare's own format)");
            return -1;
        }
    if (H * a->head_dim != C) {
        snprintf(err, errlen, "gguf: %d heads of width %d make an attention width of %d, not n_embd %d: llama.cpp's gpt2 "
                 "architecture needs n_head * head_dim = n_embd", H, a->head_dim, H * a->head_dim, C);
        return -1;
    }
    for (int i = 0; i < tb->n_tensor; i++) {
        const pm_plan_entry *e = &p->entry[i];
        if (e->scale || e->zero || e->act_bits || strcmp(e->type, "f32") != 0) {
            snprintf(err, errlen, "gguf: tensor '%s' is set by %s to %s with its own scales: a GGUF file is written from "
                     "float weights (a quantization-aware checkpoint of pare's grids cannot be written as GGUF)",
                     tb->tensor[i].name, e->by, e->type);
            return -1;
        }
        if (!e->data) {
            snprintf(err, errlen, "gguf: tensor '%s': the export plan has no values for it", tb->tensor[i].name);
            return -1;
        }
    }
    /* the tensors, in llama.cpp's names */
    int nt = 0;
    size_t cap = 5 + 12 * (size_t)(L > 0 ? L : 0), ntb = (size_t)(tb->n_tensor > 0 ? tb->n_tensor : 0);
    wtensor *t = calloc(cap, sizeof *t);
    float **masked = calloc(ntb + 1, sizeof *masked);
    wbuf b = {0};
    int rc = -1;
    if (!t || !masked) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
#define ADD(NAME, IDX, TYPE, NE0, NE1, ND)                                                                             \
    do {                                                                                                               \
        wtensor *w = &t[nt++];                                                                                         \
        snprintf(w->name, sizeof w->name, "%s", NAME);                                                                 \
        w->ndim = ND, w->ne[0] = (uint64_t)(NE0), w->ne[1] = (uint64_t)(NE1), w->type = TYPE;                          \
        int ix_ = (IDX);                                                                                               \
        w->data = ix_ >= 0 ? (masked[ix_] ? masked[ix_] : p->entry[ix_].data) : NULL;                                  \
    } while (0)
    for (int i = 0; i < tb->n_tensor; i++) { /* masks: the zeros stored as zeros */
        const pm_plan_entry *e = &p->entry[i];
        size_t n = (size_t)tb->tensor[i].shape[0] * (size_t)tb->tensor[i].shape[1];
        if (check_finite(e->data, n, tb->tensor[i].name, err, errlen)) goto done;
        if (!e->mask) continue;
        if (!(masked[i] = malloc(n * sizeof(float)))) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        for (size_t j = 0; j < n; j++) masked[i][j] = e->mask[j] ? e->data[j] : 0.0f;
    }
    char nm[64];
    ADD("token_embd.weight", pm_table_tensor(tb, "wte"), GG_F32, C, a->vocab, 2);
    ADD("position_embd.weight", pm_table_tensor(tb, "wpe"), GG_F32, C, a->ctx, 2);
    for (int l = 0; l < L; l++) {
        static const struct { const char *pare, *gg; int role; } m[] = {
            {"ln1", "attn_norm", PM_LN1}, {"attn.qkv", "attn_qkv", PM_QKV}, {"attn.proj", "attn_output", PM_PROJ},
            {"ln2", "ffn_norm", PM_LN2},  {"mlp.fc", "ffn_up", PM_FC},      {"mlp.proj", "ffn_down", PM_MPROJ},
        };
        for (int k = 0; k < 6; k++) {
            int si = pm_table_site_of(tb, l, (pm_role)m[k].role);
            const pm_site *s = &tb->site[si];
            bool lin = s->linear;
            int out = lin ? s->out : C, in = lin ? s->in : 1;
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, m[k].gg);
            if (lin) ADD(nm, s->w, wtype, in, out, 2);
            else ADD(nm, s->w, GG_F32, C, 1, 1);
            snprintf(nm, sizeof nm, "blk.%d.%s.bias", l, m[k].gg);
            ADD(nm, s->b, GG_F32, out, 1, 1); /* b = -1 (bias = false): zeros */
        }
    }
    {
        int si = pm_table_site_of(tb, -1, PM_LNF);
        ADD("output_norm.weight", tb->site[si].w, GG_F32, C, 1, 1);
        ADD("output_norm.bias", tb->site[si].b, GG_F32, C, 1, 1);
        int hi = pm_table_site_of(tb, -1, PM_HEAD);
        if (!a->tied) ADD("output.weight", tb->site[hi].w, wtype, C, a->vocab, 2);
    }
#undef ADD
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        wtensor *w = &t[i];
        const gg_type_traits *tr = gg_type(w->type);
        if (w->ne[0] % (uint64_t)tr->block) {
            snprintf(err, errlen, "gguf: tensor '%s' has rows of %llu values: %s needs a multiple of %d (export as "
                     "gguf-f32, or give the layer a width that is a multiple of 32)", w->name,
                     (unsigned long long)w->ne[0], tr->name, tr->block);
            goto done;
        }
        w->bytes = w->ne[0] / (uint64_t)tr->block * (uint64_t)tr->block_bytes * w->ne[1];
        w->offset = off;
        off += (w->bytes + GG_ALIGN - 1) / GG_ALIGN * GG_ALIGN;
    }
    /* header and metadata */
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, (uint64_t)nt);
    uint64_t n_kv = 20 + (source ? 1 : 0) + (run ? 1 : 0);
    put_u64(&b, n_kv);
    kv_str(&b, "general.architecture", "gpt2");
    kv_str(&b, "general.name", "pare");
    kv_u32(&b, "general.alignment", GG_ALIGN);
    kv_u32(&b, "general.file_type", wtype == GG_F32 ? 0 : wtype == GG_Q4_0 ? 2 : wtype == GG_Q4_1 ? 3 : 7);
    kv_u32(&b, "gpt2.context_length", (uint32_t)a->ctx);
    kv_u32(&b, "gpt2.embedding_length", (uint32_t)C);
    kv_u32(&b, "gpt2.feed_forward_length", (uint32_t)M);
    kv_u32(&b, "gpt2.block_count", (uint32_t)L);
    kv_u32(&b, "gpt2.attention.head_count", (uint32_t)H);
    kv_f32(&b, "gpt2.attention.layer_norm_epsilon", 1e-5f);
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_str(&b, "tokenizer.ggml.pre", "smollm");
    put_key(&b, "tokenizer.ggml.tokens", GGV_ARRAY), put_u32(&b, GGV_STRING), put_u64(&b, (uint64_t)v->size);
    for (int i = 0; i < v->size; i++) {
        char s[4];
        size_t n = utf8(byte_unicode(v->sym[i]), s);
        put_str(&b, s, n);
    }
    put_key(&b, "tokenizer.ggml.token_type", GGV_ARRAY), put_u32(&b, GGV_I32), put_u64(&b, (uint64_t)v->size);
    for (int i = 0; i < v->size; i++) put_u32(&b, 1); /* normal */
    put_key(&b, "tokenizer.ggml.merges", GGV_ARRAY), put_u32(&b, GGV_STRING), put_u64(&b, 0);
    /* the special tokens: id 0 (docs/gguf.md: every id is a real symbol; none is added to prompts) */
    kv_u32(&b, "tokenizer.ggml.bos_token_id", 0);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", 0);
    kv_bool(&b, "tokenizer.ggml.add_bos_token", false);
    kv_bool(&b, "tokenizer.ggml.add_eos_token", false);
    kv_str(&b, "pare.vocab_kind", v->kind == TR_VOCAB_BYTE ? "byte" : "char");
    if (source) kv_str(&b, "pare.source", source);
    if (run) kv_str(&b, "pare.run", run);
    for (int i = 0; i < nt; i++) {
        put_str(&b, t[i].name, strlen(t[i].name));
        put_u32(&b, t[i].ndim);
        for (uint32_t d = 0; d < t[i].ndim; d++) put_u64(&b, t[i].ne[d]);
        put_u32(&b, (uint32_t)t[i].type);
        put_u64(&b, t[i].offset);
    }
    pad(&b, GG_ALIGN);
    for (int i = 0; i < nt && !b.oom; i++) {
        const gg_type_traits *tr = gg_type(t[i].type);
        int K = (int)t[i].ne[0];
        size_t rb = (size_t)K / (size_t)tr->block * (size_t)tr->block_bytes;
        uint8_t *row = calloc(1, rb);
        float *zeros = calloc((size_t)K, sizeof *zeros);
        if (!row || !zeros) {
            free(row), free(zeros);
            b.oom = true;
            break;
        }
        for (uint64_t r = 0; r < t[i].ne[1]; r++) {
            tr->quantize_row(t[i].data ? t[i].data + r * (uint64_t)K : zeros, row, K);
            put(&b, row, rb);
        }
        free(row), free(zeros);
        pad(&b, GG_ALIGN);
    }
    if (b.oom) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    {
        size_t pl = strlen(path) + 16;
        char *tmp = malloc(pl);
        if (!tmp) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        snprintf(tmp, pl, "%s.tmp", path);
        FILE *fp = fopen(tmp, "wb");
        if (!fp) {
            snprintf(err, errlen, "gguf: cannot create %s", tmp);
            free(tmp);
            goto done;
        }
        bool ok = fwrite(b.p, 1, b.n, fp) == b.n;
        ok = fclose(fp) == 0 && ok;
        if (!ok || rename(tmp, path) != 0) {
            snprintf(err, errlen, "gguf: writing %s failed (disk full?)", path);
            unlink(tmp);
            free(tmp);
            goto done;
        }
        free(tmp);
    }
    rc = 0;
done:
    if (masked)
        for (int i = 0; i < tb->n_tensor; i++) free(masked[i]);
    free(masked), free(t), free(b.p);
    return rc;
}

/* -------------------------------------------------------------- reader */

typedef struct rd {
    const uint8_t *p;
    size_t n, at;
    char *err;
    size_t errlen;
} rd;

static int need(rd *r, uint64_t k, const char *what) {
    if (k > r->n - r->at) {
        snprintf(r->err, r->errlen, "gguf: %s at offset %zu needs %llu bytes, %zu left: the file is truncated or the "
                 "length is wrong", what, r->at, (unsigned long long)k, r->n - r->at);
        return -1;
    }
    return 0;
}
static int get(rd *r, void *x, size_t k, const char *what) {
    if (need(r, k, what)) return -1;
    memcpy(x, r->p + r->at, k);
    r->at += k;
    return 0;
}

static const int val_size[GGV_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* Skips one string; *s and *len point into the buffer. */
static int get_str(rd *r, const uint8_t **s, uint64_t *len, const char *what) {
    if (get(r, len, 8, what) || need(r, *len, what)) return -1;
    *s = r->p + r->at;
    r->at += (size_t)*len;
    return 0;
}

static int skip_value(rd *r, int type, const char *key) {
    char what[300];
    snprintf(what, sizeof what, "the value of '%s'", key);
    if (type == GGV_STRING) {
        const uint8_t *s;
        uint64_t n;
        return get_str(r, &s, &n, what);
    }
    return need(r, (uint64_t)val_size[type], what) ? -1 : (r->at += (size_t)val_size[type], 0);
}

int gg_open_mem(gg_file *f, uint8_t *buf, size_t size, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    f->buf = buf, f->size = size, f->alignment = GG_ALIGN;
    rd r = {buf, size, 0, err, errlen};
    char magic[4];
    if (get(&r, magic, 4, "the magic") != 0) goto fail;
    if (memcmp(magic, "GGUF", 4) != 0) {
        snprintf(err, errlen, "gguf: the file does not start with GGUF: not a GGUF file");
        goto fail;
    }
    if (get(&r, &f->version, 4, "the version") || get(&r, &f->n_tensors, 8, "the tensor count") ||
        get(&r, &f->n_kv, 8, "the KV count"))
        goto fail;
    if (f->version != 3) {
        snprintf(err, errlen, "gguf: version %u: expected 3", f->version);
        goto fail;
    }
    /* each KV takes at least 8 + 4 + 1 bytes, each tensor info 8 + 4 + 8 + 4 + 8 */
    if (f->n_kv > (size - r.at) / 13 || f->n_tensors > (size - r.at) / 32) {
        snprintf(err, errlen, "gguf: %llu KVs and %llu tensors cannot fit in a file of %zu bytes",
                 (unsigned long long)f->n_kv, (unsigned long long)f->n_tensors, size);
        goto fail;
    }
    f->kv = calloc((size_t)f->n_kv + 1, sizeof *f->kv);
    f->t = calloc((size_t)f->n_tensors + 1, sizeof *f->t);
    f->names = malloc(size + 1); /* every key and name is a piece of the file: their copies fit in size + NULs */
    size_t nu = 0, ncap = size + 1;
    if (!f->kv || !f->t || !f->names) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const uint8_t *s;
        uint64_t len;
        char what[64];
        snprintf(what, sizeof what, "the key of KV %llu", (unsigned long long)i);
        if (get_str(&r, &s, &len, what)) goto fail;
        if (nu + len + 1 > ncap) {
            snprintf(err, errlen, "gguf: keys exceed the file");
            goto fail;
        }
        gg_kv *kv = &f->kv[i];
        memcpy(f->names + nu, s, (size_t)len), f->names[nu + len] = '\0';
        kv->key = f->names + nu;
        nu += (size_t)len + 1;
        if (memchr(s, 0, (size_t)len)) {
            snprintf(err, errlen, "gguf: KV %llu's key holds a NUL byte", (unsigned long long)i);
            goto fail;
        }
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(f->kv[j].key, kv->key)) {
                snprintf(err, errlen, "gguf: key '%s' appears twice", kv->key);
                goto fail;
            }
        uint32_t ty;
        if (get(&r, &ty, 4, "a value type")) goto fail;
        if (ty >= GGV_COUNT) {
            snprintf(err, errlen, "gguf: key '%s' has value type %u: expected 0..%d", kv->key, ty, GGV_COUNT - 1);
            goto fail;
        }
        kv->type = (int)ty, kv->n = 1, kv->val = buf + r.at;
        if (ty == GGV_ARRAY) {
            uint32_t at;
            if (get(&r, &at, 4, "an array's element type") || get(&r, &kv->n, 8, "an array's length")) goto fail;
            if (at >= GGV_COUNT || at == GGV_ARRAY) {
                snprintf(err, errlen, "gguf: array '%s' has element type %u: expected 0..%d, not an array", kv->key, at,
                         GGV_COUNT - 1);
                goto fail;
            }
            kv->arr_type = (int)at;
            kv->val = buf + r.at;
            if (at != GGV_STRING && kv->n > (size - r.at) / (uint64_t)val_size[at]) {
                snprintf(err, errlen, "gguf: array '%s' of %llu elements exceeds the %zu bytes left", kv->key,
                         (unsigned long long)kv->n, size - r.at);
                goto fail;
            }
            for (uint64_t e = 0; e < kv->n; e++)
                if (skip_value(&r, (int)at, kv->key)) goto fail;
        } else if (skip_value(&r, (int)ty, kv->key)) {
            goto fail;
        }
        if (!strcmp(kv->key, "general.alignment")) {
            uint32_t al;
            memcpy(&al, kv->val, 4);
            if (ty != GGV_U32 || al == 0 || (al & (al - 1))) {
                snprintf(err, errlen, "gguf: general.alignment: expected a u32 power of two");
                goto fail;
            }
            f->alignment = al;
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gg_tensor *t = &f->t[i];
        const uint8_t *s;
        uint64_t len;
        if (get_str(&r, &s, &len, "a tensor's name")) goto fail;
        if (len == 0 || len >= 64 || memchr(s, 0, (size_t)len) || nu + len + 1 > ncap) {
            snprintf(err, errlen, "gguf: tensor %llu's name of %llu bytes: expected 1..63 bytes without NUL",
                     (unsigned long long)i, (unsigned long long)len);
            goto fail;
        }
        memcpy(f->names + nu, s, (size_t)len), f->names[nu + len] = '\0';
        t->name = f->names + nu;
        nu += (size_t)len + 1;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(f->t[j].name, t->name)) {
                snprintf(err, errlen, "gguf: tensor '%s' appears twice", t->name);
                goto fail;
            }
        if (get(&r, &t->ndim, 4, "a tensor's dimension count")) goto fail;
        if (t->ndim < 1 || t->ndim > 4) {
            snprintf(err, errlen, "gguf: tensor '%s' has %u dimensions: expected 1..4", t->name, t->ndim);
            goto fail;
        }
        uint64_t numel = 1;
        for (uint32_t d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->ndim; d++) {
            if (get(&r, &t->ne[d], 8, "a tensor's dimension")) goto fail;
            if (t->ne[d] == 0 || t->ne[d] > ((uint64_t)1 << 40) || numel > ((uint64_t)1 << 62) / t->ne[d]) {
                snprintf(err, errlen, "gguf: tensor '%s' dimension %u is %llu: expected 1 .. 2^40 and at most 2^62 "
                         "elements", t->name, d, (unsigned long long)t->ne[d]);
                goto fail;
            }
            numel *= t->ne[d];
        }
        uint32_t ty;
        if (get(&r, &ty, 4, "a tensor's type") || get(&r, &t->offset, 8, "a tensor's offset")) goto fail;
        const gg_type_traits *tr = gg_type((int)ty);
        if (!tr) {
            snprintf(err, errlen, "gguf: tensor '%s' has ggml type %u: pare reads f32, q8_0, q4_0 and q4_1", t->name, ty);
            goto fail;
        }
        t->type = (int)ty;
        if (t->ne[0] % (uint64_t)tr->block) {
            snprintf(err, errlen, "gguf: tensor '%s' of type %s has rows of %llu: expected a multiple of %d", t->name,
                     tr->name, (unsigned long long)t->ne[0], tr->block);
            goto fail;
        }
        t->bytes = numel / (uint64_t)tr->block * (uint64_t)tr->block_bytes;
    }
    size_t data = (r.at + f->alignment - 1) / f->alignment * f->alignment;
    if (data > size) {
        snprintf(err, errlen, "gguf: the data section at %zu starts past the end of the file (%zu bytes)", data, size);
        goto fail;
    }
    uint64_t expect = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gg_tensor *t = &f->t[i];
        if (t->offset % f->alignment) {
            snprintf(err, errlen, "gguf: tensor '%s' at offset %llu: expected a multiple of the alignment %u", t->name,
                     (unsigned long long)t->offset, f->alignment);
            goto fail;
        }
        if (t->offset != expect) {
            snprintf(err, errlen, "gguf: tensor '%s' at offset %llu: expected %llu (tensors contiguous in listed order)",
                     t->name, (unsigned long long)t->offset, (unsigned long long)expect);
            goto fail;
        }
        if (t->bytes > size - data || t->offset > size - data - t->bytes) {
            snprintf(err, errlen, "gguf: tensor '%s' (%llu bytes at offset %llu) runs past the end of the file (%zu "
                     "bytes of data)", t->name, (unsigned long long)t->bytes, (unsigned long long)t->offset, size - data);
            goto fail;
        }
        t->data = buf + data + t->offset;
        expect = t->offset + (t->bytes + f->alignment - 1) / f->alignment * f->alignment;
    }
    return 0;
fail:
    gg_close(f);
    return -1;
}

int gg_open(gg_file *f, const char *path, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "gguf: cannot open %s", path);
        return -1;
    }
    long n = -1;
    if (fseek(fp, 0, SEEK_END) == 0) n = ftell(fp);
    uint8_t *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!buf || fseek(fp, 0, SEEK_SET) != 0 || fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        snprintf(err, errlen, "gguf: cannot read %s", path);
        free(buf);
        fclose(fp);
        return -1;
    }
    fclose(fp);
    return gg_open_mem(f, buf, (size_t)n, err, errlen);
}

void gg_close(gg_file *f) {
    free(f->buf), free(f->kv), free(f->t), free(f->names);
    memset(f, 0, sizeof *f);
}

const gg_kv *gg_find_kv(const gg_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (!strcmp(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

int64_t gg_kv_u32(const gg_file *f, const char *key) {
    const gg_kv *kv = gg_find_kv(f, key);
    if (!kv || kv->type != GGV_U32) return -1;
    uint32_t v;
    memcpy(&v, kv->val, 4);
    return v;
}

const gg_tensor *gg_find_tensor(const gg_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}
