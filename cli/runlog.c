/* runlog.c - the commands' side of the run log. */
#include "runlog.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void pare_runlog_begin(pare_runlog *rl, const char *db, const char *command, const char *name, const char *config,
                       uint64_t seed, const char *parent_file, const tr_dataset *d) {
    memset(rl, 0, sizeof *rl);
    rl->log = ex_log_open(db);
    if (!rl->log) return;
    bool from_file = parent_file && parent_file[0];
    int64_t parent = from_file ? ex_log_run_of_file(rl->log, parent_file) : 0;
    ex_dataset ds = {0};
    if (d) {
        ds.path = d->spec;
        ds.bytes = d->source_bytes;
        ds.hash = d->hash;
    }
    rl->run = ex_run_begin(rl->log, command, name, config, seed, parent, d ? &ds : NULL);
    if (from_file) ex_artifact(rl->log, rl->run, "input", parent_file);
}

static void on_progress(tr_policy *p, tr_trainer *t, const tr_progress *pr) {
    (void)t;
    pare_runlog *rl = p->user;
    ex_metric(rl->log, rl->run, pr->step, "train_loss", pr->loss);
    ex_metric(rl->log, rl->run, pr->step, "lr", pr->lr);
    ex_metric(rl->log, rl->run, pr->step, "grad_norm", pr->grad_norm);
    ex_metric(rl->log, rl->run, pr->step, "tokens_per_s", pr->tokens_per_s);
    for (int i = 0; i < pr->n_metrics; i++) /* the policies' figures, under their own names */
        ex_metric(rl->log, rl->run, pr->step, pr->metrics[i].name, pr->metrics[i].value);
    if (!isnan(pr->val_loss)) {
        ex_metric(rl->log, rl->run, pr->step, "val_loss", pr->val_loss);
        if (!isnan(pr->accuracy)) ex_metric(rl->log, rl->run, pr->step, "accuracy", pr->accuracy);
        ex_log_flush(rl->log); /* an evaluation is a natural point to make progress visible */
    }
}

tr_policy pare_runlog_policy(pare_runlog *rl) {
    tr_policy p = {.name = "runlog", .user = rl, .on_progress = on_progress};
    return p;
}

void pare_runlog_result(pare_runlog *rl, const char *name, double value) {
    if (rl->log) ex_result(rl->log, rl->run, name, value);
}

void pare_runlog_artifact(pare_runlog *rl, const char *kind, const char *path) {
    if (rl->log && path && path[0] && access(path, R_OK) == 0) ex_artifact(rl->log, rl->run, kind, path);
}

void pare_runlog_end(pare_runlog *rl, ex_status status) {
    if (!rl->log) return;
    if (!rl->ended) ex_run_end(rl->log, rl->run, status);
    rl->ended = true;
    ex_log_close(rl->log);
    rl->log = NULL;
}

ex_status pare_runlog_status(tr_status st) {
    switch (st) {
    case TR_OK: return EX_FINISHED;
    case TR_DIVERGED: return EX_DIVERGED;
    case TR_INTERRUPTED: return EX_INTERRUPTED;
    default: return EX_FAILED;
    }
}

char *pare_runlog_config(const pare_opt *opts, int n, const char *extra) {
    size_t ex = extra ? strlen(extra) : 0;
    size_t need = pare_opts_format(opts, n, NULL, 0) + ex + 1;
    char *cfg = malloc(need);
    if (!cfg) return NULL;
    size_t len = pare_opts_format(opts, n, cfg, need);
    if (len > need - 1 - ex) len = need - 1 - ex;
    memcpy(cfg + len, extra ? extra : "", ex);
    cfg[len + ex] = '\0';
    return cfg;
}

void pare_runlog_once(const char *db, const char *command, const char *name, const char *config, uint64_t seed, const char *path,
                      const tr_dataset *d, const char *const *names, const double *values, int nres,
                      ex_status status) {
    pare_runlog rl;
    pare_runlog_begin(&rl, db, command, name ? name : "", config ? config : "", seed, path, d);
    for (int i = 0; i < nres; i++)
        if (!isnan(values[i])) pare_runlog_result(&rl, names[i], values[i]);
    pare_runlog_end(&rl, status);
}
