/* recipe.h - experiment recipes: one INI file that chains pare's commands
 * into a reproducible study (docs/experiments.md).
 *
 *   [experiment]            name, out (directory for the files), db, jobs, report
 *   name = quickstart
 *
 *   [teacher]               a stage: its name, then the command and that command's keys,
 *   command = train         spelled exactly as on the command line
 *   data = builtin:reverse
 *   seed = 1, 2, 3          a list: the stage expands into one run per value
 *
 *   [teacher-q8]
 *   command = export
 *   input = teacher         `input` is the command's positional argument; a value that
 *   format = q8             names an earlier stage means that stage's output file
 *
 * Lists expand the stage into the product of its lists; a stage that refers
 * to an expanded stage expands with it (one run per run it refers to, and
 * when it refers to two expanded stages, the runs that agree on the keys
 * they share: seed=2 with seed=2). A stage may only refer to stages defined
 * before it, so the plan has no cycles. Which keys may hold a list is the
 * caller's to say (the commands' key tables: any key whose type is not a
 * string); `command`, `input` and the [experiment] keys are single.
 *
 * INI parsing is Debian's libinih (with a line-counting reader, so every
 * error names the file and line).
 */
#ifndef PARE_EX_RECIPE_H
#define PARE_EX_RECIPE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ex_kv {
    char *key, *value;
    int line;
} ex_kv;

typedef struct ex_stage {
    char *name;
    int line;       /* of its [section] */
    char *command;  /* the pare command */
    int command_line;
    ex_kv *kv;      /* [n_kv] its keys in file order (command excluded) */
    int n_kv, cap_kv;
} ex_stage;

typedef struct ex_recipe {
    char *path;
    ex_kv *exp;     /* [n_exp] the [experiment] section */
    int n_exp, cap_exp;
    ex_stage *stage;
    int n_stage, cap_stage;
} ex_recipe;

/* Reads and checks a recipe's structure: sections and keys (a key outside
 * any section, a stage without `command`, a command not in `commands`
 * (NULL-terminated), a stage or key given twice, a stage name other than
 * letters, digits and . _ -, an unknown [experiment] key). Returns 0, or -1
 * with err = "PATH:LINE: what is wrong"; r is freed with ex_recipe_free
 * either way. */
int ex_recipe_load(ex_recipe *r, const char *path, const char *const *commands, char *err, size_t errlen);
void ex_recipe_free(ex_recipe *r);

/* The value of an [experiment] key, or def. */
const char *ex_recipe_setting(const ex_recipe *r, const char *key, const char *def);

/* Overrides keys the recipe sets, from the command line: sets is
 * "KEY=VALUE; STAGE.KEY=VALUE; ..." (';' separates them; spaces around an
 * item are trimmed). KEY=VALUE replaces the value of KEY in every stage that
 * sets it, STAGE.KEY=VALUE in that stage only; a value may be a list where
 * the key allows one. The recipe's lines stay, so later errors still name
 * the line. Returns 0, or -1 with err (an item without '=', a key no stage
 * sets: an override that would silently do nothing). */
int ex_recipe_set(ex_recipe *r, const char *sets, char *err, size_t errlen);

/* One run of the plan: a stage with one value for each of its keys. */
typedef struct ex_run {
    int stage;
    char label[512];     /* the expanded keys: "seed=2 sparsity=0.75" ("" when the stage is not expanded) */
    char name[768];      /* "<experiment>/<stage>" or "<experiment>/<stage>/<label>" */
    char out[1024];      /* the file it writes ("" = none) */
    char **argv;         /* [argc + 1] the command and its arguments, NULL-terminated */
    int argc;
    int *deps;           /* [n_deps] runs that must finish first */
    int n_deps;
    int *key_line;       /* [argc] the recipe line an argument comes from (0 = added by the plan) */
} ex_run;

typedef struct ex_plan {
    ex_run *run;
    int n;
} ex_plan;

/* What the planner needs to know about the commands. */
typedef struct ex_plan_opts {
    const char *out_dir;     /* where runs' files go */
    const char *experiment;  /* the experiment's name */
    /* true when key `key` of `command` may hold a list (a non-string key) */
    bool (*list_ok)(void *user, const char *command, const char *key);
    /* the file suffix of what `command` writes (".ckpt", ".pare"), or NULL when it writes none */
    const char *(*output)(void *user, const char *command);
    void *user;
} ex_plan_opts;

/* Expands the recipe into runs in dependency order: lists, references,
 * outputs (out_dir/<stage>[/<label>]<suffix>, passed as --out), the run's
 * name (the caller passes it on as it likes) and `input` as the positional
 * argument. Returns 0, or -1
 * with err = "PATH:LINE: ...": a reference to a stage not defined before
 * or to one that writes no file, a list where a single value is required, an empty list element, too many
 * runs (over 10000). */
int ex_plan_make(const ex_recipe *r, const ex_plan_opts *o, ex_plan *p, char *err, size_t errlen);
void ex_plan_free(ex_plan *p);

#endif
