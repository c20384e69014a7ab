/* format.c - the model file: storage-type traits, the validating reader and
 * the atomic writer (layout in format.h and docs/format.md). */
#include "format.h"
#include "autograd/hash.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pare's model file reader assumes a little-endian host"
#endif


/* ------------------------------------------------------------ type traits */

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static float rdf(const uint8_t *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}

/* Geometry of a quantized [N, K] tensor. */
typedef struct {
    size_t N, K, G, NB, NG;
    size_t codes_bytes, scales_bytes, zeros_bytes;
} qgeom;

static qgeom geom_of(const inf_tensor *t) {
    const inf_type_traits *tr = inf_type(t->dtype);
    qgeom g;
    g.N = t->shape[0];
    g.K = t->shape[1];
    g.G = t->group;
    g.NB = (g.N + INF_ROWS - 1) / INF_ROWS;
    g.NG = g.K / g.G;
    g.codes_bytes = g.NB * (g.K / (size_t)tr->cols_per_block) * (size_t)tr->block_bytes;
    g.scales_bytes = g.NB * g.NG * INF_ROWS * sizeof(float);
    g.zeros_bytes = tr->has_zero ? g.NB * g.NG * INF_ROWS : 0;
    return g;
}

static void row_f32(const inf_tensor *t, size_t row, float *out) {
    size_t K = t->shape[t->ndim - 1];
    memcpy(out, t->data + row * K * sizeof(float), K * sizeof(float));
}

static void row_q8(const inf_tensor *t, size_t row, float *out) {
    qgeom g = geom_of(t);
    size_t rb = row / INF_ROWS, i = row % INF_ROWS;
    const inf_blk_q8 *blk = (const inf_blk_q8 *)(const void *)t->data + rb * (g.K / 4);
    const uint8_t *sc = t->data + g.codes_bytes;
    for (size_t k = 0; k < g.K; k++) {
        float s = rdf(sc + ((rb * g.NG + k / g.G) * INF_ROWS + i) * 4);
        out[k] = s * (float)blk[k / 4].q[i][k % 4];
    }
}

static void row_q4(const inf_tensor *t, size_t row, float *out) {
    qgeom g = geom_of(t);
    size_t rb = row / INF_ROWS, i = row % INF_ROWS;
    const inf_blk_q4 *blk = (const inf_blk_q4 *)(const void *)t->data + rb * (g.K / 8);
    const uint8_t *sc = t->data + g.codes_bytes, *zp = sc + g.scales_bytes;
    bool asym = t->dtype == INF_Q4A;
    for (size_t k = 0; k < g.K; k++) {
        size_t gi = (rb * g.NG + k / g.G) * INF_ROWS + i;
        float s = rdf(sc + gi * 4);
        int z = asym ? zp[gi] : 8;
        size_t j = k % 8;
        uint8_t byte = blk[k / 8].q[i][j % 4];
        int nib = j < 4 ? (byte & 15) : (byte >> 4);
        out[k] = s * (float)(nib - z);
    }
}

static const inf_type_traits traits[INF_DTYPE_COUNT] = {
    [INF_F32] = {"f32", 1, 4, 0, false, false, row_f32},
    [INF_Q8] = {"q8", 4, (int)sizeof(inf_blk_q8), 32, true, false, row_q8},
    [INF_Q4] = {"q4", 8, (int)sizeof(inf_blk_q4), 32, true, false, row_q4},
    [INF_Q4A] = {"q4a", 8, (int)sizeof(inf_blk_q4), 32, true, true, row_q4},
};

const inf_type_traits *inf_type(int dt) {
    if (dt < 0 || dt >= INF_DTYPE_COUNT) return NULL;
    return &traits[dt];
}

int inf_dtype_from_name(const char *s) {
    for (int i = 0; i < INF_DTYPE_COUNT; i++)
        if (strcmp(s, traits[i].name) == 0) return i;
    return -1;
}

static bool mul_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static bool add_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_add_overflow(a, b, out); }

int inf_tensor_bytes(int dt, int ndim, const uint32_t *shape, uint32_t group, uint64_t *bytes, char *err,
                     size_t errlen) {
    const inf_type_traits *tr = inf_type(dt);
    if (!tr) {
        snprintf(err, errlen, "storage type %d: expected 0..%d", dt, INF_DTYPE_COUNT - 1);
        return -1;
    }
    if (ndim < 1 || ndim > 4) {
        snprintf(err, errlen, "ndim %d: expected 1..4", ndim);
        return -1;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 1 || shape[i] > INF_MAX_DIM) {
            snprintf(err, errlen, "dimension %d is %u: expected 1..%u", i, shape[i], INF_MAX_DIM);
            return -1;
        }
    if (!tr->group_multiple) {
        if (group != 0) {
            snprintf(err, errlen, "group size %u: expected 0 for %s", group, tr->name);
            return -1;
        }
        uint64_t n = (uint64_t)tr->block_bytes;
        for (int i = 0; i < ndim; i++)
            if (!mul_u64(n, shape[i], &n)) {
                snprintf(err, errlen, "size overflows 64 bits at dimension %d", i);
                return -1;
            }
        *bytes = n;
        return 0;
    }
    if (ndim != 2) {
        snprintf(err, errlen, "ndim %d: %s stores matrices only (ndim 2)", ndim, tr->name);
        return -1;
    }
    uint64_t N = shape[0], K = shape[1];
    if (group == 0 || group % (uint32_t)tr->group_multiple != 0 || K % group != 0) {
        snprintf(err, errlen, "group size %u: expected a positive multiple of %d dividing the input size %llu",
                 group, tr->group_multiple, (unsigned long long)K);
        return -1;
    }
    uint64_t NB = (N + INF_ROWS - 1) / INF_ROWS, NG = K / group, codes, groups, scales, zeros, n;
    bool ok = mul_u64(NB, K / (uint64_t)tr->cols_per_block, &codes) &&
              mul_u64(codes, (uint64_t)tr->block_bytes, &codes) && mul_u64(NB, NG, &groups) &&
              mul_u64(groups, INF_ROWS, &groups) && mul_u64(groups, sizeof(float), &scales);
    zeros = tr->has_zero ? groups : 0;
    if (!ok || !add_u64(codes, scales, &n) || !add_u64(n, zeros, &n)) {
        snprintf(err, errlen, "size overflows 64 bits");
        return -1;
    }
    *bytes = n;
    return 0;
}

/* ------------------------------------------------------------------ reader */

typedef struct cursor {
    const uint8_t *buf;
    size_t len, pos;
    const char *name;
    char *err;
    size_t errlen;
} cursor;

static int fail_at(cursor *c, size_t at, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(cursor *c, size_t at, const char *field, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s: byte %zu: %s: %s", c->name, at, field, what);
    return -1;
}

/* Makes sure n more bytes can be read at the cursor. */
static int need(cursor *c, size_t n, const char *field) {
    if (n > c->len - c->pos)
        return fail_at(c, c->pos, field, "truncated: needs %zu bytes, %zu left", n, c->len - c->pos);
    return 0;
}

static int get_u32(cursor *c, const char *field, uint32_t *v) {
    if (need(c, 4, field)) return -1;
    *v = rd32(c->buf + c->pos);
    c->pos += 4;
    return 0;
}

static int get_u64(cursor *c, const char *field, uint64_t *v) {
    if (need(c, 8, field)) return -1;
    *v = rd64(c->buf + c->pos);
    c->pos += 8;
    return 0;
}

/* Reads a u32 and checks lo <= v <= hi. */
static int get_u32_in(cursor *c, const char *field, uint32_t lo, uint32_t hi, uint32_t *v) {
    size_t at = c->pos;
    if (get_u32(c, field, v)) return -1;
    if (*v < lo || *v > hi) return fail_at(c, at, field, "%u: expected %u..%u", *v, lo, hi);
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    const inf_tensor *x = *(const inf_tensor *const *)a, *y = *(const inf_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_offset(const void *a, const void *b) {
    const inf_tensor *x = *(const inf_tensor *const *)a, *y = *(const inf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static const inf_tensor *find_sorted(inf_tensor **by_name, uint32_t n, const char *name) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(by_name[mid]->name, name);
        if (c == 0) return by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* The GPT model check: every tensor the config implies, with its shape; 1-D
 * tensors f32; nothing else. */
static int check_model(cursor *c, inf_file *f, inf_tensor **by_name, const size_t *entry_at, bool *seen,
                       size_t table_start) {
    const inf_config *g = &f->cfg;
    uint32_t C = g->n_embd, M = g->n_hidden, V = g->vocab;
    struct {
        char name[INF_NAME_MAX + 1];
        int ndim;
        uint32_t d0, d1;
    } want;
    uint32_t matched = 0;
    /* expected tensors, generated in declaration order */
    uint32_t n_expected_per_layer = g->bias ? 12 : 6;
    uint64_t total = 2 + (uint64_t)g->n_layer * n_expected_per_layer + (g->bias ? 2 : 1) + (g->tied ? 0 : 1);
    for (uint64_t e = 0; e < total; e++) {
        uint64_t idx = e;
        if (idx == 0) {
            snprintf(want.name, sizeof want.name, "wte"), want.ndim = 2, want.d0 = V, want.d1 = C;
        } else if (idx == 1) {
            snprintf(want.name, sizeof want.name, "wpe"), want.ndim = 2, want.d0 = g->ctx, want.d1 = C;
        } else if ((idx -= 2) < (uint64_t)g->n_layer * n_expected_per_layer) {
            unsigned l = (unsigned)(idx / n_expected_per_layer), j = (unsigned)(idx % n_expected_per_layer);
            static const char *const names_b[12] = {"ln1.w", "ln1.b", "attn.qkv.w", "attn.qkv.b", "attn.proj.w",
                                                    "attn.proj.b", "ln2.w", "ln2.b", "mlp.fc.w", "mlp.fc.b",
                                                    "mlp.proj.w", "mlp.proj.b"};
            static const char *const names_nb[6] = {"ln1.w", "attn.qkv.w", "attn.proj.w", "ln2.w", "mlp.fc.w",
                                                    "mlp.proj.w"};
            const char *nm = g->bias ? names_b[j] : names_nb[j];
            snprintf(want.name, sizeof want.name, "h.%u.%s", l, nm);
            if (!strcmp(nm, "attn.qkv.w")) want.ndim = 2, want.d0 = 3 * C, want.d1 = C;
            else if (!strcmp(nm, "attn.qkv.b")) want.ndim = 1, want.d0 = 3 * C, want.d1 = 1;
            else if (!strcmp(nm, "attn.proj.w")) want.ndim = 2, want.d0 = C, want.d1 = C;
            else if (!strcmp(nm, "mlp.fc.w")) want.ndim = 2, want.d0 = M, want.d1 = C;
            else if (!strcmp(nm, "mlp.fc.b")) want.ndim = 1, want.d0 = M, want.d1 = 1;
            else if (!strcmp(nm, "mlp.proj.w")) want.ndim = 2, want.d0 = C, want.d1 = M;
            else want.ndim = 1, want.d0 = C, want.d1 = 1;
        } else {
            idx -= (uint64_t)g->n_layer * n_expected_per_layer;
            if (idx == 0) snprintf(want.name, sizeof want.name, "lnf.w"), want.ndim = 1, want.d0 = C, want.d1 = 1;
            else if (idx == 1 && g->bias)
                snprintf(want.name, sizeof want.name, "lnf.b"), want.ndim = 1, want.d0 = C, want.d1 = 1;
            else snprintf(want.name, sizeof want.name, "lm_head.w"), want.ndim = 2, want.d0 = V, want.d1 = C;
        }
        const inf_tensor *t = find_sorted(by_name, f->n_tensors, want.name);
        if (!t) return fail_at(c, table_start, "tensor table", "missing tensor '%s' (the config implies it)", want.name);
        size_t at = entry_at[t - f->t];
        seen[t - f->t] = true;
        if (t->ndim != want.ndim || t->shape[0] != want.d0 || (want.ndim == 2 && t->shape[1] != want.d1))
            return fail_at(c, at, "shape", "tensor '%s' is %dD [%u, %u]: the config implies %dD [%u, %u]", t->name,
                           t->ndim, t->shape[0], t->ndim > 1 ? t->shape[1] : 1, want.ndim, want.d0, want.d1);
        if (want.ndim == 1 && t->dtype != INF_F32)
            return fail_at(c, at, "storage type", "tensor '%s' is %s: vectors are stored as f32", t->name,
                           inf_type(t->dtype)->name);
        matched++;
    }
    if (matched != f->n_tensors)
        for (uint32_t i = 0; i < f->n_tensors; i++)
            if (!seen[i]) return fail_at(c, entry_at[i], "name", "unexpected tensor '%s' for this config", f->t[i].name);
    return 0;
}

/* Contents that must hold for the kernels to compute finite, in-range
 * values: finite scales, zero points <= 15. */
static int check_contents(cursor *c, const inf_file *f) {
    for (uint32_t i = 0; i < f->n_tensors; i++) {
        const inf_tensor *t = &f->t[i];
        if (t->dtype == INF_F32) continue;
        qgeom g = geom_of(t);
        const uint8_t *sc = t->data + g.codes_bytes;
        for (size_t j = 0; j < g.NB * g.NG * INF_ROWS; j++) {
            float s = rdf(sc + 4 * j);
            if (!isfinite(s) || s < 0.0f)
                return fail_at(c, (size_t)t->offset + g.codes_bytes + 4 * j, "scale",
                               "tensor '%s' scale %zu is %g: expected finite and >= 0", t->name, j, (double)s);
        }
        if (inf_type(t->dtype)->has_zero) {
            const uint8_t *z = sc + g.scales_bytes;
            for (size_t j = 0; j < g.NB * g.NG * INF_ROWS; j++)
                if (z[j] > 15)
                    return fail_at(c, (size_t)t->offset + g.codes_bytes + g.scales_bytes + j, "zero point",
                                   "tensor '%s' zero point %zu is %u: expected 0..15", t->name, j, z[j]);
        }
    }
    return 0;
}

void inf_file_close(inf_file *f) {
    if (!f) return;
    free(f->t);
    free(f->vocab.tok);
    free(f->vocab.len);
    free(f->owned);
    memset(f, 0, sizeof *f);
}

int inf_file_parse(inf_file *f, const uint8_t *buf, size_t len, const char *name, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    cursor cc = {buf, len, 0, name ? name : "model file", err, errlen}, *c = &cc;
    inf_tensor **by = NULL;
    size_t *entry_at = NULL;
    bool *seen = NULL;
    if (len < INF_HEADER_BYTES + INF_CONFIG_BYTES + 8)
        return fail_at(c, 0, "file size", "%zu bytes: too short for a model file (at least %u)", len,
                       INF_HEADER_BYTES + INF_CONFIG_BYTES + 8);
    if (memcmp(buf, INF_MAGIC, 8) != 0) return fail_at(c, 0, "magic", "not a pare model file (expected \"%s\")", INF_MAGIC);
    c->pos = 8;
    uint32_t flags, config_bytes, vocab_bytes, meta_bytes, table_bytes, hres;
    uint64_t file_size;
    size_t at = c->pos;
    if (get_u32(c, "version", &f->version)) goto fail;
    if (f->version != INF_VERSION) {
        fail_at(c, at, "version", "%u: this reader supports version %u", f->version, INF_VERSION);
        goto fail;
    }
    at = c->pos;
    if (get_u32(c, "flags", &flags)) goto fail;
    if (flags != 0) {
        fail_at(c, at, "flags", "0x%x: expected 0", flags);
        goto fail;
    }
    at = c->pos;
    if (get_u64(c, "file size", &file_size)) goto fail;
    if (file_size != len) {
        fail_at(c, at, "file size", "header says %llu bytes, the file has %zu (truncated or extended)",
                (unsigned long long)file_size, len);
        goto fail;
    }
    if (get_u32_in(c, "config size", INF_CONFIG_BYTES, INF_CONFIG_BYTES, &config_bytes)) goto fail;
    if (get_u32_in(c, "vocabulary size", 8, 8u + INF_MAX_VOCAB * (1u + INF_MAX_TOKEN), &vocab_bytes)) goto fail;
    if (get_u32_in(c, "metadata size", 0, INF_MAX_META, &meta_bytes)) goto fail;
    if (get_u32_in(c, "tensor count", 1, INF_MAX_TENSORS, &f->n_tensors)) goto fail;
    at = c->pos;
    if (get_u32(c, "table size", &table_bytes)) goto fail;
    if (table_bytes < 42u * f->n_tensors) {
        fail_at(c, at, "table size", "%u bytes: %u tensors need at least %u", table_bytes, f->n_tensors,
                42u * f->n_tensors);
        goto fail;
    }
    if (get_u32_in(c, "header reserved", 0, 0, &hres)) goto fail;
    at = c->pos;
    if (get_u64(c, "data offset", &f->data_offset)) goto fail;
    uint64_t meta_end = (uint64_t)INF_HEADER_BYTES + config_bytes + vocab_bytes + meta_bytes + table_bytes;
    if (f->data_offset % INF_ALIGN != 0 || f->data_offset < meta_end || f->data_offset > len - 8) {
        fail_at(c, at, "data offset", "%llu: expected a multiple of %u in [%llu, %zu]",
                (unsigned long long)f->data_offset, INF_ALIGN, (unsigned long long)meta_end, len - 8);
        goto fail;
    }

    /* config */
    inf_config *g = &f->cfg;
    if (get_u32_in(c, "config n_layer", 1, INF_MAX_LAYERS, &g->n_layer) ||
        get_u32_in(c, "config n_head", 1, INF_MAX_WIDTH, &g->n_head) ||
        get_u32_in(c, "config n_embd", 1, INF_MAX_WIDTH, &g->n_embd) ||
        get_u32_in(c, "config n_hidden", 1, 16 * INF_MAX_WIDTH, &g->n_hidden) ||
        get_u32_in(c, "config ctx", 1, INF_MAX_CTX, &g->ctx) ||
        get_u32_in(c, "config vocab", 1, INF_MAX_VOCAB, &g->vocab) || get_u32_in(c, "config bias", 0, 1, &g->bias) ||
        get_u32_in(c, "config tied", 0, 1, &g->tied))
        goto fail;
    at = c->pos;
    uint32_t bits, reserved;
    if (get_u32(c, "config ln_eps", &bits)) goto fail;
    memcpy(&g->ln_eps, &bits, 4);
    if (!isfinite(g->ln_eps) || !(g->ln_eps > 0.0f)) {
        fail_at(c, at, "config ln_eps", "%g: expected a finite value > 0", (double)g->ln_eps);
        goto fail;
    }
    if (g->n_embd % g->n_head != 0) {
        fail_at(c, INF_HEADER_BYTES + 4, "config n_head", "%u heads do not divide the width %u", g->n_head, g->n_embd);
        goto fail;
    }
    if (get_u32_in(c, "config reserved", 0, 0, &reserved)) goto fail;

    /* vocabulary */
    size_t voc_start = c->pos;
    if (need(c, vocab_bytes, "vocabulary")) goto fail;
    cursor vc = *c;
    vc.len = c->pos + vocab_bytes; /* reads stop at the section's end */
    if (get_u32_in(&vc, "vocabulary kind", 0, 1, &f->vocab.kind)) goto fail;
    at = vc.pos;
    if (get_u32_in(&vc, "vocabulary count", 1, INF_MAX_VOCAB, &f->vocab.n)) goto fail;
    if (f->vocab.n != g->vocab) {
        fail_at(c, at, "vocabulary count", "%u entries: the config says vocab %u", f->vocab.n, g->vocab);
        goto fail;
    }
    if ((uint64_t)f->vocab.n * 2 > vocab_bytes - 8) { /* each entry is at least 2 bytes */
        fail_at(c, at, "vocabulary count", "%u entries cannot fit in %u bytes", f->vocab.n, vocab_bytes);
        goto fail;
    }
    f->vocab.tok = calloc(f->vocab.n, sizeof *f->vocab.tok);
    f->vocab.len = calloc(f->vocab.n, 1);
    if (!f->vocab.tok || !f->vocab.len) {
        fail_at(c, at, "vocabulary", "out of memory for %u entries", f->vocab.n);
        goto fail;
    }
    for (uint32_t i = 0; i < f->vocab.n; i++) {
        at = vc.pos;
        if (need(&vc, 1, "vocabulary entry length")) goto fail;
        uint8_t l = buf[vc.pos++];
        if (l < 1 || l > INF_MAX_TOKEN) {
            fail_at(c, at, "vocabulary entry length", "entry %u has %u bytes: expected 1..%u", i, l, INF_MAX_TOKEN);
            goto fail;
        }
        if (need(&vc, l, "vocabulary entry")) goto fail;
        f->vocab.tok[i] = buf + vc.pos;
        f->vocab.len[i] = l;
        vc.pos += l;
    }
    if (vc.pos != voc_start + vocab_bytes) {
        fail_at(c, vc.pos, "vocabulary", "%zu unused bytes at the end of the section", voc_start + vocab_bytes - vc.pos);
        goto fail;
    }
    if (f->vocab.kind == 0) { /* byte vocabulary: the identity over 256 bytes */
        bool ok = f->vocab.n == 256;
        for (uint32_t i = 0; ok && i < f->vocab.n; i++) ok = f->vocab.len[i] == 1 && f->vocab.tok[i][0] == i;
        if (!ok) {
            fail_at(c, voc_start, "vocabulary", "a byte vocabulary must map id b to the single byte b for b < 256");
            goto fail;
        }
    }
    c->pos = voc_start + vocab_bytes;

    /* metadata */
    if (need(c, meta_bytes, "metadata")) goto fail;
    const void *nul = memchr(buf + c->pos, 0, meta_bytes);
    if (nul) {
        fail_at(c, (size_t)((const uint8_t *)nul - buf), "metadata", "a NUL byte: expected text");
        goto fail;
    }
    f->meta = (const char *)buf + c->pos;
    f->meta_len = meta_bytes;
    c->pos += meta_bytes;

    /* tensor table */
    size_t table_start = c->pos;
    cursor tc = *c;
    tc.len = c->pos + table_bytes;
    f->t = calloc(f->n_tensors, sizeof *f->t);
    by = calloc(f->n_tensors, sizeof *by);
    entry_at = calloc(f->n_tensors, sizeof *entry_at);
    if (!f->t || !by || !entry_at) {
        fail_at(c, table_start, "tensor table", "out of memory for %u tensors", f->n_tensors);
        goto fail;
    }
    for (uint32_t i = 0; i < f->n_tensors; i++) {
        inf_tensor *t = &f->t[i];
        entry_at[i] = tc.pos;
        at = tc.pos;
        if (need(&tc, 2, "tensor name length")) goto fail;
        uint32_t nl = (uint32_t)buf[tc.pos] | (uint32_t)buf[tc.pos + 1] << 8;
        tc.pos += 2;
        if (nl < 1 || nl > INF_NAME_MAX) {
            fail_at(c, at, "tensor name length", "tensor %u: %u bytes: expected 1..%u", i, nl, INF_NAME_MAX);
            goto fail;
        }
        if (need(&tc, nl, "tensor name")) goto fail;
        for (uint32_t j = 0; j < nl; j++)
            if (buf[tc.pos + j] < 0x21 || buf[tc.pos + j] > 0x7e) {
                fail_at(c, tc.pos + j, "tensor name", "tensor %u: byte 0x%02x: expected printable ASCII", i,
                        buf[tc.pos + j]);
                goto fail;
            }
        memcpy(t->name, buf + tc.pos, nl);
        t->name[nl] = '\0';
        tc.pos += nl;
        if (need(&tc, 4, "tensor storage type")) goto fail;
        at = tc.pos;
        t->dtype = buf[tc.pos];
        t->ndim = buf[tc.pos + 1];
        uint32_t res16 = (uint32_t)buf[tc.pos + 2] | (uint32_t)buf[tc.pos + 3] << 8;
        tc.pos += 4;
        if (!inf_type(t->dtype)) {
            fail_at(c, at, "storage type", "tensor '%s': %d: expected 0..%d", t->name, t->dtype, INF_DTYPE_COUNT - 1);
            goto fail;
        }
        if (t->ndim < 1 || t->ndim > 4) {
            fail_at(c, at + 1, "ndim", "tensor '%s': %d: expected 1..4", t->name, t->ndim);
            goto fail;
        }
        if (res16 != 0) {
            fail_at(c, at + 2, "tensor reserved", "tensor '%s': %u: expected 0", t->name, res16);
            goto fail;
        }
        for (int d = 0; d < 4; d++) {
            at = tc.pos;
            if (get_u32(&tc, "shape", &t->shape[d])) goto fail;
            uint32_t lo = d < t->ndim ? 1 : 1, hi = d < t->ndim ? INF_MAX_DIM : 1;
            if (t->shape[d] < lo || t->shape[d] > hi) {
                fail_at(c, at, "shape", "tensor '%s' dimension %d is %u: expected %s", t->name, d, t->shape[d],
                        d < t->ndim ? "1..16777216" : "1 (unused)");
                goto fail;
            }
        }
        at = tc.pos;
        if (get_u32(&tc, "group size", &t->group)) goto fail;
        size_t off_at = tc.pos;
        if (get_u64(&tc, "offset", &t->offset)) goto fail;
        size_t bytes_at = tc.pos;
        if (get_u64(&tc, "byte count", &t->bytes)) goto fail;
        uint64_t want;
        char why[160];
        if (inf_tensor_bytes(t->dtype, t->ndim, t->shape, t->group, &want, why, sizeof why)) {
            fail_at(c, strstr(why, "group") ? at : at - 16, strstr(why, "group") ? "group size" : "shape",
                    "tensor '%s': %s", t->name, why);
            goto fail;
        }
        if (t->bytes != want) {
            fail_at(c, bytes_at, "byte count", "tensor '%s': %llu: its type and shape need %llu", t->name,
                    (unsigned long long)t->bytes, (unsigned long long)want);
            goto fail;
        }
        uint64_t end;
        if (t->offset % INF_ALIGN != 0 || t->offset < f->data_offset || !add_u64(t->offset, t->bytes, &end) ||
            end > len - 8) {
            fail_at(c, off_at, "offset", "tensor '%s': %llu (+%llu bytes): expected a multiple of %u inside the data "
                    "region [%llu, %zu)", t->name, (unsigned long long)t->offset, (unsigned long long)t->bytes,
                    INF_ALIGN, (unsigned long long)f->data_offset, len - 8);
            goto fail;
        }
        t->data = buf + t->offset;
        by[i] = t;
    }
    if (tc.pos != table_start + table_bytes) {
        fail_at(c, tc.pos, "tensor table", "%zu unused bytes at the end of the table", table_start + table_bytes - tc.pos);
        goto fail;
    }
    for (size_t p = table_start + table_bytes; p < f->data_offset; p++)
        if (buf[p] != 0) {
            fail_at(c, p, "padding", "byte 0x%02x before the data region: expected 0", buf[p]);
            goto fail;
        }
    /* unique names */
    qsort(by, f->n_tensors, sizeof *by, cmp_name);
    for (uint32_t i = 1; i < f->n_tensors; i++)
        if (!strcmp(by[i - 1]->name, by[i]->name)) {
            fail_at(c, entry_at[by[i] - f->t], "name", "tensor name '%s' appears twice", by[i]->name);
            goto fail;
        }
    /* no overlap (checked on a copy sorted by offset) */
    {
        inf_tensor **bo = malloc(f->n_tensors * sizeof *bo);
        if (!bo) {
            fail_at(c, table_start, "tensor table", "out of memory");
            goto fail;
        }
        memcpy(bo, by, f->n_tensors * sizeof *bo);
        qsort(bo, f->n_tensors, sizeof *bo, cmp_offset);
        for (uint32_t i = 1; i < f->n_tensors; i++)
            if (bo[i - 1]->offset + bo[i - 1]->bytes > bo[i]->offset) {
                size_t e = entry_at[bo[i] - f->t] + 26 + strlen(bo[i]->name);
                fail_at(c, e, "offset", "tensor '%s' at %llu overlaps tensor '%s' (%llu..%llu)", bo[i]->name,
                        (unsigned long long)bo[i]->offset, bo[i - 1]->name, (unsigned long long)bo[i - 1]->offset,
                        (unsigned long long)(bo[i - 1]->offset + bo[i - 1]->bytes));
                free(bo);
                goto fail;
            }
        free(bo);
    }
    seen = calloc(f->n_tensors, 1);
    if (!seen) {
        fail_at(c, table_start, "tensor table", "out of memory");
        goto fail;
    }
    if (check_model(c, f, by, entry_at, seen, table_start)) goto fail;
    if (check_contents(c, f)) goto fail;
    uint64_t want_sum = rd64(buf + len - 8), sum = ag_fnv1a(AG_FNV_INIT, buf, len - 8);
    if (sum != want_sum) {
        fail_at(c, len - 8, "checksum", "stored %016llx, computed %016llx: the file is corrupted",
                (unsigned long long)want_sum, (unsigned long long)sum);
        goto fail;
    }
    free(by);
    free(entry_at);
    free(seen);
    f->buf = buf;
    f->len = len;
    return 0;
fail:
    free(by);
    free(entry_at);
    free(seen);
    inf_file_close(f);
    return -1;
}

int inf_file_open(inf_file *f, const char *path, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    size_t len = (size_t)st.st_size;
    if (len < INF_HEADER_BYTES + INF_CONFIG_BYTES + 8) {
        snprintf(err, errlen, "%s: byte 0: file size: %zu bytes: too short for a model file (at least %u)", path, len,
                 INF_HEADER_BYTES + INF_CONFIG_BYTES + 8);
        close(fd);
        return -1;
    }
    size_t cap = (len + INF_ALIGN - 1) / INF_ALIGN * INF_ALIGN;
    uint8_t *buf = aligned_alloc(INF_ALIGN, cap);
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory for %zu bytes", path, len);
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            snprintf(err, errlen, "%s: read failed at byte %zu: %s", path, got, r < 0 ? strerror(errno) : "unexpected end");
            free(buf);
            close(fd);
            return -1;
        }
        got += (size_t)r;
    }
    close(fd);
    if (inf_file_parse(f, buf, len, path, err, errlen)) {
        free(buf);
        return -1;
    }
    f->owned = buf;
    return 0;
}

const char *inf_file_meta(const inf_file *f, const char *key, char *buf, size_t n) {
    size_t kl = strlen(key), p = 0;
    if (n == 0) return NULL;
    while (p < f->meta_len) {
        const char *line = f->meta + p;
        const char *end = memchr(line, '\n', f->meta_len - p);
        size_t ll = end ? (size_t)(end - line) : f->meta_len - p;
        if (ll > kl && !memcmp(line, key, kl) && line[kl] == '=') {
            size_t vl = ll - kl - 1 < n - 1 ? ll - kl - 1 : n - 1;
            memcpy(buf, line + kl + 1, vl);
            buf[vl] = '\0';
            return buf;
        }
        p += ll + 1;
    }
    return NULL;
}

const inf_tensor *inf_file_find(const inf_file *f, const char *name) {
    for (uint32_t i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

/* ------------------------------------------------------------------ writer */

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} wbuf;

static void put(wbuf *w, const void *p, size_t n) {
    if (w->oom) return;
    if (w->len + n > w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 4096;
        while (nc < w->len + n) nc *= 2;
        uint8_t *q = realloc(w->p, nc);
        if (!q) {
            w->oom = true;
            return;
        }
        w->p = q, w->cap = nc;
    }
    memcpy(w->p + w->len, p, n);
    w->len += n;
}
static void put32(wbuf *w, uint32_t v) { put(w, &v, 4); }
static void put64(wbuf *w, uint64_t v) { put(w, &v, 8); }

static int write_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t r = write(fd, b, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        b += r, n -= (size_t)r;
    }
    return 0;
}

int inf_file_write(const char *path, const inf_config *cfg, uint32_t vocab_kind, uint32_t vocab_n,
                   const uint8_t *const *tok, const uint8_t *len, const char *meta, const inf_tensor_in *t,
                   uint32_t n_tensors, char *err, size_t errlen) {
    size_t meta_len = meta ? strlen(meta) : 0;
    if (meta_len > INF_MAX_META) {
        snprintf(err, errlen, "%s: metadata of %zu bytes: at most %u", path, meta_len, INF_MAX_META);
        return -1;
    }
    if (n_tensors < 1 || n_tensors > INF_MAX_TENSORS) {
        snprintf(err, errlen, "%s: %u tensors: expected 1..%u", path, n_tensors, INF_MAX_TENSORS);
        return -1;
    }
    wbuf voc = {0}, tab = {0};
    put32(&voc, vocab_kind);
    put32(&voc, vocab_n);
    for (uint32_t i = 0; i < vocab_n; i++) {
        put(&voc, &len[i], 1);
        put(&voc, tok[i], len[i]);
    }
    uint64_t *offs = calloc(n_tensors, sizeof *offs);
    if (!offs) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(voc.p);
        return -1;
    }
    /* table size first (entries are 42 + name bytes), then offsets */
    uint64_t table_bytes = 0;
    for (uint32_t i = 0; i < n_tensors; i++) {
        size_t nl = strlen(t[i].name);
        if (nl < 1 || nl > INF_NAME_MAX) {
            snprintf(err, errlen, "%s: tensor '%s': name of %zu bytes: expected 1..%u", path, t[i].name, nl, INF_NAME_MAX);
            goto fail;
        }
        uint64_t want;
        char why[160];
        if (inf_tensor_bytes(t[i].dtype, t[i].ndim, t[i].shape, t[i].group, &want, why, sizeof why)) {
            snprintf(err, errlen, "%s: tensor '%s': %s", path, t[i].name, why);
            goto fail;
        }
        if (want != t[i].bytes) {
            snprintf(err, errlen, "%s: tensor '%s': %llu bytes given, its type and shape need %llu", path,
                     t[i].name, (unsigned long long)t[i].bytes, (unsigned long long)want);
            goto fail;
        }
        table_bytes += 42 + nl;
    }
    uint64_t meta_end = INF_HEADER_BYTES + INF_CONFIG_BYTES + voc.len + meta_len + table_bytes;
    uint64_t data_offset = (meta_end + INF_ALIGN - 1) / INF_ALIGN * INF_ALIGN, pos = data_offset;
    for (uint32_t i = 0; i < n_tensors; i++) {
        offs[i] = pos;
        pos = (pos + t[i].bytes + INF_ALIGN - 1) / INF_ALIGN * INF_ALIGN;
    }
    uint64_t last_end = n_tensors ? offs[n_tensors - 1] + t[n_tensors - 1].bytes : data_offset;
    uint64_t file_size = last_end + 8;
    for (uint32_t i = 0; i < n_tensors; i++) {
        uint16_t nl = (uint16_t)strlen(t[i].name);
        put(&tab, &nl, 2);
        put(&tab, t[i].name, nl);
        uint8_t b4[4] = {(uint8_t)t[i].dtype, (uint8_t)t[i].ndim, 0, 0};
        put(&tab, b4, 4);
        for (int d = 0; d < 4; d++) put32(&tab, d < t[i].ndim ? t[i].shape[d] : 1);
        put32(&tab, t[i].group);
        put64(&tab, offs[i]);
        put64(&tab, t[i].bytes);
    }
    wbuf hd = {0};
    put(&hd, INF_MAGIC, 8);
    put32(&hd, INF_VERSION);
    put32(&hd, 0);
    put64(&hd, file_size);
    put32(&hd, INF_CONFIG_BYTES);
    put32(&hd, (uint32_t)voc.len);
    put32(&hd, (uint32_t)meta_len);
    put32(&hd, n_tensors);
    put32(&hd, (uint32_t)tab.len);
    put32(&hd, 0);
    put64(&hd, data_offset);
    uint32_t cf[10] = {cfg->n_layer, cfg->n_head, cfg->n_embd, cfg->n_hidden, cfg->ctx, cfg->vocab, cfg->bias,
                       cfg->tied, 0, 0};
    memcpy(&cf[8], &cfg->ln_eps, 4);
    put(&hd, cf, sizeof cf);
    put(&hd, voc.p, voc.len);
    if (meta_len) put(&hd, meta, meta_len);
    put(&hd, tab.p, tab.len);
    free(voc.p);
    free(tab.p);
    voc.p = tab.p = NULL;
    if (hd.oom || voc.oom || tab.oom) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(hd.p);
        goto fail;
    }
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", path);
        free(hd.p);
        goto fail;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(hd.p);
        goto fail;
    }
    static const uint8_t zeros[INF_ALIGN] = {0};
    uint64_t h = ag_fnv1a(AG_FNV_INIT, hd.p, hd.len);
    int rc = write_all(fd, hd.p, hd.len);
    uint64_t at = hd.len;
    free(hd.p);
    for (uint32_t i = 0; rc == 0 && i <= n_tensors; i++) {
        uint64_t target = i < n_tensors ? offs[i] : last_end;
        while (rc == 0 && at < target) {
            size_t n = (size_t)(target - at < INF_ALIGN ? target - at : INF_ALIGN);
            h = ag_fnv1a(h, zeros, n);
            rc = write_all(fd, zeros, n);
            at += n;
        }
        if (i == n_tensors || rc) break;
        h = ag_fnv1a(h, t[i].data, t[i].bytes);
        rc = write_all(fd, t[i].data, t[i].bytes);
        at += t[i].bytes;
    }
    if (rc == 0) rc = write_all(fd, &h, 8);
    if (rc != 0) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto fail;
    }
    if (fsync(fd) != 0) {
        snprintf(err, errlen, "%s: fsync failed: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto fail;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: rename from %s failed: %s", path, tmp, strerror(errno));
        unlink(tmp);
        goto fail;
    }
    char dirbuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", path);
    int dfd = open(dirname(dirbuf), O_RDONLY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(offs);
    return 0;
fail:
    free(voc.p);
    free(tab.p);
    free(offs);
    return -1;
}
