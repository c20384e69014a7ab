/* cmd_report.c - `pare report`: an HTML page and a Markdown file for a set of runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "experiments/report.h"
#include "experiments/runs.h"

int pare_parse_run_id(const char *cmd, const char *s, int64_t *id); /* cmd_runs.c */

int cmd_report(int argc, char **argv) {
    static const char *usage = "pare report [RUN ...] [--name S] [--command C] [--status S] [--out DIR]";
    const char *db_path, *out, *title, *name, *command, *status;
    int limit;
    bool figures;
    pare_opt opts[] = {
        PARE_OPT_STRING("db", &db_path, "", "run database (default $PARE_DB, else ./pare.db)"),
        PARE_OPT_STRING("out", &out, "report", "output directory (report.html, report.md, figures/)"),
        PARE_OPT_STRING("title", &title, "pare report", "the report's title"),
        PARE_OPT_STRING("name", &name, "", "without RUN ids: runs whose name contains this"),
        PARE_OPT_STRING("command", &command, "", "without RUN ids: runs of this command"),
        PARE_OPT_STRING("status", &status, "", "without RUN ids: runs with this status"),
        PARE_OPT_INT("limit", &limit, "20", 0, 1000000, "without RUN ids: the newest N matching runs (0 = all)"),
        PARE_OPT_FLAG_ON("figures", &figures, "draw the figures (needs gnuplot)"),
    };
    int n = (int)(sizeof opts / sizeof opts[0]);
    enum { MAX_POS = 256 };
    int pos[MAX_POS], n_pos = 0;
    int rc = pare_opts_cli("report", usage, opts, n, argc, argv, pos, MAX_POS, &n_pos);
    if (rc >= 0) return rc;
    int64_t given[MAX_POS];
    for (int i = 0; i < n_pos; i++)
        if (pare_parse_run_id("report", argv[pos[i]], &given[i]) != 0) return PARE_EXIT_USAGE;

    char err[1024];
    sqlite3 *db = ex_db_open(db_path, err, sizeof err);
    if (!db) {
        pare_report_error("pare report: %s\n", err);
        return PARE_EXIT_ERROR;
    }
    int64_t *ids = given, *sel = NULL;
    int n_ids = n_pos;
    int status_code = PARE_EXIT_ERROR;
    if (n_pos == 0) {
        ex_filter f = {.name = name, .command = command, .status = status, .limit = limit};
        if (ex_runs_select(db, &f, &sel, &n_ids, err, sizeof err) != 0) goto fail;
        if (n_ids == 0) {
            snprintf(err, sizeof err, "no runs%s in %s", name[0] || command[0] || status[0] ? " match" : "",
                     ex_db_path(db_path));
            goto fail;
        }
        ids = sel;
    }
    ex_report_opts ro = {.dir = out, .title = title, .db_label = ex_db_path(db_path), .figures = figures};
    ex_report_out res;
    if (ex_report_write(db, ids, n_ids, &ro, &res, err, sizeof err) != 0) goto fail;
    if (res.note[0]) pare_report_error("pare report: %s\n", res.note);
    printf("%s\n%s\n(%d runs, %d figures)\n", res.html, res.md, n_ids, res.figures);
    status_code = PARE_EXIT_OK;
fail:
    if (status_code != PARE_EXIT_OK) pare_report_error("pare report: %s\n", err);
    free(sel);
    sqlite3_close(db);
    return status_code;
}
