/* test_recipe.c - experiment recipes (experiments/recipe.h): reading, every
 * structural error with its file and line, and the plan: lists expand into
 * their product, a stage that refers to an expanded stage expands with it,
 * two expanded references pair by their shared keys, references become the
 * referenced run's output, no forward references (no cycles), limits. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/recipe.h"
#include "test_files.h"

static const char *const commands[] = {"train", "export", "eval", NULL};

typedef struct fixture {
    char dir[128];
    char path[256];
    ex_recipe r;
    ex_plan p;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f || test_tmpdir(f->dir, sizeof f->dir, "recipe") != 0) return -1;
    snprintf(f->path, sizeof f->path, "%s/r.ini", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    ex_plan_free(&f->p);
    ex_recipe_free(&f->r);
    test_rmtree(f->dir);
    free(f);
    return 0;
}

/* What the runner says about the commands: string keys cannot hold lists. */
static bool list_ok(void *user, const char *command, const char *key) {
    (void)user, (void)command;
    return strcmp(key, "data") != 0 && strcmp(key, "name") != 0;
}
static const char *output(void *user, const char *command) {
    (void)user;
    return !strcmp(command, "train") ? ".ckpt" : !strcmp(command, "export") ? ".pare" : NULL;
}

static int load(fixture *f, const char *text, char *err, size_t n) {
    test_write_file(f->path, text);
    return ex_recipe_load(&f->r, f->path, commands, err, n);
}

static int plan(fixture *f, const char *text, char *err, size_t n) {
    if (load(f, text, err, n) != 0) return -1;
    ex_plan_opts o = {.out_dir = "OUT", .experiment = "x", .list_ok = list_ok, .output = output};
    return ex_plan_make(&f->r, &o, &f->p, err, n);
}

/* The argument of run that starts with prefix, or NULL. */
static const char *arg(const ex_run *run, const char *prefix) {
    for (int a = 0; a < run->argc; a++)
        if (!strncmp(run->argv[a], prefix, strlen(prefix))) return run->argv[a];
    return NULL;
}

static void test_reads_sections_keys_and_lines(void **state) {
    fixture *f = *state;
    char err[512] = "";
    int rc = load(f,
                  "; a comment\n"
                  "[experiment]\n"
                  "name = demo\n"
                  "jobs = 2\n"
                  "\n"
                  "[teacher]\n"
                  "command = train\n"
                  "steps = 100\n"
                  "data = builtin:copy\n",
                  err, sizeof err);
    assert_int_equal(rc, 0);
    assert_string_equal(ex_recipe_setting(&f->r, "name", NULL), "demo");
    assert_string_equal(ex_recipe_setting(&f->r, "jobs", NULL), "2");
    assert_null(ex_recipe_setting(&f->r, "db", NULL));
    assert_string_equal(ex_recipe_setting(&f->r, "db", "d"), "d");
    assert_int_equal(f->r.n_stage, 1);
    const ex_stage *st = &f->r.stage[0];
    assert_string_equal(st->name, "teacher");
    assert_int_equal(st->line, 6); /* its [teacher] line */
    assert_string_equal(st->command, "train");
    assert_int_equal(st->command_line, 7);
    assert_int_equal(st->n_kv, 2);
    assert_string_equal(st->kv[0].key, "steps");
    assert_string_equal(st->kv[0].value, "100");
    assert_int_equal(st->kv[0].line, 8);
    assert_string_equal(st->kv[1].key, "data");
    assert_int_equal(st->kv[1].line, 9);
}

/* Every structural error names the file and the line it is on. */
static void test_errors_name_file_and_line(void **state) {
    fixture *f = *state;
    static const struct {
        const char *text, *line, *what;
    } cases[] = {
        {"steps = 1\n[a]\ncommand = train\n", ":1: ", "before any [section]"},
        {"[a]\nsteps = 1\n", ":1: ", "no 'command'"},
        {"[a]\ncommand = train\n[b]\n\n[c]\ncommand = train\n", ":3: ", "[b] has no keys"},
        {"[a]\ncommand = train\n[b]\n", ":3: ", "[b] has no keys"},
        {"[a]\ncommand = quantise\n", ":2: ", "'quantise' is not a pare command"},
        {"[a]\ncommand = train\n[a]\ncommand = train\n", ":3: ", "given twice (first at line 1)"},
        {"[a]\ncommand = train\nsteps = 1\nsteps = 2\n", ":4: ", "'steps' is given twice (first at line 3)"},
        {"[a]\ncommand = train\ncommand = eval\n", ":3: ", "'command' is given twice"},
        {"[a b]\ncommand = train\n", ":1: ", "letters, digits"},
        {"[experiment]\n[a]\ncommand = train\n", ":1: ", "[experiment] has no keys"},
        {"[experiment]\nname = a\n[experiment]\njobs = 2\n[a]\ncommand = train\n", ":3: ", "[experiment] is given twice (first at line 1)"},
        {"[experiment]\ncolour = red\n[a]\ncommand = train\n", ":2: ", "unknown key 'colour'"},
        {"[experiment]\njobs = 1, 2\n[a]\ncommand = train\n", ":2: ", "a list where a single value"},
        {"[a]\ncommand = eval\ninput = x, y\n", ":3: ", "a list where a single value"},
        {"[a]\ncommand = train\nthis line has no equals sign\n", ":3: ", "not INI"},
        {"[experiment]\nname = x\n", "r.ini: ", "no stage"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        ex_recipe_free(&f->r);
        assert_int_equal(load(f, cases[i].text, err, sizeof err), -1);
        if (!strstr(err, f->path) || !strstr(err, cases[i].line) || !strstr(err, cases[i].what))
            fail_msg("case %zu: expected '%s' and '%s' in: %s", i, cases[i].line, cases[i].what, err);
    }
    char err[512] = "";
    ex_recipe_free(&f->r);
    assert_int_equal(ex_recipe_load(&f->r, "/nonexistent/r.ini", commands, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/r.ini: cannot open the recipe"));
}

static void test_lists_expand_into_their_product(void **state) {
    fixture *f = *state;
    char err[512] = "";
    assert_int_equal(plan(f,
                          "[t]\ncommand = train\nseed = 1, 2\nlr = 1e-3, 3e-3,1e-2\n"
                          "data = a,b.txt\n", /* a string key: one value, commas and all */
                          err, sizeof err),
                     0);
    assert_int_equal(f->p.n, 6);
    const char *want[6] = {"seed=1 lr=1e-3", "seed=2 lr=1e-3", "seed=1 lr=3e-3",
                           "seed=2 lr=3e-3", "seed=1 lr=1e-2", "seed=2 lr=1e-2"};
    for (int i = 0; i < 6; i++) {
        const ex_run *run = &f->p.run[i];
        assert_string_equal(run->label, want[i]);
        assert_string_equal(run->argv[0], "train");
        assert_null(run->argv[run->argc]);
        assert_string_equal(arg(run, "--data="), "--data=a,b.txt");
        assert_int_equal(run->n_deps, 0);
        char seed[32];
        snprintf(seed, sizeof seed, "--%.*s", 6, want[i]);
        assert_non_null(arg(run, seed));
    }
    assert_string_equal(f->p.run[3].name, "x/t/seed=2 lr=3e-3");
    assert_string_equal(f->p.run[3].out, "OUT/t/seed-2_lr-3e-3.ckpt");
    assert_string_equal(arg(&f->p.run[3], "--out="), "--out=OUT/t/seed-2_lr-3e-3.ckpt");
    /* each argument knows its recipe line */
    for (int a = 0; a < f->p.run[0].argc; a++)
        if (!strncmp(f->p.run[0].argv[a], "--lr=", 5)) assert_int_equal(f->p.run[0].key_line[a], 4);
}

static void test_references_expand_with_the_stage_they_name(void **state) {
    fixture *f = *state;
    char err[512] = "";
    assert_int_equal(plan(f,
                          "[t]\ncommand = train\nseed = 1, 2, 3\n"
                          "[e]\ncommand = export\ninput = t\nformat = q8, q4\n"
                          "[v]\ncommand = eval\ninput = e\n",
                          err, sizeof err),
                     0);
    assert_int_equal(f->p.n, 3 + 6 + 6);
    for (int i = 3; i < 9; i++) {
        const ex_run *e = &f->p.run[i];
        assert_string_equal(e->argv[0], "export");
        assert_int_equal(e->n_deps, 1);
        const ex_run *t = &f->p.run[e->deps[0]];
        assert_string_equal(e->argv[1], t->out); /* input = the training run's checkpoint, positional */
        assert_non_null(strstr(e->label, t->label)); /* carries the seed it was made from */
        assert_non_null(strstr(e->label, "format="));
    }
    for (int i = 9; i < 15; i++) {
        const ex_run *v = &f->p.run[i];
        assert_int_equal(v->n_deps, 1);
        assert_true(v->deps[0] >= 3 && v->deps[0] < 9);
        assert_string_equal(v->argv[1], f->p.run[v->deps[0]].out);
        assert_string_equal(v->label, f->p.run[v->deps[0]].label);
        assert_string_equal(v->out, ""); /* eval writes no file */
        assert_null(arg(v, "--out="));
        assert_true(v->deps[0] < i); /* dependency order */
    }
}

/* A stage that refers to two expanded stages runs once per pair that agrees
 * on their shared keys (the student of seed 2 with the teacher of seed 2). */
static void test_two_references_pair_by_shared_keys(void **state) {
    fixture *f = *state;
    char err[512] = "";
    assert_int_equal(plan(f,
                          "[teacher]\ncommand = train\nseed = 1, 2\n"
                          "[student]\ncommand = train\nseed = 1, 2\nsteps = 10, 20\n"
                          "[kd]\ncommand = train\nteacher = teacher\ninit = student\n",
                          err, sizeof err),
                     0);
    int n_kd = 0;
    for (int i = 0; i < f->p.n; i++) {
        const ex_run *run = &f->p.run[i];
        if (strcmp(f->r.stage[run->stage].name, "kd") != 0) continue;
        n_kd++;
        assert_int_equal(run->n_deps, 2);
        const ex_run *a = &f->p.run[run->deps[0]], *b = &f->p.run[run->deps[1]];
        assert_string_equal(arg(a, "--seed="), arg(b, "--seed="));
        char want[1200];
        snprintf(want, sizeof want, "--teacher=%s", a->out);
        assert_string_equal(arg(run, "--teacher="), want);
        snprintf(want, sizeof want, "--init=%s", b->out);
        assert_string_equal(arg(run, "--init="), want);
    }
    assert_int_equal(n_kd, 4); /* 2 seeds x 2 step counts, not 2 x 4 */
}

static void test_plan_errors(void **state) {
    fixture *f = *state;
    static const struct {
        const char *text, *what;
    } cases[] = {
        /* forward references: the only way to build a cycle */
        {"[a]\ncommand = train\ninit = b\n[b]\ncommand = train\ninit = a\n", ":3: stage [a]: init = b refers to stage [b], which is not defined before it"},
        {"[a]\ncommand = train\ninit = a\n", ":3: stage [a]: init = a refers to stage [a]"},
        {"[a]\ncommand = train\n[v]\ncommand = eval\ninput = a\n[w]\ncommand = eval\ninput = v\n", ":8: stage [w]: input = v refers to stage [v], which writes no file"},
        {"[a]\ncommand = train\nseed = 1,,2\n", ":3: stage [a]: seed = 1,,2: an empty"},
        {"[a]\ncommand = train\nseed = 1,\n", ":3: stage [a]: seed = 1,: an empty"},
        {"[a]\ncommand = train\nu = 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22\n"
         "v = 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22\n"
         "w = 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22\n", "more than 10000 runs"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        ex_plan_free(&f->p);
        ex_recipe_free(&f->r);
        assert_int_equal(plan(f, cases[i].text, err, sizeof err), -1);
        assert_int_equal(f->p.n, 0);
        if (!strstr(err, cases[i].what)) fail_msg("case %zu: expected '%s' in: %s", i, cases[i].what, err);
    }
}

/* A stage's own list of a key its reference is labelled with pairs with the
 * reference's runs: the student of seed 2 learns from the teacher of seed 2,
 * and no two runs write the same file. */
static void test_own_list_pairs_with_the_reference(void **state) {
    fixture *f = *state;
    char err[512] = "";
    assert_int_equal(plan(f,
                          "[teacher]\ncommand = train\nseed = 1, 2, 3\n"
                          "[student]\ncommand = train\nteacher = teacher\nseed = 1, 2, 3\nsteps = 10, 20\n",
                          err, sizeof err),
                     0);
    int n = 0;
    for (int i = 0; i < f->p.n; i++) {
        const ex_run *run = &f->p.run[i];
        for (int j = 0; j < i; j++) assert_string_not_equal(run->out, f->p.run[j].out);
        if (strcmp(f->r.stage[run->stage].name, "student") != 0) continue;
        n++;
        assert_int_equal(run->n_deps, 1);
        assert_string_equal(arg(run, "--seed="), arg(&f->p.run[run->deps[0]], "--seed="));
    }
    assert_int_equal(n, 6); /* 3 seeds x 2 step counts, not 9 x 2 */
}

/* --set overrides what the recipe sets: everywhere, or in one stage; a key no
 * stage sets is an error, not a silent no-op. */
static void test_set_overrides_keys(void **state) {
    fixture *f = *state;
    char err[512] = "";
    assert_int_equal(load(f,
                          "[t]\ncommand = train\ndata = builtin:copy\nsteps = 100\n"
                          "[t.2]\ncommand = train\ndata = builtin:copy\nsteps = 5\n",
                          err, sizeof err),
                     0);
    assert_int_equal(ex_recipe_set(&f->r, " data=/x/y.txt ;t.2.steps=7; ", err, sizeof err), 0);
    assert_string_equal(f->r.stage[0].kv[0].value, "/x/y.txt");
    assert_string_equal(f->r.stage[1].kv[0].value, "/x/y.txt");
    assert_string_equal(f->r.stage[0].kv[1].value, "100");
    assert_string_equal(f->r.stage[1].kv[1].value, "7");
    assert_int_equal(f->r.stage[1].kv[1].line, 8); /* errors still name the recipe's line */
    assert_int_equal(ex_recipe_set(&f->r, "seed=3", err, sizeof err), -1);
    assert_non_null(strstr(err, "sets no key 'seed'"));
    assert_int_equal(ex_recipe_set(&f->r, "t.seed=3", err, sizeof err), -1);
    assert_non_null(strstr(err, "stage t sets no key 'seed'"));
    assert_int_equal(ex_recipe_set(&f->r, "steps", err, sizeof err), -1);
    assert_non_null(strstr(err, "expected KEY=VALUE"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_sections_keys_and_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_name_file_and_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists_expand_into_their_product, setup, teardown),
        cmocka_unit_test_setup_teardown(test_references_expand_with_the_stage_they_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_references_pair_by_shared_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_overrides_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_own_list_pairs_with_the_reference, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
