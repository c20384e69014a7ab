/* bench_sparse_train.c - what a masked training step costs against a dense
 * one, measured side by side in one process at one thread count:
 *   dense    a plain training step (twice: a second dense model, "control", shows the noise of the
 *            machine between two identical steps)
 *   masked   a step of a model pruned to 90% by magnitude (compress/sparsity.c:
 *            masks in the parameter store, masked gradients zeroed, the
 *            optimizer keeping masked weights and moments at zero, the
 *            policy's per-step sparsity count)
 *   rigl     a RigL step at 90% with a mask update every --every steps
 *            (its dense-gradient copy and update amortised: the mean, not the
 *            median, is compared)
 * Target: masked <= 1.1 x dense. The masked weights are zeros in dense
 * matrices, so the products cost the same: the overhead is the masks' loops.
 * The model is the nanoGPT CPU baseline's (4 layers, 4 heads, width 128,
 * ctx 64, no biases, tied head) on batch 12 x 64 of builtin:markov (the data's
 * content does not change the cost); the three steps run in turns so that
 * they see the same machine load. Each figure is the median (rigl: also the
 * mean) of --reps steps after --warmup.
 *
 * Usage: bench_sparse_train [--threads N] [--reps N] [--warmup N] [--every N]
 * Last line: RESULT threads=N dense_ms=... control_ms=... masked_ms=... rigl_ms=... rigl_mean_ms=... ratio=...
 *            rigl_ratio=... control_ratio=...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "compress/sparsity.h"
#include "train/trainer.h"

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static double mean(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return s / n;
}

static void die(const char *what, const char *err) {
    fprintf(stderr, "bench_sparse_train: %s: %s\n", what, err);
    exit(1);
}

static cp_sparsity_cfg defaults(void) {
    cp_sparsity_cfg c;
    pare_keys k = {.n = 0};
    cp_sparsity_kind.keys(&k, &c);
    char err[256];
    if (pare_opts_defaults(k.row, k.n, err, sizeof err) != 0) die("keys", err);
    return c;
}

int main(int argc, char **argv) {
    int threads = 1, reps = 30, warmup = 3, every = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--every")) every = atoi(argv[i + 1]);
        else die("usage", "bench_sparse_train [--threads N] [--reps N] [--warmup N] [--every N]");
    }
    if (reps < 1 || reps > 100000) reps = 30;
    if (every < 1) every = 10;
    ag_set_threads(threads);
    char err[1024];
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = 64;
    tr_dataset *d;
    if (tr_dataset_open(&d, "builtin:markov", &o, err, sizeof err)) die("data", err);
    tr_gpt_config mc = {.n_layer = 4, .n_head = 4, .n_embd = 128, .mlp_ratio = 4, .ctx = 64,
                        .vocab = d->vocab.size, .bias = false, .tied = true};
    tr_train_config c = tr_train_config_default();
    c.batch = 12;
    c.steps = 1000000;
    tr_gpt m[4];
    tr_trainer t[4];
    for (int i = 0; i < 4; i++) {
        if (tr_gpt_init(&m[i], &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err)) die("model", err);
        tr_gpt_init_weights(&m[i], 2);
        if (tr_trainer_init(&t[i], &m[i], d, &c, err, sizeof err)) die("trainer", err);
    }
    cp_sparsity_cfg mag = defaults(), rig = defaults();
    mag.prune = CP_PRUNE_MAGNITUDE, mag.sparsity = 0.9;
    rig.prune = CP_PRUNE_RIGL, rig.sparsity = 0.9, rig.dst_every = every, rig.dst_end = 900000;
    tr_policy *pm = cp_sparsity_kind.create(&mag, err, sizeof err);
    if (!pm || tr_trainer_add_policy(&t[1], pm)) die("magnitude", pm ? t[1].err : err);
    tr_policy *pr = cp_sparsity_kind.create(&rig, err, sizeof err);
    if (!pr || tr_trainer_add_policy(&t[2], pr)) die("rigl", pr ? t[2].err : err);
    double *x[4];
    for (int i = 0; i < 4; i++) x[i] = malloc(sizeof(double) * (size_t)reps);
    for (int r = -warmup; r < reps; r++)
        for (int i = 0; i < 4; i++) {
            double t0 = ag_now();
            if (tr_train_step(&t[i]) != TR_OK) die("step", t[i].err);
            if (r >= 0) x[i][r] = ag_now() - t0;
        }
    double rmean = 1e3 * mean(x[2], reps);
    double md = 1e3 * median(x[0], reps), mm = 1e3 * median(x[1], reps), mr = 1e3 * median(x[2], reps);
    double dmean = 1e3 * mean(x[0], reps), mctl = 1e3 * median(x[3], reps);
    printf("dense step %.2f ms (control: %.2f ms = %.3fx), masked step (90%% magnitude) %.2f ms = %.3fx, RigL step "
           "(90%%, update every %d) median %.2f ms, mean %.2f ms = %.3fx of the dense mean (%d threads, median of %d)\n",
           md, mctl, mctl / md, mm, mm / md, every, mr, rmean, rmean / dmean, threads, reps);
    printf("RESULT threads=%d dense_ms=%.3f control_ms=%.3f masked_ms=%.3f rigl_ms=%.3f rigl_mean_ms=%.3f ratio=%.3f "
           "rigl_ratio=%.3f control_ratio=%.3f\n", threads, md, mctl, mm, mr, rmean, mm / md, rmean / dmean, mctl / md);
    for (int i = 0; i < 4; i++) {
        free(x[i]);
        tr_trainer_free(&t[i]);
        tr_gpt_free(&m[i]);
    }
    cp_sparsity_kind.destroy(pm);
    cp_sparsity_kind.destroy(pr);
    tr_dataset_free(d);
    return 0;
}
