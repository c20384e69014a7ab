/* parity_gpt.c - writes what tests/parity/torch_gpt_parity.py compares with
 * PyTorch: for each of two small GPT configurations, the weights, a batch,
 * pare's logits, loss and every parameter gradient, and the losses of 10
 * AdamW steps (with gradient clipping) on that batch, plus the final weights.
 *
 * Usage: parity_gpt OUT_DIR   (writes OUT_DIR/parity_<name>.bin)
 *
 * File format (little-endian): the 8 bytes "PRTY0001", then records until
 * the end of the file, each: u32 name length, the name, u8 type (0 float32,
 * 1 int32), u32 ndim, u32 dims[ndim], then the elements.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/optim.h"
#include "train/data.h"
#include "train/gpt.h"

typedef struct parity_case {
    const char *name;
    tr_gpt_config cfg;
    int B, T;
} parity_case;

/* AdamW hyperparameters shared with the Python side through the file. */
static const float LR = 1e-2f, BETA1 = 0.9f, BETA2 = 0.95f, EPS = 1e-8f, WD = 0.1f, CLIP = 1.0f;
enum { STEPS = 10 };

static int put(FILE *f, const char *name, int type, int ndim, const int *dims, const void *data) {
    uint32_t n = (uint32_t)strlen(name), nd = (uint32_t)ndim;
    uint8_t t = (uint8_t)type;
    size_t count = 1;
    if (fwrite(&n, 4, 1, f) != 1 || fwrite(name, 1, n, f) != n || fwrite(&t, 1, 1, f) != 1 || fwrite(&nd, 4, 1, f) != 1)
        return -1;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = (uint32_t)dims[i];
        if (fwrite(&d, 4, 1, f) != 1) return -1;
        count *= (size_t)dims[i];
    }
    return fwrite(data, 4, count, f) == count ? 0 : -1;
}

static int put_params(FILE *f, tr_gpt *m, const char *prefix, int grad) {
    char name[160];
    for (int i = 0; i < m->params.count; i++) {
        ag_tensor *t = ag_param(&m->params, i);
        snprintf(name, sizeof name, "%s%s", prefix, m->params.names[i]);
        if (put(f, name, 0, t->ndim, t->shape, grad ? t->grad : t->data) != 0) return -1;
    }
    return 0;
}

/* Forward on (ids, targets) and backward; returns the loss tensor or NULL. */
static ag_tensor *forward_backward(ag_ctx *c, tr_gpt *m, const int *ids, const int *tg, int B, int T,
                                   ag_tensor **logits) {
    if (ag_ctx_reset(c) != 0) return NULL;
    ag_params_zero_grad(&m->params);
    ag_tensor *lg = tr_gpt_forward(c, m, ids, B, T, NULL);
    ag_tensor *loss = ag_cross_entropy(c, lg, tg, TR_IGNORE);
    if (!loss || ag_backward(c, loss) != 0) return NULL;
    if (logits) *logits = lg;
    return loss;
}

static int run_case(const parity_case *pc, const char *dir) {
    char err[512], path[1024];
    tr_gpt m;
    if (tr_gpt_init(&m, &pc->cfg, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) {
        fprintf(stderr, "parity_gpt: %s: %s\n", pc->name, err);
        return -1;
    }
    /* GPT-2 initialisation, then noise on every tensor so biases and gains
     * are not 0 and 1 and every gradient path is exercised */
    tr_gpt_init_weights(&m, 1234);
    ag_rng r;
    ag_rng_seed(&r, 99);
    for (int i = 0; i < m.params.count; i++) {
        ag_tensor *t = ag_param(&m.params, i);
        for (size_t j = 0; j < t->numel; j++) t->data[j] += 0.1f * (ag_rng_uniform(&r) - 0.5f);
    }
    int B = pc->B, T = pc->T, V = pc->cfg.vocab;
    int *ids = malloc(sizeof(int) * (size_t)B * T), *tg = malloc(sizeof(int) * (size_t)B * T);
    for (int i = 0; i < B * T; i++) {
        ids[i] = (int)ag_rng_below(&r, (uint64_t)V);
        tg[i] = ag_rng_below(&r, 8) == 0 ? TR_IGNORE : (int)ag_rng_below(&r, (uint64_t)V);
    }
    snprintf(path, sizeof path, "%s/parity_%s.bin", dir, pc->name);
    FILE *f = fopen(path, "wb");
    ag_ctx *c = ag_ctx_new();
    int rc = -1;
    if (!f || !c) {
        fprintf(stderr, "parity_gpt: cannot create %s\n", path);
        goto done;
    }
    const tr_gpt_config *g = &pc->cfg;
    int cfgv[10] = {g->n_layer, g->n_head, g->n_embd, g->mlp_ratio, g->ctx, g->vocab, g->bias, g->tied, B, T};
    float hyper[6] = {LR, BETA1, BETA2, EPS, WD, CLIP};
    int d10 = 10, d6 = 6, dbt[2] = {B, T}, one = 1, dsteps = STEPS + 1;
    fwrite("PRTY0001", 1, 8, f);
    if (put(f, "config", 1, 1, &d10, cfgv) || put(f, "hyper", 0, 1, &d6, hyper) || put(f, "ids", 1, 2, dbt, ids) ||
        put(f, "targets", 1, 2, dbt, tg) || put_params(f, &m, "param/", 0))
        goto io;

    ag_tensor *logits = NULL;
    ag_tensor *loss = forward_backward(c, &m, ids, tg, B, T, &logits);
    if (!loss) {
        fprintf(stderr, "parity_gpt: %s: forward/backward failed: %s\n", pc->name, ag_error(c) ? ag_error(c) : "");
        goto done;
    }
    if (put(f, "logits", 0, logits->ndim, logits->shape, logits->data) || put(f, "loss", 0, 1, &one, loss->data) ||
        put_params(f, &m, "grad/", 1))
        goto io;

    /* 10 AdamW steps on the same batch; matrices and embeddings decay, gains
     * and biases do not (tr_gpt's groups) */
    ag_optim o;
    ag_optim_adamw(&o, LR, BETA1, BETA2, EPS, WD);
    ag_optim_set_group(&o, TR_GROUP_NO_DECAY, 0.0f, 1.0f);
    float losses[STEPS + 1];
    for (int s = 0; s <= STEPS; s++) {
        loss = forward_backward(c, &m, ids, tg, B, T, NULL);
        if (!loss) {
            fprintf(stderr, "parity_gpt: %s: step %d failed: %s\n", pc->name, s, ag_error(c) ? ag_error(c) : "");
            goto done;
        }
        losses[s] = loss->data[0];
        if (s == STEPS) break;
        if (ag_clip_grad_norm(&m.params, CLIP, NULL, err, sizeof err) != 0 ||
            ag_optim_step(&o, &m.params, err, sizeof err) != 0) {
            fprintf(stderr, "parity_gpt: %s: step %d: %s\n", pc->name, s, err);
            goto done;
        }
    }
    if (put(f, "adamw_losses", 0, 1, &dsteps, losses) || put_params(f, &m, "final/", 0)) goto io;
    printf("parity_gpt: %s: loss %.6f, after %d AdamW steps %.6f -> %s\n", pc->name, losses[0], STEPS,
           losses[STEPS], path);
    rc = 0;
    goto done;
io:
    fprintf(stderr, "parity_gpt: writing %s failed\n", path);
done:
    if (f && fclose(f) != 0) rc = -1;
    ag_ctx_free(c);
    free(ids);
    free(tg);
    tr_gpt_free(&m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: parity_gpt OUT_DIR\n");
        return 2;
    }
    /* T < ctx in both, so the position-embedding slice is exercised */
    parity_case cases[] = {
        {"bias_untied", {.n_layer = 2, .n_head = 4, .n_embd = 32, .mlp_ratio = 4, .ctx = 16, .vocab = 40,
                         .bias = true, .tied = false}, 3, 14},
        {"nobias_tied", {.n_layer = 2, .n_head = 2, .n_embd = 24, .mlp_ratio = 4, .ctx = 12, .vocab = 30,
                         .bias = false, .tied = true}, 2, 11},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (run_case(&cases[i], argv[1]) != 0) return 1;
    return 0;
}
