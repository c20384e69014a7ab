/* cmd_prune.c - `pare prune CHECKPOINT --out FILE`: one-shot pruning (or
 * factorization) of a trained model without training. The pruning keys are
 * the sparsity policy's (compress/sparsity.h) and the low-rank keys
 * compress/lowrank.h's, with the same meanings as in `pare train`:
 *   --prune magnitude|nm|set|rigl   a checkpoint with masks (masked weights 0)
 *   --prune heads|neurons           a checkpoint of the smaller architecture
 *                                   (the pruned heads and units removed)
 *   --rank R | --rank-energy E      a checkpoint with factorized sites
 * The validation loss before and after is printed and recorded in the run
 * log; `pare train --init OUT` fine-tunes the result. Also the helper that
 * opens the data a checkpoint was trained on (pare sensitivity uses it). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/runlog.h"
#include "compress/lowrank.h"
#include "compress/sparsity.h"
#include "train/keys.h"
#include "train/trainer.h"

int pare_open_ckpt_data(const char *path, const char *conf, const tr_vocab *v, int ctx, tr_dataset **d, char *err,
                        size_t errlen) {
    char buf[1024], seed[32];
    const char *data = pare_conf_get(conf, "data", buf, sizeof buf);
    if (!data || !data[0]) {
        snprintf(err, errlen, "%s does not record the data it was trained on", path);
        return -1;
    }
    tr_data_opts o = tr_data_opts_default();
    if (pare_conf_get(conf, "data-seed", seed, sizeof seed)) o.seed = strtoull(seed, NULL, 10);
    o.vocab_fixed = v;
    o.vocab = v->kind;
    o.ctx = ctx;
    if (tr_dataset_open(d, data, &o, err, errlen) != 0) return -1;
    return tr_vocab_compare(v, "model", &(*d)->vocab, "data", err, errlen);
}

/* Non-zero entries of the model's linear weights (a tied head counted once, as wte). */
static size_t linear_nonzeros(const tr_gpt *m, size_t *total) {
    size_t nz = 0, n = 0;
    for (int i = 0; i < m->table.n_tensor; i++) {
        const pm_tensor *t = &m->table.tensor[i];
        if (!m->table.site[t->site].linear || t->part == PM_B) continue;
        const ag_tensor *x = &m->params.t[i];
        for (size_t j = 0; j < x->numel; j++) nz += x->data[j] != 0.0f;
        n += x->numel;
    }
    *total = n;
    return nz;
}


int cmd_prune(int argc, char **argv) {
    static const char *usage = "pare prune CHECKPOINT --out FILE [--key value ...]";
    const char *out, *db, *run_name;
    int batch, eval_batches, threads;
    bool json;
    cp_sparsity_cfg sc;
    cp_lowrank_cfg lc;
    pare_keys keys = {.n = 0};
    pare_opt own[] = {PARE_OPT_STRING("out", &out, "", "checkpoint to write (required)")};
    pare_keys_add(&keys, own, 1);
    int k0 = keys.n;
    cp_sparsity_kind.keys(&keys, &sc);
    cp_lowrank_kind.keys(&keys, &lc);
    int k1 = keys.n; /* rows [k0, k1) are the pruning keys, stored in the checkpoint's configuration */
    tr_eval_keys(&keys, &batch, &eval_batches);
    pare_keys_threads(&keys, &threads);
    ex_log_keys(&keys, &db, &run_name);
    pare_keys_json(&keys, &json, NULL);
    int pos[1], n_pos = 0;
    int rc = pare_keys_cli("prune", usage, &keys, argc, argv, pos, 1, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos != 1) {
        pare_report_error("pare prune: expected one checkpoint path\nsee: pare prune --help\n");
        return PARE_EXIT_USAGE;
    }
    const char *path = argv[pos[0]];
    char err[1024];
    if ((rc = pare_check_rewrite("prune", path, out)) != 0) return rc;
    bool want_prune = sc.prune != CP_PRUNE_NONE, want_rank = lc.rank > 0 || lc.energy > 0;
    if (!want_prune && !want_rank) {
        pare_report_error("pare prune: nothing to do: give --prune magnitude|heads|neurons|nm|set|rigl, or --rank / "
                          "--rank-energy\n");
        return PARE_EXIT_USAGE;
    }
    tr_policy *pol = NULL, *lpol = NULL;
    if ((want_prune && !(pol = cp_sparsity_kind.create(&sc, err, sizeof err))) ||
        (want_rank && !(lpol = cp_lowrank_kind.create(&lc, err, sizeof err)))) {
        pare_report_error("pare prune: %s\n", err);
        if (pol) cp_sparsity_kind.destroy(pol);
        return PARE_EXIT_USAGE;
    }
    if (lpol) cp_lowrank_kind.destroy(lpol); /* checked the keys; the factorization is a function */
    ag_set_threads(pare_threads(threads));

    int status = PARE_EXIT_ERROR;
    tr_ckpt_file f = {0};
    pm_arch arch = {0};
    tr_vocab v;
    char *conf = NULL, *cfg = NULL, *newconf = NULL;
    tr_gpt m = {0}, m2 = {0};
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
        pare_report_error("pare prune: %s\n", c ? err : "out of memory");
        goto done;
    }
    if (pare_open_ckpt_data(path, conf, &v, m.arch.ctx, &d, err, sizeof err) != 0 ||
        tr_batch_init(&b, batch, d->ctx, err, sizeof err) != 0) {
        pare_report_error("pare prune: %s\n", err);
        goto done;
    }
    tr_eval before, after;
    if (tr_evaluate(c, &m, NULL, d, &b, eval_batches, &before, err, sizeof err) != 0) {
        pare_report_error("pare prune: %s\n", err);
        goto done;
    }
    size_t total0, nz0 = linear_nonzeros(&m, &total0), params0 = ag_params_numel(&m.params);
    char seedbuf[32];
    tr_train_config tc = tr_train_config_default();
    tc.batch = batch;
    tc.eval_batches = eval_batches;
    tc.steps = (sc.start > sc.end ? sc.start : sc.end) + 2;
    if (pare_conf_get(conf, "seed", seedbuf, sizeof seedbuf)) tc.seed = strtoull(seedbuf, NULL, 10);
    int removed_heads = 0, removed_units = 0;
    if (pol) {
        if (tr_trainer_init(&t, &m, d, &tc, err, sizeof err) != 0) {
            pare_report_error("pare prune: %s\n", err);
            goto done;
        }
        if (tr_trainer_add_policy(&t, pol) != 0 || tr_trainer_prepare(&t) != 0 || cp_sparsity_apply_now(pol, &t) != 0) {
            pare_report_error("pare prune: %s\n", t.err);
            status = strstr(t.err, "expected") ? PARE_EXIT_USAGE : PARE_EXIT_ERROR;
            goto done;
        }
        tr_trainer_free(&t);
        if (sc.prune == CP_PRUNE_HEADS || sc.prune == CP_PRUNE_NEURONS) {
            cp_shrink sh;
            if (cp_shrink_find(&sh, &m, err, sizeof err) != 0 || cp_shrink_model(&sh, &m, &m2, flags, err, sizeof err) != 0) {
                pare_report_error("pare prune: %s\n", err);
                cp_shrink_free(&sh);
                goto done;
            }
            removed_heads = sh.removed_heads, removed_units = sh.removed_units;
            cp_shrink_free(&sh);
            tr_gpt_free(&m);
            m = m2;
            memset(&m2, 0, sizeof m2);
            bool all = m.params.mask != NULL; /* a mask that keeps everything is no mask */
            for (int i = 0; all && i < m.params.count; i++)
                all = ag_params_masked(&m.params, i) == 0;
            if (all) {
                free(m.params.mask);
                m.params.mask = NULL;
            }
        }
    }
    if (want_rank) {
        if (cp_lowrank_factorize(&m, &lc, &m2, flags, err, sizeof err) != 0) {
            pare_report_error("pare prune: %s\n", err);
            status = strstr(err, "expected") ? PARE_EXIT_USAGE : PARE_EXIT_ERROR;
            goto done;
        }
        tr_gpt_free(&m);
        m = m2;
        memset(&m2, 0, sizeof m2);
    }
    if (tr_evaluate(c, &m, NULL, d, &b, eval_batches, &after, err, sizeof err) != 0) {
        pare_report_error("pare prune: %s\n", err);
        goto done;
    }
    size_t total1, nz1 = linear_nonzeros(&m, &total1), params1 = ag_params_numel(&m.params);
    /* the checkpoint: the pruned model as a fresh training state (step 0) */
    newconf = pare_opts_merge_conf(conf, keys.row + k0, k1 - k0);
    if (!newconf || tr_trainer_init(&t, &m, d, &tc, err, sizeof err) != 0) {
        pare_report_error("pare prune: %s\n", newconf ? err : "out of memory");
        goto done;
    }
    t.config_text = newconf;
    {
        char *extra = malloc(strlen(path) + 32);
        if (extra) snprintf(extra, strlen(path) + 32, "checkpoint=%s\n", path);
        cfg = pare_runlog_config(keys.row, keys.n, extra);
        free(extra);
    }
    pare_runlog_begin(&rl, db, "prune", run_name, cfg ? cfg : "", tc.seed, path, d);
    if (tr_trainer_save(&t, out) != 0) {
        pare_report_error("pare prune: %s\n", t.err);
        pare_runlog_end(&rl, EX_FAILED);
        goto done;
    }
    pare_runlog_result(&rl, "val_loss_before", before.loss);
    pare_runlog_result(&rl, "val_loss", after.loss);
    pare_runlog_result(&rl, "params", (double)params1);
    pare_runlog_result(&rl, "nonzero_linear_weights", (double)nz1);
    pare_runlog_result(&rl, "linear_sparsity", total1 ? 1.0 - (double)nz1 / (double)total0 : 0);
    pare_runlog_artifact(&rl, "checkpoint", out);
    pare_runlog_end(&rl, EX_FINISHED);
    if (json) {
        printf("{\"command\":\"prune\",\"checkpoint\":");
        pare_json_string(stdout, path);
        printf(",\"out\":");
        pare_json_string(stdout, out);
        printf(",\"val_loss_before\":");
        pare_json_number(stdout, before.loss);
        printf(",\"val_loss\":");
        pare_json_number(stdout, after.loss);
        printf(",\"params_before\":%zu,\"params\":%zu,\"nonzero_linear_before\":%zu,\"nonzero_linear\":%zu,"
               "\"removed_heads\":%d,\"removed_units\":%d}\n", params0, params1, nz0, nz1, removed_heads, removed_units);
    } else {
        printf("%s: %zu parameters, %zu of %zu linear weights non-zero; validation loss %.4f\n", path, params0, nz0,
               total0, before.loss);
        if (removed_heads || removed_units)
            printf("removed %d heads and %d MLP units: the model is now %d layers with heads", removed_heads,
                   removed_units, m.arch.n_layer);
        for (int l = 0; removed_heads + removed_units && l < m.arch.n_layer; l++)
            printf(" %d", m.arch.n_head[l]);
        if (removed_heads || removed_units) {
            printf(" and MLP widths");
            for (int l = 0; l < m.arch.n_layer; l++) printf(" %d", m.arch.n_hidden[l]);
            printf("\n");
        }
        printf("%s: %zu parameters, %zu of %zu linear weights non-zero (%.1f%% of the original's removed); "
               "validation loss %.4f (%+.4f)\n", out, params1, nz1, total1,
               100.0 * (1.0 - (double)nz1 / (double)(nz0 ? nz0 : 1)), after.loss, after.loss - before.loss);
        printf("fine-tune it with: pare train --init %s --data ... (with the same --prune keys to keep its masks)\n",
               out);
    }
    status = isfinite(after.loss) ? PARE_EXIT_OK : PARE_EXIT_DIVERGED;
done:
    tr_trainer_free(&t);
    if (pol) cp_sparsity_kind.destroy(pol);
    tr_batch_free(&b);
    ag_ctx_free(c);
    tr_dataset_free(d);
    tr_gpt_free(&m);
    tr_gpt_free(&m2);
    pm_arch_free(&arch);
    tr_ckpt_close(&f);
    free(conf);
    free(cfg);
    free(newconf);
    pare_opts_free(keys.row, keys.n);
    return status;
}
