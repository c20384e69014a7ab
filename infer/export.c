/* export.c - a trained GPT to a model file (see export.h). */
#include "export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "pack.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

bool inf_export_quantizes(const inf_export_opts *o, const char *name, int ndim) {
    if (o->dtype == INF_F32 || ndim != 2) return false;
    if (!strcmp(name, "wte") || !strcmp(name, "wpe")) return o->quantize_embeddings;
    return ends_with(name, ".qkv.w") || ends_with(name, ".attn.proj.w") || ends_with(name, ".fc.w") ||
           ends_with(name, ".mlp.proj.w") || !strcmp(name, "lm_head.w");
}

int inf_export_gpt(const tr_gpt *m, const tr_vocab *v, const inf_export_opts *o, const char *path, char *err,
                   size_t errlen) {
    const pm_arch *c = &m->arch;
    if (!pm_arch_is_uniform(c)) {
        snprintf(err, errlen, "the model has layers of different shapes or factorized sites: version-1 model files "
                 "hold uniform models only");
        return -1;
    }
    if (v->size != c->vocab) {
        snprintf(err, errlen, "the vocabulary has %d symbols, the model's vocab is %d", v->size, c->vocab);
        return -1;
    }
    if (!inf_type(o->dtype)) {
        snprintf(err, errlen, "storage type %d: expected 0..%d", o->dtype, INF_DTYPE_COUNT - 1);
        return -1;
    }
    const ag_params *p = &m->params;
    int n = p->count;
    inf_tensor_in *t = calloc((size_t)n, sizeof *t);
    uint8_t **bufs = calloc((size_t)n, sizeof *bufs);
    int rc = -1;
    if (!t || !bufs) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const ag_tensor *x = &p->t[i];
        t[i].name = p->names[i];
        t[i].ndim = x->ndim;
        for (int d = 0; d < 4; d++) t[i].shape[d] = d < x->ndim ? (uint32_t)x->shape[d] : 1;
        if (inf_export_quantizes(o, p->names[i], x->ndim)) {
            uint64_t bytes;
            uint32_t G;
            char why[256];
            if (inf_pack_matrix(o->dtype, x->data, x->shape[0], x->shape[1], o->group, &bufs[i], &bytes, &G, why,
                                sizeof why)) {
                snprintf(err, errlen, "tensor '%s' [%d, %d] as %s: %s", p->names[i], x->shape[0], x->shape[1],
                         inf_type(o->dtype)->name, why);
                goto done;
            }
            t[i].dtype = o->dtype;
            t[i].group = G;
            t[i].data = bufs[i];
            t[i].bytes = bytes;
        } else {
            t[i].dtype = INF_F32;
            t[i].group = 0;
            t[i].data = x->data;
            t[i].bytes = x->numel * sizeof(float);
        }
    }
    inf_config cfg = {(uint32_t)c->n_layer, (uint32_t)c->n_head[0], (uint32_t)c->n_embd,
                      (uint32_t)c->n_hidden[0], (uint32_t)c->ctx, (uint32_t)c->vocab,
                      c->bias ? 1u : 0u, c->tied ? 1u : 0u, TR_GPT_LN_EPS};
    const uint8_t *tok[256];
    uint8_t len[256];
    for (int i = 0; i < v->size; i++) tok[i] = &v->sym[i], len[i] = 1;
    rc = inf_file_write(path, &cfg, (uint32_t)v->kind, (uint32_t)v->size, tok, len, o->meta, t, (uint32_t)n, err, errlen);
done:
    if (bufs)
        for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(t);
    return rc;
}
