/* runs.h - reading the run log: selecting runs, the tables `pare runs` and
 * `pare report` print, one run in full, and runs compared side by side.
 *
 * Every function takes a connection from ex_db_open, returns 0 or -1 with a
 * message in err, and fills caller-owned tables (free with ex_table_free).
 */
#ifndef PARE_EX_RUNS_H
#define PARE_EX_RUNS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "db.h"
#include "table.h"

/* Which runs: every field is optional (NULL or "" = any). */
typedef struct ex_filter {
    const char *name;    /* substring of the run's name */
    const char *command; /* exact command: train, eval, sample, export, ... */
    const char *status;  /* exact status: running, finished, failed, diverged, interrupted */
    int limit;           /* the newest `limit` runs; 0 = all */
} ex_filter;

/* The ids of the runs matching f, oldest first, in a malloc'd array *ids
 * (caller frees) of *n. An unknown status is an error naming the valid ones. */
int ex_runs_select(sqlite3 *db, const ex_filter *f, int64_t **ids, int *n, char *err, size_t errlen);

/* Fails, naming the first id, unless every ids[0..n) is a run. */
int ex_runs_check(sqlite3 *db, const int64_t *ids, int n, char *err, size_t errlen);

/* Fills t with the rows of any query, its column names as the header; NULL
 * cells stay NULL, numbers are printed as SQLite prints them. */
int ex_table_from_sql(sqlite3 *db, const char *sql, ex_table *t, char *err, size_t errlen);

/* One row per run: id, name, command, status, parent, started, wall_s, steps,
 * train_loss (last), val_loss (result, else last metric), accuracy, params,
 * bytes (latest model or checkpoint artifact the run wrote, else the file it
 * read), tokens_per_s (bench: decode speed; else the tokens_per_s result,
 * else the last tokens_per_s metric). */
int ex_runs_table(sqlite3 *db, const int64_t *ids, int n, ex_table *t, char *err, size_t errlen);

/* One row per run: the fingerprint (git revision and dirty flag, compiler,
 * flags, BLAS, threads, CPU, SIMD, host, dataset path, bytes and hash). */
int ex_runs_fingerprints(sqlite3 *db, const int64_t *ids, int n, ex_table *t, char *err, size_t errlen);

/* Side by side: *config gets the configuration keys whose values differ
 * between the runs (a key missing from a run counts as different, shown as
 * "-"), one column per run; *results every final result, one column per run. */
int ex_runs_compare(sqlite3 *db, const int64_t *ids, int n, ex_table *config, ex_table *results, char *err,
                    size_t errlen);

/* Prints everything about run id to f: the run row, its configuration,
 * results, artifacts, a summary of each metric, and its lineage. */
int ex_run_show(sqlite3 *db, int64_t id, FILE *f, char *err, size_t errlen);

/* The SQL list "(1,2,3)" of ids, malloc'd (caller frees), NULL when out of memory. */
char *ex_id_list(const int64_t *ids, int n);

#endif
