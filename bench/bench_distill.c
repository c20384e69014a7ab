/* bench_distill.c - what a distillation step costs, measured side by side in
 * one process at one thread count:
 *   student    a plain training step of the student
 *   teacher    the teacher's forward on the same batch in inference mode
 *              (grad mode off: no tape, no gradients), as the trainer runs it
 *   eval       the teacher's forward as `pare eval` runs it (tr_evaluate)
 *   distill    a distillation step: logit + attention (attn-kind) + hidden terms
 * and prints the ratio distill / (student + teacher) (target <= 1.1) and
 * teacher / eval per token (target <= 1). Each figure is the median of
 * --reps steps after --warmup, the four measured in turns so that they see
 * the same machine load.
 *
 * The models are the study's: a teacher of 6 layers, 6 heads, width 192,
 * ctx 128, and a student of the nanoGPT baseline's size (4 layers, width 128; 2 heads, a
 * count that divides the teacher's 6, so attention terms can pair heads)
 * on batch 12 x ctx 64 of builtin:markov (the data's content does not change
 * the cost). Weights are random: the cost does not depend on them.
 *
 * Usage: bench_distill [--threads N] [--reps N] [--warmup N] [--attn-kind mse|kl|relation]
 * Last line: RESULT threads=N student_ms=... teacher_ms=... eval_ms=... distill_ms=... ratio=... teacher_vs_eval=...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/parallel.h"
#include "compress/distill.h"
#include "train/trainer.h"

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static void die(const char *what, const char *err) {
    fprintf(stderr, "bench_distill: %s: %s\n", what, err);
    exit(1);
}

int main(int argc, char **argv) {
    int threads = 1, reps = 9, warmup = 2, kind = CP_ATTN_MSE;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--attn-kind")) kind = !strcmp(argv[i + 1], "kl") ? CP_ATTN_KL : !strcmp(argv[i + 1], "relation") ? CP_ATTN_RELATION : CP_ATTN_MSE;
        else die("usage", "bench_distill [--threads N] [--reps N] [--warmup N] [--attn-kind mse|kl|relation]");
    }
    if (reps < 1 || reps > 1000) reps = 9;
    ag_set_threads(threads);
    char err[1024];
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = 64;
    tr_dataset *d;
    if (tr_dataset_open(&d, "builtin:markov", &o, err, sizeof err)) die("data", err);
    /* the teacher, saved so the policy loads it as pare train would */
    tr_gpt_config tc = {.n_layer = 6, .n_head = 6, .n_embd = 192, .mlp_ratio = 4, .ctx = 128,
                        .vocab = d->vocab.size, .bias = true, .tied = false};
    tr_gpt_config sc = {.n_layer = 4, .n_head = 2, .n_embd = 128, .mlp_ratio = 4, .ctx = 64,
                        .vocab = d->vocab.size, .bias = true, .tied = false};
    char tpath[128];
    snprintf(tpath, sizeof tpath, "/tmp/bench_distill_%d.ckpt", (int)getpid());
    {
        tr_gpt t;
        if (tr_gpt_init(&t, &tc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err)) die("teacher", err);
        tr_gpt_init_weights(&t, 1);
        tr_train_config c = tr_train_config_default();
        c.batch = 12;
        tr_trainer tt;
        if (tr_trainer_init(&tt, &t, d, &c, err, sizeof err)) die("teacher", err);
        if (tr_trainer_save(&tt, tpath)) die("teacher", tt.err);
        tr_trainer_free(&tt);
        tr_gpt_free(&t);
    }
    tr_train_config c = tr_train_config_default();
    c.batch = 12;
    c.steps = 1000000;
    tr_gpt s1, s2;
    if (tr_gpt_init(&s1, &sc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) ||
        tr_gpt_init(&s2, &sc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err))
        die("student", err);
    tr_gpt_init_weights(&s1, 2);
    tr_gpt_init_weights(&s2, 2);
    tr_trainer plain, dist;
    if (tr_trainer_init(&plain, &s1, d, &c, err, sizeof err) || tr_trainer_init(&dist, &s2, d, &c, err, sizeof err))
        die("trainer", err);
    cp_distill_cfg dc = {.teacher = tpath, .kd_temp = 2, .kd_alpha = 0.5, .attn_weight = 1, .attn_kind = kind,
                         .hidden_weight = 1, .layer_map = ""};
    tr_policy *p = cp_distill_kind.create(&dc, err, sizeof err);
    if (!p || tr_trainer_add_policy(&dist, p) || tr_trainer_prepare(&dist)) die("distill", p ? dist.err : err);
    tr_gpt *teacher = dist.teacher;
    ag_ctx *ctx = ag_ctx_new();
    tr_batch vb;
    if (tr_batch_init(&vb, 12, 64, err, sizeof err)) die("batch", err);
    double *ts = malloc(sizeof(double) * (size_t)reps), *tt = malloc(sizeof(double) * (size_t)reps);
    double *te = malloc(sizeof(double) * (size_t)reps), *td = malloc(sizeof(double) * (size_t)reps);
    for (int r = -warmup; r < reps; r++) {
        double t0 = ag_now();
        if (tr_train_step(&plain) != TR_OK) die("student step", plain.err);
        double t1 = ag_now();
        /* the teacher's forward as the trainer runs it: grad mode off on the step's batch */
        ag_ctx_reset(ctx);
        bool prev = ag_set_grad(ctx, false);
        ag_tensor *lg = tr_gpt_forward(ctx, teacher, plain.batch.x, 12, 64, NULL);
        ag_set_grad(ctx, prev);
        if (!lg) die("teacher forward", ag_error(ctx));
        double t2 = ag_now();
        tr_eval ev;
        if (tr_evaluate(ctx, teacher, NULL, d, &vb, 1, &ev, err, sizeof err)) die("eval", err);
        double t3 = ag_now();
        if (tr_train_step(&dist) != TR_OK) die("distill step", dist.err);
        double t4 = ag_now();
        if (r < 0) continue;
        ts[r] = t1 - t0, tt[r] = t2 - t1, te[r] = t3 - t2, td[r] = t4 - t3;
    }
    double ms = 1e3 * median(ts, reps), mt = 1e3 * median(tt, reps), me = 1e3 * median(te, reps),
           md = 1e3 * median(td, reps);
    printf("student step %.2f ms, teacher forward %.2f ms, eval batch %.2f ms, distillation step %.2f ms (%d threads, "
           "attn-kind %d, median of %d)\n", ms, mt, me, md, threads, kind, reps);
    printf("RESULT threads=%d student_ms=%.3f teacher_ms=%.3f eval_ms=%.3f distill_ms=%.3f ratio=%.3f teacher_vs_eval=%.3f\n",
           threads, ms, mt, me, md, md / (ms + mt), mt / me);
    unlink(tpath);
    free(ts), free(tt), free(te), free(td);
    tr_batch_free(&vb);
    ag_ctx_free(ctx);
    tr_trainer_free(&plain);
    tr_trainer_free(&dist);
    cp_distill_kind.destroy(p);
    tr_gpt_free(&s1);
    tr_gpt_free(&s2);
    tr_dataset_free(d);
    return 0;
}
