/* options.h - the one key vocabulary: tables of keys, parsing, --help, the
 * resolved configuration.
 *
 * Every option has one name, one meaning and one default. On the command line
 * it is `--key value` (or `--key=value`); a recipe spells it `key = value`;
 * the run database stores it under the same name. Each key is declared once,
 * by the library whose struct it fills (train/keys.h: the model, the data,
 * training, sampling; experiments/db.h: the run log; each policy its own;
 * here: threads and json), as rows of pare_opt that point straight into that
 * struct. A command assembles its table from those groups (pare_keys) and
 * gets from it the parser, the --help text (every key with its default) and
 * the fully resolved configuration (every key, defaults included) as
 * "key=value" lines for checkpoints and the run log. A library's default
 * configuration is its rows' defaults (pare_opts_defaults), so the two cannot
 * disagree.
 *
 * Example:
 *     int steps; double lr; const char *data;
 *     pare_opt opts[] = {
 *         PARE_OPT_INT("steps", &steps, "1000", 1, 1e9, "optimizer steps"),
 *         PARE_OPT_FLOAT("lr", &lr, "1e-3", 0, 10, "peak learning rate"),
 *         PARE_OPT_STRING("data", &data, "builtin:markov", "text file or builtin:NAME"),
 *     };
 */
#ifndef PARE_CLI_OPTIONS_H
#define PARE_CLI_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    PARE_OPT_T_INT,    /* long long range-checked into an int */
    PARE_OPT_T_FLOAT,  /* double, finite, range-checked */
    PARE_OPT_T_STRING, /* const char * pointing into argv or the default */
    PARE_OPT_T_CHOICE, /* const char * that must be one of "a|b|c" */
    PARE_OPT_T_FLAG,   /* bool; `--key` alone sets it, `--key true|false|1|0` too */
    PARE_OPT_T_U64,    /* uint64_t (seeds), decimal, range-checked */
    PARE_OPT_T_ENUM,   /* int: the index of the value among "a|b|c" (an enum's value) */
} pare_opt_type;

typedef struct pare_opt {
    const char *key;
    pare_opt_type type;
    void *dst;           /* int *, double *, const char **, bool *, uint64_t *, int * (ENUM) by type */
    const char *def;     /* default, as it would be typed; NULL = no default (string "") */
    double min, max;     /* for INT and FLOAT, inclusive */
    const char *choices; /* for CHOICE and ENUM: "byte|char" */
    const char *help;
    bool set;            /* filled by the parser: given on the command line */
    const char *note;    /* what the command does when the key is not given, if not the default itself
                            (pare eval: data "= the data the model was trained on"); shown by --help */
    char *owned;         /* a stored value's copy (pare_opts_apply_stored), freed by pare_opts_free */
} pare_opt;

#define PARE_OPT_INT(k, d, def, lo, hi, h) {k, PARE_OPT_T_INT, d, def, lo, hi, NULL, h, false, NULL, NULL}
#define PARE_OPT_FLOAT(k, d, def, lo, hi, h) {k, PARE_OPT_T_FLOAT, d, def, lo, hi, NULL, h, false, NULL, NULL}
#define PARE_OPT_STRING(k, d, def, h) {k, PARE_OPT_T_STRING, d, def, 0, 0, NULL, h, false, NULL, NULL}
#define PARE_OPT_CHOICE(k, d, def, ch, h) {k, PARE_OPT_T_CHOICE, d, def, 0, 0, ch, h, false, NULL, NULL}
#define PARE_OPT_FLAG(k, d, h) {k, PARE_OPT_T_FLAG, d, "false", 0, 0, NULL, h, false, NULL, NULL}
#define PARE_OPT_FLAG_ON(k, d, h) {k, PARE_OPT_T_FLAG, d, "true", 0, 0, NULL, h, false, NULL, NULL}
#define PARE_OPT_U64(k, d, def, h) {k, PARE_OPT_T_U64, d, def, 0, 1.8446744073709552e19, NULL, h, false, NULL, NULL}
#define PARE_OPT_ENUM(k, d, def, ch, h) {k, PARE_OPT_T_ENUM, d, def, 0, 0, ch, h, false, NULL, NULL}

enum { PARE_OPTS_OK = 0, PARE_OPTS_HELP = 1, PARE_OPTS_ERROR = -1 };

/* Sets every option to its default, then applies argv[1..argc). Arguments
 * that do not start with "--" are positional: their indexes are stored in
 * pos[0..*n_pos) (at most max_pos; one more is an error). `--help` returns
 * PARE_OPTS_HELP. An unknown key, a missing value, a value that does not parse,
 * is out of range, not finite, or not one of the choices returns
 * PARE_OPTS_ERROR with a message in err naming the key and what was expected.
 * Nothing is allocated; string values point into argv or the defaults. */
int pare_opts_parse(pare_opt *opts, int n, int argc, char **argv, int *pos, int max_pos,
                    int *n_pos, char *err, size_t errlen);

/* The same without setting the defaults first: applies argv on top of the
 * table's current values (after pare_opts_apply_stored, for a resume). */
int pare_opts_parse_more(pare_opt *opts, int n, int argc, char **argv, int *pos, int max_pos, int *n_pos, char *err,
                         size_t errlen);

/* Applies a stored configuration ("key=value" lines, as pare_opts_format
 * wrote them into a checkpoint) as data: each line whose key is in the table
 * and not in skip (a NULL-terminated list, may be NULL) sets that key's value
 * (not its `set` flag); lines of other keys (a newer or older pare's) are
 * ignored; nothing is ever read as a command-line option, so a stored `help`
 * or `--x` does nothing. String values are copied into the row (free them
 * with pare_opts_free). Returns 0, or -1 with err naming `source` (the
 * checkpoint), the key and what was expected. */
int pare_opts_apply_stored(pare_opt *opts, int n, const char *conf, const char *const *skip, const char *source,
                           char *err, size_t errlen);

/* Frees the values pare_opts_apply_stored copied. */
void pare_opts_free(pare_opt *opts, int n);

/* Every error a command reports goes through here: printed to stderr as
 * given (printf-style, "pare CMD: ..." with its newline) and kept, so that a
 * command run with --json can end with one error object on stdout
 * (pare_last_error). */
void pare_report_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The messages pare_report_error printed so far, without newlines, joined by "; " ("" = none). */
const char *pare_last_error(void);

/* Prints "usage: <usage>" and a line per key: --key TYPE (default X) help. */
void pare_opts_help(FILE *f, const char *usage, const pare_opt *opts, int n);

/* Writes the resolved configuration, one "key=value\n" per option in table
 * order, into buf (at most len bytes, NUL-terminated). Returns the length it
 * needed (like snprintf), so a caller can size buf. */
size_t pare_opts_format(const pare_opt *opts, int n, char *buf, size_t len);

/* A stored configuration src ("key=value" lines; NULL = none) with the keys
 * of opts[0..n) replaced by their current values (appended in table order,
 * as pare_opts_format writes them): what a command that rewrites a
 * checkpoint (pare quantize, pare prune) stores, so later commands remake the
 * same policies from it. Returns a malloc'd string the caller frees, or NULL
 * when out of memory. */
char *pare_opts_merge_conf(const char *src, const pare_opt *opts, int n);

/* Finds an option by key, or NULL. */
pare_opt *pare_opts_find(pare_opt *opts, int n, const char *key);

/* Sets every option to its default (what parsing an empty command line
 * does). Returns 0, or -1 with err naming a default that does not parse (a
 * bug in a table). */
int pare_opts_defaults(pare_opt *opts, int n, char *err, size_t errlen);

/* ---- assembling a command's table from the libraries' groups ---------- */

#define PARE_KEYS_MAX 96

/* A command's table: the groups of rows it takes from the libraries, in
 * order. A key added twice (two groups declaring one name) is a bug the
 * parser reports. */
typedef struct pare_keys {
    pare_opt row[PARE_KEYS_MAX];
    int n;
    bool overflow; /* more than PARE_KEYS_MAX rows were added */
} pare_keys;

/* Appends rows[0, n) to k. */
void pare_keys_add(pare_keys *k, const pare_opt *rows, int n);

/* Notes what this command does when `key` is not given (its row's default
 * still applies to the struct; the command reads the row's `set`): shown by
 * --help instead of the default. No-op when k has no such key. */
void pare_keys_note(pare_keys *k, const char *key, const char *note);

/* The keys every command that computes shares, each with one meaning:
 * threads (0 = every core, the default everywhere) and json. */
void pare_keys_threads(pare_keys *k, int *threads);
void pare_keys_json(pare_keys *k, bool *json, const char *what);

/* threads if > 0, else the number of online CPUs. */
int pare_threads(int requested);

/* pare_opts_cli over a pare_keys table (checks for overflow and duplicate keys first). */
int pare_keys_cli(const char *cmd, const char *usage, pare_keys *k, int argc, char **argv, int *pos, int max_pos,
                  int *n_pos);

/* Checking a command's arguments without running it (pare experiment
 * validates a whole recipe before anything runs): while a check is set, the
 * next pare_opts_cli either hands its table to table() and returns 0
 * (PARE_CHECK_TABLE: which keys a command has, and their types), or parses
 * argv, keeps the error in err and returns 2, or hands the parsed table to
 * table() and returns 0 (PARE_CHECK_PARSE). The command then returns that
 * status without doing anything. */
typedef enum { PARE_CHECK_OFF = 0, PARE_CHECK_TABLE, PARE_CHECK_PARSE } pare_check_mode;
typedef struct pare_check {
    pare_check_mode mode;
    void (*table)(void *user, const pare_opt *opts, int n);
    void *user;
    char err[512];
} pare_check;
/* Sets (c copied) or clears (NULL) the check. */
void pare_opts_set_check(const pare_check *c);
/* The last error of a PARE_CHECK_PARSE check. */
const char *pare_opts_check_error(void);

/* Parses and prints in one step for a subcommand: returns -1 to continue,
 * or the exit status to return (0 after --help, 2 after an error, which is
 * printed as "pare <cmd>: <message>" with a pointer to --help). */
int pare_opts_cli(const char *cmd, const char *usage, pare_opt *opts, int n, int argc, char **argv,
                  int *pos, int max_pos, int *n_pos);

#endif
