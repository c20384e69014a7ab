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
 * tokens_per_s, and after evaluations val_loss and accuracy. */
tr_policy pare_runlog_policy(pare_runlog *rl);

/* Final result / artifact of the run (no-ops without a run). */
void pare_runlog_result(pare_runlog *rl, const char *name, double value);
void pare_runlog_artifact(pare_runlog *rl, const char *kind, const char *path);

/* Ends the run with status (once) and closes the log, which reports rows it
 * could not record. Safe to call twice and on a zeroed pare_runlog. */
void pare_runlog_end(pare_runlog *rl, ex_status status);

/* The ex_status of a trainer outcome. */
ex_status pare_runlog_status(tr_status st);

#endif
