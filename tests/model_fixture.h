/* model_fixture.h - small valid model files built without train/, for the
 * format tests and the fuzzer's seed corpus (header-only, static). */
#ifndef PARE_TESTS_MODEL_FIXTURE_H
#define PARE_TESTS_MODEL_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "infer/format.h"
#include "infer/pack.h"

typedef struct fx_spec {
    int dtype, group;      /* storage type of the linear weights */
    int bias, tied;
    int n_layer, C, H, ctx, V;
    uint64_t seed;
} fx_spec;

static inline fx_spec fx_default(int dtype) {
    fx_spec s = {dtype, 32, 1, 0, 1, 32, 2, 4, 8, 1};
    return s;
}

/* Writes the model of spec s to path (all tensors of the GPT layout, random
 * values, layer norm gains near 1). Returns 0 or -1 with err. */
static inline int fx_write_model(const char *path, const fx_spec *s, char *err, size_t errlen) {
    enum { MAXT = 64 };
    inf_tensor_in t[MAXT];
    void *bufs[MAXT] = {0};
    char names[MAXT][INF_NAME_MAX + 1];
    int n = 0, C = s->C, M = 4 * s->C, rc = -1;
    ag_rng r;
    ag_rng_seed(&r, s->seed);
#define FX_ADD(nm, rows, cols, quant)                                                                             \
    do {                                                                                                          \
        int rows_ = (rows), cols_ = (cols);                                                                       \
        snprintf(names[n], sizeof names[n], "%s", nm);                                                            \
        size_t cnt = (size_t)rows_ * (cols_ ? cols_ : 1);                                                         \
        float *w = malloc(cnt * sizeof(float));                                                                   \
        for (size_t i = 0; i < cnt; i++) w[i] = 0.3f * ag_rng_normal(&r) + (cols_ ? 0.0f : 1.0f);               \
        memset(&t[n], 0, sizeof t[n]);                                                                            \
        t[n].name = names[n];                                                                                     \
        t[n].ndim = cols_ ? 2 : 1;                                                                                \
        t[n].shape[0] = (uint32_t)rows_, t[n].shape[1] = cols_ ? (uint32_t)cols_ : 1;                             \
        t[n].shape[2] = t[n].shape[3] = 1;                                                                        \
        if ((quant) && cols_) {                                                                                   \
            uint8_t *p;                                                                                           \
            uint64_t by;                                                                                          \
            uint32_t G;                                                                                           \
            if (inf_pack_matrix(s->dtype, w, rows_, cols_, s->group, &p, &by, &G, err, errlen)) {                 \
                free(w);                                                                                          \
                goto out;                                                                                         \
            }                                                                                                     \
            free(w);                                                                                              \
            t[n].dtype = s->dtype, t[n].group = G, t[n].data = p, t[n].bytes = by, bufs[n] = p;                   \
        } else {                                                                                                  \
            t[n].dtype = INF_F32, t[n].data = w, t[n].bytes = cnt * sizeof(float), bufs[n] = w;                   \
        }                                                                                                         \
        n++;                                                                                                      \
    } while (0)
    FX_ADD("wte", s->V, C, 0);
    FX_ADD("wpe", s->ctx, C, 0);
    for (int l = 0; l < s->n_layer; l++) {
        char nm[INF_NAME_MAX + 1];
#define FX_L(suffix) (snprintf(nm, sizeof nm, "h.%d.%s", l, suffix), nm)
        FX_ADD(FX_L("ln1.w"), C, 0, 0);
        if (s->bias) FX_ADD(FX_L("ln1.b"), C, 0, 0);
        FX_ADD(FX_L("attn.qkv.w"), 3 * C, C, 1);
        if (s->bias) FX_ADD(FX_L("attn.qkv.b"), 3 * C, 0, 0);
        FX_ADD(FX_L("attn.proj.w"), C, C, 1);
        if (s->bias) FX_ADD(FX_L("attn.proj.b"), C, 0, 0);
        FX_ADD(FX_L("ln2.w"), C, 0, 0);
        if (s->bias) FX_ADD(FX_L("ln2.b"), C, 0, 0);
        FX_ADD(FX_L("mlp.fc.w"), M, C, 1);
        if (s->bias) FX_ADD(FX_L("mlp.fc.b"), M, 0, 0);
        FX_ADD(FX_L("mlp.proj.w"), C, M, 1);
        if (s->bias) FX_ADD(FX_L("mlp.proj.b"), C, 0, 0);
#undef FX_L
    }
    FX_ADD("lnf.w", C, 0, 0);
    if (s->bias) FX_ADD("lnf.b", C, 0, 0);
    if (!s->tied) FX_ADD("lm_head.w", s->V, C, 1);
#undef FX_ADD
    {
        inf_config cfg = {(uint32_t)s->n_layer, (uint32_t)s->H, (uint32_t)C, (uint32_t)M, (uint32_t)s->ctx,
                          (uint32_t)s->V, (uint32_t)s->bias, (uint32_t)s->tied, 1e-5f};
        uint8_t sym[256], len[256];
        const uint8_t *tok[256];
        for (int i = 0; i < s->V; i++) sym[i] = (uint8_t)(s->V == 256 ? i : 'a' + i), len[i] = 1, tok[i] = &sym[i];
        rc = inf_file_write(path, &cfg, s->V == 256 ? 0 : 1, (uint32_t)s->V, tok, len,
                            "source=fixture\ndata=builtin:copy\n", t, (uint32_t)n, err, errlen);
    }
out:
    for (int i = 0; i < n; i++) free(bufs[i]);
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

#endif
