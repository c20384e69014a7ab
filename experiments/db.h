/* db.h - the run log: every run pare makes, in one SQLite file.
 *
 * A run is a row in `runs` (command, fully resolved configuration, seed,
 * parent run, status, times, fingerprint of build, machine and dataset) with
 * its per-step `metrics`, final `results` and `artifacts` (files it wrote or
 * read, with bytes and SHA-256). docs/runlog.md has the schema and queries.
 *
 * Writing (ex_log_*, ex_run_*, ex_metric, ...) is built so that the database
 * can never stop the work being logged:
 *   - every function accepts a NULL log (no database) and does nothing;
 *   - nothing returns an error the caller must handle: when the database is
 *     locked past the busy timeout, read-only, full, corrupt, not a database
 *     or a directory, the log warns ONCE on its warning stream, keeps the
 *     rows in memory and retries them at the next flush (locked, full disk),
 *     or counts them as lost (every other failure); ex_log_close tries a last
 *     time and reports "run log: N rows not recorded (reason)".
 *   - rows are buffered and written in one transaction per flush: every
 *     flush_rows rows, after flush_seconds, and at every result, artifact,
 *     run begin and run end.
 * Several processes may log into one file at once (WAL mode, a busy timeout,
 * BEGIN IMMEDIATE transactions): no row is lost or duplicated.
 *
 * (run, step, name) is unique in metrics and (run, name) in results; a second
 * value for the same key REPLACES the first (the latest measurement wins, for
 * example a step repeated after an interruption within one run).
 *
 * Reading (ex_db_open) is for the commands that look at runs: it opens an
 * existing database, brings its schema up to date and returns the sqlite3
 * connection; errors are reported, not hidden.
 */
#ifndef PARE_EX_DB_H
#define PARE_EX_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "keys/options.h"

#include <sqlite3.h>

/* The schema version this pare writes (PRAGMA user_version). */
#define EX_SCHEMA_VERSION 2

typedef struct ex_log ex_log;

typedef enum ex_status {
    EX_RUNNING = 0,
    EX_FINISHED,
    EX_FAILED,
    EX_DIVERGED,    /* stopped on a NaN or Inf */
    EX_INTERRUPTED, /* stopped by a signal after saving */
} ex_status;

/* "running", "finished", ... as stored in runs.status; "unknown" when out of range. */
const char *ex_status_name(ex_status s);

/* The dataset a run read: its path, size in bytes and 64-bit content hash
 * (as the data loader computes it; stored as 16 hex digits). */
typedef struct ex_dataset {
    const char *path;
    uint64_t bytes;
    uint64_t hash;
} ex_dataset;

typedef struct ex_log_opts {
    int timeout_ms;       /* busy timeout for each write transaction (default 5000) */
    int flush_rows;       /* flush once this many rows are buffered (default 256) */
    double flush_seconds; /* ... or once the oldest buffered row is this old (default 10) */
    size_t max_buffered;  /* rows kept in memory while the database is unavailable (default 500000) */
    FILE *warn;           /* where the single warning and the final count go; NULL = silent */
} ex_log_opts;

/* The defaults above, with warn = stderr. */
ex_log_opts ex_log_opts_default(void);

/* The database path to use: `given` when not NULL and not empty, else the
 * PARE_DB environment variable when set and not empty, else "pare.db". The
 * result is `given`, getenv()'s string or a literal: do not free it. */
const char *ex_db_path(const char *given);

/* Opens (creating if needed) the run log at ex_db_path(path) with default
 * options. The path "none" returns NULL: no database, every call a no-op.
 * Otherwise returns a log even when the database cannot be used (the problem
 * is warned about and its rows are counted as lost); NULL only when out of
 * memory. The caller owns the log and closes it with ex_log_close. A path
 * starting with "file:" is an SQLite URI (for example "file:x.db?mode=ro"). */
ex_log *ex_log_open(const char *path);

/* Same with explicit options (o NULL = defaults). */
ex_log *ex_log_open_opts(const char *path, const ex_log_opts *o);

/* The run log's keys, declared once for every command that records runs:
 * db (the database path; "" = $PARE_DB, else ./pare.db; none = do not record)
 * and name (a label for the run). */
void ex_log_keys(pare_keys *k, const char **db, const char **name);

/* Records the start of a run and returns its handle (>= 1) for the calls
 * below, or 0 when log is NULL or out of memory. command is the subcommand
 * ("train"); name a label (NULL or "" = none); config the fully resolved
 * configuration as "key=value" lines (also stored one row per key); parent
 * the database id of the run this one continues from (0 = none); data may be
 * NULL. The fingerprint (ex_fingerprint_collect) is taken here. The strings
 * are copied. The row is written at once; if that fails it is retried with
 * the next flush. */
int ex_run_begin(ex_log *log, const char *command, const char *name, const char *config,
                 uint64_t seed, int64_t parent, const ex_dataset *data);

/* The database id (runs.id) of a run handle, or 0 while it is not recorded
 * (or log is NULL). Checkpoints can store it to make lineage explicit. */
int64_t ex_run_id(const ex_log *log, int run);

/* Buffers one metric value of a run at a step. NaN and Inf are stored as NULL
 * (a diverged step stays visible as a missing value). */
void ex_metric(ex_log *log, int run, int64_t step, const char *name, double value);

/* Records a final result of a run (for example val_loss, params); flushes. */
void ex_result(ex_log *log, int run, const char *name, double value);

/* Records a file the run wrote or read: kind ("checkpoint", "model", "input",
 * "figure", ...), its path, size and SHA-256 (computed here from the file as
 * it is now). A file that cannot be read is recorded with NULL size and hash.
 * Flushes. */
void ex_artifact(ex_log *log, int run, const char *kind, const char *path);

/* Records the end of a run: status, end time and wall seconds; flushes. */
void ex_run_end(ex_log *log, int run, ex_status status);

/* Writes every buffered row now. Returns 0 when nothing is left buffered,
 * -1 when rows are still pending or were lost (see ex_log_problem). */
int ex_log_flush(ex_log *log);

/* The id of the run that WROTE a file with the same SHA-256 as the file at
 * path (the newest run that recorded it as an artifact of any kind but
 * "input"; runs that only read it, such as evaluations, do not count), or 0
 * when there is none, the file cannot be read or the database cannot be
 * read. This is how a run started from a checkpoint or model file finds its
 * parent without any id stored in the file. */
int64_t ex_log_run_of_file(ex_log *log, const char *path);

/* Rows that could not be recorded so far (0 for a NULL log). */
uint64_t ex_log_lost(const ex_log *log);

/* Rows waiting in memory for the database. */
size_t ex_log_pending(const ex_log *log);

/* The first problem met (for example "database is locked"), or NULL. */
const char *ex_log_problem(const ex_log *log);

/* The database path this log writes to ("" for NULL). */
const char *ex_log_path(const ex_log *log);

/* Flushes (waiting up to the full busy timeout), closes the database and
 * frees the log. If rows were not recorded, writes "run log: N rows not
 * recorded (reason)" to the warning stream. Returns the number of rows not
 * recorded. log may be NULL (returns 0). */
uint64_t ex_log_close(ex_log *log);

/* ---- reading ------------------------------------------------------------ */

/* Opens the existing database at ex_db_path(path) for the commands that read
 * runs, with a busy timeout, and migrates its schema to EX_SCHEMA_VERSION
 * when it is writable and older. Returns the connection (close it with
 * sqlite3_close), or NULL with a message in err when the file does not exist,
 * is not an SQLite database, has a schema newer than this pare, or cannot be
 * migrated. */
sqlite3 *ex_db_open(const char *path, char *err, size_t errlen);

/* Brings db's schema from its PRAGMA user_version up to `version` (1 ..
 * EX_SCHEMA_VERSION), applying every step between in order, all in one
 * BEGIN IMMEDIATE transaction (so concurrent openers migrate once). A
 * database already at or past `version` is left alone. Returns 0, or -1 with
 * a message in err, the database unchanged, when `version` is out of range,
 * the database's version is newer than EX_SCHEMA_VERSION, an existing table
 * has a name pare uses but was not made by pare, or a step fails. */
int ex_db_migrate_to(sqlite3 *db, int version, char *err, size_t errlen);

#endif
