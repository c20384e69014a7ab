/* cmd_sensitivity.c - `pare sensitivity CHECKPOINT`: which sites tolerate
 * pruning. Each prunable linear site alone is magnitude-pruned
 * (l1_unstructured: the round(s n) smallest |w|) at each sparsity of
 * --sparsities, the model evaluated on the validation batches, the site
 * restored. The losses go into the run log (metric sens.SITE at step =
 * sparsity in percent, step 0 the dense model), a figure is drawn from them
 * (experiments/plot.h), and --plan-out turns them into a per-site plan: each
 * site's largest tested sparsity whose loss rises by at most
 * --max-loss-increase, for `pare train --prune magnitude --sparsity-plan @FILE`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/runlog.h"
#include "compress/sparsity.h"
#include "experiments/plot.h"
#include "train/keys.h"
#include "train/trainer.h"

#define MAX_LEVELS 32

static int parse_levels(const char *spec, double *lv, int *n, char *err, size_t errlen) {
    *n = 0;
    for (const char *p = spec; *p;) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !(v > 0 && v < 1) || *n >= MAX_LEVELS) {
            snprintf(err, errlen, "--sparsities '%s': expected up to %d comma-separated fractions in (0, 1)", spec,
                     MAX_LEVELS);
            return -1;
        }
        lv[(*n)++] = v;
        p = end;
        if (*p == ',') p++;
        else if (*p) {
            snprintf(err, errlen, "--sparsities '%s': expected comma-separated fractions", spec);
            return -1;
        }
    }
    if (*n == 0) {
        snprintf(err, errlen, "--sparsities: expected at least one fraction");
        return -1;
    }
    return 0;
}

int cmd_sensitivity(int argc, char **argv) {
    static const char *usage = "pare sensitivity CHECKPOINT [--key value ...]";
    const char *levels_s, *sites, *figure, *plan_out, *db, *run_name;
    double tol;
    int batch, eval_batches, threads;
    bool json;
    pare_keys keys = {.n = 0};
    pare_opt own[] = {
        PARE_OPT_STRING("sparsities", &levels_s, "0.25,0.5,0.75,0.9,0.95", "sparsities tried on each site"),
        PARE_OPT_STRING("prune-sites", &sites, "", "globs of the sites to try (\"\" = every linear site)"),
        PARE_OPT_STRING("figure", &figure, "sensitivity.png", "figure to draw (.png or .svg; \"\" = none)"),
        PARE_OPT_STRING("plan-out", &plan_out, "", "write a per-site sparsity plan here (for --sparsity-plan @FILE)"),
        PARE_OPT_FLOAT("max-loss-increase", &tol, "0.05", 0, 1e6,
                       "the plan: each site's largest sparsity costing at most this much validation loss"),
    };
    pare_keys_add(&keys, own, (int)(sizeof own / sizeof own[0]));
    tr_eval_keys(&keys, &batch, &eval_batches);
    pare_keys_threads(&keys, &threads);
    ex_log_keys(&keys, &db, &run_name);
    pare_keys_json(&keys, &json, NULL);
    int pos[1], n_pos = 0;
    int rc = pare_keys_cli("sensitivity", usage, &keys, argc, argv, pos, 1, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos != 1) {
        pare_report_error("pare sensitivity: expected one checkpoint path\nsee: pare sensitivity --help\n");
        return PARE_EXIT_USAGE;
    }
    const char *path = argv[pos[0]];
    char err[1024];
    double lv[MAX_LEVELS];
    int nl;
    if (parse_levels(levels_s, lv, &nl, err, sizeof err) != 0) {
        pare_report_error("pare sensitivity: %s\n", err);
        return PARE_EXIT_USAGE;
    }
    ag_set_threads(pare_threads(threads));
    int status = PARE_EXIT_ERROR;
    tr_gpt m;
    tr_vocab v;
    char *conf = NULL, *cfg = NULL, *metrics = NULL;
    tr_dataset *d = NULL;
    ag_ctx *c = ag_ctx_new();
    tr_batch b = {0};
    int *site = NULL, ns = 0;
    double *loss = NULL;
    float *saved = NULL, *mask = NULL;
    pare_runlog rl = {0};
    if (pare_model_open(path, &m, &v, &conf, err, sizeof err) != 0) {
        pare_report_error("pare sensitivity: %s\n", err);
        ag_ctx_free(c);
        return PARE_EXIT_ERROR;
    }
    if (!c || pare_open_ckpt_data(path, conf, &v, m.arch.ctx, &d, err, sizeof err) != 0 ||
        tr_batch_init(&b, batch, d->ctx, err, sizeof err) != 0) {
        pare_report_error("pare sensitivity: %s\n", c ? err : "out of memory");
        goto done;
    }
    site = calloc((size_t)m.table.n_site, sizeof *site);
    size_t maxn = 0;
    for (int i = 0; site && i < m.table.n_site; i++) {
        const pm_site *s = &m.table.site[i];
        if (!s->linear || (s->role == PM_HEAD && m.arch.tied) || (sites[0] && !pm_glob_match(sites, s->name))) continue;
        site[ns++] = i;
        size_t n = s->rank > 0 ? (size_t)s->rank * (s->out + s->in) : (size_t)s->out * s->in;
        if (n > maxn) maxn = n;
    }
    if (!site || ns == 0) {
        pare_report_error("pare sensitivity: %s\n", site ? "--prune-sites matches no linear site of the model (a tied "
                                                           "head is the embedding)" : "out of memory");
        status = site ? PARE_EXIT_USAGE : PARE_EXIT_ERROR;
        goto done;
    }
    loss = calloc((size_t)ns * nl, sizeof *loss);
    saved = malloc(maxn * sizeof *saved);
    mask = malloc(maxn * sizeof *mask);
    if (!loss || !saved || !mask) {
        pare_report_error("pare sensitivity: out of memory\n");
        goto done;
    }
    tr_eval ev;
    if (tr_evaluate(c, &m, NULL, d, &b, eval_batches, &ev, err, sizeof err) != 0) {
        pare_report_error("pare sensitivity: %s\n", err);
        goto done;
    }
    double base = ev.loss;
    if (!json) printf("%s: validation loss %.4f on %d batches; each site alone pruned by magnitude:\n", path, base,
                      eval_batches);
    if (!json) {
        printf("%-20s", "site");
        for (int k = 0; k < nl; k++) printf(" %8.0f%%", 100 * lv[k]);
        printf("\n");
    }
    for (int q = 0; q < ns; q++) {
        const pm_site *s = &m.table.site[site[q]];
        int tens[2] = {s->rank > 0 ? s->u : s->w, s->rank > 0 ? s->v : -1}, nt = s->rank > 0 ? 2 : 1;
        float *w[2] = {NULL, NULL}, *mk[2] = {mask, NULL};
        size_t n[2] = {0, 0}, all = 0;
        for (int i = 0; i < nt; i++) {
            w[i] = m.params.data + m.params.offset[tens[i]];
            n[i] = m.params.t[tens[i]].numel;
            if (i) mk[i] = mask + n[0];
            memcpy(saved + all, w[i], n[i] * sizeof *saved);
            all += n[i];
        }
        for (int k = 0; k < nl; k++) {
            for (size_t j = 0; j < all; j++) mask[j] = 1.0f;
            const float *cw[2] = {w[0], w[1]};
            if (cp_magnitude_prune(cw, mk, n, nt, lv[k]) == (size_t)-1) {
                pare_report_error("pare sensitivity: out of memory\n");
                goto done;
            }
            for (int i = 0; i < nt; i++)
                for (size_t j = 0; j < n[i]; j++) w[i][j] = saved[(i ? n[0] : 0) + j] * mk[i][j];
            if (tr_evaluate(c, &m, NULL, d, &b, eval_batches, &ev, err, sizeof err) != 0) {
                pare_report_error("pare sensitivity: %s\n", err);
                goto done;
            }
            loss[q * nl + k] = ev.loss;
        }
        for (int i = 0; i < nt; i++) memcpy(w[i], saved + (i ? n[0] : 0), n[i] * sizeof *saved);
        if (!json) {
            printf("%-20s", s->name);
            for (int k = 0; k < nl; k++) printf(" %+9.4f", loss[q * nl + k] - base);
            printf("\n");
            fflush(stdout);
        }
    }
    /* the run log: one metric per site, step = sparsity in percent */
    char *extra = malloc(strlen(path) + 32);
    if (extra) snprintf(extra, strlen(path) + 32, "checkpoint=%s\n", path);
    cfg = pare_runlog_config(keys.row, keys.n, extra);
    free(extra);
    pare_runlog_begin(&rl, db, "sensitivity", run_name, cfg ? cfg : "", 0, path, d);
    size_t mlen = 1;
    for (int q = 0; q < ns; q++) mlen += strlen(m.table.site[site[q]].name) + 6;
    metrics = calloc(mlen, 1);
    for (int q = 0; q < ns; q++) {
        char name[64];
        snprintf(name, sizeof name, "sens.%s", m.table.site[site[q]].name);
        ex_metric(rl.log, rl.run, 0, name, base);
        for (int k = 0; k < nl; k++) ex_metric(rl.log, rl.run, (int64_t)lround(100 * lv[k]), name, loss[q * nl + k]);
        if (metrics) strcat(strcat(metrics, q ? "," : ""), name);
    }
    pare_runlog_result(&rl, "val_loss", base);
    int64_t run_id = ex_run_id(rl.log, rl.run);
    bool logged = rl.log != NULL;
    /* the plan */
    if (plan_out[0]) {
        FILE *pf = fopen(plan_out, "w");
        if (!pf) {
            pare_report_error("pare sensitivity: --plan-out %s: cannot write the file\n", plan_out);
            pare_runlog_end(&rl, EX_FAILED);
            goto done;
        }
        fprintf(pf, "# per-site sparsity from pare sensitivity %s: the largest tested sparsity costing at most %g in "
                    "validation loss (base %.4f)\n", path, tol, base);
        for (int q = 0; q < ns; q++) {
            double best = 0;
            for (int k = 0; k < nl; k++)
                if (loss[q * nl + k] - base <= tol && lv[k] > best) best = lv[k];
            fprintf(pf, "%s=%g\n", m.table.site[site[q]].name, best);
        }
        if (fclose(pf) != 0) {
            pare_report_error("pare sensitivity: --plan-out %s: write failed\n", plan_out);
            pare_runlog_end(&rl, EX_FAILED);
            goto done;
        }
        pare_runlog_artifact(&rl, "plan", plan_out);
        if (!json) printf("plan: %s (use: pare train --init %s --prune magnitude --sparsity-plan @%s)\n", plan_out, path,
                          plan_out);
    }
    pare_runlog_end(&rl, EX_FINISHED);
    /* the figure, from the run log */
    char image[1300] = "";
    if (figure[0] && !logged) {
        if (!json) printf("figure: not drawn (no run log: --db none)\n");
    } else if (figure[0] && run_id > 0 && metrics) {
        sqlite3 *sdb = ex_db_open(db, err, sizeof err);
        ex_fig fig = {.out = figure, .title = "validation loss with one site pruned (x: sparsity of that site in %)"};
        int prc = sdb ? ex_plot_loss(sdb, &run_id, 1, metrics, &fig, err, sizeof err) : EX_PLOT_ERROR;
        if (sdb) sqlite3_close(sdb);
        if (prc == EX_PLOT_OK) snprintf(image, sizeof image, "%s", fig.image);
        if (prc != EX_PLOT_OK) fprintf(stderr, "pare sensitivity: warning: figure not drawn: %s\n", err);
        else if (!json) printf("figure: %s\n", image);
    }
    if (json) {
        printf("{\"command\":\"sensitivity\",\"checkpoint\":");
        pare_json_string(stdout, path);
        printf(",\"val_loss\":");
        pare_json_number(stdout, base);
        printf(",\"sparsities\":[");
        for (int k = 0; k < nl; k++) printf("%s%g", k ? "," : "", lv[k]);
        printf("],\"sites\":{");
        for (int q = 0; q < ns; q++) {
            printf("%s", q ? "," : "");
            pare_json_string(stdout, m.table.site[site[q]].name);
            printf(":[");
            for (int k = 0; k < nl; k++) {
                printf("%s", k ? "," : "");
                pare_json_number(stdout, loss[q * nl + k]);
            }
            printf("]");
        }
        printf("},\"figure\":");
        pare_json_string(stdout, image);
        printf(",\"plan\":");
        pare_json_string(stdout, plan_out);
        printf("}\n");
    }
    status = PARE_EXIT_OK;
done:
    tr_batch_free(&b);
    ag_ctx_free(c);
    tr_dataset_free(d);
    tr_gpt_free(&m);
    free(conf);
    free(cfg);
    free(metrics);
    free(site);
    free(loss);
    free(saved);
    free(mask);
    pare_opts_free(keys.row, keys.n);
    return status;
}
