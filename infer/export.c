/* export.c - a trained GPT to a model file through an export plan (see
 * export.h). */
#include "export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "pack.h"
#include "types.h"

bool inf_export_quantizes(const inf_export_opts *o, const pm_table *t, int i) {
    const pm_tensor *x = &t->tensor[i];
    const pm_site *s = &t->site[x->site];
    if (o->dtype == INF_F32 || x->ndim != 2) return false;
    if (s->role == PM_WTE || s->role == PM_WPE) return o->quantize_embeddings;
    return s->linear && (x->part == PM_W || x->part == PM_U || x->part == PM_V);
}

int inf_plan_from_gpt(pm_plan *p, const tr_gpt *m, char *err, size_t errlen) {
    if (pm_plan_init(p, &m->arch, err, errlen) != 0) return -1;
    if (p->table.n_tensor != m->params.count) {
        snprintf(err, errlen, "the model has %d parameters, its table %d tensors", m->params.count, p->table.n_tensor);
        return -1;
    }
    for (int i = 0; i < p->table.n_tensor; i++) {
        const pm_tensor *x = &p->table.tensor[i];
        const ag_tensor *t = &m->params.t[i];
        if (t->numel != (size_t)x->shape[0] * (size_t)x->shape[1]) {
            snprintf(err, errlen, "parameter '%s' has %zu values, table tensor '%s' %d x %d", m->params.names[i],
                     t->numel, x->name, x->shape[0], x->shape[1]);
            return -1;
        }
        p->entry[i].data = t->data;
    }
    return 0;
}

int inf_plan_apply(pm_plan *p, const inf_export_opts *o, char *err, size_t errlen) {
    if (!inf_type(o->dtype)) {
        snprintf(err, errlen, "storage type %d: expected 0..%d", o->dtype, INF_DTYPE_COUNT - 1);
        return -1;
    }
    for (int i = 0; i < p->table.n_tensor; i++) {
        pm_plan_entry *e = &p->entry[i];
        if (strcmp(e->by, "default") != 0 || !inf_export_quantizes(o, &p->table, i)) continue;
        snprintf(e->type, sizeof e->type, "%s", inf_type_name(o->dtype));
        e->group = o->group;
        snprintf(e->by, sizeof e->by, "--format");
    }
    p->q8_dense = o->dense;
    return 0;
}

/* Entry i packed into t (data owned in *buf, or borrowed from the entry). */
static int pack_entry(const pm_plan *p, int i, inf_tensor_in *t, uint8_t **buf, char *err, size_t errlen) {
    const pm_plan_entry *e = &p->entry[i];
    const pm_tensor *x = &p->table.tensor[i];
    int N = x->shape[0], K = x->shape[1];
    size_t numel = (size_t)N * (size_t)K;
    t->name = x->name;
    t->ndim = x->ndim;
    t->shape[0] = (uint32_t)N, t->shape[1] = x->ndim == 2 ? (uint32_t)K : 1, t->shape[2] = t->shape[3] = 1;
    if (!e->data) {
        snprintf(err, errlen, "tensor '%s': the export plan has no values for it (entry set by %s)", x->name, e->by);
        return -1;
    }
    int dt = inf_dtype_from_name(e->type);
    if (dt < 0) {
        snprintf(err, errlen, "tensor '%s': storage type '%s' (set by %s): expected f32, q8, q4 or q4a", x->name,
                 e->type, e->by);
        return -1;
    }
    if (x->ndim == 1 && dt != INF_F32) {
        snprintf(err, errlen, "tensor '%s' as %s (set by %s): vectors are stored as f32", x->name, e->type, e->by);
        return -1;
    }
    const float *w = e->data;
    float *masked = NULL;
    if (e->mask) { /* dense types store the zeros of masked weights */
        masked = malloc(numel * sizeof *masked);
        if (!masked) {
            snprintf(err, errlen, "tensor '%s': out of memory", x->name);
            return -1;
        }
        for (size_t j = 0; j < numel; j++) masked[j] = e->mask[j] ? w[j] : 0.0f;
        w = masked;
    }
    t->dtype = dt;
    const inf_type_traits *tr = inf_type(dt);
    t->act_bits = e->act_bits, t->act_scale = e->act_scale;
    if (e->act_bits && !tr->act) {
        snprintf(err, errlen, "tensor '%s' as %s (set by %s): static %d-bit activations need an integer storage type",
                 x->name, tr->name, e->by, e->act_bits);
        free(masked);
        return -1;
    }
    if (tr->group_multiple && K % tr->group_multiple != 0) {
        snprintf(err, errlen, "tensor '%s' [%d, %d] as %s (set by %s): its input width %d is not a multiple of %d, "
                 "which %s needs: export it as f32 or give the layer a width that is a multiple of %d", x->name, N, K,
                 tr->name, e->by, K, tr->group_multiple, tr->name, tr->group_multiple);
        free(masked);
        return -1;
    }
    if (dt == INF_F32 && !e->scale && !e->zero) {
        t->group = 0;
        t->data = w;
        t->bytes = numel * sizeof(float);
        *buf = (uint8_t *)masked; /* freed with the others; NULL when borrowed */
        return 0;
    }
    char why[512];
    uint64_t bytes;
    uint32_t G;
    int rc = inf_pack_matrix_fixed(dt, w, N, K, e->group, e->scale, e->zero, buf, &bytes, &G, why, sizeof why);
    free(masked);
    if (rc != 0) {
        snprintf(err, errlen, "tensor '%s' [%d, %d] as %s (set by %s): %s", x->name, N, K, tr->name, e->by, why);
        return -1;
    }
    t->group = G;
    t->data = *buf;
    t->bytes = bytes;
    /* the sparse rule (export.h): the smallest of q8, q8s and q8nm, all from the same codes and scales */
    if (dt == INF_Q8 && !e->act_bits && !p->q8_dense) {
        const int cand[2] = {INF_Q8S, INF_Q8NM};
        int best = INF_Q8;
        uint64_t best_bytes = bytes;
        for (int c = 0; c < 2; c++) {
            uint64_t b;
            if (inf_type(cand[c])->from_q8(*buf, N, K, (int)G, NULL, &b) == 0 && b < best_bytes) best = cand[c], best_bytes = b;
        }
        if (best != INF_Q8) {
            uint8_t *sp;
            uint64_t b;
            if (inf_pack_from_q8(best, *buf, N, K, (int)G, &sp, &b, why, sizeof why) != 0) {
                snprintf(err, errlen, "tensor '%s' [%d, %d] as %s: %s", x->name, N, K, inf_type_name(best), why);
                return -1;
            }
            free(*buf);
            *buf = sp;
            t->dtype = best;
            t->data = sp;
            t->bytes = b;
        }
    }
    return 0;
}

int inf_plan_write(const pm_plan *p, const tr_vocab *v, const char *meta, const char *path, char *err,
                   size_t errlen) {
    const pm_arch *a = &p->arch;
    if (v->size != a->vocab) {
        snprintf(err, errlen, "the vocabulary has %d symbols, the model's vocab is %d", v->size, a->vocab);
        return -1;
    }
    int n = p->table.n_tensor;
    inf_tensor_in *t = calloc((size_t)n, sizeof *t);
    uint8_t **bufs = calloc((size_t)n, sizeof *bufs);
    int rc = -1;
    if (!t || !bufs) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (pack_entry(p, i, &t[i], &bufs[i], err, errlen) != 0) goto done;
    const uint8_t *tok[256];
    uint8_t len[256];
    for (int i = 0; i < v->size; i++) tok[i] = &v->sym[i], len[i] = 1;
    rc = inf_file_write(path, a, TR_GPT_LN_EPS, (uint32_t)v->kind, (uint32_t)v->size, tok, len, meta, t, (uint32_t)n,
                        err, errlen);
done:
    if (bufs)
        for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(t);
    return rc;
}

int inf_export_gpt(const tr_gpt *m, const tr_vocab *v, const inf_export_opts *o, const char *path, char *err,
                   size_t errlen) {
    pm_plan p;
    int rc = inf_plan_from_gpt(&p, m, err, errlen) != 0 || inf_plan_apply(&p, o, err, errlen) != 0 ||
                     inf_plan_write(&p, v, o->meta, path, err, errlen) != 0
                 ? -1
                 : 0;
    pm_plan_free(&p);
    return rc;
}
