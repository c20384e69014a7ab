/* test_quant_policy.c - the quant policy (compress/quant.h) apart from the
 * runtime: the observers (min-max and moving average as PyTorch computes
 * them; percentile coverage; the MSE observer's range has the least error of
 * its candidates and never more than min-max; least squares converges to a
 * fixed point no worse than its min-max start), the per-site plan from keys
 * and override rules with its errors naming the key, freeze-step, the
 * per-site metrics, and a resumed QAT run (LSQ, PACT, EMA) continuing bit
 * for bit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/parallel.h"
#include "autograd/rng.h"
#include "compress/policy.h"
#include "compress/quant.h"
#include "train/trainer.h"

static void fill(float *x, size_t n, uint64_t seed, float scale) {
    ag_rng r;
    ag_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * ag_rng_normal(&r);
}

static double fq_err(const cp_grid *g, const float *x, size_t n, float mn, float mx) {
    float s;
    int z;
    cp_grid_params(g, mn, mx, &s, &z);
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - cp_decode(cp_code(x[i], 1.0f / s, z, g->lo, g->hi), z, s);
        e += d * d;
    }
    return e;
}

static void test_observers(void **state) {
    (void)state;
    enum { N = 4096 };
    float *x = malloc(sizeof(float) * N), *scratch = malloc(sizeof(float) * 2 * 65536);
    fill(x, N, 1, 1.0f);
    x[7] = 9.0f; /* an outlier */
    for (int b = 2; b <= 8; b++)
        for (int sym = 0; sym < 2; sym++) {
            cp_grid g = cp_grid_of(b, sym);
            float mn, mx, lo, hi;
            cp_observe_range(CP_OBS_MINMAX, &g, x, N, 0, NULL, &lo, &hi);
            double e_mm = fq_err(&g, x, N, lo, hi);
            cp_observe_range(CP_OBS_MSE, &g, x, N, 0, NULL, &mn, &mx);
            double e_mse = fq_err(&g, x, N, mn, mx);
            assert_true(e_mse <= e_mm);
            if (b <= 4) assert_true(e_mse < e_mm); /* the outlier is worth clipping at low bits */
            cp_observe_range(CP_OBS_LSQFIT, &g, x, N, 0, NULL, &mn, &mx);
            double e_ls = fq_err(&g, x, N, mn, mx);
            assert_true(e_ls <= e_mm * (1 + 1e-6));
            cp_observe_range(CP_OBS_PERCENTILE, &g, x, N, 99.0, scratch, &mn, &mx);
            int inside = 0;
            for (int i = 0; i < N; i++) inside += x[i] >= mn && x[i] <= mx;
            assert_true(inside >= (int)(0.98 * N) && mx < 9.0f);
        }
    /* streams: min-max keeps the running extremes, ema moves by c toward each batch */
    cp_grid g = cp_grid_of(8, true);
    cp_obs mm = {CP_OBS_MINMAX, false, 0, 0}, ema = {CP_OBS_EMA, false, 0, 0};
    float b1[2] = {-1.0f, 2.0f}, b2[2] = {-3.0f, 1.0f};
    cp_obs_update(&mm, &g, b1, 2, 0.1, 0, scratch), cp_obs_update(&mm, &g, b2, 2, 0.1, 0, scratch);
    assert_true(mm.mn == -3.0f && mm.mx == 2.0f);
    cp_obs_update(&ema, &g, b1, 2, 0.1, 0, scratch), cp_obs_update(&ema, &g, b2, 2, 0.1, 0, scratch);
    assert_true(ema.mn == -1.0f + 0.1f * (-3.0f - -1.0f) && ema.mx == 2.0f + 0.1f * (1.0f - 2.0f));
    free(x), free(scratch);
}

/* A table for a 2-layer model of width 64 (MLP 256), untied or tied. */
static void table(pm_table *t, pm_arch *a, bool tied, int hidden) {
    char err[256];
    assert_int_equal(pm_arch_uniform(a, 2, 2, 64, hidden, 32, 40, true, tied), 0);
    assert_int_equal(pm_table_build(t, a, err, sizeof err), 0);
}

static cp_quant_cfg cfg_default(void) {
    cp_quant_cfg c;
    memset(&c, 0, sizeof c);
    c.w_bits = 8, c.granularity = CP_GRAN_CHANNEL, c.group_size = 32, c.symmetric = true, c.ema_momentum = 0.01;
    c.percentile = 99.99, c.overrides = "";
    return c;
}

static void test_plan_and_overrides(void **state) {
    (void)state;
    pm_table t;
    pm_arch a;
    table(&t, &a, false, 256);
    cp_qspec s[32];
    char err[512];
    cp_quant_cfg c = cfg_default();
    c.a_bits = 8;
    assert_int_equal(cp_quant_resolve(&c, &t, s, err, sizeof err), 8); /* the head stays float */
    c.quant_head = true;
    c.overrides = "h.*.mlp.*=w4,g32,asym,mse;h.0.*=off;lm_head=a16,tensor,lsq";
    assert_int_equal(cp_quant_resolve(&c, &t, s, err, sizeof err), 5); /* h.0.* off, the head on */
    int fc1 = pm_table_site(&t, "h.1.mlp.fc"), q0 = pm_table_site(&t, "h.0.attn.qkv"), hd = pm_table_site(&t, "lm_head");
    assert_int_equal(s[fc1].w_bits, 4), assert_int_equal(s[fc1].group, 32), assert_false(s[fc1].w_sym);
    assert_int_equal(s[fc1].observer, CP_OBS_MSE), assert_int_equal(s[fc1].a_bits, 8);
    assert_int_equal(s[q0].w_bits, 0);
    assert_int_equal(s[hd].a_bits, 0), assert_int_equal(s[hd].gran, CP_GRAN_TENSOR), assert_true(s[hd].lsq);
    char d[96];
    cp_qspec_describe(&s[fc1], d, sizeof d);
    assert_string_equal(d, "W4 g32 asym mse, A8 mse");
    /* errors name the key */
    const struct {
        int w, a, gran, group;
        bool sym, pact;
        const char *ov, *want;
    } bad[] = {
        {9, 0, 1, 32, true, false, "", "w-bits 9: expected 2 to 8"},
        {8, 1, 1, 32, true, false, "", "a-bits 1: expected 2 to 8"},
        {4, 0, 2, 48, true, false, "", "group-size 48 (site h.0.attn.qkv, input width 64)"},
        {4, 0, 2, 16, true, false, "", "group-size 16"},
        {8, 0, 1, 32, false, false, "", "symmetric false with w-bits 8"},
        {8, 0, 1, 32, true, true, "", "pact (site h.0.attn.qkv): PACT learns the activations' clipping level"},
        {8, 8, 1, 32, true, false, "h.2.*=w4", "quant-override rule 1: 'h.2.*' matches no linear site"},
        {8, 8, 1, 32, true, false, "h.0.*=w4;h.1.*", "quant-override rule 2 'h.1.*': expected GLOBS=SETTINGS"},
        {8, 8, 1, 32, true, false, "h.0.*=w1", "quant-override rule 1: 'w1': expected 2 to 8 bits"},
        {8, 8, 1, 32, true, false, "h.0.*=median", "quant-override rule 1: unknown setting 'median'"},
        {8, 8, 1, 32, true, false, "h.0.*=w0", "quant-override rule 1: site h.0.attn.qkv: a-bits 8 without w-bits"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = cfg_default();
        c.w_bits = bad[i].w, c.a_bits = bad[i].a, c.granularity = bad[i].gran, c.group_size = bad[i].group;
        c.symmetric = bad[i].sym, c.pact = bad[i].pact, c.overrides = bad[i].ov;
        err[0] = '\0';
        assert_int_equal(cp_quant_resolve(&c, &t, s, err, sizeof err), -1);
        if (!strstr(err, bad[i].want)) fail_msg("case %zu: '%s' lacks '%s'", i, err, bad[i].want);
    }
    pm_table_free(&t);
    pm_arch_free(&a);
    /* a tied head, and an MLP width that is no multiple of 32 */
    table(&t, &a, true, 80);
    c = cfg_default();
    c.quant_head = true;
    assert_int_equal(cp_quant_resolve(&c, &t, s, err, sizeof err), -1);
    assert_non_null(strstr(err, "h.0.mlp.proj has an input width of 80"));
    c.overrides = "h.*.mlp.proj=off";
    assert_int_equal(cp_quant_resolve(&c, &t, s, err, sizeof err), -1);
    assert_non_null(strstr(err, "a tied head is wte itself"));
    c.quant_head = false;
    assert_int_equal(cp_quant_resolve(&c, &t, s, err, sizeof err), 6);
    pm_table_free(&t);
    pm_arch_free(&a);
}

/* ---- training runs ---- */

typedef struct run {
    tr_dataset *d;
    tr_gpt m;
    tr_trainer t;
    cp_set set;
    pare_keys keys;
    char *conf;
} run;

static void run_open(run *r, const char *const *argv_keys, int steps) {
    char err[512];
    memset(r, 0, sizeof *r);
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = 32;
    if (tr_dataset_open(&r->d, "builtin:markov", &o, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_config mc = {.n_layer = 2, .n_head = 2, .n_embd = 64, .mlp_ratio = 4, .ctx = 32,
                        .vocab = r->d->vocab.size, .bias = true, .tied = false};
    if (tr_gpt_init(&r->m, &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_init_weights(&r->m, 3);
    tr_train_config tc = tr_train_config_default();
    tc.steps = steps, tc.batch = 4, tc.lr = 3e-3, tc.min_lr = 3e-4, tc.warmup = 2, tc.eval_every = 0, tc.eval_batches = 2;
    if (tr_trainer_init(&r->t, &r->m, r->d, &tc, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(cp_set_init(&r->set), 0);
    cp_set_keys(&r->set, &r->keys);
    int argc = 1;
    char *argv[32] = {"test"};
    for (; argv_keys[argc - 1]; argc++) argv[argc] = (char *)argv_keys[argc - 1];
    if (pare_opts_parse(r->keys.row, r->keys.n, argc, argv, NULL, 0, NULL, err, sizeof err) != PARE_OPTS_OK ||
        cp_set_create(&r->set, err, sizeof err) < 0)
        fail_msg("%s", err);
    size_t need = pare_opts_format(r->keys.row, r->keys.n, NULL, 0) + 1;
    r->conf = malloc(need);
    pare_opts_format(r->keys.row, r->keys.n, r->conf, need);
    r->t.config_text = r->conf;
    if (cp_set_add(&r->set, &r->t) != 0) fail_msg("%s", r->t.err);
}

static void run_close(run *r) {
    tr_trainer_free(&r->t);
    cp_set_free(&r->set);
    pare_opts_free(r->keys.row, r->keys.n);
    free(r->conf);
    tr_gpt_free(&r->m);
    tr_dataset_free(r->d);
}

static double metric(const tr_trainer *t, const char *name) {
    for (int i = 0; i < t->n_metrics; i++)
        if (!strcmp(t->metric[i].name, name)) return t->metric[i].value;
    fail_msg("no metric %s", name);
    return NAN;
}

/* A run of 8 steps equals 4 steps, a checkpoint, a resume and 4 more: the
 * model, the optimizer's moments and the learned scales, bit for bit. */
static void check_resume(const char *const *keys) {
    run a, b;
    char path[96];
    snprintf(path, sizeof path, "/tmp/pare_test_qpol_%d.ckpt", (int)getpid());
    run_open(&a, keys, 8);
    assert_int_equal(tr_train(&a.t), TR_OK);
    run_open(&b, keys, 8);
    assert_int_equal(tr_trainer_prepare(&b.t), 0);
    for (int s = 0; s < 4; s++) assert_int_equal(tr_train_step(&b.t), TR_OK);
    assert_int_equal(tr_trainer_save(&b.t, path), 0);
    run_close(&b);
    run_open(&b, keys, 8);
    if (tr_trainer_load(&b.t, path) != 0) fail_msg("%s", b.t.err);
    assert_int_equal(tr_train(&b.t), TR_OK);
    assert_memory_equal(a.m.params.data, b.m.params.data, a.m.params.n * sizeof(float));
    assert_memory_equal(a.m.params.m, b.m.params.m, a.m.params.n * sizeof(float));
    assert_int_equal(a.t.extra.n, b.t.extra.n);
    if (a.t.extra.n) assert_memory_equal(a.t.extra.data, b.t.extra.data, a.t.extra.n * sizeof(float));
    unlink(path);
    run_close(&a);
    run_close(&b);
}

static void test_resume_bit_exact(void **state) {
    (void)state;
    const char *k1[] = {"--w-bits", "4", "--a-bits", "8", "--lsq", "--granularity", "group", NULL};
    const char *k2[] = {"--w-bits", "8", "--a-bits", "6", "--pact", "--observer", "ema", NULL};
    const char *k3[] = {"--w-bits", "3", "--granularity", "group", "--observer", "mse", NULL};
    check_resume(k1);
    check_resume(k2);
    check_resume(k3);
}

/* Metrics per step (summary, then per site), and freeze-step: the
 * activation scales stop moving. */
static void test_metrics_and_freeze(void **state) {
    (void)state;
    const char *k[] = {"--w-bits", "8", "--a-bits", "8", "--observer", "ema", "--ema-momentum", "0.5", "--freeze-step",
                       "3", NULL};
    run r;
    run_open(&r, k, 8);
    double sa[8];
    for (int s = 0; s < 8; s++) {
        assert_int_equal(tr_train_step(&r.t), TR_OK);
        sa[s] = metric(&r.t, "q.ascale@h.0.attn.proj");
        assert_true(metric(&r.t, "q.aclip") >= 0 && metric(&r.t, "q.warn") == 0);
        assert_true(metric(&r.t, "q.wscale@h.1.mlp.fc") > 0);
    }
    assert_true(sa[1] != sa[2]);              /* observing through step 3 */
    for (int s = 3; s < 8; s++) assert_true(sa[s] == sa[2]); /* frozen after */
    char d[1024];
    r.t.policy[0]->describe(r.t.policy[0], &r.t, d, sizeof d);
    assert_non_null(strstr(d, "quant: 8 products"));
    assert_non_null(strstr(d, "observers freeze at step 3"));
    run_close(&r);
}

int main(void) {
    ag_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_observers),
        cmocka_unit_test(test_plan_and_overrides),
        cmocka_unit_test(test_resume_bit_exact),
        cmocka_unit_test(test_metrics_and_freeze),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
