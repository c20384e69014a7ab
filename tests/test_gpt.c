/* test_gpt.c - the GPT model: parameter names and groups, GPT-2 init
 * statistics, configuration errors, forward shapes and causality, and a
 * finite-difference check of the gradient of the whole composition. */
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
#include "train/gpt.h"

static tr_gpt_config tiny(bool bias, bool tied) {
    tr_gpt_config c = {.n_layer = 1, .n_head = 2, .n_embd = 8, .mlp_ratio = 2, .ctx = 4, .vocab = 5,
                       .bias = bias, .tied = tied};
    return c;
}

static void test_names_groups_and_count(void **state) {
    (void)state;
    char err[256];
    tr_gpt m;
    tr_gpt_config c = {.n_layer = 2, .n_head = 2, .n_embd = 16, .mlp_ratio = 4, .ctx = 8, .vocab = 11,
                       .bias = true, .tied = false};
    assert_int_equal(tr_gpt_init(&m, &c, AG_PARAMS_GRAD, err, sizeof err), 0);
    assert_int_equal(m.params.count, 2 + 2 * 12 + 2 + 1);
    assert_int_equal(ag_params_numel(&m.params), tr_gpt_config_numel(&c));
    static const char *want[] = {"wte", "wpe", "h.0.ln1.w", "h.0.ln1.b", "h.0.attn.qkv.w", "h.0.attn.qkv.b",
                                 "h.0.attn.proj.w", "h.0.attn.proj.b", "h.0.ln2.w", "h.0.ln2.b", "h.0.mlp.fc.w",
                                 "h.0.mlp.fc.b", "h.0.mlp.proj.w", "h.0.mlp.proj.b", "h.1.ln1.w"};
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) assert_string_equal(m.params.names[i], want[i]);
    assert_string_equal(m.params.names[m.params.count - 1], "lm_head.w");
    int qkv = ag_params_find(&m.params, "h.1.attn.qkv.w");
    assert_int_equal(qkv, m.table.site[m.layer[1].qkv].w);
    assert_string_equal(m.table.site[m.layer[1].qkv].name, "h.1.attn.qkv");
    assert_true(m.table.site[m.layer[1].qkv].linear);
    assert_false(m.table.site[m.layer[1].ln1].linear);
    assert_int_equal(m.params.t[qkv].shape[0], 48);
    assert_int_equal(m.params.t[qkv].shape[1], 16);
    int fc = ag_params_find(&m.params, "h.0.mlp.fc.w");
    assert_int_equal(m.params.t[fc].shape[0], 64);
    for (int i = 0; i < m.params.count; i++)
        assert_int_equal(m.params.group[i], m.params.t[i].ndim >= 2 ? TR_GROUP_DECAY : TR_GROUP_NO_DECAY);
    tr_gpt_free(&m);

    c.bias = false;
    c.tied = true;
    assert_int_equal(tr_gpt_init(&m, &c, 0, err, sizeof err), 0);
    assert_int_equal(ag_params_find(&m.params, "lm_head.w"), -1);
    assert_int_equal(ag_params_find(&m.params, "h.0.ln1.b"), -1);
    assert_int_equal(m.table.site[m.head].w, m.table.site[m.wte].w); /* the tied head's weight is wte */
    assert_int_equal(m.table.site[m.lnf].b, -1);
    assert_int_equal(ag_params_numel(&m.params), tr_gpt_config_numel(&c));
    tr_gpt_free(&m);
}

static void test_config_errors_name_the_field(void **state) {
    (void)state;
    char err[256];
    tr_gpt m;
    tr_gpt_config c = tiny(true, false);
    c.n_head = 3;
    assert_int_equal(tr_gpt_init(&m, &c, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "n-head = 3 does not divide n-embd = 8"));
    c = tiny(true, false);
    c.n_layer = 0;
    assert_int_equal(tr_gpt_config_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "n-layer = 0"));
    c = tiny(true, false);
    c.vocab = 1;
    assert_int_equal(tr_gpt_config_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "vocab = 1"));
    c = tiny(true, false);
    c.ctx = -5;
    assert_int_equal(tr_gpt_config_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "ctx = -5"));
    c = tiny(true, false);
    c.n_embd = 1 << 20;
    c.n_head = 1;
    c.vocab = 1 << 16;
    assert_int_equal(tr_gpt_config_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "MLP width")); /* 2 x 2^20 units */
    c.mlp_ratio = 1;
    assert_int_equal(tr_gpt_config_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "2^31"));
    tr_gpt_free(NULL); /* destroy(NULL) is a no-op */
}

static double mean_of(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s / (double)n;
}

static double std_of(const float *x, size_t n) {
    double mu = mean_of(x, n), s = 0;
    for (size_t i = 0; i < n; i++) s += (x[i] - mu) * (x[i] - mu);
    return sqrt(s / (double)n);
}

/* GPT-2 init: matrices N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)),
 * gains 1, biases 0; seeded. */
static void test_init_statistics(void **state) {
    (void)state;
    char err[256];
    tr_gpt m, m2;
    tr_gpt_config c = {.n_layer = 4, .n_head = 4, .n_embd = 64, .mlp_ratio = 4, .ctx = 64, .vocab = 256,
                       .bias = true, .tied = false};
    assert_int_equal(tr_gpt_init(&m, &c, 0, err, sizeof err), 0);
    assert_int_equal(tr_gpt_init(&m2, &c, 0, err, sizeof err), 0);
    tr_gpt_init_weights(&m, 7);
    tr_gpt_init_weights(&m2, 7);
    assert_memory_equal(m.params.data, m2.params.data, m.params.n * sizeof(float));
    tr_gpt_init_weights(&m2, 8);
    assert_memory_not_equal(m.params.data, m2.params.data, m.params.n * sizeof(float));

    double resid = 0.02 / sqrt(8.0);
    for (int i = 0; i < m.params.count; i++) {
        ag_tensor *t = &m.params.t[i];
        const char *name = m.params.names[i];
        if (t->ndim == 2) {
            bool is_resid = strstr(name, "attn.proj.w") || strstr(name, "mlp.proj.w");
            double want = is_resid ? resid : 0.02, sd = std_of(t->data, t->numel);
            /* n >= 4096 samples: the sample std is within 5% with overwhelming probability */
            if (fabs(sd - want) > 0.05 * want) fail_msg("%s: std %.5f, expected %.5f", name, sd, want);
            assert_true(fabs(mean_of(t->data, t->numel)) < 0.1 * want);
        } else {
            float want = strstr(name, ".w") ? 1.0f : 0.0f;
            for (size_t j = 0; j < t->numel; j++) assert_true(t->data[j] == want);
        }
    }
    tr_gpt_free(&m);
    tr_gpt_free(&m2);
}

static void test_forward_shapes_probs_and_causality(void **state) {
    (void)state;
    char err[256];
    tr_gpt m;
    tr_gpt_config c = {.n_layer = 2, .n_head = 2, .n_embd = 8, .mlp_ratio = 4, .ctx = 6, .vocab = 7,
                       .bias = true, .tied = false};
    assert_int_equal(tr_gpt_init(&m, &c, AG_PARAMS_GRAD, err, sizeof err), 0);
    tr_gpt_init_weights(&m, 3);
    ag_ctx *ctx = ag_ctx_new();
    int ids[2 * 5] = {1, 2, 3, 4, 5, 6, 0, 1, 2, 3};
    ag_tensor *probs[2], *hidden[3];
    tr_gpt_fwd opt = {.probs = probs, .hidden = hidden};
    ag_tensor *logits = tr_gpt_forward(ctx, &m, ids, 2, 5, &opt); /* T = 5 < ctx = 6 */
    assert_non_null(logits);
    assert_int_equal(logits->ndim, 3);
    assert_int_equal(logits->shape[0], 2);
    assert_int_equal(logits->shape[1], 5);
    assert_int_equal(logits->shape[2], 7);
    for (int l = 0; l < 2; l++) {
        ag_tensor *P = probs[l];
        assert_non_null(P);
        assert_int_equal(P->ndim, 4);
        assert_int_equal(P->shape[1], 2);
        assert_int_equal(P->shape[2], 5);
        assert_int_equal(P->shape[3], 5);
        for (size_t r = 0; r < P->numel / 5; r++) {
            int i = (int)(r % 5);
            double s = 0;
            for (int j = 0; j < 5; j++) {
                float p = P->data[r * 5 + j];
                if (j > i) assert_true(p == 0.0f);
                s += p;
            }
            assert_float_equal(s, 1.0, 1e-5);
        }
    }
    for (int l = 0; l < 3; l++) {
        assert_non_null(hidden[l]);
        assert_int_equal(hidden[l]->shape[2], 8);
    }
    /* changing the token at position 3 leaves the logits of positions 0..2 unchanged */
    float before[2 * 5 * 7];
    memcpy(before, logits->data, sizeof before);
    ids[3] = 0;
    assert_int_equal(ag_ctx_reset(ctx), 0);
    logits = tr_gpt_forward(ctx, &m, ids, 2, 5, NULL);
    assert_non_null(logits);
    assert_memory_equal(logits->data, before, 3 * 7 * sizeof(float));
    assert_memory_not_equal(logits->data + 3 * 7, before + 3 * 7, 7 * sizeof(float));
    assert_memory_equal(logits->data + 5 * 7, before + 5 * 7, 5 * 7 * sizeof(float)); /* row 1 untouched */

    /* input errors are messages, not crashes */
    assert_int_equal(ag_ctx_reset(ctx), 0);
    ids[4] = 7;
    assert_null(tr_gpt_forward(ctx, &m, ids, 2, 5, NULL));
    assert_non_null(ag_error(ctx));
    assert_int_equal(ag_ctx_reset(ctx), 0);
    ids[4] = 1;
    int long_ids[7] = {0};
    assert_null(tr_gpt_forward(ctx, &m, long_ids, 1, 7, NULL));
    assert_non_null(strstr(ag_error(ctx), "ctx = 6"));
    ag_ctx_free(ctx);
    tr_gpt_free(&m);
}

/* The linear hook sees every product of every linear site once, in forward
 * order, with the site's name, role, part and weight; computing ag_linear
 * itself gives the plain forward's bits. */
static int hook_calls;
static char hook_seen[16][48];
static ag_tensor *plain_hook(void *user, ag_ctx *c, const pm_site *s, pm_part part, ag_tensor *x, ag_tensor *w,
                             ag_tensor *b) {
    tr_gpt *m = user;
    if (hook_calls < 16) snprintf(hook_seen[hook_calls], sizeof hook_seen[0], "%s/%d", s->name, (int)part);
    hook_calls++;
    int wi = part == PM_W ? s->w : part == PM_U ? s->u : s->v;
    assert_ptr_equal(w, tr_gpt_param(m, wi));
    assert_int_equal(w->shape[0], part == PM_V ? s->rank : s->out);
    assert_true(!b || b == tr_gpt_param(m, s->b));
    return ag_linear(c, x, w, b);
}

static void test_linear_hook_sees_every_site(void **state) {
    (void)state;
    char err[256];
    tr_gpt m;
    tr_gpt_config c = tiny(true, true);
    c.n_layer = 2;
    assert_int_equal(tr_gpt_init(&m, &c, AG_PARAMS_GRAD, err, sizeof err), 0);
    tr_gpt_init_weights(&m, 1);
    ag_ctx *ctx = ag_ctx_new();
    int ids[4] = {0, 1, 2, 3};
    ag_tensor *plain = tr_gpt_forward(ctx, &m, ids, 1, 4, NULL);
    float ref[4 * 5];
    memcpy(ref, plain->data, sizeof ref);
    tr_gpt_fwd opt = {.linear = plain_hook, .user = &m};
    hook_calls = 0;
    ag_tensor *hooked = tr_gpt_forward(ctx, &m, ids, 1, 4, &opt);
    assert_non_null(hooked);
    assert_int_equal(hook_calls, 2 * 4 + 1);
    static const char *want[9] = {"h.0.attn.qkv/0", "h.0.attn.proj/0", "h.0.mlp.fc/0", "h.0.mlp.proj/0",
                                  "h.1.attn.qkv/0", "h.1.attn.proj/0", "h.1.mlp.fc/0", "h.1.mlp.proj/0",
                                  "lm_head/0"};
    for (int i = 0; i < 9; i++) assert_string_equal(hook_seen[i], want[i]);
    assert_memory_equal(hooked->data, ref, sizeof ref);
    ag_ctx_free(ctx);
    tr_gpt_free(&m);
}

/* An architecture with layers of different heads and MLP widths and a
 * factorized site: the table has U and V instead of W for it, the forward
 * runs x V^T U^T, and the logits equal those of the dense model whose W is
 * U V (computed in double) up to float rounding. */
static void irregular_arch(pm_arch *a, int rank) {
    assert_int_equal(pm_arch_uniform(a, 2, 2, 8, 16, 4, 5, true, false), 0);
    a->n_head[1] = 1;   /* layer 1: one head of width 4 */
    a->n_hidden[0] = 8; /* layer 0: an MLP of 8 units */
    a->rank[pm_rank_slot(a, 0, PM_FC)] = rank;
}

static void test_per_layer_shapes_and_factors(void **state) {
    (void)state;
    char err[256];
    pm_arch a;
    irregular_arch(&a, 3);
    tr_gpt f, d;
    assert_int_equal(tr_gpt_init_arch(&f, &a, AG_PARAMS_GRAD, err, sizeof err), 0);
    a.rank[pm_rank_slot(&a, 0, PM_FC)] = 0;
    assert_int_equal(tr_gpt_init_arch(&d, &a, AG_PARAMS_GRAD, err, sizeof err), 0);
    pm_arch_free(&a);
    assert_int_equal(ag_params_find(&f.params, "h.0.mlp.fc.w"), -1);
    int u = ag_params_find(&f.params, "h.0.mlp.fc.u"), v = ag_params_find(&f.params, "h.0.mlp.fc.v");
    assert_true(u >= 0 && v >= 0);
    assert_int_equal(f.params.t[u].shape[0], 8);
    assert_int_equal(f.params.t[u].shape[1], 3);
    assert_int_equal(f.params.t[v].shape[0], 3);
    assert_int_equal(f.params.t[v].shape[1], 8);
    int q1 = ag_params_find(&f.params, "h.1.attn.qkv.w"), p1 = ag_params_find(&f.params, "h.1.attn.proj.w");
    assert_int_equal(f.params.t[q1].shape[0], 12); /* 3 x 1 head x 4 */
    assert_int_equal(f.params.t[p1].shape[1], 4);
    tr_gpt_init_weights(&f, 5);
    /* the dense model: the same tensors, W = U V */
    for (int i = 0; i < d.params.count; i++) {
        int j = ag_params_find(&f.params, d.params.names[i]);
        if (j >= 0) {
            memcpy(d.params.t[i].data, f.params.t[j].data, d.params.t[i].numel * sizeof(float));
            continue;
        }
        assert_string_equal(d.params.names[i], "h.0.mlp.fc.w");
        for (int r = 0; r < 8; r++)
            for (int k = 0; k < 8; k++) {
                double acc = 0;
                for (int q = 0; q < 3; q++)
                    acc += (double)f.params.t[u].data[r * 3 + q] * f.params.t[v].data[q * 8 + k];
                d.params.t[i].data[r * 8 + k] = (float)acc;
            }
    }
    ag_ctx *ctx = ag_ctx_new();
    int ids[8] = {0, 4, 2, 1, 3, 3, 0, 2};
    ag_tensor *lf = tr_gpt_forward(ctx, &f, ids, 2, 4, NULL);
    assert_non_null(lf);
    float got[2 * 4 * 5];
    memcpy(got, lf->data, sizeof got);
    ag_tensor *ld = tr_gpt_forward(ctx, &d, ids, 2, 4, NULL);
    assert_non_null(ld);
    for (int i = 0; i < 40; i++) assert_float_equal(got[i], ld->data[i], 1e-5);
    ag_ctx_free(ctx);
    tr_gpt_free(&f);
    tr_gpt_free(&d);
}

/* ---- gradient check of the whole model ---- */

typedef struct gc_user {
    tr_gpt *m;
    int ids[2 * 4];
} gc_user;

static ag_tensor *gpt_fn(ag_ctx *c, ag_params *in, void *user) {
    gc_user *u = user;
    (void)in; /* in is the model's own parameter set */
    return tr_gpt_forward(c, u->m, u->ids, 2, 4, NULL);
}

static void gradcheck_model(tr_gpt *mp, uint64_t seed, const char *what) {
    tr_gpt m = *mp;
    /* weights larger than GPT-2's init so every path carries signal */
    ag_fill_uniform(m.params.data, m.params.n, -0.5f, 0.5f, seed);
    for (int i = 0; i < m.params.count; i++)
        if (strstr(m.params.names[i], "ln") && strstr(m.params.names[i], ".w"))
            for (size_t j = 0; j < m.params.t[i].numel; j++) m.params.t[i].data[j] += 1.0f;
    gc_user u = {.m = &m, .ids = {0, 4, 2, 1, 3, 3, 0, 2}};
    ag_gc_result res;
    assert_int_equal(ag_gradcheck(gpt_fn, &u, &m.params, 1e-2, seed, &res), 0);
    print_message("gpt %s: max rel err %.2e (tensor %s, evals %d)\n", what, res.max_err,
                  m.params.names[res.worst_tensor], res.evaluations);
    assert_true(res.max_err < 1e-3);
    tr_gpt_free(&m);
}

static void gradcheck_config(tr_gpt_config c, uint64_t seed) {
    char err[256], what[64];
    tr_gpt m;
    assert_int_equal(tr_gpt_init(&m, &c, AG_PARAMS_GRAD, err, sizeof err), 0);
    snprintf(what, sizeof what, "bias=%d tied=%d", c.bias, c.tied);
    gradcheck_model(&m, seed, what);
}

static void test_gradcheck_whole_model(void **state) {
    (void)state;
    gradcheck_config(tiny(true, false), 11);
    tr_gpt_config c = tiny(false, true);
    c.ctx = 6; /* T = 4 < ctx: the forward reads a prefix of wpe */
    gradcheck_config(c, 12);
    /* layers of different shapes and a factorized site */
    char err[256];
    pm_arch a;
    irregular_arch(&a, 3);
    tr_gpt m;
    assert_int_equal(tr_gpt_init_arch(&m, &a, AG_PARAMS_GRAD, err, sizeof err), 0);
    pm_arch_free(&a);
    gradcheck_model(&m, 13, "per-layer shapes, factorized fc");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_groups_and_count),
        cmocka_unit_test(test_config_errors_name_the_field),
        cmocka_unit_test(test_init_statistics),
        cmocka_unit_test(test_forward_shapes_probs_and_causality),
        cmocka_unit_test(test_linear_hook_sees_every_site),
        cmocka_unit_test(test_per_layer_shapes_and_factors),
        cmocka_unit_test(test_gradcheck_whole_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
