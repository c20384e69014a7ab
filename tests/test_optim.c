/* test_optim.c - AdamW and SGD against double-precision references written
 * here from the papers' formulas, parameter groups, global-norm clipping,
 * resuming from a saved step count, and bit-identical training runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "autograd/ops_internal.h"
#include "autograd/optim.h"
#include "autograd/parallel.h"
#include "autograd/params.h"
#include "autograd/rng.h"

/* Two views: w[3,5] in group 0 (decayed), b[7] in group 1. */
static void make_params(ag_params *p, uint64_t seed) {
    ag_params_init(p);
    int sw[2] = {3, 5}, sb[1] = {7};
    assert_int_equal(ag_params_add(p, "w", 2, sw, 0), 0);
    assert_int_equal(ag_params_add(p, "b", 1, sb, 1), 1);
    assert_int_equal(ag_params_alloc(p, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS), 0);
    for (int i = 0; i < 2; i++) ag_fill_uniform(p->t[i].data, p->t[i].numel, -1, 1, seed + (uint64_t)i);
}

static void fill_grads(ag_params *p, uint64_t seed) {
    for (int i = 0; i < p->count; i++)
        ag_fill_uniform(p->t[i].grad, p->t[i].numel, -0.5f, 0.5f, seed * 31 + (uint64_t)i);
}

/* The reference state of one element in double. */
typedef struct { double w, m, v; } ref_elem;

/* Loshchilov & Hutter 2019, Algorithm 2, with lr = eta_t alpha. */
static void ref_adamw(ref_elem *e, double g, double lr, double b1, double b2, double eps, double wd, int t) {
    e->m = b1 * e->m + (1 - b1) * g;
    e->v = b2 * e->v + (1 - b2) * g * g;
    double mh = e->m / (1 - pow(b1, t)), vh = e->v / (1 - pow(b2, t));
    e->w = e->w - lr * (mh / (sqrt(vh) + eps) + wd * e->w);
}

static void run_adamw_against_reference(int steps) {
    ag_params p;
    make_params(&p, 10);
    ag_optim o;
    const double lr = 0.01, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd0 = 0.1;
    ag_optim_adamw(&o, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd0);
    assert_int_equal(ag_optim_set_group(&o, 1, 0.0f, 0.5f), 0);
    ref_elem ref[2][15];
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; j < p.t[i].numel; j++) ref[i][j] = (ref_elem){p.t[i].data[j], 0, 0};
    for (int s = 1; s <= steps; s++) {
        fill_grads(&p, (uint64_t)s);
        for (int i = 0; i < 2; i++)
            for (size_t j = 0; j < p.t[i].numel; j++)
                ref_adamw(&ref[i][j], p.t[i].grad[j], lr * (i ? 0.5 : 1.0), b1, b2, eps, i ? 0.0 : wd0, s);
        char err[128];
        assert_int_equal(ag_optim_step(&o, &p, err, sizeof err), 0);
        assert_int_equal(o.step, s);
        for (int i = 0; i < 2; i++)
            for (size_t j = 0; j < p.t[i].numel; j++) {
                assert_float_equal(p.t[i].data[j], ref[i][j].w, 1e-6);
                assert_float_equal(p.m[p.offset[i] + j], ref[i][j].m, 1e-7);
                assert_float_equal(p.v[p.offset[i] + j], ref[i][j].v, 1e-8);
            }
    }
    ag_params_free(&p);
}

static void test_adamw_one_step(void **state) {
    (void)state;
    run_adamw_against_reference(1);
}

static void test_adamw_several_steps(void **state) {
    (void)state;
    run_adamw_against_reference(6);
}

/* At step 1, with bias correction, mhat = g and vhat = g^2, so an undecayed
 * weight moves by lr * g / (|g| + eps), i.e. lr in the direction of -g.
 * Without the correction it would move by lr (1-b1) / sqrt(1-b2) = 3.16 lr
 * here, so the test tells the two apart. */
static void test_adamw_bias_correction_at_step_one(void **state) {
    (void)state;
    ag_params p;
    make_params(&p, 20);
    fill_grads(&p, 3);
    ag_optim o;
    ag_optim_adamw(&o, 0.01f, 0.9f, 0.99f, 1e-8f, 0.0f);
    assert_int_equal(ag_optim_set_group(&o, 1, 0.0f, 1.0f), 0);
    float before[7];
    memcpy(before, p.t[1].data, sizeof before);
    assert_int_equal(ag_optim_step(&o, &p, NULL, 0), 0);
    for (int j = 0; j < 7; j++) {
        float g = p.t[1].grad[j];
        assert_true(fabsf(g) > 1e-3f);
        assert_float_equal(before[j] - p.t[1].data[j], g > 0 ? 0.01 : -0.01, 1e-7);
    }
    ag_params_free(&p);
}

/* With zero gradients, only weight decay moves the weights: group 0 shrinks
 * by (1 - lr wd), group 1 (configured without decay) stays bit-identical. */
static void test_group_without_weight_decay(void **state) {
    (void)state;
    ag_params p;
    make_params(&p, 30);
    ag_params_zero_grad(&p);
    ag_optim o;
    ag_optim_adamw(&o, 0.1f, 0.9f, 0.999f, 1e-8f, 0.5f);
    assert_int_equal(ag_optim_set_group(&o, 1, 0.0f, 1.0f), 0);
    float w0[15], b0[7];
    memcpy(w0, p.t[0].data, sizeof w0);
    memcpy(b0, p.t[1].data, sizeof b0);
    assert_int_equal(ag_optim_step(&o, &p, NULL, 0), 0);
    assert_memory_equal(p.t[1].data, b0, sizeof b0);
    for (int j = 0; j < 15; j++) assert_float_equal(p.t[0].data[j], w0[j] * (1.0 - 0.1 * 0.5), 1e-7);
    /* an lr multiplier of 0 freezes a group even with gradients */
    fill_grads(&p, 4);
    assert_int_equal(ag_optim_set_group(&o, 1, 0.0f, 0.0f), 0);
    assert_int_equal(ag_optim_step(&o, &p, NULL, 0), 0);
    assert_memory_equal(p.t[1].data, b0, sizeof b0);
    ag_params_free(&p);
}

/* SGD with momentum: b = mu b + (g + wd w), w -= lr b. */
static void test_sgd_momentum(void **state) {
    (void)state;
    ag_params p;
    make_params(&p, 40);
    ag_optim o;
    const double lr = 0.05, mu = 0.9, wd = 0.01;
    ag_optim_sgd(&o, (float)lr, (float)mu, (float)wd);
    assert_int_equal(ag_optim_set_group(&o, 1, 0.0f, 1.0f), 0);
    ref_elem ref[2][15];
    double plain[2][15]; /* plain SGD from the same start, to show momentum matters */
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; j < p.t[i].numel; j++) {
            ref[i][j] = (ref_elem){p.t[i].data[j], 0, 0};
            plain[i][j] = p.t[i].data[j];
        }
    for (int s = 1; s <= 4; s++) {
        fill_grads(&p, (uint64_t)(100 + s));
        for (int i = 0; i < 2; i++)
            for (size_t j = 0; j < p.t[i].numel; j++) {
                ref_elem *e = &ref[i][j];
                double gj = p.t[i].grad[j];
                e->m = mu * e->m + gj + (i ? 0.0 : wd) * e->w;
                e->w -= lr * e->m;
                plain[i][j] -= lr * (gj + (i ? 0.0 : wd) * plain[i][j]);
            }
        assert_int_equal(ag_optim_step(&o, &p, NULL, 0), 0);
    }
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; j < p.t[i].numel; j++) assert_float_equal(p.t[i].data[j], ref[i][j].w, 1e-6);
    double diff = 0;
    for (int j = 0; j < 15; j++) diff += fabs(plain[0][j] - p.t[0].data[j]);
    assert_true(diff > 1e-2);
    ag_params_free(&p);
}

static double ref_norm(const ag_params *p) {
    double s = 0;
    for (int i = 0; i < p->count; i++)
        for (size_t j = 0; j < p->t[i].numel; j++) s += (double)p->t[i].grad[j] * p->t[i].grad[j];
    return sqrt(s);
}

static void test_clip_scales_to_max_norm(void **state) {
    (void)state;
    ag_params p;
    make_params(&p, 50);
    fill_grads(&p, 5);
    for (size_t j = 0; j < p.n; j++) p.grad[j] *= 10.0f;
    double want = ref_norm(&p), got;
    assert_true(want > 3.0);
    float g0[15];
    memcpy(g0, p.t[0].grad, sizeof g0);
    assert_int_equal(ag_clip_grad_norm(&p, 1.0, &got, NULL, 0), 0);
    assert_float_equal(got, want, 1e-9 * want);
    assert_float_equal(ref_norm(&p), 1.0, 1e-6);
    for (int j = 0; j < 15; j++) assert_float_equal(p.t[0].grad[j], g0[j] / want, 1e-6); /* direction kept */
    assert_float_equal(ag_grad_norm(&p), 1.0, 1e-6);
    ag_params_free(&p);
}

static void test_clip_leaves_small_gradients_alone(void **state) {
    (void)state;
    ag_params p;
    make_params(&p, 60);
    fill_grads(&p, 6);
    double want = ref_norm(&p), got;
    assert_true(want < 2.0);
    float *copy = malloc(p.n * sizeof(float));
    memcpy(copy, p.grad, p.n * sizeof(float));
    assert_int_equal(ag_clip_grad_norm(&p, 2.0, &got, NULL, 0), 0);
    assert_float_equal(got, want, 1e-9);
    assert_memory_equal(p.grad, copy, p.n * sizeof(float));
    assert_int_equal(ag_clip_grad_norm(&p, 0.0, &got, NULL, 0), 0); /* 0 = measure only */
    assert_memory_equal(p.grad, copy, p.n * sizeof(float));
    free(copy);
    ag_params_free(&p);
}

static void test_clip_reports_non_finite(void **state) {
    (void)state;
    ag_params p;
    make_params(&p, 70);
    fill_grads(&p, 7);
    float vals[2] = {NAN, INFINITY};
    for (int k = 0; k < 2; k++) {
        p.t[1].grad[4] = vals[k];
        float *copy = malloc(p.n * sizeof(float));
        memcpy(copy, p.grad, p.n * sizeof(float));
        char err[200] = "";
        double n = 0;
        assert_int_equal(ag_clip_grad_norm(&p, 1.0, &n, err, sizeof err), -1);
        assert_false(isfinite(n));
        assert_non_null(strstr(err, "parameter b"));
        assert_memory_equal(p.grad, copy, p.n * sizeof(float)); /* not applied */
        free(copy);
    }
    ag_params_free(&p);
}

static void test_step_errors(void **state) {
    (void)state;
    ag_params p;
    make_params(&p, 80);
    ag_optim o;
    ag_optim_adamw(&o, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f); /* group 1 not configured */
    char err[200] = "";
    float *copy = malloc(p.n * sizeof(float));
    memcpy(copy, p.data, p.n * sizeof(float));
    assert_int_equal(ag_optim_step(&o, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "parameter b is in group 1"));
    assert_int_equal(o.step, 0);
    assert_memory_equal(p.data, copy, p.n * sizeof(float));
    assert_int_equal(ag_optim_set_group(&o, AG_OPTIM_MAX_GROUPS, 0, 1), -1);
    assert_int_equal(ag_optim_set_group(&o, 1, 0, 1), 0);
    o.beta2 = 1.0f;
    assert_int_equal(ag_optim_step(&o, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "betas"));
    free(copy);
    ag_params_free(&p);

    /* AdamW on a set without moment buffers */
    ag_params q;
    ag_params_init(&q);
    int s[1] = {4};
    ag_params_add(&q, "x", 1, s, 0);
    assert_int_equal(ag_params_alloc(&q, AG_PARAMS_GRAD), 0);
    ag_optim_adamw(&o, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f);
    assert_int_equal(ag_optim_step(&o, &q, err, sizeof err), -1);
    assert_non_null(strstr(err, "AG_PARAMS_MOMENTS"));
    ag_optim_sgd(&o, 0.1f, 0.0f, 0.0f); /* plain SGD needs no moments */
    assert_int_equal(ag_optim_step(&o, &q, err, sizeof err), 0);
    ag_params_free(&q);
}

/* Saving data, m, v and the step count after 2 steps and resuming in a fresh
 * optimizer gives exactly the parameters of 4 uninterrupted steps. */
static void test_resume_from_saved_step(void **state) {
    (void)state;
    ag_params a, b;
    make_params(&a, 90);
    make_params(&b, 90);
    ag_optim oa, ob;
    ag_optim_adamw(&oa, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f);
    ag_optim_set_group(&oa, 1, 0.0f, 1.0f);
    ob = oa;
    for (int s = 1; s <= 4; s++) {
        fill_grads(&a, (uint64_t)s);
        ag_optim_step(&oa, &a, NULL, 0);
    }
    for (int s = 1; s <= 2; s++) {
        fill_grads(&b, (uint64_t)s);
        ag_optim_step(&ob, &b, NULL, 0);
    }
    int64_t saved_step = ob.step;
    ag_optim oc;
    ag_optim_adamw(&oc, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f);
    ag_optim_set_group(&oc, 1, 0.0f, 1.0f);
    oc.step = saved_step;
    for (int s = 3; s <= 4; s++) {
        fill_grads(&b, (uint64_t)s);
        ag_optim_step(&oc, &b, NULL, 0);
    }
    assert_int_equal(oc.step, 4);
    assert_memory_equal(a.data, b.data, a.n * sizeof(float));
    assert_memory_equal(a.m, b.m, a.n * sizeof(float));
    assert_memory_equal(a.v, b.v, a.n * sizeof(float));
    ag_params_free(&a);
    ag_params_free(&b);
}

/* ---- determinism: embedding -> linear -> gelu -> linear -> cross-entropy ---- */

enum { DV = 96, DC = 128, DH = 256, DN = 256 }; /* vocab, width, hidden, tokens */

static void train_small_model(uint64_t seed, float *params_out, size_t *n_out, float losses[5]) {
    ag_params p;
    ag_params_init(&p);
    ag_params_add(&p, "wte", 2, (int[]){DV, DC}, 1);
    ag_params_add(&p, "fc.w", 2, (int[]){DH, DC}, 0);
    ag_params_add(&p, "fc.b", 1, (int[]){DH}, 1);
    ag_params_add(&p, "head.w", 2, (int[]){DV, DH}, 0);
    assert_int_equal(ag_params_alloc(&p, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS), 0);
    ag_rng r;
    ag_rng_seed(&r, seed);
    for (int i = 0; i < p.count; i++)
        for (size_t j = 0; j < p.t[i].numel; j++) p.t[i].data[j] = 0.1f * ag_rng_normal(&r);
    int ids[DN], tg[DN];
    ag_optim o;
    ag_optim_adamw(&o, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f);
    ag_optim_set_group(&o, 1, 0.0f, 1.0f);
    ag_ctx *c = ag_ctx_new();
    for (int step = 0; step < 5; step++) {
        for (int i = 0; i < DN; i++) {
            ids[i] = (int)ag_rng_below(&r, DV);
            tg[i] = (ids[i] * 7 + 3) % DV; /* a learnable map */
        }
        tg[step] = -1;
        assert_int_equal(ag_ctx_reset(c), 0);
        ag_tensor *h = ag_embedding(c, ag_param(&p, 0), ids, 2, (int[]){4, DN / 4});
        h = ag_gelu(c, ag_linear(c, h, ag_param(&p, 1), ag_param(&p, 2)));
        ag_tensor *loss = ag_cross_entropy(c, ag_linear(c, h, ag_param(&p, 3), NULL), tg, -1);
        assert_non_null(loss);
        ag_params_zero_grad(&p);
        assert_int_equal(ag_backward(c, loss), 0);
        assert_int_equal(ag_clip_grad_norm(&p, 1.0, NULL, NULL, 0), 0);
        assert_int_equal(ag_optim_step(&o, &p, NULL, 0), 0);
        losses[step] = loss->data[0];
    }
    memcpy(params_out, p.data, p.n * sizeof(float));
    *n_out = p.n;
    ag_ctx_free(c);
    ag_params_free(&p);
}

static void test_training_is_bit_identical(void **state) {
    (void)state;
    int prev = ag_get_threads();
    ag_set_threads(2);
    size_t cap = (size_t)(DV * DC + DH * DC + DH + DV * DH) + 64;
    float *a = malloc(cap * sizeof(float)), *b = malloc(cap * sizeof(float));
    float la[5], lb[5];
    size_t na, nb;
    train_small_model(123, a, &na, la);
    train_small_model(123, b, &nb, lb);
    assert_int_equal(na, nb);
    assert_true(na <= cap);
    assert_memory_equal(a, b, na * sizeof(float));
    assert_memory_equal(la, lb, sizeof la);
    assert_true(la[4] < la[0]); /* and it does train */
    /* a different seed gives different parameters (the comparison can fail) */
    train_small_model(124, b, &nb, lb);
    assert_memory_not_equal(a, b, na * sizeof(float));
    free(a);
    free(b);
    ag_set_threads(prev);
}

/* Many parameters, large enough for the optimizer's parallel region (blocks of
 * every tensor dealt to the threads): two AdamW steps at 2 threads give the
 * same bits as at 1 thread, and every element matches the double reference. */
static void big_adamw_steps(int threads, float *out, size_t *n_out, ref_elem **ref_out) {
    static const int sizes[] = {140000, 7, 16384, 70001, 1, 53000}; /* total above AG_PAR_MIN */
    enum { NP = sizeof sizes / sizeof sizes[0] };
    ag_params p;
    ag_params_init(&p);
    for (int i = 0; i < NP; i++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", i);
        assert_int_equal(ag_params_add(&p, name, 1, (int[]){sizes[i]}, i % 2), i);
    }
    assert_int_equal(ag_params_alloc(&p, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS), 0);
    for (int i = 0; i < NP; i++) ag_fill_uniform(p.t[i].data, p.t[i].numel, -1, 1, 50 + (uint64_t)i);
    assert_true(p.n >= AG_PAR_MIN); /* the parallel region runs */
    ag_optim o;
    ag_optim_adamw(&o, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f);
    assert_int_equal(ag_optim_set_group(&o, 1, 0.0f, 0.5f), 0);
    ref_elem *ref = NULL;
    if (ref_out) {
        ref = malloc(p.n * sizeof *ref);
        assert_non_null(ref);
        for (int i = 0; i < NP; i++)
            for (size_t j = 0; j < p.t[i].numel; j++) ref[p.offset[i] + j] = (ref_elem){p.t[i].data[j], 0, 0};
    }
    int prev = ag_get_threads();
    ag_set_threads(threads);
    for (int s = 1; s <= 2; s++) {
        fill_grads(&p, (uint64_t)s);
        assert_int_equal(ag_optim_step(&o, &p, NULL, 0), 0);
        for (int i = 0; i < NP && ref; i++)
            for (size_t j = 0; j < p.t[i].numel; j++)
                ref_adamw(&ref[p.offset[i] + j], p.t[i].grad[j], 0.01 * (i % 2 ? 0.5 : 1.0), 0.9, 0.95, 1e-8,
                          i % 2 ? 0.0 : 0.1, s);
    }
    ag_set_threads(prev);
    for (int i = 0; i < NP && ref; i++)
        for (size_t j = 0; j < p.t[i].numel; j++)
            assert_float_equal(p.t[i].data[j], ref[p.offset[i] + j].w, 1e-6);
    memcpy(out, p.data, p.n * sizeof(float));
    *n_out = p.n;
    if (ref_out) *ref_out = ref;
    ag_params_free(&p);
}

static void test_parallel_step_matches_one_thread(void **state) {
    (void)state;
    size_t cap = 300000, n1, n2;
    float *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    ref_elem *ref = NULL;
    big_adamw_steps(2, a, &n1, &ref);
    big_adamw_steps(1, b, &n2, NULL);
    assert_int_equal(n1, n2);
    assert_true(n1 <= cap);
    assert_memory_equal(a, b, n1 * sizeof(float));
    free(ref);
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_one_step),
        cmocka_unit_test(test_adamw_several_steps),
        cmocka_unit_test(test_adamw_bias_correction_at_step_one),
        cmocka_unit_test(test_group_without_weight_decay),
        cmocka_unit_test(test_sgd_momentum),
        cmocka_unit_test(test_clip_scales_to_max_norm),
        cmocka_unit_test(test_clip_leaves_small_gradients_alone),
        cmocka_unit_test(test_clip_reports_non_finite),
        cmocka_unit_test(test_step_errors),
        cmocka_unit_test(test_resume_from_saved_step),
        cmocka_unit_test(test_training_is_bit_identical),
        cmocka_unit_test(test_parallel_step_matches_one_thread),
    };
    return cmocka_run_group_tests_name("optim", tests, NULL, NULL);
}
