/* test_files.h - scratch folders and files for tests (header-only; include
 * after <cmocka.h>, with _GNU_SOURCE defined before any system header for
 * nftw's FTW_DEPTH and FTW_PHYS). */
#ifndef PARE_TEST_FILES_H
#define PARE_TEST_FILES_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Makes a new empty folder /tmp/pare-test-TAG-XXXXXX into dir[n]; 0 or -1. */
static inline int test_tmpdir(char *dir, size_t n, const char *tag) {
    snprintf(dir, n, "/tmp/pare-test-%s-XXXXXX", tag);
    return mkdtemp(dir) ? 0 : -1;
}

static inline int test_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Removes a folder and everything in it. */
static inline void test_rmtree(const char *dir) { nftw(dir, test_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* Writes text to path (replacing it); fails the test if it cannot. */
static inline void test_write_file(const char *path, const char *text) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

#endif
