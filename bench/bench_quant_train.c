/* bench_quant_train.c - the cost of a quantization-aware training step
 * against a float step, measured side by side in one process: two trainers
 * on the same model shape and data (builtin:markov), one plain, one with the
 * quant policy made from the keys given after "--" (default: W8A8), their
 * steps alternating so that the load of a shared machine hits both alike.
 * Prints the median step time of each and their ratio (target: QAT <= 1.25x).
 *
 * Configurations: small (6 layers, 6 heads, width 384, ctx 256, batch 8,
 * bias, untied) and baseline (nanoGPT's CPU baseline: 4 layers, 4 heads,
 * width 128, ctx 64, batch 12, no bias, tied).
 *
 * Usage: bench_quant_train [--config small|baseline] [--threads N] [--steps N]
 *                          [-- QUANT KEYS...]   e.g. -- --w-bits 4 --a-bits 8 --granularity group */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "compress/policy.h"
#include "train/trainer.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct side {
    tr_gpt m;
    tr_trainer t;
    cp_set set;
    pare_keys keys;
} side;

static int side_open(side *s, const tr_gpt_config *mc, const tr_dataset *d, int B, int steps, int argc, char **argv,
                     char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    if (tr_gpt_init(&s->m, mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, errlen) != 0) return -1;
    tr_gpt_init_weights(&s->m, 1);
    tr_train_config tc = tr_train_config_default();
    tc.steps = steps + 10, tc.batch = B, tc.eval_every = 0;
    if (tr_trainer_init(&s->t, &s->m, d, &tc, err, errlen) != 0 || cp_set_init(&s->set) != 0) return -1;
    cp_set_keys(&s->set, &s->keys);
    char *av[64] = {"bench"};
    for (int i = 0; i < argc && i < 63; i++) av[i + 1] = argv[i];
    if (pare_opts_parse(s->keys.row, s->keys.n, argc + 1, av, NULL, 0, NULL, err, errlen) != PARE_OPTS_OK ||
        cp_set_create(&s->set, err, errlen) < 0 || cp_set_add(&s->set, &s->t) != 0 || tr_trainer_prepare(&s->t) != 0) {
        if (s->t.err[0]) snprintf(err, errlen, "%s", s->t.err);
        return -1;
    }
    return 0;
}

static void side_close(side *s) {
    tr_trainer_free(&s->t);
    cp_set_free(&s->set);
    pare_opts_free(s->keys.row, s->keys.n);
    tr_gpt_free(&s->m);
}

int main(int argc, char **argv) {
    const char *config = "small";
    int threads = 1, steps = 10, k = 1;
    for (; k < argc && strcmp(argv[k], "--"); k++) {
        if (k + 1 >= argc) break;
        if (!strcmp(argv[k], "--config")) config = argv[++k];
        else if (!strcmp(argv[k], "--threads")) threads = atoi(argv[++k]);
        else if (!strcmp(argv[k], "--steps")) steps = atoi(argv[++k]);
        else {
            fprintf(stderr, "usage: bench_quant_train [--config small|baseline] [--threads N] [--steps N] [-- KEYS]\n");
            return 2;
        }
    }
    char *dflt[] = {"--w-bits", "8", "--a-bits", "8"};
    int qargc = k < argc ? argc - k - 1 : 4;
    char **qargv = k < argc ? argv + k + 1 : dflt;
    tr_gpt_config mc = tr_gpt_config_default();
    int B;
    if (!strcmp(config, "small")) mc.n_layer = 6, mc.n_head = 6, mc.n_embd = 384, mc.ctx = 256, B = 8;
    else if (!strcmp(config, "baseline")) mc.n_layer = 4, mc.n_head = 4, mc.n_embd = 128, mc.ctx = 64, B = 12, mc.bias = false, mc.tied = true;
    else return fprintf(stderr, "bench_quant_train: --config small or baseline\n"), 2;
    if (steps < 1 || threads < 1) return fprintf(stderr, "bench_quant_train: --steps and --threads >= 1\n"), 2;
    ag_set_threads(threads);
    char err[1024];
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_BYTE;
    o.ctx = mc.ctx;
    tr_dataset *d = NULL;
    if (tr_dataset_open(&d, "builtin:markov", &o, err, sizeof err) != 0) return fprintf(stderr, "%s\n", err), 1;
    mc.vocab = d->vocab.size;
    side f, q;
    if (side_open(&f, &mc, d, B, steps, 0, NULL, err, sizeof err) != 0 ||
        side_open(&q, &mc, d, B, steps, qargc, qargv, err, sizeof err) != 0)
        return fprintf(stderr, "bench_quant_train: %s\n", err), 1;
    double *tf = malloc(sizeof(double) * steps), *tq = malloc(sizeof(double) * steps);
    for (int s = -2; s < steps; s++) { /* two warm-up steps each */
        double t0 = ag_now();
        if (tr_train_step(&f.t) != TR_OK) return fprintf(stderr, "float step: %s\n", f.t.err), 1;
        double t1 = ag_now();
        if (tr_train_step(&q.t) != TR_OK) return fprintf(stderr, "QAT step: %s\n", q.t.err), 1;
        double t2 = ag_now();
        if (s >= 0) tf[s] = t1 - t0, tq[s] = t2 - t1;
    }
    qsort(tf, (size_t)steps, sizeof(double), cmp_double);
    qsort(tq, (size_t)steps, sizeof(double), cmp_double);
    double mf = tf[steps / 2], mq = tq[steps / 2];
    printf("%s, %d thread(s), batch %dx%d, keys:", config, threads, B, mc.ctx);
    for (int i = 0; i < qargc; i++) printf(" %s", qargv[i]);
    printf("\n  float step %.4f s, QAT step %.4f s (medians of %d alternating steps): QAT / float = %.3f\n", mf, mq, steps,
           mq / mf);
    printf("RESULT config=%s threads=%d float_step_s=%.5f qat_step_s=%.5f ratio=%.3f\n", config, threads, mf, mq, mq / mf);
    side_close(&f);
    side_close(&q);
    tr_dataset_free(d);
    free(tf), free(tq);
    return 0;
}
