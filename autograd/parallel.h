/* parallel.h - one thread pool for everything, and the sgemm every op calls.
 *
 * pare links the OpenMP build of OpenBLAS and parallelises its own loops with
 * OpenMP, so BLAS and our kernels share one pool of threads (libgomp's) rather
 * than two pools spinning against each other. docs/architecture.md has the
 * measurements behind that choice.
 *
 * Determinism: every parallel loop in pare splits work so that each output
 * element is computed by one thread in a fixed order; results therefore depend
 * on the thread count only through OpenBLAS's own blocking.
 */
#ifndef PARE_AG_PARALLEL_H
#define PARE_AG_PARALLEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sets the number of threads for OpenMP loops and OpenBLAS (n >= 1). */
void ag_set_threads(int n);
int ag_get_threads(void);

/* C[M,N] = alpha * op(A) op(B) + beta * C, row-major, through cblas_sgemm.
 * ta/tb transpose A/B; lda/ldb/ldc are row strides. Every matrix product in
 * pare goes through here so the profiler below sees all of them.
 *
 * Threads: called outside a parallel region with more than one thread, a
 * product of at least 8 MFLOP is split over the pool along the larger of M and
 * N (rows or columns of C) in blocks of whole AG_SPLIT_ALIGN-wide tiles, each
 * thread making one single-threaded cblas call on its block over the whole of
 * K. Every element of C is computed by one call, so the result does not depend
 * on the split; tests/test_ops.c checks it equals one single-threaded call bit
 * for bit. Smaller products and calls from inside a parallel region are one
 * cblas call (single-threaded inside a region with the OpenMP build). */
void ag_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);

/* Tile width of ag_sgemm's split (a multiple of OpenBLAS's register tiles). */
#define AG_SPLIT_ALIGN 16

/* How ag_sgemm, called here (outside or inside a parallel region) with the
 * current thread count, would split an M x N x K product: 'M' (by rows of C),
 * 'N' (by columns) or 0 (one call). */
char ag_sgemm_split(int M, int N, int K);

/* For ops that put several independent products (and their own loops) into
 * one parallel region instead of one region each: called by every thread of
 * the region with the same arguments, computes this thread's share of C under
 * the split ag_sgemm would use with the region's thread count, so the bits are
 * those of one call. A product too small to split is computed whole by thread
 * `owner` (mod the thread count); outside a region (one thread) it is all of
 * it. The share is one single-threaded cblas call (the OpenMP build of
 * OpenBLAS does not nest). Not profiled by ag_sgemm_profile. */
void ag_sgemm_share(int owner, bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
                    int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* The rows [r0, r1) of an M x N x K product's C that this thread of the
 * current region computes in ag_sgemm_share when the split is by rows;
 * otherwise thread 0 gets all rows and the others none. Lets an op prepare
 * (for example fill with a bias) exactly the rows its thread will compute. */
void ag_split_rows(int M, int N, int K, int *r0, int *r1);

/* The same product as one cblas call with OpenBLAS held to one thread: the
 * reference the split above is tested against. Not for use inside a parallel
 * region (it changes OpenBLAS's thread count for the process). */
void ag_sgemm_single(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc);

/* Optional profiling of ag_sgemm. When enabled, every call is counted with its
 * flops (2*M*N*K) and timed, in two classes:
 * - calls made outside any parallel region (OpenBLAS may use every thread):
 *   their wall time is `seconds`;
 * - calls made from inside a parallel region (the per-head products of
 *   attention, one per thread at a time): `inner_thread_seconds` is the sum
 *   over threads of the time each spent in them, a CPU-time-like figure.
 * ag_sgemm_wall_seconds() folds the second class into wall time by dividing by
 * the thread count, which is exact when the parallel loop keeps every thread
 * busy in sgemm for the same share of its time (balanced heads). The timer
 * costs two clock reads per call; profiling is off by default. */
typedef struct ag_sgemm_stats {
    uint64_t calls;              /* all calls */
    double flops;                /* all calls */
    double seconds;              /* wall time of calls outside parallel regions */
    uint64_t inner_calls;        /* calls from inside parallel regions (also in calls) */
    double inner_flops;          /* their flops (also in flops) */
    double inner_thread_seconds; /* sum over threads of the time spent in them */
} ag_sgemm_stats;

/* Estimated wall time in sgemm: seconds + inner_thread_seconds / threads. */
static inline double ag_sgemm_wall_seconds(const ag_sgemm_stats *s, int threads) {
    return s->seconds + s->inner_thread_seconds / (threads > 0 ? threads : 1);
}

/* The shape of one ag_sgemm call, as recorded by the trace below. */
typedef struct ag_sgemm_call {
    bool ta, tb;
    bool inner; /* made from inside a parallel region */
    int M, N, K, lda, ldb, ldc;
    float alpha, beta;
} ag_sgemm_call;

/* While profiling is on, also records the shape of each call into buf[cap]
 * (calls past cap are counted, not stored). Calls from inside a parallel
 * region are stored in completion order, which varies between runs. A NULL
 * buf stops tracing. The caller owns buf and keeps it alive while tracing.
 * Benchmarks use this to replay exactly the products a step makes. */
void ag_sgemm_trace(ag_sgemm_call *buf, size_t cap);

/* Calls seen since ag_sgemm_trace started (may exceed its cap). */
size_t ag_sgemm_trace_count(void);

void ag_sgemm_profile(bool enabled);
ag_sgemm_stats ag_sgemm_stats_get(void);
void ag_sgemm_stats_reset(void);

/* Spin-then-sleep join at the end of a parallel region.
 *
 * With OMP_WAIT_POLICY=PASSIVE (what the scripts set: spinning threads hurt a
 * shared machine) a thread that reaches the end of a region before the others
 * sleeps in a futex, and the last one to arrive has to wake it: on this VM a
 * sleeping virtual CPU takes tens of microseconds to come back, paid at the
 * end of every region by the master, on the step's critical path. libgomp
 * reads its wait policy once at start-up, so pare cannot change it; instead
 * every thread calls ag_region_join(&j) as the last statement of the region
 * (after `omp for nowait` loops), with `ag_join j = {0};` declared before it.
 * Thread 0 then spins (with pause) until all threads have arrived or
 * AG_JOIN_SPIN_NS has passed, and only then enters the implicit barrier,
 * arriving last: it does not sleep. The other threads enter the barrier at
 * once and sleep as before. The implicit barrier still does the real join,
 * so nothing about the results changes; the spin is bounded, so on a busy
 * machine the master falls back to sleeping after a few tens of
 * microseconds. */
typedef struct ag_join {
    int arrived; /* threads done, updated atomically */
} ag_join;

#define AG_JOIN_SPIN_NS 100000

void ag_region_join(ag_join *j);

/* Monotonic wall-clock time in seconds. */
double ag_now(void);

/* The BLAS library's own description (for example "OpenBLAS 0.3.21 ... OpenMP"). */
const char *ag_blas_info(void);

#endif
