/* test_db.c - the run log: SHA-256, schema and migrations, what a run
 * records, lineage, a failing database never stopping the caller, and
 * several processes logging into one file at once. */
#define _GNU_SOURCE /* nftw FTW_DEPTH|FTW_PHYS */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_files.h"
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "experiments/db.h"
#include "experiments/sha256.h"

typedef struct fixture {
    char dir[64];
    char db[128];
    FILE *warn; /* captures the log's warnings */
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (test_tmpdir(f->dir, sizeof f->dir, "db") != 0) return -1;
    snprintf(f->db, sizeof f->db, "%s/runs.db", f->dir);
    f->warn = tmpfile();
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    chmod(f->dir, 0700);
    test_rmtree(f->dir);
    fclose(f->warn);
    free(f);
    return 0;
}

static ex_log_opts quick_opts(fixture *f, int timeout_ms) {
    ex_log_opts o = ex_log_opts_default();
    o.timeout_ms = timeout_ms;
    o.warn = f->warn;
    return o;
}

/* What the log wrote to its warning stream. */
static char *warnings(fixture *f) {
    static char buf[8192];
    fflush(f->warn);
    rewind(f->warn);
    size_t n = fread(buf, 1, sizeof buf - 1, f->warn);
    buf[n] = '\0';
    return buf;
}

static int count_lines_with(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

static sqlite3 *raw_open(const char *path) {
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* The integer the query's first column returns in its first row (-1 if none). */
static int64_t query_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

static double query_double(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    double v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_double(st, 0) : NAN;
    sqlite3_finalize(st);
    return v;
}

static char *query_text(sqlite3 *db, const char *sql) {
    static char buf[1024];
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    buf[0] = '\0';
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(buf, sizeof buf, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return buf;
}

/* ---- SHA-256 --------------------------------------------------------------- */

static void sha_hex(const void *msg, size_t n, char hex[65]) {
    ex_sha256 s;
    uint8_t d[32];
    ex_sha256_init(&s);
    ex_sha256_update(&s, msg, n);
    ex_sha256_final(&s, d);
    ex_sha256_hex(d, hex);
}

/* FIPS 180-4 examples (and the NIST "one million a" vector). */
static void test_sha256_known_vectors(void **state) {
    (void)state;
    char hex[65];
    sha_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha_hex(m448, strlen(m448), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                       "mnopqrstnopqrstu";
    sha_hex(m896, strlen(m896), hex);
    assert_string_equal(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    /* One million 'a', fed in uneven pieces to exercise the partial-block path. */
    ex_sha256 s;
    ex_sha256_init(&s);
    char a[997];
    memset(a, 'a', sizeof a);
    size_t left = 1000000;
    for (size_t piece = 1; left; piece = piece % 900 + 13) {
        size_t n = piece < left ? piece : left;
        ex_sha256_update(&s, a, n);
        left -= n;
    }
    uint8_t d[32];
    ex_sha256_final(&s, d);
    ex_sha256_hex(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_sha256_file(void **state) {
    fixture *f = *state;
    char path[160], hex[65], err[256];
    snprintf(path, sizeof path, "%s/abc.txt", f->dir);
    test_write_file(path, "abc");
    uint64_t bytes = 0;
    assert_int_equal(ex_sha256_file(path, hex, &bytes, err, sizeof err), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(bytes, 3);
    snprintf(path, sizeof path, "%s/missing", f->dir);
    assert_int_equal(ex_sha256_file(path, hex, &bytes, err, sizeof err), -1);
    assert_non_null(strstr(err, "missing"));
}

/* ---- schema and migrations --------------------------------------------------- */

static void test_new_database_has_current_schema(void **state) {
    fixture *f = *state;
    ex_log_opts o = quick_opts(f, 1000);
    ex_log *log = ex_log_open_opts(f->db, &o);
    assert_non_null(log);
    assert_null(ex_log_problem(log));
    assert_int_equal(ex_log_close(log), 0);
    sqlite3 *db = raw_open(f->db);
    assert_int_equal(query_int(db, "PRAGMA user_version"), EX_SCHEMA_VERSION);
    assert_string_equal(query_text(db, "PRAGMA journal_mode"), "wal");
    assert_int_equal(query_int(db, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
                                   "('runs','metrics','results','artifacts','config')"),
                     5);
    sqlite3_close(db);
}

/* A database made by the version-1 schema, with a run in it, is migrated to
 * the current version: the new column exists and the configuration text is
 * split into config rows. */
static void test_migrates_a_version_1_database(void **state) {
    fixture *f = *state;
    char err[512];
    sqlite3 *db = raw_open(f->db);
    assert_int_equal(ex_db_migrate_to(db, 1, err, sizeof err), 0);
    assert_int_equal(query_int(db, "PRAGMA user_version"), 1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM sqlite_master WHERE name='config'"), 0);
    assert_int_equal(sqlite3_exec(db,
                                  "INSERT INTO runs(command, config, started_at) VALUES "
                                  "('train', 'lr=0.001\nsteps=200\nmethod=qat\n', '2026-01-01T00:00:00Z');"
                                  "INSERT INTO metrics VALUES (1, 10, 'train_loss', 2.5);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    db = ex_db_open(f->db, err, sizeof err);
    assert_non_null(db);
    assert_int_equal(query_int(db, "PRAGMA user_version"), EX_SCHEMA_VERSION);
    assert_int_equal(query_int(db, "SELECT count(*) FROM config WHERE run_id = 1"), 3);
    assert_string_equal(query_text(db, "SELECT value FROM config WHERE run_id = 1 AND key = 'steps'"), "200");
    assert_int_equal(query_int(db, "SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'host'"), 1);
    assert_float_equal(query_double(db, "SELECT value FROM metrics WHERE run_id = 1 AND step = 10"), 2.5, 0);
    sqlite3_close(db);

    /* Opening again is a no-op: still one set of config rows. */
    db = ex_db_open(f->db, err, sizeof err);
    assert_non_null(db);
    assert_int_equal(query_int(db, "SELECT count(*) FROM config"), 3);
    sqlite3_close(db);
}

/* An empty file (version 0) is brought to the current version by the
 * writer; so is a version-1 database the writer opens. */
static void test_migrates_an_empty_file_and_from_the_writer(void **state) {
    fixture *f = *state;
    test_write_file(f->db, "");
    ex_log_opts o = quick_opts(f, 1000);
    ex_log *log = ex_log_open_opts(f->db, &o);
    int run = ex_run_begin(log, "train", "a", "x=1\n", 1, 0, NULL);
    ex_run_end(log, run, EX_FINISHED);
    assert_int_equal(ex_log_close(log), 0);
    sqlite3 *db = raw_open(f->db);
    assert_int_equal(query_int(db, "PRAGMA user_version"), EX_SCHEMA_VERSION);
    assert_int_equal(query_int(db, "SELECT count(*) FROM runs WHERE status = 'finished'"), 1);
    sqlite3_close(db);

    char path2[160], err[256];
    snprintf(path2, sizeof path2, "%s/v1.db", f->dir);
    db = raw_open(path2);
    assert_int_equal(ex_db_migrate_to(db, 1, err, sizeof err), 0);
    sqlite3_close(db);
    log = ex_log_open_opts(path2, &o);
    run = ex_run_begin(log, "train", "b", "y=2\n", 1, 0, NULL);
    assert_true(ex_run_id(log, run) > 0);
    assert_int_equal(ex_log_close(log), 0);
    db = raw_open(path2);
    assert_int_equal(query_int(db, "PRAGMA user_version"), EX_SCHEMA_VERSION);
    assert_string_equal(query_text(db, "SELECT value FROM config WHERE key = 'y'"), "2");
    sqlite3_close(db);
}

/* A database that is not pare's, or is newer than this pare, is left
 * untouched and reported. */
static void test_refuses_foreign_and_newer_databases(void **state) {
    fixture *f = *state;
    char err[512];
    sqlite3 *db = raw_open(f->db);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE runs(x); INSERT INTO runs VALUES (7);", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_null(ex_db_open(f->db, err, sizeof err));
    assert_non_null(strstr(err, "runs"));
    ex_log_opts o = quick_opts(f, 100);
    ex_log *log = ex_log_open_opts(f->db, &o);
    int run = ex_run_begin(log, "train", "", "", 0, 0, NULL);
    ex_metric(log, run, 1, "loss", 1.0);
    ex_run_end(log, run, EX_FINISHED);
    assert_int_equal(ex_log_close(log), 3);
    db = raw_open(f->db);
    assert_int_equal(query_int(db, "SELECT x FROM runs"), 7);
    assert_int_equal(query_int(db, "PRAGMA user_version"), 0);
    sqlite3_close(db);

    char newer[160];
    snprintf(newer, sizeof newer, "%s/newer.db", f->dir);
    db = raw_open(newer);
    sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
    sqlite3_close(db);
    assert_null(ex_db_open(newer, err, sizeof err));
    assert_non_null(strstr(err, "99"));
    log = ex_log_open_opts(newer, &o);
    run = ex_run_begin(log, "train", "", "", 0, 0, NULL);
    assert_int_equal(ex_log_close(log), 1);
    assert_non_null(strstr(warnings(f), "newer"));
}

static void test_open_reports_missing_file(void **state) {
    fixture *f = *state;
    char err[512];
    assert_null(ex_db_open(f->db, err, sizeof err));
    assert_non_null(strstr(err, f->db));
    assert_null(ex_db_open(f->dir, err, sizeof err));
    assert_non_null(strstr(err, "directory"));
}

/* ---- what a run records -------------------------------------------------------- */

static void test_run_records_everything(void **state) {
    fixture *f = *state;
    char ckpt[160];
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", f->dir);
    test_write_file(ckpt, "abc");
    ex_log_opts o = quick_opts(f, 1000);
    o.flush_rows = 7; /* several flushes */
    ex_log *log = ex_log_open_opts(f->db, &o);
    ex_dataset data = {"data/tiny.txt", 1115394, 0x0123456789abcdefull};
    int run = ex_run_begin(log, "train", "teacher", "lr=0.001\nsteps=20\n", 1337, 0, &data);
    assert_true(run >= 1);
    int64_t id = ex_run_id(log, run);
    assert_true(id >= 1);
    for (int s = 1; s <= 20; s++) {
        ex_metric(log, run, s, "train_loss", 4.0 - 0.1 * s);
        if (s % 5 == 0) ex_metric(log, run, s, "val_loss", 4.1 - 0.1 * s);
    }
    ex_metric(log, run, 20, "train_loss", 1.5);      /* replaces the value at step 20 */
    ex_metric(log, run, 21, "train_loss", NAN);      /* stored as NULL */
    ex_result(log, run, "val_loss", 2.1);
    ex_result(log, run, "params", 12345);
    ex_artifact(log, run, "checkpoint", ckpt);
    ex_run_end(log, run, EX_DIVERGED);
    assert_int_equal(ex_log_close(log), 0);
    assert_string_equal(warnings(f), "");

    sqlite3 *db = raw_open(f->db);
    assert_int_equal(query_int(db, "SELECT count(*) FROM metrics WHERE name = 'train_loss'"), 21);
    assert_int_equal(query_int(db, "SELECT count(*) FROM metrics WHERE name = 'val_loss'"), 4);
    assert_float_equal(query_double(db, "SELECT value FROM metrics WHERE step = 20 AND name = 'train_loss'"), 1.5,
                       0);
    assert_int_equal(query_int(db, "SELECT value IS NULL FROM metrics WHERE step = 21"), 1);
    assert_float_equal(query_double(db, "SELECT value FROM results WHERE name = 'val_loss'"), 2.1, 0);
    assert_string_equal(query_text(db, "SELECT status FROM runs"), "diverged");
    assert_string_equal(query_text(db, "SELECT name || '|' || command || '|' || seed FROM runs"),
                        "teacher|train|1337");
    assert_string_equal(query_text(db, "SELECT data_path || '|' || data_bytes || '|' || data_hash FROM runs"),
                        "data/tiny.txt|1115394|0123456789abcdef");
    assert_int_equal(query_int(db, "SELECT wall_seconds >= 0 AND ended_at >= started_at FROM runs"), 1);
    assert_int_equal(query_int(db, "SELECT length(git_rev) > 0 AND git_dirty IN (0, 1) OR git_rev = 'unknown' "
                                   "FROM runs"),
                     1);
    assert_int_equal(query_int(db, "SELECT length(compiler) > 0 AND length(cflags) > 0 AND length(blas) > 0 AND "
                                   "threads >= 1 AND length(cpu_model) > 0 AND length(simd) > 0 FROM runs"),
                     1);
    assert_string_equal(query_text(db, "SELECT value FROM config WHERE key = 'steps'"), "20");
    assert_string_equal(query_text(db, "SELECT kind || '|' || bytes || '|' || sha256 FROM artifacts"),
                        "checkpoint|3|ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sqlite3_close(db);
}

/* teacher -> student (from the teacher's checkpoint) -> quantized (from the
 * student's): each run finds its parent by the checkpoint's SHA-256, and a
 * recursive query walks the chain back. */
static void test_lineage_chain(void **state) {
    fixture *f = *state;
    ex_log_opts o = quick_opts(f, 1000);
    ex_log *log = ex_log_open_opts(f->db, &o);
    const char *names[3] = {"teacher", "student", "quantized"};
    int64_t ids[3];
    char prev[160] = "";
    for (int i = 0; i < 3; i++) {
        int64_t parent = prev[0] ? ex_log_run_of_file(log, prev) : 0;
        if (i > 0) assert_int_equal(parent, ids[i - 1]);
        int run = ex_run_begin(log, "train", names[i], "", 1, parent, NULL);
        ids[i] = ex_run_id(log, run);
        char path[160];
        snprintf(path, sizeof path, "%s/%s.ckpt", f->dir, names[i]);
        test_write_file(path, names[i]); /* distinct content, distinct hash */
        ex_metric(log, run, 1, "train_loss", 3.0 - i);
        ex_artifact(log, run, "checkpoint", path);
        ex_run_end(log, run, EX_FINISHED);
        /* an evaluation READS the checkpoint: it is a child of the run that
         * wrote it, and must not become the parent of the next run */
        int ev = ex_run_begin(log, "eval", "", "", 1, ex_log_run_of_file(log, path), NULL);
        ex_artifact(log, ev, "input", path);
        ex_run_end(log, ev, EX_FINISHED);
        assert_int_equal(ex_log_run_of_file(log, path), ids[i]);
        snprintf(prev, sizeof prev, "%s", path);
    }
    char missing[160];
    snprintf(missing, sizeof missing, "%s/nope.ckpt", f->dir);
    assert_int_equal(ex_log_run_of_file(log, missing), 0);
    assert_int_equal(ex_log_close(log), 0);

    sqlite3 *db = raw_open(f->db);
    char sql[512];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE chain(id, parent_id, depth) AS ("
             " SELECT id, parent_id, 0 FROM runs WHERE id = %lld"
             " UNION ALL SELECT r.id, r.parent_id, depth + 1 FROM runs r JOIN chain c ON r.id = c.parent_id)"
             " SELECT group_concat(name, '<-') FROM (SELECT name FROM chain JOIN runs USING (id) ORDER BY depth)",
             (long long)ids[2]);
    assert_string_equal(query_text(db, sql), "quantized<-student<-teacher");
    assert_int_equal(query_int(db, "SELECT count(*) FROM runs r JOIN runs p ON p.id = r.parent_id "
                                   "WHERE r.command = 'eval' AND p.command = 'train'"),
                     3);
    sqlite3_close(db);
}

static void test_null_log_is_a_no_op(void **state) {
    (void)state;
    assert_null(ex_log_open("none"));
    ex_log *log = NULL;
    int run = ex_run_begin(log, "train", "x", "a=1\n", 1, 0, NULL);
    assert_int_equal(run, 0);
    ex_metric(log, run, 1, "train_loss", 1.0);
    ex_result(log, run, "val_loss", 1.0);
    ex_artifact(log, run, "checkpoint", "/nonexistent");
    ex_run_end(log, run, EX_FINISHED);
    assert_int_equal(ex_log_flush(log), 0);
    assert_int_equal(ex_run_id(log, run), 0);
    assert_int_equal(ex_log_lost(log), 0);
    assert_null(ex_log_problem(log));
    assert_int_equal(ex_log_close(log), 0);
}

static void test_db_path_resolution(void **state) {
    (void)state;
    unsetenv("PARE_DB");
    assert_string_equal(ex_db_path(NULL), "pare.db");
    assert_string_equal(ex_db_path(""), "pare.db");
    setenv("PARE_DB", "/tmp/elsewhere.db", 1);
    assert_string_equal(ex_db_path(NULL), "/tmp/elsewhere.db");
    assert_string_equal(ex_db_path("given.db"), "given.db");
    unsetenv("PARE_DB");
}

/* ---- a failing database never stops the work ------------------------------------ */

/* Logs a run of `steps` steps; returns the rows that makes (begin + metrics +
 * result + end). Every call must simply return. */
static int log_a_run(ex_log *log, int steps) {
    int run = ex_run_begin(log, "train", "doomed", "a=1\n", 1, 0, NULL);
    for (int s = 0; s < steps; s++) ex_metric(log, run, s, "train_loss", 1.0 / (s + 1));
    ex_result(log, run, "val_loss", 0.5);
    ex_run_end(log, run, EX_FINISHED);
    return steps + 3;
}

static void expect_one_warning_and_count(fixture *f, uint64_t lost) {
    const char *w = warnings(f);
    assert_int_equal(count_lines_with(w, "pare: run log"), 1);
    char want[64];
    snprintf(want, sizeof want, "run log: %llu rows not recorded", (unsigned long long)lost);
    if (!strstr(w, want)) fail_msg("expected '%s' in:\n%s", want, w);
}

static void test_read_only_database(void **state) {
    fixture *f = *state;
    ex_log_opts o = quick_opts(f, 100);
    ex_log_close(ex_log_open_opts(f->db, &o)); /* create it */
    char uri[256];
    snprintf(uri, sizeof uri, "file:%s?mode=ro", f->db);
    ex_log *log = ex_log_open_opts(uri, &o);
    assert_non_null(log);
    int rows = log_a_run(log, 300);
    assert_int_equal(ex_log_lost(log), (uint64_t)rows); /* permanent: counted at once */
    assert_non_null(strstr(ex_log_problem(log), "readonly"));
    assert_int_equal(ex_log_close(log), (uint64_t)rows);
    expect_one_warning_and_count(f, (uint64_t)rows);

    /* The same through file permissions, where they bind (not for root). */
    if (geteuid() != 0) {
        chmod(f->db, 0444);
        chmod(f->dir, 0555);
        log = ex_log_open_opts(f->db, &o);
        rows = log_a_run(log, 10);
        assert_int_equal(ex_log_close(log), (uint64_t)rows);
        chmod(f->dir, 0700);
        chmod(f->db, 0644);
    } else {
        print_message("[   NOTE   ] running as root: file permissions do not bind, read-only tested via mode=ro\n");
    }
    sqlite3 *db = raw_open(f->db);
    assert_int_equal(query_int(db, "SELECT count(*) FROM runs"), 0);
    sqlite3_close(db);
}

static void test_directory_instead_of_file(void **state) {
    fixture *f = *state;
    ex_log_opts o = quick_opts(f, 100);
    ex_log *log = ex_log_open_opts(f->dir, &o);
    assert_non_null(log);
    int rows = log_a_run(log, 50);
    ex_artifact(log, 1, "checkpoint", f->dir);
    assert_int_equal(ex_log_close(log), (uint64_t)rows + 1);
    expect_one_warning_and_count(f, (uint64_t)rows + 1);
    assert_non_null(strstr(warnings(f), "directory"));
}

static void test_corrupt_file(void **state) {
    fixture *f = *state;
    char junk[4096];
    for (size_t i = 0; i < sizeof junk - 1; i++) junk[i] = (char)('A' + i % 26);
    junk[sizeof junk - 1] = '\0';
    test_write_file(f->db, junk);
    ex_log_opts o = quick_opts(f, 100);
    ex_log *log = ex_log_open_opts(f->db, &o);
    int rows = log_a_run(log, 20);
    assert_int_equal(ex_log_close(log), (uint64_t)rows);
    expect_one_warning_and_count(f, (uint64_t)rows);
    /* The file is left as it was. */
    FILE *fp = fopen(f->db, "rb");
    char back[sizeof junk];
    size_t n = fread(back, 1, sizeof back, fp);
    fclose(fp);
    assert_int_equal(n, strlen(junk));
    assert_memory_equal(back, junk, n);
}

/* Another connection holds the write lock past the timeout: rows are kept in
 * memory. Released before the end: everything lands. Held to the end: all is
 * reported lost, nothing half-written. */
static void test_locked_database(void **state) {
    fixture *f = *state;
    ex_log_opts o = quick_opts(f, 50);
    o.flush_rows = 16;
    ex_log_close(ex_log_open_opts(f->db, &o));

    sqlite3 *holder = raw_open(f->db);
    assert_int_equal(sqlite3_exec(holder, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    ex_log *log = ex_log_open_opts(f->db, &o);
    int run = ex_run_begin(log, "train", "patient", "", 1, 0, NULL);
    assert_int_equal(ex_run_id(log, run), 0); /* not recorded yet */
    for (int s = 0; s < 200; s++) ex_metric(log, run, s, "train_loss", s);
    assert_int_equal(ex_log_lost(log), 0);
    assert_int_equal(ex_log_pending(log), 201);
    assert_non_null(strstr(ex_log_problem(log), "locked"));
    assert_int_equal(sqlite3_exec(holder, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    ex_run_end(log, run, EX_INTERRUPTED);
    assert_true(ex_run_id(log, run) > 0);
    assert_int_equal(ex_log_close(log), 0);
    assert_int_equal(query_int(holder, "SELECT count(*) FROM metrics"), 200);
    assert_string_equal(query_text(holder, "SELECT status FROM runs"), "interrupted");

    rewind(f->warn);
    assert_int_equal(ftruncate(fileno(f->warn), 0), 0);
    assert_int_equal(sqlite3_exec(holder, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    log = ex_log_open_opts(f->db, &o);
    int rows = log_a_run(log, 100);
    assert_int_equal(ex_log_close(log), (uint64_t)rows);
    expect_one_warning_and_count(f, (uint64_t)rows);
    assert_int_equal(sqlite3_exec(holder, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(query_int(holder, "SELECT count(*) FROM runs"), 1);
    assert_int_equal(query_int(holder, "SELECT count(*) FROM metrics"), 200);
    sqlite3_close(holder);
}

/* While the database stays locked, memory is bounded: rows past
 * max_buffered are counted lost. */
static void test_buffer_is_bounded(void **state) {
    fixture *f = *state;
    ex_log_opts o = quick_opts(f, 10);
    o.max_buffered = 100;
    ex_log_close(ex_log_open_opts(f->db, &o));
    sqlite3 *holder = raw_open(f->db);
    sqlite3_exec(holder, "BEGIN EXCLUSIVE", NULL, NULL, NULL);
    ex_log *log = ex_log_open_opts(f->db, &o);
    int run = ex_run_begin(log, "train", "", "", 1, 0, NULL);
    for (int s = 0; s < 1000; s++) ex_metric(log, run, s, "train_loss", s);
    assert_int_equal(ex_log_pending(log), 100);
    assert_int_equal(ex_log_lost(log), 901);
    sqlite3_exec(holder, "COMMIT", NULL, NULL, NULL);
    assert_int_equal(ex_log_close(log), 901);
    assert_int_equal(query_int(holder, "SELECT count(*) FROM metrics"), 99);
    sqlite3_close(holder);
}

/* ---- concurrency ------------------------------------------------------------------- */

/* Four processes start at once on a fresh file and log 1,000 steps each,
 * flushing often to fight over the lock: exactly 4,000 rows, none lost. */
static void test_four_processes_log_at_once(void **state) {
    fixture *f = *state;
    enum { PROCS = 4, STEPS = 1000 };
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            close(go[1]);
            char c;
            if (read(go[0], &c, 1) < 0) _exit(100); /* wait for the start signal: EOF */
            ex_log_opts o = ex_log_opts_default();
            o.timeout_ms = 10000;
            o.flush_rows = 4; /* 250 transactions per process */
            o.warn = stderr;
            ex_log *log = ex_log_open_opts(f->db, &o);
            char name[32];
            snprintf(name, sizeof name, "worker%d", p);
            int run = ex_run_begin(log, "train", name, "", (uint64_t)p, 0, NULL);
            for (int s = 0; s < STEPS; s++) ex_metric(log, run, s, "train_loss", p * 10000.0 + s);
            ex_run_end(log, run, EX_FINISHED);
            uint64_t lost = ex_log_close(log);
            _exit(lost ? 1 : 0);
        }
    }
    close(go[0]);
    close(go[1]); /* releases all four at once */
    for (int p = 0; p < PROCS; p++) {
        int status = 0;
        assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    sqlite3 *db = raw_open(f->db);
    assert_int_equal(query_int(db, "SELECT count(*) FROM metrics"), PROCS * STEPS);
    assert_int_equal(query_int(db, "SELECT count(*) FROM runs WHERE status = 'finished'"), PROCS);
    assert_int_equal(query_int(db, "SELECT count(DISTINCT run_id) FROM metrics"), PROCS);
    assert_int_equal(query_int(db, "SELECT count(*) FROM (SELECT run_id FROM metrics GROUP BY run_id "
                                   "HAVING count(*) = 1000 AND min(step) = 0 AND max(step) = 999)"),
                     PROCS);
    /* Each worker's values went to its own run. */
    assert_int_equal(query_int(db, "SELECT count(*) FROM metrics m JOIN runs r ON r.id = m.run_id "
                                   "WHERE CAST(m.value / 10000 AS INTEGER) != r.seed"),
                     0);
    assert_string_equal(query_text(db, "PRAGMA integrity_check"), "ok");
    sqlite3_close(db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_known_vectors),
        cmocka_unit_test_setup_teardown(test_sha256_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_database_has_current_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrates_a_version_1_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrates_an_empty_file_and_from_the_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_foreign_and_newer_databases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_reports_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_records_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lineage_chain, setup, teardown),
        cmocka_unit_test(test_null_log_is_a_no_op),
        cmocka_unit_test(test_db_path_resolution),
        cmocka_unit_test_setup_teardown(test_read_only_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_instead_of_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locked_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buffer_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_four_processes_log_at_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
