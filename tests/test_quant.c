/* test_quant.c - the integer grids (compress/grid.h): hand-computed codes,
 * the rounding rule, the error bound, zero groups, per-group scales, fake
 * quantization = dequantize(quantize), fixed (given) scales and zero points,
 * the activation limbs, and bad input. */
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

/* absmax 127 gives s = 1 exactly, so the codes are round(w) by hand;
 * halves go away from zero. */
static void test_int8_hand_computed(void **state) {
    (void)state;
    const float w[8] = {127.0f, -63.5f, 0.5f, -0.5f, 2.49f, 1.5f, -2.5f, 0.0f};
    const int8_t want[8] = {127, -64, 1, -1, 2, 2, -3, 0};
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

static void test_int4_sym_hand_computed(void **state) {
    (void)state;
    /* absmax 14 -> s = 2: codes round(w / 2) in [-7, 7] */
    const float w[6] = {14.0f, -7.0f, 5.0f, 0.9f, -14.0f, 3.0f};
    const int8_t want[6] = {7, -4, 3, 0, -7, 2}; /* -3.5 -> -4, 2.5 -> 3, 0.45 -> 0, 1.5 -> 2 */
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
    assert_int_equal(q[0], 8); /* 7.5 rounds away from zero */
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
        assert_true(sc[0] == 0.0f && sc[1] == 0.0f && sc[2] == 0.0f);
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

/* The activation grid: limbs on exact halves round away from zero, clamp to
 * [-127, 127] (NaN -> -127), a zero row has scale 0 and zero limbs, and three
 * limbs reconstruct x within sx / (2 * 254^2) plus the rounding of x / sx. */
static void test_activation_limbs(void **state) {
    (void)state;
    assert_int_equal(cp_limb_round(2.5f), 3);
    assert_int_equal(cp_limb_round(-2.5f), -3);
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
        cp_act_limbs(x[i], sx, 3, a, 1);
        double rec = sx * (a[0] + a[1] / 254.0 + a[2] / (254.0 * 254.0));
        assert_true(fabs(rec - x[i]) <= sx * (0.5 / (254.0 * 254.0) + 127.0 * 0x1p-24));
        int8_t b[2];
        cp_act_limbs(x[i], sx, 1, b, 1); /* one limb: plain dynamic int8 */
        assert_int_equal(b[0], a[0]);
    }
    float zero[4] = {0};
    assert_true(cp_act_scale(zero, 4) == 0.0f);
    int8_t z[6] = {1, 1, 1, 1, 1, 1};
    cp_act_limbs(0.0f, 0.0f, 3, z, 2); /* stride 2: limbs at 0, 2, 4 */
    assert_int_equal(z[0], 0), assert_int_equal(z[2], 0), assert_int_equal(z[4], 0);
    assert_int_equal(z[1], 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int8_hand_computed),
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
