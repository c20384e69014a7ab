/* test_kernels.c - the runtime's matrix kernels: every SIMD kernel this CPU
 * can run gives exactly the bits of its scalar reference (integer parts and
 * the float combination), the results equal the product with the dequantized
 * weights (within 1e-5 with three activation limbs), and the activation limbs
 * reconstruct x within their bound. */
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
#include "autograd/params.h"
#include "autograd/rng.h"
#include "autograd/tape.h"
#include "infer/kernels.h"
#include "infer/kernels_internal.h"
#include "infer/pack.h"
#include "infer/types.h"
#include "compress/grid.h"

/* A tensor view over packed data, as the reader would make it. */

/* An instruction set a kernel context can take: the CPU has it and PARE_ISA
 * (inf_isa_best) does not cap below it (inf_kctx_init clamps to that). The
 * kernels themselves are also called directly for every set the CPU has. */
static bool kctx_isa(inf_isa isa) { return inf_isa_supported(isa) && isa <= inf_isa_best(); }
static inf_tensor make_tensor(int dtype, int N, int K, uint32_t G, const uint8_t *data, uint64_t bytes) {
    inf_tensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "w");
    t.dtype = dtype;
    t.ndim = 2;
    t.shape[0] = (uint32_t)N, t.shape[1] = (uint32_t)K, t.shape[2] = t.shape[3] = 1;
    t.group = G;
    t.bytes = bytes;
    t.data = data;
    return t;
}

/* Keeps the 2 largest |w| of every 4 consecutive inputs (2:4), zeroing the rest. */
static void keep_2_of_4(float *w, size_t n) {
    for (size_t i = 0; i + 4 <= n; i += 4)
        for (int drop = 0; drop < 2; drop++) {
            int m = -1;
            for (int j = 0; j < 4; j++)
                if (w[i + j] != 0.0f && (m < 0 || fabsf(w[i + j]) < fabsf(w[i + m]))) m = j;
            int nz = 0;
            for (int j = 0; j < 4; j++) nz += w[i + j] != 0.0f;
            if (m >= 0 && nz > 2) w[i + m] = 0.0f;
        }
}

static void fill(float *x, size_t n, uint64_t seed, float scale) {
    ag_rng r;
    ag_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = ag_rng_normal(&r) * scale;
}

/* For each quantized type, shape, group, token count and limb count: SIMD ==
 * scalar bit for bit; and close to the dequantized float product. */
static void test_quantized_simd_equals_scalar_and_dequantized(void **state) {
    (void)state;
    /* every quantized storage type of the traits table (types.h): a new row
     * is tested here without a line of its own */
    int dtypes[INF_DTYPE_COUNT], n_types = 0;
    for (int dt = 0; dt < INF_DTYPE_COUNT; dt++)
        if (inf_type(dt) && inf_type(dt)->act != INF_ACT_FLOAT) dtypes[n_types++] = dt;
    assert_true(n_types >= 3);
    const int shapes[4][3] = {{37, 64, 32}, {16, 96, 0}, {50, 128, 64}, {5, 32, 32}}; /* N, K, group */
    const int Ts[5] = {1, 2, 5, 8, INF_GEMM_MIN_T};
    char err[256];
    int checked_simd = 0;
    for (int di = 0; di < n_types; di++)
        for (int si = 0; si < 4; si++) {
            int N = shapes[si][0], K = shapes[si][1], group = shapes[si][2];
            float *w = malloc(sizeof(float) * N * K), *deq = malloc(sizeof(float) * N * K);
            fill(w, (size_t)N * K, 100 + si, 0.1f);
            for (int i = 0; i < N * K; i += 13) w[i] += 0.05f; /* asymmetric groups */
            if (dtypes[di] == INF_Q8NM) keep_2_of_4(w, (size_t)N * K);
            uint8_t *packed;
            uint64_t bytes;
            uint32_t G;
            assert_int_equal(inf_pack_matrix(dtypes[di], w, N, K, group, &packed, &bytes, &G, err, sizeof err), 0);
            inf_tensor t = make_tensor(dtypes[di], N, K, G, packed, bytes);
            for (int r = 0; r < N; r++) inf_type(dtypes[di])->row(&t, (size_t)r, deq + (size_t)r * K);
            inf_weight wt;
            assert_int_equal(inf_weight_init(&wt, &t, err, sizeof err), 0);
            /* the GEMM path's dequantization: every kernel gives the codes' exact values */
            int ldo = wt.NB * INF_ROWS;
            float *dk = malloc(sizeof(float) * K * ldo);
            for (int isa = 0; isa < INF_ISA_COUNT; isa++) {
                if (!inf_isa_supported((inf_isa)isa)) continue;
                memset(dk, 0, sizeof(float) * K * ldo);
                inf_dkernel_for((inf_isa)isa, dtypes[di])(&wt, dk, ldo, 0, wt.NB);
                for (int r = 0; r < N; r++)
                    for (int kk = 0; kk < K; kk++)
                        if (memcmp(&dk[(size_t)kk * ldo + r], &deq[(size_t)r * K + kk], 4))
                            fail_msg("dequant %s %s [%d, %d]: %g vs %g", inf_isa_name((inf_isa)isa),
                                     inf_type(dtypes[di])->name, r, kk, (double)dk[(size_t)kk * ldo + r],
                                     (double)deq[(size_t)r * K + kk]);
            }
            free(dk);
            for (int ti = 0; ti < 5; ti++) {
                int T = Ts[ti];
                float *x = malloc(sizeof(float) * T * K);
                fill(x, (size_t)T * K, 7 + ti, 1.0f);
                x[3] = 6.0f; /* an outlier sets the activation scale */
                for (int L = 1; L <= 3; L++) {
                    float *ref = malloc(sizeof(float) * T * N), *got = malloc(sizeof(float) * T * N);
                    inf_kctx k;
                    inf_kctx_init(&k, INF_ISA_SCALAR, L);
                    assert_int_equal(inf_matmul(&k, &wt, x, T, ref), 0);
                    inf_kctx_free(&k);
                    for (int isa = INF_ISA_AVX2; isa < INF_ISA_COUNT; isa++) {
                        if (!kctx_isa((inf_isa)isa)) continue;
                        inf_kctx_init(&k, (inf_isa)isa, L);
                        assert_int_equal(k.isa, isa);
                        memset(got, 0xff, sizeof(float) * T * N);
                        assert_int_equal(inf_matmul(&k, &wt, x, T, got), 0);
                        inf_kctx_free(&k);
                        if (T < INF_GEMM_MIN_T && memcmp(got, ref, sizeof(float) * T * N) != 0) {
                            for (int i = 0; i < T * N; i++)
                                if (memcmp(&got[i], &ref[i], 4))
                                    fail_msg("%s %s N=%d K=%d T=%d L=%d: out[%d] = %.9g, scalar %.9g",
                                             inf_isa_name((inf_isa)isa), inf_type(dtypes[di])->name, N, K, T, L, i,
                                             (double)got[i], (double)ref[i]);
                        }
                        checked_simd++;
                    }
                    /* against the dequantized weights, in double */
                    double maxerr = 0, maxref = 0;
                    for (int tt = 0; tt < T; tt++)
                        for (int r = 0; r < N; r++) {
                            double s = 0;
                            for (int kk = 0; kk < K; kk++) s += (double)x[tt * K + kk] * deq[r * K + kk];
                            maxerr = fmax(maxerr, fabs(s - ref[tt * N + r]));
                            maxref = fmax(maxref, fabs(s));
                        }
                    double tol = L == 3 ? 1e-5 : L == 2 ? 1e-3 : 5e-2;
                    if (maxerr > tol * maxref)
                        fail_msg("%s L=%d T=%d: error %g of max %g", inf_type(dtypes[di])->name, L, T, maxerr, maxref);
                    free(ref), free(got);
                }
                free(x);
            }
            inf_weight_free(&wt);
            free(packed), free(w), free(deq);
        }
    if (kctx_isa(INF_ISA_AVX2)) assert_true(checked_simd > 0); /* PARE_ISA=scalar: nothing SIMD to compare */
}

/* Every row of the traits table keeps the contract of types.h: a name that
 * names it, a scalar reference beside every SIMD kernel, the kernels its
 * kind needs, and pack then row giving exactly the grid's fake-quantized
 * values (f32: the floats themselves). */
static void test_traits_rows(void **state) {
    (void)state;
    enum { N = 21, K = 64 };
    float w[N * K], fq[N * K], row[K];
    fill(w, N * K, 77, 0.2f);
    char err[256];
    for (int dt = 0; dt < INF_DTYPE_COUNT; dt++) {
        const inf_type_traits *tr = inf_type(dt);
        assert_non_null(tr);
        assert_int_equal(inf_dtype_from_name(tr->name), dt);
        assert_string_equal(inf_type_name(dt), tr->name);
        for (int isa = 1; isa < INF_ISA_COUNT; isa++) {
            if (tr->tile[isa]) assert_non_null(tr->tile[INF_ISA_SCALAR]);
            if (tr->matvec[isa]) assert_non_null(tr->matvec[INF_ISA_SCALAR]);
            if (tr->deq[isa]) assert_non_null(tr->deq[INF_ISA_SCALAR]);
        }
        bool quant = tr->act != INF_ACT_FLOAT;
        assert_true(quant ? tr->tile[0] && tr->deq[0] && tr->scheme >= 0 && tr->group_multiple > 0
                          : tr->matvec[0] != NULL);
        assert_true((tr->from_q8 ? !tr->pack : tr->pack != NULL) && (!tr->sparse || tr->from_q8) && tr->row && tr->prepare &&
                    tr->mm_blocks >= 1 && tr->decode_blocks >= 1);
        assert_true(tr->gemm_min_t >= 2);
        uint8_t *packed;
        uint64_t bytes;
        uint32_t G;
        fill(w, N * K, 77, 0.2f);
        if (dt == INF_Q8NM) keep_2_of_4(w, N * K);
        assert_int_equal(inf_pack_matrix(dt, w, N, K, 32, &packed, &bytes, &G, err, sizeof err), 0);
        inf_tensor t = make_tensor(dt, N, K, G, packed, bytes);
        if (quant) assert_int_equal(cp_fake_quant((cp_qscheme)tr->scheme, w, N, K, 32, fq, err, sizeof err), 0);
        else memcpy(fq, w, sizeof w);
        for (int r = 0; r < N; r++) {
            tr->row(&t, (size_t)r, row);
            assert_memory_equal(row, fq + r * K, sizeof row);
        }
        if (tr->check) {
            uint64_t at;
            const char *field;
            char what[128];
            assert_int_equal(tr->check(&t, &at, &field, what, sizeof what), 0);
        }
        free(packed);
    }
}

static void test_f32_matvec_simd_equals_scalar(void **state) {
    (void)state;
    /* N = 39: nine 4-row groups and a tail; K = 64 is attention's head width */
    const int Ks[5] = {16, 37, 64, 128, 385};
    for (int ki = 0; ki < 5; ki++) {
        int N = 39, K = Ks[ki];
        float *w = malloc(sizeof(float) * N * K), *x = malloc(sizeof(float) * K);
        float ref[39], got[39];
        fill(w, (size_t)N * K, 3, 1.0f);
        fill(x, (size_t)K, 4, 1.0f);
        inf_fkernel_for(INF_ISA_SCALAR)(w, x, K, ref, 0, N);
        for (int r = 0; r < N; r++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)w[r * K + k] * x[k];
            assert_true(fabs(s - ref[r]) <= 1e-5 * (1 + fabs(s)));
        }
        for (int isa = INF_ISA_AVX2; isa < INF_ISA_COUNT; isa++) {
            if (!inf_isa_supported((inf_isa)isa)) continue;
            inf_fkernel_for((inf_isa)isa)(w, x, K, got, 0, N);
            assert_memory_equal(got, ref, sizeof ref);
        }
        free(w), free(x);
    }
}

/* Attention's weighted sum: the written-out loop (y = y + (c_j s) v_j from
 * +0, row after row), and every SIMD version gives its bits; widths below,
 * at and above one register pass (64 columns) and with a tail. */
static void test_wsum_simd_equals_scalar(void **state) {
    (void)state;
    const int ns[5] = {16, 24, 64, 100, 128}, ms[3] = {1, 7, 65};
    for (int ni = 0; ni < 5; ni++)
        for (int mi = 0; mi < 3; mi++) {
            int n = ns[ni], m = ms[mi], ldv = n + 3;
            float *v = malloc(sizeof(float) * (size_t)m * ldv), *c = malloc(sizeof(float) * (size_t)m);
            float ref[128], loop[128], got[130];
            fill(v, (size_t)m * ldv, 31 + ni, 1.0f);
            fill(c, (size_t)m, 41 + mi, 1.0f);
            c[0] = -0.0f; /* a -0 product: the sum starts from +0 */
            float scale = 0.37f;
            for (int i = 0; i < n; i++) loop[i] = 0.0f;
            for (int j = 0; j < m; j++)
                for (int i = 0; i < n; i++) loop[i] = loop[i] + (c[j] * scale) * v[(size_t)j * ldv + i];
            inf_wsum_for(INF_ISA_SCALAR)(ref, c, scale, v, m, n, ldv);
            assert_memory_equal(ref, loop, sizeof(float) * (size_t)n);
            for (int isa = INF_ISA_AVX2; isa < INF_ISA_COUNT; isa++) {
                if (!inf_isa_supported((inf_isa)isa)) continue;
                got[n] = got[n + 1] = 12345.0f;
                inf_wsum_for((inf_isa)isa)(got, c, scale, v, m, n, ldv);
                assert_memory_equal(got, ref, sizeof(float) * (size_t)n);
                assert_true(got[n] == 12345.0f && got[n + 1] == 12345.0f); /* nothing written past n */
            }
            free(v), free(c);
        }
}

/* The runtime's GELU is the training op's, bit for bit: bias added first, then
 * the same expression and exponential as ag_gelu (checked against the training
 * op itself on a tape), for lengths around every vector width, large
 * arguments whose exponential under- or overflows, and a NaN; and both are
 * within 2e-6 of GELU's tanh form evaluated in double. */
static void test_gelu_equals_training_op(void **state) {
    (void)state;
    enum { N = 83 };
    ag_params p;
    ag_params_init(&p);
    assert_int_equal(ag_params_add(&p, "x", 1, (int[]){N}, 0), 0);
    assert_int_equal(ag_params_alloc(&p, 0), 0);
    float x[N], b[N], got[N];
    fill(x, N, 51, 3.0f);
    fill(b, N, 52, 1.0f);
    x[5] = -40.0f, x[20] = 40.0f, x[30] = -1e4f, x[31] = 1e4f, x[21] = NAN;
    for (int withb = 0; withb < 2; withb++)
        for (int n = 1; n <= N; n += n < 20 ? 1 : 21) {
            float *in = ag_param(&p, 0)->data;
            for (int i = 0; i < N; i++) in[i] = withb ? x[i] + b[i] : x[i];
            ag_ctx *c = ag_ctx_new();
            assert_non_null(c);
            ag_tensor *y = ag_gelu(c, ag_param(&p, 0));
            assert_non_null(y);
            memcpy(got, x, sizeof x);
            inf_gelu_for(INF_ISA_SCALAR)(got, withb ? b : NULL, n);
            assert_memory_equal(got, y->data, sizeof(float) * (size_t)n);
            for (int i = n; i < N; i++) assert_memory_equal(&got[i], &x[i], sizeof(float)); /* nothing past n */
            for (int i = 0; i < n; i++) {
                if (i == 21) {
                    assert_true(isnan(got[i]));
                    continue;
                }
                double v = in[i], want = 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
                assert_true(fabs(got[i] - want) <= 2e-6 * fmax(1.0, fabs(want)));
            }
            ag_ctx_free(c);
        }
    ag_params_free(&p);
}

/* Softmax numerators and their double sum: exp(x scale - max) within 4e-7
 * relative of libm's, the sum in index order, for lengths around the vector
 * widths, spreads that send the argument past -87 (the exponential's clamp)
 * and signed zeros. */
static void test_softmax_numerators(void **state) {
    (void)state;
    const int ns[7] = {1, 15, 16, 17, 64, 100, 256};
    for (int ni = 0; ni < 7; ni++)
        for (int kind = 0; kind < 3; kind++) {
            int n = ns[ni];
            float x[256], got[256];
            fill(x, (size_t)n, 61 + ni, kind == 1 ? 400.0f : 2.0f);
            if (kind == 2)
                for (int j = 0; j < n; j++) x[j] = j % 2 ? 0.0f : -0.0f;
            memcpy(got, x, sizeof(float) * (size_t)n);
            double sum = inf_softmax_for(INF_ISA_SCALAR)(got, n, 0.125f);
            float mx = -INFINITY;
            for (int j = 0; j < n; j++) mx = fmaxf(mx, x[j] * 0.125f);
            double want = 0, order = 0;
            for (int j = 0; j < n; j++) {
                float arg = x[j] * 0.125f - mx; /* in float, as the kernel forms it */
                double e = exp((double)arg);
                assert_true(fabs(got[j] - e) <= 4e-7 * e + 2e-38);
                want += e;
                order += got[j];
            }
            assert_memory_equal(&sum, &order, sizeof sum);
            assert_true(fabs(sum - want) <= 1e-6 * want);
        }
}

/* x ~= sx (a0 + a1/254 + a2/254^2) within sx / (2 * 254^2) (plus float
 * rounding of u = x * (1 / sx)), and group sums are the sums of the limbs. */
static void test_activation_limbs(void **state) {
    (void)state;
    enum { K = 64, T = 3 };
    float x[T * K];
    fill(x, T * K, 11, 2.0f);
    for (int i = 0; i < K; i++) x[2 * K + i] = 0.0f; /* an all-zero token */
    inf_kctx k;
    inf_kctx_init(&k, INF_ISA_SCALAR, 3);
    assert_int_equal(inf_quantize_act(&k, x, T, K, 32), 0);
    for (int t = 0; t < T; t++) {
        const int8_t *a = k.a + (size_t)t * 3 * K;
        for (int i = 0; i < K; i++) {
            double rec = k.sx[t] * (a[i] + a[K + i] / 254.0 + a[2 * K + i] / (254.0 * 254.0));
            /* plus the roundings of u = x * (1 / sx) itself: an ulp of 127 each */
            assert_true(fabs(rec - x[t * K + i]) <= k.sx[t] * (0.5 / (254.0 * 254.0) + 127.0 * 0x1p-22));
            for (int l = 0; l < 3; l++) assert_true(a[l * K + i] >= -127 && a[l * K + i] <= 127);
        }
        for (int l = 0; l < 3; l++)
            for (int g = 0; g < 2; g++) {
                int s = 0;
                for (int i = g * 32; i < g * 32 + 32; i++) s += a[l * K + i];
                assert_int_equal(k.asum[(t * 3 + l) * 2 + g], s);
            }
    }
    assert_true(k.sx[2] == 0.0f);
    inf_kctx_free(&k);
}

/* The AVX-512 limb splitter gives the scalar reference's bytes, on halves
 * (where rounding half to even matters), random values, NaN and zeros. */
static void test_activation_limbs_simd_equals_scalar(void **state) {
    (void)state;
    if (!inf_isa_supported(INF_ISA_AVX512)) {
        print_message("no AVX-512 on this CPU: nothing to compare\n");
        return;
    }
    enum { K = 96 };
    float x[4][K];
    fill(x[0], K, 21, 1.0f);
    for (int i = 0; i < K; i++) x[1][i] = (float)(i - 48) * 0.5f + (i % 3 == 0 ? 0.25f : 0.0f); /* amax 23.75 */
    x[1][0] = 127.0f * 0.5f; /* u on exact halves: sx = 0.5 */
    for (int i = 0; i < K; i++) x[2][i] = (float)(i % 7) - 3.0f;
    x[2][5] = NAN;
    for (int i = 0; i < K; i++) x[3][i] = i == 7 ? -1e-30f : 0.0f;
    for (int r = 0; r < 4; r++)
        for (int L = 1; L <= 3; L++) {
            int8_t a1[3 * K], a2[3 * K];
            uint8_t u2[3 * K];
            float s1, s2;
            inf_act_token_scalar(x[r], K, L, &s1, a1);
            inf_act_token_avx512(x[r], K, L, &s2, a2, u2);
            assert_memory_equal(&s1, &s2, sizeof s1);
            assert_memory_equal(a1, a2, (size_t)L * K);
            for (int i = 0; i < L * K; i++) assert_int_equal(u2[i], a1[i] + 128); /* the VNNI form */
            inf_act_token_avx512(x[r], K, L, &s2, a2, NULL);
            assert_memory_equal(a1, a2, (size_t)L * K);
        }
    /* group sums (int4 zero-point terms): extreme bytes and random ones, G = 32 and 96 */
    int8_t b[K];
    for (int i = 0; i < K; i++) b[i] = (int8_t)(i < 32 ? -128 + (i % 2) : i < 64 ? 127 : (i * 37) % 255 - 127);
    for (int G = 32; G <= K; G += 64) {
        int32_t g1[3], g2[3];
        inf_group_sums_scalar(b, K, G, g1);
        inf_group_sums_avx512(b, K, G, g2);
        assert_memory_equal(g1, g2, sizeof(int32_t) * (size_t)(K / G));
    }
}


/* Static activations (A8 sites): for every integer type, shapes, groups,
 * token counts and activation bits, every instruction set's kernels give the
 * scalar reference's bits, and those equal compress/grid.h's quantized
 * product (cp_qmatmul_ref) of the grid's activation codes and the weight's
 * codes; a product of T tokens gives each token the bits it gets alone. */
static void test_static_activations(void **state) {
    (void)state;
    const int shapes[3][3] = {{37, 64, 32}, {16, 96, 0}, {50, 128, 64}}; /* N, K, group */
    const int Ts[6] = {1, 2, 3, 5, 8, 20}, bits[3] = {8, 6, 4};
    const int dtypes[3] = {INF_Q8, INF_Q4, INF_Q4A};
    char err[256];
    for (int di = 0; di < 3; di++)
        for (int si = 0; si < 3; si++) {
            int N = shapes[si][0], K = shapes[si][1], G = shapes[si][2] ? shapes[si][2] : K, NG = K / G;
            cp_qscheme sch = (cp_qscheme)inf_type(dtypes[di])->scheme;
            float *w = malloc(sizeof(float) * N * K), *sc = malloc(sizeof(float) * N * NG);
            int8_t *q = malloc((size_t)N * K);
            uint8_t *z8 = malloc((size_t)N * NG);
            int32_t *z = malloc(sizeof(int32_t) * N * NG);
            fill(w, (size_t)N * K, 40 + si, 0.1f);
            for (int i = 0; i < N * K; i += 11) w[i] += 0.07f;
            assert_int_equal(cp_quantize(sch, w, N, K, G, q, sc, z8, err, sizeof err), 0);
            for (int i = 0; i < N * NG; i++) z[i] = sch == CP_INT4_ASYM ? z8[i] : 0;
            uint32_t shape[2] = {(uint32_t)N, (uint32_t)K};
            uint64_t bytes;
            assert_int_equal(inf_tensor_bytes(dtypes[di], 2, shape, (uint32_t)G, &bytes, err, sizeof err), 0);
            uint8_t *packed = malloc(bytes), *fromf = NULL;
            assert_int_equal(inf_pack_codes(dtypes[di], q, N, K, G, sc, z, packed, err, sizeof err), 0);
            /* the same bytes as packing the floats (q - z) s with those fixed scales (the exporter's path) */
            float *wf = malloc(sizeof(float) * N * K);
            for (int i = 0; i < N * K; i++) {
                int gi = (i / K) * NG + (i % K) / G;
                wf[i] = cp_decode(q[i], z[gi], sc[gi]);
            }
            uint64_t b2;
            uint32_t g2;
            assert_int_equal(inf_pack_matrix_fixed(dtypes[di], wf, N, K, shapes[si][2], sc,
                                                   sch == CP_INT4_ASYM ? z : NULL, &fromf, &b2, &g2, err, sizeof err), 0);
            assert_true(b2 == bytes);
            assert_memory_equal(packed, fromf, bytes);
            inf_tensor t = make_tensor(dtypes[di], N, K, (uint32_t)G, packed, bytes);
            inf_weight wt;
            assert_int_equal(inf_weight_init(&wt, &t, err, sizeof err), 0);
            for (int bi = 0; bi < 3; bi++) {
                for (int ti = 0; ti < 6; ti++) {
                    int T = Ts[ti], hi = (1 << (bits[bi] - 1)) - 1;
                    float *x = malloc(sizeof(float) * T * K), *ref = malloc(sizeof(float) * T * N);
                    float *got = malloc(sizeof(float) * T * N), *one = malloc(sizeof(float) * N);
                    fill(x, (size_t)T * K, 70 + ti, 1.0f);
                    x[1] = 1.25f; /* exactly half-way on the grid with sa = 0.5 below */
                    float sa = ti % 2 ? 0.5f : 2.5f / (float)hi; /* some values clip */
                    assert_int_equal(inf_weight_set_act(&wt, bits[bi], sa, err, sizeof err), 0);
                    int8_t *a = malloc((size_t)T * K);
                    float *sav = malloc(sizeof(float) * T);
                    for (int i = 0; i < T * K; i++) a[i] = cp_act_code(x[i], 1.0f / sa, hi);
                    for (int i = 0; i < T; i++) sav[i] = sa;
                    cp_qmatmul_ref(a, sav, T, q, sc, sch == CP_INT4_ASYM ? z : NULL, N, K, G, ref);
                    for (int isa = 0; isa < INF_ISA_COUNT; isa++) {
                        if (!kctx_isa((inf_isa)isa)) continue;
                        inf_kctx k;
                        inf_kctx_init(&k, (inf_isa)isa, 3); /* the float limbs do not matter here */
                        memset(got, 0xff, sizeof(float) * T * N);
                        assert_int_equal(inf_matmul(&k, &wt, x, T, got), 0);
                        for (int i = 0; i < T * N; i++)
                            if (memcmp(&got[i], &ref[i], 4))
                                fail_msg("%s %s N=%d K=%d G=%d T=%d A%d: out[%d] = %.9g, the grid's product %.9g",
                                         inf_isa_name((inf_isa)isa), inf_type(dtypes[di])->name, N, K, G, T, bits[bi], i,
                                         (double)got[i], (double)ref[i]);
                        for (int tt = 0; tt < T; tt += 3) { /* one token alone: the same bits */
                            assert_int_equal(inf_matmul(&k, &wt, x + (size_t)tt * K, 1, one), 0);
                            assert_memory_equal(one, ref + (size_t)tt * N, sizeof(float) * N);
                            assert_int_equal(inf_matvec_prepare(&k, &wt, x + (size_t)tt * K), 0);
                            inf_matvec_rows(&k, &wt, x + (size_t)tt * K, one, 0, wt.NB);
                            assert_memory_equal(one, ref + (size_t)tt * N, sizeof(float) * N);
                        }
                        inf_kctx_free(&k);
                    }
                    free(x), free(ref), free(got), free(one), free(a), free(sav);
                }
            }
            assert_int_equal(inf_weight_set_act(&wt, 0, 0.0f, err, sizeof err), 0);
            assert_int_equal(wt.act_hi, 0);
            assert_int_equal(inf_weight_set_act(&wt, 9, 1.0f, err, sizeof err), -1);
            assert_int_equal(inf_weight_set_act(&wt, 8, 0.0f, err, sizeof err), -1);
            inf_weight_free(&wt);
            free(w), free(sc), free(q), free(z8), free(z), free(packed), free(fromf), free(wf);
        }
}

/* A sparse type computes exactly what q8 computes from the same weights:
 * for sparsities from none to all but a few codes (rows with gaps longer
 * than one column step, empty rows, a last row block with padding rows),
 * per-channel and per-group scales, token and limb counts, float and static
 * activations, every instruction set: the same rows, the same dequantized
 * GEMM operand, the same product bits; and the sparse file is smaller where
 * most codes are 0. */
static void test_sparse_equals_q8(void **state) {
    (void)state;
    const int shapes[3][3] = {{37, 64, 32}, {20, 640, 0}, {50, 128, 64}}; /* N, K, group */
    const double keep[4] = {1.0, 0.5, 0.1, 0.01};
    const int Ts[4] = {1, 3, 8, 20};
    char err[256];
    int sparse_types = 0;
    for (int dt = 0; dt < INF_DTYPE_COUNT; dt++) {
        const inf_type_traits *tr = inf_type(dt);
        if (!tr->from_q8) continue;
        sparse_types++;
        for (int si = 0; si < 3; si++)
            for (int ki = 0; ki < 4; ki++) {
                int N = shapes[si][0], K = shapes[si][1], group = shapes[si][2];
                float *w = malloc(sizeof(float) * N * K);
                fill(w, (size_t)N * K, 300 + si * 4 + ki, 0.1f);
                ag_rng r;
                ag_rng_seed(&r, 900 + (uint64_t)ki);
                for (int i = 0; i < N * K; i++)
                    if (ag_rng_uniform(&r) >= keep[ki]) w[i] = 0.0f;
                for (int kk = 0; kk < K; kk++) w[2 * K + kk] = 0.0f;              /* an empty row */
                for (int kk = 1; kk < K - 1; kk++) w[3 * K + kk] = 0.0f;          /* first and last column only */
                w[3 * K] = 0.3f, w[3 * K + K - 1] = -0.3f;
                if (dt == INF_Q8NM) keep_2_of_4(w, (size_t)N * K);
                uint8_t *p8, *ps;
                uint64_t b8, bs;
                uint32_t G8, Gs;
                assert_int_equal(inf_pack_matrix(INF_Q8, w, N, K, group, &p8, &b8, &G8, err, sizeof err), 0);
                assert_int_equal(inf_pack_matrix(dt, w, N, K, group, &ps, &bs, &Gs, err, sizeof err), 0);
                assert_int_equal(G8, Gs);
                if (keep[ki] <= 0.1 && tr->sparse) assert_true(keep[ki] < 0.1 ? bs * 2 < b8 : bs < b8);
                if (!tr->sparse) assert_true(bs * 10 < b8 * 7); /* q8nm: 80 bytes per 128 codes */
                uint8_t *pf;
                uint64_t bf;
                assert_int_equal(inf_pack_from_q8(dt, p8, N, K, (int)G8, &pf, &bf, err, sizeof err), 0);
                assert_true(bf == bs);
                assert_memory_equal(pf, ps, bs);
                free(pf);
                inf_tensor t8 = make_tensor(INF_Q8, N, K, G8, p8, b8), ts = make_tensor(dt, N, K, Gs, ps, bs);
                uint64_t at;
                const char *field;
                char what[256];
                if (tr->check(&ts, &at, &field, what, sizeof what)) fail_msg("%s", what);
                float *r8 = malloc(sizeof(float) * K), *rs = malloc(sizeof(float) * K);
                for (int row = 0; row < N; row++) {
                    inf_type(INF_Q8)->row(&t8, (size_t)row, r8);
                    tr->row(&ts, (size_t)row, rs);
                    assert_memory_equal(r8, rs, sizeof(float) * K);
                }
                free(r8), free(rs);
                inf_weight w8, ws;
                assert_int_equal(inf_weight_init(&w8, &t8, err, sizeof err), 0);
                assert_int_equal(inf_weight_init(&ws, &ts, err, sizeof err), 0);
                int ldo = w8.NB * INF_ROWS;
                float *d8 = malloc(sizeof(float) * K * ldo), *ds = malloc(sizeof(float) * K * ldo);
                inf_dkernel_for(INF_ISA_SCALAR, INF_Q8)(&w8, d8, ldo, 0, w8.NB);
                for (int isa = 0; isa < INF_ISA_COUNT; isa++) {
                    if (!inf_isa_supported((inf_isa)isa)) continue;
                    inf_dkernel_for((inf_isa)isa, dt)(&ws, ds, ldo, 0, ws.NB);
                    assert_memory_equal(d8, ds, sizeof(float) * K * ldo);
                }
                free(d8), free(ds);
                for (int ti = 0; ti < 4; ti++)
                    for (int L = 0; L <= 3; L++) { /* L = 0: static 8-bit activations */
                        int T = Ts[ti];
                        float *x = malloc(sizeof(float) * T * K), *o8 = malloc(sizeof(float) * T * N);
                        float *os = malloc(sizeof(float) * T * N);
                        fill(x, (size_t)T * K, 500 + ti, 1.0f);
                        x[1] = 5.0f;
                        assert_int_equal(inf_weight_set_act(&w8, L ? 0 : 8, 0.03f, err, sizeof err), 0);
                        assert_int_equal(inf_weight_set_act(&ws, L ? 0 : 8, 0.03f, err, sizeof err), 0);
                        for (int isa = 0; isa < INF_ISA_COUNT; isa++) {
                            if (!kctx_isa((inf_isa)isa)) continue;
                            inf_kctx k;
                            inf_kctx_init(&k, (inf_isa)isa, L ? L : 3);
                            assert_int_equal(inf_matmul(&k, &w8, x, T, o8), 0);
                            memset(os, 0xff, sizeof(float) * T * N);
                            assert_int_equal(inf_matmul(&k, &ws, x, T, os), 0);
                            for (int i = 0; i < T * N; i++)
                                if (memcmp(&o8[i], &os[i], 4))
                                    fail_msg("%s %s N=%d K=%d keep=%g T=%d L=%d: out[%d] = %.9g, q8 %.9g",
                                             inf_isa_name((inf_isa)isa), tr->name, N, K, keep[ki], T, L, i,
                                             (double)os[i], (double)o8[i]);
                            if (isa == INF_ISA_AVX512 && dt == INF_Q8NM) { /* the kernel of CPUs without VBMI */
                                memset(os, 0xff, sizeof(float) * T * N);
                                inf_q8nm_avx512_shifts(&k, &ws, T, os, 0, ws.NB);
                                assert_memory_equal(os, o8, sizeof(float) * T * N);
                            }
                            /* the decode pieces, split at every row block */
                            assert_int_equal(inf_matvec_prepare(&k, &ws, x), 0);
                            for (int b = 0; b < ws.NB; b++) inf_matvec_rows(&k, &ws, x, os, b, b + 1);
                            assert_int_equal(inf_matmul(&k, &w8, x, 1, o8), 0);
                            assert_memory_equal(os, o8, sizeof(float) * N);
                            inf_kctx_free(&k);
                        }
                        free(x), free(o8), free(os);
                    }
                inf_weight_free(&w8), inf_weight_free(&ws);
                free(p8), free(ps), free(w);
            }
    }
    assert_true(sparse_types >= 2);
    /* a q8 layout with 3 nonzero codes of 4 does not fit q8nm */
    float w3[16 * 32];
    fill(w3, 16 * 32, 5, 1.0f);
    uint8_t *p8, *pn;
    uint64_t b8, bn;
    uint32_t G8;
    assert_int_equal(inf_pack_matrix(INF_Q8, w3, 16, 32, 0, &p8, &b8, &G8, err, sizeof err), 0);
    assert_int_equal(inf_pack_from_q8(INF_Q8NM, p8, 16, 32, 32, &pn, &bn, err, sizeof err), -1);
    assert_non_null(strstr(err, "more than 2 nonzero codes"));
    assert_null(pn);
    free(p8);
}

/* The AVX-512 static quantizer gives the scalar bytes (halves, clipping, NaN). */
static void test_static_activations_simd_equals_scalar(void **state) {
    (void)state;
    if (!inf_isa_supported(INF_ISA_AVX512)) {
        print_message("no AVX-512 on this CPU: nothing to compare\n");
        return;
    }
    enum { K = 100 };
    float x[K];
    fill(x, K, 5, 3.0f);
    for (int i = 0; i < 10; i++) x[i] = (float)i * 0.25f - 1.25f; /* halves with inv = 2 */
    x[11] = NAN, x[12] = INFINITY, x[13] = -INFINITY;
    for (int hi = 1; hi <= 127; hi = hi * 2 + 1) {
        int8_t a1[K], a2[K];
        uint8_t u1[K], u2[K];
        inf_act_static_scalar(x, K, 2.0f, hi, a1, u1);
        inf_act_static_avx512(x, K, 2.0f, hi, a2, u2);
        assert_memory_equal(a1, a2, K);
        assert_memory_equal(u1, u2, K);
    }
}

int main(void) {
    printf("kernels: best instruction set on this CPU: %s\n", inf_isa_name(inf_isa_best()));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantized_simd_equals_scalar_and_dequantized),
        cmocka_unit_test(test_traits_rows),
        cmocka_unit_test(test_f32_matvec_simd_equals_scalar),
        cmocka_unit_test(test_wsum_simd_equals_scalar),
        cmocka_unit_test(test_gelu_equals_training_op),
        cmocka_unit_test(test_softmax_numerators),
        cmocka_unit_test(test_activation_limbs),
        cmocka_unit_test(test_activation_limbs_simd_equals_scalar),
        cmocka_unit_test(test_static_activations),
        cmocka_unit_test(test_static_activations_simd_equals_scalar),
        cmocka_unit_test(test_sparse_equals_q8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
