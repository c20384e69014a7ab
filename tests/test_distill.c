/* test_distill.c - knowledge distillation (compress/distill.c): the layer
 * map, the logit loss against the formula computed independently in double,
 * each term reported, the errors a mismatched teacher gets, and a resume with
 * trained projections that continues bit for bit. The terms' gradients are
 * checked in test_gradcheck.c (kl rows, prob_kl, value_relation,
 * hidden_projection); their values against PyTorch in tests/parity. */
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

#include "compress/distill.h"
#include "infer/export.h"
#include "infer/format.h"
#include "train/trainer.h"

static char teacher_path[256], other_path[256], ckpt_path[256];

typedef struct world {
    tr_dataset *d;
    tr_gpt m;
    tr_trainer t;
} world;

static void world_open(world *w, const char *spec, tr_gpt_config mc, int steps, const char *out) {
    char err[512];
    memset(w, 0, sizeof *w);
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = mc.ctx;
    if (tr_dataset_open(&w->d, spec, &o, err, sizeof err) != 0) fail_msg("%s", err);
    mc.vocab = w->d->vocab.size;
    if (tr_gpt_init(&w->m, &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_init_weights(&w->m, 7);
    tr_train_config tc = tr_train_config_default();
    tc.steps = steps;
    tc.batch = 4;
    tc.warmup = 2;
    tc.eval_every = 0;
    tc.eval_batches = 1;
    tc.out = out;
    if (tr_trainer_init(&w->t, &w->m, w->d, &tc, err, sizeof err) != 0) fail_msg("%s", err);
}

static void world_close(world *w) {
    tr_trainer_free(&w->t);
    tr_gpt_free(&w->m);
    tr_dataset_free(w->d);
}

static tr_gpt_config cfg(int layers, int heads, int width) {
    tr_gpt_config c = {.n_layer = layers, .n_head = heads, .n_embd = width, .mlp_ratio = 2, .ctx = 16,
                       .vocab = 0, .bias = true, .tied = false};
    return c;
}

/* A teacher (4 layers, 4 heads, width 32) trained a little on markov, and one
 * on another data set (another vocabulary). */
static int setup(void **state) {
    (void)state;
    snprintf(teacher_path, sizeof teacher_path, "/tmp/pare_test_distill_%d.teacher.ckpt", (int)getpid());
    snprintf(other_path, sizeof other_path, "/tmp/pare_test_distill_%d.other.ckpt", (int)getpid());
    snprintf(ckpt_path, sizeof ckpt_path, "/tmp/pare_test_distill_%d.ckpt", (int)getpid());
    world w;
    world_open(&w, "builtin:markov", cfg(4, 4, 32), 20, teacher_path);
    if (tr_train(&w.t) != TR_OK) fail_msg("%s", w.t.err);
    world_close(&w);
    tr_gpt_config oc = cfg(1, 2, 16);
    oc.ctx = 17;
    world_open(&w, "builtin:sort", oc, 2, other_path);
    if (tr_train(&w.t) != TR_OK) fail_msg("%s", w.t.err);
    world_close(&w);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(teacher_path);
    unlink(other_path);
    unlink(ckpt_path);
    return 0;
}

static cp_distill_cfg dcfg(void) {
    cp_distill_cfg c = {0};
    pare_keys k = {.n = 0};
    cp_distill_kind.keys(&k, &c);
    char err[256];
    assert_int_equal(pare_opts_defaults(k.row, k.n, err, sizeof err), 0);
    c.teacher = teacher_path;
    return c;
}

/* ---------------------------------------------------------------- tests */

static void test_layer_map(void **state) {
    (void)state;
    int map[8];
    char err[256];
    assert_int_equal(cp_layer_map("", 2, 6, map, err, sizeof err), 0);
    assert_true(map[0] == 2 && map[1] == 5); /* (i + 1) 6 / 2 - 1 */
    assert_int_equal(cp_layer_map(NULL, 3, 4, map, err, sizeof err), 0);
    assert_true(map[0] == 0 && map[1] == 1 && map[2] == 3);
    assert_int_equal(cp_layer_map("0,0,3", 3, 4, map, err, sizeof err), 0);
    assert_true(map[0] == 0 && map[1] == 0 && map[2] == 3);
    assert_int_equal(cp_layer_map("0,4,1", 3, 4, map, err, sizeof err), -1);
    assert_non_null(strstr(err, "entry 1"));
    assert_int_equal(cp_layer_map("0,1", 3, 4, map, err, sizeof err), -1);
    assert_non_null(strstr(err, "one teacher layer per student layer"));
    assert_int_equal(cp_layer_map("0,1,2,3", 3, 4, map, err, sizeof err), -1);
}

/* The loss the trainer reports at the first step is alpha CE + (1 - alpha)
 * T^2 KL(softmax(t/T) || softmax(s/T)), computed here in double from the
 * student's and the teacher's logits on the same batch. */
typedef struct probe {
    double want, ce, kl;
    int calls;
} probe;

static ag_tensor *probe_loss(tr_policy *p, tr_trainer *t, ag_ctx *c, ag_tensor *logits, ag_tensor *loss) {
    (void)c;
    probe *q = p->user;
    if (q->calls++) return loss;
    const float *s = logits->data, *te = t->teacher_logits->data; /* [B*T, V] */
    int V = logits->shape[2];
    size_t rows = logits->numel / (size_t)V;
    double T = 2.0, ce = 0, kl = 0;
    for (size_t r = 0; r < rows; r++) {
        double ms = -1e300, mt = -1e300, zs = 0, zt = 0, zs1 = 0;
        for (int v = 0; v < V; v++) {
            ms = fmax(ms, s[r * V + v]);
            mt = fmax(mt, te[r * V + v]);
        }
        for (int v = 0; v < V; v++) {
            zs += exp((s[r * V + v] - ms) / T);
            zt += exp((te[r * V + v] - mt) / T);
            zs1 += exp(s[r * V + v] - ms);
        }
        ce += -((s[r * V + t->batch.y[r]] - ms) - log(zs1));
        for (int v = 0; v < V; v++) {
            double lp = (te[r * V + v] - mt) / T - log(zt), lq = (s[r * V + v] - ms) / T - log(zs);
            kl += exp(lp) * (lp - lq);
        }
    }
    q->ce = ce / rows;
    q->kl = T * T * kl / rows;
    q->want = 0.3 * q->ce + 0.7 * q->kl;
    return loss;
}

static void test_logit_loss_is_the_formula(void **state) {
    (void)state;
    world w;
    world_open(&w, "builtin:markov", cfg(2, 2, 16), 1, "");
    cp_distill_cfg c = dcfg();
    c.kd_temp = 2;
    c.kd_alpha = 0.3;
    char err[512];
    tr_policy *p = cp_distill_kind.create(&c, err, sizeof err);
    assert_non_null(p);
    probe q = {0};
    tr_policy pr = {.name = "probe", .user = &q, .loss = probe_loss}; /* sees the logits before distill's term */
    assert_int_equal(tr_trainer_add_policy(&w.t, &pr), 0);
    assert_int_equal(tr_trainer_add_policy(&w.t, p), 0);
    assert_int_equal(tr_train_step(&w.t), TR_OK);
    print_message("ce %.6f, T^2 KL %.6f, loss %.6f (want %.6f)\n", q.ce, q.kl, w.t.loss, q.want);
    assert_true(q.kl > 1e-4);
    assert_float_equal(w.t.loss, q.want, 2e-5 * q.want);
    assert_int_equal(w.t.n_metrics, 1);
    assert_string_equal(w.t.metric[0].name, "kd.logit");
    assert_float_equal(w.t.metric[0].value, q.kl, 2e-5 * q.kl);
    world_close(&w);
    cp_distill_kind.destroy(p);
}

/* Every term reports itself; each one, given the weight to dominate the
 * loss, falls during a short run against the same teacher (a student with
 * fewer heads, 2 dividing the teacher's 4, learns from averaged head
 * groups); the description names the layer map. */
static double term_after(int kind, double alpha, double attn_w, double hidden_w, const char *metric, double *first) {
    world w;
    world_open(&w, "builtin:markov", cfg(2, 2, 16), 40, "");
    w.t.cfg.lr = 3e-3;
    cp_distill_cfg c = dcfg();
    c.kd_alpha = alpha;
    c.attn_weight = attn_w;
    c.attn_kind = kind;
    c.hidden_weight = hidden_w;
    char err[512];
    tr_policy *p = cp_distill_kind.create(&c, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(tr_trainer_add_policy(&w.t, p), 0);
    double v = NAN;
    for (int s = 0; s < 40; s++) {
        assert_int_equal(tr_train_step(&w.t), TR_OK);
        for (int i = 0; i < w.t.n_metrics; i++)
            if (!strcmp(w.t.metric[i].name, metric)) v = w.t.metric[i].value;
        if (s == 0) *first = v;
    }
    world_close(&w);
    cp_distill_kind.destroy(p);
    print_message("  %s (attn-kind %d): %.6g -> %.6g\n", metric, kind, *first, v);
    return v;
}

static void test_all_terms(void **state) {
    (void)state;
    world w;
    world_open(&w, "builtin:markov", cfg(2, 2, 16), 1, "");
    cp_distill_cfg c = dcfg();
    c.attn_weight = 1;
    c.hidden_weight = 1;
    char err[512];
    tr_policy *p = cp_distill_kind.create(&c, err, sizeof err);
    assert_int_equal(tr_trainer_add_policy(&w.t, p), 0);
    assert_int_equal(tr_train_step(&w.t), TR_OK);
    assert_int_equal(w.t.n_metrics, 3);
    assert_string_equal(w.t.metric[0].name, "kd.logit");
    assert_string_equal(w.t.metric[1].name, "kd.attn");
    assert_string_equal(w.t.metric[2].name, "kd.hidden");
    char line[1024];
    p->describe(p, &w.t, line, sizeof line);
    print_message("%s\n", line);
    assert_non_null(strstr(line, "0<-1 1<-3"));
    world_close(&w);
    cp_distill_kind.destroy(p);
    double first;
    assert_true(term_after(CP_ATTN_MSE, 0.0, 0, 0, "kd.logit", &first) < 0.8 * first);
    assert_true(term_after(CP_ATTN_MSE, 1.0, 1e5, 0, "kd.attn", &first) < 0.8 * first);
    assert_true(term_after(CP_ATTN_KL, 1.0, 100, 0, "kd.attn", &first) < 0.8 * first);
    assert_true(term_after(CP_ATTN_RELATION, 1.0, 100, 0, "kd.attn", &first) < 0.8 * first);
    assert_true(term_after(CP_ATTN_MSE, 1.0, 0, 100, "kd.hidden", &first) < 0.8 * first);
}

/* Mismatches are errors naming both sides: another vocabulary, a head count
 * that does not divide the teacher's, a context longer than the teacher's,
 * a teacher that is not a checkpoint. */
static void expect_fail(tr_gpt_config sc, cp_distill_cfg c, const char *want) {
    world w;
    world_open(&w, "builtin:markov", sc, 2, "");
    char err[512];
    tr_policy *p = cp_distill_kind.create(&c, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(tr_trainer_add_policy(&w.t, p), 0);
    assert_int_equal(tr_train_step(&w.t), TR_ERROR);
    print_message("%s\n", w.t.err);
    assert_non_null(strstr(w.t.err, want));
    world_close(&w);
    cp_distill_kind.destroy(p);
}

static void test_mismatches(void **state) {
    (void)state;
    cp_distill_cfg c = dcfg();
    c.teacher = other_path;
    expect_fail(cfg(1, 2, 16), c, "do not share a vocabulary");
    c = dcfg();
    c.attn_weight = 1;
    expect_fail(cfg(2, 3, 24), c, "must divide the teacher's");
    c = dcfg();
    tr_gpt_config longer = cfg(1, 2, 16);
    longer.ctx = 32;
    {
        world w;
        memset(&w, 0, sizeof w);
        char err[512];
        tr_data_opts o = tr_data_opts_default();
        o.vocab = TR_VOCAB_CHAR;
        o.ctx = 32;
        assert_int_equal(tr_dataset_open(&w.d, "builtin:markov", &o, err, sizeof err), 0);
        longer.vocab = w.d->vocab.size;
        assert_int_equal(tr_gpt_init(&w.m, &longer, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err), 0);
        tr_train_config tc = tr_train_config_default();
        tc.batch = 2;
        assert_int_equal(tr_trainer_init(&w.t, &w.m, w.d, &tc, err, sizeof err), 0);
        tr_policy *p = cp_distill_kind.create(&c, err, sizeof err);
        assert_int_equal(tr_trainer_add_policy(&w.t, p), 0);
        assert_int_equal(tr_train_step(&w.t), TR_ERROR);
        print_message("%s\n", w.t.err);
        assert_non_null(strstr(w.t.err, "must not exceed the teacher's"));
        world_close(&w);
        cp_distill_kind.destroy(p);
    }
    c = dcfg();
    c.teacher = "/nonexistent/t.ckpt";
    expect_fail(cfg(1, 2, 16), c, "cannot open");
    c = dcfg();
    c.layer_map = "0,9";
    expect_fail(cfg(2, 2, 16), c, "layer-map");
}

/* The teacher's logits of one step, from a checkpoint teacher or a model
 * file (kd-alpha 0.3, T = 2), into out[B*T*V]; returns the step's loss. */
static double step_with_teacher(const char *teacher, float *out, size_t n) {
    world w;
    world_open(&w, "builtin:markov", cfg(2, 2, 16), 1, "");
    cp_distill_cfg c = dcfg();
    c.teacher = teacher;
    c.kd_alpha = 0.3;
    char err[512];
    tr_policy *p = cp_distill_kind.create(&c, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(tr_trainer_add_policy(&w.t, p), 0);
    if (tr_train_step(&w.t) != TR_OK) fail_msg("%s", w.t.err);
    assert_int_equal(w.t.teacher_logits->numel, n);
    memcpy(out, w.t.teacher_logits->data, n * sizeof *out);
    double loss = w.t.loss;
    char desc[512];
    p->describe(p, &w.t, desc, sizeof desc);
    print_message("%s\n", desc);
    world_close(&w);
    cp_distill_kind.destroy(p);
    return loss;
}

/* A model file as the teacher (logits only, through the inference runtime):
 * the f32 export of the teacher gives the checkpoint teacher's logits (to
 * float rounding) and so the same loss; an int8 export gives logits close to
 * them; asking a model file for attention or hidden states is an error. */
static void test_model_file_teacher(void **state) {
    (void)state;
    char f32[300], q8[300], err[512];
    snprintf(f32, sizeof f32, "%s.f32.pare", teacher_path);
    snprintf(q8, sizeof q8, "%s.q8.pare", teacher_path);
    tr_gpt t;
    tr_vocab v;
    assert_int_equal(tr_model_load(teacher_path, &t, 0, &v, NULL, err, sizeof err), 0);
    inf_export_opts o32 = {INF_F32, 0, false, NULL, false}, o8 = {INF_Q8, 0, false, NULL, false};
    if (inf_export_gpt(&t, &v, &o32, f32, err, sizeof err) || inf_export_gpt(&t, &v, &o8, q8, err, sizeof err))
        fail_msg("%s", err);
    tr_gpt_free(&t);
    size_t n = 4 * 16 * (size_t)v.size; /* batch 4, ctx 16 */
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *q = malloc(n * sizeof *q);
    assert_true(a && b && q);
    double la = step_with_teacher(teacher_path, a, n), lb = step_with_teacher(f32, b, n);
    step_with_teacher(q8, q, n);
    double d32 = 0, d8 = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        d32 = fmax(d32, fabs((double)a[i] - b[i]));
        d8 = fmax(d8, fabs((double)a[i] - q[i]));
        scale = fmax(scale, fabs((double)a[i]));
    }
    print_message("max |logit difference|: f32 file %.3g, q8 file %.3g (largest logit %.3g); loss %.6f vs %.6f\n",
                  d32, d8, scale, la, lb);
    assert_true(scale > 0.1);
    assert_true(d32 <= 1e-4 * scale);
    assert_float_equal(la, lb, 1e-5 * la);
    assert_true(d8 > d32 && d8 < 0.05 * scale); /* int8 weights: close, not equal */
    free(a), free(b), free(q);
    cp_distill_cfg c = dcfg();
    c.teacher = f32;
    c.attn_weight = 1;
    expect_fail(cfg(2, 2, 16), c, "gives logits only");
    c = dcfg();
    c.teacher = f32;
    c.hidden_weight = 1;
    expect_fail(cfg(2, 2, 16), c, "gives logits only");
    unlink(f32);
    unlink(q8);
}

/* With hidden-state projections (width 16 -> 32): 4 steps straight equal 2
 * steps, a checkpoint, a new trainer with the policy, and 2 steps: the
 * projections come back from the checkpoint, the weights are the same bits. */
static void test_resume_with_projections(void **state) {
    (void)state;
    cp_distill_cfg c = dcfg();
    c.hidden_weight = 1;
    c.attn_weight = 0.5;
    char err[512];
    world a;
    world_open(&a, "builtin:markov", cfg(2, 2, 16), 4, "");
    tr_policy *pa = cp_distill_kind.create(&c, err, sizeof err);
    assert_int_equal(tr_trainer_add_policy(&a.t, pa), 0);
    assert_int_equal(tr_train(&a.t), TR_OK);
    assert_int_equal(a.t.extra.count, 2); /* proj.0, proj.1 */

    world b;
    world_open(&b, "builtin:markov", cfg(2, 2, 16), 4, ckpt_path);
    tr_policy *pb = cp_distill_kind.create(&c, err, sizeof err);
    assert_int_equal(tr_trainer_add_policy(&b.t, pb), 0);
    b.t.cfg.steps = 2;
    assert_int_equal(tr_train(&b.t), TR_OK);
    world_close(&b);
    cp_distill_kind.destroy(pb);

    world d;
    world_open(&d, "builtin:markov", cfg(2, 2, 16), 4, ckpt_path);
    tr_policy *pd = cp_distill_kind.create(&c, err, sizeof err);
    assert_int_equal(tr_trainer_add_policy(&d.t, pd), 0);
    assert_int_equal(tr_trainer_load(&d.t, ckpt_path), 0);
    assert_int_equal(tr_train(&d.t), TR_OK);
    assert_memory_equal(a.m.params.data, d.m.params.data, a.m.params.n * sizeof(float));
    assert_memory_equal(a.t.extra.data, d.t.extra.data, a.t.extra.n * sizeof(float));
    world_close(&a);
    world_close(&d);
    cp_distill_kind.destroy(pa);
    cp_distill_kind.destroy(pd);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer_map),
        cmocka_unit_test(test_logit_loss_is_the_formula),
        cmocka_unit_test(test_all_terms),
        cmocka_unit_test(test_mismatches),
        cmocka_unit_test(test_model_file_teacher),
        cmocka_unit_test(test_resume_with_projections),
    };
    return cmocka_run_group_tests_name("distill", tests, setup, teardown);
}
