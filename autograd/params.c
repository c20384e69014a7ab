#include "params.h"

#include <stdlib.h>
#include <string.h>

#define PAD_FLOATS 16 /* 64 bytes */

void ag_params_init(ag_params *p) { memset(p, 0, sizeof *p); }

void ag_params_free(ag_params *p) {
    if (!p) return;
    free(p->data);
    free(p->grad);
    free(p->m);
    free(p->v);
    free(p->mask);
    for (int i = 0; i < p->count; i++) free(p->names[i]);
    free(p->names);
    free(p->t);
    free(p->offset);
    free(p->group);
    memset(p, 0, sizeof *p);
}

static int grow(ag_params *p) {
    int cap = p->cap ? p->cap * 2 : 32;
    ag_tensor *t = realloc(p->t, (size_t)cap * sizeof *t);
    if (t) p->t = t;
    size_t *o = realloc(p->offset, (size_t)cap * sizeof *o);
    if (o) p->offset = o;
    int *g = realloc(p->group, (size_t)cap * sizeof *g);
    if (g) p->group = g;
    char **nm = realloc(p->names, (size_t)cap * sizeof *nm);
    if (nm) p->names = nm;
    if (!t || !o || !g || !nm) return -1;
    p->cap = cap;
    return 0;
}

int ag_params_add(ag_params *p, const char *name, int ndim, const int *shape, int group) {
    if (p->data) return -1;
    if (p->count == p->cap && grow(p) != 0) return -1;
    int i = p->count;
    char *copy = strdup(name);
    if (!copy) return -1;
    ag_tensor *t = &p->t[i];
    memset(t, 0, sizeof *t);
    ag_tensor_set_shape(t, ndim, shape);
    t->name = copy;
    p->names[i] = copy;
    p->group[i] = group;
    p->offset[i] = p->n;
    p->n += (t->numel + PAD_FLOATS - 1) / PAD_FLOATS * PAD_FLOATS;
    p->count++;
    return i;
}

static float *zalloc(size_t n) {
    size_t bytes = (n ? n : 1) * sizeof(float);
    float *x = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (x) memset(x, 0, bytes);
    return x;
}

int ag_params_alloc(ag_params *p, int flags) {
    p->flags = flags;
    p->data = zalloc(p->n);
    if (flags & AG_PARAMS_GRAD) p->grad = zalloc(p->n);
    if (flags & AG_PARAMS_MOMENTS) {
        p->m = zalloc(p->n);
        p->v = zalloc(p->n);
    }
    if (!p->data || ((flags & AG_PARAMS_GRAD) && !p->grad) ||
        ((flags & AG_PARAMS_MOMENTS) && (!p->m || !p->v)))
        return -1;
    for (int i = 0; i < p->count; i++) {
        p->t[i].data = p->data + p->offset[i];
        p->t[i].grad = p->grad ? p->grad + p->offset[i] : NULL;
        p->t[i].requires_grad = p->grad != NULL;
    }
    return 0;
}

int ag_params_find(const ag_params *p, const char *name) {
    for (int i = 0; i < p->count; i++)
        if (strcmp(p->names[i], name) == 0) return i;
    return -1;
}

void ag_params_zero_grad(ag_params *p) {
    if (p->grad) memset(p->grad, 0, p->n * sizeof(float));
}

size_t ag_params_numel(const ag_params *p) {
    size_t n = 0;
    for (int i = 0; i < p->count; i++) n += p->t[i].numel;
    return n;
}

int ag_params_mask_enable(ag_params *p) {
    if (!p->data) return -1;
    if (p->mask) return 0;
    p->mask = zalloc(p->n);
    if (!p->mask) return -1;
    for (int i = 0; i < p->count; i++)
        for (size_t j = 0; j < p->t[i].numel; j++) p->mask[p->offset[i] + j] = 1.0f;
    return 0;
}

/* x[j] *= mask[j] over the flat buffer (padding is zero in both). */
static void mul_mask(float *x, const float *mask, size_t n) {
    if (!x) return;
    long nn = (long)n;
#pragma omp parallel for schedule(static) if (n >= ((size_t)1 << 18))
    for (long j = 0; j < nn; j++) x[j] *= mask[j];
}

void ag_params_mask_grads(ag_params *p) {
    if (p->mask) mul_mask(p->grad, p->mask, p->n);
}

void ag_params_mask_apply(ag_params *p) {
    if (!p->mask) return;
    mul_mask(p->data, p->mask, p->n);
    mul_mask(p->m, p->mask, p->n);
    mul_mask(p->v, p->mask, p->n);
}

size_t ag_params_masked(const ag_params *p, int i) {
    if (!p->mask) return 0;
    size_t n = 0;
    for (size_t j = 0; j < p->t[i].numel; j++) n += p->mask[p->offset[i] + j] == 0.0f;
    return n;
}
