/* test_quant_parity.c - the runtime runs what quantization-aware training
 * simulated. For each setting (W8A8, W4A8, W4 g32 A16, W3 g32, per-site
 * mixed precision, LSQ, PACT with asymmetric weights and EMA observers): a
 * small GPT trains a few QAT steps through the trainer and the quant policy,
 * is checkpointed, and is exported as `pare export` does it (its stored
 * configuration makes the policies, their export hooks fill the plan); then
 *  - the codes and scales in the file equal the checkpoint's fake-quant codes
 *    (cp_quant_codes) bit for bit, and the activation records its scales;
 *  - every quantized product's output, for the same input, is bit-identical
 *    in training's forward and in the runtime for A8 sites (the integer
 *    product), within 1e-6 for A16 sites (float-exact limbs);
 *  - the logits of the whole model, batched and KV-cached, are within 1e-5
 *    (relative to each row's largest logit) of training's quantized forward;
 *  - greedy generation of 256 tokens (sliding past the context) gives the
 *    same tokens from the file as from training's forward;
 *  - the mean validation loss from the file equals the checkpoint's within
 *    1e-5 relative;
 * and a resume of a QAT run continues bit for bit. */
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
#include "compress/policy.h"
#include "compress/quant.h"
#include "infer/export.h"
#include "infer/runtime.h"
#include "infer/types.h"
#include "train/sampler.h"
#include "train/trainer.h"

enum { CTX = 32, STEPS = 12 };

typedef struct run {
    tr_dataset *d;
    tr_gpt m;
    tr_trainer t;
    cp_set set;
    pare_keys keys;
    char *conf;
    char ckpt[96], file[96];
} run;

/* Parses key strings ("--w-bits", "8", ...) into a fresh set of policies. */
static void make_set(cp_set *s, pare_keys *k, const char *const *argv_keys, char **conf) {
    char err[512];
    assert_int_equal(cp_set_init(s), 0);
    memset(k, 0, sizeof *k);
    cp_set_keys(s, k);
    int argc = 1;
    char *argv[32] = {"test"};
    for (; argv_keys[argc - 1]; argc++) argv[argc] = (char *)argv_keys[argc - 1];
    if (pare_opts_parse(k->row, k->n, argc, argv, NULL, 0, NULL, err, sizeof err) != PARE_OPTS_OK) fail_msg("%s", err);
    if (cp_set_create(s, err, sizeof err) < 0) fail_msg("%s", err);
    if (conf) {
        size_t need = pare_opts_format(k->row, k->n, NULL, 0) + 1;
        *conf = malloc(need);
        pare_opts_format(k->row, k->n, *conf, need);
    }
}

/* Trains STEPS QAT steps of a small GPT (width 64, heads of 32, MLP 256,
 * untied head) with the given keys and writes its checkpoint and file. */
static void run_open(run *r, const char *const *argv_keys, const char *name) {
    char err[512];
    memset(r, 0, sizeof *r);
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = CTX;
    if (tr_dataset_open(&r->d, "builtin:markov", &o, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_config mc = {.n_layer = 2, .n_head = 2, .n_embd = 64, .mlp_ratio = 4, .ctx = CTX,
                        .vocab = r->d->vocab.size, .bias = true, .tied = false};
    if (tr_gpt_init(&r->m, &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_init_weights(&r->m, 5);
    /* weights spread more than GPT-2's init, so quantization and rounding matter */
    for (int i = 0; i < r->m.params.count; i++) {
        ag_tensor *t = &r->m.params.t[i];
        if (t->ndim == 2)
            for (size_t j = 0; j < t->numel; j++) t->data[j] *= 4.0f;
    }
    tr_train_config tc = tr_train_config_default();
    tc.steps = STEPS, tc.batch = 4, tc.lr = 3e-3, tc.min_lr = 3e-4, tc.warmup = 2, tc.eval_every = 0, tc.eval_batches = 2;
    if (tr_trainer_init(&r->t, &r->m, r->d, &tc, err, sizeof err) != 0) fail_msg("%s", err);
    make_set(&r->set, &r->keys, argv_keys, &r->conf);
    r->t.config_text = r->conf;
    if (cp_set_add(&r->set, &r->t) != 0 || tr_trainer_prepare(&r->t) != 0) fail_msg("%s", r->t.err);
    for (int s = 0; s < STEPS; s++)
        if (tr_train_step(&r->t) != TR_OK) fail_msg("step %d: %s", s, r->t.err);
    snprintf(r->ckpt, sizeof r->ckpt, "/tmp/pare_test_qpar_%d_%s.ckpt", (int)getpid(), name);
    snprintf(r->file, sizeof r->file, "/tmp/pare_test_qpar_%d_%s.pare", (int)getpid(), name);
    if (tr_trainer_save(&r->t, r->ckpt) != 0) fail_msg("%s", r->t.err);
    /* export as `pare export` does: the stored configuration's policies */
    tr_ckpt_file f;
    if (tr_ckpt_read(&f, r->ckpt, err, sizeof err) != 0) fail_msg("%s", err);
    cp_set es;
    pare_keys ek;
    assert_int_equal(cp_set_init(&es), 0);
    memset(&ek, 0, sizeof ek);
    cp_set_keys(&es, &ek);
    if (pare_opts_defaults(ek.row, ek.n, err, sizeof err) || pare_opts_apply_stored(ek.row, ek.n, r->conf, NULL, "c", err, sizeof err) ||
        cp_set_create(&es, err, sizeof err) < 0)
        fail_msg("%s", err);
    pm_plan p;
    if (inf_plan_from_gpt(&p, &r->m, err, sizeof err) || cp_set_export(&es, &r->m, &f, &p, err, sizeof err) ||
        inf_plan_write(&p, &r->d->vocab, "source=test\n", r->file, err, sizeof err))
        fail_msg("%s", err);
    pm_plan_free(&p);
    cp_set_free(&es);
    pare_opts_free(ek.row, ek.n);
    tr_ckpt_close(&f);
}

static void run_close(run *r) {
    unlink(r->ckpt);
    unlink(r->file);
    tr_trainer_free(&r->t);
    cp_set_free(&r->set);
    pare_opts_free(r->keys.row, r->keys.n);
    free(r->conf);
    tr_gpt_free(&r->m);
    tr_dataset_free(r->d);
}

/* The checkpoint's quantized forward outside training (what pare eval CKPT runs). */
typedef struct offline {
    cp_set set;
    pare_keys keys;
    tr_gpt m;
    tr_gpt_fwd fwd;
} offline;

static void offline_open(offline *o, const run *r) {
    char err[512], *conf;
    tr_vocab v;
    if (tr_model_load(r->ckpt, &o->m, 0, &v, &conf, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(cp_set_init(&o->set), 0);
    memset(&o->keys, 0, sizeof o->keys);
    cp_set_keys(&o->set, &o->keys);
    if (pare_opts_defaults(o->keys.row, o->keys.n, err, sizeof err) ||
        pare_opts_apply_stored(o->keys.row, o->keys.n, conf, NULL, "c", err, sizeof err) ||
        cp_set_create(&o->set, err, sizeof err) < 0)
        fail_msg("%s", err);
    free(conf);
    tr_policy *q = cp_quant_of(&o->set);
    assert_non_null(q);
    tr_ckpt_file f;
    if (tr_ckpt_read(&f, r->ckpt, err, sizeof err) || cp_quant_forward(q, &o->m, &f, &o->fwd, err, sizeof err))
        fail_msg("%s", err);
    tr_ckpt_close(&f);
}

static void offline_close(offline *o) {
    cp_set_free(&o->set);
    pare_opts_free(o->keys.row, o->keys.n);
    tr_gpt_free(&o->m);
}

/* max over positions of max|a - b| / max|b| of the row */
static double row_rel_err(const float *a, const float *b, int T, int V) {
    double worst = 0;
    for (int t = 0; t < T; t++) {
        double e = 0, mx = 1e-30;
        for (int v = 0; v < V; v++) {
            e = fmax(e, fabs((double)a[t * V + v] - b[t * V + v]));
            mx = fmax(mx, fabs((double)b[t * V + v]));
        }
        worst = fmax(worst, e / mx);
    }
    return worst;
}

/* The runtime's weight of table tensor i (a product's). */
static const inf_weight *runtime_weight(const inf_model *im, const pm_site *st, pm_part part) {
    const inf_linear *L = st->role == PM_HEAD ? &im->head : st->role == PM_QKV ? &im->layer[st->layer].qkv
                          : st->role == PM_PROJ ? &im->layer[st->layer].proj
                          : st->role == PM_FC   ? &im->layer[st->layer].fc
                                                : &im->layer[st->layer].mproj;
    return part == PM_U ? &L->u : part == PM_V ? &L->v : &L->w;
}

static const float *runtime_bias(const inf_model *im, const pm_site *st) {
    const inf_linear *L = st->role == PM_HEAD ? &im->head : st->role == PM_QKV ? &im->layer[st->layer].qkv
                          : st->role == PM_PROJ ? &im->layer[st->layer].proj
                          : st->role == PM_FC   ? &im->layer[st->layer].fc
                                                : &im->layer[st->layer].mproj;
    return L->b;
}

static void check_setting(const char *const *argv_keys, const char *name, int want_products, bool all_a8) {
    char err[512];
    run r;
    run_open(&r, argv_keys, name);
    offline o;
    offline_open(&o, &r);
    inf_model im;
    if (inf_model_open(&im, r.file, err, sizeof err) != 0) fail_msg("%s", err);
    tr_policy *q = cp_quant_of(&o.set);
    const pm_table *tb = &o.m.table;
    int products = 0, a8 = 0, identical = 0;
    double worst_a16 = 0;
    ag_ctx *c = ag_ctx_new();
    ag_set_grad(c, false);
    for (int ti = 0; ti < tb->n_tensor; ti++) {
        const pm_tensor *x = &tb->tensor[ti];
        const pm_site *st = &tb->site[x->site];
        int N = x->shape[0], K = x->shape[1], G;
        if (x->ndim != 2) continue;
        int8_t *codes = malloc((size_t)N * K);
        float *sc = malloc(sizeof(float) * N * K);
        int32_t *zp = malloc(sizeof(int32_t) * N * K);
        if (cp_quant_codes(q, &o.m, ti, codes, sc, zp, &G) != 0) {
            free(codes), free(sc), free(zp);
            continue;
        }
        products++;
        /* 1. the file's values are (q - z) s of the checkpoint's codes, bit for bit */
        const inf_tensor *ft = im.file.by_table[ti];
        const inf_type_traits *tr = inf_type(ft->dtype);
        assert_non_null(tr->act ? tr : NULL);
        float *row = malloc(sizeof(float) * K);
        for (int rr = 0; rr < N; rr++) {
            tr->row(ft, (size_t)rr, row);
            for (int k = 0; k < K; k++) {
                size_t g = (size_t)rr * (K / G) + (size_t)(k / G);
                float want = cp_decode(codes[(size_t)rr * K + k], ft->dtype == INF_Q4A ? zp[g] : 0, sc[g]);
                if (memcmp(&want, &row[k], 4))
                    fail_msg("%s %s [%d, %d]: file %g, checkpoint's code %d -> %g", name, x->name, rr, k, (double)row[k],
                             codes[(size_t)rr * K + k], (double)want);
            }
        }
        free(row);
        /* 2. the product's output for the same input: training's forward against the runtime */
        pm_part part = x->part;
        const inf_weight *w = runtime_weight(&im, st, part);
        const float *bias = part == PM_V ? NULL : runtime_bias(&im, st);
        enum { T = 7 };
        float xin[T * 256], got[T * 512];
        ag_rng g;
        ag_rng_seed(&g, (uint64_t)ti);
        for (int i = 0; i < T * K; i++) xin[i] = 1.5f * ag_rng_normal(&g);
        ag_ctx_reset(c);
        int xs[2] = {T, K};
        ag_tensor *xt = ag_new(c, 2, xs, "x");
        memcpy(xt->data, xin, sizeof(float) * T * K);
        ag_tensor *wt = tr_gpt_param(&o.m, ti), *bt = part == PM_V || st->b < 0 ? NULL : tr_gpt_param(&o.m, st->b);
        ag_tensor *y = o.fwd.linear(o.fwd.user, c, st, part, xt, wt, bt);
        assert_non_null(y);
        inf_kctx k;
        inf_kctx_init(&k, inf_isa_best(), 3);
        assert_int_equal(inf_matmul(&k, w, xin, T, got), 0);
        inf_kctx_free(&k);
        if (bias)
            for (int t = 0; t < T; t++)
                for (int j = 0; j < N; j++) got[t * N + j] += bias[j];
        if (w->act_hi) {
            a8++;
            if (memcmp(got, y->data, sizeof(float) * T * N) != 0)
                for (int i = 0; i < T * N; i++)
                    if (memcmp(&got[i], &y->data[i], 4))
                        fail_msg("%s %s: output %d: runtime %.9g, training %.9g (A8: expected the same bits)", name,
                                 x->name, i, (double)got[i], (double)y->data[i]);
            identical++;
        } else {
            double e = row_rel_err(got, y->data, T, N);
            worst_a16 = fmax(worst_a16, e);
            identical += memcmp(got, y->data, sizeof(float) * T * N) == 0;
            assert_true(e <= 1e-6);
        }
        free(codes), free(sc), free(zp);
    }
    assert_int_equal(products, want_products);
    if (all_a8) assert_int_equal(a8, products);
    /* 3. the whole model's logits: batched prompt and KV-cached decode */
    int V = o.m.arch.vocab, ids[CTX];
    for (int i = 0; i < CTX; i++) ids[i] = (i * 7 + 3) % V;
    ag_ctx_reset(c);
    ag_tensor *ref = tr_gpt_forward(c, &o.m, ids, 1, CTX, &o.fwd); /* [1, T, V] */
    assert_non_null(ref);
    inf_session s;
    assert_int_equal(inf_session_init(&s, &im, inf_isa_best(), 3, err, sizeof err), 0);
    float *lg = malloc(sizeof(float) * CTX * V), *step = malloc(sizeof(float) * CTX * V);
    assert_int_equal(inf_forward(&s, ids, CTX, lg, true, err, sizeof err), 0);
    double e1 = row_rel_err(lg, ref->data, CTX, V);
    inf_session_reset(&s);
    for (int t = 0; t < CTX; t++) assert_int_equal(inf_forward(&s, &ids[t], 1, step + t * V, false, err, sizeof err), 0);
    double e2 = row_rel_err(step, ref->data, CTX, V);
    /* 4. greedy generation of 256 tokens from the file and from training's forward */
    enum { NEW = 256 };
    int *a = malloc(sizeof(int) * (NEW + 4)), *b = malloc(sizeof(int) * (NEW + 4));
    ag_rng rng;
    ag_rng_seed(&rng, 1);
    int prompt[3] = {1, 2, 3};
    int la = inf_generate(&s, prompt, 3, NEW, 0.0, 0, -1, &rng, a, NULL, NULL, err, sizeof err);
    assert_int_equal(la, 3 + NEW);
    memcpy(b, prompt, sizeof prompt);
    double probs[256];
    for (int len = 3; len < 3 + NEW; len++) {
        int T = len < CTX ? len : CTX;
        ag_ctx_reset(c);
        ag_tensor *l = tr_gpt_forward(c, &o.m, b + (len - T), 1, T, &o.fwd);
        assert_non_null(l);
        b[len] = tr_sample_pick(l->data + (size_t)(T - 1) * V, V, 0.0, 0, &rng, probs);
    }
    int first_diff = -1;
    for (int i = 0; i < 3 + NEW && first_diff < 0; i++)
        if (a[i] != b[i]) first_diff = i;
    /* 5. the mean validation loss of the file and of the checkpoint */
    tr_batch vb;
    assert_int_equal(tr_batch_init(&vb, 4, CTX, err, sizeof err), 0);
    tr_eval ev;
    assert_int_equal(tr_evaluate(c, &o.m, &o.fwd, r.d, &vb, 4, &ev, err, sizeof err), 0);
    double sum = 0;
    long n = 0;
    float *rl = malloc(sizeof(float) * CTX * V);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(tr_data_val_batch(r.d, i, &vb, err, sizeof err), 0);
        for (int rr = 0; rr < 4; rr++) {
            inf_session_reset(&s);
            assert_int_equal(inf_forward(&s, vb.x + rr * CTX, CTX, rl, true, err, sizeof err), 0);
            for (int t = 0; t < CTX; t++) {
                int yv = vb.y[rr * CTX + t];
                if (yv == TR_IGNORE) continue;
                const float *row = rl + (size_t)t * V;
                double mx = row[0], z = 0;
                for (int j = 1; j < V; j++) mx = fmax(mx, row[j]);
                for (int j = 0; j < V; j++) z += exp((double)row[j] - mx);
                sum += log(z) + mx - row[yv];
                n++;
            }
        }
    }
    double file_loss = sum / (double)n, rel_loss = fabs(file_loss - ev.loss) / ev.loss;
    print_message("%-10s %d products (%d A8): A8 outputs identical %d/%d, A16 worst %.1e; logits: prompt %.2e, decode "
                  "%.2e; greedy 256 tokens %s; val loss file %.7f ckpt %.7f (rel %.1e)\n", name, products, a8, identical,
                  products, worst_a16, e1, e2, first_diff < 0 ? "identical" : "DIFFER", file_loss, ev.loss, rel_loss);
    if (first_diff >= 0) fail_msg("%s: greedy generation differs at token %d: file %d, training %d", name, first_diff,
                                  a[first_diff], b[first_diff]);
    assert_true(e1 <= 1e-5);
    assert_true(e2 <= 1e-5);
    assert_true(rel_loss <= 1e-5);
    free(lg), free(step), free(a), free(b), free(rl);
    tr_batch_free(&vb);
    inf_session_free(&s);
    inf_model_close(&im);
    ag_ctx_free(c);
    offline_close(&o);
    run_close(&r);
}

static void test_w8a8(void **state) {
    (void)state;
    const char *k[] = {"--w-bits", "8", "--a-bits", "8", NULL};
    check_setting(k, "W8A8", 8, true);
}

static void test_w4a8(void **state) {
    (void)state;
    const char *k[] = {"--w-bits", "4", "--a-bits", "8", "--granularity", "group", "--group-size", "32", NULL};
    check_setting(k, "W4A8", 8, true);
}

static void test_w4_g32_a16(void **state) {
    (void)state;
    const char *k[] = {"--w-bits", "4", "--granularity", "group", "--group-size", "32", NULL};
    check_setting(k, "W4g32A16", 8, false);
}

static void test_w3_g32(void **state) {
    (void)state;
    const char *k[] = {"--w-bits", "3", "--granularity", "group", "--group-size", "32", NULL};
    check_setting(k, "W3g32", 8, false);
}

/* Mixed precision by glob: MLPs 4-bit in groups, layer 0's attention 6-bit
 * weights and activations, everything else 8-bit, the head too. */
static void test_mixed(void **state) {
    (void)state;
    const char *k[] = {"--w-bits", "8", "--a-bits", "8", "--quant-head", "--quant-override",
                       "h.*.mlp.*=w4,g32;h.0.attn.*=w6,a6,tensor", NULL};
    check_setting(k, "mixed", 9, true);
}

static void test_lsq(void **state) {
    (void)state;
    const char *k[] = {"--w-bits", "4", "--a-bits", "8", "--lsq", NULL};
    check_setting(k, "LSQ", 8, true);
}

static void test_pact_asym_ema(void **state) {
    (void)state;
    const char *k[] = {"--w-bits", "4", "--a-bits", "8", "--pact", "--symmetric", "false", "--observer", "ema",
                       "--granularity", "group", "--group-size", "64", NULL};
    check_setting(k, "PACT-asym", 8, true);
}

int main(void) {
    ag_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_w8a8),       cmocka_unit_test(test_w4a8), cmocka_unit_test(test_w4_g32_a16),
        cmocka_unit_test(test_w3_g32),     cmocka_unit_test(test_mixed), cmocka_unit_test(test_lsq),
        cmocka_unit_test(test_pact_asym_ema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
