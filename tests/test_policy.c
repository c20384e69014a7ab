/* test_policy.c - the trainer's policy seam, exercised by a test policy that
 * is not a compression method: "probe" uses every hook, declares a trainable
 * tensor (a per-logit gain on the LM head's output), masks half of one
 * weight matrix, adds a loss term and reports it as a metric, keeps state of
 * its own in a checkpoint section, needs attention probabilities and hidden
 * states, and sets an export plan entry. The tests check that each of these
 * does what trainer.h promises: the order of the lifecycle, the tensor being
 * optimized, clipped and checkpointed with the model, masked weights and
 * moments staying exactly zero through training and a resume, a resume
 * continuing bit-identically with the policy's state, the metric reaching
 * the progress callbacks, the teacher's forward, and the errors. */
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
#include "train/trainer.h"

/* ------------------------------------------------------------ the probe */

typedef struct probe {
    int gain;           /* handle of the declared tensor [V] */
    int masked_tensor;  /* parameter index of h.0.mlp.fc.w */
    /* hook counts */
    int declares, starts, linear_train, linear_eval, losses, backwards, steps, progresses, evals, ends, saves, loads;
    tr_status end_status;
    long steps_seen;    /* the policy's own state: saved in its section and restored */
    bool dense_grads_seen; /* after_backward saw a non-zero gradient on a masked weight */
    bool saw_probs, saw_hidden;
    double last_term;
    int first_step_start; /* starts counted when the first linear call came */
} probe;

static int probe_declare(tr_policy *p, tr_trainer *t) {
    probe *q = p->user;
    q->declares++;
    int shape[1] = {t->model->arch.vocab};
    q->gain = tr_declare(t, p, "gain", 1, shape, TR_GROUP_NO_DECAY);
    if (q->gain < 0) return -1;
    q->masked_tensor = ag_params_find(&t->model->params, "h.0.mlp.fc.w");
    return tr_trainer_enable_masks(t);
}

/* On a fresh run: gain = 1 and every other column of h.0.mlp.fc.w masked. On
 * a resume both were restored by the trainer and are left alone. */
static int probe_start(tr_policy *p, tr_trainer *t) {
    probe *q = p->user;
    q->starts++;
    if (t->step > 0) return 0;
    ag_tensor *g = tr_extra(t, q->gain);
    for (size_t j = 0; j < g->numel; j++) g->data[j] = 1.0f;
    ag_params *ps = &t->model->params;
    const ag_tensor *w = ag_param(ps, q->masked_tensor);
    for (int r = 0; r < w->shape[0]; r++)
        for (int k = 0; k < w->shape[1]; k += 2) ps->mask[ps->offset[q->masked_tensor] + (size_t)r * w->shape[1] + k] = 0;
    ag_params_mask_apply(ps);
    return 0;
}

static ag_tensor *probe_linear(tr_policy *p, tr_linear *l, ag_tensor *x, ag_tensor *w, ag_tensor *b) {
    probe *q = p->user;
    if (q->linear_train + q->linear_eval == 0) q->first_step_start = q->starts;
    if (l->training) q->linear_train++;
    else q->linear_eval++;
    ag_tensor *y = tr_linear_next(l, x, w, b);
    if (l->site->role == PM_HEAD) y = ag_mul(l->c, y, tr_extra(l->t, q->gain)); /* [B,T,V] * [V] */
    return y;
}

static ag_tensor *probe_loss(tr_policy *p, tr_trainer *t, ag_ctx *c, ag_tensor *logits, ag_tensor *loss) {
    (void)logits;
    probe *q = p->user;
    q->losses++;
    q->saw_probs = t->probs[0] && t->probs[0]->ndim == 4;
    q->saw_hidden = t->hidden[t->model->arch.n_layer] && t->hidden[0];
    ag_tensor *g = tr_extra(t, q->gain);
    ag_tensor *term = ag_scale(c, ag_sum(c, ag_mul(c, g, g)), 1e-3f); /* 1e-3 sum gain^2 */
    if (!term) return NULL;
    q->last_term = term->data[0];
    tr_metric_set(t, "probe.term", term->data[0]);
    return ag_add(c, loss, term);
}

static int probe_backward(tr_policy *p, tr_trainer *t) {
    probe *q = p->user;
    q->backwards++;
    ag_params *ps = &t->model->params;
    const float *gr = ps->grad + ps->offset[q->masked_tensor];
    if (gr[0] != 0.0f) q->dense_grads_seen = true; /* column 0 is masked: still dense here */
    return 0;
}

static int probe_step(tr_policy *p, tr_trainer *t) {
    (void)t;
    probe *q = p->user;
    q->steps++;
    q->steps_seen++;
    return 0;
}

static void probe_progress(tr_policy *p, tr_trainer *t, const tr_progress *pr) {
    (void)t;
    probe *q = p->user;
    q->progresses++;
    assert_true(pr->n_metrics >= 1);
    assert_string_equal(pr->metrics[0].name, "probe.term");
    assert_true(pr->metrics[0].value == q->last_term);
}

static void probe_eval(tr_policy *p, tr_trainer *t, const tr_eval *ev) {
    (void)t;
    (void)ev;
    ((probe *)p->user)->evals++;
}

static void probe_end(tr_policy *p, tr_trainer *t, tr_status st) {
    (void)t;
    probe *q = p->user;
    q->ends++;
    q->end_status = st;
}

static int probe_save(tr_policy *p, tr_trainer *t, tr_ckpt_writer *w) {
    (void)t;
    probe *q = p->user;
    q->saves++;
    tr_ckpt_begin(w, "PRBE");
    tr_wr_u64(w, (uint64_t)q->steps_seen);
    tr_ckpt_end(w);
    return 0;
}

static int probe_load(tr_policy *p, tr_trainer *t, const tr_ckpt_file *f) {
    probe *q = p->user;
    q->loads++;
    tr_rd rd;
    uint64_t v = 0;
    if (tr_rd_open(&rd, f, "PRBE") == 0) tr_rd_u64(&rd, "steps_seen", &v);
    if (tr_rd_done(&rd) != 0) {
        tr_trainer_fail(t, "probe: %s", rd.err);
        return -1;
    }
    q->steps_seen = (long)v;
    return 0;
}

/* Export: the masked matrix is stored as q8 with per-row scales, decided
 * from the policy's own section (which must be there). */
static int probe_export(tr_policy *p, const tr_gpt *m, const tr_ckpt_file *f, pm_plan *plan, char *err,
                        size_t errlen) {
    (void)p;
    (void)m;
    if (!tr_ckpt_find(f, "PRBE")) {
        snprintf(err, errlen, "probe: no PRBE section");
        return -1;
    }
    pm_plan_entry *e = pm_plan_find(plan, "h.0.mlp.fc.w");
    if (!e) {
        snprintf(err, errlen, "probe: no h.0.mlp.fc.w in the plan");
        return -1;
    }
    snprintf(e->type, sizeof e->type, "q8");
    e->group = 0;
    snprintf(e->by, sizeof e->by, "probe");
    return 0;
}

static tr_policy probe_policy(probe *q) {
    memset(q, 0, sizeof *q);
    tr_policy p = {.name = "probe", .user = q, .needs = TR_NEED_PROBS | TR_NEED_HIDDEN, .declare = probe_declare,
                   .on_start = probe_start, .linear = probe_linear, .loss = probe_loss,
                   .after_backward = probe_backward, .after_step = probe_step, .on_progress = probe_progress,
                   .on_eval = probe_eval, .on_end = probe_end, .save = probe_save, .load = probe_load,
                   .export = probe_export};
    return p;
}

/* ------------------------------------------------------------ a world */

typedef struct world {
    tr_dataset *d;
    tr_gpt m;
    tr_trainer t;
} world;

static tr_train_config run_cfg(int steps) {
    tr_train_config t = tr_train_config_default();
    t.steps = steps;
    t.batch = 4;
    t.lr = 3e-3;
    t.min_lr = 3e-4;
    t.warmup = 2;
    t.eval_every = 3;
    t.eval_batches = 2;
    return t;
}

static void world_open(world *w, tr_train_config tc) {
    char err[512];
    memset(w, 0, sizeof *w);
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = 16;
    if (tr_dataset_open(&w->d, "builtin:markov", &o, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_config mc = {.n_layer = 2, .n_head = 2, .n_embd = 16, .mlp_ratio = 2, .ctx = 16,
                        .vocab = w->d->vocab.size, .bias = true, .tied = false};
    if (tr_gpt_init(&w->m, &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_init_weights(&w->m, tc.seed);
    if (tr_trainer_init(&w->t, &w->m, w->d, &tc, err, sizeof err) != 0) fail_msg("%s", err);
}

static void world_close(world *w) {
    tr_trainer_free(&w->t);
    tr_gpt_free(&w->m);
    tr_dataset_free(w->d);
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/pare_test_policy_%d_%s.ckpt", (int)getpid(), name);
}

/* Every masked entry of the model is zero in the weights and both moments. */
static void assert_masked_zero(const ag_params *p) {
    assert_non_null(p->mask);
    size_t masked = 0;
    for (size_t j = 0; j < p->n; j++)
        if (p->mask[j] == 0.0f) {
            masked++;
            assert_true(p->data[j] == 0.0f && p->m[j] == 0.0f && p->v[j] == 0.0f);
        }
    assert_true(masked > 0);
}

/* ---------------------------------------------------------------- tests */

/* The lifecycle: declare once before anything, on_start once before the
 * first linear call, every hook at its point with the counts a 6-step run
 * with evaluations every 3 steps implies, on_end with the outcome. */
static void test_every_hook_in_order(void **state) {
    (void)state;
    world w;
    world_open(&w, run_cfg(6));
    probe q;
    tr_policy p = probe_policy(&q);
    assert_int_equal(tr_trainer_add_policy(&w.t, &p), 0);
    assert_int_equal(tr_train(&w.t), TR_OK);
    int sites = 2 * 4 + 1; /* linear products per forward */
    assert_int_equal(q.declares, 1);
    assert_int_equal(q.starts, 1);
    assert_int_equal(q.first_step_start, 1); /* on_start ran before the first forward */
    assert_int_equal(q.linear_train, 6 * sites);
    assert_int_equal(q.linear_eval, 2 * 2 * sites); /* 2 evaluations of 2 batches, grad mode off */
    assert_int_equal(q.losses, 6);
    assert_int_equal(q.backwards, 6);
    assert_int_equal(q.steps, 6);
    assert_int_equal(q.progresses, 6);
    assert_int_equal(q.evals, 2);
    assert_int_equal(q.ends, 1);
    assert_int_equal(q.end_status, TR_OK);
    assert_true(q.saw_probs && q.saw_hidden);
    assert_true(q.dense_grads_seen);
    assert_true(q.last_term > 0);
    world_close(&w);
}

/* A direct caller of tr_train_step gets on_start too, once. */
static void test_on_start_for_direct_steps(void **state) {
    (void)state;
    world w;
    world_open(&w, run_cfg(6));
    probe q;
    tr_policy p = probe_policy(&q);
    assert_int_equal(tr_trainer_add_policy(&w.t, &p), 0);
    assert_int_equal(tr_train_step(&w.t), TR_OK);
    assert_int_equal(tr_train_step(&w.t), TR_OK);
    assert_int_equal(q.starts, 1);
    assert_int_equal(q.first_step_start, 1);
    world_close(&w);
}

/* The declared tensor is optimized (it moves from 1), counted in the
 * gradient norm with the model's (the trainer's norm is the norm over both
 * sets, not the model's alone), and masked weights with both moments stay
 * exactly zero while the mask had removed weights that were not zero. */
static void test_tensor_optimized_and_masks_hold(void **state) {
    (void)state;
    tr_train_config tc = run_cfg(5);
    tc.grad_clip = 0; /* the gradients after the last step are unclipped, to recompute the norm */
    world w;
    world_open(&w, tc);
    probe q;
    tr_policy p = probe_policy(&q);
    assert_int_equal(tr_trainer_add_policy(&w.t, &p), 0);
    assert_int_equal(tr_train(&w.t), TR_OK);
    ag_tensor *g = tr_extra(&w.t, q.gain);
    int moved = 0;
    for (size_t j = 0; j < g->numel; j++) moved += g->data[j] != 1.0f;
    assert_true(moved > (int)g->numel / 2);
    const ag_params *sets[2] = {&w.m.params, &w.t.extra};
    double both = ag_grad_norm_sets(sets, 2), model = ag_grad_norm(&w.m.params);
    assert_true(both > model);
    assert_float_equal(w.t.grad_norm, both, 1e-12 * both);
    assert_masked_zero(&w.m.params);
    assert_int_equal(ag_params_masked(&w.m.params, q.masked_tensor), 32 * 16 / 2);
    /* the gradients of masked entries were zeroed before the norm and the step */
    for (size_t j = 0; j < w.m.params.n; j++)
        if (w.m.params.mask[j] == 0.0f) assert_true(w.m.params.grad[j] == 0.0f);
    world_close(&w);
}

/* 6 steps straight, against 3 steps + checkpoint + a new trainer (policy
 * added before the load) + 3 steps: the same weights, moments, declared
 * tensor (with its moments), masks and policy state, bit for bit. */
static void test_resume_restores_policy_state(void **state) {
    (void)state;
    char path[256];
    tmp_path(path, sizeof path, "resume");
    world a;
    world_open(&a, run_cfg(6));
    probe qa;
    tr_policy pa = probe_policy(&qa);
    assert_int_equal(tr_trainer_add_policy(&a.t, &pa), 0);
    assert_int_equal(tr_train(&a.t), TR_OK);

    world b;
    tr_train_config tc = run_cfg(6);
    tc.out = path;
    world_open(&b, tc);
    probe qb;
    tr_policy pb = probe_policy(&qb);
    assert_int_equal(tr_trainer_add_policy(&b.t, &pb), 0);
    b.t.cfg.steps = 3;
    assert_int_equal(tr_train(&b.t), TR_OK);
    assert_true(qb.saves >= 1);
    world_close(&b);

    world c;
    world_open(&c, tc);
    probe qc;
    tr_policy pc = probe_policy(&qc);
    assert_int_equal(tr_trainer_add_policy(&c.t, &pc), 0);
    assert_int_equal(tr_trainer_load(&c.t, path), 0);
    assert_int_equal(qc.declares, 1); /* declared before the load filled its tensor */
    assert_int_equal(qc.loads, 1);
    assert_int_equal(qc.steps_seen, 3);
    assert_int_equal(c.t.step, 3);
    assert_masked_zero(&c.m.params); /* the masks came back from the checkpoint */
    assert_int_equal(tr_train(&c.t), TR_OK);
    assert_int_equal(qc.starts, 1);
    assert_int_equal(qc.steps_seen, 6);
    size_t n = a.m.params.n;
    assert_memory_equal(a.m.params.data, c.m.params.data, n * sizeof(float));
    assert_memory_equal(a.m.params.m, c.m.params.m, n * sizeof(float));
    assert_memory_equal(a.m.params.v, c.m.params.v, n * sizeof(float));
    assert_memory_equal(a.m.params.mask, c.m.params.mask, n * sizeof(float));
    size_t ne = a.t.extra.n;
    assert_int_equal(ne, c.t.extra.n);
    assert_memory_equal(a.t.extra.data, c.t.extra.data, ne * sizeof(float));
    assert_memory_equal(a.t.extra.m, c.t.extra.m, ne * sizeof(float));
    assert_memory_equal(a.t.extra.v, c.t.extra.v, ne * sizeof(float));

    /* the model alone loads with its masks applied */
    tr_gpt m2;
    tr_vocab v;
    char err[512];
    assert_int_equal(tr_model_load(path, &m2, 0, &v, NULL, err, sizeof err), 0);
    assert_non_null(m2.params.mask);
    assert_int_equal(ag_params_masked(&m2.params, qc.masked_tensor), 32 * 16 / 2);

    /* the export hook sets its plan entry from the checkpoint */
    pm_plan plan;
    assert_int_equal(pm_plan_init(&plan, &m2.arch, err, sizeof err), 0);
    tr_ckpt_file f;
    assert_int_equal(tr_ckpt_read(&f, path, err, sizeof err), 0);
    assert_int_equal(pc.export(&pc, &m2, &f, &plan, err, sizeof err), 0);
    pm_plan_entry *e = pm_plan_find(&plan, "h.0.mlp.fc.w");
    assert_non_null(e);
    assert_string_equal(e->type, "q8");
    assert_string_equal(e->by, "probe");
    assert_string_equal(pm_plan_find(&plan, "h.0.mlp.proj.w")->type, "f32");
    tr_ckpt_close(&f);
    pm_plan_free(&plan);
    tr_gpt_free(&m2);

    /* a checkpoint without the policy's tensors cannot resume a run that declares them */
    world d;
    tr_train_config td = run_cfg(2);
    td.out = path;
    world_open(&d, td);
    assert_int_equal(tr_train(&d.t), TR_OK); /* no policy: no PTEN */
    world e2;
    world_open(&e2, td);
    probe qe;
    tr_policy pe = probe_policy(&qe);
    assert_int_equal(tr_trainer_add_policy(&e2.t, &pe), 0);
    assert_int_equal(tr_trainer_load(&e2.t, path), -1);
    print_message("%s\n", e2.t.err);
    assert_non_null(strstr(e2.t.err, "PTEN"));
    world_close(&d);
    world_close(&e2);
    world_close(&a);
    world_close(&c);
    unlink(path);
}

/* A teacher: its forward runs on the same batch with grad mode off. A
 * teacher with the student's initial weights gives the student's logits
 * exactly at the first step. */
typedef struct kd {
    int calls;
    float max_diff;
} kd;

static ag_tensor *kd_loss(tr_policy *p, tr_trainer *t, ag_ctx *c, ag_tensor *logits, ag_tensor *loss) {
    (void)c;
    kd *k = p->user;
    assert_non_null(t->teacher_logits);
    assert_null(t->teacher_logits->grad); /* grad mode was off */
    assert_non_null(t->teacher_probs[0]);
    if (k->calls++ == 0)
        for (size_t j = 0; j < logits->numel; j++) {
            float d = fabsf(logits->data[j] - t->teacher_logits->data[j]);
            if (d > k->max_diff) k->max_diff = d;
        }
    return loss;
}

static void test_teacher_forward(void **state) {
    (void)state;
    world w;
    world_open(&w, run_cfg(2));
    char err[512];
    tr_gpt teacher;
    pm_arch a;
    assert_int_equal(pm_arch_copy(&a, &w.m.arch), 0);
    assert_int_equal(tr_gpt_init_arch(&teacher, &a, 0, err, sizeof err), 0);
    pm_arch_free(&a);
    memcpy(teacher.params.data, w.m.params.data, w.m.params.n * sizeof(float));
    kd k = {0};
    tr_policy p = {.name = "kd", .user = &k, .needs = TR_NEED_TEACHER | TR_NEED_TEACHER_PROBS, .loss = kd_loss};
    assert_int_equal(tr_trainer_add_policy(&w.t, &p), 0);
    /* without a teacher the run cannot start */
    assert_int_equal(tr_train_step(&w.t), TR_ERROR);
    assert_non_null(strstr(w.t.err, "teacher"));
    world_close(&w);

    world_open(&w, run_cfg(2));
    memcpy(w.m.params.data, teacher.params.data, w.m.params.n * sizeof(float));
    assert_int_equal(tr_trainer_add_policy(&w.t, &p), 0);
    assert_int_equal(tr_trainer_set_teacher(&w.t, &teacher), 0);
    assert_int_equal(tr_train(&w.t), TR_OK);
    assert_int_equal(k.calls, 2);
    assert_true(k.max_diff == 0.0f);
    world_close(&w);

    /* a teacher of another vocabulary is refused, naming both */
    world_open(&w, run_cfg(2));
    tr_gpt other;
    tr_gpt_config oc = {.n_layer = 1, .n_head = 1, .n_embd = 8, .mlp_ratio = 1, .ctx = 16, .vocab = 7,
                        .bias = true, .tied = false};
    assert_int_equal(tr_gpt_init(&other, &oc, 0, err, sizeof err), 0);
    assert_int_equal(tr_trainer_set_teacher(&w.t, &other), -1);
    assert_non_null(strstr(w.t.err, "vocabulary of 7 tokens"));
    tr_gpt_free(&other);
    world_close(&w);
    tr_gpt_free(&teacher);
}

/* A teacher known only by its logits: the function's logits are the step's
 * teacher_logits ([B, T, V], no gradient), its errors stop the step with
 * their message, and a policy that needs the teacher's attention cannot
 * start with it. */
typedef struct fn_teacher {
    int calls;
    bool fail;
} fn_teacher;

static int ramp_logits(void *user, const int *x, int B, int T, float *logits, char *err, size_t errlen) {
    fn_teacher *f = user;
    f->calls++;
    if (f->fail) {
        snprintf(err, errlen, "the teacher's file went away");
        return -1;
    }
    for (int r = 0; r < B * T; r++) /* a recognisable function of the input */
        for (int v = 0; v < 10; v++) logits[(size_t)r * 10 + v] = (float)(x[r] * 0.5 + v);
    return 0;
}

typedef struct ramp_check {
    int checked;
} ramp_check;

static ag_tensor *ramp_loss(tr_policy *p, tr_trainer *t, ag_ctx *c, ag_tensor *logits, ag_tensor *loss) {
    (void)c, (void)logits;
    ramp_check *k = p->user;
    const ag_tensor *tl = t->teacher_logits;
    assert_int_equal(tl->ndim, 3);
    assert_true(tl->shape[0] == t->batch.B && tl->shape[1] == t->batch.T && tl->shape[2] == 10);
    assert_null(tl->grad);
    for (int r = 0; r < t->batch.B * t->batch.T; r++)
        assert_true(tl->data[(size_t)r * 10 + 3] == (float)(t->batch.x[r] * 0.5 + 3));
    k->checked++;
    return loss;
}

static void test_logits_only_teacher(void **state) {
    (void)state;
    world w;
    world_open(&w, run_cfg(2));
    assert_int_equal(w.m.arch.vocab, 10); /* markov's char vocabulary, which ramp_logits writes */
    fn_teacher f = {0};
    ramp_check k = {0};
    tr_policy p = {.name = "kd", .user = &k, .needs = TR_NEED_TEACHER, .loss = ramp_loss};
    assert_int_equal(tr_trainer_add_policy(&w.t, &p), 0);
    assert_int_equal(tr_trainer_set_teacher_logits(&w.t, ramp_logits, &f, 10, 8), -1); /* context 8 < 16 */
    assert_non_null(strstr(w.t.err, "must not exceed the teacher's"));
    w.t.err[0] = '\0';
    assert_int_equal(tr_trainer_set_teacher_logits(&w.t, ramp_logits, &f, 11, 16), -1);
    assert_non_null(strstr(w.t.err, "vocabulary of 11 tokens"));
    w.t.err[0] = '\0';
    assert_int_equal(tr_trainer_set_teacher_logits(&w.t, ramp_logits, &f, 10, 16), 0);
    assert_int_equal(tr_train_step(&w.t), TR_OK);
    assert_int_equal(tr_train_step(&w.t), TR_OK);
    assert_int_equal(f.calls, 2);
    assert_int_equal(k.checked, 2);
    f.fail = true;
    assert_int_equal(tr_train_step(&w.t), TR_ERROR);
    assert_non_null(strstr(w.t.err, "teacher: the teacher's file went away"));
    world_close(&w);

    world_open(&w, run_cfg(2));
    tr_policy pa = {.name = "attn", .user = &k, .needs = TR_NEED_TEACHER | TR_NEED_TEACHER_PROBS, .loss = ramp_loss};
    assert_int_equal(tr_trainer_add_policy(&w.t, &pa), 0);
    assert_int_equal(tr_trainer_set_teacher_logits(&w.t, ramp_logits, &f, 10, 16), 0);
    assert_int_equal(tr_train_step(&w.t), TR_ERROR);
    assert_non_null(strstr(w.t.err, "known only by its logits"));
    world_close(&w);
}

/* Misuse is an error with a message, never a crash: adding a policy after
 * the run was prepared, declaring outside the declare hook. */
static void test_lifecycle_errors(void **state) {
    (void)state;
    world w;
    world_open(&w, run_cfg(2));
    probe q;
    tr_policy p = probe_policy(&q);
    assert_int_equal(tr_declare(&w.t, &p, "x", 1, (int[]){4}, TR_GROUP_DECAY), -1); /* not added */
    assert_int_equal(tr_trainer_add_policy(&w.t, &p), 0);
    assert_int_equal(tr_declare(&w.t, &p, "x", 1, (int[]){4}, TR_GROUP_DECAY), -1); /* not in declare */
    assert_non_null(strstr(w.t.err, "outside its declare hook"));
    w.t.err[0] = '\0';
    assert_int_equal(tr_train_step(&w.t), TR_OK);
    probe q2;
    tr_policy p2 = probe_policy(&q2);
    assert_int_equal(tr_trainer_add_policy(&w.t, &p2), -1);
    assert_non_null(strstr(w.t.err, "after the run was prepared"));
    world_close(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_hook_in_order),
        cmocka_unit_test(test_on_start_for_direct_steps),
        cmocka_unit_test(test_tensor_optimized_and_masks_hold),
        cmocka_unit_test(test_resume_restores_policy_state),
        cmocka_unit_test(test_teacher_forward),
        cmocka_unit_test(test_logits_only_teacher),
        cmocka_unit_test(test_lifecycle_errors),
    };
    return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
