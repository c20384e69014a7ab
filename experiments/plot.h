/* plot.h - figures drawn by gnuplot from the run log.
 *
 * Every figure comes from ONE SQL query. For an output path DIR/NAME.png (or
 * .svg) the plotter writes, beside it:
 *   NAME.sql  the query, with every value inlined, re-runnable as
 *             sqlite3 -header -separator "$(printf '\t')" pare.db < NAME.sql > NAME.dat
 *   NAME.dat  the query's result, tab-separated with a header line, NULL as ""
 *   NAME.gp   the gnuplot script that turns NAME.dat into the image
 *             (cd DIR && gnuplot NAME.gp)
 * and then runs gnuplot, found at run time ($PARE_GNUPLOT, else `gnuplot` in
 * PATH). Without gnuplot the three files are still written and
 * EX_PLOT_NO_GNUPLOT is returned with a message saying how to install it.
 */
#ifndef PARE_EX_PLOT_H
#define PARE_EX_PLOT_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "runs.h"

typedef enum ex_fig_format { EX_FIG_PNG = 0, EX_FIG_SVG = 1 } ex_fig_format;

enum { EX_PLOT_OK = 0, EX_PLOT_ERROR = -1, EX_PLOT_NO_GNUPLOT = 1 };

/* Where a figure goes: `out` is the image path; its extension (.png/.svg)
 * picks the format when it has one, else `format` does and the extension is
 * added. rows (if not NULL) gets the number of data rows plotted. */
typedef struct ex_fig {
    const char *out;
    ex_fig_format format;
    const char *title; /* NULL = a default title */
    int rows;          /* filled in */
    char image[1300];  /* filled in: the image path written */
} ex_fig;

/* The gnuplot executable to use, or NULL when none is found. */
const char *ex_gnuplot_path(void);

/* Training and validation loss against step for runs ids[0..n): one line per
 * (run, metric). metrics is a comma-separated list (NULL = "train_loss,val_loss"). */
int ex_plot_loss(sqlite3 *db, const int64_t *ids, int n, const char *metrics, ex_fig *fig, char *err,
                 size_t errlen);

/* Bytes on disk against validation loss of every exported model (artifacts
 * of kind 'model'; with ids, only those of runs ids[0..n)), each point
 * labelled by its method: for a recipe's run its name without the
 * experiment and the " [hash]", else the run's `method` config value, else
 * its name, else its command and id. The loss is the
 * val_loss result of the newest run that recorded an artifact with the same
 * SHA-256 (the export itself or an eval of the file). Models whose labels
 * differ only in their seed= part are one point: the mean loss, a bar from
 * the lowest to the highest, the mean bytes (the .dat's columns: bytes,
 * val_loss, method, n, lo, hi, front). */
int ex_plot_pareto(sqlite3 *db, const int64_t *ids, int n, ex_fig *fig, char *err, size_t errlen);

/* A metric against a configuration key across the runs matching f (NULL =
 * all) and, with ids, among runs ids[0..n): x is the key's value as a
 * number, y the run's result `metric`, else the last value of the metric
 * `metric`. */
int ex_plot_sweep(sqlite3 *db, const char *key, const char *metric, const ex_filter *f, const int64_t *ids, int n,
                  ex_fig *fig, char *err,
                  size_t errlen);

/* The SQL each plot runs (the text written to NAME.sql without its comment
 * header), malloc'd (caller frees with sqlite3_free); NULL when out of memory. */
char *ex_plot_loss_sql(const int64_t *ids, int n, const char *metrics);
char *ex_plot_pareto_sql(const int64_t *ids, int n);
char *ex_plot_sweep_sql(const char *key, const char *metric, const ex_filter *f, const int64_t *ids, int n);

#endif
