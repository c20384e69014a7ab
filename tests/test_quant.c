/* test_quant.c - the integer grids (compress/grid.h): PyTorch's rounding rule
 * (x * (1 / s), half to even, zero point after rounding) on hand-computed
 * codes and on values at and next to half-way points, every grid of 2 to 8
 * bits, the scale and zero-point formulas of PyTorch's observers, the error
 * bound, zero groups, per-group scales, fake quantization =
 * dequantize(quantize), fixed (given) scales and zero points, static
 * activation codes, the activation limbs, the quantized product's reference,
 * and bad input. (PyTorch itself is compared in tests/parity/.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "compress/grid.h"

/* absmax 127 gives s = 1 exactly, so the codes are nearbyint(w) by hand;
 * halves go to the even neighbour. */
static void test_int8_hand_computed(void **state) {
    (void)state;
    const float w[8] = {127.0f, -63.5f, 0.5f, -0.5f, 2.49f, 1.5f, -2.5f, 0.0f};
    const int8_t want[8] = {127, -64, 0, 0, 2, 2, -2, 0};
    int8_t q[8];
    float s;
    char err[256];
    assert_int_equal(cp_quantize(CP_INT8_SYM, w, 1, 8, 0, q, &s, NULL, err, sizeof err), 0);
    assert_true(s == 1.0f);
    assert_memory_equal(q, want, sizeof want);
    float back[8];
    assert_int_equal(cp_dequantize(CP_INT8_SYM, q, &s, NULL, 1, 8, 0, back, err, sizeof err), 0);
    for (int i = 0; i < 8; i++) assert_true(back[i] == (float)want[i]);
}

/* ../shared/refs/pytorch-semantics.md's examples: s = 1 rounds half to even,
 * and s = 0.1, x = 1.55 gives 16 because x * (1 / s) = 15.5 where x / s =
 * 15.499999. */
static void test_pytorch_rule_examples(void **state) {
    (void)state;
    const float x[7] = {-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 3.5f};
    const int want[7] = {-2, -2, 0, 0, 2, 2, 4};
    for (int i = 0; i < 7; i++) assert_int_equal(cp_code(x[i], 1.0f, 0, -127, 127), want[i]);
    float s = 0.1f, inv = 1.0f / s;
    assert_true(1.55f / s < 15.5f); /* the division would round down */
    assert_int_equal(cp_code(1.55f, inv, 0, -127, 127), 16);
    assert_int_equal(cp_quantize_value(CP_INT8_SYM, 1.55f, s, 0), 16);
    /* the zero point is added after rounding: 2.5 -> 2, + 3 = 5 (rounding 5.5 would give 6) */
    assert_int_equal(cp_code(2.5f, 1.0f, 3, 0, 15), 5);
    /* clamping, and the straight-through mask on the rounded value */
    assert_int_equal(cp_code(7.4f, 1.0f, 0, -7, 7), 7);
    assert_true(cp_code_inside(7.4f, 1.0f, 0, -7, 7));  /* rounds to 7: inside */
    assert_false(cp_code_inside(7.6f, 1.0f, 0, -7, 7)); /* rounds to 8: outside */
    assert_int_equal(cp_code(-1e30f, 1.0f, 0, -7, 7), -7);
    assert_int_equal(cp_code(1e30f, 1.0f, 0, -7, 7), 7);
    assert_int_equal(cp_code(NAN, 1.0f, 0, -7, 7), -7);
    assert_true(cp_decode(5, 3, 0.25f) == 0.5f);
}

/* cp_rne equals nearbyintf on exact halves, their float neighbours, random
 * values and the limits. */
static void test_rne_equals_nearbyint(void **state) {
    (void)state;
    ag_rng r;
    ag_rng_seed(&r, 11);
    for (int i = -300; i <= 300; i++) {
        float h = (float)i + 0.5f;
        float v[3] = {h, nextafterf(h, -INFINITY), nextafterf(h, INFINITY)};
        for (int j = 0; j < 3; j++) assert_true(cp_rne(v[j]) == nearbyintf(v[j]));
    }
    for (int i = 0; i < 100000; i++) {
        float v = ag_rng_normal(&r) * (i % 3 == 0 ? 1e5f : i % 3 == 1 ? 200.0f : 2.0f);
        assert_true(cp_rne(v) == nearbyintf(v));
    }
    assert_true(cp_rne(4194304.5f) == 4194304.0f); /* beyond 2^22: clamped (every grid clamps it anyway) */
    assert_true(cp_rne(-1e20f) == -4194304.0f);
    assert_true(cp_rne(NAN) == -4194304.0f);
}

/* Grids of 2 to 8 bits: the ranges, and bits outside 2..8 are errors. */
static void test_grids(void **state) {
    (void)state;
    char err[128];
    cp_grid g;
    for (int b = 2; b <= 8; b++) {
        assert_int_equal(cp_grid_init(&g, b, true, err, sizeof err), 0);
        assert_int_equal(g.hi, (1 << (b - 1)) - 1);
        assert_int_equal(g.lo, -g.hi);
        assert_int_equal(cp_grid_init(&g, b, false, err, sizeof err), 0);
        assert_int_equal(g.lo, 0);
        assert_int_equal(g.hi, (1 << b) - 1);
    }
    assert_int_equal(cp_grid_init(&g, 1, true, err, sizeof err), -1);
    assert_non_null(strstr(err, "1 bits: expected 2 to 8"));
    assert_int_equal(cp_grid_init(&g, 9, false, err, sizeof err), -1);
    assert_non_null(strstr(err, "9 bits"));
    cp_grid t = cp_grid_of(2, true); /* ternary */
    assert_int_equal(t.lo, -1), assert_int_equal(t.hi, 1);
}

/* Scales and zero points of a range, as PyTorch's observers compute them. */
static void test_grid_params(void **state) {
    (void)state;
    float s;
    int z;
    cp_grid g8 = cp_grid_of(8, true), a8 = cp_grid_of(8, false), a4 = cp_grid_of(4, false);
    cp_grid_params(&g8, -2.0f, 1.0f, &s, &z); /* symmetric: max(|min|, |max|) / ((127 + 127) / 2) */
    assert_true(s == 2.0f / 127.0f);
    assert_int_equal(z, 0);
    cp_grid_params(&g8, 0.5f, 3.0f, &s, &z); /* the range always holds 0 */
    assert_true(s == 3.0f / 127.0f);
    cp_grid_params(&g8, 0.0f, 0.0f, &s, &z); /* all zero: eps */
    assert_true(s == CP_SCALE_EPS);
    /* asymmetric: s = (max - min) / 255, z = 0 - nearbyint(min / s) */
    cp_grid_params(&a8, -1.0f, 3.0f, &s, &z);
    assert_true(s == 4.0f / 255.0f);
    assert_int_equal(z, (int)nearbyintf(1.0f / (4.0f / 255.0f))); /* 63.75 -> 64 */
    assert_int_equal(z, 64);
    cp_grid_params(&a4, -1.0f, 14.0f, &s, &z); /* s = 1, z = 1 */
    assert_true(s == 1.0f);
    assert_int_equal(z, 1);
    cp_grid_params(&a4, -7.5f, 7.5f, &s, &z); /* z = nearbyint(7.5) = 8 (half to even) */
    assert_true(s == 1.0f);
    assert_int_equal(z, 8);
    cp_grid_params(&a4, -6.5f, 8.5f, &s, &z); /* 6.5 -> 6 */
    assert_int_equal(z, 6);
    cp_grid_params(&a4, 2.0f, 5.0f, &s, &z); /* all positive: 0 is the low end */
    assert_int_equal(z, 0);
    cp_grid_params(&a4, -5.0f, -2.0f, &s, &z); /* all negative: 0 is the high end */
    assert_int_equal(z, 15);
}

/* Static activation codes: the grid's rule, symmetric. */
static void test_static_activation_codes(void **state) {
    (void)state;
    float sa = 0.5f, inv = 1.0f / sa;
    assert_int_equal(cp_act_code(1.25f, inv, 127), 2);  /* 2.5 -> 2 */
    assert_int_equal(cp_act_code(-1.25f, inv, 127), -2);
    assert_int_equal(cp_act_code(100.0f, inv, 127), 127);
    assert_int_equal(cp_act_code(-100.0f, inv, 7), -7);
    assert_int_equal(cp_act_code(NAN, inv, 127), -127);
}

/* The quantized product's reference: integers exact, then fma over groups
 * in order, then the activation scale. */
static void test_qmatmul_reference(void **state) {
    (void)state;
    const int8_t a[4] = {1, -2, 3, 4};        /* [1, 4] */
    const int8_t q[8] = {2, 1, -1, 0, 5, 5, 5, 5}; /* [2, 4] */
    const float s[4] = {0.5f, 0.25f, 1.0f, 2.0f};  /* [2, 2]: groups of 2 */
    const int32_t z[4] = {0, 1, 5, 0};
    const float sa = 0.125f;
    float out[2];
    cp_qmatmul_ref(a, &sa, 1, q, s, z, 2, 4, 2, out);
    /* row 0: I0 = 2 - 2 = 0, I1 = (-1 - 1) 3 + (0 - 1) 4 = -10: y = 0.25 * -10 = -2.5, * 0.125 */
    assert_true(out[0] == -2.5f * 0.125f);
    /* row 1: I0 = 0, I1 = 5 * 3 + 5 * 4 = 35: y = 70 */
    assert_true(out[1] == 70.0f * 0.125f);
}

static void test_int4_sym_hand_computed(void **state) {
    (void)state;
    /* absmax 14 -> s = 2: codes nearbyint(w * 0.5) in [-7, 7] */
    const float w[6] = {14.0f, -7.0f, 5.0f, 0.9f, -14.0f, 3.0f};
    const int8_t want[6] = {7, -4, 2, 0, -7, 2}; /* -3.5 -> -4, 2.5 -> 2, 0.45 -> 0, 1.5 -> 2 (half to even) */
    int8_t q[6];
    float s;
    char err[256];
    assert_int_equal(cp_quantize(CP_INT4_SYM, w, 1, 6, 0, q, &s, NULL, err, sizeof err), 0);
    assert_true(s == 2.0f);
    assert_memory_equal(q, want, sizeof want);
}

static void test_int4_asym_hand_computed(void **state) {
    (void)state;
    /* lo = -1, hi = 14: s = 1, z = 1, q = round(w) + 1 */
    const float w[4] = {-1.0f, 0.0f, 2.0f, 14.0f};
    int8_t q[4];
    float s;
    uint8_t z;
    char err[256];
    assert_int_equal(cp_quantize(CP_INT4_ASYM, w, 1, 4, 0, q, &s, &z, err, sizeof err), 0);
    assert_true(s == 1.0f);
    assert_int_equal(z, 1);
    const int8_t want[4] = {0, 1, 3, 15};
    assert_memory_equal(q, want, sizeof want);
    float back[4];
    assert_int_equal(cp_dequantize(CP_INT4_ASYM, q, &s, &z, 1, 4, 0, back, err, sizeof err), 0);
    assert_memory_equal(back, w, sizeof w);
    /* all positive: the range is extended to include 0, so z = 0 and 0 stays exact */
    const float p[3] = {7.5f, 15.0f, 3.0f}; /* lo = 0, hi = 15: s = 1 */
    assert_int_equal(cp_quantize(CP_INT4_ASYM, p, 1, 3, 0, q, &s, &z, err, sizeof err), 0);
    assert_true(s == 1.0f);
    assert_int_equal(z, 0);
    assert_int_equal(q[0], 8); /* 7.5 rounds to the even 8 */
    assert_int_equal(q[1], 15);
    assert_int_equal(q[2], 3);
}

static void test_zero_rows_and_groups(void **state) {
    (void)state;
    /* row 0 all zero; row 1 group 0 zero, group 1 not */
    const float w[8] = {0, 0, 0, 0, 0, 0, 1.0f, -2.0f};
    for (int s = 0; s < 3; s++) {
        int8_t q[8];
        float sc[4];
        uint8_t z[4];
        char err[256];
        assert_int_equal(cp_quantize((cp_qscheme)s, w, 2, 4, 2, q, sc, z, err, sizeof err), 0);
        /* an all-zero group gets PyTorch's eps as its scale, and codes 0 */
        assert_true(sc[0] == CP_SCALE_EPS && sc[1] == CP_SCALE_EPS && sc[2] == CP_SCALE_EPS);
        assert_true(sc[3] > 0.0f);
        float back[8];
        assert_int_equal(cp_dequantize((cp_qscheme)s, q, sc, z, 2, 4, 2, back, err, sizeof err), 0);
        for (int i = 0; i < 6; i++) assert_true(back[i] == 0.0f);
        if (s == CP_INT4_ASYM) assert_int_equal(z[0], 0);
    }
}

/* |w - w'| <= s/2 for every weight, every scheme and grouping, over random
 * weights with a few outliers; and fake quant equals dequantize(quantize). */
static void test_error_bound_and_fake_quant(void **state) {
    (void)state;
    enum { N = 24, K = 96 };
    float *w = malloc(sizeof(float) * N * K), *back = malloc(sizeof(float) * N * K);
    float *fq = malloc(sizeof(float) * N * K);
    int8_t *q = malloc(N * K);
    float sc[N * K];
    uint8_t z[N * K];
    ag_rng r;
    ag_rng_seed(&r, 5);
    for (int i = 0; i < N * K; i++) w[i] = ag_rng_normal(&r) * (i % 37 == 0 ? 8.0f : 0.5f) + (i / K == 3 ? 2.0f : 0.0f);
    const int groups[4] = {0, 32, 16, 96};
    char err[256];
    for (int s = 0; s < 3; s++)
        for (int gi = 0; gi < 4; gi++) {
            int G = groups[gi] ? groups[gi] : K, NG = K / G;
            assert_int_equal(cp_quantize((cp_qscheme)s, w, N, K, groups[gi], q, sc, z, err, sizeof err), 0);
            assert_int_equal(cp_dequantize((cp_qscheme)s, q, sc, z, N, K, groups[gi], back, err, sizeof err), 0);
            assert_int_equal(cp_fake_quant((cp_qscheme)s, w, N, K, groups[gi], fq, err, sizeof err), 0);
            assert_memory_equal(fq, back, sizeof(float) * N * K);
            int lo = s == CP_INT8_SYM ? -127 : s == CP_INT4_SYM ? -7 : 0;
            int hi = s == CP_INT8_SYM ? 127 : s == CP_INT4_SYM ? 7 : 15;
            for (int i = 0; i < N * K; i++) {
                float scale = sc[(i / K) * NG + (i % K) / G];
                assert_true(q[i] >= lo && q[i] <= hi);
                double e = fabs((double)w[i] - back[i]);
                assert_true(e <= scale * 0.5 * (1.0 + 1e-6));
            }
            if (s != CP_INT4_ASYM) /* symmetric grid: q(-w) = -q(w) */
                for (int i = 0; i < N * K; i++) {
                    float neg = -w[i];
                    float scale = sc[(i / K) * NG + (i % K) / G];
                    assert_int_equal(cp_quantize_value((cp_qscheme)s, neg, scale, 0), -q[i]);
                }
        }
    /* fake quant in place gives the same values */
    memcpy(back, w, sizeof(float) * N * K);
    assert_int_equal(cp_fake_quant(CP_INT4_ASYM, back, N, K, 32, back, err, sizeof err), 0);
    assert_int_equal(cp_fake_quant(CP_INT4_ASYM, w, N, K, 32, fq, err, sizeof err), 0);
    assert_memory_equal(fq, back, sizeof(float) * N * K);
    free(w), free(back), free(fq), free(q);
}

static void test_bad_input(void **state) {
    (void)state;
    float w[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int8_t q[8];
    float sc[8];
    char err[256];
    assert_int_equal(cp_quantize(CP_INT8_SYM, w, 2, 4, 3, q, sc, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "group size 3"));
    assert_int_equal(cp_quantize(CP_INT8_SYM, w, 2, 4, -1, q, sc, NULL, err, sizeof err), -1);
    assert_int_equal(cp_quantize(CP_INT4_ASYM, w, 2, 4, 0, q, sc, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "zero-point"));
    assert_int_equal(cp_quantize((cp_qscheme)7, w, 2, 4, 0, q, sc, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "scheme 7"));
    w[5] = NAN;
    assert_int_equal(cp_quantize(CP_INT8_SYM, w, 2, 4, 0, q, sc, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "weight [1, 1]"));
    assert_int_equal(cp_fake_quant(CP_INT8_SYM, w, 2, 4, 0, sc, err, sizeof err), -1);
    assert_non_null(strstr(err, "weight [1, 1]"));
}

/* Fixed scales are used as given (not recomputed): the codes are
 * round(w / s) clamped; with the grid's own scales they equal cp_quantize's;
 * bad scales and zero points are named by row and group. */
static void test_fixed_parameters(void **state) {
    (void)state;
    const float w[8] = {1.0f, -2.0f, 3.0f, 40.0f, 0.5f, 0.25f, -0.75f, 0.0f};
    int8_t q[8], q2[8];
    float sc[2];
    char err[256];
    assert_int_equal(cp_quantize(CP_INT8_SYM, w, 2, 4, 0, q, sc, NULL, err, sizeof err), 0);
    assert_int_equal(cp_quantize_fixed(CP_INT8_SYM, w, 2, 4, 0, sc, NULL, q2, err, sizeof err), 0);
    assert_memory_equal(q, q2, sizeof q);
    const float given[2] = {0.25f, 0.125f}; /* row 0 saturates: 40 / 0.25 = 160 -> 127 */
    assert_int_equal(cp_quantize_fixed(CP_INT8_SYM, w, 2, 4, 0, given, NULL, q2, err, sizeof err), 0);
    const int8_t want[8] = {4, -8, 12, 127, 4, 2, -6, 0};
    assert_memory_equal(q2, want, sizeof want);
    /* asymmetric: the given zero points */
    const float s4[2] = {1.0f, 0.25f};
    const int32_t z4[2] = {3, 15};
    assert_int_equal(cp_quantize_fixed(CP_INT4_ASYM, w, 2, 4, 0, s4, z4, q2, err, sizeof err), 0);
    const int8_t want4[8] = {4, 1, 6, 15, 15, 15, 12, 15};
    assert_memory_equal(q2, want4, sizeof want4);
    /* zero points of a symmetric grid may be given only as zeros */
    const int32_t zeros[2] = {0, 0}, bad_z[2] = {0, 16};
    assert_int_equal(cp_quantize_fixed(CP_INT4_SYM, w, 2, 4, 0, s4, zeros, q2, err, sizeof err), 0);
    assert_int_equal(cp_quantize_fixed(CP_INT4_SYM, w, 2, 4, 0, s4, z4, q2, err, sizeof err), -1);
    assert_non_null(strstr(err, "zero point of row 0, group 0 is 3"));
    assert_int_equal(cp_quantize_fixed(CP_INT4_ASYM, w, 2, 4, 0, s4, bad_z, q2, err, sizeof err), -1);
    assert_non_null(strstr(err, "row 1, group 0 is 16: expected 0..15"));
    assert_int_equal(cp_quantize_fixed(CP_INT4_ASYM, w, 2, 4, 0, s4, NULL, q2, err, sizeof err), -1);
    assert_non_null(strstr(err, "zero points"));
    const float bad_s[2] = {1.0f, -1.0f}, nan_s[2] = {NAN, 1.0f};
    assert_int_equal(cp_quantize_fixed(CP_INT8_SYM, w, 2, 4, 0, bad_s, NULL, q2, err, sizeof err), -1);
    assert_non_null(strstr(err, "scale of row 1, group 0 is -1"));
    assert_int_equal(cp_quantize_fixed(CP_INT8_SYM, w, 2, 4, 0, nan_s, NULL, q2, err, sizeof err), -1);
    assert_non_null(strstr(err, "is nan"));
    assert_int_equal(cp_quantize_fixed(CP_INT8_SYM, w, 2, 4, 0, NULL, NULL, q2, err, sizeof err), -1);
}

/* The activation grid: limbs on exact halves round to even, clamp to
 * [-127, 127] (NaN -> -127), a zero row has scale 0 and zero limbs, and three
 * limbs reconstruct x within sx / (2 * 254^2) plus the rounding of x / sx. */
static void test_activation_limbs(void **state) {
    (void)state;
    assert_int_equal(cp_limb_round(2.5f), 2);
    assert_int_equal(cp_limb_round(-2.5f), -2);
    assert_int_equal(cp_limb_round(3.5f), 4);
    assert_int_equal(cp_limb_round(200.0f), 127);
    assert_int_equal(cp_limb_round(-200.0f), -127);
    assert_int_equal(cp_limb_round(NAN), -127);
    enum { K = 40 };
    float x[K];
    ag_rng r;
    ag_rng_seed(&r, 3);
    for (int i = 0; i < K; i++) x[i] = 3.0f * ag_rng_normal(&r);
    float sx = cp_act_scale(x, K), amax = 0;
    for (int i = 0; i < K; i++) amax = fmaxf(amax, fabsf(x[i]));
    assert_true(sx == amax / 127.0f);
    for (int i = 0; i < K; i++) {
        int8_t a[3];
        cp_act_limbs(x[i], cp_act_inv(sx), 3, a, 1);
        double rec = sx * (a[0] + a[1] / 254.0 + a[2] / (254.0 * 254.0));
        assert_true(fabs(rec - x[i]) <= sx * (0.5 / (254.0 * 254.0) + 127.0 * 0x1p-22));
        int8_t b[2];
        cp_act_limbs(x[i], cp_act_inv(sx), 1, b, 1); /* one limb: plain dynamic int8 */
        assert_int_equal(b[0], a[0]);
    }
    float zero[4] = {0};
    assert_true(cp_act_scale(zero, 4) == 0.0f);
    int8_t z[6] = {1, 1, 1, 1, 1, 1};
    assert_true(cp_act_inv(0.0f) == 0.0f);
    cp_act_limbs(0.0f, 0.0f, 3, z, 2); /* stride 2: limbs at 0, 2, 4 */
    assert_int_equal(z[0], 0), assert_int_equal(z[2], 0), assert_int_equal(z[4], 0);
    assert_int_equal(z[1], 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int8_hand_computed),
        cmocka_unit_test(test_pytorch_rule_examples),
        cmocka_unit_test(test_rne_equals_nearbyint),
        cmocka_unit_test(test_grids),
        cmocka_unit_test(test_grid_params),
        cmocka_unit_test(test_static_activation_codes),
        cmocka_unit_test(test_qmatmul_reference),
        cmocka_unit_test(test_int4_sym_hand_computed),
        cmocka_unit_test(test_int4_asym_hand_computed),
        cmocka_unit_test(test_zero_rows_and_groups),
        cmocka_unit_test(test_error_bound_and_fake_quant),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_fixed_parameters),
        cmocka_unit_test(test_activation_limbs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
