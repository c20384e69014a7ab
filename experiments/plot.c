/* plot.c - one SQL query -> a data file -> a gnuplot script -> an image. */
#include "plot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "autograd/errmsg.h"

const char *ex_gnuplot_path(void) {
    static char found[4096];
    const char *env = getenv("PARE_GNUPLOT");
    if (env && env[0]) return access(env, X_OK) == 0 ? env : NULL;
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t len = strcspn(path, ":");
        if (len && len < sizeof found - 10) {
            snprintf(found, sizeof found, "%.*s/gnuplot", (int)len, path);
            struct stat sb;
            if (stat(found, &sb) == 0 && S_ISREG(sb.st_mode) && access(found, X_OK) == 0) return found;
        }
        path += len + (path[len] == ':');
    }
    return NULL;
}

/* ---- the SQL of each figure ------------------------------------------------ */

char *ex_plot_loss_sql(const int64_t *ids, int n, const char *metrics) {
    if (!metrics || !metrics[0]) metrics = "train_loss,val_loss";
    char *list = ex_id_list(ids, n);
    if (!list) return NULL;
    /* metrics "a,b" -> ('a','b') with each name quoted by SQLite */
    char *names = sqlite3_mprintf("");
    const char *p = metrics;
    while (names && *p) {
        size_t len = strcspn(p, ",");
        char *one = sqlite3_mprintf("%.*s", (int)len, p);
        char *next = one ? sqlite3_mprintf("%s%s%Q", names, names[0] ? ", " : "", one) : NULL;
        sqlite3_free(one);
        sqlite3_free(names);
        names = next;
        p += len + (p[len] == ',');
    }
    char *sql = names ? sqlite3_mprintf("SELECT m.run_id, m.step, m.name AS metric, m.value, r.name AS run_name\n"
                                        "FROM metrics m JOIN runs r ON r.id = m.run_id\n"
                                        "WHERE m.run_id IN %s AND m.name IN (%s) AND m.value IS NOT NULL\n"
                                        "ORDER BY m.run_id, m.name, m.step;\n",
                                        list, names)
                      : NULL;
    sqlite3_free(names);
    free(list);
    return sql;
}

/* " AND col IN (ids)" for ids[0..n), "" when ids is NULL; NULL when out of memory. */
static char *ids_clause(const char *col, const int64_t *ids, int n) {
    if (!ids || n <= 0) return sqlite3_mprintf("");
    char *list = ex_id_list(ids, n);
    char *c = list ? sqlite3_mprintf(" AND %s IN %s", col, list) : NULL;
    free(list);
    return c;
}

char *ex_plot_pareto_sql(const int64_t *ids, int n) {
    char *only = ids_clause("a.run_id", ids, n);
    if (!only) return NULL;
    /* a point's label: a recipe run's name without the experiment and the " [configuration hash]"
     * ("quickstart/student-q8/seed=1 [..]" -> "student-q8/seed=1"), else the run's `method`, else its name;
     * the models whose labels differ only in their seed= part are one point: the mean loss over the seeds,
     * with their lowest and highest loss as the error bar (n is how many) */
    char *sql = sqlite3_mprintf(
        "WITH pts AS (\n"
        "  SELECT a.bytes AS bytes,\n"
        "         (SELECT res.value FROM artifacts e\n"
        "            JOIN results res ON res.run_id = e.run_id AND res.name = 'val_loss'\n"
        "           WHERE e.sha256 = a.sha256 ORDER BY e.run_id DESC LIMIT 1) AS val_loss,\n"
        "         CASE WHEN instr(r.name, ' [') > instr(r.name, '/') AND instr(r.name, '/') > 0\n"
        "              THEN substr(r.name, instr(r.name, '/') + 1, instr(r.name, ' [') - instr(r.name, '/') - 1)\n"
        "              ELSE coalesce((SELECT c.value FROM config c WHERE c.run_id = a.run_id AND c.key = 'method'),\n"
        "                            nullif(r.name, ''), r.command || ' #' || r.id) END AS method\n"
        "  FROM artifacts a JOIN runs r ON r.id = a.run_id\n"
        "  WHERE a.kind = 'model' AND a.sha256 IS NOT NULL AND a.bytes IS NOT NULL%s),\n"
        "lab AS (\n"
        "  SELECT bytes, val_loss,\n"
        "         CASE WHEN p > 0 AND (p = 1 OR substr(method, p - 1, 1) IN ('/', ' '))\n"
        "              THEN rtrim(substr(method, 1, p - 1) ||\n"
        "                         CASE WHEN instr(substr(method, p), ' ') > 0\n"
        "                              THEN substr(method, p + instr(substr(method, p), ' ')) ELSE '' END, '/ ')\n"
        "              ELSE method END AS grp\n"
        "  FROM (SELECT *, instr(method, 'seed=') AS p FROM pts) WHERE val_loss IS NOT NULL)\n"
        "SELECT bytes, val_loss, method, n, lo, hi,\n"
        "       min(val_loss) OVER (ORDER BY bytes, val_loss ROWS UNBOUNDED PRECEDING) AS front\n"
        "FROM (SELECT CAST(round(avg(bytes)) AS INTEGER) AS bytes, avg(val_loss) AS val_loss, grp AS method,\n"
        "             count(*) AS n, min(val_loss) AS lo, max(val_loss) AS hi\n"
        "      FROM lab GROUP BY grp)\n"
        "ORDER BY bytes, val_loss;\n",
        only);
    sqlite3_free(only);
    return sql;
}

char *ex_plot_sweep_sql(const char *key, const char *metric, const ex_filter *f, const int64_t *ids, int n) {
    const char *name = f && f->name && f->name[0] ? f->name : NULL;
    const char *cmd = f && f->command && f->command[0] ? f->command : NULL;
    const char *status = f && f->status && f->status[0] ? f->status : NULL;
    char *n1 = name ? sqlite3_mprintf("\n    AND instr(r.name, %Q) > 0", name) : sqlite3_mprintf("");
    char *c1 = cmd ? sqlite3_mprintf("\n    AND r.command = %Q", cmd) : sqlite3_mprintf("");
    char *s1 = status ? sqlite3_mprintf("\n    AND r.status = %Q", status) : sqlite3_mprintf("");
    char *i1 = ids_clause("r.id", ids, n);
    char *clean = n1 && c1 && s1 && i1 ? sqlite3_mprintf("%s%s%s%s", n1, c1, s1, i1) : NULL;
    sqlite3_free(i1);
    sqlite3_free(n1);
    sqlite3_free(c1);
    sqlite3_free(s1);
    if (!clean) return NULL;
    char *sql = sqlite3_mprintf(
        "SELECT x, y, run_id, run_name FROM (\n"
        "  SELECT CAST(c.value AS REAL) AS x,\n"
        "         coalesce((SELECT res.value FROM results res WHERE res.run_id = r.id AND res.name = %Q),\n"
        "                  (SELECT m.value FROM metrics m WHERE m.run_id = r.id AND m.name = %Q\n"
        "                     AND m.value IS NOT NULL ORDER BY m.step DESC LIMIT 1)) AS y,\n"
        "         r.id AS run_id, r.name AS run_name\n"
        "  FROM runs r JOIN config c ON c.run_id = r.id AND c.key = %Q\n"
        "  WHERE 1%s)\n"
        "WHERE y IS NOT NULL\n"
        "ORDER BY x, run_id;\n",
        metric, metric, key, clean);
    sqlite3_free(clean);
    return sql;
}

/* ---- files ----------------------------------------------------------------------- */

typedef struct fig_paths {
    char dir[1024];   /* "." when out has no directory */
    char base[256];   /* file name without extension */
    char ext[8];      /* "png" or "svg" */
    char path[1300];  /* scratch for dir/base.xxx */
} fig_paths;

static int split_out(ex_fig *fig, fig_paths *fp, char *err, size_t errlen) {
    const char *out = fig->out && fig->out[0] ? fig->out : NULL;
    if (!out) {
        ag_errf(err, errlen, "no output path for the figure");
        return -1;
    }
    const char *slash = strrchr(out, '/');
    const char *name = slash ? slash + 1 : out;
    if (slash) {
        size_t dl = (size_t)(slash - out);
        if (dl >= sizeof fp->dir) dl = sizeof fp->dir - 1;
        snprintf(fp->dir, sizeof fp->dir, "%.*s", (int)(dl ? dl : 1), dl ? out : "/");
    } else {
        snprintf(fp->dir, sizeof fp->dir, ".");
    }
    const char *dot = strrchr(name, '.');
    bool known = dot && (strcmp(dot, ".png") == 0 || strcmp(dot, ".svg") == 0);
    size_t bl = known ? (size_t)(dot - name) : strlen(name);
    if (bl == 0 || bl >= sizeof fp->base) {
        ag_errf(err, errlen, "%s: expected a file name such as loss.png or loss.svg", out);
        return -1;
    }
    snprintf(fp->base, sizeof fp->base, "%.*s", (int)bl, name);
    if (known) fig->format = strcmp(dot, ".svg") == 0 ? EX_FIG_SVG : EX_FIG_PNG;
    snprintf(fp->ext, sizeof fp->ext, "%s", fig->format == EX_FIG_SVG ? "svg" : "png");
    snprintf(fig->image, sizeof fig->image, "%s/%s.%s", fp->dir, fp->base, fp->ext);
    return 0;
}

static const char *file_of(fig_paths *fp, const char *ext) {
    snprintf(fp->path, sizeof fp->path, "%s/%s.%s", fp->dir, fp->base, ext);
    return fp->path;
}

static int write_sql(fig_paths *fp, const char *what, const char *sql, char *err, size_t errlen) {
    FILE *f = fopen(file_of(fp, "sql"), "w");
    if (!f) {
        ag_errf(err, errlen, "%s: cannot write: %s", fp->path, strerror(errno));
        return -1;
    }
    fprintf(f,
            "-- %s: the data of %s.%s, written by pare.\n"
            "-- Re-run: sqlite3 -header -separator \"$(printf '\\t')\" pare.db < %s.sql > %s.dat\n"
            "%s",
            what, fp->base, fp->ext, fp->base, fp->base, sql);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        ag_errf(err, errlen, "%s: write failed", fp->path);
        return -1;
    }
    return 0;
}

/* Called for every row while the data file is written. */
typedef void (*row_fn)(void *user, sqlite3_stmt *st);

static void dat_field(FILE *f, const char *s) {
    for (; s && *s; s++) fputc(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s, f);
}

static int write_dat(sqlite3 *db, fig_paths *fp, const char *sql, row_fn fn, void *user, int *rows, char *err,
                     size_t errlen) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        ag_errf(err, errlen, "the figure's query failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    FILE *f = fopen(file_of(fp, "dat"), "w");
    if (!f) {
        ag_errf(err, errlen, "%s: cannot write: %s", fp->path, strerror(errno));
        sqlite3_finalize(st);
        return -1;
    }
    int nc = sqlite3_column_count(st);
    for (int c = 0; c < nc; c++) {
        dat_field(f, sqlite3_column_name(st, c));
        fputc(c + 1 < nc ? '\t' : '\n', f);
    }
    int rc;
    *rows = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int c = 0; c < nc; c++) {
            dat_field(f, (const char *)sqlite3_column_text(st, c));
            fputc(c + 1 < nc ? '\t' : '\n', f);
        }
        if (fn) fn(user, st);
        (*rows)++;
    }
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    if (rc != SQLITE_DONE) {
        ag_errf(err, errlen, "the figure's query failed: %s", sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    if (bad) {
        ag_errf(err, errlen, "%s/%s.dat: write failed", fp->dir, fp->base);
        return -1;
    }
    return 0;
}

/* A gnuplot string literal: "..." with \ and " escaped. */
static void gp_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s == '\n' ? ' ' : *s, f);
    }
    fputc('"', f);
}

static FILE *open_gp(fig_paths *fp, const ex_fig *fig, const char *title, char *err, size_t errlen) {
    FILE *f = fopen(file_of(fp, "gp"), "w");
    if (!f) {
        ag_errf(err, errlen, "%s: cannot write: %s", fp->path, strerror(errno));
        return NULL;
    }
    fprintf(f, "# gnuplot script written by pare: draws %s.%s from %s.dat (the result of %s.sql).\n"
               "# Re-run: cd to this directory, then gnuplot %s.gp\n",
            fp->base, fp->ext, fp->base, fp->base, fp->base);
    if (fig->format == EX_FIG_SVG)
        fprintf(f, "set terminal svg size 960,600 noenhanced font \"sans,12\" background rgb \"white\"\n");
    else
        fprintf(f, "if (strstrt(GPVAL_TERMINALS, \"pngcairo\") > 0) {\n"
                   "  set terminal pngcairo size 960,600 noenhanced font \"sans,10\"\n"
                   "} else {\n"
                   "  set terminal png size 960,600 noenhanced\n"
                   "}\n");
    fprintf(f, "set output \"%s.%s\"\n", fp->base, fp->ext);
    fprintf(f, "set datafile separator \"\\t\"\nset grid\nset title ");
    gp_string(f, fig->title ? fig->title : title);
    fputc('\n', f);
    return f;
}

static int close_gp(FILE *f, fig_paths *fp, char *err, size_t errlen) {
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        ag_errf(err, errlen, "%s/%s.gp: write failed", fp->dir, fp->base);
        return -1;
    }
    return 0;
}

/* Runs gnuplot NAME.gp in the figure's directory. */
static int run_gnuplot(fig_paths *fp, char *err, size_t errlen) {
    const char *gp = ex_gnuplot_path();
    if (!gp) {
        ag_errf(err, errlen,
                "gnuplot was not found (looked at $PARE_GNUPLOT, then PATH). Install it with "
                "`sudo apt-get install gnuplot-nox` (Debian/Ubuntu) or `brew install gnuplot` (macOS), then "
                "re-run, or draw this figure later: cd %s && gnuplot %s.gp",
                fp->dir, fp->base);
        return EX_PLOT_NO_GNUPLOT;
    }
    char script[300];
    snprintf(script, sizeof script, "%s.gp", fp->base);
    char image[1300];
    snprintf(image, sizeof image, "%s/%s.%s", fp->dir, fp->base, fp->ext);
    remove(image);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        ag_errf(err, errlen, "cannot start gnuplot: %s", strerror(errno));
        return EX_PLOT_ERROR;
    }
    if (pid == 0) {
        if (chdir(fp->dir) != 0) _exit(126);
        /* gnuplot's messages (warnings such as "empty x range" included) go to NAME.log beside the script */
        char log[320];
        snprintf(log, sizeof log, "%s.log", fp->base);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2), close(fd);
        execl(gp, "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            ag_errf(err, errlen, "waiting for gnuplot: %s", strerror(errno));
            return EX_PLOT_ERROR;
        }
    struct stat sb;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || stat(image, &sb) != 0 || sb.st_size == 0) {
        char first[240] = "";
        char log[1300];
        snprintf(log, sizeof log, "%s/%s.log", fp->dir, fp->base);
        FILE *lf = fopen(log, "r");
        if (lf) { /* its first message, for the error line */
            while (fgets(first, sizeof first, lf) && strspn(first, " \t\r\n^") == strlen(first)) first[0] = '\0';
            first[strcspn(first, "\r\n")] = '\0';
            fclose(lf);
        }
        ag_errf(err, errlen, "gnuplot failed on %s/%s.gp (exit status %d)%s%s; its messages are in %s", fp->dir,
                fp->base, WIFEXITED(status) ? WEXITSTATUS(status) : -1, first[0] ? ": " : "", first, log);
        return EX_PLOT_ERROR;
    }
    return EX_PLOT_OK;
}

/* ---- the figures -------------------------------------------------------------------- */

typedef struct series {
    int64_t run;
    char metric[64];
    char label[160];
} series;

typedef struct loss_rows {
    series *s;
    int n, cap;
    bool oom;
} loss_rows;

static void collect_series(void *user, sqlite3_stmt *st) {
    loss_rows *lr = user;
    int64_t run = sqlite3_column_int64(st, 0);
    const char *metric = (const char *)sqlite3_column_text(st, 2);
    const char *name = (const char *)sqlite3_column_text(st, 4);
    if (!metric) metric = "";
    if (lr->n && lr->s[lr->n - 1].run == run && strcmp(lr->s[lr->n - 1].metric, metric) == 0) return;
    if (lr->n == lr->cap) {
        int cap = lr->cap ? 2 * lr->cap : 8;
        series *s = realloc(lr->s, (size_t)cap * sizeof *s);
        if (!s) {
            lr->oom = true;
            return;
        }
        lr->s = s;
        lr->cap = cap;
    }
    series *s = &lr->s[lr->n++];
    s->run = run;
    snprintf(s->metric, sizeof s->metric, "%s", metric);
    snprintf(s->label, sizeof s->label, "#%lld%s%s %s", (long long)run, name && name[0] ? " " : "",
             name ? name : "", metric);
}

int ex_plot_loss(sqlite3 *db, const int64_t *ids, int n, const char *metrics, ex_fig *fig, char *err,
                 size_t errlen) {
    fig_paths fp;
    if (n < 1) {
        ag_errf(err, errlen, "no runs to plot: give at least one run id");
        return EX_PLOT_ERROR;
    }
    if (ex_runs_check(db, ids, n, err, errlen) != 0 || split_out(fig, &fp, err, errlen) != 0) return EX_PLOT_ERROR;
    char *sql = ex_plot_loss_sql(ids, n, metrics);
    if (!sql) {
        ag_errf(err, errlen, "out of memory");
        return EX_PLOT_ERROR;
    }
    loss_rows lr = {0};
    int rc = EX_PLOT_ERROR;
    if (write_sql(&fp, "loss curves", sql, err, errlen) != 0 ||
        write_dat(db, &fp, sql, collect_series, &lr, &fig->rows, err, errlen) != 0)
        goto done;
    if (lr.oom) {
        ag_errf(err, errlen, "out of memory");
        goto done;
    }
    if (fig->rows == 0) {
        ag_errf(err, errlen, "runs %s recorded none of the metrics %s", n == 1 ? "given" : "given",
                metrics && metrics[0] ? metrics : "train_loss,val_loss");
        goto done;
    }
    FILE *f = open_gp(&fp, fig, "loss against step", err, errlen);
    if (!f) goto done;
    fprintf(f, "set xlabel \"step\"\nset ylabel \"loss (nats/token)\"\nset key top right\n");
    fprintf(f, "plot \\\n");
    int color = 0;
    for (int i = 0; i < lr.n; i++) {
        if (i > 0 && lr.s[i].run != lr.s[i - 1].run) color++;
        bool val = strstr(lr.s[i].metric, "val") != NULL;
        fprintf(f, "  \"%s.dat\" skip 1 using (($1 == %lld && strcol(3) eq ", fp.base, (long long)lr.s[i].run);
        gp_string(f, lr.s[i].metric);
        fprintf(f, ") ? $2 : NaN):4 with %s lc %d dt %d lw 1.5 title ", val ? "linespoints pt 7 ps 0.6" : "lines",
                color + 1, val ? 2 : 1);
        gp_string(f, lr.s[i].label);
        fputs(i + 1 < lr.n ? ", \\\n" : "\n", f);
    }
    if (close_gp(f, &fp, err, errlen) != 0) goto done;
    rc = run_gnuplot(&fp, err, errlen);
done:
    free(lr.s);
    sqlite3_free(sql);
    return rc;
}

int ex_plot_pareto(sqlite3 *db, const int64_t *ids, int n, ex_fig *fig, char *err, size_t errlen) {
    fig_paths fp;
    if (split_out(fig, &fp, err, errlen) != 0) return EX_PLOT_ERROR;
    char *sql = ex_plot_pareto_sql(ids, n);
    if (!sql) {
        ag_errf(err, errlen, "out of memory");
        return EX_PLOT_ERROR;
    }
    int rc = EX_PLOT_ERROR;
    if (write_sql(&fp, "bytes on disk against validation loss of every exported model", sql, err, errlen) != 0 ||
        write_dat(db, &fp, sql, NULL, NULL, &fig->rows, err, errlen) != 0)
        goto done;
    if (fig->rows == 0) {
        ag_errf(err, errlen, "no exported model with a validation loss is recorded (artifacts of kind 'model' "
                             "whose file has a val_loss result): export and evaluate a model first");
        goto done;
    }
    FILE *f = open_gp(&fp, fig, "size on disk against validation loss", err, errlen);
    if (!f) goto done;
    fprintf(f, "set xlabel \"bytes on disk\"\nset ylabel \"validation loss (nats/token)\"\n"
               "set logscale x 2\nset format x \"%%.0b %%BB\"\nset key top right\nset offsets graph 0.05, graph 0.2, "
               "graph 0.05, graph 0.05\n");
    fprintf(f, "plot \"%s.dat\" skip 1 using 1:7 with steps lc rgb \"#999999\" dt 2 title \"best so far\", \\\n"
               "  \"%s.dat\" skip 1 using 1:2:5:6 with yerrorbars pt 7 ps 1.0 lc rgb \"#1f77b4\" "
               "title \"exported model (mean; bar: lowest to highest over seeds)\", \\\n"
               "  \"%s.dat\" skip 1 using 1:2:3 with labels offset char 0.8,0.4 left font \",8\" notitle\n",
            fp.base, fp.base, fp.base);
    if (close_gp(f, &fp, err, errlen) != 0) goto done;
    rc = run_gnuplot(&fp, err, errlen);
done:
    sqlite3_free(sql);
    return rc;
}

int ex_plot_sweep(sqlite3 *db, const char *key, const char *metric, const ex_filter *flt, const int64_t *ids, int n,
                  ex_fig *fig, char *err, size_t errlen) {
    fig_paths fp;
    if (!key || !key[0] || !metric || !metric[0]) {
        ag_errf(err, errlen, "a sweep needs a configuration key and a metric (for example: lr val_loss)");
        return EX_PLOT_ERROR;
    }
    if (split_out(fig, &fp, err, errlen) != 0) return EX_PLOT_ERROR;
    char *sql = ex_plot_sweep_sql(key, metric, flt, ids, n);
    if (!sql) {
        ag_errf(err, errlen, "out of memory");
        return EX_PLOT_ERROR;
    }
    int rc = EX_PLOT_ERROR;
    char what[256];
    snprintf(what, sizeof what, "%s against the configuration key %s", metric, key);
    if (write_sql(&fp, what, sql, err, errlen) != 0 || write_dat(db, &fp, sql, NULL, NULL, &fig->rows, err, errlen) != 0)
        goto done;
    if (fig->rows == 0) {
        ag_errf(err, errlen, "no run has both the configuration key '%s' and a result or metric '%s'", key, metric);
        goto done;
    }
    FILE *f = open_gp(&fp, fig, what, err, errlen);
    if (!f) goto done;
    fprintf(f, "set xlabel ");
    gp_string(f, key);
    fprintf(f, "\nset ylabel ");
    gp_string(f, metric);
    fprintf(f, "\nset key top right\nset offsets graph 0.05, graph 0.05, graph 0.1, graph 0.1\n");
    fprintf(f, "plot \"%s.dat\" skip 1 using 1:2 smooth unique with lines lc rgb \"#999999\" title \"mean per value\", \\\n"
               "  \"%s.dat\" skip 1 using 1:2 with points pt 7 ps 1.2 lc rgb \"#d62728\" title \"run\", \\\n"
               "  \"%s.dat\" skip 1 using 1:2:(sprintf(\"#%%d\", $3)) with labels offset char 0.8,0.6 left notitle\n",
            fp.base, fp.base, fp.base);
    if (close_gp(f, &fp, err, errlen) != 0) goto done;
    rc = run_gnuplot(&fp, err, errlen);
done:
    sqlite3_free(sql);
    return rc;
}
