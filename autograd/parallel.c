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

static void sgemm1(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
                K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* A product worth splitting: at least this many flops (2 M N K), and a block
 * of at least AG_SPLIT_ALIGN rows or columns per thread. Below that, one
 * single-threaded OpenBLAS call: left to itself, OpenBLAS threads products
 * far smaller than this, and its threads then wait for each other in
 * sched_yield loops (the runtime's evaluation of 17-token rows at 2 threads
 * ran 10x slower than at 1 thread that way, docs/threading.md). */
#define SPLIT_MIN_FLOPS 8e6

/* Whether ag_sgemm would split this product over the pool, and along which
 * dimension: 'M' (rows of C), 'N' (columns of C) or 0 (one call). */
static char split_dim_nt(int M, int N, int K, int threads) {
    if (threads < 2 || 2.0 * M * N * K < SPLIT_MIN_FLOPS) return 0;
    int big = M >= N ? M : N;
    if (big < 2 * AG_SPLIT_ALIGN) return 0;
    return M >= N ? 'M' : 'N';
}

static char split_dim(int M, int N, int K, int threads) {
    return omp_in_parallel() ? 0 : split_dim_nt(M, N, K, threads);
}

char ag_sgemm_split(int M, int N, int K) { return split_dim(M, N, K, g_threads); }

/* Thread t of nt's block [r0, r1) of [0, extent): whole AG_SPLIT_ALIGN
 * tiles, the last block takes the rest; blocks past the end are empty. */
static void split_block(int extent, int t, int nt, int *r0, int *r1) {
    int tiles = (extent + AG_SPLIT_ALIGN - 1) / AG_SPLIT_ALIGN;
    int per = (tiles + nt - 1) / nt;
    long a = (long)t * per * AG_SPLIT_ALIGN, b = (long)(t + 1) * per * AG_SPLIT_ALIGN;
    *r0 = (int)(a < extent ? a : extent);
    *r1 = (int)(b < extent ? b : extent);
}

/* Rows [r0, r1) of C (dim 'M') or columns [r0, r1) (dim 'N'): the same
 * product restricted to that block, one single-threaded call. Each element of
 * C is computed by exactly one call, over the whole of K. */
static void sgemm_block(char dim, int r0, int r1, bool ta, bool tb, int M, int N, int K,
                        float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                        float *C, int ldc) {
    if (r1 <= r0) return;
    if (dim == 'M') /* row r of op(A) is row r of A, or column r of A^T */
        sgemm1(ta, tb, r1 - r0, N, K, alpha, A + (ta ? (size_t)r0 : (size_t)r0 * lda), lda, B, ldb,
               beta, C + (size_t)r0 * ldc, ldc);
    else /* column c of op(B) is column c of B, or row c of B^T */
        sgemm1(ta, tb, M, r1 - r0, K, alpha, A, lda, B + (tb ? (size_t)r0 * ldb : (size_t)r0), ldb,
               beta, C + r0, ldc);
}

static void sgemm_run(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc) {
    char dim = split_dim(M, N, K, g_threads);
    if (!dim) {
        if (g_threads > 1 && !omp_in_parallel()) ag_sgemm_single(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        else sgemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    ag_join j = {0};
#pragma omp parallel num_threads(g_threads)
    {
        int r0, r1;
        split_block(dim == 'M' ? M : N, omp_get_thread_num(), omp_get_num_threads(), &r0, &r1);
        sgemm_block(dim, r0, r1, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        ag_region_join(&j);
    }
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

void ag_sgemm_share(int owner, bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
                    int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    char dim = nt > 1 ? split_dim_nt(M, N, K, nt) : 0;
    int r0 = 0, r1 = 0;
    bool mine = dim ? true : t == owner % nt;
    if (dim) split_block(dim == 'M' ? M : N, t, nt, &r0, &r1);
    if (!mine) return;
    double t0 = g_profile ? ag_now() : 0.0;
    if (!dim) sgemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else sgemm_block(dim, r0, r1, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (g_profile) {
        /* each thread counts its own block; the product is traced once, as
         * one top-level call (what it would be without the split) */
        double rows = dim == 'M' ? r1 - r0 : M, cols = dim == 'N' ? r1 - r0 : N;
        if (rows > 0 && cols > 0) count_call(true, 2.0 * rows * cols * K, ag_now() - t0);
        if (t == (dim ? 0 : owner % nt)) trace_call(false, ta, tb, M, N, K, lda, ldb, ldc, alpha, beta);
    }
}

void ag_split_rows(int M, int N, int K, int *r0, int *r1) {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    if (nt > 1 && split_dim_nt(M, N, K, nt) == 'M') {
        split_block(M, t, nt, r0, r1);
    } else {
        *r0 = 0;
        *r1 = t == 0 ? M : 0;
    }
}

void ag_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (!g_profile) {
        sgemm_run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    bool inner = omp_in_parallel();
    double t0 = ag_now();
    sgemm_run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    count_call(inner, 2.0 * M * N * K, ag_now() - t0);
    trace_call(inner, ta, tb, M, N, K, lda, ldb, ldc, alpha, beta);
}

void ag_sgemm_single(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    openblas_set_num_threads(1);
    sgemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    openblas_set_num_threads(g_threads);
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
