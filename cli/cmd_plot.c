/* cmd_plot.c - `pare plot loss|pareto|sweep`: figures from the run log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "experiments/plot.h"

int pare_parse_run_id(const char *cmd, const char *s, int64_t *id); /* cmd_runs.c */

int cmd_plot(int argc, char **argv) {
    static const char *usage = "pare plot loss RUN ... | pare plot pareto | pare plot sweep KEY METRIC  [--key value ...]";
    const char *db_path, *out, *format, *metrics, *title, *name, *command, *status;
    pare_opt opts[] = {
        PARE_OPT_STRING("db", &db_path, "", "run database (default $PARE_DB, else ./pare.db)"),
        PARE_OPT_STRING("out", &out, "", "image path (.png or .svg); default figures/<figure>.<format>"),
        PARE_OPT_CHOICE("format", &format, "png", "png|svg", "image format when --out has no extension"),
        PARE_OPT_STRING("title", &title, "", "figure title (default: what it shows)"),
        PARE_OPT_STRING("metrics", &metrics, "train_loss,val_loss", "loss: the metrics to draw, comma-separated"),
        PARE_OPT_STRING("name", &name, "", "sweep: only runs whose name contains this"),
        PARE_OPT_STRING("command", &command, "", "sweep: only runs of this command"),
        PARE_OPT_STRING("status", &status, "finished", "sweep: only runs with this status (\"\" = any)"),
    };
    int n = (int)(sizeof opts / sizeof opts[0]);
    enum { MAX_POS = 256 };
    int pos[MAX_POS], n_pos = 0;
    int rc = pare_opts_cli("plot", usage, opts, n, argc, argv, pos, MAX_POS, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos < 1) {
        pare_report_error("pare plot: which figure? expected loss, pareto or sweep\nusage: %s\n", usage);
        return PARE_EXIT_USAGE;
    }
    const char *kind = argv[pos[0]];
    int64_t ids[MAX_POS];
    int n_ids = 0;
    if (strcmp(kind, "loss") == 0) {
        for (int i = 1; i < n_pos; i++)
            if (pare_parse_run_id("plot", argv[pos[i]], &ids[n_ids++]) != 0) return PARE_EXIT_USAGE;
        if (n_ids == 0) {
            pare_report_error("pare plot loss: expected one or more run ids (see pare runs)\n");
            return PARE_EXIT_USAGE;
        }
    } else if (strcmp(kind, "pareto") == 0) {
        if (n_pos != 1) {
            pare_report_error("pare plot pareto: takes no arguments (it draws every exported model)\n");
            return PARE_EXIT_USAGE;
        }
    } else if (strcmp(kind, "sweep") == 0) {
        if (n_pos != 3) {
            pare_report_error("pare plot sweep: expected KEY METRIC, for example: pare plot sweep lr val_loss\n");
            return PARE_EXIT_USAGE;
        }
    } else {
        pare_report_error("pare plot: unknown figure '%s' (expected loss, pareto or sweep)\n", kind);
        return PARE_EXIT_USAGE;
    }

    char def_out[300];
    if (!out[0]) {
        if (mkdir("figures", 0755) != 0) {
            struct stat sb;
            if (stat("figures", &sb) != 0 || !S_ISDIR(sb.st_mode)) {
                pare_report_error("pare plot: cannot create the directory figures/ (use --out PATH)\n");
                return PARE_EXIT_ERROR;
            }
        }
        snprintf(def_out, sizeof def_out, "figures/%s.%s", kind, format);
        out = def_out;
    }
    char err[1024];
    sqlite3 *db = ex_db_open(db_path, err, sizeof err);
    if (!db) {
        pare_report_error("pare plot: %s\n", err);
        return PARE_EXIT_ERROR;
    }
    ex_fig fig = {.out = out, .format = strcmp(format, "svg") == 0 ? EX_FIG_SVG : EX_FIG_PNG,
                  .title = title[0] ? title : NULL};
    if (strcmp(kind, "loss") == 0) rc = ex_plot_loss(db, ids, n_ids, metrics, &fig, err, sizeof err);
    else if (strcmp(kind, "pareto") == 0) rc = ex_plot_pareto(db, ids, n_ids, &fig, err, sizeof err);
    else {
        ex_filter f = {.name = name, .command = command, .status = status};
        rc = ex_plot_sweep(db, argv[pos[1]], argv[pos[2]], &f, NULL, 0, &fig, err, sizeof err);
    }
    sqlite3_close(db);
    if (rc == EX_PLOT_ERROR) {
        pare_report_error("pare plot %s: %s\n", kind, err);
        return PARE_EXIT_ERROR;
    }
    size_t len = strlen(fig.image);
    size_t stem = len > 4 ? len - 4 : len;
    if (rc == EX_PLOT_NO_GNUPLOT) {
        pare_report_error("pare plot %s: %s\n", kind, err);
        pare_report_error("pare plot %s: written without the image: %.*s.sql, .dat, .gp (%d rows)\n", kind, (int)stem,
                fig.image, fig.rows);
        return PARE_EXIT_ERROR;
    }
    printf("%s (%d rows; query %.*s.sql, data %.*s.dat, script %.*s.gp)\n", fig.image, fig.rows, (int)stem, fig.image,
           (int)stem, fig.image, (int)stem, fig.image);
    return PARE_EXIT_OK;
}
