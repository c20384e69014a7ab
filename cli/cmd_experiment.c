/* cmd_experiment.c - `pare experiment RECIPE.ini`: a recipe's stages as runs
 * of pare's own commands (experiments/recipe.h reads and expands it;
 * docs/experiments.md describes the format).
 *
 * Before anything runs, every run's arguments are checked by the command
 * itself (its key table parses them without running: keys/options.h's
 * check), so an unknown key, a wrong type or a value out of range is an
 * error naming the recipe's file, line and key. Then the runs execute, each
 * as its own `pare COMMAND ...` process (the same binary), at most --jobs at
 * a time, each with its share of the threads, all into one run database:
 *   - a run is reused, not rerun, when the database holds a finished run of
 *     the same name and configuration hash (its arguments and the SHA-256 of
 *     every input file) whose output file is still there with the bytes it
 *     recorded; so changing one key reruns only what depends on it;
 *   - a training run that was interrupted (or killed) resumes from its
 *     checkpoint;
 *   - SIGINT or SIGTERM stops the running commands (they checkpoint) and
 *     the experiment; running it again continues where it stopped.
 * A progress line shows the runs done and left, the newest line of each
 * running command and the time left. At the end a table of the experiment's
 * models (bytes, x smaller, validation loss, accuracy, decode and prompt
 * tokens/s) is printed and `pare report` writes the HTML/Markdown report.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "dist/dist.h"
#include "autograd/hash.h"
#include "autograd/parallel.h"
#include "cli/commands.h"
#include "experiments/db.h"
#include "experiments/recipe.h"
#include "experiments/report.h"
#include "experiments/table.h"
#include "experiments/sha256.h"
#include "keys/options.h"

/* The commands a recipe can run, what each writes, and whether it takes an input. */
typedef struct stage_kind {
    const char *command;
    const char *output; /* file suffix of what it writes, NULL = nothing */
    bool needs_input;
} stage_kind;

static const stage_kind kinds[] = {
    {"train", ".ckpt", false},    {"export", ".pare", true},   {"eval", NULL, true},
    {"bench", NULL, true},        {"sample", NULL, true},      {"generate", NULL, true},
    {"quantize", ".ckpt", true},  {"prune", ".ckpt", true},    {"sensitivity", NULL, true},
};
#define N_KINDS (int)(sizeof kinds / sizeof kinds[0])

static const stage_kind *kind_of(const char *command) {
    for (int i = 0; i < N_KINDS; i++)
        if (!strcmp(kinds[i].command, command)) return &kinds[i];
    return NULL;
}

/* ------------------------------------------------ the commands' tables */

typedef struct table_capture {
    char keys[128][48];
    pare_opt_type type[128];
    int n;
} table_capture;

static void capture_table(void *user, const pare_opt *opts, int n) {
    table_capture *t = user;
    t->n = 0;
    for (int i = 0; i < n && t->n < 128; i++) {
        snprintf(t->keys[t->n], sizeof t->keys[0], "%s", opts[i].key);
        t->type[t->n++] = opts[i].type;
    }
}

/* The key table of a command, by running it in PARE_CHECK_TABLE mode. */
static int command_table(const char *command, table_capture *t) {
    const pare_cmd *c = pare_command(command);
    if (!c) return -1;
    pare_check chk = {.mode = PARE_CHECK_TABLE, .table = capture_table, .user = t};
    pare_opts_set_check(&chk);
    char *argv[2] = {(char *)command, NULL};
    c->run(1, argv);
    pare_opts_set_check(NULL);
    return 0;
}

typedef struct tables {
    table_capture t[N_KINDS];
    bool have[N_KINDS];
} tables;

static const table_capture *table_for(tables *ts, const char *command) {
    for (int i = 0; i < N_KINDS; i++)
        if (!strcmp(kinds[i].command, command)) {
            if (!ts->have[i] && command_table(command, &ts->t[i]) == 0) ts->have[i] = true;
            return ts->have[i] ? &ts->t[i] : NULL;
        }
    return NULL;
}

static bool list_ok(void *user, const char *command, const char *key) {
    const table_capture *t = table_for(user, command);
    for (int i = 0; t && i < t->n; i++)
        if (!strcmp(t->keys[i], key)) return t->type[i] != PARE_OPT_T_STRING;
    return false;
}

/* True when command has key (so the runner may pass it). */
static bool has_key(tables *ts, const char *command, const char *key) {
    const table_capture *t = table_for(ts, command);
    for (int i = 0; t && i < t->n; i++)
        if (!strcmp(t->keys[i], key)) return true;
    return false;
}

static const char *output_of(void *user, const char *command) {
    (void)user;
    const stage_kind *k = kind_of(command);
    return k ? k->output : NULL;
}

/* ------------------------------------------------------- validation */

/* The recipe line of the argument naming key in a run (0 when none does). */
static int line_of_key(const ex_run *run, const char *key) {
    size_t k = strlen(key);
    for (int a = 1; a < run->argc; a++)
        if (!strncmp(run->argv[a], "--", 2) && !strncmp(run->argv[a] + 2, key, k) &&
            (run->argv[a][2 + k] == '=' || !run->argv[a][2 + k]))
            return run->key_line[a];
    return 0;
}

/* The resolved configuration of a run, as its command parsed it. */
typedef struct resolved {
    char text[16384];
} resolved;

static void capture_resolved(void *user, const pare_opt *opts, int n) {
    resolved *c = user;
    pare_opts_format(opts, n, c->text, sizeof c->text);
}

/* Every run's arguments parsed by its command without running it; with
 * config (NULL or [p->n], the caller frees each), each run's full resolved
 * configuration ("key=value" lines, defaults included). */
static int validate(const ex_recipe *r, const ex_plan *p, char **config, char *err, size_t errlen) {
    for (int i = 0; i < p->n; i++) {
        const ex_run *run = &p->run[i];
        const ex_stage *st = &r->stage[run->stage];
        const stage_kind *k = kind_of(st->command);
        bool has_input = run->argc > 1 && strncmp(run->argv[1], "--", 2) != 0;
        if (k->needs_input && !has_input) {
            snprintf(err, errlen, "%s:%d: stage [%s]: %s needs `input = FILE or STAGE` (what it reads)", r->path,
                     st->line, st->name, st->command);
            return -1;
        }
        if (!k->needs_input && has_input) {
            snprintf(err, errlen, "%s:%d: stage [%s]: %s takes no input (use its own keys, e.g. init = STAGE)",
                     r->path, run->key_line[1], st->name, st->command);
            return -1;
        }
        resolved *res = config ? calloc(1, sizeof *res) : NULL;
        pare_check chk = {.mode = PARE_CHECK_PARSE, .table = res ? capture_resolved : NULL, .user = res};
        pare_opts_set_check(&chk);
        int rc = pare_command(st->command)->run(run->argc, run->argv);
        char why[512];
        snprintf(why, sizeof why, "%s", pare_opts_check_error());
        pare_opts_set_check(NULL);
        if (res) {
            config[i] = strdup(res->text);
            free(res);
        }
        if (rc != 0) {
            /* name the line of the key the message is about */
            int line = st->line;
            const char *dash = strstr(why, "--");
            if (dash) {
                char key[64];
                size_t n = strcspn(dash + 2, ":'= ");
                snprintf(key, sizeof key, "%.*s", (int)(n < 63 ? n : 63), dash + 2);
                int l = line_of_key(run, key);
                if (l) line = l;
            }
            snprintf(err, errlen, "%s:%d: stage [%s] (%s): %s", r->path, line, st->name, st->command, why);
            return -1;
        }
    }
    return 0;
}

static void free_configs(char **config, int n) {
    for (int i = 0; config && i < n; i++) free(config[i]);
    free(config);
}

/* ------------------------------------------------------- execution */

static volatile sig_atomic_t g_stop = 0;
static void on_stop(int sig) {
    g_stop = sig;
}

typedef struct job {
    pid_t pid;
    int run;
    double started;
    char log[1200];
    char last[200]; /* the newest progress line shown */
} job;

/* The run's configuration hash: its arguments (without the run name) and
 * the SHA-256 of every argument that is an existing file (its inputs). */
static void run_hash(const ex_run *run, char hex[17]) {
    uint64_t h = AG_FNV_INIT;
    for (int a = 0; a < run->argc; a++) {
        if (!strncmp(run->argv[a], "--name=", 7) || !strncmp(run->argv[a], "--out=", 6)) continue;
        h = ag_fnv1a(h, (const uint8_t *)run->argv[a], strlen(run->argv[a]) + 1);
        const char *v = strchr(run->argv[a], '=');
        const char *path = !strncmp(run->argv[a], "--", 2) ? (v ? v + 1 : NULL) : run->argv[a];
        struct stat st;
        char digest[65];
        if (path && stat(path, &st) == 0 && S_ISREG(st.st_mode) && ex_sha256_file(path, digest, NULL, NULL, 0) == 0)
            h = ag_fnv1a(h, (const uint8_t *)digest, 64);
    }
    snprintf(hex, 17, "%016llx", (unsigned long long)h);
}

/* What the database knows of the newest run called name: 1 finished (and its
 * output, if any, still has the bytes it recorded), 2 interrupted, failed or
 * never ended, 0 nothing. */
static int db_state(sqlite3 *db, const char *name, const char *out) {
    if (!db) return 0;
    sqlite3_stmt *q = NULL;
    int state = 0;
    if (sqlite3_prepare_v2(db, "SELECT id, status FROM runs WHERE name = ?1 ORDER BY id DESC LIMIT 1", -1, &q, NULL) !=
        SQLITE_OK)
        return 0;
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
    long long id = -1;
    if (sqlite3_step(q) == SQLITE_ROW) {
        id = sqlite3_column_int64(q, 0);
        const char *st = (const char *)sqlite3_column_text(q, 1);
        state = st && !strcmp(st, "finished") ? 1 : 2;
    }
    sqlite3_finalize(q);
    if (state == 1 && out && out[0]) { /* the output must be the bytes that run wrote */
        char digest[65];
        state = 2;
        if (ex_sha256_file(out, digest, NULL, NULL, 0) == 0 &&
            sqlite3_prepare_v2(db, "SELECT count(*) FROM artifacts WHERE run_id = ?1 AND sha256 = ?2", -1, &q, NULL) ==
                SQLITE_OK) {
            sqlite3_bind_int64(q, 1, id);
            sqlite3_bind_text(q, 2, digest, -1, SQLITE_STATIC);
            if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0) > 0) state = 1;
            sqlite3_finalize(q);
        }
    }
    return state;
}

static int mkdirs(const char *path) {
    char buf[1200];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static void dir_of(const char *path, char *dir, size_t n) {
    snprintf(dir, n, "%.*s", (int)(n - 1), path);
    char *s = strrchr(dir, '/');
    if (s) *s = '\0';
    else snprintf(dir, n, ".");
}

/* Starts run i as `pare ARGS --name NAME --db DB --threads N` (each where the
 * command has that key) with its output in log. */
static pid_t spawn(tables *ts, const ex_run *run, const char *db, int threads, bool resume, const char *full_name,
                   const char *log) {
    char *argv[200];
    int a = 0;
    char dbarg[1300], tharg[32], namearg[1000], resarg[1100], outarg[1100];
    argv[a++] = "pare";
    if (resume) { /* the checkpoint holds the run's configuration */
        snprintf(resarg, sizeof resarg, "--resume=%s", run->out);
        snprintf(outarg, sizeof outarg, "--out=%s", run->out);
        argv[a++] = run->argv[0];
        argv[a++] = resarg;
        argv[a++] = outarg;
    } else {
        for (int i = 0; i < run->argc && a < 190; i++) argv[a++] = run->argv[i];
    }
    if (has_key(ts, run->argv[0], "name")) {
        snprintf(namearg, sizeof namearg, "--name=%s", full_name);
        argv[a++] = namearg;
    }
    if (has_key(ts, run->argv[0], "db")) {
        snprintf(dbarg, sizeof dbarg, "--db=%s", db);
        argv[a++] = dbarg;
    }
    const char *own_threads = NULL; /* the recipe's threads, also for a resume (which takes no other key) */
    for (int i = 0; i < run->argc; i++)
        if (!strncmp(run->argv[i], "--threads=", 10)) own_threads = run->argv[i];
    if (own_threads && resume) argv[a++] = (char *)own_threads;
    if (!own_threads && has_key(ts, run->argv[0], "threads")) {
        snprintf(tharg, sizeof tharg, "--threads=%d", threads);
        argv[a++] = tharg;
    }
    argv[a] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid != 0) return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "pare experiment: cannot run pare: %s\n", strerror(errno));
    _exit(127);
}

/* The newest "step ..." line of a log (what the command prints as it trains). */
static void last_line(const char *log, char *out, size_t n) {
    out[0] = '\0';
    FILE *f = fopen(log, "r");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "step", 4) || !strncmp(line, "result", 6)) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(out, n, "%.*s", (int)(n - 1), line);
        }
    fclose(f);
}

static void fmt_secs(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

/* The label without its seed ("seed=2 format=q8" -> "format=q8"): the runs
 * that differ only in seed are one row of the table. */
static void without_seed(const char *label, char *out, size_t n) {
    out[0] = '\0';
    for (const char *p = label; *p;) {
        const char *sp = strchr(p, ' ');
        size_t len = sp ? (size_t)(sp - p) : strlen(p);
        if (strncmp(p, "seed=", 5) != 0) {
            size_t u = strlen(out);
            snprintf(out + u, n - u, "%s%.*s", u ? " " : "", (int)len, p);
        }
        p = sp ? sp + 1 : p + len;
    }
}

enum { COL_BYTES, COL_RATIO, COL_LOSS, COL_ACC, COL_DECODE, COL_PROMPT, N_COLS };

typedef struct table_row {
    char model[640], command[16];
    double sum[N_COLS], sumsq[N_COLS];
    int n[N_COLS], seeds;
} table_row;

/* The plan's models (training runs' checkpoints, exported, quantized and
 * pruned files), with what eval and bench measured of them, into t: the
 * newest finished run of each run's name and configuration; runs that
 * differ only in seed are one row, the mean with the spread (sample standard
 * deviation) of the loss over the seeds. x smaller and x faster are the
 * bytes and the decode speed against the first model benchmarked (a
 * recipe's reference, as the teacher's f32 export); with nothing
 * benchmarked, x smaller is the export's own ratio to its f32 bytes. Returns 0, or -1 when out of memory or the query fails. */
static int results_table(sqlite3 *db, const ex_recipe *r, const ex_plan *plan, ex_table *t) {
    static const char *const head[] = {"model",    "command",      "seeds",    "bytes",       "x smaller",
                                       "val_loss", "accuracy",     "decode tok/s", "x faster", "prompt tok/s"};
    if (ex_table_init(t, (int)(sizeof head / sizeof head[0]), head) != 0) return -1;
    if (!db) return 0;
    /* a run that read this model's bytes: its parent is this run or any run that recorded the same file
     * (a remade output with the same SHA-256 keeps the evaluation and benchmark made of it before) */
#define READER_OF_U                                                                                        \
    "(e.parent_id = u.id OR e.parent_id IN (SELECT b.run_id FROM artifacts a JOIN artifacts b"             \
    " ON b.sha256 = a.sha256 AND b.kind = a.kind WHERE a.run_id = u.id AND a.kind <> 'input'"             \
    " AND a.sha256 IS NOT NULL))"
#define NEWEST(cmd, name)                                                                                  \
    "(SELECT r.value FROM runs e JOIN results r ON r.run_id = e.id WHERE " READER_OF_U                     \
    " AND e.command = '" cmd "' AND r.name = '" name "' ORDER BY e.id DESC LIMIT 1)"
    const char *sql = "SELECT u.command,"
                      " (SELECT value FROM results WHERE run_id = u.id AND name = 'bytes'),"
                      " (SELECT value FROM results WHERE run_id = u.id AND name = 'compression'),"
                      " coalesce(" NEWEST("eval", "val_loss") ","
                      "          (SELECT value FROM results WHERE run_id = u.id AND name = 'val_loss')),"
                      " coalesce(" NEWEST("eval", "accuracy") ","
                      "          (SELECT value FROM results WHERE run_id = u.id AND name = 'accuracy')),"
                      " " NEWEST("bench", "decode_tokens_per_s") ","
                      " " NEWEST("bench", "prompt_tokens_per_s")
                      " FROM runs u WHERE u.name = ?1 AND u.status = 'finished' ORDER BY u.id DESC LIMIT 1";
#undef NEWEST
#undef READER_OF_U
    sqlite3_stmt *q = NULL;
    table_row *rows = calloc((size_t)plan->n + 1, sizeof *rows);
    if (!rows || sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        free(rows);
        return -1;
    }
    int n_rows = 0;
    for (int i = 0; i < plan->n; i++) {
        const ex_run *run = &plan->run[i];
        if (!run->out[0]) continue;
        char h[17], full[900];
        run_hash(run, h);
        snprintf(full, sizeof full, "%s [%s]", run->name, h);
        sqlite3_reset(q);
        sqlite3_bind_text(q, 1, full, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(q) != SQLITE_ROW) continue;
        char rest[512], model[640];
        without_seed(run->label, rest, sizeof rest);
        snprintf(model, sizeof model, "%s%s%s", r->stage[run->stage].name, rest[0] ? "/" : "", rest);
        table_row *row = NULL;
        for (int k = 0; k < n_rows && !row; k++)
            if (!strcmp(rows[k].model, model)) row = &rows[k];
        if (!row) {
            row = &rows[n_rows++];
            snprintf(row->model, sizeof row->model, "%s", model);
            snprintf(row->command, sizeof row->command, "%s", (const char *)sqlite3_column_text(q, 0));
        }
        row->seeds++;
        for (int c = 0; c < N_COLS; c++)
            if (sqlite3_column_type(q, c + 1) != SQLITE_NULL) {
                double v = sqlite3_column_double(q, c + 1);
                row->sum[c] += v, row->sumsq[c] += v * v, row->n[c]++;
            }
    }
    sqlite3_finalize(q);
    double ref_decode = NAN, ref_bytes = NAN; /* the first model benchmarked: the reference of both ratios */
    for (int k = 0; k < n_rows && isnan(ref_decode); k++)
        if (rows[k].n[COL_DECODE]) {
            ref_decode = rows[k].sum[COL_DECODE] / rows[k].n[COL_DECODE];
            if (rows[k].n[COL_BYTES]) ref_bytes = rows[k].sum[COL_BYTES] / rows[k].n[COL_BYTES];
        }
    int rc = 0;
    for (int k = 0; k < n_rows && rc == 0; k++) {
        const table_row *row = &rows[k];
        char cell[N_COLS][40], faster[16] = "-", seeds[16];
        snprintf(seeds, sizeof seeds, "%d", row->seeds);
        if (row->n[COL_DECODE] && ref_decode > 0)
            snprintf(faster, sizeof faster, "%.2f", row->sum[COL_DECODE] / row->n[COL_DECODE] / ref_decode);
        for (int c = 0; c < N_COLS; c++) {
            if (!row->n[c]) {
                snprintf(cell[c], sizeof cell[c], "-");
                continue;
            }
            double m = row->sum[c] / row->n[c];
            if (c == COL_RATIO && ref_bytes > 0 && row->n[COL_BYTES])
                snprintf(cell[c], sizeof cell[c], "%.2f", ref_bytes / (row->sum[COL_BYTES] / row->n[COL_BYTES]));
            else if (c == COL_RATIO) snprintf(cell[c], sizeof cell[c], "%.2f", m); /* nothing benched: vs f32 */
            else if (c == COL_ACC) snprintf(cell[c], sizeof cell[c], "%.4f", m);
            else if (c == COL_LOSS && row->n[c] > 1) {
                double var = (row->sumsq[c] - row->n[c] * m * m) / (row->n[c] - 1);
                snprintf(cell[c], sizeof cell[c], "%.4f +- %.4f", m, var > 0 ? sqrt(var) : 0.0);
            } else if (c == COL_LOSS) snprintf(cell[c], sizeof cell[c], "%.4f", m);
            else snprintf(cell[c], sizeof cell[c], "%.0f", m);
        }
        const char *vals[] = {row->model,      row->command,     seeds,  cell[COL_BYTES], cell[COL_RATIO],
                              cell[COL_LOSS],  cell[COL_ACC],    cell[COL_DECODE], faster, cell[COL_PROMPT]};
        rc = ex_table_add(t, vals);
    }
    free(rows);
    return rc;
}

/* The keys the plan sweeps with numbers (the expanded keys other than seed
 * whose values are all numbers and not all equal), into keys[max] (pointers
 * into storage[max][64]); returns the count. */
static int swept_keys(const ex_plan *plan, char storage[][64], const char **keys, int max) {
    int n = 0;
    for (int i = 0; i < plan->n; i++)
        for (const char *p = plan->run[i].label; *p;) {
            const char *sp = strchr(p, ' ');
            size_t len = sp ? (size_t)(sp - p) : strlen(p);
            const char *eq = memchr(p, '=', len);
            if (eq && (size_t)(eq - p) < 64 && strncmp(p, "seed=", 5) != 0) {
                char key[64];
                snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
                bool seen = false;
                for (int k = 0; k < n; k++) seen = seen || !strcmp(keys[k], key);
                if (!seen && n < max) {
                    /* every value of this key across the plan a number, at least two distinct */
                    bool numeric = true;
                    double first = NAN;
                    bool varies = false;
                    for (int j = 0; j < plan->n && numeric; j++) {
                        const char *v = strstr(plan->run[j].label, key);
                        for (; v; v = strstr(v + 1, key))
                            if ((v == plan->run[j].label || v[-1] == ' ') && v[strlen(key)] == '=') break;
                        if (!v) continue;
                        char *end;
                        double x = strtod(v + strlen(key) + 1, &end);
                        numeric = end != v + strlen(key) + 1 && (*end == ' ' || !*end) && isfinite(x);
                        if (isnan(first)) first = x;
                        else varies = varies || x != first;
                    }
                    if (numeric && varies) {
                        snprintf(storage[n], 64, "%s", key);
                        keys[n] = storage[n];
                        n++;
                    }
                }
            }
            p = sp ? sp + 1 : p + len;
        }
    return n;
}

int cmd_experiment(int argc, char **argv) {
    static const char *usage = "pare experiment RECIPE.ini [--key value ...]";
    if (pd_size() > 1) { /* every rank would run every run and write the one database */
        pare_report_error("pare experiment: started on %d ranks: spreading a recipe's runs over MPI ranks is not "
                          "implemented yet; run it as one process (its --jobs runs side by side), or give each "
                          "rank its own recipe\n", pd_size());
        return PARE_EXIT_USAGE;
    }
    const char *out_dir, *db_path, *unused_name, *sets;
    int jobs, threads;
    bool dry_run, report, json;
    pare_keys keys = {.n = 0};
    pare_opt own[] = {
        PARE_OPT_STRING("out", &out_dir, "", "directory for the runs' files (\"\" = the recipe's out, else experiments/NAME)"),
        PARE_OPT_INT("jobs", &jobs, "0", 0, 64, "runs side by side (0 = the recipe's jobs, else 1)"),
        PARE_OPT_FLAG("dry-run", &dry_run, "print the plan (every run, its arguments, what it reuses) and stop"),
        PARE_OPT_FLAG_ON("report", &report, "write the HTML/Markdown report at the end"),
        PARE_OPT_STRING("set", &sets, "",
                        "override recipe keys: \"KEY=VALUE; STAGE.KEY=VALUE\" (e.g. \"data=PATH\", \"seed=1, 2\")"),
    };
    pare_keys_add(&keys, own, (int)(sizeof own / sizeof own[0]));
    pare_keys_threads(&keys, &threads);
    ex_log_keys(&keys, &db_path, &unused_name);
    pare_keys_json(&keys, &json, "(accepted for symmetry; the experiment prints a table)");
    int pos[1], n_pos = 0;
    int rc = pare_keys_cli("experiment", usage, &keys, argc, argv, pos, 1, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos != 1) {
        pare_report_error("pare experiment: expected one recipe file\nsee: pare experiment --help\n");
        return PARE_EXIT_USAGE;
    }
    const char *const commands[] = {"train", "export", "eval", "bench", "sample", "generate", "quantize", "prune",
                                    "sensitivity", NULL};
    const char *avail[16];
    int na = 0;
    for (int i = 0; commands[i]; i++)
        if (pare_command(commands[i])) avail[na++] = commands[i];
    avail[na] = NULL;
    char err[2048];
    ex_recipe r;
    if (ex_recipe_load(&r, argv[pos[0]], avail, err, sizeof err) != 0 || ex_recipe_set(&r, sets, err, sizeof err) != 0) {
        pare_report_error("pare experiment: %s\n", err);
        ex_recipe_free(&r);
        return PARE_EXIT_USAGE;
    }
    const char *experiment = ex_recipe_setting(&r, "name", NULL);
    char base[256];
    if (!experiment) { /* the recipe's file name without .ini */
        const char *b = strrchr(r.path, '/');
        snprintf(base, sizeof base, "%s", b ? b + 1 : r.path);
        char *dot = strrchr(base, '.');
        if (dot) *dot = '\0';
        experiment = base;
    }
    char outbuf[1024];
    if (!out_dir[0]) {
        const char *o = ex_recipe_setting(&r, "out", NULL);
        if (o) snprintf(outbuf, sizeof outbuf, "%s", o);
        else snprintf(outbuf, sizeof outbuf, "experiments/%s", experiment);
        out_dir = outbuf;
    }
    if (!pare_opts_find(keys.row, keys.n, "db")->set) db_path = ex_recipe_setting(&r, "db", "");
    char dbbuf[1200];
    if (!db_path[0]) snprintf(dbbuf, sizeof dbbuf, "%s/%s.db", out_dir, experiment);
    else snprintf(dbbuf, sizeof dbbuf, "%s", db_path);
    if (jobs == 0) jobs = atoi(ex_recipe_setting(&r, "jobs", "1"));
    if (jobs < 1) jobs = 1;
    int cores = pare_threads(threads);
    int per_job = cores / jobs > 0 ? cores / jobs : 1;

    tables ts;
    memset(&ts, 0, sizeof ts);
    ex_plan_opts po = {.out_dir = out_dir, .experiment = experiment, .list_ok = list_ok, .output = output_of,
                       .user = &ts};
    ex_plan plan;
    char **config = NULL;
    int prc = ex_plan_make(&r, &po, &plan, err, sizeof err);
    if (prc == 0 && dry_run) config = calloc((size_t)plan.n + 1, sizeof *config);
    if (prc != 0 || validate(&r, &plan, config, err, sizeof err) != 0) {
        pare_report_error("pare experiment: %s\n", err);
        free_configs(config, plan.n);
        ex_plan_free(&plan);
        ex_recipe_free(&r);
        return PARE_EXIT_USAGE;
    }
    sqlite3 *db = NULL;
    {
        char e[512];
        struct stat sb;
        if (stat(dbbuf, &sb) == 0) db = ex_db_open(dbbuf, e, sizeof e);
    }
    if (dry_run) {
        printf("experiment %s: %d runs from %s; files in %s, runs recorded in %s, %d at a time x %d threads\n",
               experiment, plan.n, r.path, out_dir, dbbuf, jobs, per_job);
        for (int i = 0; i < plan.n; i++) {
            const ex_run *run = &plan.run[i];
            char h[17];
            run_hash(run, h);
            char full[900];
            snprintf(full, sizeof full, "%s [%s]", run->name, h);
            int st = db_state(db, full, run->out);
            printf("%3d  %s%s\n     pare", i + 1, run->name,
                   st == 1 ? "   (reused: finished with this configuration)"
                   : st == 2 ? (run->out[0] && !strcmp(run->argv[0], "train") ? "   (resumes its checkpoint)" : "   (reruns)")
                   : "");
            for (int a = 0; a < run->argc; a++) printf(" %s", run->argv[a]);
            if (run->n_deps) {
                printf("\n     after:");
                for (int d = 0; d < run->n_deps; d++) printf(" %d", run->deps[d] + 1);
            }
            printf("\n");
            if (config && config[i]) { /* every key, defaults included, as the command resolved them */
                printf("     configuration:");
                int col = 19;
                for (char *line = strtok(config[i], "\n"); line; line = strtok(NULL, "\n")) {
                    int w = (int)strlen(line) + 1;
                    if (col + w > 118) printf("\n       "), col = 7;
                    printf(" %s", line);
                    col += w;
                }
                printf("\n");
            }
        }
        free_configs(config, plan.n);
        sqlite3_close(db);
        ex_plan_free(&plan);
        ex_recipe_free(&r);
        return PARE_EXIT_OK;
    }
    if (mkdirs(out_dir) != 0) {
        pare_report_error("pare experiment: cannot create %s: %s\n", out_dir, strerror(errno));
        sqlite3_close(db);
        ex_plan_free(&plan);
        ex_recipe_free(&r);
        return PARE_EXIT_ERROR;
    }
    printf("experiment %s: %d runs; files in %s, runs recorded in %s, %d at a time x %d threads\n", experiment,
           plan.n, out_dir, dbbuf, jobs, per_job);
    fflush(stdout);

    /* states: 0 waiting, 1 running, 2 done, 3 failed (or skipped because a dependency failed) */
    int *state = calloc((size_t)plan.n, sizeof *state);
    job *running = calloc((size_t)jobs, sizeof *running);
    double *took = calloc((size_t)plan.n, sizeof *took);
    if (!state || !running || !took) {
        pare_report_error("pare experiment: out of memory\n");
        goto end;
    }
    for (int j = 0; j < jobs; j++) running[j].pid = 0;
    g_stop = 0;
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    int done = 0, failed = 0, reused = 0, resumed = 0;
    double t0 = ag_now(), work = 0;
    int n_timed = 0;
    for (;;) {
        /* start what can start */
        for (int i = 0; i < plan.n && !g_stop; i++) {
            if (state[i] != 0) continue;
            const ex_run *run = &plan.run[i];
            bool ready = true, broken = false;
            for (int d = 0; d < run->n_deps; d++) {
                ready = ready && state[run->deps[d]] == 2;
                broken = broken || state[run->deps[d]] == 3;
            }
            if (broken) {
                state[i] = 3, failed++;
                printf("[%d/%d] %s: skipped (an input failed)\n", done + failed, plan.n, run->name);
                continue;
            }
            if (!ready) continue;
            int slot = -1;
            for (int j = 0; j < jobs; j++)
                if (!running[j].pid) slot = j;
            if (slot < 0) break;
            char h[17], full[900];
            run_hash(run, h);
            snprintf(full, sizeof full, "%s [%s]", run->name, h);
            if (db) sqlite3_close(db), db = NULL;
            {
                char e[512];
                struct stat sb;
                if (stat(dbbuf, &sb) == 0) db = ex_db_open(dbbuf, e, sizeof e);
            }
            int st = db_state(db, full, run->out);
            if (st == 1) {
                state[i] = 2, done++, reused++;
                printf("[%d/%d] %s: reused (finished with this configuration)\n", done + failed, plan.n, run->name);
                continue;
            }
            bool resume = st == 2 && run->out[0] && !strcmp(run->argv[0], "train") && access(run->out, R_OK) == 0;
            if (run->out[0]) {
                char dir[1100];
                dir_of(run->out, dir, sizeof dir);
                mkdirs(dir);
            }
            job *jb = &running[slot];
            if (run->out[0]) snprintf(jb->log, sizeof jb->log, "%s.log", run->out);
            else snprintf(jb->log, sizeof jb->log, "%s/%s.%d.log", out_dir, r.stage[run->stage].name, i + 1);
            {
                char dir[1100];
                dir_of(jb->log, dir, sizeof dir);
                mkdirs(dir);
            }
            jb->pid = spawn(&ts, run, dbbuf, per_job, resume, full, jb->log);
            jb->run = i;
            jb->started = ag_now();
            jb->last[0] = '\0';
            if (jb->pid < 0) {
                jb->pid = 0;
                state[i] = 3, failed++;
                printf("[%d/%d] %s: cannot start: %s\n", done + failed, plan.n, run->name, strerror(errno));
                continue;
            }
            state[i] = 1;
            if (resume) resumed++;
            printf("[%d/%d] %s: %s\n", done + failed, plan.n, run->name, resume ? "resuming its checkpoint" : "started");
            fflush(stdout);
        }
        /* wait a little, collect what ended, show progress */
        bool any = false;
        for (int j = 0; j < jobs; j++) any = any || running[j].pid;
        if (!any) {
            bool waiting = false;
            for (int i = 0; i < plan.n; i++) waiting = waiting || state[i] == 0;
            if (!waiting || g_stop) break;
        }
        struct timespec ts_sleep = {0, 200 * 1000 * 1000};
        nanosleep(&ts_sleep, NULL);
        if (g_stop) /* forward the stop: training runs checkpoint and exit */
            for (int j = 0; j < jobs; j++)
                if (running[j].pid) kill(running[j].pid, SIGTERM);
        for (int j = 0; j < jobs; j++) {
            job *jb = &running[j];
            if (!jb->pid) continue;
            int ws;
            pid_t w = waitpid(jb->pid, &ws, WNOHANG);
            const ex_run *run = &plan.run[jb->run];
            if (w == jb->pid) {
                int code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
                double dt = ag_now() - jb->started;
                took[jb->run] = dt;
                work += dt, n_timed++;
                jb->pid = 0;
                if (code == 0) {
                    state[jb->run] = 2, done++;
                    printf("[%d/%d] %s: done in %.1fs\n", done + failed, plan.n, run->name, dt);
                } else {
                    state[jb->run] = 3, failed++;
                    char tail[200];
                    last_line(jb->log, tail, sizeof tail);
                    printf("[%d/%d] %s: FAILED (exit status %d%s); its output: %s\n", done + failed, plan.n,
                           run->name, code, code == 130 ? ", interrupted: run the experiment again to resume" : "",
                           jb->log);
                }
                fflush(stdout);
                continue;
            }
            char line[200];
            last_line(jb->log, line, sizeof line);
            if (line[0] && strcmp(line, jb->last) != 0) {
                snprintf(jb->last, sizeof jb->last, "%s", line);
                int left = plan.n - done - failed;
                char eta[32];
                double per = n_timed ? work / n_timed : NAN;
                fmt_secs(eta, sizeof eta, per * left / jobs);
                printf("[%d/%d, about %s left] %s | %s\n", done + failed, plan.n, eta, run->name, line);
                fflush(stdout);
            }
        }
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    double wall = ag_now() - t0;
    if (db) sqlite3_close(db), db = NULL;
    {
        char e[512];
        struct stat sb;
        if (stat(dbbuf, &sb) == 0) db = ex_db_open(dbbuf, e, sizeof e);
    }
    ex_table results = {0};
    if (results_table(db, &r, &plan, &results) == 0 && results.nrow > 0) {
        printf("\n");
        ex_table_print_text(&results, stdout);
    }
    char wbuf[32];
    fmt_secs(wbuf, sizeof wbuf, wall);
    printf("\n%d runs: %d done (%d reused, %d resumed), %d failed or skipped, in %s%s\n", plan.n, done, reused,
           resumed, failed, wbuf, g_stop ? "; stopped by a signal: run it again to continue" : "");
    if (report && !g_stop && done > 0 && db) {
        /* the report of exactly this plan's runs: the newest finished run of each run's name and configuration */
        int64_t *ids = calloc((size_t)plan.n, sizeof *ids);
        int n_ids = 0;
        sqlite3_stmt *q = NULL;
        if (ids && sqlite3_prepare_v2(db, "SELECT max(id) FROM runs WHERE name = ?1 AND status = 'finished'", -1, &q,
                                      NULL) == SQLITE_OK)
            for (int i = 0; i < plan.n; i++) {
                char h[17], full[900];
                run_hash(&plan.run[i], h);
                snprintf(full, sizeof full, "%s [%s]", plan.run[i].name, h);
                sqlite3_reset(q);
                sqlite3_bind_text(q, 1, full, -1, SQLITE_TRANSIENT);
                if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL)
                    ids[n_ids++] = sqlite3_column_int64(q, 0);
            }
        sqlite3_finalize(q);
        char rdir[1100], title[300], rerr[1024];
        snprintf(rdir, sizeof rdir, "%s/report", out_dir);
        snprintf(title, sizeof title, "pare experiment %s", experiment);
        char key_store[8][64];
        const char *sweep[8];
        int n_sweep = swept_keys(&plan, key_store, sweep, 8);
        ex_report_opts ro = {.dir = rdir, .title = title, .db_label = dbbuf, .figures = true,
                             .summary = &results, .summary_title = "Results: the experiment's models",
                             .sweep_keys = sweep, .n_sweep_keys = n_sweep};
        ex_report_out res;
        if (n_ids == 0) pare_report_error("pare experiment: no finished run to report\n");
        else if (ex_report_write(db, ids, n_ids, &ro, &res, rerr, sizeof rerr) != 0)
            pare_report_error("pare experiment: the report failed: %s\n", rerr);
        else {
            if (res.note[0]) printf("report: %s\n", res.note);
            printf("report: %s (%d runs, %d figures)\n        %s\n", res.html, n_ids, res.figures, res.md);
        }
        free(ids);
    }
    ex_table_free(&results);
    rc = g_stop ? PARE_EXIT_INTERRUPTED : failed ? PARE_EXIT_ERROR : PARE_EXIT_OK;
    goto cleanup;
end:
    rc = PARE_EXIT_ERROR;
cleanup:
    free(state), free(running), free(took);
    sqlite3_close(db);
    ex_plan_free(&plan);
    ex_recipe_free(&r);
    return rc;
}
