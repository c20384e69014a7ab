/* test_lowrank.c - compress/lowrank.c: the truncated SVD's factors
 * reconstruct W to the Eckart-Young error sqrt(sum_{i >= r} s_i^2) on a
 * matrix of known singular values; ranks by energy; a factorized model (full
 * rank: the dense model's logits; lower rank: its parameter count), the
 * errors a rank above min(out, in) or globs matching nothing get; the
 * factors train; `--init` factorization through the policy set; the
 * nuclear-norm threshold drives singular values to exactly zero. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "compress/lowrank.h"
#include "train/trainer.h"

#define assert_close(a, b, eps) assert_true(fabs((double)(a) - (double)(b)) <= (eps))

/* q [n, k] with orthonormal columns (Gram-Schmidt in double on random columns). */
static void orthonormal(double *q, int n, int k, uint64_t seed) {
    ag_rng r;
    ag_rng_seed(&r, seed);
    for (int j = 0; j < k; j++) {
        for (int i = 0; i < n; i++) q[i * k + j] = ag_rng_normal(&r);
        for (int p = 0; p < 2; p++)
            for (int c = 0; c < j; c++) {
                double d = 0;
                for (int i = 0; i < n; i++) d += q[i * k + j] * q[i * k + c];
                for (int i = 0; i < n; i++) q[i * k + j] -= d * q[i * k + c];
            }
        double nn = 0;
        for (int i = 0; i < n; i++) nn += q[i * k + j] * q[i * k + j];
        for (int i = 0; i < n; i++) q[i * k + j] /= sqrt(nn);
    }
}

static void test_svd_reconstruction(void **state) {
    (void)state;
    enum { N = 48, K = 32 };
    double a[N * K], b[K * K], s[K];
    orthonormal(a, N, K, 1);
    orthonormal(b, K, K, 2);
    for (int i = 0; i < K; i++) s[i] = pow(2.0, -i / 4.0);
    float *w = malloc(sizeof(float) * N * K);
    for (int i = 0; i < N; i++)
        for (int c = 0; c < K; c++) {
            double x = 0;
            for (int j = 0; j < K; j++) x += a[i * K + j] * s[j] * b[c * K + j];
            w[i * K + c] = (float)x;
        }
    char err[256];
    float u[N * K], sv[K], vt[K * K];
    assert_int_equal(cp_svd(w, N, K, u, sv, vt, err, sizeof err), 0);
    for (int i = 0; i < K; i++) assert_close(sv[i], s[i], 1e-5);
    int ranks[4] = {1, 8, 16, 32};
    for (int q = 0; q < 4; q++) {
        int r = ranks[q];
        float *fu = malloc(sizeof(float) * N * r), *fv = malloc(sizeof(float) * r * K);
        double resid;
        assert_int_equal(cp_svd_factor(w, N, K, r, fu, fv, &resid, err, sizeof err), 0);
        double want = 0;
        for (int i = r; i < K; i++) want += s[i] * s[i];
        want = sqrt(want);
        print_message("rank %2d: ||W - UV||_F = %.6e, Eckart-Young %.6e\n", r, resid, want);
        assert_true(fabs(resid - want) <= 1e-4 * s[0] + 1e-3 * want);
        free(fu);
        free(fv);
    }
    float fu[N], fv[K];
    assert_int_equal(cp_svd_factor(w, N, K, 33, fu, fv, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "rank 33 of a [48, 32] matrix: expected 1 .. 32"));
    free(w);
    float e[3] = {3, 2, 1}; /* energies 9/14, 13/14, 1 */
    assert_int_equal(cp_rank_for_energy(e, 3, 0.5), 1);
    assert_int_equal(cp_rank_for_energy(e, 3, 0.9), 2);
    assert_int_equal(cp_rank_for_energy(e, 3, 0.93), 3);
    assert_int_equal(cp_rank_for_energy(e, 3, 1.0), 3);
}

typedef struct world {
    tr_dataset *d;
    tr_gpt m;
} world;

static void world_open(world *w, bool tied) {
    char err[512];
    memset(w, 0, sizeof *w);
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = 16;
    if (tr_dataset_open(&w->d, "builtin:markov", &o, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_config mc = {.n_layer = 2, .n_head = 2, .n_embd = 32, .mlp_ratio = 2, .ctx = 16,
                        .vocab = w->d->vocab.size, .bias = true, .tied = tied};
    if (tr_gpt_init(&w->m, &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_init_weights(&w->m, 5);
}

static void world_close(world *w) {
    tr_gpt_free(&w->m);
    tr_dataset_free(w->d);
}

static double logit_err(tr_gpt *a, tr_gpt *b) {
    int ids[16];
    for (int i = 0; i < 16; i++) ids[i] = (i * 5 + 1) % a->arch.vocab;
    ag_ctx *c = ag_ctx_new();
    ag_set_grad(c, false);
    ag_tensor *x = tr_gpt_forward(c, a, ids, 1, 16, NULL), *y = tr_gpt_forward(c, b, ids, 1, 16, NULL);
    double e = 0, mx = 1e-30;
    for (size_t j = 0; j < x->numel; j++) e = fmax(e, fabs((double)x->data[j] - y->data[j])), mx = fmax(mx, fabs(x->data[j]));
    ag_ctx_free(c);
    return e / mx;
}

static void test_factorized_model(void **state) {
    (void)state;
    world w;
    world_open(&w, true);
    char err[512];
    /* full rank on the MLP: the dense model's logits */
    cp_lowrank_cfg c = {.rank = 32, .sites = "h.*.mlp.*"};
    tr_gpt f;
    assert_int_equal(cp_lowrank_factorize(&w.m, &c, &f, 0, err, sizeof err), 0);
    for (int l = 0; l < 2; l++) {
        assert_int_equal(f.arch.rank[pm_rank_slot(&f.arch, l, PM_FC)], 32);
        assert_int_equal(f.arch.rank[pm_rank_slot(&f.arch, l, PM_QKV)], 0);
    }
    double e = logit_err(&w.m, &f);
    print_message("full-rank factors: logits within %.2e of the dense model\n", e);
    assert_true(e <= 1e-4);
    tr_gpt_free(&f);
    /* rank 8 everywhere (the tied head is wte and stays): 8 (out + in) weights per site */
    c = (cp_lowrank_cfg){.rank = 8, .sites = ""};
    assert_int_equal(cp_lowrank_factorize(&w.m, &c, &f, 0, err, sizeof err), 0);
    assert_int_equal(f.arch.rank[pm_rank_slot(&f.arch, -1, PM_HEAD)], 0);
    size_t dense = ag_params_numel(&w.m.params), lin = 2 * (96 * 32 + 32 * 32 + 64 * 32 + 32 * 64);
    size_t fact = 2 * 8 * ((96 + 32) + (32 + 32) + (64 + 32) + (32 + 64));
    assert_int_equal(ag_params_numel(&f.params), dense - lin + fact);
    tr_gpt_free(&f);
    /* by energy: every rank in [1, min(out, in)] */
    c = (cp_lowrank_cfg){.energy = 0.5, .sites = ""};
    assert_int_equal(cp_lowrank_factorize(&w.m, &c, &f, 0, err, sizeof err), 0);
    for (int l = 0; l < 2; l++)
        for (int r = 0; r < 4; r++) {
            int rk = f.arch.rank[l * 4 + r];
            assert_true(rk >= 1 && rk < 32);
        }
    tr_gpt_free(&f);
    /* errors: a rank above min(out, in), globs matching nothing, neither key */
    c = (cp_lowrank_cfg){.rank = 40, .sites = ""};
    assert_int_equal(cp_lowrank_factorize(&w.m, &c, &f, 0, err, sizeof err), -1);
    print_message("%s\n", err);
    assert_non_null(strstr(err, "rank 40: h.0.attn.qkv is [96, 32]: expected a rank of at most min(out, in) = 32"));
    c = (cp_lowrank_cfg){.rank = 4, .sites = "lm_head"};
    assert_int_equal(cp_lowrank_factorize(&w.m, &c, &f, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "matches no dense linear site"));
    c = (cp_lowrank_cfg){.rank = 0, .sites = ""};
    assert_int_equal(cp_lowrank_factorize(&w.m, &c, &f, 0, err, sizeof err), -1);
    world_close(&w);
}

/* --init: the policy set's lowrank keys factorize the loaded model in place;
 * the factors then train, and the nuclear threshold zeroes singular values. */
static void test_init_and_training(void **state) {
    (void)state;
    char err[512];
    world w;
    world_open(&w, false);
    cp_set s;
    assert_int_equal(cp_set_init(&s), 0);
    pare_keys k = {.n = 0};
    cp_set_keys(&s, &k);
    char *argv[] = {"x", "--rank", "8", "--rank-sites", "h.*.mlp.fc"};
    assert_int_equal(pare_opts_parse(k.row, k.n, 5, argv, NULL, 0, NULL, err, sizeof err), PARE_OPTS_OK);
    assert_int_equal(cp_lowrank_init_model(&s, &w.m, err, sizeof err), 0);
    assert_int_equal(w.m.arch.rank[pm_rank_slot(&w.m.arch, 1, PM_FC)], 8);
    assert_true(w.m.params.m != NULL); /* the same flags: trainable */
    assert_true(cp_set_create(&s, err, sizeof err) >= 1);
    tr_train_config tc = tr_train_config_default();
    tc.steps = 4, tc.batch = 4, tc.warmup = 1, tc.eval_every = 0, tc.eval_batches = 1;
    tr_trainer t;
    assert_int_equal(tr_trainer_init(&t, &w.m, w.d, &tc, err, sizeof err), 0);
    assert_int_equal(cp_set_add(&s, &t), 0);
    int ui = ag_params_find(&w.m.params, "h.0.mlp.fc.u");
    float before = w.m.params.t[ui].data[0];
    assert_int_equal(tr_train(&t), TR_OK);
    assert_true(w.m.params.t[ui].data[0] != before);
    tr_trainer_free(&t);
    cp_set_free(&s);
    world_close(&w);

    /* a dense model with rank keys: a clear error; nuclear on a dense model: exact zeros in its spectrum */
    world_open(&w, false);
    cp_lowrank_cfg c = {.rank = 4, .sites = ""};
    tr_policy *p = cp_lowrank_kind.create(&c, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(tr_trainer_init(&t, &w.m, w.d, &tc, err, sizeof err), 0);
    assert_int_equal(tr_trainer_add_policy(&t, p), 0);
    assert_int_equal(tr_trainer_prepare(&t), -1);
    assert_non_null(strstr(t.err, "no factorized site"));
    tr_trainer_free(&t);
    cp_lowrank_kind.destroy(p);
    c = (cp_lowrank_cfg){.rank = 4, .energy = 0.5};
    assert_null(cp_lowrank_kind.create(&c, err, sizeof err));
    assert_non_null(strstr(err, "exclude each other"));
    c = (cp_lowrank_cfg){.nuclear = 1.0, .sites = "h.0.mlp.fc"};
    p = cp_lowrank_kind.create(&c, err, sizeof err);
    tc.steps = 10;
    tc.lr = tc.min_lr = 1e-2;
    assert_int_equal(tr_trainer_init(&t, &w.m, w.d, &tc, err, sizeof err), 0);
    assert_int_equal(tr_trainer_add_policy(&t, p), 0);
    assert_int_equal(tr_train(&t), TR_OK);
    int fi = ag_params_find(&w.m.params, "h.0.mlp.fc.w");
    float u[64 * 32], sv[32], vt[32 * 32];
    assert_int_equal(cp_svd(w.m.params.t[fi].data, 64, 32, u, sv, vt, err, sizeof err), 0);
    int zero = 0;
    for (int i = 0; i < 32; i++) zero += sv[i] < 1e-5f * sv[0];
    print_message("nuclear threshold: %d of 32 singular values of h.0.mlp.fc.w are zero\n", zero);
    assert_true(zero > 0);
    tr_trainer_free(&t);
    cp_lowrank_kind.destroy(p);
    world_close(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_svd_reconstruction),
        cmocka_unit_test(test_factorized_model),
        cmocka_unit_test(test_init_and_training),
    };
    return cmocka_run_group_tests_name("lowrank", tests, NULL, NULL);
}
