/* model_fixture.h - small valid model files built without train/, for the
 * format tests and the fuzzer's seed corpus (header-only, static): version 2
 * files of any architecture (per-layer heads and MLP widths, factorized
 * sites; their tensors from model/arch.h's table), and version 1 files laid
 * out by hand, byte by byte. */
#ifndef PARE_TESTS_MODEL_FIXTURE_H
#define PARE_TESTS_MODEL_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/hash.h"
#include "autograd/rng.h"
#include "infer/format.h"
#include "infer/pack.h"
#include "model/arch.h"

#define FX_MAX_LAYERS 8

typedef struct fx_spec {
    int dtype, group;      /* storage type of the linear weights (those whose input width it can store) */
    int bias, tied;
    int n_layer, C, H, ctx, V;
    uint64_t seed;
    int D;                             /* head width; 0 = C / H */
    int heads[FX_MAX_LAYERS];          /* per layer; 0 = H */
    int hidden[FX_MAX_LAYERS];         /* per layer; 0 = 4 C */
    int rank[FX_MAX_LAYERS * PM_LINEARS_PER_LAYER + 1]; /* pm_arch.rank order (qkv, proj, fc, mproj per layer, then the head) */
    int act_bits;                      /* > 0: every quantized product weight gets an activation record (version 3) */
    float zero_frac;                   /* > 0: about this fraction of the quantized matrices' values is 0 (sparse) */
    int nm24;                          /* 1: the quantized matrices are 2:4 (always so for q8nm) */
} fx_spec;

static inline fx_spec fx_default(int dtype) {
    fx_spec s;
    memset(&s, 0, sizeof s);
    s.dtype = dtype, s.group = 32, s.bias = 1, s.tied = 0;
    s.n_layer = 1, s.C = 32, s.H = 2, s.ctx = 4, s.V = 8, s.seed = 1;
    return s;
}

/* The architecture of spec s (owned arrays; pm_arch_free). 0 or -1. */
static inline int fx_arch(const fx_spec *s, pm_arch *a) {
    memset(a, 0, sizeof *a);
    a->n_layer = s->n_layer, a->n_embd = s->C, a->head_dim = s->D ? s->D : s->C / s->H, a->ctx = s->ctx;
    a->vocab = s->V, a->bias = s->bias != 0, a->tied = s->tied != 0;
    if (s->n_layer > FX_MAX_LAYERS || pm_arch_alloc(a) != 0) return -1;
    for (int l = 0; l < s->n_layer; l++) {
        a->n_head[l] = s->heads[l] ? s->heads[l] : s->H;
        a->n_hidden[l] = s->hidden[l] ? s->hidden[l] : 4 * s->C;
        for (int j = 0; j < PM_LINEARS_PER_LAYER; j++) a->rank[l * PM_LINEARS_PER_LAYER + j] = s->rank[l * PM_LINEARS_PER_LAYER + j];
    }
    a->rank[s->n_layer * PM_LINEARS_PER_LAYER] = s->rank[s->n_layer * PM_LINEARS_PER_LAYER];
    return 0;
}

/* Writes the model of spec s to path (every tensor of its table, random
 * values, vectors near 1; the linear sites' matrices in s->dtype when their
 * input width is a multiple of the group, else f32). Returns 0 or -1 with err. */
static inline int fx_write_model(const char *path, const fx_spec *s, char *err, size_t errlen) {
    pm_arch a;
    pm_table tb;
    memset(&tb, 0, sizeof tb);
    if (fx_arch(s, &a) != 0) {
        snprintf(err, errlen, "fixture: bad spec");
        return -1;
    }
    int rc = -1, n = 0;
    inf_tensor_in *t = NULL;
    void **bufs = NULL;
    if (pm_table_build(&tb, &a, err, errlen) != 0) goto out;
    t = calloc((size_t)tb.n_tensor, sizeof *t);
    bufs = calloc((size_t)tb.n_tensor, sizeof *bufs);
    if (!t || !bufs) goto out;
    ag_rng r;
    ag_rng_seed(&r, s->seed);
    for (; n < tb.n_tensor; n++) {
        const pm_tensor *x = &tb.tensor[n];
        const pm_site *st = &tb.site[x->site];
        int rows = x->shape[0], cols = x->ndim == 2 ? x->shape[1] : 0;
        size_t cnt = (size_t)rows * (cols ? cols : 1);
        float *w = malloc(cnt * sizeof(float));
        if (!w) goto out;
        for (size_t i = 0; i < cnt; i++) w[i] = 0.3f * ag_rng_normal(&r) + (cols ? 0.0f : 1.0f);
        t[n].name = x->name;
        t[n].ndim = x->ndim;
        t[n].shape[0] = (uint32_t)rows, t[n].shape[1] = cols ? (uint32_t)cols : 1;
        t[n].shape[2] = t[n].shape[3] = 1;
        int G = s->group ? s->group : cols;
        bool quant = s->dtype != INF_F32 && st->linear && cols && cols % 32 == 0 && G % 32 == 0 && cols % G == 0;
        if (quant && s->zero_frac > 0.0f)
            for (size_t i = 0; i < cnt; i++)
                if (ag_rng_uniform(&r) < s->zero_frac) w[i] = 0.0f;
        if (quant && (s->dtype == INF_Q8NM || s->nm24)) /* 2:4: the first two of every 4 inputs kept */
            for (size_t i = 0; i < cnt; i++)
                if (i % 4 >= 2) w[i] = 0.0f;
        if (quant) {
            uint8_t *p;
            uint64_t by;
            uint32_t g;
            if (inf_pack_matrix(s->dtype, w, rows, cols, s->group, &p, &by, &g, err, errlen)) {
                free(w);
                goto out;
            }
            free(w);
            t[n].dtype = s->dtype, t[n].group = g, t[n].data = p, t[n].bytes = by, bufs[n] = p;
            if (s->act_bits) t[n].act_bits = s->act_bits, t[n].act_scale = 0.02f + 0.001f * (float)n;
        } else {
            t[n].dtype = INF_F32, t[n].data = w, t[n].bytes = cnt * sizeof(float), bufs[n] = w;
        }
    }
    {
        uint8_t sym[256], len[256];
        const uint8_t *tok[256];
        for (int i = 0; i < s->V; i++) sym[i] = (uint8_t)(s->V == 256 ? i : 'a' + i), len[i] = 1, tok[i] = &sym[i];
        rc = inf_file_write(path, &a, 1e-5f, s->V == 256 ? 0 : 1, (uint32_t)s->V, tok, len,
                            "source=fixture\ndata=builtin:copy\n", t, (uint32_t)n, err, errlen);
    }
out:
    if (bufs)
        for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(t);
    pm_table_free(&tb);
    pm_arch_free(&a);
    return rc;
}

/* Reads a whole file into a malloc'd buffer; *len its size. NULL on error. */
static inline uint8_t *fx_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static inline void fx_put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void fx_put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t fx_get32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static inline uint64_t fx_get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The same model as a version-1 file, laid out here byte by byte (docs/
 * format.md, "Version 1") from the valid version-2 file v2[0, len) of a
 * uniform architecture: header (version 1, a 40-byte config), the config
 * n_layer, n_head, n_embd, n_hidden, ctx, vocab, bias, tied, ln_eps,
 * reserved; the vocabulary and metadata sections copied; the tensor table
 * with new offsets; each tensor's bytes at its 64-byte aligned offset; the
 * checksum. Returns a malloc'd buffer (*out_len bytes), or NULL when v2 is
 * not a valid uniform file. */
static inline uint8_t *fx_v1_from_v2(const uint8_t *v2, size_t len, size_t *out_len) {
    inf_file f;
    char err[256];
    if (inf_file_parse(&f, v2, len, "v2", err, sizeof err) != 0) return NULL;
    if (!pm_arch_is_uniform(&f.arch)) {
        inf_file_close(&f);
        return NULL;
    }
    uint32_t cfg2 = fx_get32(v2 + 24), vb = fx_get32(v2 + 28), mb = fx_get32(v2 + 32), tb = fx_get32(v2 + 40);
    size_t sections = 56 + 40 + (size_t)vb + mb + tb;
    uint64_t data = (sections + 63) / 64 * 64, pos = data;
    uint64_t *offs = calloc(f.n_tensors, sizeof *offs);
    for (uint32_t i = 0; i < f.n_tensors; i++) {
        offs[i] = pos;
        pos = (pos + f.t[i].bytes + 63) / 64 * 64;
    }
    uint64_t end = offs[f.n_tensors - 1] + f.t[f.n_tensors - 1].bytes, size = end + 8;
    uint8_t *b = calloc(1, (size_t)size);
    memcpy(b, "PAREMODL", 8);
    fx_put32(b + 8, 1);                /* version */
    fx_put32(b + 12, 0);               /* flags */
    fx_put64(b + 16, size);            /* file size */
    fx_put32(b + 24, 40);              /* config bytes */
    fx_put32(b + 28, vb);
    fx_put32(b + 32, mb);
    fx_put32(b + 36, f.n_tensors);
    fx_put32(b + 40, tb);
    fx_put32(b + 44, 0);
    fx_put64(b + 48, data);
    const pm_arch *a = &f.arch;
    uint32_t eps_bits;
    memcpy(&eps_bits, &f.ln_eps, 4);
    uint32_t cfg[10] = {(uint32_t)a->n_layer, (uint32_t)a->n_head[0], (uint32_t)a->n_embd, (uint32_t)a->n_hidden[0],
                        (uint32_t)a->ctx, (uint32_t)a->vocab, a->bias, a->tied, eps_bits, 0};
    for (int i = 0; i < 10; i++) fx_put32(b + 56 + 4 * i, cfg[i]);
    memcpy(b + 96, v2 + 56 + cfg2, (size_t)vb + mb); /* vocabulary and metadata */
    uint8_t *e = b + 96 + vb + mb;
    for (uint32_t i = 0; i < f.n_tensors; i++) {
        const inf_tensor *t = &f.t[i];
        size_t nl = strlen(t->name);
        e[0] = (uint8_t)nl, e[1] = 0;
        memcpy(e + 2, t->name, nl);
        e[2 + nl] = (uint8_t)t->dtype, e[3 + nl] = (uint8_t)t->ndim, e[4 + nl] = e[5 + nl] = 0;
        for (int d = 0; d < 4; d++) fx_put32(e + 6 + nl + 4 * d, t->shape[d]);
        fx_put32(e + 22 + nl, t->group);
        fx_put64(e + 26 + nl, offs[i]);
        fx_put64(e + 34 + nl, t->bytes);
        e += 42 + nl;
        memcpy(b + offs[i], t->data, (size_t)t->bytes);
    }
    fx_put64(b + end, ag_fnv1a(AG_FNV_INIT, b, (size_t)end));
    free(offs);
    inf_file_close(&f);
    *out_len = (size_t)size;
    return b;
}

#endif
