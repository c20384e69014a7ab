/* test_quant_ops.c - the fake-quantization op (autograd/ops_quant.c): its
 * forward is compress/grid.h's rule element by element, and its backward is
 * each paper's formula element by element, where those gradients are not
 * derivatives of the forward (finite differences where they are: the
 * fake_quant rows of tests/test_gradcheck.c):
 *  - STE with clipping (PyTorch's mask: the rounded value, before clamping,
 *    inside the grid);
 *  - LSQ (Esser et al. 2020, eq. 3): dx = g and ds = gs g (round(v) - v)
 *    inside -Qn < v < Qp (the unrounded v), gs g (-Qn) below, gs g Qp above;
 *    an element in [Qp, Qp + 1/2) shows where PyTorch's learnable fake
 *    quantization differs (it decides on the rounded value);
 *  - PACT (Choi et al. 2018, eq. 3), symmetric: dx = g inside (-alpha,
 *    alpha), dalpha = sum of g (x >= alpha) - g (x <= -alpha);
 * per tensor, per row and per group, with zero points; the codes output; the
 * scale gradients the same bits at 1 and 2 threads; bad scales refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "autograd/parallel.h"
#include "autograd/params.h"
#include "autograd/rng.h"
#include "compress/grid.h"

/* Inputs x [n] and p [np] with gradients. */
typedef struct io {
    ag_params p;
    ag_tensor *x, *s;
} io;

static void io_make(io *o, const float *x, int n, const float *s, int np) {
    ag_params_init(&o->p);
    int sx[1] = {n}, ss[1] = {np};
    ag_params_add(&o->p, "x", 1, sx, 0);
    ag_params_add(&o->p, "s", 1, ss, 0);
    assert_int_equal(ag_params_alloc(&o->p, AG_PARAMS_GRAD), 0);
    o->x = ag_param(&o->p, 0), o->s = ag_param(&o->p, 1);
    memcpy(o->x->data, x, sizeof(float) * (size_t)n);
    memcpy(o->s->data, s, sizeof(float) * (size_t)np);
}

/* Runs the op forward and backward with output gradient g; returns y. */
static ag_tensor *run(ag_ctx *c, io *o, const ag_fq *q, const float *g) {
    ag_ctx_reset(c);
    ag_params_zero_grad(&o->p);
    ag_tensor *y = ag_fake_quant(c, o->x, o->s, q);
    assert_non_null(y);
    assert_int_equal(ag_backward_seed(c, y, g), 0);
    return y;
}

static void fill(float *x, int n, uint64_t seed, float scale) {
    ag_rng r;
    ag_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) x[i] = scale * ag_rng_normal(&r);
}

/* STE: forward = cp_code / cp_decode; dx = g where the rounded value is in
 * the grid (7.4 -> 7 passes, 7.5 -> 8 and -7.5 -> -8 do not). */
static void test_ste(void **state) {
    (void)state;
    const float x[8] = {0.3f, 7.4f, 7.5f, 7.6f, -7.49f, -7.5f, -100.0f, 2.5f};
    const float s = 1.0f, g[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const float want_y[8] = {0, 7, 7, 7, -7, -7, -7, 2};
    const float want_dx[8] = {1, 2, 0, 0, 5, 0, 0, 8};
    io o;
    io_make(&o, x, 8, &s, 1);
    ag_ctx *c = ag_ctx_new();
    int8_t codes[8];
    size_t clipped = 99;
    ag_fq q = {-7, 7, 8, NULL, AG_FQ_STE, 1.0f, codes, &clipped, NULL};
    ag_tensor *y = run(c, &o, &q, g);
    assert_int_equal(clipped, 4); /* 7.5, 7.6, -7.5, -100 */
    for (int i = 0; i < 8; i++) {
        assert_true(y->data[i] == want_y[i]);
        assert_true(o.x->grad[i] == want_dx[i]);
        assert_int_equal(codes[i], (int)want_y[i]);
    }
    assert_true(o.s->grad[0] == 0.0f); /* an observer's scale gets nothing */
    ag_params_free(&o.p);
    ag_ctx_free(c);
}

/* Per row / group with zero points: every element against the grid's own
 * functions (forward, codes) and the mask (backward), on random values that
 * cross both ends of the grid. */
static void test_groups_and_zero_points(void **state) {
    (void)state;
    enum { R = 5, K = 12, G = 4, NS = R * K / G };
    float x[R * K], s[NS], g[R * K];
    int32_t z[NS];
    fill(x, R * K, 3, 1.0f);
    fill(g, R * K, 4, 1.0f);
    for (int j = 0; j < NS; j++) s[j] = 0.05f + 0.01f * (float)j, z[j] = j % 16;
    io o;
    io_make(&o, x, R * K, s, NS);
    ag_ctx *c = ag_ctx_new();
    int8_t codes[R * K];
    float fcodes[R * K];
    ag_fq q = {0, 15, G, z, AG_FQ_STE, 1.0f, codes, NULL, fcodes};
    ag_tensor *y = run(c, &o, &q, g);
    int inside = 0, outside = 0;
    for (int i = 0; i < R * K; i++) {
        int j = i / G;
        float inv = 1.0f / s[j];
        int code = cp_code(x[i], inv, z[j], 0, 15);
        assert_int_equal(codes[i], code);
        assert_true(fcodes[i] == (float)(code - z[j])); /* q - z as floats, for integer products through sgemm */
        assert_true(y->data[i] == cp_decode(code, z[j], s[j]));
        bool in = cp_code_inside(x[i], inv, z[j], 0, 15);
        assert_true(o.x->grad[i] == (in ? g[i] : 0.0f));
        inside += in, outside += !in;
    }
    assert_true(inside > 5 && outside > 5);
    /* the same numbers as cp_quantize_fixed gives the exporter (q4a, fixed scales) */
    ag_params_free(&o.p);
    ag_ctx_free(c);
}

/* LSQ, element by element (scale 0.5, grid [-7, 7], gradient scale gs). */
static void test_lsq(void **state) {
    (void)state;
    /* v = x / s:  0.6 (inside, round 1), -1.3 (inside, round -1), 3.5 (inside, round 4),
     *             6.8 (inside, round 7), 7.2 (v >= Qp: the paper clips; PyTorch rounds to 7 and calls it inside),
     *             7.6 (above), -7.0 (v <= -Qn), -9 (below) */
    const float v[8] = {0.6f, -1.3f, 3.5f, 6.8f, 7.2f, 7.6f, -7.0f, -9.0f};
    const float s = 0.5f, gs = 0.25f;
    float x[8], g[8];
    for (int i = 0; i < 8; i++) x[i] = v[i] * s, g[i] = 1.0f + 0.5f * (float)i;
    io o;
    io_make(&o, x, 8, &s, 1);
    ag_ctx *c = ag_ctx_new();
    ag_fq q = {-7, 7, 8, NULL, AG_FQ_LSQ, gs, NULL, NULL, NULL};
    ag_tensor *y = run(c, &o, &q, g);
    double ds = 0;
    for (int i = 0; i < 8; i++) {
        float vi = x[i] * (1.0f / s);
        bool in = vi > -7.0f && vi < 7.0f;
        float want_dx = in ? g[i] : 0.0f;
        double d = in ? (double)g[i] * (double)(nearbyintf(vi) - vi) : (double)g[i] * (vi <= -7.0f ? -7.0 : 7.0);
        ds += d;
        assert_true(o.x->grad[i] == want_dx);
        assert_true(y->data[i] == cp_decode(cp_code(x[i], 1.0f / s, 0, -7, 7), 0, s));
    }
    assert_true(fabs(o.s->grad[0] - gs * ds) <= 1e-6 * fabs(gs * ds));
    /* v = 7.2: the paper's ds term is gs g Qp and dx = 0; PyTorch's would be
     * gs g (round(v) - v) = gs g (-0.2) and dx = g */
    assert_true(o.x->grad[4] == 0.0f);
    /* the sum of the paper's terms differs from PyTorch's rounded-inside rule */
    double torch = 0;
    for (int i = 0; i < 8; i++) {
        float vi = x[i] * (1.0f / s), r = nearbyintf(vi);
        torch += r >= -7 && r <= 7 ? (double)g[i] * (r - vi) : (double)g[i] * (r < -7 ? -7.0 : 7.0);
    }
    assert_true(fabs(gs * torch - o.s->grad[0]) > 1.0);
    ag_params_free(&o.p);
    ag_ctx_free(c);
}

/* LSQ per row with zero points: Qn = z - lo, Qp = hi - z per row. */
static void test_lsq_rows_zero_points(void **state) {
    (void)state;
    enum { R = 4, K = 16 };
    float x[R * K], g[R * K], s[R] = {0.1f, 0.2f, 0.05f, 0.3f};
    int32_t z[R] = {0, 3, 8, 15};
    fill(x, R * K, 8, 0.8f);
    fill(g, R * K, 9, 1.0f);
    io o;
    io_make(&o, x, R * K, s, R);
    ag_ctx *c = ag_ctx_new();
    ag_fq q = {0, 15, K, z, AG_FQ_LSQ, 0.5f, NULL, NULL, NULL};
    run(c, &o, &q, g);
    for (int r = 0; r < R; r++) {
        double ds = 0;
        float inv = 1.0f / s[r], qn = (float)z[r], qp = (float)(15 - z[r]);
        for (int k = 0; k < K; k++) {
            int i = r * K + k;
            float vi = x[i] * inv;
            bool in = vi > -qn && vi < qp;
            assert_true(o.x->grad[i] == (in ? g[i] : 0.0f));
            ds += in ? (double)g[i] * (nearbyintf(vi) - vi) : (double)g[i] * (vi <= -qn ? -qn : qp);
        }
        assert_true(fabs(o.s->grad[r] - 0.5 * ds) <= 1e-6 * (fabs(0.5 * ds) + 1e-6));
    }
    ag_params_free(&o.p);
    ag_ctx_free(c);
}

/* PACT (symmetric, alpha = 1.5, 4 bits): s = alpha / 7; dx inside, dalpha
 * the clipped elements' gradients with their signs. */
static void test_pact(void **state) {
    (void)state;
    const float x[7] = {0.2f, -1.0f, 1.49f, 1.5f, 3.0f, -1.5f, -4.0f};
    const float a = 1.5f, g[7] = {1, 2, 3, 4, 5, 6, 7};
    io o;
    io_make(&o, x, 7, &a, 1);
    ag_ctx *c = ag_ctx_new();
    ag_fq q = {-7, 7, 7, NULL, AG_FQ_PACT, 1.0f, NULL, NULL, NULL};
    ag_tensor *y = run(c, &o, &q, g);
    const float want_dx[7] = {1, 2, 3, 0, 0, 0, 0};
    for (int i = 0; i < 7; i++) {
        assert_true(o.x->grad[i] == want_dx[i]);
        float sc = a / 7.0f;
        assert_true(y->data[i] == cp_decode(cp_code(x[i], 1.0f / sc, 0, -7, 7), 0, sc));
    }
    assert_true(o.s->grad[0] == 4.0f + 5.0f - 6.0f - 7.0f);
    assert_true(fabsf(y->data[4] - a) < 1e-6f); /* clipped at alpha */
    ag_params_free(&o.p);
    ag_ctx_free(c);
}

/* One scale over a large tensor: its gradient is a fixed-order sum, the
 * same bits at 1 and 2 threads. */
static void test_scale_gradient_threads(void **state) {
    (void)state;
    enum { N = 1 << 19 };
    float *x = malloc(sizeof(float) * N), *g = malloc(sizeof(float) * N), s = 0.02f;
    fill(x, N, 1, 0.1f);
    fill(g, N, 2, 1.0f);
    io o;
    io_make(&o, x, N, &s, 1);
    ag_ctx *c = ag_ctx_new();
    ag_fq q = {-127, 127, 1024, NULL, AG_FQ_LSQ, 1e-3f, NULL, NULL, NULL};
    float ds[2];
    for (int t = 1; t <= 2; t++) {
        ag_set_threads(t);
        run(c, &o, &q, g);
        ds[t - 1] = o.s->grad[0];
    }
    assert_memory_equal(&ds[0], &ds[1], sizeof(float));
    ag_params_free(&o.p);
    ag_ctx_free(c);
    free(x), free(g);
}

static void test_bad_scale(void **state) {
    (void)state;
    const float x[2] = {1, 2}, s = 0.0f;
    io o;
    io_make(&o, x, 2, &s, 1);
    ag_ctx *c = ag_ctx_new();
    ag_fq q = {-7, 7, 2, NULL, AG_FQ_LSQ, 1.0f, NULL, NULL, NULL};
    assert_null(ag_fake_quant(c, o.x, o.s, &q));
    assert_non_null(strstr(ag_error(c), "scale 0 of s is 0: expected a finite value > 0"));
    ag_params_free(&o.p);
    ag_ctx_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ste),
        cmocka_unit_test(test_groups_and_zero_points),
        cmocka_unit_test(test_lsq),
        cmocka_unit_test(test_lsq_rows_zero_points),
        cmocka_unit_test(test_pact),
        cmocka_unit_test(test_scale_gradient_threads),
        cmocka_unit_test(test_bad_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
