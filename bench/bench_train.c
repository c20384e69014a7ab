/* bench_train.c - training throughput of pare's GPT: one process, one
 * configuration, one thread count. bench/bench_train.sh runs it beside
 * bench/torch_gpt.py (the same model, batch and step in PyTorch) and prints
 * the ratios.
 *
 * A step is what the trainer does: reset the arena, zero the gradients,
 * forward, cross-entropy, backward, global-norm clipping to 1, AdamW
 * (lr 1e-3, betas 0.9/0.95, weight decay 0.1 on matrices and embeddings).
 * Batches are uniform random token ids from a fixed seed (the speed does not
 * depend on the values).
 *
 * Configurations (issue 3):
 *   small: 6 layers, 6 heads, width 384, ctx 256, batch 8, vocab 256
 *   tiny:  4 layers, 4 heads, width 128, ctx 128, batch 16, vocab 256
 *
 * Prints a readable line and a last line for scripts:
 *   RESULT impl=pare config=small threads=2 tokens_per_s=... step_s=... rss_mib=... loss=...
 * where tokens_per_s = B*T / median step time over --steps steps (after
 * --warmup steps) and rss_mib is the process's peak resident set size.
 *
 * Usage: bench_train [--config small|tiny] [--threads N] [--steps N] [--warmup N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "autograd/optim.h"
#include "autograd/parallel.h"
#include "train/data.h"
#include "train/gpt.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int usage(const char *msg) {
    fprintf(stderr, "bench_train: %s\nusage: bench_train [--config small|tiny] [--threads N] [--steps N] [--warmup N]\n",
            msg);
    return 2;
}

int main(int argc, char **argv) {
    const char *config = "small";
    int threads = 1, steps = 10, warmup = 2;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) return usage("every option takes a value");
        const char *k = argv[i], *v = argv[++i];
        char *end;
        long n = strtol(v, &end, 10);
        if (strcmp(k, "--config") == 0) {
            config = v;
            continue;
        }
        if (*end || n < 0 || n > 100000) return usage("a count must be an integer in [0, 100000]");
        if (strcmp(k, "--threads") == 0 && n >= 1)
            threads = (int)n;
        else if (strcmp(k, "--steps") == 0 && n >= 1)
            steps = (int)n;
        else if (strcmp(k, "--warmup") == 0)
            warmup = (int)n;
        else
            return usage("unknown option or bad value");
    }
    tr_gpt_config cfg = tr_gpt_config_default();
    int B;
    if (strcmp(config, "small") == 0) {
        cfg.n_layer = 6, cfg.n_head = 6, cfg.n_embd = 384, cfg.ctx = 256, B = 8;
    } else if (strcmp(config, "tiny") == 0) {
        cfg.n_layer = 4, cfg.n_head = 4, cfg.n_embd = 128, cfg.ctx = 128, B = 16;
    } else {
        return usage("--config must be small or tiny");
    }
    cfg.vocab = 256, cfg.mlp_ratio = 4, cfg.bias = true, cfg.tied = false;
    int T = cfg.ctx;
    ag_set_threads(threads);

    char err[512];
    tr_gpt m;
    if (tr_gpt_init(&m, &cfg, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) {
        fprintf(stderr, "bench_train: %s\n", err);
        return 1;
    }
    tr_gpt_init_weights(&m, 1);
    ag_optim o;
    ag_optim_adamw(&o, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f);
    ag_optim_set_group(&o, TR_GROUP_NO_DECAY, 0.0f, 1.0f);
    ag_ctx *c = ag_ctx_new();
    int *x = malloc(sizeof(int) * (size_t)B * T), *y = malloc(sizeof(int) * (size_t)B * T);
    double *times = malloc(sizeof(double) * (size_t)steps);
    if (!c || !x || !y || !times) {
        fprintf(stderr, "bench_train: out of memory\n");
        return 1;
    }
    ag_rng r;
    ag_rng_seed(&r, 7);
    float loss_v = 0.0f;
    for (int s = 0; s < warmup + steps; s++) {
        for (int i = 0; i < B * T; i++) {
            x[i] = (int)ag_rng_below(&r, (uint64_t)cfg.vocab);
            y[i] = (int)ag_rng_below(&r, (uint64_t)cfg.vocab);
        }
        double t0 = now();
        ag_ctx_reset(c);
        ag_params_zero_grad(&m.params);
        ag_tensor *logits = tr_gpt_forward(c, &m, x, B, T, NULL);
        ag_tensor *loss = ag_cross_entropy(c, logits, y, TR_IGNORE);
        if (!loss || ag_backward(c, loss) != 0 || ag_clip_grad_norm(&m.params, 1.0, NULL, err, sizeof err) != 0 ||
            ag_optim_step(&o, &m.params, err, sizeof err) != 0) {
            fprintf(stderr, "bench_train: step %d failed: %s\n", s, ag_error(c) ? ag_error(c) : err);
            return 1;
        }
        loss_v = loss->data[0];
        if (s >= warmup) times[s - warmup] = now() - t0;
    }
    qsort(times, (size_t)steps, sizeof(double), cmp_double);
    double med = steps % 2 ? times[steps / 2] : 0.5 * (times[steps / 2 - 1] + times[steps / 2]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss = (double)ru.ru_maxrss / 1024.0; /* KiB on Linux */
    double tps = (double)B * T / med;
    printf("pare %s (%zu params), %d thread(s), batch %dx%d: %.0f tokens/s (median step %.4f s over %d, after %d "
           "warm-up), peak RSS %.1f MiB\n",
           config, ag_params_numel(&m.params), threads, B, T, tps, med, steps, warmup, rss);
    printf("RESULT impl=pare config=%s threads=%d tokens_per_s=%.1f step_s=%.5f rss_mib=%.1f loss=%.4f\n", config,
           threads, tps, med, rss, (double)loss_v);
    free(times);
    free(x);
    free(y);
    ag_ctx_free(c);
    tr_gpt_free(&m);
    return 0;
}
