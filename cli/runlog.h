/* runlog.h - how the commands record themselves in the run log
 * (experiments/db.h): a run per command, the trainer's progress as metrics
 * through a tr_policy observer, results, artifacts and the final status.
 *
 * Every function tolerates a log that could not be opened (--db none, or a
 * database that fails): the command's work never depends on it.
 */
#ifndef PARE_CLI_RUNLOG_H
#define PARE_CLI_RUNLOG_H

#include <stdint.h>

#include "cli/options.h"
#include "experiments/db.h"
#include "train/trainer.h"

typedef struct pare_runlog {
    ex_log *log; /* NULL = not recording */
    int run;     /* handle from ex_run_begin, 0 = none */
    bool ended;
} pare_runlog;

/* Opens the log at db (--db; "" = $PARE_DB or ./pare.db) and begins a run of
 * `command` with the resolved configuration text. parent_file, if not NULL or
 * "", is the checkpoint or model the run starts from: the run that recorded a
 * file with the same SHA-256 becomes the parent, and the file is recorded as
 * an "input" artifact. d (may be NULL) gives the dataset fingerprint. */
void pare_runlog_begin(pare_runlog *rl, const char *db, const char *command, const char *name, const char *config,
                       uint64_t seed, const char *parent_file, const tr_dataset *d);

/* An observer policy that records, per step, train_loss, lr, grad_norm,
 * tokens_per_s and every figure the policies reported (tr_metric_set, under
 * its own name), and after evaluations val_loss and accuracy. */
tr_policy pare_runlog_policy(pare_runlog *rl);

/* Final result / artifact of the run (no-ops without a run). */
void pare_runlog_result(pare_runlog *rl, const char *name, double value);
void pare_runlog_artifact(pare_runlog *rl, const char *kind, const char *path);

/* Ends the run with status (once) and closes the log, which reports rows it
 * could not record. Safe to call twice and on a zeroed pare_runlog. */
void pare_runlog_end(pare_runlog *rl, ex_status status);

/* The configuration text of a command: its resolved options (every key,
 * defaults included, as pare_opts_format writes them) followed by `extra`
 * (NULL or more "key=value\n" lines, for example "model=PATH\n"). Returns a
 * malloc'd string the caller frees, or NULL when out of memory. */
char *pare_runlog_config(const pare_opt *opts, int n, const char *extra);

/* Records a run of `command` that read the model or checkpoint at path
 * (parent: the run that recorded the same bytes) and produced only results:
 * config as above, then results names[0..nres) = values[0..nres) (NaN
 * values are skipped), status, all in one call; d (may be NULL) is the
 * dataset it read. For commands that need no per-step metrics (eval, bench). */
void pare_runlog_once(const char *db, const char *command, const char *name, const char *config, uint64_t seed, const char *path,
                      const tr_dataset *d, const char *const *names, const double *values, int nres,
                      ex_status status);

/* The ex_status of a trainer outcome. */
ex_status pare_runlog_status(tr_status st);

#endif
