/* report.c - HTML and Markdown reports built from the run log. */
#include "report.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "plot.h"
#include "runs.h"
#include "table.h"
#include "autograd/errmsg.h"

void ex_base64(FILE *f, const unsigned char *p, size_t n) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        fputc(a[v >> 18 & 63], f);
        fputc(a[v >> 12 & 63], f);
        fputc(i + 1 < n ? a[v >> 6 & 63] : '=', f);
        fputc(i + 2 < n ? a[v & 63] : '=', f);
    }
}

static int make_dir(const char *path, char *err, size_t errlen) {
    char buf[1200];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            ag_errf(err, errlen, "%s: cannot create directory: %s", buf, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
        ag_errf(err, errlen, "%s: cannot create directory: %s", buf, strerror(errno));
        return -1;
    }
    return 0;
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (len < cap) break;
        unsigned char *b = realloc(buf, cap *= 2);
        if (!b) {
            free(buf);
            buf = NULL;
        } else {
            buf = b;
        }
    }
    if (buf && ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = len;
    return buf;
}

typedef struct figure {
    char title[128];
    char png[1200];   /* path */
    char rel[300];    /* path relative to the report */
    char sql_path[1200];
    bool ok;
} figure;

static const char css[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1200px;"
    "padding:0 1em;color:#222;background:#fff}"
    "h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
    "table{border-collapse:collapse;margin:.6em 0;font-size:.9em;display:block;max-width:100%;overflow-x:auto}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top;overflow-wrap:break-word}"
    "th,td.num,td:first-child{white-space:nowrap}"
    "th{background:#f2f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "tr:nth-child(even) td{background:#fafbfc}"
    "figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}"
    "pre{background:#f6f8fa;padding:.6em;overflow:auto;font-size:.85em}.meta{color:#666}";

static void html_table_section(FILE *f, const char *title, const ex_table *t, const char *empty) {
    fprintf(f, "<h2>");
    ex_html_escape(f, title);
    fprintf(f, "</h2>\n");
    if (t->nrow == 0) {
        fprintf(f, "<p class=\"meta\">");
        ex_html_escape(f, empty);
        fprintf(f, "</p>\n");
    } else {
        ex_table_print_html(t, f);
    }
}

static void md_table_section(FILE *f, const char *title, const ex_table *t, const char *empty) {
    fprintf(f, "\n## %s\n\n", title);
    if (t->nrow == 0) fprintf(f, "%s\n", empty);
    else ex_table_print_md(t, f);
}

static const char *cell_or_empty(const ex_table *t, int r, int c) {
    const char *s = t->cell[(size_t)r * (size_t)t->ncol + (size_t)c];
    return s ? s : "";
}

/* Splits the fingerprints (column 0 the run id, one row per run) into what
 * every run shares, as (field, value) rows, and a table of the run id and
 * the fields that differ. Long values (compiler flags, BLAS build options)
 * thus appear once instead of once per run. Returns 0 or -1 (out of memory;
 * both tables are then safe to free). */
static int split_fingerprints(const ex_table *fps, ex_table *shared, ex_table *differ) {
    static const char *const head2[2] = {"field", "value"};
    memset(differ, 0, sizeof *differ);
    if (ex_table_init(shared, 2, head2) != 0) return -1;
    int *col = malloc((size_t)fps->ncol * sizeof *col), nd = 0;
    const char **vals = malloc((size_t)fps->ncol * sizeof *vals);
    int rc = col && vals ? 0 : -1;
    for (int c = 0; rc == 0 && c < fps->ncol; c++) {
        bool same = c > 0; /* one run: every field is "shared" and listed as a column of values */
        for (int r = 1; same && r < fps->nrow; r++) same = strcmp(cell_or_empty(fps, r, c), cell_or_empty(fps, 0, c)) == 0;
        if (!same) {
            col[nd++] = c;
            continue;
        }
        const char *row[2] = {fps->head[c], cell_or_empty(fps, 0, c)};
        rc = ex_table_add(shared, row);
    }
    if (rc == 0 && nd > 1) { /* the id column and at least one differing field */
        for (int i = 0; i < nd; i++) vals[i] = fps->head[col[i]];
        rc = ex_table_init(differ, nd, vals);
        for (int r = 0; rc == 0 && r < fps->nrow; r++) {
            for (int i = 0; i < nd; i++) vals[i] = cell_or_empty(fps, r, col[i]);
            rc = ex_table_add(differ, vals);
        }
    }
    free(col);
    free(vals);
    return rc;
}

int ex_report_write(sqlite3 *db, const int64_t *ids, int n, const ex_report_opts *o, ex_report_out *out,
                    char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (n < 1) {
        ag_errf(err, errlen, "no runs for the report");
        return -1;
    }
    if (ex_runs_check(db, ids, n, err, errlen) != 0) return -1;
    const char *dir = o->dir && o->dir[0] ? o->dir : "report";
    char figdir[1100];
    snprintf(figdir, sizeof figdir, "%s/figures", dir);
    if (make_dir(figdir, err, errlen) != 0) return -1;

    ex_table runs = {0}, config = {0}, results = {0}, fps = {0}, fp_shared = {0}, fp_differ = {0};
    int rc = -1;
    FILE *h = NULL, *m = NULL;
    if (ex_runs_table(db, ids, n, &runs, err, errlen) != 0 ||
        ex_runs_compare(db, ids, n, &config, &results, err, errlen) != 0 ||
        ex_runs_fingerprints(db, ids, n, &fps, err, errlen) != 0)
        goto done;

    /* figures: loss curves, size against loss (these runs' models), one sweep figure per swept key */
    enum { MAX_FIGS = 2 + 8 };
    figure figs[MAX_FIGS] = {{.title = "Loss curves"}, {.title = "Size on disk against validation loss"}};
    int n_figs = 2;
    for (int k = 0; k < o->n_sweep_keys && n_figs < MAX_FIGS; k++)
        snprintf(figs[n_figs++].title, sizeof figs[0].title, "Validation loss against %s", o->sweep_keys[k]);
    for (int i = 0; o->figures && i < n_figs; i++) {
        char ferr[600], base[80];
        if (i < 2) snprintf(base, sizeof base, "%s", i == 0 ? "loss" : "pareto");
        else { /* sweep-KEY, the key's characters kept to [A-Za-z0-9_-] */
            snprintf(base, sizeof base, "sweep-%.60s", o->sweep_keys[i - 2]);
            for (char *c = base; *c; c++)
                if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_') *c = '_';
        }
        snprintf(figs[i].png, sizeof figs[i].png, "%s/%s.png", figdir, base);
        snprintf(figs[i].rel, sizeof figs[i].rel, "figures/%s.png", base);
        snprintf(figs[i].sql_path, sizeof figs[i].sql_path, "%s/%s.sql", figdir, base);
        ex_fig fig = {.out = figs[i].png, .format = EX_FIG_PNG};
        int prc = i == 0   ? ex_plot_loss(db, ids, n, NULL, &fig, ferr, sizeof ferr)
                  : i == 1 ? ex_plot_pareto(db, ids, n, &fig, ferr, sizeof ferr)
                           : ex_plot_sweep(db, o->sweep_keys[i - 2], "val_loss", NULL, ids, n, &fig, ferr, sizeof ferr);
        figs[i].ok = prc == EX_PLOT_OK;
        if (figs[i].ok) out->figures++;
        else if (i == 0 || prc == EX_PLOT_NO_GNUPLOT)
            snprintf(out->note, sizeof out->note, "%.100s: %.480s", figs[i].title, ferr);
    }

    char when[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
    const char *title = o->title && o->title[0] ? o->title : "pare report";
    const char *dbl = o->db_label ? o->db_label : "";

    snprintf(out->html, sizeof out->html, "%s/report.html", dir);
    snprintf(out->md, sizeof out->md, "%s/report.md", dir);
    h = fopen(out->html, "w");
    m = fopen(out->md, "w");
    if (!h || !m) {
        ag_errf(err, errlen, "%s: cannot write: %s", !h ? out->html : out->md, strerror(errno));
        goto done;
    }

    /* ---- header */
    fprintf(h, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>");
    ex_html_escape(h, title);
    fprintf(h, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>", css);
    ex_html_escape(h, title);
    fprintf(h, "</h1>\n<p class=\"meta\">%d run%s from <code>", n, n == 1 ? "" : "s");
    ex_html_escape(h, dbl);
    fprintf(h, "</code>, generated %s by pare. Every table and figure below is a query of that database.</p>\n", when);
    fprintf(m, "# %s\n\n%d run%s from `%s`, generated %s by pare. Every table and figure below is a query of that "
               "database.\n",
            title, n, n == 1 ? "" : "s", dbl, when);

    if (o->summary) {
        const char *st = o->summary_title ? o->summary_title : "Results";
        html_table_section(h, st, o->summary, "No result.");
        md_table_section(m, st, o->summary, "No result.");
    }
    html_table_section(h, "Runs", &runs, "");
    md_table_section(m, "Runs", &runs, "");
    html_table_section(h, "Final results", &results, "No run recorded a final result.");
    md_table_section(m, "Final results", &results, "No run recorded a final result.");

    /* ---- figures */
    fprintf(h, "<h2>Figures</h2>\n");
    fprintf(m, "\n## Figures\n\n");
    for (int i = 0; i < n_figs; i++) {
        if (!figs[i].ok) continue;
        size_t len = 0;
        unsigned char *png = slurp(figs[i].png, &len);
        char *sql = NULL;
        size_t sql_len = 0;
        sql = (char *)slurp(figs[i].sql_path, &sql_len);
        if (!png) {
            free(sql);
            continue;
        }
        fprintf(h, "<figure>\n<img alt=\"");
        ex_html_escape(h, figs[i].title);
        fprintf(h, "\" src=\"data:image/png;base64,");
        ex_base64(h, png, len);
        fprintf(h, "\">\n<figcaption>");
        ex_html_escape(h, figs[i].title);
        fprintf(h, " (data: <code>");
        ex_html_escape(h, figs[i].rel);
        fprintf(h, "</code> and the query beside it)</figcaption>\n</figure>\n");
        fprintf(m, "### %s\n\n![%s](%s)\n\n", figs[i].title, figs[i].title, figs[i].rel);
        if (sql) {
            char *s = realloc(sql, sql_len + 1);
            if (s) {
                sql = s;
                sql[sql_len] = '\0';
                fprintf(h, "<details><summary>SQL</summary>\n<pre>");
                ex_html_escape(h, sql);
                fprintf(h, "</pre>\n</details>\n");
                fprintf(m, "```sql\n%s```\n\n", sql);
            }
        }
        free(sql);
        free(png);
    }
    if (out->figures == 0) {
        fprintf(h, "<p class=\"meta\">No figure: ");
        ex_html_escape(h, out->note[0] ? out->note : "figures were not requested");
        fprintf(h, "</p>\n");
        fprintf(m, "No figure: %s\n", out->note[0] ? out->note : "figures were not requested");
    }

    /* ---- configurations */
    html_table_section(h, "Configuration: keys that differ", &config,
                       n == 1 ? "One run: its configuration is below." : "All runs share one configuration.");
    md_table_section(m, "Configuration: keys that differ", &config,
                     n == 1 ? "One run: its configuration is below." : "All runs share one configuration.");
    fprintf(m, "\n### Full configurations\n");
    fprintf(h, "<h3>Full configurations</h3>\n");
    for (int i = 0; i < n; i++) {
        char *q = sqlite3_mprintf("SELECT key, value FROM config WHERE run_id = %lld ORDER BY key", (long long)ids[i]);
        ex_table t;
        if (!q || ex_table_from_sql(db, q, &t, err, errlen) != 0) {
            sqlite3_free(q);
            goto done;
        }
        sqlite3_free(q);
        fprintf(h, "<details><summary>run #%lld (%d keys)</summary>\n", (long long)ids[i], t.nrow);
        ex_table_print_html(&t, h);
        fprintf(h, "</details>\n");
        fprintf(m, "\n<details><summary>run #%lld (%d keys)</summary>\n\n", (long long)ids[i], t.nrow);
        ex_table_print_md(&t, m);
        fprintf(m, "\n</details>\n");
        ex_table_free(&t);
    }
    /* ---- fingerprints: what all runs share once, then what differs by run */
    if (split_fingerprints(&fps, &fp_shared, &fp_differ) != 0) {
        ag_errf(err, errlen, "out of memory");
        goto done;
    }
    html_table_section(h, "Fingerprints", &fp_shared, "The runs share no fingerprint field.");
    md_table_section(m, "Fingerprints", &fp_shared, "The runs share no fingerprint field.");
    if (fp_differ.ncol > 0) {
        fprintf(h, "<h3>Fingerprint fields that differ by run</h3>\n");
        ex_table_print_html(&fp_differ, h);
        fprintf(m, "\n### Fingerprint fields that differ by run\n\n");
        ex_table_print_md(&fp_differ, m);
    }
    fprintf(h, "</body>\n</html>\n");

    if (ferror(h) || ferror(m)) {
        ag_errf(err, errlen, "%s: write failed", ferror(h) ? out->html : out->md);
        goto done;
    }
    rc = 0;
done:
    if (h && fclose(h) != 0 && rc == 0) {
        ag_errf(err, errlen, "%s: write failed", out->html);
        rc = -1;
    }
    if (m && fclose(m) != 0 && rc == 0) {
        ag_errf(err, errlen, "%s: write failed", out->md);
        rc = -1;
    }
    ex_table_free(&runs);
    ex_table_free(&config);
    ex_table_free(&results);
    ex_table_free(&fps);
    ex_table_free(&fp_shared);
    ex_table_free(&fp_differ);
    return rc;
}
