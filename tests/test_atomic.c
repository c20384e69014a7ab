/* test_atomic.c - the one atomic-write helper (autograd/atomic.h) both file
 * writers use: a write lands complete; a failure at any step before the
 * rename leaves the old file as it was and no temporary file (a missing
 * directory, a parent that is a regular file (a read-only directory cannot
 * be tested by permissions as root), a write that fails part way, a
 * rename that fails, an abort). tests/test_format.c checks the model file
 * writer's use of it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "autograd/atomic.h"
#include "tmpfiles.h"

static char dir[64], path[128];

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "test_atomic_%d", (int)getpid());
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir %s", dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/out.bin", dir);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The whole file at p (malloc'd, *n bytes), or NULL. */
static char *slurp(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    char *b = malloc(1 << 20);
    *n = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

static void write_file(const char *p, const char *text) {
    char err[512];
    ag_atomic a;
    assert_int_equal(ag_atomic_open(&a, p, err, sizeof err), 0);
    assert_int_equal(ag_atomic_write(&a, text, strlen(text), err, sizeof err), 0);
    assert_int_equal(ag_atomic_commit(&a, err, sizeof err), AG_ATOMIC_OK);
}

static void assert_content(const char *p, const char *text) {
    size_t n;
    char *b = slurp(p, &n);
    assert_non_null(b);
    assert_int_equal(n, strlen(text));
    assert_memory_equal(b, text, n);
    free(b);
}

static void test_write_and_replace(void **state) {
    (void)state;
    char err[512];
    write_file(path, "old contents");
    assert_content(path, "old contents");
    assert_int_equal(count_temporaries(path), 0);
    /* several chunks, replacing the file */
    ag_atomic a;
    assert_int_equal(ag_atomic_open(&a, path, err, sizeof err), 0);
    assert_int_equal(count_temporaries(path), 1); /* the temporary sits next to the target ... */
    assert_int_equal(access(a.tmp, F_OK), 0);
    assert_content(path, "old contents");  /* ... which is untouched until the commit */
    assert_int_equal(ag_atomic_write(&a, "new ", 4, err, sizeof err), 0);
    assert_int_equal(ag_atomic_write(&a, "", 0, err, sizeof err), 0);
    assert_int_equal(ag_atomic_write(&a, "contents", 8, err, sizeof err), 0);
    assert_int_equal(a.bytes, 12);
    assert_int_equal(ag_atomic_commit(&a, err, sizeof err), AG_ATOMIC_OK);
    assert_content(path, "new contents");
    assert_int_equal(count_temporaries(path), 0);
    /* a bare file name (its directory is ".") */
    char bare[64];
    snprintf(bare, sizeof bare, "test_atomic_bare_%d", (int)getpid());
    write_file(bare, "x");
    assert_content(bare, "x");
    unlink(bare);
}

static void test_missing_directory(void **state) {
    (void)state;
    char err[512], p[160];
    snprintf(p, sizeof p, "%s/no/such/dir/x.bin", dir);
    ag_atomic a;
    assert_int_equal(ag_atomic_open(&a, p, err, sizeof err), -1);
    assert_non_null(strstr(err, p));
    assert_non_null(strstr(err, "cannot create"));
    ag_atomic_abort(&a); /* a no-op on a closed writer */
    assert_int_equal(ag_atomic_write(&a, "x", 1, err, sizeof err), -1);
    assert_int_equal(ag_atomic_commit(&a, err, sizeof err), AG_ATOMIC_FAILED);
}

/* A parent that is a regular file: what a read-only directory would test,
 * but root may write into read-only directories. */
static void test_parent_is_a_file(void **state) {
    (void)state;
    char err[512], p[160];
    write_file(path, "a regular file");
    snprintf(p, sizeof p, "%s/x.bin", path);
    ag_atomic a;
    assert_int_equal(ag_atomic_open(&a, p, err, sizeof err), -1);
    assert_non_null(strstr(err, "Not a directory"));
    assert_content(path, "a regular file");
}

/* A write that fails part way (the file size limit: EFBIG) removes the
 * temporary file and leaves the old file as it was. */
static void test_failed_write_keeps_the_old_file(void **state) {
    (void)state;
    char err[512];
    write_file(path, "old contents");
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {4096, old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    static char big[8192];
    memset(big, 'z', sizeof big);
    ag_atomic a;
    int rc_open = ag_atomic_open(&a, path, err, sizeof err);
    int rc_write = rc_open == 0 ? ag_atomic_write(&a, big, sizeof big, err, sizeof err) : 0;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc_open, 0);
    assert_int_equal(rc_write, -1);
    assert_non_null(strstr(err, "write failed"));
    assert_non_null(strstr(err, "unchanged"));
    assert_int_equal(count_temporaries(path), 0);
    assert_content(path, "old contents");
    /* and nothing more happens on it */
    assert_int_equal(ag_atomic_write(&a, "x", 1, err, sizeof err), -1);
    assert_int_equal(ag_atomic_commit(&a, err, sizeof err), AG_ATOMIC_FAILED);
    assert_content(path, "old contents");
}

static void test_abort_keeps_the_old_file(void **state) {
    (void)state;
    char err[512];
    write_file(path, "old contents");
    ag_atomic a;
    assert_int_equal(ag_atomic_open(&a, path, err, sizeof err), 0);
    assert_int_equal(ag_atomic_write(&a, "half a file", 11, err, sizeof err), 0);
    ag_atomic_abort(&a);
    ag_atomic_abort(&a);
    assert_int_equal(count_temporaries(path), 0);
    assert_content(path, "old contents");
}

/* The rename step fails when the target is a directory: the directory and
 * nothing else remains. */
static void test_failed_rename(void **state) {
    (void)state;
    char err[512], p[160];
    snprintf(p, sizeof p, "%s/sub", dir);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mkdir %s && touch %s/inside", p, p);
    assert_int_equal(system(cmd), 0);
    ag_atomic a;
    assert_int_equal(ag_atomic_open(&a, p, err, sizeof err), 0);
    assert_int_equal(ag_atomic_write(&a, "x", 1, err, sizeof err), 0);
    assert_int_equal(ag_atomic_commit(&a, err, sizeof err), AG_ATOMIC_FAILED);
    assert_non_null(strstr(err, "rename failed"));
    assert_int_equal(count_temporaries(p), 0);
    snprintf(cmd, sizeof cmd, "%s/inside", p);
    assert_int_equal(access(cmd, F_OK), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_and_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parent_is_a_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_keeps_the_old_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_keeps_the_old_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_rename, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
