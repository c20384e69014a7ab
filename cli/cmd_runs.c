/* cmd_runs.c - `pare runs`: list runs, show one, compare several. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "experiments/runs.h"

/* Parses a run id ("12" or "#12"). Returns 0, or -1 with a message. */
int pare_parse_run_id(const char *cmd, const char *s, int64_t *id) {
    const char *p = s[0] == '#' ? s + 1 : s;
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (errno || end == p || *end || v < 1) {
        pare_report_error("pare %s: '%s' is not a run id (expected a positive integer, as `pare runs` lists)\n", cmd, s);
        return -1;
    }
    *id = v;
    return 0;
}

int cmd_runs(int argc, char **argv) {
    static const char *usage = "pare runs [--name S] [--command C] [--status S] [--limit N]\n"
                               "       pare runs show ID\n"
                               "       pare runs compare ID ID ...";
    const char *db_path, *name, *command, *status;
    int limit;
    pare_opt opts[] = {
        PARE_OPT_STRING("db", &db_path, "", "run database (default $PARE_DB, else ./pare.db)"),
        PARE_OPT_STRING("name", &name, "", "only runs whose name contains this"),
        PARE_OPT_STRING("command", &command, "", "only runs of this command (train, eval, sample, export, ...)"),
        PARE_OPT_STRING("status", &status, "", "only runs with this status (running, finished, failed, diverged, interrupted)"),
        PARE_OPT_INT("limit", &limit, "0", 0, 1000000000, "only the newest N runs (0 = all)"),
    };
    int n = (int)(sizeof opts / sizeof opts[0]);
    enum { MAX_POS = 256 };
    int pos[MAX_POS], n_pos = 0;
    int rc = pare_opts_cli("runs", usage, opts, n, argc, argv, pos, MAX_POS, &n_pos);
    if (rc >= 0) return rc;

    const char *action = n_pos > 0 ? argv[pos[0]] : "list";
    if (strcmp(action, "list") != 0 && strcmp(action, "show") != 0 && strcmp(action, "compare") != 0) {
        pare_report_error("pare runs: unknown action '%s' (expected show or compare)\nsee: pare runs --help\n", action);
        return PARE_EXIT_USAGE;
    }
    int64_t ids[MAX_POS];
    int n_ids = 0;
    for (int i = 1; i < n_pos; i++)
        if (pare_parse_run_id("runs", argv[pos[i]], &ids[n_ids++]) != 0) return PARE_EXIT_USAGE;
    if (strcmp(action, "show") == 0 && n_ids != 1) {
        pare_report_error("pare runs show: expected one run id\n");
        return PARE_EXIT_USAGE;
    }
    if (strcmp(action, "compare") == 0 && n_ids < 2) {
        pare_report_error("pare runs compare: expected at least two run ids\n");
        return PARE_EXIT_USAGE;
    }
    if (strcmp(action, "list") == 0 && n_pos > 1) {
        pare_report_error("pare runs: unexpected argument '%s'\nsee: pare runs --help\n", argv[pos[1]]);
        return PARE_EXIT_USAGE;
    }

    char err[1024];
    sqlite3 *db = ex_db_open(db_path, err, sizeof err);
    if (!db) {
        pare_report_error("pare runs: %s\n", err);
        return PARE_EXIT_ERROR;
    }
    int status_code = PARE_EXIT_ERROR;
    if (strcmp(action, "show") == 0) {
        if (ex_run_show(db, ids[0], stdout, err, sizeof err) == 0) status_code = PARE_EXIT_OK;
    } else if (strcmp(action, "compare") == 0) {
        ex_table config, results;
        if (ex_runs_check(db, ids, n_ids, err, sizeof err) == 0 &&
            ex_runs_compare(db, ids, n_ids, &config, &results, err, sizeof err) == 0) {
            ex_table runs;
            if (ex_runs_table(db, ids, n_ids, &runs, err, sizeof err) == 0) {
                ex_table_print_text(&runs, stdout);
                ex_table_free(&runs);
            }
            printf("\nconfiguration (keys that differ):\n");
            if (config.nrow) ex_table_print_text(&config, stdout);
            else printf("  (none: every key has the same value)\n");
            printf("\nresults:\n");
            if (results.nrow) ex_table_print_text(&results, stdout);
            else printf("  (none recorded)\n");
            ex_table_free(&config);
            ex_table_free(&results);
            status_code = PARE_EXIT_OK;
        }
    } else {
        ex_filter f = {.name = name, .command = command, .status = status, .limit = limit};
        int64_t *sel = NULL;
        int n_sel = 0;
        ex_table t;
        if (ex_runs_select(db, &f, &sel, &n_sel, err, sizeof err) == 0) {
            if (n_sel == 0) {
                printf("no runs%s\n", name[0] || command[0] || status[0] ? " match" : " recorded yet");
                status_code = PARE_EXIT_OK;
            } else if (ex_runs_table(db, sel, n_sel, &t, err, sizeof err) == 0) {
                ex_table_print_text(&t, stdout);
                ex_table_free(&t);
                status_code = PARE_EXIT_OK;
            }
        }
        free(sel);
    }
    if (status_code != PARE_EXIT_OK) pare_report_error("pare runs: %s\n", err);
    sqlite3_close(db);
    return status_code;
}
