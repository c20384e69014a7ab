/* test_trainer.c - the trainer: learning-rate schedule, that training learns,
 * no allocation after the first step, divergence handling (no update, no
 * checkpoint), interrupt + resume giving bit-identical losses and weights,
 * and determinism for a fixed seed and thread count. */
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
#include "train/keys.h"
#include "train/trainer.h"

#define MAX_STEPS 64

static tr_gpt_config small_model(int vocab, int ctx) {
    tr_gpt_config c = {.n_layer = 2, .n_head = 2, .n_embd = 16, .mlp_ratio = 2, .ctx = ctx, .vocab = vocab,
                       .bias = true, .tied = false};
    return c;
}

static tr_train_config small_run(int steps) {
    tr_train_config t = tr_train_config_default();
    t.steps = steps;
    t.batch = 4;
    t.lr = 3e-3;
    t.min_lr = 3e-4;
    t.warmup = 3;
    t.eval_every = 0;
    t.eval_batches = 2;
    return t;
}

/* A world: data, model, trainer. */
typedef struct world {
    tr_dataset *d;
    tr_gpt m;
    tr_trainer t;
} world;

static void world_open(world *w, const char *spec, tr_train_config tc) {
    char err[512];
    memset(w, 0, sizeof *w);
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = tr_data_default_ctx(spec) < 24 ? tr_data_default_ctx(spec) : 24;
    if (tr_dataset_open(&w->d, spec, &o, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_config mc = small_model(w->d->vocab.size, o.ctx);
    if (tr_gpt_init(&w->m, &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_init_weights(&w->m, tc.seed);
    if (tr_trainer_init(&w->t, &w->m, w->d, &tc, err, sizeof err) != 0) fail_msg("%s", err);
}

static void world_close(world *w) {
    tr_trainer_free(&w->t);
    tr_gpt_free(&w->m);
    tr_dataset_free(w->d);
}

/* An observer recording every step's loss, optionally stopping after a step. */
typedef struct recorder {
    float loss[MAX_STEPS + 1];
    long stop_after;
    volatile sig_atomic_t stop;
} recorder;

static void rec_progress(tr_policy *p, tr_trainer *t, const tr_progress *pr) {
    (void)t;
    recorder *r = p->user;
    assert_true(pr->step >= 1 && pr->step <= MAX_STEPS);
    r->loss[pr->step] = (float)pr->loss;
    if (pr->step == r->stop_after) r->stop = 1;
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/pare_test_trainer_%d_%s.ckpt", (int)getpid(), name);
}

/* ---------------------------------------------------------------- tests */

static void test_lr_schedule(void **state) {
    (void)state;
    tr_train_config c = tr_train_config_default();
    c.lr = 1e-3;
    c.min_lr = 1e-4;
    c.warmup = 10;
    c.steps = 110;
    assert_float_equal(tr_lr_at(&c, 0), 1e-4, 1e-15);
    assert_float_equal(tr_lr_at(&c, 4), 5e-4, 1e-15);
    assert_float_equal(tr_lr_at(&c, 9), 1e-3, 1e-15);
    assert_float_equal(tr_lr_at(&c, 10), 1e-3, 1e-15);    /* cosine starts at the peak */
    assert_float_equal(tr_lr_at(&c, 60), 5.5e-4, 1e-15);  /* halfway: (lr + min_lr) / 2 */
    assert_float_equal(tr_lr_at(&c, 35), 1e-4 + 0.5 * 9e-4 * (1 + cos(3.14159265358979323846 * 0.25)), 1e-15);
    assert_float_equal(tr_lr_at(&c, 110), 1e-4, 1e-15);
    assert_float_equal(tr_lr_at(&c, 500), 1e-4, 1e-15);   /* clamped past the end */
    c.warmup = 0;
    assert_float_equal(tr_lr_at(&c, 0), 1e-3, 1e-15);
    for (long s = 1; s < 110; s++) assert_true(tr_lr_at(&c, s) <= tr_lr_at(&c, s - 1));
}

static void test_config_errors(void **state) {
    (void)state;
    char err[256];
    tr_train_config c = tr_train_config_default();
    c.min_lr = 2 * c.lr;
    assert_int_equal(tr_train_config_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "min-lr"));
    c = tr_train_config_default();
    c.beta2 = 1.0;
    assert_int_equal(tr_train_config_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "beta2"));
    c = tr_train_config_default();
    c.batch = 0;
    assert_int_equal(tr_train_config_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "batch"));
}

/* The library's defaults are its keys' defaults (train/keys.c), and a key
 * row fills its struct directly. */
static void test_defaults_are_the_keys(void **state) {
    (void)state;
    tr_train_config c = tr_train_config_default();
    assert_int_equal(c.steps, 1000);
    assert_int_equal(c.batch, 16);
    assert_int_equal(c.eval_batches, 20);
    assert_int_equal(c.ckpt_every, 0); /* a checkpoint after every evaluation */
    assert_true(c.seed == 1 && c.out == NULL);
    tr_gpt_config g = tr_gpt_config_default();
    assert_true(g.n_layer == 4 && g.n_head == 4 && g.n_embd == 128 && g.mlp_ratio == 4 && g.bias && !g.tied);
    assert_true(tr_data_opts_default().seed == TR_DATA_SEED_DEFAULT);
    tr_train_config t;
    tr_gpt_config m;
    pare_keys k = {.n = 0};
    tr_train_keys(&k, &t);
    tr_model_keys(&k, &m);
    char *argv[] = {"x", "--steps", "5", "--seed", "12345678901", "--n-layer", "2", "--lr", "0.5"};
    char err[256];
    assert_int_equal(pare_opts_parse(k.row, k.n, 9, argv, NULL, 0, NULL, err, sizeof err), PARE_OPTS_OK);
    assert_true(t.steps == 5 && t.seed == 12345678901ull && t.lr == 0.5 && m.n_layer == 2 && t.batch == 16);
}

/* Training on the copy task lowers the loss, and after the first step a step
 * allocates nothing: the arena keeps one block, the tape keeps its array. */
static void test_learns_and_steps_do_not_allocate(void **state) {
    (void)state;
    world w;
    world_open(&w, "builtin:copy", small_run(40));
    tr_eval before;
    assert_int_equal(tr_trainer_eval(&w.t, &before), 0);
    assert_int_equal(tr_train_step(&w.t), TR_OK);
    assert_int_equal(tr_train_step(&w.t), TR_OK);
    size_t mallocs = w.t.ctx->arena.n_mallocs, grows = w.t.ctx->n_tape_grows;
    for (int i = 2; i < 40; i++) assert_int_equal(tr_train_step(&w.t), TR_OK);
    assert_int_equal(w.t.ctx->arena.n_mallocs, mallocs);
    assert_int_equal(w.t.ctx->n_tape_grows, grows);
    assert_int_equal(w.t.step, 40);
    assert_int_equal(w.t.opt.step, 40);
    assert_int_equal((long)w.t.tokens, 40L * 4 * w.d->ctx);
    tr_eval after;
    assert_int_equal(tr_trainer_eval(&w.t, &after), 0);
    print_message("copy: val loss %.4f -> %.4f after 40 steps, accuracy %.3f\n", before.loss, after.loss,
                  after.accuracy);
    assert_true(after.loss < before.loss - 0.15); /* uniform guessing stays at log 12 = 2.48 */
    assert_true(after.total == 8 && after.accuracy >= 0 && after.accuracy <= 1);
    world_close(&w);
}

/* A policy that poisons the loss or a gradient at a chosen step. */
typedef struct poison {
    long at_step;   /* 0-based step index to poison */
    bool in_loss;   /* else in a gradient */
} poison;

static ag_tensor *poison_loss(tr_policy *p, tr_trainer *t, ag_ctx *c, ag_tensor *logits, ag_tensor *loss) {
    (void)logits;
    poison *q = p->user;
    if (q->in_loss && t->step == q->at_step) return ag_scale(c, loss, NAN);
    return loss;
}

static int poison_grad(tr_policy *p, tr_trainer *t) {
    poison *q = p->user;
    if (!q->in_loss && t->step == q->at_step) t->model->params.grad[t->model->params.offset[3] + 1] = INFINITY;
    return 0;
}

static void check_divergence(bool in_loss) {
    world w;
    char path[256];
    tmp_path(path, sizeof path, in_loss ? "div_loss" : "div_grad");
    unlink(path);
    tr_train_config tc = small_run(10);
    tc.out = path;
    tc.ckpt_every = 2; /* a good checkpoint exists before the bad step */
    world_open(&w, "builtin:markov", tc);
    poison q = {.at_step = 5, .in_loss = in_loss};
    tr_policy pol = {.name = "poison", .user = &q, .loss = poison_loss, .after_backward = poison_grad};
    assert_int_equal(tr_trainer_add_policy(&w.t, &pol), 0);

    /* run to just before the bad step, snapshot everything, then hit it */
    w.t.cfg.steps = 5;
    assert_int_equal(tr_train(&w.t), TR_OK);
    w.t.cfg.steps = 10;
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    char *saved = malloc((size_t)size);
    assert_int_equal(fread(saved, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    size_t n = w.m.params.n;
    float *data = malloc(n * sizeof(float)), *m = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
    memcpy(data, w.m.params.data, n * sizeof(float));
    memcpy(m, w.m.params.m, n * sizeof(float));
    memcpy(v, w.m.params.v, n * sizeof(float));

    tr_status st = tr_train(&w.t);
    assert_int_equal(st, TR_DIVERGED);
    print_message("%s\n", w.t.err);
    assert_non_null(strstr(w.t.err, "step 6"));
    assert_non_null(strstr(w.t.err, in_loss ? "loss" : "gradient norm"));
    assert_int_equal(w.t.step, 5);
    assert_int_equal(w.t.opt.step, 5);
    assert_memory_equal(w.m.params.data, data, n * sizeof(float));
    assert_memory_equal(w.m.params.m, m, n * sizeof(float));
    assert_memory_equal(w.m.params.v, v, n * sizeof(float));
    /* the checkpoint on disk is the good one from step 4, untouched */
    f = fopen(path, "rb");
    assert_non_null(f);
    char *now = malloc((size_t)size + 1);
    assert_int_equal(fread(now, 1, (size_t)size + 1, f), (size_t)size);
    fclose(f);
    assert_memory_equal(now, saved, (size_t)size);
    free(now);
    free(saved);
    free(data);
    free(m);
    free(v);
    unlink(path);
    world_close(&w);
}

static void test_divergence_in_loss(void **state) {
    (void)state;
    check_divergence(true);
}

static void test_divergence_in_gradient(void **state) {
    (void)state;
    check_divergence(false);
}

/* A run interrupted after step k (the SIGINT path: stop flag, checkpoint) and
 * resumed in a new trainer gives bit-identical losses at every later step
 * and bit-identical final weights and moments. */
static void test_resume_is_bit_exact(void **state) {
    (void)state;
    const int steps = 12, k = 5;
    char path[256];
    tmp_path(path, sizeof path, "resume");
    unlink(path);
    tr_train_config tc = small_run(steps);
    tc.eval_every = 4;

    /* the reference: straight through */
    world a;
    world_open(&a, "builtin:reverse", tc);
    recorder ra = {.stop_after = -1};
    tr_policy pa = {.name = "rec", .user = &ra, .on_progress = rec_progress};
    tr_trainer_add_policy(&a.t, &pa);
    assert_int_equal(tr_train(&a.t), TR_OK);

    /* interrupted after step k */
    tc.out = path;
    world b;
    world_open(&b, "builtin:reverse", tc);
    recorder rb = {.stop_after = k};
    tr_policy pb = {.name = "rec", .user = &rb, .on_progress = rec_progress};
    tr_trainer_add_policy(&b.t, &pb);
    b.t.stop = &rb.stop;
    assert_int_equal(tr_train(&b.t), TR_INTERRUPTED);
    assert_int_equal(b.t.step, k);
    world_close(&b);

    /* resumed: a fresh process would build everything again, then load */
    world c;
    tc.seed = 999; /* the checkpoint, not the seed, decides the weights and the data position */
    world_open(&c, "builtin:reverse", tc);
    recorder rc = {.stop_after = -1};
    tr_policy pc = {.name = "rec", .user = &rc, .on_progress = rec_progress};
    tr_trainer_add_policy(&c.t, &pc);
    if (tr_trainer_load(&c.t, path) != 0) fail_msg("%s", c.t.err);
    assert_int_equal(c.t.step, k);
    assert_int_equal(tr_train(&c.t), TR_OK);

    for (int s = 1; s <= k; s++) assert_memory_equal(&rb.loss[s], &ra.loss[s], sizeof(float));
    for (int s = k + 1; s <= steps; s++)
        if (memcmp(&rc.loss[s], &ra.loss[s], sizeof(float)) != 0)
            fail_msg("step %d: resumed loss %.9g, uninterrupted %.9g", s, rc.loss[s], ra.loss[s]);
    size_t n = a.m.params.n * sizeof(float);
    assert_memory_equal(c.m.params.data, a.m.params.data, n);
    assert_memory_equal(c.m.params.m, a.m.params.m, n);
    assert_memory_equal(c.m.params.v, a.m.params.v, n);
    assert_int_equal(c.t.opt.step, a.t.opt.step);
    assert_memory_equal(&c.t.last_eval.loss, &a.t.last_eval.loss, sizeof(double));
    world_close(&a);
    world_close(&c);
    unlink(path);
}

/* Resuming against different data is refused with a message. */
static void test_resume_needs_the_same_data(void **state) {
    (void)state;
    char path[256];
    tmp_path(path, sizeof path, "otherdata");
    tr_train_config tc = small_run(3);
    tc.out = path;
    world a;
    world_open(&a, "builtin:copy", tc);
    assert_int_equal(tr_train(&a.t), TR_OK);
    world b;
    world_open(&b, "builtin:sort", tc); /* same vocabulary and ctx, other data */
    assert_int_equal(tr_trainer_load(&b.t, path), -1);
    print_message("%s\n", b.t.err);
    assert_non_null(strstr(b.t.err, "resuming needs the same data"));
    world_close(&a);
    world_close(&b);
    unlink(path);
}

static void run_losses(uint64_t seed, int threads, float *loss, int steps) {
    ag_set_threads(threads);
    tr_train_config tc = small_run(steps);
    tc.seed = seed;
    world w;
    world_open(&w, "builtin:markov", tc);
    recorder r = {.stop_after = -1};
    tr_policy p = {.name = "rec", .user = &r, .on_progress = rec_progress};
    tr_trainer_add_policy(&w.t, &p);
    assert_int_equal(tr_train(&w.t), TR_OK);
    memcpy(loss, r.loss + 1, (size_t)steps * sizeof(float));
    world_close(&w);
    ag_set_threads(1);
}

static void test_same_seed_same_threads_same_bits(void **state) {
    (void)state;
    float a[8], b[8], c[8];
    for (int threads = 1; threads <= 2; threads++) {
        run_losses(5, threads, a, 8);
        run_losses(5, threads, b, 8);
        assert_memory_equal(a, b, sizeof a);
    }
    run_losses(6, 1, c, 8);
    assert_memory_not_equal(a, c, sizeof a);
}

/* The same seed gives the same weights at 1, 2 and 3 threads, with products
 * large enough to be cut into units (ag_sgemm_units) and attention, layer
 * norms and the optimizer run over the threads: every output is computed by
 * a unit fixed by the shapes. Checked on whatever OpenBLAS kernel this machine
 * runs (docs/threading.md: on each kernel, the same bits at any thread count). */
static void train_weights(int threads, float *out, size_t *n) {
    ag_set_threads(threads);
    char err[512];
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = 32;
    tr_dataset *d = NULL;
    if (tr_dataset_open(&d, "builtin:markov", &o, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_config mc = {.n_layer = 2, .n_head = 2, .n_embd = 64, .mlp_ratio = 4, .ctx = 32,
                        .vocab = d->vocab.size, .bias = true, .tied = false};
    tr_gpt m;
    if (tr_gpt_init(&m, &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_init_weights(&m, 9);
    tr_train_config tc = small_run(4);
    tc.batch = 16;
    tc.seed = 9;
    tr_trainer t;
    if (tr_trainer_init(&t, &m, d, &tc, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(tr_train(&t), TR_OK);
    memcpy(out, m.params.data, m.params.n * sizeof(float));
    memcpy(out + m.params.n, m.params.m, m.params.n * sizeof(float));
    *n = 2 * m.params.n;
    tr_trainer_free(&t);
    tr_gpt_free(&m);
    tr_dataset_free(d);
    ag_set_threads(1);
}

static void test_any_thread_count_same_weights(void **state) {
    (void)state;
    /* rows B*T = 512: the qkv, fc and proj products are cut into units */
    assert_true(ag_sgemm_units(16 * 32, 3 * 64, 64).count > 1);
    assert_true(ag_sgemm_units(4 * 64, 64, 16 * 32).count > 1); /* dW of the MLP projection */
    size_t cap = 2 * 200000, n1 = 0, n = 0;
    float *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    train_weights(1, a, &n1);
    assert_true(n1 <= cap);
    for (int th = 2; th <= 3; th++) {
        train_weights(th, b, &n);
        assert_int_equal(n, n1);
        assert_memory_equal(a, b, n * sizeof(float));
    }
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_defaults_are_the_keys),
        cmocka_unit_test(test_learns_and_steps_do_not_allocate),
        cmocka_unit_test(test_divergence_in_loss),
        cmocka_unit_test(test_divergence_in_gradient),
        cmocka_unit_test(test_resume_is_bit_exact),
        cmocka_unit_test(test_resume_needs_the_same_data),
        cmocka_unit_test(test_same_seed_same_threads_same_bits),
        cmocka_unit_test(test_any_thread_count_same_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
