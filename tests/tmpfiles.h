/* tmpfiles.h - for tests of the file writers: how many temporary files of
 * the atomic writer (autograd/atomic.h: "<path>.<pid>-<n>.tmp", or an old
 * "<path>.tmp") exist next to path. */
#ifndef PARE_TEST_TMPFILES_H
#define PARE_TEST_TMPFILES_H

#include <glob.h>
#include <stdio.h>

static inline int count_temporaries(const char *path) {
    char pat[2][600];
    snprintf(pat[0], sizeof pat[0], "%s.tmp", path);
    snprintf(pat[1], sizeof pat[1], "%s.*.tmp", path);
    int n = 0;
    for (int i = 0; i < 2; i++) {
        glob_t g;
        if (glob(pat[i], 0, NULL, &g) == 0) n += (int)g.gl_pathc;
        globfree(&g);
    }
    return n;
}

#endif
