#include "parallel.h"

#include <cblas.h>
#include <omp.h>
#include <time.h>


static int g_threads = 1;
static bool g_profile = false;
static ag_sgemm_stats g_stats;
static ag_sgemm_call *g_trace; /* [g_trace_cap] or NULL */
static size_t g_trace_cap, g_trace_n;

void ag_set_threads(int n) {
    if (n < 1) n = 1;
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int ag_get_threads(void) { return g_threads; }

double ag_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void ag_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (!g_profile) {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    bool inner = omp_in_parallel();
    double t0 = ag_now();
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double dt = ag_now() - t0;
    double flops = 2.0 * M * N * K;
    if (g_trace) {
        size_t idx;
#pragma omp atomic capture
        idx = g_trace_n++;
        if (idx < g_trace_cap)
            g_trace[idx] = (ag_sgemm_call){ta, tb, inner, M, N, K, lda, ldb, ldc, alpha, beta};
    }
    if (inner) {
#pragma omp atomic
        g_stats.flops += flops;
#pragma omp atomic
        g_stats.calls += 1;
#pragma omp atomic
        g_stats.inner_flops += flops;
#pragma omp atomic
        g_stats.inner_calls += 1;
#pragma omp atomic
        g_stats.inner_thread_seconds += dt;
    } else {
        g_stats.flops += flops;
        g_stats.calls += 1;
        g_stats.seconds += dt;
    }
}

void ag_sgemm_profile(bool enabled) { g_profile = enabled; }

void ag_sgemm_trace(ag_sgemm_call *buf, size_t cap) {
    g_trace = buf;
    g_trace_cap = buf ? cap : 0;
    g_trace_n = 0;
}

size_t ag_sgemm_trace_count(void) { return g_trace_n; }
ag_sgemm_stats ag_sgemm_stats_get(void) { return g_stats; }
void ag_sgemm_stats_reset(void) { g_stats = (ag_sgemm_stats){0}; }

const char *ag_blas_info(void) { return openblas_get_config(); }
