/* cmd_sample.c - `pare sample MODEL`: generate text from a trained model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "train/trainer.h"
#include "cli/runlog.h"

/* The run log: this sampling of exactly these model bytes (its parent is the
 * run that wrote them); generated < 0 = failed. */
static void sample_record(const char *db, const pare_opt *opts, int n, const char *path, int seed, int generated,
                          double secs) {
    char *extra = malloc(strlen(path) + 8);
    if (extra) snprintf(extra, strlen(path) + 8, "model=%s\n", path);
    char *cfg = pare_runlog_config(opts, n, extra);
    static const char *const names[2] = {"tokens", "tokens_per_s"};
    double vals[2] = {generated, generated > 0 && secs > 0 ? generated / secs : NAN};
    pare_runlog_once(db, "sample", cfg, (uint64_t)seed, path, NULL, names, vals, generated >= 0 ? 2 : 0,
                     generated >= 0 ? EX_FINISHED : EX_FAILED);
    free(cfg);
    free(extra);
}

int cmd_sample(int argc, char **argv) {
    static const char *usage = "pare sample CHECKPOINT [--key value ...]";
    const char *prompt, *db;
    int tokens, top_k, seed, threads;
    double temperature;
    bool json;
    pare_opt opts[] = {
        PARE_OPT_STRING("prompt", &prompt, "", "text to continue (\"\" = start from a newline, or token 0)"),
        PARE_OPT_INT("tokens", &tokens, "200", 0, 1000000, "tokens to generate"),
        PARE_OPT_FLOAT("temperature", &temperature, "0.8", 0, 100, "softmax temperature (0 = greedy argmax)"),
        PARE_OPT_INT("top-k", &top_k, "0", 0, 1 << 24, "sample only among the k most likely tokens (0 = all)"),
        PARE_OPT_INT("seed", &seed, "1", 0, 2147483647, "seed of the sampling generator"),
        PARE_OPT_INT("threads", &threads, "1", 0, 1024, "threads (0 = all cores)"),
        PARE_OPT_STRING("db", &db, "", "run log database (\"\" = $PARE_DB, else ./pare.db; none = do not record)"),
        PARE_OPT_FLAG("json", &json, "print {\"prompt\", \"text\"} as one JSON object"),
    };
    int n = (int)(sizeof opts / sizeof opts[0]), pos[1], n_pos = 0;
    int rc = pare_opts_cli("sample", usage, opts, n, argc, argv, pos, 1, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos != 1) {
        fprintf(stderr, "pare sample: expected one checkpoint path\nsee: pare sample --help\n");
        return PARE_EXIT_USAGE;
    }
    const char *path = argv[pos[0]];
    ag_set_threads(pare_threads(threads));
    if (pare_is_model_file(path)) { /* speed: pare bench; here the time would include loading */
        int frc = pare_sample_model_file(path, prompt, tokens, temperature, top_k, seed, json);
        sample_record(db, opts, n, path, seed, frc == PARE_EXIT_OK ? tokens : -1, 0);
        return frc;
    }

    char err[1024];
    tr_gpt m;
    tr_vocab v;
    if (pare_model_open(path, &m, &v, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "pare sample: %s\n", err);
        sample_record(db, opts, n, path, seed, -1, 0);
        return PARE_EXIT_ERROR;
    }
    int status = PARE_EXIT_ERROR, generated = -1;
    double secs = 0;
    size_t np = strlen(prompt);
    int *ids = malloc((np + 1 + (size_t)tokens) * sizeof *ids);
    char *text = malloc(np + 2 + (size_t)tokens);
    ag_ctx *c = ag_ctx_new();
    if (!ids || !text || !c) {
        fprintf(stderr, "pare sample: out of memory\n");
        goto done;
    }
    if (np == 0) {
        ids[0] = v.id['\n'] >= 0 ? v.id['\n'] : 0;
        np = 1;
    } else if (tr_vocab_encode(&v, (const uint8_t *)prompt, np, ids, err, sizeof err) != 0) {
        fprintf(stderr, "pare sample: --prompt: %s\n", err);
        status = PARE_EXIT_USAGE;
        goto done;
    }
    ag_rng rng;
    ag_rng_seed(&rng, (uint64_t)seed);
    double t0 = ag_now();
    int len = tr_generate(c, &m, ids, (int)np, tokens, temperature, top_k, -1, &rng, ids, err, sizeof err);
    if (len < 0) {
        fprintf(stderr, "pare sample: %s\n", err);
        goto done;
    }
    generated = len - (int)np;
    secs = ag_now() - t0;
    tr_vocab_decode(&v, ids, (size_t)len, text);
    if (json) {
        printf("{\"command\":\"sample\",\"prompt\":");
        pare_json_string(stdout, prompt);
        printf(",\"text\":");
        pare_json_string(stdout, text + (prompt[0] ? strlen(prompt) : 0));
        printf(",\"tokens\":%d}\n", len - (int)np);
    } else {
        printf("%s\n", text);
    }
    status = PARE_EXIT_OK;
done:
    sample_record(db, opts, n, path, seed, generated, secs);
    ag_ctx_free(c);
    free(ids);
    free(text);
    tr_gpt_free(&m);
    return status;
}
