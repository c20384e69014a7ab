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
    /* OpenBLAS on one thread: pare shares out the units of its products. In
     * the OpenMP build openblas_set_num_threads also sets OpenMP's thread
     * count, so it comes first. */
    openblas_set_num_threads(1);
    omp_set_num_threads(n);
}

int ag_get_threads(void) { return g_threads; }

double ag_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One single-threaded cblas call. The OpenMP build of OpenBLAS threads a call
 * made outside an active parallel region over omp_get_max_threads() threads
 * (whatever openblas_set_num_threads said), so that is held at one around
 * such a call; inside an active region OpenBLAS runs on the calling thread. */
static void sgemm1(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc) {
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (nt > 1) omp_set_num_threads(1);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
                K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (nt > 1) omp_set_num_threads(nt);
}

/* A product worth cutting: at least this many flops (2 M N K). Below it the
 * product is one call: waking a thread costs more than it saves. */
#define SPLIT_MIN_FLOPS 8e6
/* One unit per this many rows or columns (rounded down to a power of two). */
#define UNIT_EXTENT 512
#define UNITS_MAX 16

ag_units ag_sgemm_units(int M, int N, int K) {
    ag_units u = {0, 0, 1};
    int big = M >= N ? M : N;
    if (2.0 * M * N * K < SPLIT_MIN_FLOPS || big < 2 * AG_SPLIT_ALIGN) return u;
    int want = 2;
    while (want < UNITS_MAX && big / UNIT_EXTENT >= 2 * want) want *= 2;
    int tiles = (big + AG_SPLIT_ALIGN - 1) / AG_SPLIT_ALIGN;
    u.dim = M >= N ? 'M' : 'N';
    u.size = (tiles + want - 1) / want * AG_SPLIT_ALIGN;
    u.count = (big + u.size - 1) / u.size;
    return u;
}

void ag_unit_range(ag_units u, int extent, int i, int *r0, int *r1) {
    if (!u.dim) {
        *r0 = 0, *r1 = extent;
        return;
    }
    long a = (long)i * u.size, b = a + u.size;
    *r0 = (int)(a < extent ? a : extent);
    *r1 = (int)(b < extent ? b : extent);
}

/* Unit i of g as one call: rows [r0, r1) of C (dim 'M') or columns (dim 'N'),
 * over the whole of K. */
static void unit_call(const ag_gemm *g, ag_units u, int i) {
    int r0, r1;
    ag_unit_range(u, u.dim == 'N' ? g->N : g->M, i, &r0, &r1);
    if (r1 <= r0) return;
    if (!u.dim)
        sgemm1(g->ta, g->tb, g->M, g->N, g->K, g->alpha, g->A, g->lda, g->B, g->ldb, g->beta, g->C, g->ldc);
    else if (u.dim == 'M') /* row r of op(A) is row r of A, or column r of A^T */
        sgemm1(g->ta, g->tb, r1 - r0, g->N, g->K, g->alpha, g->A + (g->ta ? (size_t)r0 : (size_t)r0 * g->lda),
               g->lda, g->B, g->ldb, g->beta, g->C + (size_t)r0 * g->ldc, g->ldc);
    else /* column c of op(B) is column c of B, or row c of B^T */
        sgemm1(g->ta, g->tb, g->M, r1 - r0, g->K, g->alpha, g->A, g->lda,
               g->B + (g->tb ? (size_t)r0 * g->ldb : (size_t)r0), g->ldb, g->beta, g->C + r0, g->ldc);
}

/* Profiling: trace_call records a product's shape (as a standalone cblas call
 * would have it) for bench/bench_block's replay; count_call adds its flops
 * and time (inner: from inside a parallel region, time summed over threads). */
static void trace_call(bool inner, bool ta, bool tb, int M, int N, int K, int lda, int ldb,
                       int ldc, float alpha, float beta) {
    if (!g_trace) return;
    size_t idx;
#pragma omp atomic capture
    idx = g_trace_n++;
    if (idx < g_trace_cap)
        g_trace[idx] = (ag_sgemm_call){ta, tb, inner, M, N, K, lda, ldb, ldc, alpha, beta};
}

static void count_call(bool inner, double flops, double dt) {
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

void ag_gemm_unit(const ag_gemm *g, ag_units u, int i) {
    if (!g_profile) {
        unit_call(g, u, i);
        return;
    }
    /* each unit is counted as a call from inside a region (time summed over
     * threads); the product is traced once, as the one top-level call it
     * stands for */
    double t0 = ag_now();
    unit_call(g, u, i);
    int r0, r1;
    ag_unit_range(u, u.dim == 'N' ? g->N : g->M, i, &r0, &r1);
    double rows = u.dim == 'M' ? r1 - r0 : g->M, cols = u.dim == 'N' ? r1 - r0 : g->N;
    count_call(true, 2.0 * rows * cols * g->K, ag_now() - t0);
    if (i == 0) trace_call(false, g->ta, g->tb, g->M, g->N, g->K, g->lda, g->ldb, g->ldc, g->alpha, g->beta);
}

static void sgemm_run(const ag_gemm *g) {
    ag_units u = ag_sgemm_units(g->M, g->N, g->K);
    if (u.count == 1 || g_threads < 2 || omp_in_parallel()) {
        for (int i = 0; i < u.count; i++) unit_call(g, u, i);
        return;
    }
    ag_join j = {0};
#pragma omp parallel num_threads(g_threads)
    {
#pragma omp for schedule(dynamic, 1) nowait
        for (int i = 0; i < u.count; i++) unit_call(g, u, i);
        ag_region_join(&j);
    }
}

void ag_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    ag_gemm g = {ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
    if (!g_profile) {
        sgemm_run(&g);
        return;
    }
    bool inner = omp_in_parallel();
    double t0 = ag_now();
    sgemm_run(&g);
    count_call(inner, 2.0 * M * N * K, ag_now() - t0);
    trace_call(inner, ta, tb, M, N, K, lda, ldb, ldc, alpha, beta);
}

void ag_sgemm_whole(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc) {
    if (!g_profile) {
        sgemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    bool inner = omp_in_parallel();
    double t0 = ag_now();
    sgemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    count_call(inner, 2.0 * M * N * K, ag_now() - t0);
    trace_call(inner, ta, tb, M, N, K, lda, ldb, ldc, alpha, beta);
}

void ag_region_join(ag_join *j) {
    int nt = omp_get_num_threads();
    if (nt < 2) return;
    int n = __atomic_add_fetch(&j->arrived, 1, __ATOMIC_ACQ_REL);
    if (omp_get_thread_num() != 0 || n >= nt) return;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0;; i++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (__atomic_load_n(&j->arrived, __ATOMIC_ACQUIRE) >= nt) return;
        if ((i & 63) == 63) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > AG_JOIN_SPIN_NS) return;
        }
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
