/* test_plot.c - figures, tables and reports from the run log: the SQL behind
 * each figure returns what the runs recorded, the images are valid PNG/SVG,
 * the report's HTML carries the tables and figures; `pare runs` tables. */
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
#include <unistd.h>

#include "experiments/db.h"
#include "experiments/plot.h"
#include "experiments/report.h"
#include "experiments/runs.h"

typedef struct fixture {
    char dir[64];
    char db[128];
    int64_t teacher, student, quant, eval, bench, sweep[3];
    sqlite3 *conn;
} fixture;

/* A teacher (train, 50 steps), a student trained from its checkpoint, a
 * quantized export of the student with an eval of that file, and a sweep of
 * three runs over lr. */
static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (test_tmpdir(f->dir, sizeof f->dir, "plot") != 0) return -1;
    snprintf(f->db, sizeof f->db, "%s/pare.db", f->dir);
    ex_log_opts o = ex_log_opts_default();
    o.warn = stderr;
    ex_log *log = ex_log_open_opts(f->db, &o);
    char path[160];

    int t = ex_run_begin(log, "train", "teacher", "lr=0.001\nn-layer=4\nsteps=50\n", 1, 0, NULL);
    for (int s = 1; s <= 50; s++) {
        ex_metric(log, t, s, "train_loss", 3.0 * exp(-s / 20.0) + 1.0);
        if (s % 10 == 0) ex_metric(log, t, s, "val_loss", 3.1 * exp(-s / 20.0) + 1.05);
        ex_metric(log, t, s, "tokens_per_s", 1000.0 + s);
    }
    ex_result(log, t, "val_loss", 1.30);
    ex_result(log, t, "params", 800000);
    snprintf(path, sizeof path, "%s/teacher.ckpt", f->dir);
    test_write_file(path, "teacher weights");
    ex_artifact(log, t, "checkpoint", path);
    ex_run_end(log, t, EX_FINISHED);
    f->teacher = ex_run_id(log, t);

    int s = ex_run_begin(log, "train", "student", "lr=0.002\nn-layer=2\nsteps=30\n", 1,
                         ex_log_run_of_file(log, path), NULL);
    for (int k = 1; k <= 30; k++) ex_metric(log, s, k, "train_loss", 2.0 * exp(-k / 10.0) + 1.2);
    ex_metric(log, s, 30, "val_loss", 1.45);
    ex_result(log, s, "val_loss", 1.45);
    snprintf(path, sizeof path, "%s/student.pare", f->dir);
    test_write_file(path, "student f32 model, rather larger than the int8 one ...............................");
    ex_artifact(log, s, "model", path);
    ex_run_end(log, s, EX_FINISHED);
    f->student = ex_run_id(log, s);

    int q = ex_run_begin(log, "export", "", "method=int8\ninput=student.ckpt\n", 1, f->student, NULL);
    snprintf(path, sizeof path, "%s/student-int8.pare", f->dir);
    test_write_file(path, "int8 model");
    ex_artifact(log, q, "model", path);
    ex_run_end(log, q, EX_FINISHED);
    f->quant = ex_run_id(log, q);
    int e = ex_run_begin(log, "eval", "", "model=student-int8.pare\n", 1, f->quant, NULL);
    ex_artifact(log, e, "input", path);
    ex_result(log, e, "val_loss", 1.48);
    ex_run_end(log, e, EX_FINISHED);
    f->eval = ex_run_id(log, e);
    int b = ex_run_begin(log, "bench", "", "model=student-int8.pare\n", 0, f->quant, NULL);
    ex_artifact(log, b, "input", path);
    ex_result(log, b, "decode_tokens_per_s", 4321.4);
    ex_run_end(log, b, EX_FINISHED);
    f->bench = ex_run_id(log, b);

    const double lrs[3] = {0.0005, 0.001, 0.002}, losses[3] = {1.6, 1.4, 1.5};
    for (int i = 0; i < 3; i++) {
        char conf[64];
        snprintf(conf, sizeof conf, "lr=%g\nsteps=10\n", lrs[i]);
        int r = ex_run_begin(log, "train", "lr-sweep", conf, 7, 0, NULL);
        ex_metric(log, r, 10, "val_loss", losses[i]);
        ex_run_end(log, r, EX_FINISHED);
        f->sweep[i] = ex_run_id(log, r);
    }
    int d = ex_run_begin(log, "train", "lr-sweep", "lr=0.1\n", 7, 0, NULL);
    ex_metric(log, d, 3, "train_loss", NAN);
    ex_run_end(log, d, EX_DIVERGED);
    if (ex_log_close(log) != 0) return -1;
    char err[256];
    f->conn = ex_db_open(f->db, err, sizeof err);
    if (!f->conn) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    sqlite3_close(f->conn);
    test_rmtree(f->dir);
    free(f);
    return 0;
}

static char *slurp(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    static char buf[1 << 21];
    *n = fread(buf, 1, sizeof buf - 1, fp);
    buf[*n] = '\0';
    fclose(fp);
    return buf;
}

/* The PNG signature, then an IHDR chunk of 13 bytes with a sensible size. */
static void expect_png(const char *path) {
    size_t n = 0;
    const unsigned char *p = (const unsigned char *)slurp(path, &n);
    if (!p) fail_msg("%s was not written", path);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    assert_true(n > 1000);
    assert_memory_equal(p, sig, 8);
    assert_memory_equal(p + 12, "IHDR", 4);
    uint32_t len = (uint32_t)p[8] << 24 | (uint32_t)p[9] << 16 | (uint32_t)p[10] << 8 | p[11];
    uint32_t w = (uint32_t)p[16] << 24 | (uint32_t)p[17] << 16 | (uint32_t)p[18] << 8 | p[19];
    uint32_t h = (uint32_t)p[20] << 24 | (uint32_t)p[21] << 16 | (uint32_t)p[22] << 8 | p[23];
    assert_int_equal(len, 13);
    assert_int_equal(w, 960);
    assert_int_equal(h, 600);
}

static bool have_gnuplot(void) {
    if (ex_gnuplot_path()) return true;
    print_message("[  SKIPPED ] gnuplot not found: image checks skipped (install gnuplot-nox)\n");
    return false;
}

/* Runs sql and returns its rows as "a|b|c\n" lines. */
static char *rows_of(sqlite3 *db, const char *sql) {
    static char buf[1 << 16];
    size_t len = 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) fail_msg("%s", sqlite3_errmsg(db));
    buf[0] = '\0';
    while (sqlite3_step(st) == SQLITE_ROW)
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            const char *v = (const char *)sqlite3_column_text(st, c);
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", v ? v : "",
                                    c + 1 < sqlite3_column_count(st) ? "|" : "\n");
        }
    sqlite3_finalize(st);
    return buf;
}

/* Reads a .sql file written beside a figure, dropping its comment lines. */
static char *sql_file(const char *path) {
    size_t n = 0;
    char *text = slurp(path, &n);
    if (!text) fail_msg("%s was not written", path);
    static char out[8192];
    size_t len = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (strncmp(line, "--", 2) != 0) len += (size_t)snprintf(out + len, sizeof out - len, "%s\n", line);
    return out;
}

static void test_loss_figure(void **state) {
    fixture *f = *state;
    char out[160], err[512];
    snprintf(out, sizeof out, "%s/loss.png", f->dir);
    int64_t ids[2] = {f->teacher, f->student};
    ex_fig fig = {.out = out};
    int rc = ex_plot_loss(f->conn, ids, 2, NULL, &fig, err, sizeof err);
    if (rc == EX_PLOT_ERROR) fail_msg("%s", err);
    /* teacher: 50 train + 5 val, student: 30 train + 1 val */
    assert_int_equal(fig.rows, 86);
    /* The SQL written beside the figure, re-run, gives what was recorded. */
    char path[192];
    snprintf(path, sizeof path, "%s/loss.sql", f->dir);
    char *got = rows_of(f->conn, sql_file(path));
    char want[256];
    snprintf(want, sizeof want, "%lld|10|val_loss|", (long long)f->teacher);
    assert_non_null(strstr(got, want));
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM metrics WHERE run_id IN (%lld, %lld) AND name IN ('train_loss', 'val_loss')", (long long)f->teacher,
             (long long)f->student);
    assert_string_equal(rows_of(f->conn, q), "86\n");
    /* The data file holds the same rows plus a header. */
    snprintf(path, sizeof path, "%s/loss.dat", f->dir);
    size_t n = 0;
    char *dat = slurp(path, &n);
    assert_non_null(dat);
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += dat[i] == '\n';
    assert_int_equal(lines, 87);
    assert_int_equal(strncmp(dat, "run_id\tstep\tmetric\tvalue\trun_name\n", 34), 0);
    snprintf(path, sizeof path, "%s/loss.gp", f->dir);
    assert_int_equal(access(path, R_OK), 0);
    if (rc == EX_PLOT_NO_GNUPLOT) {
        assert_non_null(strstr(err, "apt-get install gnuplot"));
        have_gnuplot();
        return;
    }
    expect_png(out);
}

static void test_loss_figure_svg_and_errors(void **state) {
    fixture *f = *state;
    char out[160], err[512];
    snprintf(out, sizeof out, "%s/curves", f->dir);
    int64_t ids[1] = {f->teacher};
    ex_fig fig = {.out = out, .format = EX_FIG_SVG};
    int rc = ex_plot_loss(f->conn, ids, 1, "val_loss", &fig, err, sizeof err);
    assert_int_not_equal(rc, EX_PLOT_ERROR);
    assert_int_equal(fig.rows, 5);
    snprintf(out, sizeof out, "%s/curves.svg", f->dir);
    assert_string_equal(fig.image, out);
    if (rc == EX_PLOT_OK) {
        size_t n = 0;
        char *svg = slurp(out, &n);
        assert_non_null(svg);
        assert_non_null(strstr(svg, "<svg"));
        assert_non_null(strstr(svg, "</svg>"));
    }
    int64_t missing[1] = {999};
    assert_int_equal(ex_plot_loss(f->conn, missing, 1, NULL, &fig, err, sizeof err), EX_PLOT_ERROR);
    assert_non_null(strstr(err, "999"));
    assert_int_equal(ex_plot_loss(f->conn, ids, 1, "no_such_metric", &fig, err, sizeof err), EX_PLOT_ERROR);
}

static void test_missing_gnuplot_is_explained(void **state) {
    fixture *f = *state;
    char out[160], err[512];
    snprintf(out, sizeof out, "%s/nognuplot.png", f->dir);
    setenv("PARE_GNUPLOT", "/nonexistent/gnuplot", 1);
    int64_t ids[1] = {f->teacher};
    ex_fig fig = {.out = out};
    int rc = ex_plot_loss(f->conn, ids, 1, NULL, &fig, err, sizeof err);
    unsetenv("PARE_GNUPLOT");
    assert_int_equal(rc, EX_PLOT_NO_GNUPLOT);
    assert_non_null(strstr(err, "gnuplot was not found"));
    assert_non_null(strstr(err, "apt-get install gnuplot-nox"));
    snprintf(out, sizeof out, "%s/nognuplot.dat", f->dir);
    assert_int_equal(access(out, R_OK), 0); /* the data is still there */
}

/* Two exported models: the student's f32 file (its own val_loss) and the
 * int8 file (val_loss from the eval run of the same bytes), labelled by
 * method or name. */
static void test_pareto_figure(void **state) {
    fixture *f = *state;
    char out[160], err[512];
    snprintf(out, sizeof out, "%s/pareto.png", f->dir);
    ex_fig fig = {.out = out};
    int rc = ex_plot_pareto(f->conn, NULL, 0, &fig, err, sizeof err);
    if (rc == EX_PLOT_ERROR) fail_msg("%s", err);
    assert_int_equal(fig.rows, 2);
    char path[192];
    snprintf(path, sizeof path, "%s/pareto.sql", f->dir);
    char *got = rows_of(f->conn, sql_file(path));
    char want[512];
    snprintf(want, sizeof want, "10|1.48|int8|1|1.48|1.48|1.48\n");
    assert_int_equal(strncmp(got, want, strlen(want)), 0);
    assert_non_null(strstr(got, "|1.45|student|1|1.45|1.45|"));
    if (rc == EX_PLOT_OK && have_gnuplot()) expect_png(out);
}

static void test_sweep_figure(void **state) {
    fixture *f = *state;
    char out[160], err[512];
    snprintf(out, sizeof out, "%s/sweep.png", f->dir);
    ex_fig fig = {.out = out};
    ex_filter flt = {.name = "lr-sweep", .status = "finished"};
    int rc = ex_plot_sweep(f->conn, "lr", "val_loss", &flt, NULL, 0, &fig, err, sizeof err);
    if (rc == EX_PLOT_ERROR) fail_msg("%s", err);
    assert_int_equal(fig.rows, 3); /* the diverged run is filtered out */
    char path[192];
    snprintf(path, sizeof path, "%s/sweep.sql", f->dir);
    char want[256];
    snprintf(want, sizeof want, "0.0005|1.6|%lld|lr-sweep\n0.001|1.4|%lld|lr-sweep\n0.002|1.5|%lld|lr-sweep\n",
             (long long)f->sweep[0], (long long)f->sweep[1], (long long)f->sweep[2]);
    assert_string_equal(rows_of(f->conn, sql_file(path)), want);
    if (rc == EX_PLOT_OK && have_gnuplot()) expect_png(out);
    assert_int_equal(ex_plot_sweep(f->conn, "no-such-key", "val_loss", NULL, NULL, 0, &fig, err, sizeof err), EX_PLOT_ERROR);
    assert_non_null(strstr(err, "no-such-key"));
}

static void test_runs_tables(void **state) {
    fixture *f = *state;
    char err[512];
    int64_t *ids = NULL;
    int n = 0;
    ex_filter flt = {.name = "sweep", .status = "diverged"};
    assert_int_equal(ex_runs_select(f->conn, &flt, &ids, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    free(ids);
    ex_filter all = {0};
    assert_int_equal(ex_runs_select(f->conn, &all, &ids, &n, err, sizeof err), 0);
    assert_int_equal(n, 9);
    free(ids);
    ex_filter bad = {.status = "exploded"};
    assert_int_equal(ex_runs_select(f->conn, &bad, &ids, &n, err, sizeof err), -1);
    assert_non_null(strstr(err, "exploded"));

    int64_t two[2] = {f->teacher, f->student};
    ex_table t;
    assert_int_equal(ex_runs_table(f->conn, two, 2, &t, err, sizeof err), 0);
    assert_int_equal(t.nrow, 2);
    assert_string_equal(t.head[9], "val_loss");
    assert_string_equal(t.cell[9], "1.3000");
    assert_string_equal(t.cell[t.ncol + 1], "student");
    char parent[32];
    snprintf(parent, sizeof parent, "%lld", (long long)f->teacher);
    assert_string_equal(t.cell[t.ncol + 4], parent);
    assert_string_equal(t.head[13], "tokens_per_s");
    assert_string_equal(t.cell[13], "1050"); /* the teacher's last tokens_per_s metric */
    ex_table_free(&t);
    int64_t readers[2] = {f->eval, f->bench};
    assert_int_equal(ex_runs_table(f->conn, readers, 2, &t, err, sizeof err), 0);
    assert_string_equal(t.head[12], "bytes");
    assert_string_equal(t.cell[12], "10"); /* the model file the eval read */
    assert_string_equal(t.cell[t.ncol + 13], "4321"); /* bench: decode tokens/s */
    ex_table_free(&t);

    ex_table config, results;
    assert_int_equal(ex_runs_compare(f->conn, two, 2, &config, &results, err, sizeof err), 0);
    /* lr, n-layer, steps all differ; nothing else was configured */
    assert_int_equal(config.nrow, 3);
    assert_string_equal(config.cell[0], "lr");
    assert_string_equal(config.cell[1], "0.001");
    assert_string_equal(config.cell[2], "0.002");
    assert_int_equal(results.nrow, 2); /* params, val_loss */
    assert_string_equal(results.cell[0], "params");
    assert_string_equal(results.cell[2], "-"); /* the student recorded no params */
    ex_table_free(&config);
    ex_table_free(&results);

    int64_t same[2] = {f->sweep[0], f->sweep[1]};
    assert_int_equal(ex_runs_compare(f->conn, same, 2, &config, &results, err, sizeof err), 0);
    assert_int_equal(config.nrow, 1); /* only lr differs: steps=10 is shared */
    ex_table_free(&config);
    ex_table_free(&results);

    FILE *mem = tmpfile();
    assert_int_equal(ex_run_show(f->conn, f->quant, mem, err, sizeof err), 0);
    rewind(mem);
    static char text[16384];
    size_t len = fread(text, 1, sizeof text - 1, mem);
    text[len] = '\0';
    fclose(mem);
    assert_non_null(strstr(text, "method"));
    assert_non_null(strstr(text, "student-int8.pare"));
    assert_non_null(strstr(text, "teacher")); /* the lineage reaches back to the teacher */
    assert_int_equal(ex_run_show(f->conn, 4242, stdout, err, sizeof err), -1);
}

static void test_report(void **state) {
    fixture *f = *state;
    char dir[160], err[512];
    snprintf(dir, sizeof dir, "%s/rep", f->dir);
    int64_t ids[3] = {f->teacher, f->student, f->quant};
    ex_report_opts o = {.dir = dir, .title = "Distillation <study>", .db_label = f->db, .figures = true};
    ex_report_out out;
    assert_int_equal(ex_report_write(f->conn, ids, 3, &o, &out, err, sizeof err), 0);
    size_t n = 0;
    char *html = slurp(out.html, &n);
    assert_non_null(html);
    assert_non_null(strstr(html, "<title>Distillation &lt;study&gt;</title>"));
    assert_non_null(strstr(html, "<h2>Runs</h2>\n<table>"));
    assert_non_null(strstr(html, "<td>teacher</td>"));
    assert_non_null(strstr(html, "<h2>Final results</h2>"));
    assert_non_null(strstr(html, "<h2>Fingerprints</h2>"));
    /* what every run shares is one (field, value) row, not a column repeated per run */
    assert_non_null(strstr(html, "<td>compiler</td>"));
    assert_non_null(strstr(html, "<td>cflags</td>"));
    assert_non_null(strstr(html, "<td>n-layer</td>"));
    assert_null(strstr(html, "src=\"figures/")); /* self-contained: nothing linked */
    if (ex_gnuplot_path()) {
        assert_int_equal(out.figures, 2);
        assert_non_null(strstr(html, "src=\"data:image/png;base64,iVBORw0KGgo"));
    } else {
        have_gnuplot();
        assert_non_null(strstr(html, "gnuplot was not found"));
    }
    char *md = slurp(out.md, &n);
    assert_non_null(md);
    assert_non_null(strstr(md, "# Distillation <study>"));
    assert_non_null(strstr(md, "| id | name | command |"));
    assert_non_null(strstr(md, "| n-layer | 4 | 2 | - |"));
}

static void test_base64(void **state) {
    (void)state;
    FILE *mem = tmpfile();
    ex_base64(mem, (const unsigned char *)"Man", 3);
    fputc(' ', mem);
    ex_base64(mem, (const unsigned char *)"Ma", 2);
    fputc(' ', mem);
    ex_base64(mem, (const unsigned char *)"M", 1);
    rewind(mem);
    char buf[32] = "";
    assert_non_null(fgets(buf, sizeof buf, mem));
    fclose(mem);
    assert_string_equal(buf, "TWFu TWE= TQ==");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_loss_figure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loss_figure_svg_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_gnuplot_is_explained, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pareto_figure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_figure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs_tables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report, setup, teardown),
        cmocka_unit_test(test_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
