#include "tensor.h"

#include <assert.h>
#include <stdio.h>

void ag_tensor_set_shape(ag_tensor *t, int ndim, const int *shape) {
    assert(ndim >= 1 && ndim <= AG_MAX_DIMS);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < AG_MAX_DIMS; i++) {
        t->shape[i] = i < ndim ? shape[i] : 1;
        assert(t->shape[i] >= 1);
        if (i < ndim) t->numel *= (size_t)shape[i];
    }
}

bool ag_same_shape(const ag_tensor *a, const ag_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *ag_shape_str(const ag_tensor *t, char *buf, size_t n) {
    int k = snprintf(buf, n, "%s[", t->name ? t->name : "?");
    for (int i = 0; i < t->ndim && k > 0 && (size_t)k < n; i++)
        k += snprintf(buf + k, n - (size_t)k, i ? ",%d" : "%d", t->shape[i]);
    if (k > 0 && (size_t)k < n) snprintf(buf + k, n - (size_t)k, "]");
    return buf;
}
