/* plan.c - the export plan (see plan.h). */
#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reset_entries(pm_plan *p, char *err, size_t errlen) {
    free(p->entry);
    p->entry = calloc((size_t)p->table.n_tensor, sizeof *p->entry);
    if (!p->entry) {
        snprintf(err, errlen, "out of memory: an export plan of %d tensors", p->table.n_tensor);
        return -1;
    }
    for (int i = 0; i < p->table.n_tensor; i++) {
        snprintf(p->entry[i].type, sizeof p->entry[i].type, "f32");
        snprintf(p->entry[i].by, sizeof p->entry[i].by, "default");
    }
    return 0;
}

int pm_plan_init(pm_plan *p, const pm_arch *a, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    if (pm_table_build(&p->table, a, err, errlen) != 0) return -1;
    if (pm_arch_copy(&p->arch, a) != 0) {
        snprintf(err, errlen, "out of memory: an export plan");
        return -1;
    }
    return reset_entries(p, err, errlen);
}

int pm_plan_set_arch(pm_plan *p, const pm_arch *a, char *err, size_t errlen) {
    pm_table t;
    pm_arch copy;
    if (pm_table_build(&t, a, err, errlen) != 0) {
        pm_table_free(&t);
        return -1;
    }
    if (pm_arch_copy(&copy, a) != 0) {
        pm_table_free(&t);
        snprintf(err, errlen, "out of memory: an export plan");
        return -1;
    }
    pm_table_free(&p->table);
    pm_arch_free(&p->arch);
    p->table = t;
    p->arch = copy;
    return reset_entries(p, err, errlen);
}

void *pm_plan_alloc(pm_plan *p, size_t bytes) {
    if (p->n_owned == p->cap_owned) {
        int cap = p->cap_owned ? 2 * p->cap_owned : 16;
        void **o = realloc(p->owned, (size_t)cap * sizeof *o);
        if (!o) return NULL;
        p->owned = o, p->cap_owned = cap;
    }
    void *b = calloc(1, bytes ? bytes : 1);
    if (b) p->owned[p->n_owned++] = b;
    return b;
}

void pm_plan_free(pm_plan *p) {
    if (!p) return;
    for (int i = 0; i < p->n_owned; i++) free(p->owned[i]);
    free(p->owned);
    free(p->entry);
    pm_table_free(&p->table);
    pm_arch_free(&p->arch);
    memset(p, 0, sizeof *p);
}

pm_plan_entry *pm_plan_find(pm_plan *p, const char *tensor_name) {
    int i = pm_table_tensor(&p->table, tensor_name);
    return i >= 0 ? &p->entry[i] : NULL;
}
