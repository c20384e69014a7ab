/* cmd_eval.c - `pare eval MODEL`: loss (beside the data's floor) and, for
 * built-in tasks, exact-match accuracy on fixed validation batches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "train/keys.h"
#include "train/trainer.h"
#include "cli/runlog.h"

int cmd_eval(int argc, char **argv) {
    static const char *usage = "pare eval CHECKPOINT [--key value ...]";
    const char *data, *db, *run_name;
    int batches, batch, threads;
    bool json;
    tr_data_opts dopt;
    pare_keys keys = {.n = 0};
    tr_data_keys(&keys, &data, &dopt);
    tr_eval_keys(&keys, &batch, &batches);
    pare_keys_threads(&keys, &threads);
    ex_log_keys(&keys, &db, &run_name);
    pare_keys_json(&keys, &json, NULL);
    pare_keys_note(&keys, "data", "the data the model was trained on");
    pare_keys_note(&keys, "data-seed", "the training run's");
    pare_keys_note(&keys, "vocab", "the model's");
    pare_opt *opts = keys.row;
    int n = keys.n, pos[1], n_pos = 0;
    int rc = pare_keys_cli("eval", usage, &keys, argc, argv, pos, 1, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos != 1) {
        pare_report_error("pare eval: expected one checkpoint path\nsee: pare eval --help\n");
        return PARE_EXIT_USAGE;
    }
    const char *path = argv[pos[0]];
    ag_set_threads(pare_threads(threads));
    if (pare_is_model_file(path)) {
        char *extra = malloc(strlen(path) + 8), *cfg = NULL;
        if (extra) snprintf(extra, strlen(path) + 8, "model=%s\n", path);
        cfg = pare_runlog_config(opts, n, extra);
        int frc = pare_eval_model_file(path, pare_opts_find(opts, n, "data")->set ? data : "", (int)dopt.seed,
                                       pare_opts_find(opts, n, "data-seed")->set, batches, batch, json, db, run_name, cfg);
        free(extra);
        free(cfg);
        return frc;
    }

    char err[1024], buf[1024], seedbuf[32];
    tr_gpt m;
    tr_vocab v;
    char *conf = NULL;
    if (pare_model_open(path, &m, &v, &conf, err, sizeof err) != 0) {
        pare_report_error("pare eval: %s\n", err);
        return PARE_EXIT_ERROR;
    }
    int status = PARE_EXIT_ERROR;
    tr_dataset *d = NULL;
    cp_set qset = {0};
    tr_gpt_fwd qfwd = {0};
    ag_ctx *c = ag_ctx_new();
    tr_batch b = {0};
    if (!pare_opts_find(opts, n, "data")->set) {
        data = pare_conf_get(conf, "data", buf, sizeof buf);
        if (!data || !data[0]) {
            pare_report_error("pare eval: %s does not record its data; give --data\n", path);
            status = PARE_EXIT_USAGE;
            goto done;
        }
        if (!pare_opts_find(opts, n, "data-seed")->set && pare_conf_get(conf, "data-seed", seedbuf, sizeof seedbuf))
            dopt.seed = strtoull(seedbuf, NULL, 10);
    }
    dopt.vocab_fixed = &v;
    dopt.ctx = m.arch.ctx;
    if (!c || tr_dataset_open(&d, data, &dopt, err, sizeof err) != 0) {
        pare_report_error("pare eval: %s\n", c ? err : "out of memory");
        goto done;
    }
    if (tr_vocab_compare(&v, "model", &d->vocab, "data", err, sizeof err) != 0) {
        pare_report_error("pare eval: %s\n", err);
        goto done;
    }
    if (tr_gpt_check_batch(&m.arch, batch, d->ctx, false, err, sizeof err) != 0) {
        pare_report_error("pare eval: %s\n", err);
        status = PARE_EXIT_USAGE;
        goto done;
    }
    tr_eval ev;
    double t0 = ag_now();
    /* a quantization-aware checkpoint evaluates its quantized forward (cmd_quantize.c) */
    int quant = pare_quant_forward(path, conf, &m, &qset, &qfwd, err, sizeof err);
    if (quant < 0) {
        pare_report_error("pare eval: %s\n", err);
        goto done;
    }
    if (tr_batch_init(&b, batch, d->ctx, err, sizeof err) != 0 ||
        tr_evaluate(c, &m, quant ? &qfwd : NULL, d, &b, batches, &ev, err, sizeof err) != 0) {
        pare_report_error("pare eval: %s\n", err);
        goto done;
    }
    double secs = ag_now() - t0;
    if (!isfinite(ev.loss)) { /* a model that computes NaN or Inf is broken, not evaluated */
        pare_report_error("pare eval: %s on %s: the loss is %g: the model computes a non-finite value (exit status 3)\n",
                path, data, ev.loss);
        status = PARE_EXIT_DIVERGED;
        goto done;
    }
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
        pare_runlog_begin(&rl, db, "eval", run_name, cfg ? cfg : "", dopt.seed, path, d);
        pare_runlog_result(&rl, "val_loss", ev.loss);
        if (!isnan(ev.accuracy)) pare_runlog_result(&rl, "accuracy", ev.accuracy);
        pare_runlog_result(&rl, "tokens", (double)ev.tokens);
        pare_runlog_end(&rl, EX_FINISHED);
        free(cfg);
    }
    status = PARE_EXIT_OK;
done:
    cp_set_free(&qset);
    tr_batch_free(&b);
    tr_dataset_free(d);
    ag_ctx_free(c);
    tr_gpt_free(&m);
    free(conf);
    return status;
}
