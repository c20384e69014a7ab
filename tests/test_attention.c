/* test_attention.c - causal multi-head attention: gradient checks of the five
 * ops, the fast kernels against the naive references, the properties of P,
 * gradient sent into P from outside, thread-count independence, and sgemm
 * called from inside a parallel region.
 *
 * Gradient-check tolerance: GC_TOL = 1e-3 on the vector relative error of
 * gradcheck.h with steps of GC_EPS = 1e-2 on inputs in [-1, 1]. Observed
 * errors are 1e-6 .. 1e-4 (float32 forward); a missing softmax term or
 * a wrong factor of 2 gives 0.1 or more (test_gradcheck_catches_broken_backward).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/attention_kernels.h"
#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"
#include "autograd/params.h"
#include "autograd/rng.h"

#define GC_EPS 1e-2
#define GC_TOL 1e-3

typedef struct shape4 {
    int B, H, T, D;
} shape4;

/* Several shapes: T = 1, H = 1, D not a power of two, B > 1, and T past one
 * kernel block (AG_ATTN_BLOCK = 64) so the blocked path is checked too. */
static const shape4 k_shapes[] = {
    {1, 1, 1, 3}, {2, 3, 5, 4}, {1, 2, 7, 3}, {3, 1, 4, 5}, {1, 1, 70, 2},
};
#define N_SHAPES (sizeof k_shapes / sizeof k_shapes[0])

/* ------------------------------------------------------------ helpers */

/* Declares tensors of the given shapes (4-D unless ndim says otherwise),
 * allocates with grads and fills them in [-1, 1) from `seed`. */
static void make_inputs(ag_params *p, int count, const int shapes[][4], const int *ndims,
                        uint64_t seed) {
    ag_params_init(p);
    static const char *names[] = {"in0", "in1", "in2"};
    for (int i = 0; i < count; i++)
        assert_true(ag_params_add(p, names[i], ndims ? ndims[i] : 4, shapes[i], 0) >= 0);
    assert_int_equal(ag_params_alloc(p, AG_PARAMS_GRAD), 0);
    for (int i = 0; i < count; i++)
        ag_fill_uniform(p->t[i].data, p->t[i].numel, -1.0f, 1.0f, seed * 31 + (uint64_t)i);
}

static float max_abs(const float *x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

static void check_gc(ag_gc_fn f, void *user, ag_params *p, uint64_t seed, const char *what,
                     const shape4 *s) {
    ag_gc_result r;
    assert_int_equal(ag_gradcheck(f, user, p, GC_EPS, seed, &r), 0);
    if (r.max_err > GC_TOL)
        fprintf(stderr, "%s B=%d H=%d T=%d D=%d seed=%llu: error %.3g in input %d (|a|=%.4g |n|=%.4g)\n",
                what, s->B, s->H, s->T, s->D, (unsigned long long)seed, r.max_err, r.worst_tensor,
                r.analytic_norm, r.numeric_norm);
    assert_true(r.max_err <= GC_TOL);
    if (getenv("PARE_GC_VERBOSE"))
        fprintf(stderr, "%-12s B=%d H=%d T=%2d D=%d seed=%llu: error %.2e\n", what, s->B, s->H, s->T,
                s->D, (unsigned long long)seed, r.max_err);
    /* a check of an all-zero gradient proves nothing */
    assert_true(max_abs(p->grad, p->n) > 0.0f);
}

/* max |a - b| / max(max |b|, 1e-30) */
static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0.0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d / fmax(max_abs(b, n), 1e-30);
}

/* A test-local op: out = concat(flatten(a), flatten(b)), so that gradcheck's
 * random contraction of the output is L = sum R1 a + sum R2 b: a loss on P
 * beside a loss on the attention output, without other modules' ops. */
static void concat_backward(ag_node *n) {
    ag_tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    if (a->grad)
        for (size_t i = 0; i < a->numel; i++) a->grad[i] += out->grad[i];
    if (b->grad)
        for (size_t i = 0; i < b->numel; i++) b->grad[i] += out->grad[a->numel + i];
}

static ag_tensor *concat(ag_ctx *c, ag_tensor *a, ag_tensor *b) {
    if (!a || !b) return NULL;
    ag_tensor *out = ag_new(c, 1, (int[]){(int)(a->numel + b->numel)}, "concat");
    if (!out) return NULL;
    memcpy(out->data, a->data, a->numel * sizeof(float));
    memcpy(out->data + a->numel, b->data, b->numel * sizeof(float));
    if (!ag_record(c, "concat", concat_backward, out, a, b, NULL) && ag_error(c)) return NULL;
    return out;
}

/* ------------------------------------------------------ gradient checks */

typedef struct split_args {
    int H, part, nparts;
} split_args;

static ag_tensor *f_split(ag_ctx *c, ag_params *in, void *u) {
    split_args *a = u;
    return ag_split_heads(c, ag_param(in, 0), a->H, a->part, a->nparts);
}
static ag_tensor *f_merge(ag_ctx *c, ag_params *in, void *u) {
    (void)u;
    return ag_merge_heads(c, ag_param(in, 0));
}
static ag_tensor *f_probs(ag_ctx *c, ag_params *in, void *u) {
    (void)u;
    return ag_attn_probs(c, ag_param(in, 0), ag_param(in, 1));
}
static ag_tensor *f_apply(ag_ctx *c, ag_params *in, void *u) {
    (void)u;
    return ag_attn_apply(c, ag_param(in, 0), ag_param(in, 1));
}
static ag_tensor *f_attention(ag_ctx *c, ag_params *in, void *u) {
    (void)u;
    ag_tensor *P = NULL;
    ag_tensor *y = ag_attention(c, ag_param(in, 0), ag_param(in, 1), ag_param(in, 2), &P);
    assert_true(y == NULL || P != NULL);
    return y;
}
/* Both P (read by an outside loss) and the output. */
static ag_tensor *f_attention_and_probs(ag_ctx *c, ag_params *in, void *u) {
    (void)u;
    ag_tensor *P = NULL;
    ag_tensor *y = ag_attention(c, ag_param(in, 0), ag_param(in, 1), ag_param(in, 2), &P);
    return concat(c, P, y);
}
/* Only P is used: the output of attn_apply is ignored. */
static ag_tensor *f_probs_only_via_attention(ag_ctx *c, ag_params *in, void *u) {
    (void)u;
    ag_tensor *P = NULL;
    if (!ag_attention(c, ag_param(in, 0), ag_param(in, 1), ag_param(in, 2), &P)) return NULL;
    return P;
}
/* The whole layout chain: a fused qkv [B, T, 3C] -> heads -> attention -> [B, T, C]. */
static ag_tensor *f_qkv_chain(ag_ctx *c, ag_params *in, void *u) {
    int H = *(int *)u;
    ag_tensor *x = ag_param(in, 0);
    ag_tensor *q = ag_split_heads(c, x, H, 0, 3), *k = ag_split_heads(c, x, H, 1, 3);
    ag_tensor *v = ag_split_heads(c, x, H, 2, 3);
    return ag_merge_heads(c, ag_attention(c, q, k, v, NULL));
}

static void test_gradcheck_split_merge(void **state) {
    (void)state;
    for (size_t si = 0; si < N_SHAPES; si++) {
        const shape4 *s = &k_shapes[si];
        int C = s->H * s->D;
        for (int nparts = 1; nparts <= 3; nparts += 2)
            for (int part = 0; part < nparts; part++) {
                ag_params p;
                int sh[1][4] = {{s->B, s->T, nparts * C, 1}};
                make_inputs(&p, 1, sh, (int[]){3}, 100 + si);
                split_args a = {s->H, part, nparts};
                check_gc(f_split, &a, &p, 7 + si, "split_heads", s);
                ag_params_free(&p);
            }
        ag_params p;
        int sh[1][4] = {{s->B, s->H, s->T, s->D}};
        make_inputs(&p, 1, sh, NULL, 200 + si);
        check_gc(f_merge, NULL, &p, 9 + si, "merge_heads", s);
        ag_params_free(&p);
    }
}

static void test_gradcheck_probs(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= 2; seed++)
        for (size_t si = 0; si < N_SHAPES; si++) {
            const shape4 *s = &k_shapes[si];
            if (s->T == 1) continue; /* P = 1 whatever q, k: no gradient to check (see below) */
            ag_params p;
            int sh[2][4] = {{s->B, s->H, s->T, s->D}, {s->B, s->H, s->T, s->D}};
            make_inputs(&p, 2, sh, NULL, seed * 1000 + si);
            check_gc(f_probs, NULL, &p, seed, "attn_probs", s);
            ag_params_free(&p);
        }
}

/* T = 1: the single probability is 1 and its gradient is exactly zero. */
static void test_probs_single_position(void **state) {
    (void)state;
    ag_params p;
    int sh[2][4] = {{2, 2, 1, 3}, {2, 2, 1, 3}};
    make_inputs(&p, 2, sh, NULL, 5);
    ag_ctx *c = ag_ctx_new();
    ag_tensor *P = ag_attn_probs(c, ag_param(&p, 0), ag_param(&p, 1));
    assert_non_null(P);
    for (int i = 0; i < 4; i++) assert_true(P->data[i] == 1.0f);
    float seed[4] = {1, -2, 3, 0.5f};
    ag_params_zero_grad(&p);
    assert_int_equal(ag_backward_seed(c, P, seed), 0);
    for (size_t i = 0; i < p.n; i++) assert_true(p.grad[i] == 0.0f);
    ag_ctx_free(c);
    ag_params_free(&p);
}

/* P is random (upper triangle too): the upper triangle must be ignored by the
 * forward and receive no gradient, which the finite differences confirm. */
static void test_gradcheck_apply(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= 2; seed++)
        for (size_t si = 0; si < N_SHAPES; si++) {
            const shape4 *s = &k_shapes[si];
            ag_params p;
            int sh[2][4] = {{s->B, s->H, s->T, s->T}, {s->B, s->H, s->T, s->D}};
            make_inputs(&p, 2, sh, NULL, seed * 2000 + si);
            check_gc(f_apply, NULL, &p, seed, "attn_apply", s);
            ag_params_zero_grad(&p);
            ag_ctx *c = ag_ctx_new();
            ag_tensor *y = ag_attn_apply(c, ag_param(&p, 0), ag_param(&p, 1));
            float *R = malloc(y->numel * sizeof(float));
            ag_fill_uniform(R, y->numel, -1.0f, 1.0f, 3);
            ag_backward_seed(c, y, R);
            const ag_tensor *P = ag_param(&p, 0);
            for (int bh = 0; bh < s->B * s->H; bh++)
                for (int i = 0; i < s->T; i++)
                    for (int j = i + 1; j < s->T; j++)
                        assert_true(P->grad[((size_t)bh * s->T + i) * s->T + j] == 0.0f);
            free(R);
            ag_ctx_free(c);
            ag_params_free(&p);
        }
}

static void test_gradcheck_attention(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= 2; seed++)
        for (size_t si = 0; si < N_SHAPES; si++) {
            const shape4 *s = &k_shapes[si];
            ag_params p;
            int sh[3][4] = {{s->B, s->H, s->T, s->D}, {s->B, s->H, s->T, s->D}, {s->B, s->H, s->T, s->D}};
            make_inputs(&p, 3, sh, NULL, seed * 3000 + si);
            if (s->T > 1) /* with T = 1, dq = dk = 0 and out = v */
                check_gc(f_attention, NULL, &p, seed, "attention", s);
            check_gc(f_attention_and_probs, NULL, &p, seed + 10, "attention+P", s);
            ag_params_free(&p);
        }
}

static void test_gradcheck_qkv_chain(void **state) {
    (void)state;
    for (size_t si = 1; si < N_SHAPES; si++) {
        const shape4 *s = &k_shapes[si];
        ag_params p;
        int sh[1][4] = {{s->B, s->T, 3 * s->H * s->D, 1}};
        make_inputs(&p, 1, sh, (int[]){3}, 4000 + si);
        int H = s->H;
        check_gc(f_qkv_chain, &H, &p, 11 + si, "qkv chain", s);
        ag_params_free(&p);
    }
}

/* A loss on P alone (as attention distillation reads it) reaches q and k,
 * and v gets nothing because the attention output is unused. */
static void test_external_loss_on_probs(void **state) {
    (void)state;
    const shape4 s = {2, 2, 6, 3};
    ag_params p;
    int sh[3][4] = {{2, 2, 6, 3}, {2, 2, 6, 3}, {2, 2, 6, 3}};
    make_inputs(&p, 3, sh, NULL, 77);
    check_gc(f_probs_only_via_attention, NULL, &p, 5, "P only", &s);
    /* v's gradient is exactly zero, q's and k's are not */
    ag_ctx *c = ag_ctx_new();
    ag_tensor *P = f_probs_only_via_attention(c, &p, NULL);
    float *R = malloc(P->numel * sizeof(float));
    ag_fill_uniform(R, P->numel, -1.0f, 1.0f, 8);
    ag_params_zero_grad(&p);
    assert_int_equal(ag_backward_seed(c, P, R), 0);
    assert_true(max_abs(ag_param(&p, 0)->grad, p.t[0].numel) > 1e-4f);
    assert_true(max_abs(ag_param(&p, 1)->grad, p.t[1].numel) > 1e-4f);
    assert_true(max_abs(ag_param(&p, 2)->grad, p.t[2].numel) == 0.0f);
    free(R);
    ag_ctx_free(c);
    ag_params_free(&p);
}

/* A deliberately broken softmax backward (the row term dropped, or doubled)
 * fails the check at GC_TOL: the tolerance is tight enough to matter. */
static int g_broken_mode;
static void broken_probs_backward(ag_node *n) {
    ag_tensor *q = n->in[0], *k = n->in[1], *P = n->out;
    int BH = q->shape[0] * q->shape[1], T = q->shape[2], D = q->shape[3];
    /* mode 0: dS = P dP (the row term dropped); mode 1: the right dS, twice the scale */
    float scale = (g_broken_mode == 1 ? 2.0f : 1.0f) / sqrtf((float)D);
    for (int bh = 0; bh < BH; bh++)
        for (int i = 0; i < T; i++) {
            const float *pr = P->data + ((size_t)bh * T + i) * T, *g = P->grad + ((size_t)bh * T + i) * T;
            double dot = 0.0;
            for (int j = 0; j <= i && g_broken_mode == 1; j++) dot += (double)pr[j] * g[j];
            for (int j = 0; j <= i; j++) {
                float ds = scale * pr[j] * (g[j] - (float)dot);
                for (int d = 0; d < D; d++) {
                    q->grad[((size_t)bh * T + i) * D + d] += ds * k->data[((size_t)bh * T + j) * D + d];
                    k->grad[((size_t)bh * T + j) * D + d] += ds * q->data[((size_t)bh * T + i) * D + d];
                }
            }
        }
}
static ag_tensor *f_broken_probs(ag_ctx *c, ag_params *in, void *u) {
    (void)u;
    ag_tensor *q = ag_param(in, 0), *k = ag_param(in, 1);
    ag_tensor *P = ag_new(c, 4, (int[]){q->shape[0], q->shape[1], q->shape[2], q->shape[2]}, "P");
    ag_attn_probs_fwd_ref(P->data, q->data, k->data, q->shape[0] * q->shape[1], q->shape[2],
                          q->shape[3], 1.0f / sqrtf((float)q->shape[3]));
    ag_record(c, "broken_probs", broken_probs_backward, P, q, k, NULL);
    return P;
}
static void test_gradcheck_catches_broken_backward(void **state) {
    (void)state;
    for (g_broken_mode = 0; g_broken_mode < 2; g_broken_mode++) {
        ag_params p;
        int sh[2][4] = {{1, 2, 6, 3}, {1, 2, 6, 3}};
        make_inputs(&p, 2, sh, NULL, 13);
        ag_gc_result r;
        assert_int_equal(ag_gradcheck(f_broken_probs, NULL, &p, GC_EPS, 3, &r), 0);
        if (getenv("PARE_GC_VERBOSE")) fprintf(stderr, "broken mode %d: error %.3g\n", g_broken_mode, r.max_err);
        assert_true(r.max_err > 20 * GC_TOL);
        ag_params_free(&p);
    }
}

/* ------------------------------------------- fast kernels vs references */

typedef struct kbuf {
    int BH, T, D;
    float *q, *k, *v, *dout, *dPext;             /* inputs */
    float *P, *out, *dP, *dq, *dk, *dv;           /* outputs */
} kbuf;

static void kbuf_init(kbuf *b, int BH, int T, int D, uint64_t seed) {
    size_t nx = (size_t)BH * T * D, np = (size_t)BH * T * T;
    b->BH = BH, b->T = T, b->D = D;
    float **xs[] = {&b->q, &b->k, &b->v, &b->dout, &b->out, &b->dq, &b->dk, &b->dv};
    for (size_t i = 0; i < 8; i++) {
        *xs[i] = calloc(nx, sizeof(float));
        assert_non_null(*xs[i]);
    }
    b->P = calloc(np, sizeof(float));
    b->dP = calloc(np, sizeof(float));
    b->dPext = calloc(np, sizeof(float));
    assert_non_null(b->P);
    assert_non_null(b->dP);
    assert_non_null(b->dPext);
    /* q, k in [-2, 2) so that softmax rows are far from uniform */
    ag_fill_uniform(b->q, nx, -2.0f, 2.0f, seed);
    ag_fill_uniform(b->k, nx, -2.0f, 2.0f, seed + 1);
    ag_fill_uniform(b->v, nx, -1.0f, 1.0f, seed + 2);
    ag_fill_uniform(b->dout, nx, -1.0f, 1.0f, seed + 3);
    ag_fill_uniform(b->dPext, np, -1.0f, 1.0f, seed + 4);
    /* dq, dk, dv start non-zero so that "accumulates" is checked too */
    ag_fill_uniform(b->dq, nx, -1.0f, 1.0f, seed + 5);
    ag_fill_uniform(b->dk, nx, -1.0f, 1.0f, seed + 6);
    ag_fill_uniform(b->dv, nx, -1.0f, 1.0f, seed + 7);
}

static void kbuf_free(kbuf *b) {
    float *xs[] = {b->q, b->k, b->v, b->dout, b->out, b->dq, b->dk, b->dv, b->P, b->dP, b->dPext};
    for (size_t i = 0; i < 11; i++) free(xs[i]);
}

/* Forward and backward with the fast kernels (fast = true) or the references;
 * the backward gets dP = dPext (an outside loss) + what attn_apply adds. */
static void kbuf_run(kbuf *b, bool fast, int threads) {
    int BH = b->BH, T = b->T, D = b->D;
    float scale = 1.0f / sqrtf((float)D);
    memcpy(b->dP, b->dPext, (size_t)BH * T * T * sizeof(float));
    if (fast) {
        ag_set_threads(threads);
        float *scratch = malloc((size_t)threads * ag_attn_scratch_floats(T) * sizeof(float));
        assert_non_null(scratch);
        ag_attn_probs_fwd(b->P, b->q, b->k, BH, T, D, scale);
        ag_attn_apply_fwd(b->out, b->P, b->v, BH, T, D);
        ag_attn_apply_bwd(b->dP, b->dv, b->dout, b->P, b->v, BH, T, D);
        ag_attn_probs_bwd(b->dq, b->dk, b->dP, b->P, b->q, b->k, BH, T, D, scale, scratch, threads);
        free(scratch);
        ag_set_threads(1);
    } else {
        ag_attn_probs_fwd_ref(b->P, b->q, b->k, BH, T, D, scale);
        ag_attn_apply_fwd_ref(b->out, b->P, b->v, BH, T, D);
        ag_attn_apply_bwd_ref(b->dP, b->dv, b->dout, b->P, b->v, BH, T, D);
        assert_int_equal(ag_attn_probs_bwd_ref(b->dq, b->dk, b->dP, b->P, b->q, b->k, BH, T, D, scale), 0);
    }
}

static void test_fast_matches_reference(void **state) {
    (void)state;
    /* T: one block, exactly two blocks, a ragged last block; D odd, 16, 32 and
     * 64 (the direct kernels where the CPU has them), then all through ag_sgemm */
    static const int cases[][3] = {{3, 17, 5}, {2, 128, 7}, {4, 131, 16}, {3, 128, 32}, {2, 200, 64}};
    for (size_t cj = 0; cj < 2 * sizeof cases / sizeof cases[0]; cj++) {
        size_t ci = cj % (sizeof cases / sizeof cases[0]);
        ag_attn_direct_set(cj == ci);
        int BH = cases[ci][0], T = cases[ci][1], D = cases[ci][2];
        kbuf f, r;
        kbuf_init(&f, BH, T, D, 50 + ci);
        kbuf_init(&r, BH, T, D, 50 + ci);
        kbuf_run(&f, true, 2);
        kbuf_run(&r, false, 1);
        size_t nx = (size_t)BH * T * D, np = (size_t)BH * T * T;
        double eP = rel_diff(f.P, r.P, np), eo = rel_diff(f.out, r.out, nx);
        double edP = rel_diff(f.dP, r.dP, np), eq = rel_diff(f.dq, r.dq, nx);
        double ek = rel_diff(f.dk, r.dk, nx), ev = rel_diff(f.dv, r.dv, nx);
        if (fmax(fmax(eP, eo), fmax(fmax(edP, eq), fmax(ek, ev))) > 1e-5)
            fprintf(stderr, "BH=%d T=%d D=%d: P %.2g out %.2g dP %.2g dq %.2g dk %.2g dv %.2g\n", BH, T,
                    D, eP, eo, edP, eq, ek, ev);
        assert_true(eP < 1e-5 && eo < 1e-5 && edP < 1e-5);
        assert_true(eq < 1e-5 && ek < 1e-5 && ev < 1e-5);
        kbuf_free(&f);
        kbuf_free(&r);
    }
    ag_attn_direct_set(true);
}

/* The same inputs at 1 and 2 threads give the same bits. */
static void test_thread_count_independent(void **state) {
    (void)state;
    for (int D = 12; D <= 32; D += 20) { /* ag_sgemm's path, the direct one */
    int BH = 5, T = 150;
    kbuf a, b;
    kbuf_init(&a, BH, T, D, 90);
    kbuf_init(&b, BH, T, D, 90);
    kbuf_run(&a, true, 1);
    kbuf_run(&b, true, 2);
    size_t nx = (size_t)BH * T * D * sizeof(float), np = (size_t)BH * T * T * sizeof(float);
    assert_memory_equal(a.P, b.P, np);
    assert_memory_equal(a.out, b.out, nx);
    assert_memory_equal(a.dP, b.dP, np);
    assert_memory_equal(a.dq, b.dq, nx);
    assert_memory_equal(a.dk, b.dk, nx);
    assert_memory_equal(a.dv, b.dv, nx);
    kbuf_free(&a);
    kbuf_free(&b);
    }
}

/* The direct products (attn_direct.c) against their scalar references, bit
 * for bit: every head width, ragged row groups, several panels, the causal
 * bound at several offsets, row strides wider than the rows, assign and
 * accumulate; elements outside what the contract writes stay untouched. */
static void test_direct_kernels_match_reference(void **state) {
    (void)state;
    if (!ag_attn_direct(32)) {
        fprintf(stderr, "test_direct_kernels_match_reference: skipped, this CPU has no AVX-512F "
                        "(the attention ops use ag_sgemm here)\n");
        skip();
    }
    static const int dims[][2] = {{1, 1}, {7, 5}, {64, 64}, {67, 130}, {13, 300}, {64, 128}};
    static const int diags[] = {-1, 0, 3, 64};
    int checked = 0;
    for (int D = 16; D <= 64; D += 16)
        for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
            for (size_t gi = 0; gi < sizeof diags / sizeof diags[0]; gi++)
                for (int acc = 0; acc < 2; acc++) {
                    int m = dims[di][0], n = dims[di][1], diag = diags[gi];
                    int la = (n > D ? n : D) + 3, lb = 3 * D, lc = (n > D ? n : D) + 5;
                    size_t na = (size_t)(m > n ? m : n) * la, nb = (size_t)(m > n ? m : n) * lb;
                    size_t nc = (size_t)(m > n ? m : n) * lc;
                    float *A = malloc(na * sizeof(float)), *Bm = malloc(nb * sizeof(float));
                    float *C1 = malloc(nc * sizeof(float)), *C2 = malloc(nc * sizeof(float));
                    assert_true(A && Bm && C1 && C2);
                    uint64_t seed = 1000 + (uint64_t)checked;
                    ag_fill_uniform(A, na, -1.0f, 1.0f, seed);
                    ag_fill_uniform(Bm, nb, -1.0f, 1.0f, seed + 1);
                    for (int way = 0; way < 3; way++) {
                        ag_fill_uniform(C1, nc, -1.0f, 1.0f, seed + 2);
                        memcpy(C2, C1, nc * sizeof(float));
                        if (way == 0) { /* C[m, D] (+)= A[m, n] B[n, D] */
                            ag_attn_nn(D, m, n, diag, A, la, Bm, lb, acc, C1, lc);
                            ag_attn_nn_ref(D, m, n, diag, A, la, Bm, lb, acc, C2, lc);
                        } else if (way == 1) { /* C[n, D] += A[m, n]^T B[m, D] */
                            ag_attn_tn(D, n, m, diag, A, la, Bm, lb, C1, lc);
                            ag_attn_tn_ref(D, n, m, diag, A, la, Bm, lb, C2, lc);
                        } else { /* C[m, n] (+)= alpha A[m, D] B[n, D]^T */
                            float alpha = acc ? 1.0f : 0.17677669f;
                            ag_attn_nt(D, m, n, diag, alpha, A, la, Bm, lb, acc, C1, lc);
                            ag_attn_nt_ref(D, m, n, diag, alpha, A, la, Bm, lb, acc, C2, lc);
                        }
                        if (memcmp(C1, C2, nc * sizeof(float)) != 0)
                            fprintf(stderr, "direct kernel %d differs: D=%d m=%d n=%d diag=%d acc=%d\n", way, D, m,
                                    n, diag, acc);
                        assert_memory_equal(C1, C2, nc * sizeof(float));
                        checked++;
                    }
                    free(A);
                    free(Bm);
                    free(C1);
                    free(C2);
                }
    assert_int_equal(checked, 4 * 6 * 4 * 2 * 3);
}

/* The attention ops on the direct path (D = 16, where the CPU has AVX-512F):
 * gradient checks of the fused qkv ops and of attn_probs / attn_apply. */
static ag_tensor *f_qkv_fused(ag_ctx *c, ag_params *in, void *u);
static ag_tensor *f_attention_qkv(ag_ctx *c, ag_params *in, void *u);
static void test_gradcheck_direct(void **state) {
    (void)state;
    const shape4 s = {2, 2, 19, 16};
    ag_params p;
    int sh[1][4] = {{s.B, s.T, 3 * s.H * s.D, 1}};
    make_inputs(&p, 1, sh, (int[]){3}, 4300);
    int H = s.H;
    check_gc(f_qkv_fused, &H, &p, 41, "qkv fused D16", &s);
    check_gc(f_attention_qkv, &H, &p, 43, "attention_qkv D16", &s);
    ag_params_free(&p);
    int sa[3][4] = {{s.B, s.H, s.T, s.D}, {s.B, s.H, s.T, s.D}, {s.B, s.H, s.T, s.D}};
    make_inputs(&p, 3, sa, NULL, 4301);
    check_gc(f_attention_and_probs, NULL, &p, 42, "attention D16", &s);
    ag_params_free(&p);
}

/* Rows of P are probabilities: >= 0, summing to 1, exactly 0 above the diagonal. */
static void test_probs_rows(void **state) {
    (void)state;
    ag_params p;
    int B = 2, H = 3, T = 77, D = 8;
    int sh[2][4] = {{B, H, T, D}, {B, H, T, D}};
    make_inputs(&p, 2, sh, NULL, 21);
    for (size_t i = 0; i < p.t[0].numel; i++) p.t[0].data[i] *= 4.0f; /* peaked rows */
    ag_ctx *c = ag_ctx_new();
    ag_tensor *P = ag_attn_probs(c, ag_param(&p, 0), ag_param(&p, 1));
    assert_non_null(P);
    for (int bh = 0; bh < B * H; bh++)
        for (int i = 0; i < T; i++) {
            const float *row = P->data + ((size_t)bh * T + i) * T;
            double sum = 0.0;
            for (int j = 0; j <= i; j++) {
                assert_true(row[j] >= 0.0f);
                sum += row[j];
            }
            assert_true(fabs(sum - 1.0) < 1e-5);
            for (int j = i + 1; j < T; j++) assert_true(row[j] == 0.0f);
        }
    ag_ctx_free(c);
    ag_params_free(&p);
}

/* Scores far apart (exp underflows, the clamp at -87 in the fast exp) still
 * give rows summing to 1 that match the reference; a NaN in q is not
 * swallowed: its row of P is NaN. */
static void test_probs_extreme_and_nan(void **state) {
    (void)state;
    int BH = 2, T = 70, D = 5;
    size_t nx = (size_t)BH * T * D, np = (size_t)BH * T * T;
    float *q = malloc(nx * sizeof(float)), *k = malloc(nx * sizeof(float));
    float *P = malloc(np * sizeof(float)), *R = malloc(np * sizeof(float));
    ag_fill_uniform(q, nx, -300.0f, 300.0f, 1);
    ag_fill_uniform(k, nx, -1.0f, 1.0f, 2);
    float scale = 1.0f / sqrtf((float)D);
    ag_attn_probs_fwd(P, q, k, BH, T, D, scale);
    ag_attn_probs_fwd_ref(R, q, k, BH, T, D, scale);
    for (int r = 0; r < BH * T; r++) {
        double sum = 0.0;
        for (int j = 0; j < T; j++) {
            assert_true(isfinite(P[(size_t)r * T + j]));
            assert_true(fabsf(P[(size_t)r * T + j] - R[(size_t)r * T + j]) < 1e-5f);
            sum += P[(size_t)r * T + j];
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    q[3 * D + 1] = NAN; /* head 0, row 3 */
    ag_attn_probs_fwd(P, q, k, BH, T, D, scale);
    for (int j = 0; j <= 3; j++) assert_true(isnan(P[3 * T + j]));
    for (int j = 0; j < T; j++) assert_false(isnan(P[4 * T + j])); /* other rows untouched */
    free(q);
    free(k);
    free(P);
    free(R);
}

/* The fused ops on a qkv [B, T, 3C]: probabilities and output, both read. */
static ag_tensor *f_qkv_fused(ag_ctx *c, ag_params *in, void *u) {
    int H = *(int *)u;
    ag_tensor *x = ag_param(in, 0);
    ag_tensor *P = ag_attn_probs_qkv(c, x, H);
    return concat(c, P, ag_attn_apply_merge(c, P, x));
}
/* The output alone. */
static ag_tensor *f_qkv_fused_out(ag_ctx *c, ag_params *in, void *u) {
    int H = *(int *)u;
    ag_tensor *x = ag_param(in, 0);
    return ag_attn_apply_merge(c, ag_attn_probs_qkv(c, x, H), x);
}
/* The output of the one-op form (ag_attention_qkv). */
static ag_tensor *f_attention_qkv(ag_ctx *c, ag_params *in, void *u) {
    return ag_attention_qkv(c, ag_param(in, 0), *(int *)u);
}

static void test_gradcheck_qkv_fused(void **state) {
    (void)state;
    for (size_t si = 1; si < N_SHAPES; si++) {
        const shape4 *s = &k_shapes[si];
        ag_params p;
        int sh[1][4] = {{s->B, s->T, 3 * s->H * s->D, 1}};
        make_inputs(&p, 1, sh, (int[]){3}, 4100 + si);
        int H = s->H;
        check_gc(f_qkv_fused, &H, &p, 21 + si, "qkv fused", s);
        check_gc(f_qkv_fused_out, &H, &p, 31 + si, "qkv fused out", s);
        check_gc(f_attention_qkv, &H, &p, 51 + si, "attention_qkv", s);
        ag_params_free(&p);
    }
}

/* The fused ops against split_heads + attn_probs/attn_apply + merge_heads:
 * P, the output and the gradients of qkv and P (a loss on both) at 2 threads,
 * bit for bit. Shapes: one block, a ragged second block, D odd. */
static void test_qkv_fused_matches_composition(void **state) {
    (void)state;
    static const int cases[][4] = {{2, 3, 17, 5}, {2, 4, 130, 8}, {1, 2, 64, 32}};
    int saved = omp_get_max_threads();
    omp_set_num_threads(2);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int B = cases[ci][0], H = cases[ci][1], T = cases[ci][2], D = cases[ci][3], C = H * D;
        ag_params p;
        int sh[1][4] = {{B, T, 3 * C, 1}};
        make_inputs(&p, 1, sh, (int[]){3}, 4200 + ci);
        size_t np = (size_t)B * H * T * T, no = (size_t)B * T * C, nx = (size_t)B * T * 3 * C;
        float *R = malloc((np + no) * sizeof(float));
        float *res[2][4]; /* P, out, dqkv, dP */
        assert_non_null(R);
        ag_fill_uniform(R, np + no, -1.0f, 1.0f, 77 + ci);
        for (int way = 0; way < 2; way++) {
            ag_params_zero_grad(&p);
            ag_ctx *c = ag_ctx_new();
            ag_tensor *x = ag_param(&p, 0), *P, *y;
            if (way == 0) {
                ag_tensor *q = ag_split_heads(c, x, H, 0, 3), *k = ag_split_heads(c, x, H, 1, 3);
                ag_tensor *v = ag_split_heads(c, x, H, 2, 3);
                y = ag_merge_heads(c, ag_attention(c, q, k, v, &P));
            } else {
                P = ag_attn_probs_qkv(c, x, H);
                y = ag_attn_apply_merge(c, P, x);
            }
            assert_non_null(y);
            assert_int_equal(y->ndim, 3);
            assert_int_equal(y->shape[2], C);
            assert_int_equal(ag_backward_seed(c, concat(c, P, y), R), 0);
            float *bufs[4] = {P->data, y->data, x->grad, P->grad};
            size_t ns[4] = {np, no, nx, np};
            for (int i = 0; i < 4; i++) {
                res[way][i] = malloc(ns[i] * sizeof(float));
                assert_non_null(res[way][i]);
                memcpy(res[way][i], bufs[i], ns[i] * sizeof(float));
            }
            ag_ctx_free(c);
        }
        size_t ns[4] = {np, no, nx, np};
        for (int i = 0; i < 4; i++) {
            assert_true(max_abs(res[0][i], ns[i]) > 0.0f);
            assert_memory_equal(res[0][i], res[1][i], ns[i] * sizeof(float));
            free(res[0][i]);
            free(res[1][i]);
        }
        free(R);
        ag_params_free(&p);
    }
    omp_set_num_threads(saved);
}

/* ag_attention_qkv against attn_probs_qkv + attn_apply_merge: the output and
 * qkv's gradient at 2 threads, bit for bit, on the direct path (D = 16, 32;
 * T of one block, a ragged second block) and on the ag_sgemm path (D = 5, or
 * the direct kernels switched off), where it records the two ops. */
static void test_attention_qkv_matches_two_ops(void **state) {
    (void)state;
    static const int cases[][5] = {{2, 3, 17, 16, 1}, {2, 2, 130, 32, 1}, {1, 2, 64, 32, 0}, {2, 3, 17, 5, 1}};
    int saved = omp_get_max_threads();
    omp_set_num_threads(2);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int B = cases[ci][0], H = cases[ci][1], T = cases[ci][2], D = cases[ci][3], C = H * D;
        ag_attn_direct_set(cases[ci][4] != 0);
        ag_params p;
        int sh[1][4] = {{B, T, 3 * C, 1}};
        make_inputs(&p, 1, sh, (int[]){3}, 4400 + ci);
        size_t no = (size_t)B * T * C, nx = (size_t)B * T * 3 * C;
        float *R = malloc(no * sizeof(float)), *res[2][2];
        assert_non_null(R);
        ag_fill_uniform(R, no, -1.0f, 1.0f, 97 + ci);
        for (int way = 0; way < 2; way++) {
            ag_params_zero_grad(&p);
            ag_ctx *c = ag_ctx_new();
            ag_tensor *x = ag_param(&p, 0);
            ag_tensor *y = way == 0 ? ag_attn_apply_merge(c, ag_attn_probs_qkv(c, x, H), x) : ag_attention_qkv(c, x, H);
            assert_non_null(y);
            assert_int_equal(c->n_nodes, way == 1 && ag_attn_direct(D) ? 1 : 2);
            assert_int_equal(ag_backward_seed(c, y, R), 0);
            float *bufs[2] = {y->data, x->grad};
            size_t ns[2] = {no, nx};
            for (int i = 0; i < 2; i++) {
                res[way][i] = malloc(ns[i] * sizeof(float));
                assert_non_null(res[way][i]);
                memcpy(res[way][i], bufs[i], ns[i] * sizeof(float));
            }
            ag_ctx_free(c);
        }
        size_t ns[2] = {no, nx};
        for (int i = 0; i < 2; i++) {
            assert_true(max_abs(res[0][i], ns[i]) > 0.0f);
            assert_memory_equal(res[0][i], res[1][i], ns[i] * sizeof(float));
            free(res[0][i]);
            free(res[1][i]);
        }
        free(R);
        ag_params_free(&p);
    }
    ag_attn_direct_set(true);
    omp_set_num_threads(saved);
}

/* Layout: split then merge of a [B, T, C] tensor is the identity, and part p
 * of a fused [B, T, 3C] picks channels [pC, (p+1)C). */
static void test_split_merge_layout(void **state) {
    (void)state;
    int B = 2, T = 3, H = 2, D = 3, C = H * D;
    ag_ctx *c = ag_ctx_new();
    ag_tensor *x = ag_new(c, 3, (int[]){B, T, 3 * C}, "x");
    for (size_t i = 0; i < x->numel; i++) x->data[i] = (float)i;
    for (int part = 0; part < 3; part++) {
        ag_tensor *h = ag_split_heads(c, x, H, part, 3);
        assert_int_equal(h->shape[0], B);
        assert_int_equal(h->shape[1], H);
        assert_int_equal(h->shape[2], T);
        assert_int_equal(h->shape[3], D);
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < H; hh++)
                for (int t = 0; t < T; t++)
                    for (int d = 0; d < D; d++)
                        assert_true(h->data[(((size_t)b * H + hh) * T + t) * D + d] ==
                                    x->data[((size_t)b * T + t) * 3 * C + part * C + hh * D + d]);
        ag_tensor *m = ag_merge_heads(c, h);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                assert_memory_equal(m->data + ((size_t)b * T + t) * C,
                                    x->data + ((size_t)b * T + t) * 3 * C + part * C, C * sizeof(float));
    }
    ag_ctx_free(c);
}

/* NULL in, NULL out; inference mode records nothing. */
static void test_null_and_inference(void **state) {
    (void)state;
    ag_ctx *c = ag_ctx_new();
    assert_null(ag_split_heads(c, NULL, 2, 0, 3));
    assert_null(ag_merge_heads(c, NULL));
    assert_null(ag_attn_probs(c, NULL, NULL));
    assert_null(ag_attn_apply(c, NULL, NULL));
    assert_null(ag_attn_probs_qkv(c, NULL, 2));
    assert_null(ag_attn_apply_merge(c, NULL, NULL));
    assert_null(ag_attention_qkv(c, NULL, 2));
    ag_tensor *P = (ag_tensor *)1;
    assert_null(ag_attention(c, NULL, NULL, NULL, &P));
    assert_null(P);
    ag_params p;
    int sh[3][4] = {{1, 2, 5, 3}, {1, 2, 5, 3}, {1, 2, 5, 3}};
    make_inputs(&p, 3, sh, NULL, 3);
    ag_set_grad(c, false);
    ag_tensor *y = ag_attention(c, ag_param(&p, 0), ag_param(&p, 1), ag_param(&p, 2), &P);
    assert_non_null(y);
    assert_null(y->grad);
    assert_null(P->grad);
    assert_int_equal(c->n_nodes, 0);
    ag_params_free(&p);
    ag_ctx_free(c);
}

/* sgemm called by two threads at once from inside a parallel region gives
 * the same bits as the same calls made one after another outside. */
static void test_sgemm_inside_parallel_region(void **state) {
    (void)state;
    int M = 96, N = 80, K = 64;
    float *A = malloc(2 * (size_t)M * K * sizeof(float)), *Bm = malloc((size_t)K * N * sizeof(float));
    float *C1 = calloc(2 * (size_t)M * N, sizeof(float)), *C2 = calloc(2 * (size_t)M * N, sizeof(float));
    ag_fill_uniform(A, 2 * (size_t)M * K, -1.0f, 1.0f, 1);
    ag_fill_uniform(Bm, (size_t)K * N, -1.0f, 1.0f, 2);
    ag_set_threads(2);
    for (int i = 0; i < 2; i++)
        ag_sgemm(false, false, M, N, K, 1.0f, A + (size_t)i * M * K, K, Bm, N, 0.0f, C1 + (size_t)i * M * N, N);
    ag_sgemm_stats_reset();
    ag_sgemm_profile(true);
#pragma omp parallel for num_threads(2)
    for (int i = 0; i < 2; i++)
        ag_sgemm(false, false, M, N, K, 1.0f, A + (size_t)i * M * K, K, Bm, N, 0.0f, C2 + (size_t)i * M * N, N);
    ag_sgemm_profile(false);
    ag_sgemm_stats st = ag_sgemm_stats_get();
    ag_set_threads(1);
    assert_memory_equal(C1, C2, 2 * (size_t)M * N * sizeof(float));
    /* the profiler files both calls as made inside a parallel region */
    assert_int_equal(st.calls, 2);
    assert_int_equal(st.inner_calls, 2);
    assert_true(st.inner_flops == 2.0 * 2.0 * M * N * K);
    assert_true(st.seconds == 0.0 && st.inner_thread_seconds > 0.0);
    free(A);
    free(Bm);
    free(C1);
    free(C2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck_split_merge),
        cmocka_unit_test(test_gradcheck_probs),
        cmocka_unit_test(test_probs_single_position),
        cmocka_unit_test(test_gradcheck_apply),
        cmocka_unit_test(test_gradcheck_attention),
        cmocka_unit_test(test_gradcheck_qkv_chain),
        cmocka_unit_test(test_external_loss_on_probs),
        cmocka_unit_test(test_gradcheck_catches_broken_backward),
        cmocka_unit_test(test_fast_matches_reference),
        cmocka_unit_test(test_thread_count_independent),
        cmocka_unit_test(test_direct_kernels_match_reference),
        cmocka_unit_test(test_gradcheck_direct),
        cmocka_unit_test(test_probs_rows),
        cmocka_unit_test(test_probs_extreme_and_nan),
        cmocka_unit_test(test_split_merge_layout),
        cmocka_unit_test(test_gradcheck_qkv_fused),
        cmocka_unit_test(test_qkv_fused_matches_composition),
        cmocka_unit_test(test_attention_qkv_matches_two_ops),
        cmocka_unit_test(test_null_and_inference),
        cmocka_unit_test(test_sgemm_inside_parallel_region),
    };
    return cmocka_run_group_tests_name("attention", tests, NULL, NULL);
}
