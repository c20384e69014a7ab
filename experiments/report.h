/* report.h - `pare report`: one self-contained HTML page and a Markdown file
 * for a set of runs: the runs table, final results side by side, figures
 * (loss curves; size against loss when exported models exist), the
 * configurations (differing keys, then each in full) and fingerprints.
 *
 * The HTML embeds its figures as base64 PNG data URIs and carries its own
 * style sheet: it can be mailed or archived as one file. The Markdown links
 * the same PNGs in DIR/figures/, where each figure's .sql, .dat and .gp sit
 * beside it.
 */
#ifndef PARE_EX_REPORT_H
#define PARE_EX_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "table.h"

typedef struct ex_report_opts {
    const char *dir;      /* output directory, created if missing */
    const char *title;    /* NULL = "pare report" */
    const char *db_label; /* the database path shown in the report */
    bool figures;         /* draw figures (needs gnuplot; without it the report notes their absence) */
    /* optional: a results table shown first (an experiment's models, one row each), under this title */
    const ex_table *summary;
    const char *summary_title; /* NULL = "Results" */
    /* optional: configuration keys swept over the runs; one figure each of val_loss against the key */
    const char *const *sweep_keys;
    int n_sweep_keys;
} ex_report_opts;

typedef struct ex_report_out {
    char html[1100], md[1100]; /* paths written */
    int figures;               /* figures embedded */
    char note[600];            /* why a figure is missing, "" if none */
} ex_report_out;

/* Writes DIR/report.html and DIR/report.md for runs ids[0..n) (n >= 1).
 * Returns 0, or -1 with err naming the file or query that failed. A figure
 * that cannot be drawn (no gnuplot, no data) is not an error: out->note says
 * why and the report says so too. */
int ex_report_write(sqlite3 *db, const int64_t *ids, int n, const ex_report_opts *o, ex_report_out *out,
                    char *err, size_t errlen);

/* Writes n bytes as base64 (RFC 4648, with padding) to f. */
void ex_base64(FILE *f, const unsigned char *p, size_t n);

#endif
