/* test_ops.c - forward values of the ops against naive double-precision
 * references or hand values, and their handling of bad input. Gradients are
 * tested by test_gradcheck; where a gradient property is simple to state
 * (ignored rows get none, reshape shares it) it is checked here too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <omp.h>
#include <cblas.h>
#include <string.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "autograd/ops_internal.h"
#include "autograd/parallel.h"
#include "autograd/params.h"
#include "autograd/vecmath.h"

typedef struct fixture {
    ag_ctx *c;
    ag_params p; /* x[2,3,4], y[2,3,4], b[4], pos[3,4], w[4], tab[5,4] */
} fixture;

enum { X, Y, BIAS, POS, W, TAB };

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->c = ag_ctx_new();
    ag_params_init(&f->p);
    int s3[3] = {2, 3, 4}, s1[1] = {4}, s2[2] = {3, 4}, st[2] = {5, 4};
    ag_params_add(&f->p, "x", 3, s3, 0);
    ag_params_add(&f->p, "y", 3, s3, 0);
    ag_params_add(&f->p, "b", 1, s1, 1);
    ag_params_add(&f->p, "pos", 2, s2, 0);
    ag_params_add(&f->p, "w", 1, s1, 1);
    ag_params_add(&f->p, "tab", 2, st, 0);
    assert_int_equal(ag_params_alloc(&f->p, AG_PARAMS_GRAD), 0);
    ag_fill_uniform(f->p.data, f->p.n, -2.0f, 2.0f, 3);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    ag_params_free(&f->p);
    ag_ctx_free(f->c);
    free(f);
    return 0;
}

#define P(i) ag_param(&f->p, (i))

static void test_add_mul_broadcast(void **state) {
    fixture *f = *state;
    ag_tensor *x = P(X), *b = P(BIAS), *pos = P(POS), *y = P(Y);
    ag_tensor *s1 = ag_add(f->c, x, b), *s2 = ag_add(f->c, x, pos), *s3 = ag_add(f->c, x, y);
    ag_tensor *m1 = ag_mul(f->c, x, b), *m2 = ag_mul(f->c, x, pos), *m3 = ag_mul(f->c, x, y);
    assert_non_null(s1);
    assert_true(ag_same_shape(s1, x) && ag_same_shape(m2, x));
    for (int i = 0; i < 2; i++)
        for (int t = 0; t < 3; t++)
            for (int j = 0; j < 4; j++) {
                int k = (i * 3 + t) * 4 + j;
                assert_float_equal(s1->data[k], x->data[k] + b->data[j], 0);
                assert_float_equal(s2->data[k], x->data[k] + pos->data[t * 4 + j], 0);
                assert_float_equal(s3->data[k], x->data[k] + y->data[k], 0);
                assert_float_equal(m1->data[k], x->data[k] * b->data[j], 0);
                assert_float_equal(m2->data[k], x->data[k] * pos->data[t * 4 + j], 0);
                assert_float_equal(m3->data[k], x->data[k] * y->data[k], 0);
            }
    /* the bias gradient of a broadcast add is the column sum of dout */
    float R[24];
    ag_fill_uniform(R, 24, -1, 1, 8);
    ag_params_zero_grad(&f->p);
    assert_int_equal(ag_backward_seed(f->c, s1, R), 0);
    for (int j = 0; j < 4; j++) {
        double want = 0;
        for (int r = 0; r < 6; r++) want += R[r * 4 + j];
        assert_float_equal(b->grad[j], want, 1e-6);
    }
}

static void test_scale_and_gelu_values(void **state) {
    fixture *f = *state;
    ag_tensor *x = P(X);
    ag_tensor *s = ag_scale(f->c, x, -0.5f), *g = ag_gelu(f->c, x);
    assert_non_null(s);
    assert_non_null(g);
    for (size_t i = 0; i < x->numel; i++) {
        double v = x->data[i];
        assert_float_equal(s->data[i], -0.5 * v, 0);
        double ref = 0.5 * v * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (v + 0.044715 * v * v * v)));
        assert_float_equal(g->data[i], ref, 1e-6);
    }
    /* hand values: GELU(0) = 0, GELU(1) = 0.841192 (tanh form), GELU(-3) ~ -0.00363739,
     * and far tails where exp overflows: GELU(30) = 30, GELU(-30) = 0, finite gradient */
    const int five = 5;
    ag_tensor *h = ag_new(f->c, 1, &five, "h");
    const float hv[5] = {0.0f, 1.0f, -3.0f, 30.0f, -30.0f};
    memcpy(h->data, hv, sizeof hv);
    h->grad = calloc(5, sizeof(float));
    h->requires_grad = true;
    ag_tensor *gh = ag_gelu(f->c, h);
    assert_float_equal(gh->data[0], 0.0, 0);
    assert_float_equal(gh->data[1], 0.841192, 1e-6);
    assert_float_equal(gh->data[2], -0.00363739, 1e-7);
    assert_float_equal(gh->data[3], 30.0, 0);
    assert_float_equal(gh->data[4], 0.0, 0);
    const float ones[5] = {1, 1, 1, 1, 1};
    assert_int_equal(ag_backward_seed(f->c, gh, ones), 0);
    assert_float_equal(h->grad[0], 0.5, 1e-7);  /* GELU'(0) = 1/2 */
    assert_float_equal(h->grad[3], 1.0, 0);
    assert_float_equal(h->grad[4], 0.0, 0);
    free(h->grad);
}

static void test_layernorm_matches_reference_without_bias(void **state) {
    fixture *f = *state;
    ag_tensor *x = P(X), *w = P(W), *b = P(BIAS);
    ag_tensor *y0 = ag_layernorm(f->c, x, w, NULL, 1e-5f);
    ag_tensor *y1 = ag_layernorm(f->c, x, w, b, 1e-5f);
    assert_non_null(y0);
    assert_non_null(y1);
    for (int r = 0; r < 6; r++) {
        const float *xr = x->data + r * 4;
        double mu = 0, var = 0;
        for (int j = 0; j < 4; j++) mu += xr[j];
        mu /= 4;
        for (int j = 0; j < 4; j++) var += (xr[j] - mu) * (xr[j] - mu);
        var /= 4;
        for (int j = 0; j < 4; j++) {
            double xh = (xr[j] - mu) / sqrt(var + 1e-5);
            assert_float_equal(y0->data[r * 4 + j], xh * w->data[j], 1e-5);
            assert_float_equal(y1->data[r * 4 + j], xh * w->data[j] + b->data[j], 1e-5);
        }
    }
}

/* A row of 1536 values with a large offset: mean and variance in double keep
 * the normalised output accurate where a float one-pass variance would not. */
static void test_layernorm_large_offset(void **state) {
    fixture *f = *state;
    const int shape[2] = {2, 1536}, wshape[1] = {1536};
    ag_tensor *x = ag_new(f->c, 2, shape, "x"), *w = ag_new(f->c, 1, wshape, "w");
    for (int i = 0; i < 2 * 1536; i++) x->data[i] = 1000.0f + (float)((i * 37) % 11) - 5.0f;
    for (int j = 0; j < 1536; j++) w->data[j] = 1.0f;
    ag_tensor *y = ag_layernorm(f->c, x, w, NULL, 1e-5f);
    assert_non_null(y);
    for (int r = 0; r < 2; r++) {
        double mu = 0, var = 0;
        for (int j = 0; j < 1536; j++) mu += x->data[r * 1536 + j];
        mu /= 1536;
        for (int j = 0; j < 1536; j++) var += pow(x->data[r * 1536 + j] - mu, 2);
        var /= 1536;
        for (int j = 0; j < 1536; j++)
            assert_float_equal(y->data[r * 1536 + j], (x->data[r * 1536 + j] - mu) / sqrt(var + 1e-5), 1e-5);
    }
}

static void test_softmax_rows_sum_to_one_and_large_inputs(void **state) {
    fixture *f = *state;
    ag_tensor *x = P(X);
    ag_tensor *y = ag_softmax(f->c, x);
    for (int r = 0; r < 6; r++) {
        double z = 0, sum = 0;
        for (int j = 0; j < 4; j++) z += exp(x->data[r * 4 + j]);
        for (int j = 0; j < 4; j++) {
            assert_float_equal(y->data[r * 4 + j], exp(x->data[r * 4 + j]) / z, 1e-6);
            sum += y->data[r * 4 + j];
        }
        assert_float_equal(sum, 1.0, 1e-6);
    }
    /* exp(1000) overflows float; the max subtraction must keep it finite */
    const int shape[2] = {1, 3};
    ag_tensor *big = ag_new(f->c, 2, shape, "big");
    big->data[0] = 1000.0f;
    big->data[1] = 999.0f;
    big->data[2] = -1000.0f;
    ag_tensor *p = ag_softmax(f->c, big);
    double z = 1.0 + exp(-1.0);
    assert_float_equal(p->data[0], 1.0 / z, 1e-6);
    assert_float_equal(p->data[1], exp(-1.0) / z, 1e-6);
    assert_float_equal(p->data[2], 0.0, 0);
}

static void test_cross_entropy_values(void **state) {
    fixture *f = *state;
    const int V = 7, shape[2] = {5, 7};
    ag_tensor *z = ag_zeros(f->c, 2, shape, "zero_logits");
    int tg[5] = {0, 6, 3, 2, 1};
    ag_tensor *l = ag_cross_entropy(f->c, z, tg, -100);
    assert_non_null(l);
    assert_float_equal(l->data[0], log((double)V), 1e-6);

    /* against a double reference, with rows 1 and 3 ignored */
    ag_tensor *x = ag_reshape(f->c, P(X), 2, (int[]){6, 4});
    int t2[6] = {3, -1, 0, -1, 2, 1};
    ag_params_zero_grad(&f->p);
    ag_tensor *ce = ag_cross_entropy(f->c, x, t2, -1);
    assert_non_null(ce);
    double want = 0;
    for (int r = 0; r < 6; r++) {
        if (t2[r] < 0) continue;
        double zz = 0;
        for (int j = 0; j < 4; j++) zz += exp(x->data[r * 4 + j]);
        want += log(zz) - x->data[r * 4 + t2[r]];
    }
    assert_float_equal(ce->data[0], want / 4, 1e-5);
    assert_int_equal(ag_backward(f->c, ce), 0);
    for (int j = 0; j < 4; j++) {
        assert_float_equal(x->grad[4 + j], 0.0, 0); /* ignored rows get no gradient */
        assert_float_equal(x->grad[12 + j], 0.0, 0);
    }
    double rowsum = 0;
    for (int j = 0; j < 4; j++) rowsum += x->grad[j];
    assert_float_equal(rowsum, 0.0, 1e-6); /* softmax - onehot sums to 0 */
    assert_true(x->grad[3] < 0);         /* the target's logit is pushed up */
}

static void test_cross_entropy_all_ignored(void **state) {
    fixture *f = *state;
    ag_tensor *x = ag_reshape(f->c, P(X), 2, (int[]){6, 4});
    int t[6] = {-1, -1, -1, -1, -1, -1};
    ag_params_zero_grad(&f->p);
    ag_tensor *ce = ag_cross_entropy(f->c, x, t, -1);
    assert_non_null(ce);
    assert_float_equal(ce->data[0], 0.0, 0);
    assert_int_equal(ag_backward(f->c, ce), 0);
    for (size_t i = 0; i < x->numel; i++) assert_float_equal(x->grad[i], 0.0, 0);
}

static void test_cross_entropy_bad_target(void **state) {
    fixture *f = *state;
    ag_tensor *x = ag_reshape(f->c, P(X), 2, (int[]){6, 4});
    int t[6] = {0, 1, 2, 4, 0, 0};
    assert_null(ag_cross_entropy(f->c, x, t, -1));
    const char *e = ag_error(f->c);
    assert_non_null(e);
    assert_non_null(strstr(e, "target 4"));
    assert_non_null(strstr(e, "row 3"));
    ag_ctx_reset(f->c);
    t[3] = -7; /* negative but not the ignore index */
    assert_null(ag_cross_entropy(f->c, x, t, -1));
    assert_non_null(strstr(ag_error(f->c), "target -7"));
}

static void test_embedding_values_and_bad_id(void **state) {
    fixture *f = *state;
    ag_tensor *tab = P(TAB);
    int ids[6] = {4, 0, 4, 2, 1, 3};
    ag_tensor *e = ag_embedding(f->c, tab, ids, 2, (int[]){2, 3});
    assert_non_null(e);
    assert_int_equal(e->ndim, 3);
    assert_int_equal(e->shape[2], 4);
    for (int i = 0; i < 6; i++) assert_memory_equal(e->data + i * 4, tab->data + ids[i] * 4, 16);
    /* row 4 is used twice: its gradient gets both rows of dout */
    float R[24];
    ag_fill_uniform(R, 24, -1, 1, 4);
    ag_params_zero_grad(&f->p);
    ag_backward_seed(f->c, e, R);
    for (int j = 0; j < 4; j++) assert_float_equal(tab->grad[16 + j], R[j] + R[8 + j], 1e-6);

    ids[4] = 5;
    assert_null(ag_embedding(f->c, tab, ids, 1, (int[]){6}));
    const char *msg = ag_error(f->c);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "id 5"));
    assert_non_null(strstr(msg, "position 4"));
}

static void test_null_inputs_give_null(void **state) {
    fixture *f = *state;
    ag_tensor *x = P(X);
    int ids[1] = {0};
    assert_null(ag_add(f->c, NULL, x));
    assert_null(ag_add(f->c, x, NULL));
    assert_null(ag_mul(f->c, NULL, x));
    assert_null(ag_scale(f->c, NULL, 2.0f));
    assert_null(ag_gelu(f->c, NULL));
    assert_null(ag_reshape(f->c, NULL, 1, (int[]){24}));
    assert_null(ag_embedding(f->c, NULL, ids, 1, (int[]){1}));
    assert_null(ag_layernorm(f->c, NULL, P(W), NULL, 1e-5f));
    assert_null(ag_softmax(f->c, NULL));
    assert_null(ag_cross_entropy(f->c, NULL, ids, -1));
    assert_null(ag_kl_div(f->c, NULL, x, 1.0f));
    assert_null(ag_kl_div(f->c, x, NULL, 1.0f));
    assert_null(ag_mse(f->c, x, NULL));
    assert_null(ag_l1(f->c, NULL));
    assert_null(ag_sum(f->c, NULL));
    assert_null(ag_mean(f->c, NULL));
    assert_null(ag_error(f->c)); /* a NULL input is not a new error */
    assert_int_equal(f->c->n_nodes, 0);
}

static void test_kl_values(void **state) {
    fixture *f = *state;
    ag_tensor *x = P(X), *y = P(Y);
    ag_tensor *k0 = ag_kl_div(f->c, x, x, 2.0f);
    assert_non_null(k0);
    assert_float_equal(k0->data[0], 0.0, 1e-7);
    const float tau = 1.5f;
    ag_tensor *k = ag_kl_div(f->c, x, y, tau);
    double want = 0;
    for (int r = 0; r < 6; r++) {
        double zs = 0, zt = 0;
        for (int j = 0; j < 4; j++) {
            zs += exp(x->data[r * 4 + j] / tau);
            zt += exp(y->data[r * 4 + j] / tau);
        }
        for (int j = 0; j < 4; j++) {
            double p = exp(y->data[r * 4 + j] / tau) / zt, q = exp(x->data[r * 4 + j] / tau) / zs;
            want += p * log(p / q);
        }
    }
    want *= (double)tau * tau / 6;
    assert_true(want > 0.01);
    assert_float_equal(k->data[0], want, 1e-6);
    assert_null(ag_kl_div(f->c, x, y, 0.0f));
    assert_non_null(strstr(ag_error(f->c), "temperature"));
}

static void test_mse_l1_sum_mean(void **state) {
    fixture *f = *state;
    ag_tensor *x = P(X), *y = P(Y);
    double se = 0, ab = 0, s = 0;
    for (size_t i = 0; i < x->numel; i++) {
        se += pow((double)x->data[i] - y->data[i], 2);
        ab += fabs(x->data[i]);
        s += x->data[i];
    }
    assert_float_equal(ag_mse(f->c, x, y)->data[0], se / 24, 1e-6);
    assert_float_equal(ag_l1(f->c, x)->data[0], ab, 1e-5);
    assert_float_equal(ag_sum(f->c, x)->data[0], s, 1e-5);
    assert_float_equal(ag_mean(f->c, x)->data[0], s / 24, 1e-6);
    /* L1 gradient is the sign, and exactly 0 at 0 */
    x->data[5] = 0.0f;
    ag_tensor *l = ag_l1(f->c, x);
    ag_params_zero_grad(&f->p);
    ag_backward(f->c, l);
    for (size_t i = 0; i < x->numel; i++)
        assert_float_equal(x->grad[i], x->data[i] > 0 ? 1.0 : (x->data[i] < 0 ? -1.0 : 0.0), 0);
}

/* 1e6 ones: a float accumulator would drift; the double sum is exact. Also
 * large enough that the blocked parallel reduction runs with many blocks. */
static void test_sum_is_accumulated_in_double(void **state) {
    fixture *f = *state;
    const int n = 1000003;
    ag_tensor *a = ag_new(f->c, 1, &n, "ones");
    for (int i = 0; i < n; i++) a->data[i] = i % 2 ? 1.0f + 1e-7f * (float)(i % 5) : 1.0f;
    double want = 0;
    for (int i = 0; i < n; i++) want += a->data[i];
    assert_float_equal(ag_sum(f->c, a)->data[0], (float)want, 0);
    assert_float_equal(ag_mean(f->c, a)->data[0], (float)(want / n), 0);
}

static void test_reshape_shares_memory_and_gradient(void **state) {
    fixture *f = *state;
    ag_tensor *x = P(X);
    ag_tensor *v = ag_reshape(f->c, x, 2, (int[]){6, 4});
    assert_non_null(v);
    assert_ptr_equal(v->data, x->data);
    assert_ptr_equal(v->grad, x->grad);
    assert_int_equal(v->ndim, 2);
    assert_int_equal(v->shape[0], 6);
    assert_int_equal(f->c->n_nodes, 0); /* a view, no node */
    ag_params_zero_grad(&f->p);
    ag_tensor *s = ag_sum(f->c, ag_scale(f->c, v, 3.0f));
    assert_int_equal(ag_backward(f->c, s), 0);
    for (size_t i = 0; i < x->numel; i++) assert_float_equal(x->grad[i], 3.0, 0);
}

/* Broadcast add/mul split rows longer than one work item (4096 columns) into
 * column blocks: a same-shape pair and a bias over rows of 9000, values and
 * gradients against plain loops. */
static void test_add_mul_long_rows(void **state) {
    fixture *f = *state;
    const int C = 9000, R = 30; /* R * C above AG_PAR_MIN: the parallel loops */
    assert_true((size_t)R * C >= AG_PAR_MIN);
    ag_tensor *a = ag_new(f->c, 2, (int[]){R, C}, "a"), *b = ag_new(f->c, 1, &C, "b");
    ag_tensor *s = ag_new(f->c, 2, (int[]){R, C}, "s");
    assert_true(a && b && s);
    ag_fill_uniform(a->data, a->numel, -1.0f, 1.0f, 11);
    ag_fill_uniform(b->data, b->numel, -1.0f, 1.0f, 12);
    ag_fill_uniform(s->data, s->numel, -1.0f, 1.0f, 13);
    a->grad = calloc(a->numel, sizeof(float));
    b->grad = calloc(b->numel, sizeof(float));
    a->requires_grad = b->requires_grad = true;
    ag_tensor *y1 = ag_add(f->c, a, b), *y2 = ag_mul(f->c, a, b), *y3 = ag_add(f->c, a, s);
    assert_true(y1 && y2 && y3);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < C; j++) {
            size_t i = (size_t)r * C + j;
            assert_float_equal(y1->data[i], a->data[i] + b->data[j], 0);
            assert_float_equal(y2->data[i], a->data[i] * b->data[j], 0);
            assert_float_equal(y3->data[i], a->data[i] + s->data[i], 0);
        }
    ag_tensor *l = ag_sum(f->c, y2);
    assert_int_equal(ag_backward(f->c, l), 0);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < C; j++) assert_float_equal(a->grad[(size_t)r * C + j], b->data[j], 0);
    free(a->grad);
    free(b->grad);
}

/* The vectorised GELU (vecmath.h, compiled for SSE2/AVX2/AVX-512 and picked
 * at load time) gives exactly the bits of the same formula evaluated one
 * element at a time by a call the compiler cannot vectorise: results do not
 * depend on the vector unit. Also: ag_inv_1p_exp against 1 / (1 + exp(z)) in
 * double, and its exact tails. */
__attribute__((noinline)) static float gelu_scalar(float x) {
    return x * ag_inv_1p_exp(-2.0f * 0.7978845608028654f * (x + 0.044715f * x * x * x));
}

static void test_vectorised_gelu_is_bit_exact(void **state) {
    fixture *f = *state;
    const int n = 50021; /* > one parallel block, and a ragged tail */
    ag_tensor *x = ag_new(f->c, 1, &n, "x");
    assert_non_null(x);
    for (int i = 0; i < n; i++) x->data[i] = -14.0f + 28.0f * (float)i / (float)(n - 1);
    x->data[7] = 0.0f, x->data[8] = -0.0f, x->data[9] = 1e-30f, x->data[10] = -1e-30f;
    x->data[11] = 200.0f, x->data[12] = -200.0f, x->data[13] = NAN;
    x->grad = calloc((size_t)n, sizeof(float));
    x->requires_grad = true;
    ag_tensor *y = ag_gelu(f->c, x);
    assert_non_null(y);
    for (int i = 0; i < n; i++) {
        float r = gelu_scalar(x->data[i]);
        if (isnan(r)) {
            assert_true(isnan(y->data[i]));
            continue;
        }
        if (memcmp(&r, &y->data[i], sizeof r) != 0)
            fail_msg("gelu(%.9g): vector %.9g, scalar %.9g", (double)x->data[i], (double)y->data[i], (double)r);
    }
    assert_float_equal(y->data[11], 200.0, 0);
    assert_float_equal(y->data[12], 0.0, 0);
    float *seed = malloc((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) seed[i] = 1.0f;
    assert_int_equal(ag_backward_seed(f->c, y, seed), 0);
    assert_float_equal(x->grad[11], 1.0, 0);
    assert_float_equal(x->grad[12], 0.0, 0);
    assert_true(isnan(x->grad[13]));
    free(seed);
    free(x->grad);
    /* accuracy of the logistic helper over its whole range */
    double worst = 0.0;
    for (int i = 0; i <= 400000; i++) {
        float z = -100.0f + 200.0f * (float)i / 400000.0f;
        double ref = 1.0 / (1.0 + exp((double)z));
        float got = ag_inv_1p_exp(z);
        if (ref > 1e-37) {
            double e = fabs(got - ref) / ref;
            worst = e > worst ? e : worst;
        } else {
            assert_true(got >= 0.0f && got <= 1.1e-37f); /* absolute error below 1.1e-37 */
        }
    }
    assert_true(worst < 5e-7);
    assert_float_equal(ag_inv_1p_exp(-INFINITY), 1.0, 0);
    assert_float_equal(ag_inv_1p_exp(INFINITY), 0.0, 0);
    assert_true(isnan(ag_inv_1p_exp(NAN)));
}

/* ag_region_join: every thread of a region is counted, also one that arrives
 * 20 ms late (far past the master's bounded spin: the implicit barrier still
 * waits for it, so its write is seen after the region), and a region of one
 * thread neither counts nor spins. */
static void test_region_join(void **state) {
    (void)state;
    int wrote[2] = {0, 0}, seen = 0;
    ag_join j = {0};
#pragma omp parallel num_threads(2)
    {
        int t = omp_get_thread_num();
        if (t == 1) {
            double t0 = ag_now();
            while (ag_now() - t0 < 0.02) {
            }
        }
        wrote[t] = 1;
        ag_region_join(&j);
        if (t == 0) seen = omp_get_num_threads();
    }
    assert_int_equal(wrote[0], 1);
    assert_int_equal(wrote[1], seen == 2 ? 1 : 0);
    assert_int_equal(j.arrived, seen == 2 ? 2 : 0); /* one thread: no count, no spin */
    ag_join one = {0};
#pragma omp parallel num_threads(1)
    ag_region_join(&one);
    assert_int_equal(one.arrived, 0);
}

/* ag_sgemm cuts a product into units fixed by its shape, each one cblas call:
 * the result must be the same bits at 1, 2 and 3 threads (on every OpenBLAS
 * kernel: on some, OpenBLAS gives an element different bits when the call
 * that computes it has another shape), equal the units computed one by one
 * with plain cblas calls in reverse order, and be the product (one element
 * against a double sum); for every transpose, beta 0 and 1, ragged units and
 * both split directions. The last shape is below the split threshold (one
 * unit). After each call OpenMP's thread count is the pool's again (a
 * single-threaded call outside a region lowers it for the call's duration). */
static void units_by_hand(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C, int ldc) {
    ag_units u = ag_sgemm_units(M, N, K);
    int ext = u.dim == 'N' ? N : M;
    for (int i = u.count - 1; i >= 0; i--) {
        int r0 = u.dim ? i * u.size : 0, r1 = u.dim ? (r0 + u.size < ext ? r0 + u.size : ext) : ext;
        int m = u.dim == 'N' ? M : r1 - r0, n = u.dim == 'N' ? r1 - r0 : N;
        const float *a = A, *b = B;
        float *c = C;
        if (u.dim == 'M') a += ta ? (size_t)r0 : (size_t)r0 * lda, c += (size_t)r0 * ldc;
        if (u.dim == 'N') b += tb ? (size_t)r0 * ldb : (size_t)r0, c += r0;
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, K, alpha,
                    a, lda, b, ldb, beta, c, ldc);
    }
}

static void test_sgemm_units_same_bits_any_threads(void **state) {
    (void)state;
    static const int shapes[][3] = {{1000, 77, 130}, {40, 600, 300}, {2048, 384, 128}, {129, 129, 257},
                                    {1200, 1100, 16}, {17, 384, 128}};
    size_t cap = (size_t)2048 * 1200;
    float *A = malloc(cap * sizeof *A), *B = malloc(cap * sizeof *B);
    float *C[4];
    for (int i = 0; i < 4; i++) assert_non_null(C[i] = malloc(cap * sizeof(float)));
    assert_non_null(A);
    assert_non_null(B);
    ag_fill_uniform(A, cap, -1.0f, 1.0f, 11);
    ag_fill_uniform(B, cap, -1.0f, 1.0f, 12);
    int saved = ag_get_threads();
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int tr = 0; tr < 4; tr++)
            for (int beta = 0; beta <= 1; beta++) {
                bool ta = tr & 1, tb = tr & 2;
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                int lda = ta ? M : K, ldb = tb ? K : N, ldc = N + 3; /* C wider than N */
                for (int th = 1; th <= 3; th++) {
                    ag_set_threads(th);
                    ag_fill_uniform(C[th], cap, -1.0f, 1.0f, 13);
                    ag_sgemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, (float)beta, C[th], ldc);
                    assert_int_equal(omp_get_max_threads(), th);
                }
                ag_set_threads(1);
                ag_fill_uniform(C[0], cap, -1.0f, 1.0f, 13);
                units_by_hand(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, (float)beta, C[0], ldc);
                for (int th = 1; th <= 3; th++) assert_memory_equal(C[0], C[th], cap * sizeof(float));
                /* and it is the product: one element against a double sum */
                int i = M - 1, j = N / 2;
                double acc = 0.0;
                for (int k = 0; k < K; k++)
                    acc += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                           (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                float c0 = C[1][(size_t)i * ldc + j];
                ag_fill_uniform(C[0], cap, -1.0f, 1.0f, 13); /* C's value before the product */
                acc = 0.5 * acc + beta * (double)C[0][(size_t)i * ldc + j];
                assert_float_equal(c0, acc, 1e-4);
            }
    ag_set_threads(saved);
    free(A);
    free(B);
    for (int i = 0; i < 4; i++) free(C[i]);
}

/* The units themselves: a function of the shape alone (the same at every
 * thread count), whole multiples of AG_SPLIT_ALIGN but for the last, covering
 * the extent exactly, a power-of-two count up to 16, one unit below 8 MFLOP. */
static void test_sgemm_units_rule(void **state) {
    (void)state;
    static const int shapes[][3] = {{1000, 77, 130}, {40, 600, 300}, {2048, 384, 128}, {16384, 1536, 384},
                                    {17, 384, 128}, {300, 140, 130}, {31, 4000, 4000}};
    int saved = ag_get_threads();
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        ag_set_threads(1);
        ag_units u = ag_sgemm_units(M, N, K);
        ag_set_threads(3);
        ag_units v = ag_sgemm_units(M, N, K);
        assert_true(u.dim == v.dim && u.size == v.size && u.count == v.count);
        if (2.0 * M * N * K < 8e6 || (M < 32 && N < 32)) {
            assert_int_equal(u.count, 1);
            assert_int_equal(u.dim, 0);
            continue;
        }
        assert_int_equal(u.dim, M >= N ? 'M' : 'N');
        int ext = u.dim == 'M' ? M : N;
        assert_int_equal(u.size % AG_SPLIT_ALIGN, 0);
        assert_true(u.count >= 2 && u.count <= 16);
        int covered = 0;
        for (int i = 0; i < u.count; i++) {
            int r0, r1;
            ag_unit_range(u, ext, i, &r0, &r1);
            assert_int_equal(r0, covered);
            assert_true(r1 > r0);
            if (i + 1 < u.count) assert_int_equal(r1 - r0, u.size);
            covered = r1;
        }
        assert_int_equal(covered, ext);
    }
    assert_int_equal(ag_sgemm_units(16384, 1536, 384).count, 16);
    assert_int_equal(ag_sgemm_units(2048, 384, 128).count, 4);
    assert_int_equal(ag_sgemm_units(4096, 384, 128).count, 8);
    assert_int_equal(ag_sgemm_units(1000, 77, 130).count, 2);
    ag_set_threads(saved);
}

/* ag_linear's forward and backward share the units of their products over the
 * threads in one region each (bias blocks filled by the thread computing the
 * unit; dx, dW and the bias gradient in one region): the output and every
 * gradient at 2 and 3 threads equal those at 1 thread bit for bit, and match
 * double sums. */
enum { LN_ROWS = 300, LN_IN = 130, LN_OUT = 140 };

static void linear_run(int threads, float *res, size_t *nres) {
    ag_params p;
    ag_params_init(&p);
    ag_params_add(&p, "x", 2, (int[]){LN_ROWS, LN_IN}, 0);
    ag_params_add(&p, "w", 2, (int[]){LN_OUT, LN_IN}, 0);
    ag_params_add(&p, "b", 1, (int[]){LN_OUT}, 0);
    assert_int_equal(ag_params_alloc(&p, AG_PARAMS_GRAD), 0);
    ag_fill_uniform(p.data, p.n, -1.0f, 1.0f, 21);
    ag_fill_uniform(p.grad, p.n, -1.0f, 1.0f, 22); /* gradients accumulate onto this */
    float *seed = malloc((size_t)LN_ROWS * LN_OUT * sizeof *seed);
    assert_non_null(seed);
    ag_fill_uniform(seed, (size_t)LN_ROWS * LN_OUT, -1.0f, 1.0f, 23);
    int prev = ag_get_threads();
    ag_set_threads(threads);
    ag_ctx *c = ag_ctx_new();
    ag_tensor *x = ag_param(&p, 0), *w = ag_param(&p, 1), *b = ag_param(&p, 2);
    ag_tensor *y = ag_linear(c, x, w, b);
    assert_non_null(y);
    assert_int_equal(ag_backward_seed(c, y, seed), 0);
    ag_set_threads(prev);
    /* spot checks against double sums (grads started at the fill of seed 22) */
    float g0[3];
    {
        float *init = malloc(p.n * sizeof *init);
        assert_non_null(init);
        ag_fill_uniform(init, p.n, -1.0f, 1.0f, 22);
        g0[0] = init[p.offset[0] + 7 * LN_IN + 5];  /* dx[7, 5] */
        g0[1] = init[p.offset[1] + 9 * LN_IN + 100]; /* dw[9, 100] */
        g0[2] = init[p.offset[2] + 133];            /* db[133] */
        free(init);
    }
    double yr = b->data[11], dx = 0, dw = 0, db = 0;
    for (int k = 0; k < LN_IN; k++) yr += (double)x->data[250 * LN_IN + k] * w->data[11 * LN_IN + k];
    for (int j = 0; j < LN_OUT; j++) dx += (double)seed[7 * LN_OUT + j] * w->data[j * LN_IN + 5];
    for (int r = 0; r < LN_ROWS; r++) {
        dw += (double)seed[r * LN_OUT + 9] * x->data[r * LN_IN + 100];
        db += seed[r * LN_OUT + 133];
    }
    assert_float_equal(y->data[250 * LN_OUT + 11], yr, 1e-4);
    assert_float_equal(x->grad[7 * LN_IN + 5], g0[0] + dx, 1e-4);
    assert_float_equal(w->grad[9 * LN_IN + 100], g0[1] + dw, 1e-4);
    assert_float_equal(b->grad[133], g0[2] + db, 1e-4);
    memcpy(res, y->data, y->numel * sizeof(float));
    memcpy(res + y->numel, p.grad, p.n * sizeof(float));
    *nres = y->numel + p.n;
    free(seed);
    ag_ctx_free(c);
    ag_params_free(&p);
}

static void test_linear_split_matches_one_thread(void **state) {
    (void)state;
    size_t cap = (size_t)LN_ROWS * LN_OUT + (size_t)(LN_ROWS + LN_OUT + 1) * LN_IN + 1024, n1, n2;
    float *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    linear_run(1, b, &n2);
    for (int th = 2; th <= 3; th++) {
        linear_run(th, a, &n1);
        assert_int_equal(n1, n2);
        assert_true(n1 <= cap);
        assert_memory_equal(a, b, n1 * sizeof(float));
    }
    free(a);
    free(b);
}

/* layernorm's and add's backwards run their two gradients in one parallel
 * region (no barrier unless the buffers overlap): at 2 threads every gradient
 * equals the 1-thread one bit for bit, including add(x, x), whose two
 * gradients are the same buffer, and a broadcast bias. */
enum { RG_N = 1400, RG_C = 200 };
_Static_assert((size_t)RG_N * RG_C >= AG_PAR_MIN, "the test must reach the parallel loops");

static void region_run(int threads, float *res, size_t *nres) {
    ag_params p;
    ag_params_init(&p);
    ag_params_add(&p, "x", 2, (int[]){RG_N, RG_C}, 0);
    ag_params_add(&p, "y", 2, (int[]){RG_N, RG_C}, 0);
    ag_params_add(&p, "w", 1, (int[]){RG_C}, 0);
    ag_params_add(&p, "b", 1, (int[]){RG_C}, 0);
    assert_int_equal(ag_params_alloc(&p, AG_PARAMS_GRAD), 0);
    ag_fill_uniform(p.data, p.n, -1.0f, 1.0f, 31);
    int prev = ag_get_threads();
    ag_set_threads(threads);
    ag_ctx *c = ag_ctx_new();
    ag_tensor *x = ag_param(&p, 0), *y = ag_param(&p, 1);
    ag_tensor *h = ag_layernorm(c, x, ag_param(&p, 2), ag_param(&p, 3), 1e-5f); /* [N, C] */
    h = ag_add(c, h, y);
    h = ag_add(c, h, h); /* both inputs the same tensor */
    h = ag_add(c, h, ag_param(&p, 3));
    assert_non_null(h);
    float *seed = malloc(h->numel * sizeof *seed);
    assert_non_null(seed);
    ag_fill_uniform(seed, h->numel, -1.0f, 1.0f, 32);
    assert_int_equal(ag_backward_seed(c, h, seed), 0);
    ag_set_threads(prev);
    /* spot check: d(out)/dy = 2 seed (the add(h, h) doubles it) */
    assert_float_equal(y->grad[3 * RG_C + 4], 2.0f * seed[3 * RG_C + 4], 0);
    memcpy(res, p.grad, p.n * sizeof(float));
    *nres = p.n;
    free(seed);
    ag_ctx_free(c);
    ag_params_free(&p);
}

static void test_two_gradient_regions_match_one_thread(void **state) {
    (void)state;
    size_t cap = 2 * (size_t)RG_N * RG_C + 2 * RG_C + 1024, n1, n2;
    float *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    region_run(2, a, &n1);
    region_run(1, b, &n2);
    assert_int_equal(n1, n2);
    assert_true(n1 <= cap);
    assert_memory_equal(a, b, n1 * sizeof(float));
    free(a);
    free(b);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_add_mul_broadcast),
        T(test_scale_and_gelu_values),
        T(test_layernorm_matches_reference_without_bias),
        T(test_layernorm_large_offset),
        T(test_softmax_rows_sum_to_one_and_large_inputs),
        T(test_cross_entropy_values),
        T(test_cross_entropy_all_ignored),
        T(test_cross_entropy_bad_target),
        T(test_embedding_values_and_bad_id),
        T(test_null_inputs_give_null),
        T(test_kl_values),
        T(test_mse_l1_sum_mean),
        T(test_sum_is_accumulated_in_double),
        T(test_reshape_shares_memory_and_gradient),
        T(test_vectorised_gelu_is_bit_exact),
        T(test_add_mul_long_rows),
        T(test_sgemm_units_same_bits_any_threads),
        T(test_sgemm_units_rule),
        T(test_region_join),
        T(test_linear_split_matches_one_thread),
        T(test_two_gradient_regions_match_one_thread),
    };
    return cmocka_run_group_tests_name("ops", tests, NULL, NULL);
}
