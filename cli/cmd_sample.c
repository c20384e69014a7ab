/* cmd_sample.c - `pare sample MODEL`: generate text from a trained model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/textgen.h"
#include "train/trainer.h"
#include "train/sampler.h"
#include "cli/runlog.h"

/* The run log: this sampling of exactly these model bytes (its parent is the
 * run that wrote them); generated < 0 = failed. */
static void sample_record(const char *db, const char *name, const pare_opt *opts, int n, const char *path, uint64_t seed, int generated,
                          double secs) {
    char *extra = malloc(strlen(path) + 8);
    if (extra) snprintf(extra, strlen(path) + 8, "model=%s\n", path);
    char *cfg = pare_runlog_config(opts, n, extra);
    static const char *const names[2] = {"tokens", "tokens_per_s"};
    double vals[2] = {generated, generated > 0 && secs > 0 ? generated / secs : NAN};
    pare_runlog_once(db, "sample", name, cfg, seed, path, NULL, names, vals, generated >= 0 ? 2 : 0,
                     generated >= 0 ? EX_FINISHED : EX_FAILED);
    free(cfg);
    free(extra);
}

int cmd_sample(int argc, char **argv) {
    static const char *usage = "pare sample CHECKPOINT [--key value ...]";
    const char *db, *run_name;
    tr_sample_opts g;
    int threads;
    bool json;
    pare_keys keys = {.n = 0};
    tr_sample_keys(&keys, &g);
    pare_keys_threads(&keys, &threads);
    ex_log_keys(&keys, &db, &run_name);
    pare_keys_json(&keys, &json, "print {\"prompt\", \"text\", \"tokens\", \"seconds\"} as one JSON object");
    pare_opt *opts = keys.row;
    int n = keys.n, pos[1], n_pos = 0;
    int rc = pare_keys_cli("sample", usage, &keys, argc, argv, pos, 1, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos != 1) {
        pare_report_error("pare sample: expected one checkpoint path\nsee: pare sample --help\n");
        pare_opts_free(opts, n);
        return PARE_EXIT_USAGE;
    }
    const char *path = argv[pos[0]];
    ag_set_threads(pare_threads(threads));
    if (pare_is_model_file(path)) { /* speed: pare bench; here the time would include loading */
        int frc = pare_sample_model_file(path, &g, json);
        sample_record(db, run_name, opts, n, path, g.seed, frc == PARE_EXIT_OK ? g.tokens : -1, 0);
        pare_opts_free(opts, n);
        return frc;
    }

    char err[1024];
    tr_gpt m;
    tr_vocab v;
    if (pare_model_open(path, &m, &v, NULL, err, sizeof err) != 0) {
        pare_report_error("pare sample: %s\n", err);
        sample_record(db, run_name, opts, n, path, g.seed, -1, 0);
        pare_opts_free(opts, n);
        return PARE_EXIT_ERROR;
    }
    int generated = -1;
    double secs = 0;
    pare_gen_text gt;
    ag_ctx *c = ag_ctx_new();
    int status = pare_gen_begin(&gt, "sample", &v, g.prompt, g.tokens);
    if (status == PARE_EXIT_OK && !c) {
        pare_report_error("pare sample: out of memory\n");
        status = PARE_EXIT_ERROR;
    }
    if (status != PARE_EXIT_OK) goto done;
    ag_rng rng;
    ag_rng_seed(&rng, g.seed);
    double t0 = ag_now();
    int len = tr_generate(c, &m, gt.ids, gt.n_prompt, g.tokens, g.temperature, g.top_k, -1, &rng, gt.ids, err,
                          sizeof err);
    secs = ag_now() - t0;
    if (len < 0) {
        pare_report_error("pare sample: %s\n", err);
        status = PARE_EXIT_ERROR;
        goto done;
    }
    generated = len - gt.n_prompt;
    pare_gen_print(&gt, "sample", &v, g.prompt, len, secs, json, false);
done:
    sample_record(db, run_name, opts, n, path, g.seed, generated, secs);
    ag_ctx_free(c);
    pare_gen_free(&gt);
    tr_gpt_free(&m);
    pare_opts_free(opts, n);
    return status;
}
