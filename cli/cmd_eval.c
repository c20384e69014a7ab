/* cmd_eval.c - `pare eval MODEL`: loss (beside the data's floor) and, for
 * built-in tasks, exact-match accuracy on fixed validation batches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "train/trainer.h"
#include "cli/runlog.h"

int cmd_eval(int argc, char **argv) {
    static const char *usage = "pare eval CHECKPOINT [--key value ...]";
    const char *data, *db;
    int batches, batch, data_seed, threads;
    bool json;
    pare_opt opts[] = {
        PARE_OPT_STRING("data", &data, "", "text file or builtin:NAME (\"\" = the data the model was trained on)"),
        PARE_OPT_INT("data-seed", &data_seed, "1234", 0, 2147483647, "seed of a built-in dataset's generator"),
        PARE_OPT_INT("batches", &batches, "50", 1, 1000000, "fixed validation batches"),
        PARE_OPT_INT("batch", &batch, "16", 1, 1 << 20, "sequences per batch"),
        PARE_OPT_INT("threads", &threads, "0", 0, 1024, "threads (0 = all cores)"),
        PARE_OPT_STRING("db", &db, "", "run log database (\"\" = $PARE_DB, else ./pare.db; none = do not record)"),
        PARE_OPT_FLAG("json", &json, "print the result as one JSON object"),
    };
    int n = (int)(sizeof opts / sizeof opts[0]), pos[1], n_pos = 0;
    int rc = pare_opts_cli("eval", usage, opts, n, argc, argv, pos, 1, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos != 1) {
        fprintf(stderr, "pare eval: expected one checkpoint path\nsee: pare eval --help\n");
        return PARE_EXIT_USAGE;
    }
    const char *path = argv[pos[0]];
    ag_set_threads(pare_threads(threads));
    if (pare_is_model_file(path)) {
        char *extra = malloc(strlen(path) + 8), *cfg = NULL;
        if (extra) snprintf(extra, strlen(path) + 8, "model=%s\n", path);
        cfg = pare_runlog_config(opts, n, extra);
        int frc = pare_eval_model_file(path, data, data_seed, pare_opts_find(opts, n, "data-seed")->set, batches, batch,
                                       json, db, cfg);
        free(extra);
        free(cfg);
        return frc;
    }

    char err[1024], buf[1024], seedbuf[32];
    tr_gpt m;
    tr_vocab v;
    char *conf = NULL;
    if (pare_model_open(path, &m, &v, &conf, err, sizeof err) != 0) {
        fprintf(stderr, "pare eval: %s\n", err);
        return PARE_EXIT_ERROR;
    }
    int status = PARE_EXIT_ERROR;
    tr_dataset *d = NULL;
    ag_ctx *c = ag_ctx_new();
    tr_batch b = {0};
    if (!data[0]) {
        data = pare_conf_get(conf, "data", buf, sizeof buf);
        if (!data || !data[0]) {
            fprintf(stderr, "pare eval: %s does not record its data; give --data\n", path);
            status = PARE_EXIT_USAGE;
            goto done;
        }
        if (!pare_opts_find(opts, n, "data-seed")->set && pare_conf_get(conf, "data-seed", seedbuf, sizeof seedbuf))
            data_seed = atoi(seedbuf);
    }
    tr_data_opts dopt = tr_data_opts_default();
    dopt.vocab_fixed = &v;
    dopt.ctx = m.arch.ctx;
    dopt.seed = (uint64_t)data_seed;
    if (!c || tr_dataset_open(&d, data, &dopt, err, sizeof err) != 0) {
        fprintf(stderr, "pare eval: %s\n", c ? err : "out of memory");
        goto done;
    }
    if (tr_vocab_compare(&v, "model", &d->vocab, "data", err, sizeof err) != 0) {
        fprintf(stderr, "pare eval: %s\n", err);
        goto done;
    }
    tr_eval ev;
    double t0 = ag_now();
    if (tr_batch_init(&b, batch, d->ctx, err, sizeof err) != 0 ||
        tr_evaluate(c, &m, NULL, d, &b, batches, &ev, err, sizeof err) != 0) {
        fprintf(stderr, "pare eval: %s\n", err);
        goto done;
    }
    double secs = ag_now() - t0;
    if (json) {
        printf("{\"command\":\"eval\",\"data\":");
        pare_json_string(stdout, data);
        printf(",\"val_loss\":");
        pare_json_number(stdout, ev.loss);
        printf(",\"floor\":");
        pare_json_number(stdout, d->floor);
        printf(",\"accuracy\":");
        pare_json_number(stdout, ev.accuracy);
        printf(",\"tokens\":%ld,\"batches\":%d,\"seconds\":", ev.tokens, batches);
        pare_json_number(stdout, secs);
        printf("}\n");
    } else {
        printf("%s on %s: loss %.4f", path, data, ev.loss);
        if (!isnan(d->floor)) printf(" (floor %.4f, gap %.4f)", d->floor, ev.loss - d->floor);
        if (!isnan(ev.accuracy)) printf(", exact-match accuracy %.3f (%ld/%ld)", ev.accuracy, ev.correct, ev.total);
        printf(" over %ld scored tokens in %d batches\n", ev.tokens, batches);
    }
    {
        /* the run log: this evaluation of exactly these model bytes */
        size_t need = pare_opts_format(opts, n, NULL, 0) + strlen(path) + 8;
        char *cfg = malloc(need);
        if (cfg) {
            size_t len = pare_opts_format(opts, n, cfg, need);
            snprintf(cfg + len, need - len, "model=%s\n", path);
        }
        pare_runlog rl;
        pare_runlog_begin(&rl, db, "eval", "", cfg ? cfg : "", (uint64_t)data_seed, path, d);
        pare_runlog_result(&rl, "val_loss", ev.loss);
        if (!isnan(ev.accuracy)) pare_runlog_result(&rl, "accuracy", ev.accuracy);
        pare_runlog_result(&rl, "tokens", (double)ev.tokens);
        pare_runlog_end(&rl, EX_FINISHED);
        free(cfg);
    }
    status = PARE_EXIT_OK;
done:
    tr_batch_free(&b);
    tr_dataset_free(d);
    ag_ctx_free(c);
    tr_gpt_free(&m);
    free(conf);
    return status;
}
