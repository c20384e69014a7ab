/* ops_internal.h - helpers shared by the ops_*.c files (not public API).
 *
 * Both helpers are deterministic: their result does not depend on the number
 * of threads, because the work is cut into blocks of a fixed size and every
 * block's sum is formed by one thread in index order.
 */
#ifndef PARE_AG_OPS_INTERNAL_H
#define PARE_AG_OPS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

/* Loops over fewer elements than this stay serial. Waking the second thread
 * (OMP_WAIT_POLICY=PASSIVE, a futex wake and a sleep at the join) costs tens
 * of microseconds here, about what one thread needs for an elementwise pass
 * over 2^17..2^18 floats; docs/performance.md has the measurement (1 << 15
 * before: the nanoGPT-baseline shapes, 768 x 128, then ran 3% slower). */
#define AG_PAR_MIN ((size_t)1 << 18)

/* Columns per block in column-parallel reductions (bias-like gradients). */
#define AG_COL_BLOCK 64

/* Elements per block in ag_sum_blocks. */
#define AG_SUM_BLOCK ((size_t)1 << 14)

/* db[j] += sum over r of g[r, j] (times x[r, j] if x is not NULL), for g and x
 * [rows, cols]. Each column is summed in row order, in double. */
void ag_colsum_add(float *db, const float *g, const float *x, size_t rows, size_t cols);

/* The part of ag_colsum_add that thread t of nt does (its contiguous run of
 * AG_COL_BLOCK-column blocks; possibly none), with the same bits: every
 * column is still one sum in row order. For use inside a parallel region in
 * which every thread calls it with the same arguments and its own t. */
void ag_colsum_add_share(float *db, const float *g, const float *x, size_t rows, size_t cols, int t, int nt);

/* Whether float ranges a[0..na) and b[0..nb) share memory (NULL: no). */
static inline bool ag_overlaps(const float *a, size_t na, const float *b, size_t nb) {
    return a && b && a < b + nb && b < a + na;
}

/* What ag_sum_blocks adds up, element by element. */
typedef enum { AG_RED_SUM, AG_RED_ABS, AG_RED_SQDIFF, AG_RED_SQ } ag_red_kind;

/* Sum over i < n of a[i], |a[i]|, (a[i] - b[i])^2 or a[i]^2, in double:
 * blocks of AG_SUM_BLOCK elements in parallel (each in 8 lanes, i mod 8, the
 * lanes added pairwise, then the tail), then the block sums in order. */
double ag_sum_blocks(ag_red_kind kind, const float *a, const float *b, size_t n);

/* y[N, C] = softmax of each row of x[N, C] (max subtracted, sum in double).
 * y may not alias x. */
void ag_softmax_rows(float *y, const float *x, size_t N, int C);

#endif
