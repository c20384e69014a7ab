/* test_gpt.c - the GPT model: parameter names and groups, GPT-2 init
 * statistics, configuration errors, forward shapes and causality, and a
 * finite-difference check of the gradient of the whole composition. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
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
    assert_int_equal(qkv, m.layer[1].qkv_w);
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
    assert_int_equal(m.lm_head, m.wte);
    assert_int_equal(m.lnf_b, -1);
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

/* The weight hook sees every parameter the forward reads and can replace it. */
static int hook_calls;
static ag_tensor *scale_hook(void *user, ag_ctx *c, int index, ag_tensor *w) {
    (void)user;
    (void)index;
    hook_calls++;
    return ag_scale(c, w, 1.0f);
}

static void test_weight_hook_sees_every_parameter(void **state) {
    (void)state;
    char err[256];
    tr_gpt m;
    tr_gpt_config c = tiny(true, false);
    assert_int_equal(tr_gpt_init(&m, &c, AG_PARAMS_GRAD, err, sizeof err), 0);
    tr_gpt_init_weights(&m, 1);
    ag_ctx *ctx = ag_ctx_new();
    int ids[4] = {0, 1, 2, 3};
    ag_tensor *plain = tr_gpt_forward(ctx, &m, ids, 1, 4, NULL);
    float ref[4 * 5];
    memcpy(ref, plain->data, sizeof ref);
    tr_gpt_fwd opt = {.weight = scale_hook};
    hook_calls = 0;
    ag_tensor *hooked = tr_gpt_forward(ctx, &m, ids, 1, 4, &opt);
    assert_non_null(hooked);
    assert_int_equal(hook_calls, m.params.count);
    assert_memory_equal(hooked->data, ref, sizeof ref);
    ag_ctx_free(ctx);
    tr_gpt_free(&m);
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

static void gradcheck_config(tr_gpt_config c, uint64_t seed) {
    char err[256];
    tr_gpt m;
    assert_int_equal(tr_gpt_init(&m, &c, AG_PARAMS_GRAD, err, sizeof err), 0);
    /* weights larger than GPT-2's init so every path carries signal */
    ag_fill_uniform(m.params.data, m.params.n, -0.5f, 0.5f, seed);
    for (int i = 0; i < m.params.count; i++)
        if (strstr(m.params.names[i], "ln") && strstr(m.params.names[i], ".w"))
            for (size_t j = 0; j < m.params.t[i].numel; j++) m.params.t[i].data[j] += 1.0f;
    gc_user u = {.m = &m, .ids = {0, 4, 2, 1, 3, 3, 0, 2}};
    ag_gc_result res;
    assert_int_equal(ag_gradcheck(gpt_fn, &u, &m.params, 1e-2, seed, &res), 0);
    print_message("gpt bias=%d tied=%d: max rel err %.2e (tensor %s, evals %d)\n", c.bias, c.tied, res.max_err,
                  m.params.names[res.worst_tensor], res.evaluations);
    assert_true(res.max_err < 1e-3);
    tr_gpt_free(&m);
}

static void test_gradcheck_whole_model(void **state) {
    (void)state;
    gradcheck_config(tiny(true, false), 11);
    tr_gpt_config c = tiny(false, true);
    c.ctx = 6; /* T = 4 < ctx: the forward reads a prefix of wpe */
    gradcheck_config(c, 12);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_groups_and_count),
        cmocka_unit_test(test_config_errors_name_the_field),
        cmocka_unit_test(test_init_statistics),
        cmocka_unit_test(test_forward_shapes_probs_and_causality),
        cmocka_unit_test(test_weight_hook_sees_every_parameter),
        cmocka_unit_test(test_gradcheck_whole_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
