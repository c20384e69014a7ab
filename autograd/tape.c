#include "tape.h"
#include "parallel.h"

#include <assert.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ag_ctx *ag_ctx_new(void) {
    ag_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    ag_arena_init(&c->arena);
    c->grad_enabled = true;
    return c;
}

void ag_ctx_free(ag_ctx *c) {
    if (!c) return;
    ag_arena_free(&c->arena);
    free(c->tape);
    free(c);
}

int ag_ctx_reset(ag_ctx *c) {
    c->n_nodes = 0;
    c->err[0] = '\0';
    if (ag_arena_reset(&c->arena) != 0) {
        ag_fail(c, "out of memory: the step's arena (%zu bytes) could not be allocated",
                c->arena.high_water);
        return -1;
    }
    return 0;
}

bool ag_set_grad(ag_ctx *c, bool enabled) {
    bool prev = c->grad_enabled;
    c->grad_enabled = enabled;
    return prev;
}

bool ag_grad_enabled(const ag_ctx *c) { return c->grad_enabled; }

const char *ag_error(const ag_ctx *c) { return c->err[0] ? c->err : NULL; }

void ag_fail(ag_ctx *c, const char *fmt, ...) {
    if (c->err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
}

void *ag_alloc(ag_ctx *c, size_t bytes) {
    void *p = ag_arena_alloc(&c->arena, bytes);
    if (!p)
        ag_fail(c, "out of memory: %zu bytes for the step's activations (a new arena block of %zu bytes; %zu in use)",
                bytes, c->arena.failed, c->arena.used);
    return p;
}

static ag_tensor *new_tensor(ag_ctx *c, int ndim, const int *shape, const char *name, bool zero) {
    ag_tensor *t = ag_alloc(c, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    ag_tensor_set_shape(t, ndim, shape);
    t->name = name;
    t->data = zero ? ag_arena_calloc(&c->arena, t->numel * sizeof(float))
                   : ag_arena_alloc(&c->arena, t->numel * sizeof(float));
    if (!t->data) {
        ag_fail(c, "out of memory: tensor %s of %zu floats (a new arena block of %zu bytes; %zu in use)",
                name ? name : "?", t->numel, c->arena.failed, c->arena.used);
        return NULL;
    }
    return t;
}

ag_tensor *ag_new(ag_ctx *c, int ndim, const int *shape, const char *name) {
    return new_tensor(c, ndim, shape, name, false);
}

ag_tensor *ag_zeros(ag_ctx *c, int ndim, const int *shape, const char *name) {
    return new_tensor(c, ndim, shape, name, true);
}

ag_tensor *ag_view(ag_ctx *c, ag_tensor *src, int ndim, const int *shape) {
    if (!src) return NULL;
    ag_tensor *t = ag_alloc(c, sizeof *t);
    if (!t) return NULL;
    *t = *src;
    ag_tensor_set_shape(t, ndim, shape);
    assert(t->numel == src->numel);
    return t;
}

ag_node *ag_record(ag_ctx *c, const char *op, ag_backward_fn backward, ag_tensor *out,
                   ag_tensor *a, ag_tensor *b, ag_tensor *d) {
    if (!c->grad_enabled) return NULL;
    if (!((a && a->requires_grad) || (b && b->requires_grad) || (d && d->requires_grad)))
        return NULL;
    /* Intermediate grads are zeroed by ag_backward, so no memset here. */
    out->grad = ag_alloc(c, out->numel * sizeof(float));
    if (!out->grad) return NULL;
    out->requires_grad = true;
    if (c->n_nodes == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        ag_node *t = realloc(c->tape, cap * sizeof *t);
        if (!t) {
            ag_fail(c, "out of memory: tape of %zu ops", cap);
            return NULL;
        }
        c->tape = t;
        c->cap = cap;
        c->n_tape_grows++;
    }
    ag_node *n = &c->tape[c->n_nodes++];
    memset(n, 0, sizeof *n);
    n->backward = backward;
    n->op = op;
    n->out = out;
    n->in[0] = a;
    n->in[1] = b;
    n->in[2] = d;
    return n;
}

/* Zeroes every recorded output's gradient. All threads share every tensor
 * (thread t of n zeroes the t-th of n equal slices), in one parallel region:
 * the memory is written once either way, two cores just write it faster. */
static void zero_node_grads(ag_ctx *c) {
    size_t total = 0;
    for (size_t i = 0; i < c->n_nodes; i++) total += c->tape[i].out->numel;
    ag_join join = {0};
#pragma omp parallel if (total >= ((size_t)1 << 18))
    {
        size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
        for (size_t i = 0; i < c->n_nodes; i++) {
            ag_tensor *o = c->tape[i].out;
            size_t per = (o->numel + nt - 1) / nt, i0 = t * per;
            if (i0 < o->numel) {
                size_t len = o->numel - i0 < per ? o->numel - i0 : per;
                memset(o->grad + i0, 0, len * sizeof(float));
            }
        }
        ag_region_join(&join);
    }
}

int ag_backward_seed(ag_ctx *c, ag_tensor *out, const float *seed) {
    if (!out || !out->grad) return -1;
    zero_node_grads(c);
    for (size_t i = 0; i < out->numel; i++) out->grad[i] += seed[i];
    for (size_t i = c->n_nodes; i-- > 0;) c->tape[i].backward(&c->tape[i]);
    return 0;
}

int ag_backward(ag_ctx *c, ag_tensor *loss) {
    if (!loss || loss->numel != 1) return -1;
    const float one = 1.0f;
    return ag_backward_seed(c, loss, &one);
}
