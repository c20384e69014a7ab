/* test_options.c - the key tables every subcommand parses its arguments with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "keys/options.h"

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

/* Seeds (U64) take every value below 2^64 and nothing else; an ENUM writes
 * the index of its choice and formats back to the name. */
static void test_u64_and_enum(void **state) {
    (void)state;
    uint64_t seed = 0;
    int kind = -1;
    pare_opt o[] = {
        PARE_OPT_U64("seed", &seed, "7", "a seed"),
        PARE_OPT_ENUM("vocab", &kind, "byte", "byte|char", "kind"),
    };
    char err[256];
    char *ok[] = {"x", "--seed", "18446744073709551615", "--vocab", "char"};
    assert_int_equal(pare_opts_parse(o, 2, 5, ok, NULL, 0, NULL, err, sizeof err), PARE_OPTS_OK);
    assert_true(seed == UINT64_MAX);
    assert_int_equal(kind, 1);
    char buf[128];
    pare_opts_format(o, 2, buf, sizeof buf);
    assert_string_equal(buf, "seed=18446744073709551615\nvocab=char\n");
    assert_int_equal(pare_opts_defaults(o, 2, err, sizeof err), 0);
    assert_true(seed == 7 && kind == 0);
    const char *bad[] = {"-1", "18446744073709551616", "1.5", "+3", "abc"};
    for (int i = 0; i < 5; i++) {
        char *argv[] = {"x", "--seed", (char *)bad[i]};
        assert_int_equal(pare_opts_parse(o, 2, 3, argv, NULL, 0, NULL, err, sizeof err), PARE_OPTS_ERROR);
        assert_non_null(strstr(err, "--seed"));
    }
    char *argv[] = {"x", "--vocab", "word"};
    assert_int_equal(pare_opts_parse(o, 2, 3, argv, NULL, 0, NULL, err, sizeof err), PARE_OPTS_ERROR);
    assert_non_null(strstr(err, "byte|char"));
}

/* A command's table from groups: rows in order; the same key from two groups
 * is refused (exit status 1 and a message), and so is overflowing the table. */
static void test_keys_groups(void **state) {
    (void)state;
    int a = 0, b = 0;
    bool j = false;
    pare_keys k = {.n = 0};
    pare_keys_threads(&k, &a);
    pare_keys_json(&k, &j, NULL);
    assert_int_equal(k.n, 2);
    assert_string_equal(k.row[0].key, "threads");
    assert_string_equal(k.row[0].def, "0"); /* one default for every command */
    char *argv[] = {"x", "--threads", "3"};
    assert_int_equal(pare_keys_cli("t", "t", &k, 3, argv, NULL, 0, NULL), -1);
    assert_int_equal(a, 3);
    pare_keys_threads(&k, &b); /* a second group declaring threads */
    assert_int_equal(pare_keys_cli("t", "t", &k, 3, argv, NULL, 0, NULL), 1);
    pare_keys big = {.n = 0};
    for (int i = 0; i < PARE_KEYS_MAX + 1; i++) pare_keys_json(&big, &j, NULL);
    assert_true(big.overflow);
    assert_int_equal(pare_keys_cli("t", "t", &big, 1, argv, NULL, 0, NULL), 1);
    assert_true(pare_threads(0) >= 1);
    assert_int_equal(pare_threads(5), 5);
}

/* A stored configuration is data: known keys take their values (not their
 * `set` flags), skipped and unknown keys are ignored, a stored "help" or
 * "--steps" line is not an option; a bad stored value names its source. */
static void test_apply_stored(void **state) {
    fixture *f = *state;
    char err[256];
    static const char *const skip[] = {"json", NULL};
    assert_int_equal(pare_opts_defaults(f->opts, 5, err, sizeof err), 0);
    assert_int_equal(pare_opts_apply_stored(f->opts, 5, "help=1\n--steps=5\njson=true\nsteps=7\nbogus=3\ndata=x.txt",
                                            skip, "checkpoint c", err, sizeof err), 0);
    assert_int_equal(f->steps, 7);
    assert_false(f->json);
    assert_string_equal(f->data, "x.txt");
    assert_false(f->opts[0].set);
    char *argv[] = {"x", "--steps", "9"};
    assert_int_equal(pare_opts_parse_more(f->opts, 5, 3, argv, NULL, 0, NULL, err, sizeof err), PARE_OPTS_OK);
    assert_int_equal(f->steps, 9); /* the user's keys win */
    assert_string_equal(f->data, "x.txt");
    assert_int_equal(pare_opts_apply_stored(f->opts, 5, "steps=many\n", NULL, "checkpoint c", err, sizeof err), -1);
    assert_non_null(strstr(err, "checkpoint c"));
    assert_non_null(strstr(err, "--steps"));
    pare_opts_free(f->opts, 5);
}

/* A rewritten checkpoint's configuration: the stored keys a command owns are
 * replaced by its values, every other stored line is kept as it was. */
static void test_merge_conf(void **state) {
    fixture *f = *state;
    char err[256];
    assert_int_equal(pare_opts_defaults(f->opts, 5, err, sizeof err), 0);
    f->steps = 42;
    char *c = pare_opts_merge_conf("n-layer=4\nsteps=7\nlr=0.5\nseed=3", f->opts, 2);
    assert_non_null(c);
    assert_string_equal(c, "n-layer=4\nseed=3\nsteps=42\nlr=0.001\n");
    free(c);
    c = pare_opts_merge_conf(NULL, f->opts, 1);
    assert_non_null(c);
    assert_string_equal(c, "steps=42\n");
    free(c);
    c = pare_opts_merge_conf("stepsx=1\n", f->opts, 1); /* a key that only starts like one is kept */
    assert_string_equal(c, "stepsx=1\nsteps=42\n");
    free(c);
    pare_opts_free(f->opts, 5);
}

/* A string value with a control character is refused (a newline would
 * forge a stored key); a flag followed by a non-boolean says what it takes. */
static void test_control_characters_and_flags(void **state) {
    fixture *f = *state;
    char *nl[] = {"x", "--data", "run\nlr=10"};
    assert_int_equal(parse(f, 3, nl), PARE_OPTS_ERROR);
    assert_non_null(strstr(f->err, "control character 0x0a"));
    char *maybe[] = {"x", "--json", "maybe"};
    f->n_pos = 0;
    assert_int_equal(pare_opts_parse(f->opts, 5, 3, maybe, NULL, 0, NULL, f->err, sizeof f->err), PARE_OPTS_ERROR);
    assert_non_null(strstr(f->err, "--json is a flag"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults_then_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_name_the_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_and_resolved_config, setup, teardown),
        cmocka_unit_test(test_u64_and_enum),
        cmocka_unit_test_setup_teardown(test_apply_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_control_characters_and_flags, setup, teardown),
        cmocka_unit_test(test_keys_groups),
        cmocka_unit_test_setup_teardown(test_merge_conf, setup, teardown),
    };
    return cmocka_run_group_tests_name("options", tests, NULL, NULL);
}
