/* fingerprint.h - what a run needs to be reproduced: the build (git revision,
 * dirty flag, compiler and flags), the BLAS, the thread count, the machine
 * (CPU model, SIMD level, host) and the dataset.
 *
 * The git revision and dirty flag are taken at BUILD time (CMake runs git on
 * every build and regenerates a header when they change), so they describe
 * the sources the running binary was compiled from, even when it runs
 * outside the work tree. A build from a tree without git reports "unknown".
 */
#ifndef PARE_EX_FINGERPRINT_H
#define PARE_EX_FINGERPRINT_H

#include <stdint.h>

typedef struct ex_fingerprint {
    char pare_version[32];
    char git_rev[48];     /* full commit hash, or "unknown" */
    int git_dirty;        /* 1 when tracked files differed from the commit, 0 clean, -1 unknown */
    char compiler[128];   /* for example "GNU 12.2.0" */
    char cflags[512];     /* build type and flags */
    char blas[256];       /* ag_blas_info() */
    int threads;          /* ag_get_threads() */
    char cpu_model[128];  /* /proc/cpuinfo "model name", or "unknown" */
    char simd[64];        /* the best vector extensions present, for example "avx2 fma" */
    char host[128];       /* gethostname() */
} ex_fingerprint;

/* Fills fp with the current build and machine. Never fails: a field that
 * cannot be found is "unknown". */
void ex_fingerprint_collect(ex_fingerprint *fp);

#endif
