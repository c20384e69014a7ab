/* fingerprint.c - the build, library and machine a run ran with. */
#include "fingerprint.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "autograd/parallel.h"
#include "experiments/gitrev.h" /* generated at build time: PARE_GIT_REV, PARE_GIT_DIRTY */

#ifndef PARE_VERSION_STRING
#define PARE_VERSION_STRING "unknown"
#endif
#ifndef PARE_BUILD_FLAGS
#define PARE_BUILD_FLAGS "unknown"
#endif
#ifndef PARE_COMPILER
#define PARE_COMPILER "unknown"
#endif

static void copy(char *dst, size_t n, const char *src) { snprintf(dst, n, "%s", src ? src : "unknown"); }

/* The "model name" line of /proc/cpuinfo (x86) or "Model"/"CPU part" elsewhere. */
static void cpu_model(char *out, size_t n) {
    copy(out, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) && strncmp(line, "Model", 5)) continue;
        char *colon = strchr(line, ':');
        if (!colon) continue;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        v[strcspn(v, "\n")] = '\0';
        copy(out, n, v);
        break;
    }
    fclose(f);
}

static void simd_level(char *out, size_t n) {
    out[0] = '\0';
#if defined(__x86_64__) || defined(__i386__)
    static const char *const feats[] = {"avx512f", "avx512bw", "avx512vnni", "avx2", "fma", "avx", "sse4.2"};
    const int have[] = {__builtin_cpu_supports("avx512f"),  __builtin_cpu_supports("avx512bw"),
                        __builtin_cpu_supports("avx512vnni"), __builtin_cpu_supports("avx2"),
                        __builtin_cpu_supports("fma"),      __builtin_cpu_supports("avx"),
                        __builtin_cpu_supports("sse4.2")};
    size_t len = 0;
    for (size_t i = 0; i < sizeof feats / sizeof feats[0] && len < n; i++)
        if (have[i]) len += (size_t)snprintf(out + len, n - len, "%s%s", len ? " " : "", feats[i]);
    if (!out[0]) copy(out, n, "sse2");
#elif defined(__aarch64__)
    copy(out, n, "neon");
#else
    copy(out, n, "scalar");
#endif
}

void ex_fingerprint_collect(ex_fingerprint *fp) {
    memset(fp, 0, sizeof *fp);
    copy(fp->pare_version, sizeof fp->pare_version, PARE_VERSION_STRING);
    copy(fp->git_rev, sizeof fp->git_rev, PARE_GIT_REV);
    fp->git_dirty = PARE_GIT_DIRTY;
    copy(fp->compiler, sizeof fp->compiler, PARE_COMPILER);
    copy(fp->cflags, sizeof fp->cflags, PARE_BUILD_FLAGS);
    copy(fp->blas, sizeof fp->blas, ag_blas_info());
    fp->threads = ag_get_threads();
    cpu_model(fp->cpu_model, sizeof fp->cpu_model);
    simd_level(fp->simd, sizeof fp->simd);
    if (gethostname(fp->host, sizeof fp->host) != 0) copy(fp->host, sizeof fp->host, "unknown");
    fp->host[sizeof fp->host - 1] = '\0';
}
