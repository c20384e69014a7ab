/* cmd_quantize.c - `pare quantize CHECKPOINT --out FILE`: post-training
 * quantization (PTQ). The quantization keys are the quant policy's
 * (compress/quant.h), with the same meanings as in `pare train`; the
 * observers calibrate on --calib-batches training batches (forward only, no
 * training), then every scale is frozen and the result is written as a
 * checkpoint whose configuration and QUNT section `pare export` treats like a
 * quantization-aware run's (`pare export OUT --out FILE`, no --format), and
 * `pare eval OUT` evaluates its quantized forward. The validation loss
 * before and after is printed and recorded in the run log.
 *
 * Also the helper `pare eval` uses to evaluate a quantization-aware
 * checkpoint with its quantized forward (pare_quant_forward). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/runlog.h"
#include "compress/quant.h"
#include "train/keys.h"
#include "train/trainer.h"

int pare_quant_forward(const char *path, const char *conf, const tr_gpt *m, cp_set *set, tr_gpt_fwd *fwd, char *err,
                       size_t errlen) {
    memset(fwd, 0, sizeof *fwd);
    if (cp_set_init(set) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pare_keys pk = {.n = 0};
    cp_set_keys(set, &pk);
    char where[300];
    snprintf(where, sizeof where, "checkpoint %s", path);
    int rc = -1;
    tr_ckpt_file f = {0};
    if (pk.overflow || pare_opts_defaults(pk.row, pk.n, err, errlen) != 0 ||
        pare_opts_apply_stored(pk.row, pk.n, conf, NULL, where, err, errlen) != 0 || cp_set_create(set, err, errlen) < 0)
        goto out;
    tr_policy *q = cp_quant_of(set);
    if (!q) {
        rc = 0;
        goto out;
    }
    if (tr_ckpt_read(&f, path, err, errlen) != 0 || cp_quant_forward(q, m, &f, fwd, err, errlen) != 0) goto out;
    rc = 1;
out:
    tr_ckpt_close(&f);
    pare_opts_free(pk.row, pk.n);
    return rc;
}


int cmd_quantize(int argc, char **argv) {
    static const char *usage = "pare quantize CHECKPOINT --out FILE [--key value ...]";
    const char *out, *db, *run_name;
    int batch, eval_batches, threads, calib;
    bool json;
    cp_quant_cfg qc;
    pare_keys keys = {.n = 0};
    pare_opt own[] = {
        PARE_OPT_STRING("out", &out, "", "checkpoint to write (required)"),
        PARE_OPT_INT("calib-batches", &calib, "32", 1, 1000000, "training batches the observers calibrate on"),
    };
    pare_keys_add(&keys, own, 2);
    int k0 = keys.n;
    cp_quant_kind.keys(&keys, &qc);
    int k1 = keys.n; /* rows [k0, k1) are the quantization keys, stored in the checkpoint's configuration */
    tr_eval_keys(&keys, &batch, &eval_batches);
    pare_keys_threads(&keys, &threads);
    ex_log_keys(&keys, &db, &run_name);
    pare_keys_json(&keys, &json, NULL);
    int pos[1], n_pos = 0;
    int rc = pare_keys_cli("quantize", usage, &keys, argc, argv, pos, 1, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos != 1) {
        pare_report_error("pare quantize: expected one checkpoint path\nsee: pare quantize --help\n");
        return PARE_EXIT_USAGE;
    }
    const char *path = argv[pos[0]];
    char err[1024];
    if ((rc = pare_check_rewrite("quantize", path, out)) != 0) return rc;
    if (!cp_quant_kind.wanted(&qc)) {
        pare_report_error("pare quantize: nothing to do: give --w-bits (and --a-bits), or --quant-override\n");
        return PARE_EXIT_USAGE;
    }
    if (qc.lsq || qc.pact) {
        pare_report_error("pare quantize: --%s learns during training: post-training quantization has no training "
                          "(use pare train --init %s --%s)\n", qc.lsq ? "lsq" : "pact", path, qc.lsq ? "lsq" : "pact");
        return PARE_EXIT_USAGE;
    }
    tr_policy *pol = cp_quant_kind.create(&qc, err, sizeof err);
    if (!pol) {
        pare_report_error("pare quantize: %s\n", err);
        return PARE_EXIT_USAGE;
    }
    ag_set_threads(pare_threads(threads));

    int status = PARE_EXIT_ERROR;
    tr_ckpt_file f = {0};
    pm_arch arch = {0};
    tr_vocab v;
    char *conf = NULL, *cfg = NULL, *newconf = NULL;
    tr_gpt m = {0};
    tr_dataset *d = NULL;
    tr_trainer t = {0};
    ag_ctx *c = ag_ctx_new();
    tr_batch b = {0};
    pare_runlog rl = {0};
    const int flags = AG_PARAMS_GRAD | AG_PARAMS_MOMENTS;
    if (!c || tr_ckpt_read(&f, path, err, sizeof err) != 0 ||
        tr_ckpt_read_meta(&f, &arch, &v, &conf, err, sizeof err) != 0 ||
        tr_gpt_init_arch(&m, &arch, flags, err, sizeof err) != 0 ||
        tr_ckpt_read_params(&f, &m, false, err, sizeof err) != 0) {
        pare_report_error("pare quantize: %s\n", c ? err : "out of memory");
        goto done;
    }
    if (tr_ckpt_find(&f, "QUNT")) {
        pare_report_error("pare quantize: %s is already quantized (it has a QUNT section): quantize its float "
                          "source\n", path);
        status = PARE_EXIT_USAGE;
        goto done;
    }
    if (pare_open_ckpt_data(path, conf, &v, m.arch.ctx, &d, err, sizeof err) != 0 ||
        tr_batch_init(&b, batch, d->ctx, err, sizeof err) != 0) {
        pare_report_error("pare quantize: %s\n", err);
        goto done;
    }
    tr_eval before, after;
    if (tr_evaluate(c, &m, NULL, d, &b, eval_batches, &before, err, sizeof err) != 0) {
        pare_report_error("pare quantize: %s\n", err);
        goto done;
    }
    tr_train_config tc = tr_train_config_default();
    char seedbuf[32];
    tc.batch = batch;
    tc.eval_batches = eval_batches;
    if (pare_conf_get(conf, "seed", seedbuf, sizeof seedbuf)) tc.seed = strtoull(seedbuf, NULL, 10);
    newconf = pare_opts_merge_conf(conf, keys.row + k0, k1 - k0);
    if (!newconf || tr_trainer_init(&t, &m, d, &tc, err, sizeof err) != 0) {
        pare_report_error("pare quantize: %s\n", newconf ? err : "out of memory");
        goto done;
    }
    t.config_text = newconf;
    if (tr_trainer_add_policy(&t, pol) != 0 || tr_trainer_prepare(&t) != 0) {
        pare_report_error("pare quantize: %s\n", t.err);
        status = strstr(t.err, "expected") ? PARE_EXIT_USAGE : PARE_EXIT_ERROR;
        goto done;
    }
    char desc[2048];
    pol->describe(pol, &t, desc, sizeof desc);
    FILE *o = json ? stderr : stdout;
    fprintf(o, "%s\n", desc);
    /* calibration: forwards only, the observers on */
    cp_quant_calibrate(pol, true);
    bool prev = ag_set_grad(t.ctx, false);
    for (int i = 0; i < calib; i++) {
        if (ag_ctx_reset(t.ctx) != 0 || tr_data_train_batch(d, &t.data_rng, &t.batch, err, sizeof err) != 0 ||
            !tr_gpt_forward(t.ctx, &m, t.batch.x, t.batch.B, t.batch.T, &t.fwd)) {
            pare_report_error("pare quantize: calibration batch %d: %s\n", i,
                              ag_error(t.ctx) ? ag_error(t.ctx) : err);
            goto done;
        }
    }
    ag_set_grad(t.ctx, prev);
    cp_quant_freeze(pol);
    if (tr_evaluate(c, &m, &t.fwd, d, &b, eval_batches, &after, err, sizeof err) != 0) {
        pare_report_error("pare quantize: %s\n", err);
        goto done;
    }
    {
        char *extra = malloc(strlen(path) + 32);
        if (extra) snprintf(extra, strlen(path) + 32, "checkpoint=%s\n", path);
        cfg = pare_runlog_config(keys.row, keys.n, extra);
        free(extra);
    }
    pare_runlog_begin(&rl, db, "quantize", run_name, cfg ? cfg : "", tc.seed, path, d);
    if (tr_trainer_save(&t, out) != 0) {
        pare_report_error("pare quantize: %s\n", t.err);
        pare_runlog_end(&rl, EX_FAILED);
        goto done;
    }
    pare_runlog_result(&rl, "val_loss_before", before.loss);
    pare_runlog_result(&rl, "val_loss", after.loss);
    pare_runlog_artifact(&rl, "checkpoint", out);
    pare_runlog_end(&rl, EX_FINISHED);
    if (json) {
        printf("{\"command\":\"quantize\",\"checkpoint\":");
        pare_json_string(stdout, path);
        printf(",\"out\":");
        pare_json_string(stdout, out);
        printf(",\"calib_batches\":%d,\"val_loss_before\":", calib);
        pare_json_number(stdout, before.loss);
        printf(",\"val_loss\":");
        pare_json_number(stdout, after.loss);
        printf("}\n");
    } else {
        printf("quantized %s -> %s after %d calibration batches: val loss %.4f -> %.4f (%+.2f%%); export it with: "
               "pare export %s --out FILE\n", path, out, calib, before.loss, after.loss,
               100.0 * (after.loss - before.loss) / before.loss, out);
    }
    status = PARE_EXIT_OK;
done:
    tr_trainer_free(&t);
    cp_quant_kind.destroy(pol);
    tr_batch_free(&b);
    tr_dataset_free(d);
    ag_ctx_free(c);
    tr_gpt_free(&m);
    pm_arch_free(&arch);
    tr_ckpt_close(&f);
    free(conf);
    free(cfg);
    free(newconf);
    return status;
}
