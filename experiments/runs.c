/* runs.c - the queries behind `pare runs` and the report's tables. */
#include "runs.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "autograd/errmsg.h"

char *ex_id_list(const int64_t *ids, int n) {
    size_t cap = 3 + (size_t)n * 21;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t len = 0;
    s[len++] = '(';
    for (int i = 0; i < n; i++) len += (size_t)snprintf(s + len, cap - len, "%s%lld", i ? "," : "", (long long)ids[i]);
    snprintf(s + len, cap - len, ")");
    return s;
}

static int push_id(int64_t **ids, int *n, int *cap, int64_t id) {
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 16;
        int64_t *p = realloc(*ids, (size_t)c * sizeof *p);
        if (!p) return -1;
        *ids = p;
        *cap = c;
    }
    (*ids)[(*n)++] = id;
    return 0;
}

int ex_runs_select(sqlite3 *db, const ex_filter *f, int64_t **ids, int *n, char *err, size_t errlen) {
    *ids = NULL;
    *n = 0;
    static const char *const statuses[] = {"running", "finished", "failed", "diverged", "interrupted"};
    if (f && f->status && f->status[0]) {
        int ok = 0;
        for (int i = 0; i < 5; i++) ok |= strcmp(f->status, statuses[i]) == 0;
        if (!ok) {
            ag_errf(err, errlen, "status '%s': expected running, finished, failed, diverged or interrupted",
                    f->status);
            return -1;
        }
    }
    sqlite3_stmt *st;
    const char *sql = "SELECT id FROM (SELECT id FROM runs"
                      " WHERE (?1 IS NULL OR instr(name, ?1) > 0)"
                      " AND (?2 IS NULL OR command = ?2) AND (?3 IS NULL OR status = ?3)"
                      " ORDER BY id DESC LIMIT ?4) ORDER BY id";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        ag_errf(err, errlen, "selecting runs: %s", sqlite3_errmsg(db));
        return -1;
    }
    if (f && f->name && f->name[0]) sqlite3_bind_text(st, 1, f->name, -1, SQLITE_STATIC);
    if (f && f->command && f->command[0]) sqlite3_bind_text(st, 2, f->command, -1, SQLITE_STATIC);
    if (f && f->status && f->status[0]) sqlite3_bind_text(st, 3, f->status, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, f && f->limit > 0 ? f->limit : -1);
    int cap = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (push_id(ids, n, &cap, sqlite3_column_int64(st, 0)) != 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        ag_errf(err, errlen, "selecting runs: %s", rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(db));
        free(*ids);
        *ids = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

int ex_runs_check(sqlite3 *db, const int64_t *ids, int n, char *err, size_t errlen) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM runs WHERE id = ?", -1, &st, NULL) != SQLITE_OK) {
        ag_errf(err, errlen, "%s", sqlite3_errmsg(db));
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        sqlite3_bind_int64(st, 1, ids[i]);
        if (sqlite3_step(st) != SQLITE_ROW) {
            ag_errf(err, errlen, "no run with id %lld in this database", (long long)ids[i]);
            rc = -1;
        }
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return rc;
}

int ex_table_from_sql(sqlite3 *db, const char *sql, ex_table *t, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        ag_errf(err, errlen, "query failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    int nc = sqlite3_column_count(st);
    const char *head[64];
    if (nc > 64) nc = 64;
    for (int c = 0; c < nc; c++) head[c] = sqlite3_column_name(st, c);
    if (ex_table_init(t, nc, head) != 0) goto nomem;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *vals[64];
        for (int c = 0; c < nc; c++) vals[c] = (const char *)sqlite3_column_text(st, c);
        if (ex_table_add(t, vals) != 0) goto nomem;
    }
    if (rc != SQLITE_DONE) {
        ag_errf(err, errlen, "query failed: %s", sqlite3_errmsg(db));
        sqlite3_finalize(st);
        ex_table_free(t);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
nomem:
    ag_errf(err, errlen, "out of memory");
    sqlite3_finalize(st);
    ex_table_free(t);
    return -1;
}

/* Runs the query built from fmt, in which "%s" is the id list. */
static int table_for_ids(sqlite3 *db, const char *fmt, const int64_t *ids, int n, ex_table *t, char *err,
                         size_t errlen) {
    char *list = ex_id_list(ids, n);
    char *sql = list ? sqlite3_mprintf(fmt, list) : NULL;
    free(list);
    if (!sql) {
        memset(t, 0, sizeof *t);
        ag_errf(err, errlen, "out of memory");
        return -1;
    }
    int rc = ex_table_from_sql(db, sql, t, err, errlen);
    sqlite3_free(sql);
    return rc;
}

int ex_runs_table(sqlite3 *db, const int64_t *ids, int n, ex_table *t, char *err, size_t errlen) {
    static const char fmt[] =
        "SELECT r.id, r.name, r.command, r.status, r.parent_id AS parent,"
        " replace(substr(r.started_at, 1, 16), 'T', ' ') AS started,"
        " printf('%%.2f', r.wall_seconds) AS wall_s,"
        " (SELECT max(step) FROM metrics m WHERE m.run_id = r.id) AS steps,"
        " (SELECT printf('%%.4f', value) FROM metrics m WHERE m.run_id = r.id AND m.name = 'train_loss'"
        "   AND value IS NOT NULL ORDER BY step DESC LIMIT 1) AS train_loss,"
        " (SELECT printf('%%.4f', v) FROM (SELECT coalesce("
        "   (SELECT value FROM results WHERE run_id = r.id AND name = 'val_loss'),"
        "   (SELECT value FROM metrics m WHERE m.run_id = r.id AND m.name = 'val_loss' AND value IS NOT NULL"
        "    ORDER BY step DESC LIMIT 1)) AS v) WHERE v IS NOT NULL) AS val_loss,"
        " (SELECT printf('%%.3f', value) FROM results WHERE run_id = r.id AND name = 'accuracy') AS accuracy,"
        " (SELECT CAST(value AS INTEGER) FROM results WHERE run_id = r.id AND name = 'params') AS params,"
        " coalesce((SELECT bytes FROM artifacts a WHERE a.run_id = r.id AND a.kind IN ('model', 'checkpoint')"
        "   ORDER BY a.id DESC LIMIT 1),"
        "  (SELECT bytes FROM artifacts a WHERE a.run_id = r.id AND a.kind = 'input' ORDER BY a.id DESC LIMIT 1))"
        "   AS bytes,"
        " (SELECT printf('%%.0f', v) FROM (SELECT coalesce("
        "   (SELECT value FROM results WHERE run_id = r.id AND name = 'decode_tokens_per_s'),"
        "   (SELECT value FROM results WHERE run_id = r.id AND name = 'tokens_per_s'),"
        "   (SELECT value FROM metrics m WHERE m.run_id = r.id AND m.name = 'tokens_per_s' AND value IS NOT NULL"
        "    ORDER BY step DESC LIMIT 1)) AS v) WHERE v IS NOT NULL) AS tokens_per_s"
        " FROM runs r WHERE r.id IN %s ORDER BY r.id";
    return table_for_ids(db, fmt, ids, n, t, err, errlen);
}

int ex_runs_fingerprints(sqlite3 *db, const int64_t *ids, int n, ex_table *t, char *err, size_t errlen) {
    static const char fmt[] =
        "SELECT id, substr(git_rev, 1, 12) || CASE git_dirty WHEN 1 THEN '+dirty' ELSE '' END AS git,"
        " compiler, cflags, blas, threads, cpu_model AS cpu, simd, host,"
        " data_path AS data, data_bytes, data_hash"
        " FROM runs WHERE id IN %s ORDER BY id";
    return table_for_ids(db, fmt, ids, n, t, err, errlen);
}

/* One column per run: "key" then "#id" headers. */
static int side_by_side_init(ex_table *t, const char *first, const int64_t *ids, int n) {
    char **head = calloc((size_t)n + 1, sizeof *head);
    if (!head) return -1;
    int rc = 0;
    head[0] = (char *)first;
    for (int i = 0; i < n && rc == 0; i++) {
        head[i + 1] = malloc(24);
        if (!head[i + 1]) rc = -1;
        else snprintf(head[i + 1], 24, "#%lld", (long long)ids[i]);
    }
    if (rc == 0) rc = ex_table_init(t, n + 1, (const char *const *)head);
    for (int i = 0; i < n; i++) free(head[i + 1]);
    free(head);
    return rc;
}

/* Fills a side-by-side table from a query returning (key, run_id, value)
 * ordered by key; keeps a row only when `differing` is false or the values
 * are not all equal. */
static int pivot(sqlite3 *db, const char *sql, const int64_t *ids, int n, bool differing, ex_table *t, char *err,
                 size_t errlen) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        ag_errf(err, errlen, "query failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    char **vals = calloc((size_t)n + 1, sizeof *vals);
    char *key = NULL;
    int rc = vals ? SQLITE_OK : SQLITE_NOMEM;
    for (;;) {
        int s = rc == SQLITE_OK ? sqlite3_step(st) : SQLITE_DONE;
        const char *k = s == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (key && (!k || strcmp(k, key) != 0)) {
            /* flush the row of `key` */
            bool same = true;
            for (int i = 1; i < n; i++) {
                const char *a = vals[1] ? vals[1] : "-", *b = vals[i + 1] ? vals[i + 1] : "-";
                if (strcmp(a, b) != 0 || !vals[1] || !vals[i + 1]) same = false;
            }
            if (!differing || !same) {
                vals[0] = key;
                for (int i = 1; i <= n; i++)
                    if (!vals[i]) vals[i] = strdup("-");
                if (ex_table_add(t, (const char *const *)vals) != 0) rc = SQLITE_NOMEM;
            }
            for (int i = 1; i <= n; i++) {
                free(vals[i]);
                vals[i] = NULL;
            }
            free(key);
            key = NULL;
        }
        if (s != SQLITE_ROW) {
            if (s != SQLITE_DONE && rc == SQLITE_OK) rc = s;
            break;
        }
        if (!key && !(key = strdup(k ? k : ""))) rc = SQLITE_NOMEM;
        int64_t id = sqlite3_column_int64(st, 1);
        const char *v = (const char *)sqlite3_column_text(st, 2);
        for (int i = 0; i < n && rc == SQLITE_OK; i++)
            if (ids[i] == id) {
                free(vals[i + 1]);
                vals[i + 1] = strdup(v ? v : "NULL");
            }
    }
    sqlite3_finalize(st);
    free(key);
    free(vals);
    if (rc != SQLITE_OK) {
        ag_errf(err, errlen, "comparing runs: %s", rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

int ex_runs_compare(sqlite3 *db, const int64_t *ids, int n, ex_table *config, ex_table *results, char *err,
                    size_t errlen) {
    memset(config, 0, sizeof *config);
    memset(results, 0, sizeof *results);
    char *list = ex_id_list(ids, n);
    char *csql = list ? sqlite3_mprintf("SELECT key, run_id, value FROM config WHERE run_id IN %s ORDER BY key",
                                        list)
                      : NULL;
    char *rsql = list ? sqlite3_mprintf("SELECT name, run_id, printf('%%.6g', value) FROM results WHERE run_id IN %s"
                                        " ORDER BY name",
                                        list)
                      : NULL;
    free(list);
    int rc = -1;
    if (!csql || !rsql) ag_errf(err, errlen, "out of memory");
    else if (side_by_side_init(config, "key", ids, n) != 0 || side_by_side_init(results, "result", ids, n) != 0)
        ag_errf(err, errlen, "out of memory");
    else if (pivot(db, csql, ids, n, true, config, err, errlen) == 0 &&
             pivot(db, rsql, ids, n, false, results, err, errlen) == 0)
        rc = 0;
    sqlite3_free(csql);
    sqlite3_free(rsql);
    if (rc != 0) {
        ex_table_free(config);
        ex_table_free(results);
    }
    return rc;
}

static int print_query(sqlite3 *db, FILE *f, const char *title, const char *sql, char *err, size_t errlen) {
    ex_table t;
    if (ex_table_from_sql(db, sql, &t, err, errlen) != 0) return -1;
    fprintf(f, "\n%s\n", title);
    if (t.nrow == 0) fprintf(f, "  (none)\n");
    else ex_table_print_text(&t, f);
    ex_table_free(&t);
    return 0;
}

int ex_run_show(sqlite3 *db, int64_t id, FILE *f, char *err, size_t errlen) {
    if (ex_runs_check(db, &id, 1, err, errlen) != 0) return -1;
    sqlite3_stmt *st;
    char *sql = sqlite3_mprintf("SELECT * FROM runs WHERE id = %lld", (long long)id);
    if (!sql || sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        ag_errf(err, errlen, "reading run %lld: %s", (long long)id, sqlite3_errmsg(db));
        sqlite3_free(sql);
        return -1;
    }
    sqlite3_free(sql);
    if (sqlite3_step(st) == SQLITE_ROW) {
        fprintf(f, "run %lld\n", (long long)id);
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            const char *name = sqlite3_column_name(st, c);
            if (strcmp(name, "config") == 0 || strcmp(name, "id") == 0) continue;
            const char *v = (const char *)sqlite3_column_text(st, c);
            fprintf(f, "  %-13s %s\n", name, v ? v : "-");
        }
    }
    sqlite3_finalize(st);
    struct {
        const char *title, *fmt;
    } parts[] = {
        {"configuration:", "SELECT key, value FROM config WHERE run_id = %lld ORDER BY key"},
        {"results:", "SELECT name, value FROM results WHERE run_id = %lld ORDER BY name"},
        {"artifacts:", "SELECT kind, path, bytes, sha256, created_at FROM artifacts WHERE run_id = %lld ORDER BY id"},
        {"metrics:",
         "SELECT name, count(*) AS points, min(step) AS first_step, max(step) AS last_step,"
         " min(value) AS min, (SELECT value FROM metrics m2 WHERE m2.run_id = m.run_id AND m2.name = m.name"
         " ORDER BY step DESC LIMIT 1) AS last FROM metrics m WHERE run_id = %lld GROUP BY name ORDER BY name"},
        {"lineage (this run, its parent, ...):",
         "WITH RECURSIVE chain(id, depth) AS (SELECT %lld, 0 UNION ALL"
         " SELECT r.parent_id, depth + 1 FROM runs r JOIN chain c ON r.id = c.id WHERE r.parent_id IS NOT NULL"
         " AND depth < 1000)"
         " SELECT r.id, r.name, r.command, r.status FROM chain JOIN runs r USING (id) ORDER BY depth"},
        {"children:", "SELECT id, name, command, status FROM runs WHERE parent_id = %lld ORDER BY id"},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char *q = sqlite3_mprintf(parts[i].fmt, (long long)id);
        int rc = q ? print_query(db, f, parts[i].title, q, err, errlen) : -1;
        sqlite3_free(q);
        if (rc != 0) return -1;
    }
    return 0;
}
