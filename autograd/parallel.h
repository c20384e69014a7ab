/* parallel.h - one thread pool for everything, and the sgemm every op calls.
 *
 * pare links the OpenMP build of OpenBLAS and parallelises its own loops with
 * OpenMP, so BLAS and our kernels share one pool of threads (libgomp's) rather
 * than two pools spinning against each other. docs/architecture.md has the
 * measurements behind that choice.
 *
 * Determinism: every parallel loop in pare splits work into units fixed by
 * the shapes (never by the thread count), each output element computed by one
 * unit in a fixed order; threads only choose which units they take. So the
 * same seed gives the same bits at any thread count (on a given OpenBLAS
 * kernel: docs/threading.md says what differs between kernels).
 */
#ifndef PARE_AG_PARALLEL_H
#define PARE_AG_PARALLEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sets the number of threads of pare's OpenMP loops (n >= 1; OpenBLAS is
 * held at one thread: pare shares out the units of its products itself). */
void ag_set_threads(int n);
int ag_get_threads(void);

/* C[M,N] = alpha * op(A) op(B) + beta * C, row-major, through cblas_sgemm.
 * ta/tb transpose A/B; lda/ldb/ldc are row strides. Every matrix product in
 * pare goes through here (or ag_sgemm_whole) so the profiler below sees all
 * of them.
 *
 * Units and threads. OpenBLAS's result for an element of C depends on the
 * shape of the call that computes it (its kernels treat the last rows and
 * columns of a call, and blocks of different widths, with different code:
 * docs/threading.md shows it), so splitting one product by the number of
 * threads would change the bits with the thread count. Instead a product is
 * cut into units by its shape alone (ag_sgemm_units), each unit is always one
 * single-threaded cblas call, and threads only decide who computes which
 * unit. Outside a parallel region the units are shared over the pool (a
 * thread that wakes late finds the units claimed); inside one (or with one
 * thread) the caller computes them in order. Either way every element of C
 * comes from the same call: the same bits at any thread count, on every
 * OpenBLAS kernel. OpenBLAS itself always runs on one thread (ag_set_threads
 * holds it there); all parallelism is pare's. */
void ag_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);

/* The same product as exactly one single-threaded cblas call, whatever its
 * size: for callers inside their own parallel loops that always compute a
 * product whole (attention's per-head products), so that the bits depend only
 * on the shape there too. */
void ag_sgemm_whole(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc);

/* Units are whole multiples of this many rows or columns (the last unit takes
 * the rest). */
#define AG_SPLIT_ALIGN 16

/* How a product is cut (a function of M, N and K only, never of the thread
 * count): below 8 MFLOP (2 M N K), or when the larger of M and N is under
 * 2 AG_SPLIT_ALIGN, one unit; otherwise along the larger of M (rows of C) and
 * N (columns of C, when N > M) into 2, 4, 8 or 16 units (one per 512 rows or
 * columns, rounded down to a power of two so that 1, 2, 4, ... threads share
 * them evenly), each a multiple of AG_SPLIT_ALIGN. Fewer, larger units cost
 * less: every unit repacks the operand it does not split (docs/threading.md
 * has the measurements). */
typedef struct ag_units {
    char dim;  /* 'M', 'N', or 0 (one unit: the whole product) */
    int size;  /* rows ('M') or columns ('N') per unit; the last may be smaller */
    int count; /* units, >= 1 */
} ag_units;

ag_units ag_sgemm_units(int M, int N, int K);

/* One product's arguments, for ops that put several products (and their own
 * loops) into one parallel region and share out their units themselves. */
typedef struct ag_gemm {
    bool ta, tb;
    int M, N, K;
    float alpha;
    const float *A;
    int lda;
    const float *B;
    int ldb;
    float beta;
    float *C;
    int ldc;
} ag_gemm;

/* The rows ('M') or columns ('N') [*r0, *r1) that unit i of u covers in an
 * extent of `extent` (M or N); the whole extent for a one-unit product. */
void ag_unit_range(ag_units u, int extent, int i, int *r0, int *r1);

/* Computes unit i (0 <= i < u.count, u = ag_sgemm_units of g's shape) of
 * product g: one single-threaded cblas call, from any thread. Computing every
 * unit once, in any order and on any threads, is ag_sgemm(g). */
void ag_gemm_unit(const ag_gemm *g, ag_units u, int i);

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
