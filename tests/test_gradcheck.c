/* test_gradcheck.c - every op's backward against central finite differences.
 *
 * TOLERANCE: vector relative error < GC_TOL = 1e-3 with step GC_EPS = 1e-2
 * (see gradcheck_common.h for why these values pass in float32 and still
 * fail a wrong factor of 2 or a missing term).
 *
 * The check is table-driven: one row per op and shape, each run for three
 * seeds (the inputs, the ids/targets and the contraction weights R all come
 * from the seed). Adding an op means adding a function `f_<op>` and rows.
 * Each row is its own cmocka test, named after the row.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/params.h"
#include "autograd/rng.h"
#include "gradcheck_common.h"

#define MAX_IDS 64
#define N_SEEDS 3

typedef struct gc_case gc_case;

typedef struct gc_user {
    const gc_case *cs;
    int ids[MAX_IDS]; /* token ids (embedding) or targets (cross-entropy) */
} gc_user;

struct gc_case {
    const char *name;
    ag_gc_fn f;
    int nin;                             /* inputs, all requiring grad */
    struct { int ndim, shape[4]; } in[3];
    int iarg[5];                         /* op arguments (transposes, shapes, ...) */
    float farg;                          /* op argument (scale, eps, temperature) */
    int nids, id_range;                  /* ids drawn from [0, id_range) */
    int ignore_every;                    /* with ids: about 1 in this many set to -1 */
    float lo, hi;                        /* inputs uniform in [lo, hi) */
    bool away_from_zero;                 /* map x to sign(x) (0.05 + |x|) */
};

#define T0() ag_param(in, 0)
#define T1() ag_param(in, 1)
#define T2() (in->count > 2 ? ag_param(in, 2) : NULL)

static ag_tensor *f_matmul(ag_ctx *c, ag_params *in, void *user) {
    const gc_case *k = ((gc_user *)user)->cs;
    return ag_matmul(c, T0(), T1(), k->iarg[0], k->iarg[1]);
}
static ag_tensor *f_linear(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return ag_linear(c, T0(), T1(), T2());
}
static ag_tensor *f_add(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return ag_add(c, T0(), T1());
}
static ag_tensor *f_mul(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return ag_mul(c, T0(), T1());
}
/* x used twice in one op: both contributions must arrive */
static ag_tensor *f_mul_self(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return ag_mul(c, T0(), T0());
}
static ag_tensor *f_scale(ag_ctx *c, ag_params *in, void *user) {
    return ag_scale(c, T0(), ((gc_user *)user)->cs->farg);
}
static ag_tensor *f_gelu(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return ag_gelu(c, T0());
}
/* reshape of an intermediate (gelu) output, then a broadcast mul */
static ag_tensor *f_reshape(ag_ctx *c, ag_params *in, void *user) {
    const gc_case *k = ((gc_user *)user)->cs;
    ag_tensor *y = ag_reshape(c, ag_gelu(c, T0()), k->iarg[0], k->iarg + 1);
    return ag_mul(c, y, T1());
}
static ag_tensor *f_embedding(ag_ctx *c, ag_params *in, void *user) {
    gc_user *u = user;
    return ag_embedding(c, T0(), u->ids, 2, u->cs->iarg);
}
static ag_tensor *f_layernorm(ag_ctx *c, ag_params *in, void *user) {
    return ag_layernorm(c, T0(), T1(), T2(), ((gc_user *)user)->cs->farg);
}
static ag_tensor *f_softmax(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return ag_softmax(c, T0());
}
static ag_tensor *f_cross_entropy(ag_ctx *c, ag_params *in, void *user) {
    return ag_cross_entropy(c, T0(), ((gc_user *)user)->ids, -1);
}
static ag_tensor *f_kl(ag_ctx *c, ag_params *in, void *user) {
    return ag_kl_div(c, T0(), T1(), ((gc_user *)user)->cs->farg);
}
/* probabilities made by softmax, so the rows are distributions; the second
 * input has masked (zero) entries in its upper triangle, as causal attention */
static ag_tensor *f_prob_kl(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    ag_tensor *t = T1(), *mask = ag_new(c, t->ndim, t->shape, "causal"); /* a constant: no gradient */
    if (!mask) return NULL;
    int T = ag_cols(t);
    for (size_t r = 0; r < ag_rows(t); r++)
        for (int j = 0; j < T; j++) mask->data[r * T + j] = j > (int)(r % (size_t)T) ? -1e30f : 0.0f;
    return ag_prob_kl(c, ag_softmax(c, T0()), ag_softmax(c, ag_add(c, t, mask)));
}
/* MiniLM's value relation: KL between softmax(V V^T / sqrt(d)) (causal) of
 * two fused qkv tensors [B, T, 3A], over 2 relation heads */
static ag_tensor *f_value_relation(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    ag_tensor *vs = ag_split_heads(c, T0(), 2, 2, 3), *vt = ag_split_heads(c, T1(), 2, 2, 3);
    return ag_prob_kl(c, ag_attn_probs(c, vs, vs), ag_attn_probs(c, vt, vt));
}
/* hidden-state distillation through a projection: mse(h W^T, h_teacher) */
static ag_tensor *f_hidden_projection(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return ag_mse(c, ag_linear(c, T0(), T1(), NULL), T2());
}
static ag_tensor *f_mse(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return ag_mse(c, T0(), T1());
}
static ag_tensor *f_l1(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return ag_l1(c, T0());
}
static ag_tensor *f_sum(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return ag_sum(c, T0());
}
static ag_tensor *f_mean(ag_ctx *c, ag_params *in, void *user) {
    (void)user;
    return ag_mean(c, T0());
}
/* a small model: embedding -> layernorm -> linear -> gelu -> linear -> cross-entropy,
 * so every backward also runs on intermediate (non-leaf) tensors */
static ag_tensor *f_chain(ag_ctx *c, ag_params *in, void *user) {
    gc_user *u = user;
    ag_tensor *h = ag_embedding(c, ag_param(in, 0), u->ids, 2, u->cs->iarg);
    h = ag_layernorm(c, h, ag_param(in, 1), NULL, 1e-5f);
    h = ag_gelu(c, ag_linear(c, h, ag_param(in, 2), NULL));
    h = ag_matmul(c, h, ag_param(in, 2), false, false);
    return ag_cross_entropy(c, h, u->ids, -1);
}

/* Fake quantization where it is differentiable: every input is clipped, so
 * out = (lo - z) s or (hi - z) s is smooth in the scale (LSQ) or the clipping
 * level (PACT) and constant in x; there the papers' gradients are true
 * derivatives (LSQ's with gradient scale 1). x' = 40 x with |x| >= 0.05 lies
 * beyond every grid used here, p' = 0.05 + 0.05 p^2 is a positive scale or
 * level. iarg: mode, per row (one scale per row of x), zero point (then the
 * grid [0, 15], else [-7, 7]). Inside the grid the STE, LSQ and PACT
 * gradients are not derivatives of the forward: tests/test_quant_ops.c checks
 * them against the papers' formulas element by element. */
static ag_tensor *f_fake_quant(ag_ctx *c, ag_params *in, void *user) {
    const gc_case *k = ((gc_user *)user)->cs;
    ag_tensor *x = ag_scale(c, T0(), 40.0f);
    int rows = (int)(x->numel / (size_t)x->shape[x->ndim - 1]), n = k->iarg[1] ? rows : 1;
    ag_tensor *p;
    if (k->iarg[0] == AG_FQ_STE) { /* an observer's scale: a constant */
        p = ag_new(c, 1, &n, "scale");
        for (int i = 0; i < n; i++) p->data[i] = 0.07f + 0.01f * (float)i;
    } else {
        ag_tensor *c0 = ag_new(c, 1, &n, "c0");
        for (int i = 0; i < n; i++) c0->data[i] = 0.05f;
        p = ag_add(c, ag_scale(c, ag_mul(c, T1(), T1()), 0.05f), c0);
    }
    int32_t zero[16];
    for (int i = 0; i < 16; i++) zero[i] = k->iarg[2];
    ag_fq q = {k->iarg[2] ? 0 : -7, k->iarg[2] ? 15 : 7, k->iarg[1] ? x->shape[x->ndim - 1] : (int)x->numel,
               k->iarg[2] ? zero : NULL, k->iarg[0], 1.0f, NULL, NULL, NULL};
    return ag_fake_quant(c, x, p, &q);
}

#define S1(a) {1, {a}}
#define S2(a, b) {2, {a, b}}
#define S3(a, b, d) {3, {a, b, d}}
#define S4(a, b, d, e) {4, {a, b, d, e}}

static const gc_case cases[] = {
    /* matmul: the four transpose combinations on 2-D operands */
    {"matmul_nn", f_matmul, 2, {S2(3, 4), S2(4, 5)}, {0, 0}, 0, 0, 0, 0, -1, 1, false},
    {"matmul_tn", f_matmul, 2, {S2(4, 3), S2(4, 5)}, {1, 0}, 0, 0, 0, 0, -1, 1, false},
    {"matmul_nt", f_matmul, 2, {S2(3, 4), S2(5, 4)}, {0, 1}, 0, 0, 0, 0, -1, 1, false},
    {"matmul_tt", f_matmul, 2, {S2(4, 3), S2(5, 4)}, {1, 1}, 0, 0, 0, 0, -1, 1, false},
    {"matmul_1x1", f_matmul, 2, {S2(1, 7), S2(7, 1)}, {0, 0}, 0, 0, 0, 0, -1, 1, false},
    /* leading dimensions folded into M (2-D b, no ta) */
    {"matmul_fold_n", f_matmul, 2, {S3(2, 3, 4), S2(4, 5)}, {0, 0}, 0, 0, 0, 0, -1, 1, false},
    {"matmul_fold_t", f_matmul, 2, {S4(2, 2, 3, 4), S2(5, 4)}, {0, 1}, 0, 0, 0, 0, -1, 1, false},
    /* ta with a 2-D b: a loop over a's batch against one shared b */
    {"matmul_shared_b_tn", f_matmul, 2, {S3(2, 4, 3), S2(4, 5)}, {1, 0}, 0, 0, 0, 0, -1, 1, false},
    /* batched: b has a's leading dimensions */
    {"matmul_batch_nn", f_matmul, 2, {S3(2, 3, 4), S3(2, 4, 5)}, {0, 0}, 0, 0, 0, 0, -1, 1, false},
    {"matmul_batch_tn", f_matmul, 2, {S3(2, 4, 3), S3(2, 4, 5)}, {1, 0}, 0, 0, 0, 0, -1, 1, false},
    {"matmul_batch_nt", f_matmul, 2, {S4(2, 2, 3, 4), S4(2, 2, 5, 4)}, {0, 1}, 0, 0, 0, 0, -1, 1, false},
    {"matmul_batch_tt", f_matmul, 2, {S3(3, 4, 3), S3(3, 5, 4)}, {1, 1}, 0, 0, 0, 0, -1, 1, false},
    /* linear */
    {"linear_bias", f_linear, 3, {S2(5, 4), S2(3, 4), S1(3)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"linear_nobias", f_linear, 2, {S2(5, 4), S2(3, 4)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"linear_bias_3d", f_linear, 3, {S3(2, 3, 6), S2(4, 6), S1(4)}, {0}, 0, 0, 0, 0, -1, 1, false},
    /* add and mul: same shape, bias [C] over [B,T,C], positions [T,C] over [B,T,C] */
    {"add_same", f_add, 2, {S2(3, 5), S2(3, 5)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"add_bias", f_add, 2, {S3(2, 3, 4), S1(4)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"add_pos", f_add, 2, {S3(2, 3, 4), S2(3, 4)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"mul_same", f_mul, 2, {S2(3, 5), S2(3, 5)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"mul_bias", f_mul, 2, {S3(2, 3, 4), S1(4)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"mul_pos", f_mul, 2, {S4(2, 2, 3, 4), S2(3, 4)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"mul_self", f_mul_self, 1, {S2(3, 4)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"scale", f_scale, 1, {S3(2, 3, 4)}, {0}, -1.5f, 0, 0, 0, -1, 1, false},
    {"scale_small", f_scale, 1, {S1(7)}, {0}, 0.25f, 0, 0, 0, -1, 1, false},
    {"gelu", f_gelu, 1, {S2(4, 6)}, {0}, 0, 0, 0, 0, -3, 3, false},
    {"gelu_4d", f_gelu, 1, {S4(2, 1, 3, 5)}, {0}, 0, 0, 0, 0, -2, 2, false},
    {"reshape", f_reshape, 2, {S2(2, 6), S1(4)}, {2, 3, 4}, 0, 0, 0, 0, -1, 1, false},
    {"reshape_3d", f_reshape, 2, {S3(2, 3, 4), S2(6, 2)}, {3, 2, 6, 2}, 0, 0, 0, 0, -1, 1, false},
    /* embedding: ids from [0, V) with repeats (so rows accumulate); iarg = ids shape */
    {"embedding", f_embedding, 1, {S2(5, 4)}, {2, 6}, 0, 12, 5, 0, -1, 1, false},
    {"embedding_b1", f_embedding, 1, {S2(9, 3)}, {1, 7}, 0, 7, 9, 0, -1, 1, false},
    /* layer norm with and without bias */
    {"layernorm", f_layernorm, 3, {S2(4, 8), S1(8), S1(8)}, {0}, 1e-5f, 0, 0, 0, -2, 2, false},
    {"layernorm_nobias", f_layernorm, 2, {S3(2, 3, 6), S1(6), S1(6)}, {0}, 1e-5f, 0, 0, 0, -2, 2, false},
    {"layernorm_wide", f_layernorm, 3, {S2(2, 33), S1(33), S1(33)}, {0}, 1e-5f, 0, 0, 0, -2, 2, false},
    {"softmax", f_softmax, 1, {S2(4, 7)}, {0}, 0, 0, 0, 0, -3, 3, false},
    {"softmax_3d", f_softmax, 1, {S3(2, 3, 5)}, {0}, 0, 0, 0, 0, -2, 2, false},
    /* cross-entropy: targets in [0, V), about one in three ignored (-1) */
    {"cross_entropy", f_cross_entropy, 1, {S2(6, 5)}, {0}, 0, 6, 5, 3, -3, 3, false},
    {"cross_entropy_3d", f_cross_entropy, 1, {S3(2, 4, 9)}, {0}, 0, 8, 9, 4, -2, 2, false},
    {"cross_entropy_noignore", f_cross_entropy, 1, {S2(5, 3)}, {0}, 0, 5, 3, 0, -2, 2, false},
    /* KL: student and teacher both require grad, three temperatures */
    {"kl_tau1", f_kl, 2, {S2(4, 6), S2(4, 6)}, {0}, 1.0f, 0, 0, 0, -2, 2, false},
    {"kl_tau2", f_kl, 2, {S3(2, 3, 5), S3(2, 3, 5)}, {0}, 2.0f, 0, 0, 0, -3, 3, false},
    {"kl_tau05", f_kl, 2, {S2(3, 7), S2(3, 7)}, {0}, 0.5f, 0, 0, 0, -1, 1, false},
    {"prob_kl", f_prob_kl, 2, {S2(4, 5), S2(4, 5)}, {0}, 0, 0, 0, 0, -2, 2, false},
    {"prob_kl_rows", f_prob_kl, 2, {S3(2, 3, 3), S3(2, 3, 3)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"value_relation", f_value_relation, 2, {S3(1, 4, 12), S3(1, 4, 12)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"hidden_projection", f_hidden_projection, 3, {S3(2, 3, 4), S2(6, 4), S3(2, 3, 6)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"mse", f_mse, 2, {S2(4, 5), S2(4, 5)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"mse_3d", f_mse, 2, {S3(2, 2, 3), S3(2, 2, 3)}, {0}, 0, 0, 0, 0, -2, 2, false},
    /* L1: inputs kept at least 0.05 (> GC_EPS) away from the kink at 0 */
    {"l1", f_l1, 1, {S2(4, 5)}, {0}, 0, 0, 0, 0, -1, 1, true},
    {"l1_3d", f_l1, 1, {S3(2, 3, 3)}, {0}, 0, 0, 0, 0, -1, 1, true},
    {"sum", f_sum, 1, {S2(3, 5)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"sum_4d", f_sum, 1, {S4(2, 1, 2, 3)}, {0}, 0, 0, 0, 0, -2, 2, false},
    {"mean", f_mean, 1, {S3(2, 3, 4)}, {0}, 0, 0, 0, 0, -1, 1, false},
    {"mean_1d", f_mean, 1, {S1(9)}, {0}, 0, 0, 0, 0, -2, 2, false},
    /* table [V, C], ln weight [C], w [C, C]; ids [2, 4] in [0, V), some ignored as targets */
    {"chain", f_chain, 3, {S2(6, 6), S1(6), S2(6, 6)}, {2, 4}, 0, 8, 6, 0, -1, 1, false},
    /* fake quantization, clipped inputs (see f_fake_quant) */
    {"fake_quant_ste", f_fake_quant, 1, {S2(3, 8)}, {AG_FQ_STE, 0, 0}, 0, 0, 0, 0, -1, 1, true},
    {"fake_quant_ste_rows_asym", f_fake_quant, 1, {S2(4, 6)}, {AG_FQ_STE, 1, 3}, 0, 0, 0, 0, -1, 1, true},
    {"fake_quant_lsq", f_fake_quant, 2, {S2(3, 8), S1(1)}, {AG_FQ_LSQ, 0, 0}, 0, 0, 0, 0, -1, 1, true},
    {"fake_quant_lsq_rows_asym", f_fake_quant, 2, {S3(2, 2, 6), S1(4)}, {AG_FQ_LSQ, 1, 3}, 0, 0, 0, 0, -1, 1, true},
    {"fake_quant_pact", f_fake_quant, 2, {S2(4, 5), S1(1)}, {AG_FQ_PACT, 0, 0}, 0, 0, 0, 0, -1, 1, true},
    {"fake_quant_pact_rows", f_fake_quant, 2, {S2(3, 7), S1(3)}, {AG_FQ_PACT, 1, 0}, 0, 0, 0, 0, -1, 1, true},
};

#define N_CASES (sizeof cases / sizeof cases[0])

/* Builds the inputs of case k for one seed and runs the check. */
static int run_check(const gc_case *k, uint64_t seed, ag_gc_result *res) {
    ag_params p;
    ag_params_init(&p);
    char name[16];
    for (int i = 0; i < k->nin; i++) {
        snprintf(name, sizeof name, "in%d", i);
        assert_true(ag_params_add(&p, name, k->in[i].ndim, k->in[i].shape, 0) >= 0);
    }
    assert_int_equal(ag_params_alloc(&p, AG_PARAMS_GRAD), 0);
    gc_user u = {.cs = k};
    for (int i = 0; i < k->nin; i++) {
        ag_tensor *t = ag_param(&p, i);
        ag_fill_uniform(t->data, t->numel, k->lo, k->hi, seed * 1000 + (uint64_t)i);
        if (k->away_from_zero)
            for (size_t j = 0; j < t->numel; j++)
                t->data[j] = t->data[j] < 0 ? t->data[j] - 0.05f : t->data[j] + 0.05f;
        /* layer norm weights around 1, so the normalised output dominates */
        if (k->f == f_layernorm && i == 1)
            for (size_t j = 0; j < t->numel; j++) t->data[j] += 1.0f;
    }
    ag_rng r;
    ag_rng_seed(&r, seed ^ 0x1d5ULL);
    assert_true(k->nids <= MAX_IDS);
    for (int i = 0; i < k->nids; i++) {
        u.ids[i] = (int)ag_rng_below(&r, (uint64_t)k->id_range);
        if (k->ignore_every && ag_rng_below(&r, (uint64_t)k->ignore_every) == 0) u.ids[i] = -1;
    }
    if (k->f == f_cross_entropy && k->ignore_every) u.ids[0] = -1; /* at least one ignored */
    int rc = ag_gradcheck(k->f, &u, &p, GC_EPS, seed, res);
    ag_params_free(&p);
    return rc;
}

static void test_case(void **state) {
    const gc_case *k = *state;
    for (uint64_t seed = 1; seed <= N_SEEDS; seed++) {
        ag_gc_result res;
        int rc = run_check(k, seed, &res);
        print_message("%-24s seed %d: max rel err %.2e (input %d, |analytic| %.3g, |numeric| %.3g)\n",
                      k->name, (int)seed, res.max_err, res.worst_tensor, res.analytic_norm,
                      res.numeric_norm);
        assert_int_equal(rc, 0);
        assert_true(res.max_err < GC_TOL);
        assert_true(res.evaluations > 1);
    }
}

/* Both broken ops must score above the tolerance: the check catches a wrong
 * factor of 2 and a missing product-rule term. (test_gradcheck_broken shows
 * the same from the other side, as an expected failure.) */
static void test_broken_ops_exceed_tolerance(void **state) {
    (void)state;
    ag_gc_fn fns[2] = {gc_broken_double_fn, gc_broken_square_fn};
    for (int f = 0; f < 2; f++) {
        ag_params p;
        ag_params_init(&p);
        int shape[2] = {3, 4};
        ag_params_add(&p, "x", 2, shape, 0);
        assert_int_equal(ag_params_alloc(&p, AG_PARAMS_GRAD), 0);
        ag_fill_uniform(p.data, p.n, -1.0f, 1.0f, 5);
        ag_gc_result res;
        assert_int_equal(ag_gradcheck(fns[f], NULL, &p, GC_EPS, 5, &res), 0);
        print_message("broken op %d: max rel err %.3f\n", f, res.max_err);
        assert_true(res.max_err > GC_TOL);
        assert_true(res.max_err > 0.4 && res.max_err < 0.6); /* 1/2 for both */
        ag_params_free(&p);
    }
}

/* Every op declared in ops.h outside the attention section has a row. */
static void test_every_op_has_a_row(void **state) {
    (void)state;
    ag_gc_fn need[] = {f_matmul, f_linear, f_add, f_mul, f_scale, f_gelu, f_reshape, f_embedding,
                       f_layernorm, f_softmax, f_cross_entropy, f_kl, f_mse, f_l1, f_sum, f_mean,
                       f_fake_quant};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        int rows = 0;
        for (size_t k = 0; k < N_CASES; k++) rows += cases[k].f == need[i];
        assert_true(rows >= 2);
    }
}

int main(void) {
    struct CMUnitTest tests[N_CASES + 2];
    for (size_t i = 0; i < N_CASES; i++)
        tests[i] = (struct CMUnitTest){cases[i].name, test_case, NULL, NULL, (void *)&cases[i]};
    tests[N_CASES] = (struct CMUnitTest)cmocka_unit_test(test_broken_ops_exceed_tolerance);
    tests[N_CASES + 1] = (struct CMUnitTest)cmocka_unit_test(test_every_op_has_a_row);
    return _cmocka_run_group_tests("gradcheck", tests, N_CASES + 2, NULL, NULL);
}
