/* tape.h - the autograd idea in one page.
 *
 * An ag_ctx holds the arena for one step's activations and a tape: the list
 * of ops run so far, each with its inputs, its output and a pointer to its
 * backward function. ag_backward() seeds d(loss)/d(loss) = 1 and walks the
 * tape in reverse; each backward function *adds* into its inputs' grads, so a
 * tensor used twice receives both contributions. Leaves (parameters, inputs
 * made with requires_grad) keep accumulating until the caller zeroes them;
 * the grads of intermediate tensors are zeroed at the start of each backward,
 * so a second backward over the same tape adds the same gradient again.
 *
 * With grad mode off (ag_set_grad(ctx, false)) ops record nothing and give
 * their outputs no gradient buffer: a teacher's forward costs no tape and no
 * gradient memory.
 *
 * Errors: an op that cannot get memory sets the context's error message and
 * returns NULL; every op given a NULL input returns NULL at once, so the
 * caller checks only the final result (see ag_error()).
 */
#ifndef PARE_AG_TAPE_H
#define PARE_AG_TAPE_H

#include "arena.h"
#include "tensor.h"

typedef struct ag_node ag_node;
typedef void (*ag_backward_fn)(ag_node *n);

/* One recorded op. The forward function fills in what its backward needs. */
struct ag_node {
    ag_backward_fn backward;
    const char *op;          /* op name, for messages */
    ag_tensor *out;
    ag_tensor *in[3];        /* inputs; unused entries are NULL */
    int iarg[4];             /* small integer arguments (transposes, heads, ...) */
    float farg[2];           /* small float arguments (scale, temperature, ...) */
    void *saved;             /* what the forward kept for the backward (in the arena) */
    void *saved2;
};

typedef struct ag_ctx {
    ag_arena arena;
    ag_node *tape;           /* [cap] */
    size_t n_nodes, cap;
    size_t n_tape_grows;     /* times the tape array was reallocated (tests read it) */
    bool grad_enabled;
    char err[256];           /* first error since the last reset; "" if none */
} ag_ctx;

/* Creates a context with grad mode on. Returns NULL when out of memory.
 * The caller owns it and frees it with ag_ctx_free (which accepts NULL). */
ag_ctx *ag_ctx_new(void);
void ag_ctx_free(ag_ctx *c);

/* Forgets the tape and every tensor made in the arena since the last reset.
 * Parameters and their grads (which live in ag_params) are untouched.
 * Returns 0, or -1 when out of memory (with ag_error set). */
int ag_ctx_reset(ag_ctx *c);

/* Turns recording on or off; returns the previous setting. */
bool ag_set_grad(ag_ctx *c, bool enabled);

/* Whether recording is on. */
bool ag_grad_enabled(const ag_ctx *c);

/* The first error since the last reset, or NULL. */
const char *ag_error(const ag_ctx *c);

/* Records an error (printf-style) unless one is already recorded. */
void ag_fail(ag_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Makes a new arena tensor of the given shape, data uninitialised, no grad.
 * Returns NULL (and sets the error) when out of memory. */
ag_tensor *ag_new(ag_ctx *c, int ndim, const int *shape, const char *name);

/* Same, with the data zero-filled. */
ag_tensor *ag_zeros(ag_ctx *c, int ndim, const int *shape, const char *name);

/* Makes an arena tensor that shares src's data (and grad) with another shape
 * of the same numel. Used by ops whose backward is the identity on memory. */
ag_tensor *ag_view(ag_ctx *c, ag_tensor *src, int ndim, const int *shape);

/* Arena memory for an op's saved state. NULL (error set) when out of memory. */
void *ag_alloc(ag_ctx *c, size_t bytes);

/* For op authors: if grad mode is on and any input requires grad, gives `out`
 * a gradient buffer, appends a node and returns it (the op then stores what
 * its backward needs); otherwise returns NULL and records nothing.
 * Also returns NULL with the error set when out of memory; an op tells the two
 * apart with ag_error(). */
ag_node *ag_record(ag_ctx *c, const char *op, ag_backward_fn backward, ag_tensor *out,
                   ag_tensor *a, ag_tensor *b, ag_tensor *d);

/* Back-propagates from a scalar `loss` (numel 1): seeds its grad with 1 and
 * runs every recorded backward in reverse order. Returns 0, or -1 if loss has
 * no gradient (nothing it depends on requires grad). */
int ag_backward(ag_ctx *c, ag_tensor *loss);

/* Same from any tensor, seeding its grad with `seed` [out->numel]. */
int ag_backward_seed(ag_ctx *c, ag_tensor *out, const float *seed);

#endif
