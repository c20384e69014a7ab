#include "tape.h"

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
    if (!p) ag_fail(c, "out of memory: %zu bytes for the step's activations", bytes);
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
        ag_fail(c, "out of memory: tensor %s of %zu floats", name ? name : "?", t->numel);
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

/* The gradient buffer of one node's output, for the backward plan. */
typedef struct {
    float *start;
    size_t numel;
    int state;   /* 0: no writer yet (in reverse order), 1: accumulated into,
                    2: assigned by (wnode, wslot), 3: must be zeroed (seed or partial view) */
    size_t wnode;
    int wslot;
} grad_buf;

static int buf_cmp(const void *x, const void *y) {
    const float *a = ((const grad_buf *)x)->start, *b = ((const grad_buf *)y)->start;
    return (a > b) - (a < b);
}

/* The buffer containing p, or NULL (a leaf's gradient). */
static grad_buf *buf_find(grad_buf *bufs, size_t n, const float *p) {
    size_t lo = 0, hi = n; /* the last buffer with start <= p is lo - 1 */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bufs[mid].start <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0) return NULL;
    grad_buf *b = &bufs[lo - 1];
    return p < b->start + b->numel ? b : NULL;
}

/* Decides, walking the tape in backward order, which node writes each
 * intermediate gradient buffer first; where that node's op allows it
 * (can_assign) and it sees the whole buffer, it assigns and the buffer is not
 * zeroed. A buffer also reached through a partial view, the seed's buffer,
 * and a buffer passed twice to one node are always zeroed and accumulated.
 * Returns the plan (bufs sorted by start, n_nodes of them) or NULL when the
 * arena has no room, in which case every buffer is zeroed. */
static grad_buf *plan_backward(ag_ctx *c, const ag_tensor *seed) {
    size_t n = c->n_nodes;
    for (size_t i = 0; i < n; i++) c->tape[i].assign = 0;
    grad_buf *bufs = n ? ag_arena_alloc(&c->arena, n * sizeof *bufs) : NULL;
    if (!bufs) return NULL;
    for (size_t i = 0; i < n; i++)
        bufs[i] = (grad_buf){c->tape[i].out->grad, c->tape[i].out->numel, 0, 0, 0};
    qsort(bufs, n, sizeof *bufs, buf_cmp);
    grad_buf *sb = buf_find(bufs, n, seed->grad);
    if (sb) sb->state = 3;
    for (size_t i = n; i-- > 0;) {
        ag_node *nd = &c->tape[i];
        grad_buf *mine[3] = {NULL, NULL, NULL};
        for (int k = 0; k < 3; k++)
            if (nd->in[k] && nd->in[k]->grad) mine[k] = buf_find(bufs, n, nd->in[k]->grad);
        for (int k = 0; k < 3; k++) {
            grad_buf *b = mine[k];
            if (!b) continue;
            const ag_tensor *t = nd->in[k];
            bool whole = t->grad == b->start && t->numel == b->numel;
            bool dup = (k != 0 && mine[0] == b) || (k != 1 && mine[1] == b) || (k != 2 && mine[2] == b);
            if (!whole || dup) {
                if (b->state == 2) c->tape[b->wnode].assign &= (unsigned char)~(1u << b->wslot);
                b->state = 3;
            } else if (b->state == 0) {
                if (nd->can_assign & (1u << k)) {
                    b->state = 2;
                    b->wnode = i;
                    b->wslot = k;
                    nd->assign |= (unsigned char)(1u << k);
                } else {
                    b->state = 1;
                }
            }
        }
    }
    return bufs;
}

/* Zeroes every recorded output's gradient, except buffers the plan has
 * assigned. All threads share every tensor (thread t of n zeroes the t-th of
 * n equal slices), in one parallel region: the memory is written once either
 * way, two cores just write it faster. */
static void zero_node_grads(ag_ctx *c, const grad_buf *bufs) {
    size_t n = c->n_nodes, total = 0;
    for (size_t i = 0; i < n; i++) total += c->tape[i].out->numel;
#pragma omp parallel if (total >= ((size_t)1 << 18))
    {
        size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
        for (size_t i = 0; i < n; i++) {
            float *g = bufs ? bufs[i].start : c->tape[i].out->grad;
            size_t numel = bufs ? bufs[i].numel : c->tape[i].out->numel;
            if (bufs && bufs[i].state == 2) continue;
            size_t per = (numel + nt - 1) / nt, i0 = t * per;
            if (i0 < numel) {
                size_t len = numel - i0 < per ? numel - i0 : per;
                memset(g + i0, 0, len * sizeof(float));
            }
        }
    }
}

int ag_backward_seed(ag_ctx *c, ag_tensor *out, const float *seed) {
    if (!out || !out->grad) return -1;
    zero_node_grads(c, plan_backward(c, out));
    for (size_t i = 0; i < out->numel; i++) out->grad[i] += seed[i];
    for (size_t i = c->n_nodes; i-- > 0;) c->tape[i].backward(&c->tape[i]);
    return 0;
}

int ag_backward(ag_ctx *c, ag_tensor *loss) {
    if (!loss || loss->numel != 1) return -1;
    const float one = 1.0f;
    return ag_backward_seed(c, loss, &one);
}
