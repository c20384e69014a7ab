/* test_options.c - the key tables every subcommand parses its arguments with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "cli/options.h"

typedef struct fixture {
    int steps;
    double lr;
    const char *data, *vocab;
    bool json;
    pare_opt opts[5];
    char err[256];
    int pos[2], n_pos;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    pare_opt opts[5] = {
        PARE_OPT_INT("steps", &f->steps, "100", 1, 1000000, "optimizer steps"),
        PARE_OPT_FLOAT("lr", &f->lr, "1e-3", 0, 10, "learning rate"),
        PARE_OPT_STRING("data", &f->data, "builtin:markov", "data"),
        PARE_OPT_CHOICE("vocab", &f->vocab, "byte", "byte|char", "vocabulary"),
        PARE_OPT_FLAG("json", &f->json, "print JSON"),
    };
    memcpy(f->opts, opts, sizeof opts);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    free(*state);
    return 0;
}

static int parse(fixture *f, int argc, char **argv) {
    return pare_opts_parse(f->opts, 5, argc, argv, f->pos, 2, &f->n_pos, f->err, sizeof f->err);
}

static void test_defaults_then_values(void **state) {
    fixture *f = *state;
    char *argv[] = {"train", "--steps", "250", "--lr=0.01", "ckpt.bin", "--json", "--vocab", "char"};
    assert_int_equal(parse(f, 8, argv), PARE_OPTS_OK);
    assert_int_equal(f->steps, 250);
    assert_true(f->lr == 0.01);
    assert_string_equal(f->data, "builtin:markov");
    assert_string_equal(f->vocab, "char");
    assert_true(f->json);
    assert_int_equal(f->n_pos, 1);
    assert_string_equal(argv[f->pos[0]], "ckpt.bin");
    assert_true(f->opts[0].set);
    assert_false(f->opts[2].set);
}

static void test_errors_name_the_key(void **state) {
    fixture *f = *state;
    struct { char *argv[3]; const char *want; } cases[] = {
        {{"x", "--stepz", "3"}, "--stepz"},
        {{"x", "--steps", "ten"}, "--steps"},
        {{"x", "--steps", "0"}, "out of range"},
        {{"x", "--lr", "nan"}, "finite"},
        {{"x", "--lr", "1e-3x"}, "--lr"},
        {{"x", "--vocab", "word"}, "byte|char"},
        {{"x", "--json=maybe", "a"}, "--json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        f->err[0] = '\0';
        assert_int_equal(parse(f, 3, cases[i].argv), PARE_OPTS_ERROR);
        assert_non_null(strstr(f->err, cases[i].want));
    }
    char *missing[] = {"x", "--steps"};
    assert_int_equal(parse(f, 2, missing), PARE_OPTS_ERROR);
    assert_non_null(strstr(f->err, "missing value"));
    char *extra[] = {"x", "a", "b", "c"};
    assert_int_equal(parse(f, 4, extra), PARE_OPTS_ERROR);
    assert_non_null(strstr(f->err, "'c'"));
}

static void test_help_and_resolved_config(void **state) {
    fixture *f = *state;
    char *help[] = {"x", "--steps", "5", "--help"};
    assert_int_equal(parse(f, 4, help), PARE_OPTS_HELP);
    char *argv[] = {"x", "--steps", "7"};
    assert_int_equal(parse(f, 3, argv), PARE_OPTS_OK);
    size_t need = pare_opts_format(f->opts, 5, NULL, 0);
    char *buf = malloc(need + 1);
    assert_int_equal(pare_opts_format(f->opts, 5, buf, need + 1), need);
    assert_string_equal(buf, "steps=7\nlr=0.001\ndata=builtin:markov\nvocab=byte\njson=false\n");
    free(buf);
    char small[8];
    pare_opts_format(f->opts, 5, small, sizeof small);
    assert_int_equal(strlen(small), 7); /* truncated, still terminated */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults_then_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_name_the_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_and_resolved_config, setup, teardown),
    };
    return cmocka_run_group_tests_name("options", tests, NULL, NULL);
}
