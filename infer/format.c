/* format.c - the model file: the validating reader and the atomic writer
 * (layout in format.h and docs/format.md; the storage types' rows are in
 * types.c). */
#include "format.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/atomic.h"
#include "autograd/hash.h"
#include "types.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pare's model file reader assumes a little-endian host"
#endif

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

static bool add_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_add_overflow(a, b, out); }

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
    char what[512];
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

/* The layer norms' epsilon: finite and > 0. */
static int get_eps(cursor *c, float *eps) {
    size_t at = c->pos;
    uint32_t bits;
    if (get_u32(c, "config ln_eps", &bits)) return -1;
    memcpy(eps, &bits, 4);
    if (!isfinite(*eps) || !(*eps > 0.0f)) return fail_at(c, at, "config ln_eps", "%g: expected a finite value > 0", (double)*eps);
    return 0;
}

/* Version 1: the uniform config (40 bytes): n_layer, n_head, n_embd,
 * n_hidden, ctx, vocab, bias, tied, ln_eps, reserved; head_dim = n_embd /
 * n_head, every site dense. */
static int config_v1(cursor *c, inf_file *f) {
    size_t base = c->pos;
    uint32_t n_layer, n_head, n_embd, n_hidden, ctx, vocab, bias, tied, reserved;
    if (get_u32_in(c, "config n_layer", 1, INF_MAX_LAYERS, &n_layer) ||
        get_u32_in(c, "config n_head", 1, INF_MAX_WIDTH, &n_head) ||
        get_u32_in(c, "config n_embd", 1, INF_MAX_WIDTH, &n_embd) ||
        get_u32_in(c, "config n_hidden", 1, INF_MAX_HIDDEN, &n_hidden) ||
        get_u32_in(c, "config ctx", 1, INF_MAX_CTX, &ctx) || get_u32_in(c, "config vocab", 2, INF_MAX_VOCAB, &vocab) ||
        get_u32_in(c, "config bias", 0, 1, &bias) || get_u32_in(c, "config tied", 0, 1, &tied) ||
        get_eps(c, &f->ln_eps))
        return -1;
    if (n_embd % n_head != 0)
        return fail_at(c, base + 4, "config n_head", "%u heads do not divide the width %u", n_head, n_embd);
    if (get_u32_in(c, "config reserved", 0, 0, &reserved)) return -1;
    if (pm_arch_uniform(&f->arch, (int)n_layer, (int)n_head, (int)n_embd, (int)n_hidden, (int)ctx, (int)vocab,
                        bias != 0, tied != 0) != 0)
        return fail_at(c, base, "config", "out of memory for %u layers", n_layer);
    return 0;
}

/* Reads one per-layer or head rank at the cursor: 0 (dense) .. min(out, in). */
static int get_rank(cursor *c, int layer, pm_role r, uint64_t out, uint64_t in, int *rank) {
    size_t at = c->pos;
    uint32_t v;
    if (get_u32(c, "config rank", &v)) return -1;
    uint64_t lim = out < in ? out : in;
    if (v > lim) {
        if (layer >= 0)
            return fail_at(c, at, "config rank", "layer %d %s: rank %u: expected 0 (dense) .. %llu = min(out %llu, in %llu)",
                           layer, pm_role_name(r), v, (unsigned long long)lim, (unsigned long long)out,
                           (unsigned long long)in);
        return fail_at(c, at, "config rank", "%s: rank %u: expected 0 (dense) .. %llu = min(out %llu, in %llu)",
                       pm_role_name(r), v, (unsigned long long)lim, (unsigned long long)out, (unsigned long long)in);
    }
    *rank = (int)v;
    return 0;
}

/* Version 2 (docs/format.md): n_layer, n_embd, head_dim, ctx, vocab, bias,
 * tied, ln_eps, head_rank, reserved, then per layer n_head, n_hidden and the
 * ranks of qkv, proj, fc, mproj. config_bytes must be exactly what n_layer
 * implies: the per-layer table is checked against the section's size before
 * it is read or anything is allocated for it. */
static int config_v2(cursor *c, inf_file *f, uint32_t config_bytes) {
    size_t base = c->pos;
    uint32_t n_layer, n_embd, head_dim, ctx, vocab, bias, tied, head_rank, reserved;
    if (get_u32_in(c, "config n_layer", 1, INF_MAX_LAYERS, &n_layer)) return -1;
    uint64_t want = INF_CONFIG_FIXED + (uint64_t)INF_CONFIG_LAYER * n_layer;
    if (config_bytes != want)
        return fail_at(c, 24, "config size", "%u bytes: %u layers need %llu (%u + %u per layer)", config_bytes,
                       n_layer, (unsigned long long)want, INF_CONFIG_FIXED, INF_CONFIG_LAYER);
    if (get_u32_in(c, "config n_embd", 1, INF_MAX_WIDTH, &n_embd) ||
        get_u32_in(c, "config head_dim", 1, INF_MAX_WIDTH, &head_dim) ||
        get_u32_in(c, "config ctx", 1, INF_MAX_CTX, &ctx) || get_u32_in(c, "config vocab", 2, INF_MAX_VOCAB, &vocab) ||
        get_u32_in(c, "config bias", 0, 1, &bias) || get_u32_in(c, "config tied", 0, 1, &tied) ||
        get_eps(c, &f->ln_eps))
        return -1;
    size_t head_rank_at = c->pos;
    if (get_u32(c, "config head rank", &head_rank) || get_u32_in(c, "config reserved", 0, 0, &reserved)) return -1;
    pm_arch *a = &f->arch;
    a->n_layer = (int)n_layer, a->n_embd = (int)n_embd, a->head_dim = (int)head_dim, a->ctx = (int)ctx;
    a->vocab = (int)vocab, a->bias = bias != 0, a->tied = tied != 0;
    if (pm_arch_alloc(a) != 0) return fail_at(c, base, "config", "out of memory for %u layers", n_layer);
    uint64_t C = n_embd;
    for (uint32_t l = 0; l < n_layer; l++) {
        size_t at = c->pos;
        uint32_t H, M;
        if (get_u32(c, "config layer heads", &H)) return -1;
        if (H < 1 || H > INF_MAX_WIDTH)
            return fail_at(c, at, "config layer heads", "layer %u: %u heads: expected 1..%u", l, H, INF_MAX_WIDTH);
        uint64_t A = (uint64_t)H * head_dim;
        if (A > INF_MAX_HIDDEN)
            return fail_at(c, at, "config layer heads", "layer %u: %u heads of width %u make %llu: expected an "
                           "attention width of at most %u", l, H, head_dim, (unsigned long long)A, INF_MAX_HIDDEN);
        at = c->pos;
        if (get_u32(c, "config layer MLP width", &M)) return -1;
        if (M < 1 || M > INF_MAX_HIDDEN)
            return fail_at(c, at, "config layer MLP width", "layer %u: %u units: expected 1..%u", l, M, INF_MAX_HIDDEN);
        a->n_head[l] = (int)H, a->n_hidden[l] = (int)M;
        int *rk = &a->rank[l * PM_LINEARS_PER_LAYER];
        if (get_rank(c, (int)l, PM_QKV, 3 * A, C, &rk[0]) || get_rank(c, (int)l, PM_PROJ, C, A, &rk[1]) ||
            get_rank(c, (int)l, PM_FC, M, C, &rk[2]) || get_rank(c, (int)l, PM_MPROJ, C, M, &rk[3]))
            return -1;
    }
    size_t end = c->pos;
    c->pos = head_rank_at; /* the head's rank, now that its checks have their context */
    if (tied && head_rank != 0)
        return fail_at(c, head_rank_at, "config head rank", "%u: a tied head is wte itself and cannot be factorized",
                       head_rank);
    if (get_rank(c, -1, PM_HEAD, vocab, C, &a->rank[n_layer * PM_LINEARS_PER_LAYER])) return -1;
    c->pos = end;
    char why[256];
    if (pm_arch_check(a, why, sizeof why) != 0) return fail_at(c, base, "config", "%s", why);
    return 0;
}

/* A hint for a shape message: where the config's shape of tensor x comes from. */
static void shape_hint(const inf_file *f, const pm_tensor *x, char *out, size_t n) {
    const pm_site *s = &f->table.site[x->site];
    const pm_arch *a = &f->arch;
    out[0] = '\0';
    if (x->part == PM_U || x->part == PM_V)
        snprintf(out, n, " (the factors U [%d, %d] and V [%d, %d] of %s at rank %d)", s->out, s->rank, s->rank, s->in,
                 s->name, s->rank);
    else if (s->role == PM_QKV)
        snprintf(out, n, " (3 x %d heads x head width %d)", a->n_head[s->layer], a->head_dim);
    else if (s->role == PM_PROJ && x->part == PM_W)
        snprintf(out, n, " (input: %d heads x head width %d)", a->n_head[s->layer], a->head_dim);
    else if (s->role == PM_FC || (s->role == PM_MPROJ && x->part == PM_W))
        snprintf(out, n, " (layer %d's MLP width %d)", s->layer, a->n_hidden[s->layer]);
}

/* The model check: exactly the tensors of pm_table_build(arch), each with
 * its shape, 1-D ones f32, nothing else; fills f->table and f->by_table. */
static int check_model(cursor *c, inf_file *f, inf_tensor **by_name, const size_t *entry_at, bool *seen,
                       size_t table_start) {
    char why[256];
    if (pm_table_build(&f->table, &f->arch, why, sizeof why) != 0)
        return fail_at(c, INF_HEADER_BYTES, "config", "%s", why);
    const pm_table *tb = &f->table;
    f->by_table = calloc((size_t)tb->n_tensor, sizeof *f->by_table);
    if (!f->by_table) return fail_at(c, table_start, "tensor table", "out of memory");
    uint32_t matched = 0;
    for (int i = 0; i < tb->n_tensor; i++) {
        const pm_tensor *want = &tb->tensor[i];
        const inf_tensor *t = find_sorted(by_name, f->n_tensors, want->name);
        if (!t) return fail_at(c, table_start, "tensor table", "missing tensor '%s' (the config implies it)", want->name);
        size_t at = entry_at[t - f->t];
        seen[t - f->t] = true;
        f->by_table[i] = t;
        if (t->ndim != want->ndim || t->shape[0] != (uint32_t)want->shape[0] ||
            (want->ndim == 2 && t->shape[1] != (uint32_t)want->shape[1])) {
            char hint[160];
            shape_hint(f, want, hint, sizeof hint);
            return fail_at(c, at, "shape", "tensor '%s' is %dD [%u, %u]: the config implies %dD [%d, %d]%s", t->name,
                           t->ndim, t->shape[0], t->ndim > 1 ? t->shape[1] : 1, want->ndim, want->shape[0],
                           want->shape[1], hint);
        }
        if (want->ndim == 1 && t->dtype != INF_F32)
            return fail_at(c, at, "storage type", "tensor '%s' is %s: vectors are stored as f32", t->name,
                           inf_type_name(t->dtype));
        matched++;
    }
    if (matched != f->n_tensors)
        for (uint32_t i = 0; i < f->n_tensors; i++)
            if (!seen[i]) return fail_at(c, entry_at[i], "name", "unexpected tensor '%s' for this config", f->t[i].name);
    /* an activation record belongs to the weight of a linear product (a
     * dense site's .w, a factor .u or .v, or wte as a tied head's weight)
     * stored in an integer type, whose kernels take the static codes */
    for (int i = 0; i < tb->n_tensor; i++) {
        const inf_tensor *t = f->by_table[i];
        if (!t->act_bits) continue;
        const pm_tensor *x = &tb->tensor[i];
        const pm_site *s = &tb->site[x->site];
        bool product = (s->linear && x->part != PM_B) || (s->role == PM_WTE && f->arch.tied);
        if (!product)
            return fail_at(c, t->act_at, "activation tensor", "tensor '%s' is not the weight of a linear product: "
                           "only those have activation records", t->name);
        if (!inf_type(t->dtype)->act)
            return fail_at(c, t->act_at, "activation tensor", "tensor '%s' is %s: static activations need an "
                           "integer storage type (q8, q4, q4a)", t->name, inf_type_name(t->dtype));
    }
    return 0;
}

/* The contents the kernels rely on, by each tensor's storage type. */
static int check_contents(cursor *c, const inf_file *f) {
    for (uint32_t i = 0; i < f->n_tensors; i++) {
        const inf_tensor *t = &f->t[i];
        const inf_type_traits *tr = inf_type(t->dtype);
        uint64_t at = 0;
        const char *field = "contents";
        char what[256];
        if (tr->check && tr->check(t, &at, &field, what, sizeof what) != 0)
            return fail_at(c, (size_t)(t->offset + at), field, "%s", what);
    }
    return 0;
}

void inf_file_close(inf_file *f) {
    if (!f) return;
    free(f->t);
    free(f->vocab.tok);
    free(f->vocab.len);
    free(f->by_table);
    pm_table_free(&f->table);
    pm_arch_free(&f->arch);
    free(f->owned);
    memset(f, 0, sizeof *f);
}

int inf_file_parse(inf_file *f, const uint8_t *buf, size_t len, const char *name, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    cursor cc = {buf, len, 0, name ? name : "model file", err, errlen}, *c = &cc;
    inf_tensor **by = NULL;
    size_t *entry_at = NULL;
    bool *seen = NULL;
    if (len < INF_HEADER_BYTES + INF_CONFIG_V1_BYTES + 8)
        return fail_at(c, 0, "file size", "%zu bytes: too short for a model file (at least %u)", len,
                       INF_HEADER_BYTES + INF_CONFIG_V1_BYTES + 8);
    if (memcmp(buf, INF_MAGIC, 8) != 0) return fail_at(c, 0, "magic", "not a pare model file (expected \"%s\")", INF_MAGIC);
    c->pos = 8;
    uint32_t flags, config_bytes, vocab_bytes, meta_bytes, table_bytes, act_bytes;
    uint64_t file_size;
    size_t at = c->pos;
    if (get_u32(c, "version", &f->version)) goto fail;
    if (f->version < INF_VERSION_MIN || f->version > INF_VERSION) {
        fail_at(c, at, "version", "%u: this reader supports versions %u to %u", f->version, INF_VERSION_MIN, INF_VERSION);
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
    if (f->version == 1) {
        if (get_u32_in(c, "config size", INF_CONFIG_V1_BYTES, INF_CONFIG_V1_BYTES, &config_bytes)) goto fail;
    } else if (get_u32_in(c, "config size", INF_CONFIG_FIXED + INF_CONFIG_LAYER,
                          INF_CONFIG_FIXED + INF_CONFIG_LAYER * INF_MAX_LAYERS, &config_bytes)) {
        goto fail;
    }
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
    /* version 3: the activation records' size (16 bytes per record, at most
     * one per tensor); versions 1 and 2: reserved, 0 */
    at = c->pos;
    if (f->version < 3) {
        if (get_u32_in(c, "header reserved", 0, 0, &act_bytes)) goto fail;
    } else {
        if (get_u32(c, "activation records size", &act_bytes)) goto fail;
        if (act_bytes % INF_ACT_RECORD != 0 || act_bytes / INF_ACT_RECORD > f->n_tensors) {
            fail_at(c, at, "activation records size", "%u bytes: expected a multiple of %u, at most %u records "
                    "(one per tensor)", act_bytes, INF_ACT_RECORD, f->n_tensors);
            goto fail;
        }
    }
    at = c->pos;
    if (get_u64(c, "data offset", &f->data_offset)) goto fail;
    uint64_t meta_end = (uint64_t)INF_HEADER_BYTES + config_bytes + vocab_bytes + meta_bytes + table_bytes + act_bytes;
    if (f->data_offset % INF_ALIGN != 0 || f->data_offset < meta_end || f->data_offset > len - 8) {
        fail_at(c, at, "data offset", "%llu: expected a multiple of %u in [%llu, %zu]",
                (unsigned long long)f->data_offset, INF_ALIGN, (unsigned long long)meta_end, len - 8);
        goto fail;
    }

    /* config: the whole section is in the file (data_offset <= len - 8 says
     * so; checked again here) and reads stop at its end */
    if (need(c, config_bytes, "config")) goto fail;
    {
        cursor gc = *c;
        gc.len = c->pos + config_bytes;
        if (f->version == 1 ? config_v1(&gc, f) : config_v2(&gc, f, config_bytes)) goto fail;
        c->pos += config_bytes;
    }

    /* vocabulary */
    size_t voc_start = c->pos;
    if (need(c, vocab_bytes, "vocabulary")) goto fail;
    cursor vc = *c;
    vc.len = c->pos + vocab_bytes; /* reads stop at the section's end */
    if (get_u32_in(&vc, "vocabulary kind", 0, 1, &f->vocab.kind)) goto fail;
    at = vc.pos;
    if (get_u32_in(&vc, "vocabulary count", 1, INF_MAX_VOCAB, &f->vocab.n)) goto fail;
    if (f->vocab.n != (uint32_t)f->arch.vocab) {
        fail_at(c, at, "vocabulary count", "%u entries: the config says vocab %d", f->vocab.n, f->arch.vocab);
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
        uint64_t want_max = want;
        if (inf_type(t->dtype)->sparse &&
            inf_tensor_bytes_max(t->dtype, t->ndim, t->shape, t->group, &want_max, why, sizeof why)) {
            fail_at(c, at - 16, "shape", "tensor '%s': %s", t->name, why);
            goto fail;
        }
        if (want_max == want && t->bytes != want) {
            fail_at(c, bytes_at, "byte count", "tensor '%s': %llu: its type and shape need %llu", t->name,
                    (unsigned long long)t->bytes, (unsigned long long)want);
            goto fail;
        }
        if (t->bytes < want || t->bytes > want_max) { /* a sparse type: its counts give the exact size */
            fail_at(c, bytes_at, "byte count", "tensor '%s': %llu: its type and shape need %llu to %llu", t->name,
                    (unsigned long long)t->bytes, (unsigned long long)want, (unsigned long long)want_max);
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
    /* activation records (version 3): tensor index, bits, scale, zero point;
     * what they name is checked against the model below */
    size_t act_start = table_start + table_bytes;
    {
        cursor ac = *c;
        ac.pos = act_start;
        ac.len = act_start + act_bytes;
        uint32_t prev = 0;
        for (uint32_t r = 0; r < act_bytes / INF_ACT_RECORD; r++) {
            uint32_t ti, bits, sbits, zero;
            at = ac.pos;
            if (get_u32(&ac, "activation tensor", &ti)) goto fail;
            if (ti >= f->n_tensors || (r > 0 && ti <= prev)) {
                fail_at(c, at, "activation tensor", "record %u: tensor %u: expected a tensor index in [%u, %u), "
                        "records in increasing order", r, ti, r > 0 ? prev + 1 : 0, f->n_tensors);
                goto fail;
            }
            prev = ti;
            if (get_u32_in(&ac, "activation bits", INF_ACT_BITS_MIN, INF_ACT_BITS_MAX, &bits)) goto fail;
            at = ac.pos;
            if (get_u32(&ac, "activation scale", &sbits)) goto fail;
            float sa;
            memcpy(&sa, &sbits, 4);
            if (!isfinite(sa) || !(sa > 0.0f)) {
                fail_at(c, at, "activation scale", "tensor '%s': %g: expected a finite scale > 0", f->t[ti].name,
                        (double)sa);
                goto fail;
            }
            at = ac.pos;
            if (get_u32(&ac, "activation zero point", &zero)) goto fail;
            if (zero != 0) {
                fail_at(c, at, "activation zero point", "tensor '%s': %u: expected 0 (activations are symmetric)",
                        f->t[ti].name, zero);
                goto fail;
            }
            f->t[ti].act_bits = (int)bits;
            f->t[ti].act_scale = sa;
            f->t[ti].act_at = at - 12;
        }
    }
    for (size_t p = act_start + act_bytes; p < f->data_offset; p++)
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
    int fd = open(path, O_RDONLY | O_NONBLOCK); /* a FIFO must not block the open */
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
    if (len < INF_HEADER_BYTES + INF_CONFIG_V1_BYTES + 8) {
        snprintf(err, errlen, "%s: byte 0: file size: %zu bytes: too short for a model file (at least %u)", path, len,
                 INF_HEADER_BYTES + INF_CONFIG_V1_BYTES + 8);
        close(fd);
        return -1;
    }
    /* the header first: the magic and the recorded size against the file's,
     * before the rest of the file is read into memory */
    uint8_t head[24];
    ssize_t hr = pread(fd, head, sizeof head, 0);
    uint64_t recorded;
    memcpy(&recorded, head + 16, 8);
    if (hr != (ssize_t)sizeof head || memcmp(head, INF_MAGIC, 8) != 0 || recorded != (uint64_t)len) {
        if (hr == (ssize_t)sizeof head && memcmp(head, INF_MAGIC, 8) != 0)
            snprintf(err, errlen, "%s: byte 0: magic: not a pare model file (expected \"%s\")", path, INF_MAGIC);
        else
            snprintf(err, errlen, "%s: byte 16: file size: header says %llu bytes, the file has %zu (truncated or "
                     "extended)", path, (unsigned long long)recorded, len);
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
    if (w->oom || n == 0) return;
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

/* The reader's caps on an architecture (pm_arch_check has checked the rest). */
static int check_caps(const pm_arch *a, char *err, size_t errlen) {
    if ((unsigned)a->n_layer > INF_MAX_LAYERS || (unsigned)a->n_embd > INF_MAX_WIDTH ||
        (unsigned)a->head_dim > INF_MAX_WIDTH || (unsigned)a->ctx > INF_MAX_CTX) {
        snprintf(err, errlen, "%d layers, width %d, head width %d, context %d: a model file holds at most %u, %u, %u "
                 "and %u", a->n_layer, a->n_embd, a->head_dim, a->ctx, INF_MAX_LAYERS, INF_MAX_WIDTH, INF_MAX_WIDTH,
                 INF_MAX_CTX);
        return -1;
    }
    for (int l = 0; l < a->n_layer; l++)
        if ((unsigned)a->n_head[l] > INF_MAX_WIDTH || (uint64_t)a->n_head[l] * (uint64_t)a->head_dim > INF_MAX_HIDDEN ||
            (unsigned)a->n_hidden[l] > INF_MAX_HIDDEN) {
            snprintf(err, errlen, "layer %d: %d heads of width %d, MLP width %d: a model file holds at most %u heads, "
                     "an attention and an MLP width of %u", l, a->n_head[l], a->head_dim, a->n_hidden[l],
                     INF_MAX_WIDTH, INF_MAX_HIDDEN);
            return -1;
        }
    return 0;
}

int inf_file_write(const char *path, const pm_arch *a, float ln_eps, uint32_t vocab_kind, uint32_t vocab_n,
                   const uint8_t *const *tok, const uint8_t *len, const char *meta, const inf_tensor_in *t,
                   uint32_t n_tensors, char *err, size_t errlen) {
    char why[512];
    if (pm_arch_check(a, why, sizeof why) != 0 || check_caps(a, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        return -1;
    }
    if (!isfinite(ln_eps) || !(ln_eps > 0.0f)) {
        snprintf(err, errlen, "%s: ln_eps %g: expected a finite value > 0", path, (double)ln_eps);
        return -1;
    }
    if (vocab_n != (uint32_t)a->vocab) {
        snprintf(err, errlen, "%s: %u vocabulary entries for a model of vocab %d", path, vocab_n, a->vocab);
        return -1;
    }
    for (uint32_t i = 0; i < vocab_n; i++)
        if (len[i] < 1 || len[i] > INF_MAX_TOKEN) {
            snprintf(err, errlen, "%s: vocabulary entry %u has %u bytes: expected 1..%u", path, i, len[i], INF_MAX_TOKEN);
            return -1;
        }
    size_t meta_len = meta ? strlen(meta) : 0;
    if (meta_len > INF_MAX_META) {
        snprintf(err, errlen, "%s: metadata of %zu bytes: at most %u", path, meta_len, INF_MAX_META);
        return -1;
    }
    if (n_tensors < 1 || n_tensors > INF_MAX_TENSORS) {
        snprintf(err, errlen, "%s: %u tensors: expected 1..%u", path, n_tensors, INF_MAX_TENSORS);
        return -1;
    }
    uint64_t *offs = calloc(n_tensors, sizeof *offs);
    wbuf voc = {0}, tab = {0}, hd = {0}, act = {0};
    int rc = -1;
    if (!offs) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    put32(&voc, vocab_kind);
    put32(&voc, vocab_n);
    for (uint32_t i = 0; i < vocab_n; i++) {
        put(&voc, &len[i], 1);
        put(&voc, tok[i], len[i]);
    }
    /* table size first (entries are 42 + name bytes), then offsets */
    uint64_t table_bytes = 0;
    for (uint32_t i = 0; i < n_tensors; i++) {
        size_t nl = strlen(t[i].name);
        if (nl < 1 || nl > INF_NAME_MAX) {
            snprintf(err, errlen, "%s: tensor '%s': name of %zu bytes: expected 1..%u", path, t[i].name, nl, INF_NAME_MAX);
            goto done;
        }
        uint64_t want;
        if (inf_tensor_bytes(t[i].dtype, t[i].ndim, t[i].shape, t[i].group, &want, why, sizeof why)) {
            snprintf(err, errlen, "%s: tensor '%s': %s", path, t[i].name, why);
            goto done;
        }
        uint64_t want_max = want;
        if (inf_tensor_bytes_max(t[i].dtype, t[i].ndim, t[i].shape, t[i].group, &want_max, why, sizeof why)) {
            snprintf(err, errlen, "%s: tensor '%s': %s", path, t[i].name, why);
            goto done;
        }
        if (t[i].bytes < want || t[i].bytes > want_max) {
            if (want == want_max)
                snprintf(err, errlen, "%s: tensor '%s': %llu bytes given, its type and shape need %llu", path,
                         t[i].name, (unsigned long long)t[i].bytes, (unsigned long long)want);
            else
                snprintf(err, errlen, "%s: tensor '%s': %llu bytes given, its type and shape need %llu to %llu",
                         path, t[i].name, (unsigned long long)t[i].bytes, (unsigned long long)want,
                         (unsigned long long)want_max);
            goto done;
        }
        table_bytes += 42 + nl;
    }
    /* activation records: version 3 when there are any, else version 2
     * (byte for byte what pare wrote before records existed) */
    uint32_t n_act = 0;
    for (uint32_t i = 0; i < n_tensors; i++) {
        if (!t[i].act_bits) continue;
        if (t[i].act_bits < (int)INF_ACT_BITS_MIN || t[i].act_bits > (int)INF_ACT_BITS_MAX ||
            !isfinite(t[i].act_scale) || !(t[i].act_scale > 0.0f)) {
            snprintf(err, errlen, "%s: tensor '%s': activations of %d bits with scale %g: expected %u..%u bits and a "
                     "finite scale > 0", path, t[i].name, t[i].act_bits, (double)t[i].act_scale, INF_ACT_BITS_MIN,
                     INF_ACT_BITS_MAX);
            goto done;
        }
        n_act++;
    }
    uint32_t version = n_act ? 3u : 2u, act_bytes = n_act * INF_ACT_RECORD;
    uint32_t config_bytes = INF_CONFIG_FIXED + INF_CONFIG_LAYER * (uint32_t)a->n_layer;
    uint64_t meta_end = INF_HEADER_BYTES + config_bytes + voc.len + meta_len + table_bytes + act_bytes;
    uint64_t data_offset = (meta_end + INF_ALIGN - 1) / INF_ALIGN * INF_ALIGN, pos = data_offset;
    for (uint32_t i = 0; i < n_tensors; i++) {
        offs[i] = pos;
        pos = (pos + t[i].bytes + INF_ALIGN - 1) / INF_ALIGN * INF_ALIGN;
    }
    uint64_t last_end = offs[n_tensors - 1] + t[n_tensors - 1].bytes;
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
    for (uint32_t i = 0; i < n_tensors; i++) {
        if (!t[i].act_bits) continue;
        uint32_t sb;
        memcpy(&sb, &t[i].act_scale, 4);
        uint32_t rec[4] = {i, (uint32_t)t[i].act_bits, sb, 0};
        put(&act, rec, sizeof rec);
    }
    /* header */
    put(&hd, INF_MAGIC, 8);
    put32(&hd, version);
    put32(&hd, 0);
    put64(&hd, file_size);
    put32(&hd, config_bytes);
    put32(&hd, (uint32_t)voc.len);
    put32(&hd, (uint32_t)meta_len);
    put32(&hd, n_tensors);
    put32(&hd, (uint32_t)tab.len);
    put32(&hd, act_bytes); /* version 2: reserved, 0 */
    put64(&hd, data_offset);
    /* config, version 2 */
    uint32_t eps_bits;
    memcpy(&eps_bits, &ln_eps, 4);
    uint32_t cf[10] = {(uint32_t)a->n_layer, (uint32_t)a->n_embd, (uint32_t)a->head_dim, (uint32_t)a->ctx,
                       (uint32_t)a->vocab, a->bias ? 1u : 0u, a->tied ? 1u : 0u, eps_bits,
                       (uint32_t)a->rank[pm_rank_slot(a, -1, PM_HEAD)], 0};
    put(&hd, cf, sizeof cf);
    for (int l = 0; l < a->n_layer; l++) {
        const int *rk = &a->rank[l * PM_LINEARS_PER_LAYER];
        uint32_t lay[6] = {(uint32_t)a->n_head[l], (uint32_t)a->n_hidden[l], (uint32_t)rk[0], (uint32_t)rk[1],
                           (uint32_t)rk[2], (uint32_t)rk[3]};
        put(&hd, lay, sizeof lay);
    }
    put(&hd, voc.p, voc.len);
    put(&hd, meta, meta_len);
    put(&hd, tab.p, tab.len);
    put(&hd, act.p, act.len);
    if (hd.oom || voc.oom || tab.oom || act.oom) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    /* the bytes, through the one atomic writer: header and tables, each
     * tensor at its offset with zero padding between, the checksum */
    ag_atomic af;
    if (ag_atomic_open(&af, path, err, errlen) != 0) goto done;
    static const uint8_t zeros[INF_ALIGN] = {0};
    uint64_t h = ag_fnv1a(AG_FNV_INIT, hd.p, hd.len), at = hd.len;
    int wr = ag_atomic_write(&af, hd.p, hd.len, err, errlen);
    for (uint32_t i = 0; wr == 0 && i <= n_tensors; i++) {
        uint64_t target = i < n_tensors ? offs[i] : last_end;
        while (wr == 0 && at < target) {
            size_t n = (size_t)(target - at < INF_ALIGN ? target - at : INF_ALIGN);
            h = ag_fnv1a(h, zeros, n);
            wr = ag_atomic_write(&af, zeros, n, err, errlen);
            at += n;
        }
        if (i == n_tensors || wr) break;
        h = ag_fnv1a(h, t[i].data, t[i].bytes);
        wr = ag_atomic_write(&af, t[i].data, t[i].bytes, err, errlen);
        at += t[i].bytes;
    }
    if (wr == 0) wr = ag_atomic_write(&af, &h, 8, err, errlen);
    if (wr != 0) goto done; /* the temporary file is removed, path unchanged */
    rc = ag_atomic_commit(&af, err, errlen) == AG_ATOMIC_OK ? 0 : -1;
done:
    free(voc.p);
    free(act.p);
    free(tab.p);
    free(hd.p);
    free(offs);
    return rc;
}
