/* make_ckpt_corpus.c - writes the seed corpus of fuzz_ckpt into a directory:
 * small real training states saved by the trainer, each with the stored
 * configuration `pare train` records (so the fuzzer's resume rebuilds the
 * same run): char and byte vocabularies, markov and the tasks, biases or
 * none, tied or untied heads, one and two layers; with the compression
 * policies' sections (masks and SPRS of magnitude pruning, RigL's SPRS,
 * QUNT of quantization-aware training, LSQ's learned scales in PTEN, a
 * factorized model's ranks, a distillation run); the old MODL layout; and
 * truncations of a plain one (inside the header, the header alone, inside a
 * section header, halfway, one and four bytes short). Usage:
 * make_ckpt_corpus DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "compress/lowrank.h"
#include "compress/policy.h"
#include "keys/options.h"
#include "train/keys.h"
#include "train/trainer.h"

/* One run's keys, as `pare train` assembles them (data, model, training,
 * the policies). */
typedef struct run_keys {
    pare_keys k;
    const char *spec;
    tr_data_opts dopt;
    tr_gpt_config model;
    tr_train_config train;
    cp_set set;
} run_keys;

/* Trains the run args[0, n) ask for ("--key", "value" pairs on top of small
 * defaults) and saves its final state to dir/name.ckpt; with factorize, the
 * model is factorized by the lowrank keys before training (as `pare train
 * --init --rank` does). Returns 0, or -1 with the reason printed. */
static int write_run(const char *dir, const char *name, const char *const *args, int n, int factorize) {
    static const char *const base[] = {"make_ckpt_corpus", "--vocab", "char", "--n-layer", "1", "--n-head", "1",
                                       "--n-embd", "8", "--mlp-ratio", "1", "--ctx", "8", "--steps", "3", "--batch",
                                       "2", "--eval-batches", "1", "--eval-every", "0", "--warmup", "1"};
    const int nb = (int)(sizeof base / sizeof base[0]);
    char *argv[64];
    if (nb + n > 64) return -1;
    for (int i = 0; i < nb; i++) argv[i] = (char *)base[i];
    for (int i = 0; i < n; i++) argv[nb + i] = (char *)args[i];
    char err[1024], path[4096];
    snprintf(path, sizeof path, "%s/%s.ckpt", dir, name);
    run_keys r;
    memset(&r, 0, sizeof r);
    tr_dataset *d = NULL;
    tr_gpt m = {0};
    tr_trainer t = {0};
    char *conf = NULL;
    int rc = -1;
    bool trainer = false;
    if (cp_set_init(&r.set) != 0) {
        snprintf(err, sizeof err, "out of memory");
        goto out;
    }
    tr_data_keys(&r.k, &r.spec, &r.dopt);
    tr_model_keys(&r.k, &r.model);
    tr_train_keys(&r.k, &r.train);
    cp_set_keys(&r.set, &r.k);
    if (pare_opts_parse(r.k.row, r.k.n, nb + n, argv, NULL, 0, NULL, err, sizeof err) != PARE_OPTS_OK) goto out;
    r.dopt.ctx = r.model.ctx;
    if (tr_dataset_open(&d, r.spec, &r.dopt, err, sizeof err) != 0) goto out;
    r.model.vocab = d->vocab.size;
    if (tr_gpt_init(&m, &r.model, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) goto out;
    tr_gpt_init_weights(&m, r.train.seed);
    if (factorize && cp_lowrank_init_model(&r.set, &m, err, sizeof err) != 0) goto out;
    r.train.out = path;
    trainer = true;
    if (tr_trainer_init(&t, &m, d, &r.train, err, sizeof err) != 0) goto out;
    size_t need = pare_opts_format(r.k.row, r.k.n, NULL, 0) + 1;
    conf = malloc(need);
    if (!conf) {
        snprintf(err, sizeof err, "out of memory");
        goto out;
    }
    pare_opts_format(r.k.row, r.k.n, conf, need);
    t.config_text = conf;
    if (cp_set_create(&r.set, err, sizeof err) < 0) goto out;
    if (cp_set_add(&r.set, &t) != 0 || tr_train(&t) != TR_OK) {
        snprintf(err, sizeof err, "%s", t.err);
        goto out;
    }
    rc = 0;
out:
    if (rc != 0) fprintf(stderr, "make_ckpt_corpus: %s: %s\n", name, err);
    if (trainer) tr_trainer_free(&t);
    tr_gpt_free(&m);
    tr_dataset_free(d);
    cp_set_free(&r.set);
    free(conf);
    return rc;
}

/* Reads the whole file at path into a new buffer (*len bytes), or NULL. */
static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *b = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (b = malloc((size_t)n + 1)) &&
            fread(b, 1, (size_t)n, f) != (size_t)n) {
            free(b);
            b = NULL;
        }
        *len = (size_t)n;
    }
    fclose(f);
    return b;
}

/* Writes b[0, n) to path. Returns 0, or -1. */
static int write_bytes(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int rc = fwrite(b, 1, n, f) == n ? 0 : -1;
    return fclose(f) == 0 ? rc : -1;
}

/* dir/name_trunc_K.ckpt: the first cut[K] bytes of src, for each cut below
 * its length. Returns how many were written, or -1. */
static int write_truncations(const char *dir, const char *src, const char *name) {
    size_t len = 0;
    uint8_t *b = read_all(src, &len);
    if (!b) return -1;
    size_t cut[6] = {20, TR_CKPT_HEADER, TR_CKPT_HEADER + 10, len / 2, len - 1, len - 4};
    int n = 0;
    for (int i = 0; i < 6; i++) {
        if (cut[i] >= len) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s_trunc_%d.ckpt", dir, name, i);
        if (write_bytes(path, b, cut[i]) != 0) {
            free(b);
            return -1;
        }
        n++;
    }
    free(b);
    return n;
}

/* dst = src with its ARCH section replaced by the MODL section of
 * checkpoints written before per-layer shapes (n_layer, n_head, n_embd,
 * mlp_ratio, ctx, vocab, flags; src's model must be uniform). Returns 0, or
 * -1 with the reason printed. */
static int write_modl(const char *src, const char *dst) {
    tr_ckpt_file f;
    char err[1024];
    if (tr_ckpt_read(&f, src, err, sizeof err) != 0) {
        fprintf(stderr, "make_ckpt_corpus: %s\n", err);
        return -1;
    }
    pm_arch a;
    tr_vocab v;
    if (tr_ckpt_read_meta(&f, &a, &v, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "make_ckpt_corpus: %s\n", err);
        tr_ckpt_close(&f);
        return -1;
    }
    tr_ckpt_writer w;
    tr_ckpt_writer_init(&w);
    for (int i = 0; i < f.n_sections; i++) {
        const tr_ckpt_section *s = &f.sec[i];
        if (strcmp(s->tag, "ARCH") != 0) {
            tr_ckpt_begin(&w, s->tag);
            tr_wr_bytes(&w, s->data, (size_t)s->len);
            continue;
        }
        tr_ckpt_begin(&w, "MODL");
        uint32_t fields[7] = {(uint32_t)a.n_layer, (uint32_t)a.n_head[0], (uint32_t)a.n_embd,
                              (uint32_t)(a.n_hidden[0] / a.n_embd), (uint32_t)a.ctx, (uint32_t)a.vocab,
                              (a.bias ? 1u : 0u) | (a.tied ? 2u : 0u)};
        for (int k = 0; k < 7; k++) tr_wr_u32(&w, fields[k]);
    }
    pm_arch_free(&a);
    tr_ckpt_close(&f);
    int rc = tr_ckpt_write(&w, dst, err, sizeof err);
    if (rc != 0) fprintf(stderr, "make_ckpt_corpus: %s\n", err);
    tr_ckpt_writer_free(&w);
    return rc;
}

/* Leaves every linear site but h.0.mlp.proj in float. */
#define QUANT_ONLY_MPROJ "h.0.attn.*=off;h.0.mlp.fc=off"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_ckpt_corpus DIR\n");
        return 2;
    }
    ag_set_threads(1);
    const char *dir = argv[1];
    char teacher[4096], path[4096];
    snprintf(teacher, sizeof teacher, "%s/plain_markov.ckpt", dir);
    struct {
        const char *name;
        const char *args[24];
        int factorize;
    } runs[] = {
        {"plain_markov", {NULL}, 0},
        {"byte_tied_nobias", {"--vocab", "byte", "--tied", "true", "--bias", "false", "--n-embd", "4", NULL}, 0},
        {"reverse_2layer", {"--data", "builtin:reverse", "--ctx", "17", "--n-layer", "2", "--n-head", "2", NULL}, 0},
        {"sort_tied", {"--data", "builtin:sort", "--ctx", "17", "--tied", "true", "--mlp-ratio", "2", NULL}, 0},
        {"copy_seed", {"--data", "builtin:copy", "--ctx", "17", "--data-seed", "7", "--seed", "9", NULL}, 0},
        {"magnitude_masks", {"--prune", "magnitude", "--sparsity", "0.5", "--prune-start", "1", NULL}, 0},
        {"rigl", {"--prune", "rigl", "--sparsity", "0.5", "--dst-every", "1", NULL}, 0},
        {"heads_pruned", {"--n-head", "2", "--prune", "heads", "--sparsity", "0.5", "--prune-start", "1", NULL}, 0},
        /* integer products need input widths that are multiples of 32: the MLP's projection (8 x 4) */
        {"quant_w8a8", {"--mlp-ratio", "4", "--w-bits", "8", "--a-bits", "8", "--quant-override", QUANT_ONLY_MPROJ,
                        NULL}, 0},
        {"quant_w4_group_lsq", {"--mlp-ratio", "4", "--w-bits", "4", "--a-bits", "8", "--granularity", "group",
                                "--group-size", "32", "--lsq", "true", "--symmetric", "false", "--quant-override",
                                QUANT_ONLY_MPROJ, NULL}, 0},
        {"lowrank_rank2", {"--rank", "2", NULL}, 1},
        {"distill", {"--teacher", teacher, "--attn-weight", "1", "--hidden-weight", "1", NULL}, 0},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        int na = 0;
        while (runs[i].args[na]) na++;
        if (write_run(dir, runs[i].name, runs[i].args, na, runs[i].factorize) != 0) return 1;
        n++;
    }
    snprintf(path, sizeof path, "%s/modl_markov.ckpt", dir);
    if (write_modl(teacher, path) != 0) return 1;
    n++;
    int nt = write_truncations(dir, teacher, "plain_markov");
    if (nt < 0) {
        fprintf(stderr, "make_ckpt_corpus: cannot write the truncations of %s\n", teacher);
        return 1;
    }
    n += nt;
    printf("make_ckpt_corpus: wrote %d files to %s\n", n, dir);
    return 0;
}
