/* db.c - the run log: schema, migrations, and writes that never stop a run.
 *
 * Writes go through one ordered queue of operations (run begin, metric,
 * result, artifact, run end). A flush writes the whole queue in one
 * BEGIN IMMEDIATE ... COMMIT transaction and empties it only after COMMIT
 * succeeded, so a failed flush loses nothing and is simply retried later.
 * Failures are sorted into two kinds:
 *   transient (SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL): keep the queue, retry
 *     at the next flush with a short timeout, and with the full timeout at close;
 *   permanent (read-only, corrupt, not a database, cannot open, I/O error,
 *     schema too new, ...): count the queue and every later row as lost.
 * Either way the first problem is warned about once.
 */
#include "db.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fingerprint.h"
#include "sha256.h"
#include "autograd/errmsg.h"

/* ---- schema and migrations ----------------------------------------------- */

/* Version 1: runs with their fingerprint, metrics, results, artifacts. */
static const char schema_v1[] =
    "CREATE TABLE runs("
    " id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL DEFAULT '',"
    " command TEXT NOT NULL,"
    " status TEXT NOT NULL DEFAULT 'running'"
    "  CHECK (status IN ('running','finished','failed','diverged','interrupted')),"
    " parent_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,"
    " seed INTEGER,"
    " config TEXT NOT NULL DEFAULT '',"
    " started_at TEXT NOT NULL,"
    " ended_at TEXT,"
    " wall_seconds REAL,"
    " pare_version TEXT, git_rev TEXT, git_dirty INTEGER, compiler TEXT, cflags TEXT,"
    " blas TEXT, threads INTEGER, cpu_model TEXT, simd TEXT,"
    " data_path TEXT, data_bytes INTEGER, data_hash TEXT);"
    "CREATE INDEX runs_parent ON runs(parent_id);"
    "CREATE TABLE metrics("
    " run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " step INTEGER NOT NULL,"
    " name TEXT NOT NULL,"
    " value REAL,"
    " PRIMARY KEY (run_id, step, name)) WITHOUT ROWID;"
    "CREATE TABLE results("
    " run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " name TEXT NOT NULL,"
    " value REAL,"
    " PRIMARY KEY (run_id, name)) WITHOUT ROWID;"
    "CREATE TABLE artifacts("
    " id INTEGER PRIMARY KEY,"
    " run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " kind TEXT NOT NULL,"
    " path TEXT NOT NULL,"
    " bytes INTEGER,"
    " sha256 TEXT,"
    " created_at TEXT NOT NULL);"
    "CREATE INDEX artifacts_run ON artifacts(run_id);";

/* Version 2: the host in the fingerprint, the configuration as one row per
 * key (so SQL can select and plot by any key), artifacts found by hash. */
static const char schema_v2[] =
    "ALTER TABLE runs ADD COLUMN host TEXT;"
    "CREATE TABLE config("
    " run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    " key TEXT NOT NULL,"
    " value TEXT NOT NULL,"
    " PRIMARY KEY (run_id, key)) WITHOUT ROWID;"
    "CREATE INDEX config_key ON config(key, value);"
    "CREATE INDEX artifacts_sha256 ON artifacts(sha256);";

/* Inserts the "key=value" lines of text as config rows of run_id (lines
 * without '=' and empty keys are skipped; a repeated key keeps the last). */
static int insert_config_rows(sqlite3 *db, sqlite3_stmt *ins, int64_t run_id, const char *text) {
    const char *p = text ? text : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq && eq > p) {
            size_t vlen = len - (size_t)(eq + 1 - p);
            if (vlen && eq[1 + vlen - 1] == '\r') vlen--;
            sqlite3_bind_int64(ins, 1, run_id);
            sqlite3_bind_text(ins, 2, p, (int)(eq - p), SQLITE_TRANSIENT);
            sqlite3_bind_text(ins, 3, eq + 1, (int)vlen, SQLITE_TRANSIENT);
            int rc = sqlite3_step(ins);
            sqlite3_reset(ins);
            if (rc != SQLITE_DONE) return sqlite3_errcode(db);
        }
        p += len + (nl ? 1 : 0);
    }
    return SQLITE_OK;
}

/* Step 1 -> 2 also fills the new config table from runs.config. */
static int fill_config_from_text(sqlite3 *db) {
    sqlite3_stmt *sel = NULL, *ins = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT id, config FROM runs", -1, &sel, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO config(run_id, key, value) VALUES (?,?,?)", -1,
                                &ins, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(sel)) == SQLITE_ROW)
        rc = insert_config_rows(db, ins, sqlite3_column_int64(sel, 0), (const char *)sqlite3_column_text(sel, 1));
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
    sqlite3_finalize(sel);
    sqlite3_finalize(ins);
    return rc;
}

static int user_version(sqlite3 *db, int *v) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Fails when a version-0 database already holds a table pare would create. */
static int check_foreign_tables(sqlite3 *db, char *err, size_t errlen) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT name FROM sqlite_master WHERE type='table' AND name IN "
                                "('runs','metrics','results','artifacts','config') LIMIT 1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        ag_errf(err, errlen,
                "it has a table '%s' but no pare schema version (PRAGMA user_version = 0): "
                "expected a pare run database or an empty file",
                (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        return SQLITE_MISMATCH;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Returns an SQLite result code (SQLITE_OK on success); err gets a message. */
static int migrate(sqlite3 *db, int version, char *err, size_t errlen) {
    if (version < 1 || version > EX_SCHEMA_VERSION) {
        ag_errf(err, errlen, "schema version %d requested: expected 1..%d", version, EX_SCHEMA_VERSION);
        return SQLITE_RANGE;
    }
    int have = 0;
    int rc = user_version(db, &have);
    if (rc != SQLITE_OK) goto sqlerr;
    if (have > EX_SCHEMA_VERSION) goto too_new;
    if (have >= version) return SQLITE_OK;

    rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) goto sqlerr;
    /* Re-read inside the lock: another process may have migrated meanwhile. */
    rc = user_version(db, &have);
    if (rc != SQLITE_OK) goto rollback;
    if (have > EX_SCHEMA_VERSION) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        goto too_new;
    }
    if (have == 0) {
        rc = check_foreign_tables(db, err, errlen);
        if (rc == SQLITE_MISMATCH) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
        if (rc != SQLITE_OK) goto rollback;
    }
    for (int v = have + 1; v <= version; v++) {
        if (v == 1) rc = sqlite3_exec(db, schema_v1, NULL, NULL, NULL);
        if (v == 2) {
            rc = sqlite3_exec(db, schema_v2, NULL, NULL, NULL);
            if (rc == SQLITE_OK) rc = fill_config_from_text(db);
        }
        if (rc != SQLITE_OK) goto rollback;
    }
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", version);
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) goto rollback;
    return SQLITE_OK;

rollback:
    ag_errf(err, errlen, "migrating the schema from version %d to %d: %s", have, version, sqlite3_errmsg(db));
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
sqlerr:
    ag_errf(err, errlen, "%s", sqlite3_errmsg(db));
    return rc;
too_new:
    ag_errf(err, errlen, "its schema version %d is newer than this pare understands (%d): use a newer pare",
            have, EX_SCHEMA_VERSION);
    return SQLITE_MISMATCH;
}

int ex_db_migrate_to(sqlite3 *db, int version, char *err, size_t errlen) {
    return migrate(db, version, err, errlen) == SQLITE_OK ? 0 : -1;
}

const char *ex_db_path(const char *given) {
    if (given && given[0]) return given;
    const char *env = getenv("PARE_DB");
    if (env && env[0]) return env;
    return "pare.db";
}

static int open_flags(const char *path, bool create) {
    int f = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
    if (create) f |= SQLITE_OPEN_CREATE;
    if (strncmp(path, "file:", 5) == 0) f |= SQLITE_OPEN_URI;
    return f;
}

sqlite3 *ex_db_open(const char *path, char *err, size_t errlen) {
    path = ex_db_path(path);
    struct stat sb;
    if (strncmp(path, "file:", 5) != 0) {
        if (stat(path, &sb) != 0) {
            ag_errf(err, errlen, "%s: no run database there (%s); runs are recorded by pare train/eval/... "
                    "into ./pare.db, --db PATH or $PARE_DB", path, strerror(errno));
            return NULL;
        }
        if (S_ISDIR(sb.st_mode)) {
            ag_errf(err, errlen, "%s: is a directory, expected an SQLite run database", path);
            return NULL;
        }
    }
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, open_flags(path, false), NULL);
    if (rc != SQLITE_OK) {
        ag_errf(err, errlen, "%s: cannot open: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    int have = 0;
    rc = user_version(db, &have);
    if (rc != SQLITE_OK && strncmp(path, "file:", 5) != 0) {
        /* on read-only storage a WAL database cannot even be read normally
         * (WAL needs its -shm file): read it as immutable instead, which is
         * what a read-only medium is (writers cannot be there) */
        sqlite3_close(db);
        db = NULL;
        char *uri = sqlite3_mprintf("file:%s?immutable=1", path);
        rc = uri ? sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL)
                 : SQLITE_NOMEM;
        sqlite3_free(uri);
        if (rc == SQLITE_OK) rc = user_version(db, &have);
    }
    if (rc != SQLITE_OK) {
        ag_errf(err, errlen, "%s: not a readable SQLite database: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    if (have < EX_SCHEMA_VERSION && !sqlite3_db_readonly(db, "main")) {
        char why[512];
        if (migrate(db, EX_SCHEMA_VERSION, why, sizeof why) != SQLITE_OK) {
            ag_errf(err, errlen, "%s: %s", path, why);
            sqlite3_close(db);
            return NULL;
        }
        have = EX_SCHEMA_VERSION;
    }
    if (have != EX_SCHEMA_VERSION) {
        ag_errf(err, errlen, "%s: schema version %d, expected %d%s", path, have, EX_SCHEMA_VERSION,
                have < EX_SCHEMA_VERSION ? " (read-only, so it cannot be migrated)" : " (use a newer pare)");
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

/* ---- the writer ------------------------------------------------------------ */

typedef enum { OP_BEGIN, OP_METRIC, OP_RESULT, OP_ARTIFACT, OP_END } op_type;

typedef struct op {
    op_type type;
    int run;      /* handle: index + 1 into log->runs */
    int name;     /* OP_METRIC, OP_RESULT: index into log->names; OP_END: status */
    int64_t step; /* OP_METRIC */
    double value; /* OP_METRIC, OP_RESULT; OP_END: wall seconds */
    char *text;   /* OP_ARTIFACT: "kind\0path\0sha256\0created"; OP_END: end time. Owned. */
    int64_t bytes; /* OP_ARTIFACT: -1 = unknown */
} op;

typedef struct run_slot {
    int64_t id;         /* runs.id, 0 until recorded */
    char *command, *name, *config, *data_path;
    int64_t seed, parent;
    uint64_t data_bytes, data_hash;
    bool has_data;
    char started[32];
    double t0;          /* monotonic seconds at begin */
    bool ended;
} run_slot;

enum { ST_RUN, ST_CONFIG, ST_METRIC, ST_RESULT, ST_ARTIFACT, ST_END, ST_COUNT };

struct ex_log {
    char *path;
    sqlite3 *db;
    ex_log_opts o;
    bool ready;           /* schema checked and statements prepared */
    bool broken;          /* permanent failure: record nothing more */
    bool warned;
    bool retrying;        /* a transient failure happened: retry with a short timeout */
    char problem[512];    /* first problem, "" if none */
    uint64_t lost;
    sqlite3_stmt *st[ST_COUNT];
    ex_fingerprint fp;
    bool have_fp;

    op *q;                /* [nq] the queue, in order */
    size_t nq, capq;
    double oldest;        /* monotonic time of the oldest queued row */
    double last_try;      /* monotonic time of the last flush attempt */

    run_slot *runs;       /* [nruns] */
    int nruns, capruns;
    char **names;         /* [nnames] interned metric and result names */
    int nnames, capnames, last_name;
};

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void utc_now(char out[32]) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ts.tv_nsec / 1000000) % 1000);
}

static char *dup_str(const char *s) {
    if (!s) s = "";
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

const char *ex_status_name(ex_status s) {
    static const char *const names[] = {"running", "finished", "failed", "diverged", "interrupted"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

ex_log_opts ex_log_opts_default(void) {
    ex_log_opts o = {.timeout_ms = 5000, .flush_rows = 256, .flush_seconds = 10.0, .max_buffered = 500000,
                     .warn = stderr};
    return o;
}

static bool transient(int rc) {
    rc &= 0xff;
    return rc == SQLITE_BUSY || rc == SQLITE_LOCKED || rc == SQLITE_FULL;
}

static void free_op(op *p) {
    free(p->text);
    p->text = NULL;
}

static void drop_queue(ex_log *log) {
    for (size_t i = 0; i < log->nq; i++) free_op(&log->q[i]);
    log->nq = 0;
}

/* Notes a failure: the first one is warned about; permanent ones drop the
 * queue (counted as lost) and stop all later writes. */
static void fail(ex_log *log, int rc, const char *what) {
    bool perm = !transient(rc);
    if (!log->problem[0])
        snprintf(log->problem, sizeof log->problem, "%s%s%s", what, log->db ? ": " : "",
                 log->db ? sqlite3_errmsg(log->db) : "");
    if (!log->warned && log->o.warn) {
        log->warned = true;
        if (perm)
            fprintf(log->o.warn, "pare: run log %s: %s; the run continues but is not recorded\n", log->path,
                    log->problem);
        else
            fprintf(log->o.warn, "pare: run log %s: %s; the run continues, rows are kept in memory and retried\n",
                    log->path, log->problem);
        fflush(log->o.warn);
    }
    if (perm) {
        log->lost += log->nq;
        drop_queue(log);
        log->broken = true;
    } else if (!log->retrying) {
        log->retrying = true;
        sqlite3_busy_timeout(log->db, log->o.timeout_ms < 200 ? log->o.timeout_ms : 200);
    }
}

static const char *const stmt_sql[ST_COUNT] = {
    [ST_RUN] = "INSERT INTO runs(name, command, status, parent_id, seed, config, started_at, pare_version,"
               " git_rev, git_dirty, compiler, cflags, blas, threads, cpu_model, simd, host, data_path,"
               " data_bytes, data_hash) VALUES (?,?,'running',?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [ST_CONFIG] = "INSERT OR REPLACE INTO config(run_id, key, value) VALUES (?,?,?)",
    [ST_METRIC] = "INSERT OR REPLACE INTO metrics(run_id, step, name, value) VALUES (?,?,?,?)",
    [ST_RESULT] = "INSERT OR REPLACE INTO results(run_id, name, value) VALUES (?,?,?)",
    [ST_ARTIFACT] = "INSERT INTO artifacts(run_id, kind, path, bytes, sha256, created_at) VALUES (?,?,?,?,?,?)",
    [ST_END] = "UPDATE runs SET status = ?, ended_at = ?, wall_seconds = ? WHERE id = ?",
};

/* Migrates and prepares the statements. Returns an SQLite code. */
static int make_ready(ex_log *log) {
    if (log->ready) return SQLITE_OK;
    char why[400];
    int rc = migrate(log->db, EX_SCHEMA_VERSION, why, sizeof why);
    if (rc != SQLITE_OK) {
        if (!log->problem[0]) snprintf(log->problem, sizeof log->problem, "%s", why);
        return rc == SQLITE_MISMATCH || rc == SQLITE_RANGE ? SQLITE_MISMATCH : rc;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        rc = sqlite3_prepare_v3(log->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &log->st[i], NULL);
        if (rc != SQLITE_OK) return rc;
    }
    log->ready = true;
    return SQLITE_OK;
}

static int step_reset(sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s) {
    if (s && s[0]) sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, i);
}

static void bind_real_or_null(sqlite3_stmt *st, int i, double v) {
    if (isfinite(v)) sqlite3_bind_double(st, i, v);
    else sqlite3_bind_null(st, i);
}

static int exec_begin(ex_log *log, run_slot *r) {
    sqlite3_stmt *st = log->st[ST_RUN];
    const ex_fingerprint *fp = &log->fp;
    sqlite3_bind_text(st, 1, r->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->command, -1, SQLITE_STATIC);
    if (r->parent > 0) sqlite3_bind_int64(st, 3, r->parent);
    sqlite3_bind_int64(st, 4, r->seed);
    sqlite3_bind_text(st, 5, r->config, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, r->started, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, fp->pare_version, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, fp->git_rev, -1, SQLITE_STATIC);
    if (fp->git_dirty >= 0) sqlite3_bind_int(st, 9, fp->git_dirty);
    sqlite3_bind_text(st, 10, fp->compiler, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, fp->cflags, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 12, fp->blas, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 13, fp->threads);
    sqlite3_bind_text(st, 14, fp->cpu_model, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 15, fp->simd, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 16, fp->host, -1, SQLITE_STATIC);
    char hash[17];
    if (r->has_data) {
        bind_text_or_null(st, 17, r->data_path);
        sqlite3_bind_int64(st, 18, (int64_t)r->data_bytes);
        snprintf(hash, sizeof hash, "%016llx", (unsigned long long)r->data_hash);
        sqlite3_bind_text(st, 19, hash, -1, SQLITE_STATIC);
    }
    int rc = step_reset(st);
    if (rc != SQLITE_OK) return rc;
    r->id = sqlite3_last_insert_rowid(log->db);
    sqlite3_stmt *ins = log->st[ST_CONFIG];
    rc = insert_config_rows(log->db, ins, r->id, r->config);
    sqlite3_clear_bindings(ins);
    return rc;
}

static int exec_op(ex_log *log, const op *p) {
    run_slot *r = &log->runs[p->run - 1];
    sqlite3_stmt *st;
    switch (p->type) {
    case OP_BEGIN:
        return exec_begin(log, r);
    case OP_METRIC:
        st = log->st[ST_METRIC];
        sqlite3_bind_int64(st, 1, r->id);
        sqlite3_bind_int64(st, 2, p->step);
        sqlite3_bind_text(st, 3, log->names[p->name], -1, SQLITE_STATIC);
        bind_real_or_null(st, 4, p->value);
        return step_reset(st);
    case OP_RESULT:
        st = log->st[ST_RESULT];
        sqlite3_bind_int64(st, 1, r->id);
        sqlite3_bind_text(st, 2, log->names[p->name], -1, SQLITE_STATIC);
        bind_real_or_null(st, 3, p->value);
        return step_reset(st);
    case OP_ARTIFACT: {
        const char *kind = p->text, *path = kind + strlen(kind) + 1, *sha = path + strlen(path) + 1,
                   *created = sha + strlen(sha) + 1;
        st = log->st[ST_ARTIFACT];
        sqlite3_bind_int64(st, 1, r->id);
        sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, path, -1, SQLITE_STATIC);
        if (p->bytes >= 0) sqlite3_bind_int64(st, 4, p->bytes);
        bind_text_or_null(st, 5, sha);
        sqlite3_bind_text(st, 6, created, -1, SQLITE_STATIC);
        return step_reset(st);
    }
    case OP_END:
        st = log->st[ST_END];
        sqlite3_bind_text(st, 1, ex_status_name((ex_status)p->name), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, p->text, -1, SQLITE_STATIC);
        bind_real_or_null(st, 3, p->value);
        sqlite3_bind_int64(st, 4, r->id);
        return step_reset(st);
    }
    return SQLITE_MISUSE;
}

int ex_log_flush(ex_log *log) {
    if (!log) return 0;
    if (log->broken) return log->nq ? -1 : (log->lost ? -1 : 0);
    if (log->nq == 0) return 0;
    log->last_try = mono_now();
    int rc = make_ready(log);
    if (rc != SQLITE_OK) {
        fail(log, rc, "cannot use the database");
        return -1;
    }
    rc = sqlite3_exec(log->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        fail(log, rc, "cannot start a write transaction");
        return -1;
    }
    size_t i = 0;
    for (; i < log->nq && rc == SQLITE_OK; i++) rc = exec_op(log, &log->q[i]);
    if (rc == SQLITE_OK) rc = sqlite3_exec(log->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        int code = sqlite3_extended_errcode(log->db);
        if (code == SQLITE_OK) code = rc;
        /* Runs inserted by this failed transaction are not recorded after all. */
        for (size_t k = 0; k < i && k < log->nq; k++)
            if (log->q[k].type == OP_BEGIN) log->runs[log->q[k].run - 1].id = 0;
        char what[64];
        snprintf(what, sizeof what, "cannot write %zu rows", log->nq);
        fail(log, code, what);
        sqlite3_exec(log->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    drop_queue(log);
    if (log->retrying) {
        log->retrying = false;
        sqlite3_busy_timeout(log->db, log->o.timeout_ms);
    }
    return 0;
}

/* Appends an op; the text (if any) becomes the queue's. Counts it lost when
 * the log is broken or the buffer is full. Returns the op or NULL. */
static op *push(ex_log *log, op o) {
    if (log->broken || log->nq >= log->o.max_buffered) {
        if (!log->broken && !log->problem[0])
            snprintf(log->problem, sizeof log->problem, "more than %zu rows waiting for the database",
                     log->o.max_buffered);
        log->lost++;
        free(o.text);
        return NULL;
    }
    if (log->nq == log->capq) {
        size_t cap = log->capq ? 2 * log->capq : 256;
        op *q = realloc(log->q, cap * sizeof *q);
        if (!q) {
            if (!log->problem[0]) snprintf(log->problem, sizeof log->problem, "out of memory buffering rows");
            log->lost++;
            free(o.text);
            return NULL;
        }
        log->q = q;
        log->capq = cap;
    }
    if (log->nq == 0) log->oldest = mono_now();
    log->q[log->nq] = o;
    return &log->q[log->nq++];
}

static int intern(ex_log *log, const char *name) {
    if (!name) name = "";
    if (log->last_name >= 0 && strcmp(log->names[log->last_name], name) == 0) return log->last_name;
    for (int i = 0; i < log->nnames; i++)
        if (strcmp(log->names[i], name) == 0) return log->last_name = i;
    if (log->nnames == log->capnames) {
        int cap = log->capnames ? 2 * log->capnames : 32;
        char **n = realloc(log->names, (size_t)cap * sizeof *n);
        if (!n) return -1;
        log->names = n;
        log->capnames = cap;
    }
    char *d = dup_str(name);
    if (!d) return -1;
    log->names[log->nnames] = d;
    return log->last_name = log->nnames++;
}

static bool valid_run(const ex_log *log, int run) { return log && run >= 1 && run <= log->nruns; }

ex_log *ex_log_open_opts(const char *path, const ex_log_opts *o) {
    path = ex_db_path(path);
    if (strcmp(path, "none") == 0) return NULL;
    ex_log *log = calloc(1, sizeof *log);
    if (!log) return NULL;
    log->o = o ? *o : ex_log_opts_default();
    if (log->o.timeout_ms < 0) log->o.timeout_ms = 0;
    if (log->o.flush_rows < 1) log->o.flush_rows = 1;
    if (log->o.max_buffered < 1) log->o.max_buffered = 1;
    log->last_name = -1;
    log->path = dup_str(path);
    if (!log->path) {
        free(log);
        return NULL;
    }
    struct stat sb;
    if (strncmp(path, "file:", 5) != 0 && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(log->problem, sizeof log->problem, "is a directory, expected an SQLite database file");
        fail(log, SQLITE_CANTOPEN, log->problem);
        return log;
    }
    int rc = sqlite3_open_v2(path, &log->db, open_flags(path, true), NULL);
    if (rc != SQLITE_OK) {
        fail(log, rc, "cannot open");
        return log;
    }
    sqlite3_extended_result_codes(log->db, 1);
    sqlite3_busy_timeout(log->db, log->o.timeout_ms);
    /* WAL lets readers and one writer work at once; NORMAL sync is durable
     * across a crash of pare (not of the machine), and cheap. These may fail
     * on a locked or read-only file: the first flush then reports it. */
    sqlite3_exec(log->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    sqlite3_exec(log->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    rc = make_ready(log);
    if (rc != SQLITE_OK) fail(log, rc, "cannot use the database");
    return log;
}

ex_log *ex_log_open(const char *path) { return ex_log_open_opts(path, NULL); }

int ex_run_begin(ex_log *log, const char *command, const char *name, const char *config, uint64_t seed,
                 int64_t parent, const ex_dataset *data) {
    if (!log) return 0;
    if (log->nruns == log->capruns) {
        int cap = log->capruns ? 2 * log->capruns : 4;
        run_slot *r = realloc(log->runs, (size_t)cap * sizeof *r);
        if (!r) return 0;
        log->runs = r;
        log->capruns = cap;
    }
    run_slot *r = &log->runs[log->nruns];
    memset(r, 0, sizeof *r);
    r->command = dup_str(command);
    r->name = dup_str(name);
    r->config = dup_str(config);
    r->data_path = dup_str(data ? data->path : NULL);
    if (!r->command || !r->name || !r->config || !r->data_path) {
        free(r->command);
        free(r->name);
        free(r->config);
        free(r->data_path);
        return 0;
    }
    r->seed = (int64_t)seed;
    r->parent = parent;
    if (data) {
        r->has_data = true;
        r->data_bytes = data->bytes;
        r->data_hash = data->hash;
    }
    utc_now(r->started);
    r->t0 = mono_now();
    int run = ++log->nruns;
    if (!log->have_fp) {
        ex_fingerprint_collect(&log->fp);
        log->have_fp = true;
    }
    op o = {.type = OP_BEGIN, .run = run};
    push(log, o);
    ex_log_flush(log);
    return run;
}

int64_t ex_run_id(const ex_log *log, int run) { return valid_run(log, run) ? log->runs[run - 1].id : 0; }

void ex_metric(ex_log *log, int run, int64_t step, const char *name, double value) {
    if (!valid_run(log, run)) return;
    int n = intern(log, name);
    op o = {.type = OP_METRIC, .run = run, .name = n, .step = step, .value = value};
    if (n < 0) {
        log->lost++;
        return;
    }
    if (!push(log, o)) return;
    bool due;
    if (!log->retrying)
        due = log->nq >= (size_t)log->o.flush_rows || mono_now() - log->oldest >= log->o.flush_seconds;
    else /* the database was unavailable: try again now and then, not at every row */
        due = log->nq % (size_t)log->o.flush_rows == 0 && mono_now() - log->last_try >= 1.0;
    if (due) ex_log_flush(log);
}

void ex_result(ex_log *log, int run, const char *name, double value) {
    if (!valid_run(log, run)) return;
    int n = intern(log, name);
    if (n < 0) {
        log->lost++;
        return;
    }
    op o = {.type = OP_RESULT, .run = run, .name = n, .value = value};
    push(log, o);
    ex_log_flush(log);
}

void ex_artifact(ex_log *log, int run, const char *kind, const char *path) {
    if (!valid_run(log, run)) return;
    if (!kind) kind = "";
    if (!path) path = "";
    char sha[65] = "", created[32], why[256];
    uint64_t bytes = 0;
    bool ok = ex_sha256_file(path, sha, &bytes, why, sizeof why) == 0;
    if (!ok) sha[0] = '\0';
    utc_now(created);
    size_t lk = strlen(kind) + 1, lp = strlen(path) + 1, ls = strlen(sha) + 1, lc = strlen(created) + 1;
    char *text = malloc(lk + lp + ls + lc);
    if (!text) {
        log->lost++;
        return;
    }
    memcpy(text, kind, lk);
    memcpy(text + lk, path, lp);
    memcpy(text + lk + lp, sha, ls);
    memcpy(text + lk + lp + ls, created, lc);
    op o = {.type = OP_ARTIFACT, .run = run, .text = text, .bytes = ok ? (int64_t)bytes : -1};
    push(log, o);
    ex_log_flush(log);
}

void ex_run_end(ex_log *log, int run, ex_status status) {
    if (!valid_run(log, run)) return;
    run_slot *r = &log->runs[run - 1];
    char *ended = malloc(32);
    if (!ended) {
        log->lost++;
        return;
    }
    utc_now(ended);
    op o = {.type = OP_END, .run = run, .name = (int)status, .value = mono_now() - r->t0, .text = ended};
    r->ended = true;
    push(log, o);
    ex_log_flush(log);
}

int64_t ex_log_run_of_file(ex_log *log, const char *path) {
    if (!log || !log->db || !path) return 0;
    char sha[65], why[256];
    if (ex_sha256_file(path, sha, NULL, why, sizeof why) != 0) return 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(log->db, "SELECT run_id FROM artifacts WHERE sha256 = ? AND kind <> 'input' ORDER BY id DESC LIMIT 1", -1,
                           &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
    int64_t id = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return id;
}

uint64_t ex_log_lost(const ex_log *log) { return log ? log->lost : 0; }
size_t ex_log_pending(const ex_log *log) { return log ? log->nq : 0; }
const char *ex_log_problem(const ex_log *log) { return log && log->problem[0] ? log->problem : NULL; }
const char *ex_log_path(const ex_log *log) { return log ? log->path : ""; }

uint64_t ex_log_close(ex_log *log) {
    if (!log) return 0;
    if (log->nq && !log->broken) {
        /* Last chance, with the full timeout. */
        if (log->db) sqlite3_busy_timeout(log->db, log->o.timeout_ms);
        log->retrying = false;
        ex_log_flush(log);
    }
    log->lost += log->nq;
    drop_queue(log);
    uint64_t lost = log->lost;
    if (lost && log->o.warn) {
        fprintf(log->o.warn, "run log: %llu rows not recorded in %s (%s)\n", (unsigned long long)lost, log->path,
                log->problem[0] ? log->problem : "unknown reason");
        fflush(log->o.warn);
    }
    for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(log->st[i]);
    sqlite3_close(log->db);
    for (int i = 0; i < log->nruns; i++) {
        free(log->runs[i].command);
        free(log->runs[i].name);
        free(log->runs[i].config);
        free(log->runs[i].data_path);
    }
    for (int i = 0; i < log->nnames; i++) free(log->names[i]);
    free(log->names);
    free(log->runs);
    free(log->q);
    free(log->path);
    free(log);
    return lost;
}

void ex_log_keys(pare_keys *k, const char **db, const char **name) {
    pare_opt r[] = {
        PARE_OPT_STRING("db", db, "", "run log database (\"\" = $PARE_DB, else ./pare.db; none = do not record)"),
        PARE_OPT_STRING("name", name, "", "a label for this run in the run log"),
    };
    pare_keys_add(k, r, (int)(sizeof r / sizeof r[0]));
}
