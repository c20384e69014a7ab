/* attention_kernels.h - the raw kernels behind the attention ops (internal).
 *
 * ops_attention.c wraps these in tape ops; tests/test_attention.c calls them
 * directly to compare the fast kernels with the naive references. Everything
 * works on BH = B*H independent heads laid out one after another:
 *   q, k, v, out, dq, dk, dv: [BH, T, D]      P, dP: [BH, T, T]
 * scale is 1/sqrt(D) in the ops.
 *
 * Causality: P[.., i, j] for j > i is zero. attn_probs writes those zeros;
 * attn_apply never reads them (a P given from outside is treated as if they
 * were zero) and neither backward writes gradient there. Every backward
 * *adds* into its outputs.
 *
 * The fast kernels run `#pragma omp parallel for` over the BH heads, each head
 * by one thread with its products through ag_sgemm; the result of each head
 * is independent of which thread ran it, so the output does not depend on the
 * thread count. The references are plain loops accumulating in double.
 */
#ifndef PARE_AG_ATTENTION_KERNELS_H
#define PARE_AG_ATTENTION_KERNELS_H

#include <stdbool.h>
#include <stddef.h>

/* Rows of P handled per block in the fast kernels: a block of rows [i0, i1)
 * only needs columns [0, i1), so about 5/8 of the T x T products are done at
 * T = 256 instead of all of them. */
#define AG_ATTN_BLOCK 64

/* Floats of scratch the fast probs backward needs per thread. */
static inline size_t ag_attn_scratch_floats(int T) {
    return (size_t)(T < AG_ATTN_BLOCK ? T : AG_ATTN_BLOCK) * (size_t)T;
}

/* ---- fast kernels (ag_sgemm, parallel over heads) ---- */

/* P = causal softmax(scale q k^T). */
void ag_attn_probs_fwd(float *P, const float *q, const float *k, int BH, int T, int D, float scale);

/* dq += scale dS k, dk += scale dS^T q, with the row form of the softmax
 * backward dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik) for j <= i.
 * scratch: [nthreads * ag_attn_scratch_floats(T)], nthreads >= the number of
 * threads of the parallel region (the loop runs with at most nthreads). */
void ag_attn_probs_bwd(float *dq, float *dk, const float *dP, const float *P, const float *q,
                       const float *k, int BH, int T, int D, float scale, float *scratch,
                       int nthreads);

/* out = P v (P's upper triangle taken as zero). */
void ag_attn_apply_fwd(float *out, const float *P, const float *v, int BH, int T, int D);

/* dP += dout v^T (lower triangle only), dv += P^T dout. Either of dP, dv may
 * be NULL. */
void ag_attn_apply_bwd(float *dP, float *dv, const float *dout, const float *P, const float *v,
                       int BH, int T, int D);

/* ---- direct per-head products (attn_direct.c) ---- */

/* Whether the attention kernels above compute their per-head products q k^T,
 * P v, dout v^T, dS k, dS^T q and P^T dout with the direct kernels below (head width D of
 * 16, 32, 48 or 64 on a CPU with AVX-512F) rather than through ag_sgemm. The
 * choice is made per call from D and the CPU, so it is the same for every run
 * on one machine; the two paths differ in the last bits (another summation
 * order). */
bool ag_attn_direct(int D);

/* Tests: false makes ag_attn_direct return false (the ag_sgemm path) until
 * called again with true. Not thread-safe; call between steps. */
void ag_attn_direct_set(bool enabled);

/* C[r, 0:D] = (or +=, when acc) sum over k < lim(r) of A[r, k] B[k, 0:D] for
 * r < m, where lim(r) = K when diag < 0, else min(K, r + diag + 1) (the
 * causal bound: row r of a block starting at row diag of the head). Row
 * strides lda, ldb, ldc. Each element is one sum in increasing k of fused
 * multiply-adds from 0, then stored or added to C: ag_attn_nn_ref's bits.
 * The fast path needs D in {16, 32, 48, 64} and AVX-512F, else it runs the
 * reference. */
void ag_attn_nn(int D, int m, int K, int diag, const float *A, int lda, const float *B, int ldb, bool acc,
                float *C, int ldc);

/* C[j, 0:D] += sum over s(j) <= r < m of A[r, j] B[r, 0:D] for j < n (A read
 * transposed), where s(j) = 0 when diag < 0, else max(0, j - diag) (rows at
 * or below the diagonal). Same order and bits as ag_attn_tn_ref. */
void ag_attn_tn(int D, int n, int m, int diag, const float *A, int lda, const float *B, int ldb, float *C,
                int ldc);

/* C[r, j] = alpha sum_d A[r, d] B[j, d] (+ C[r, j], when acc) for r < m and
 * j < lim(r), lim as in ag_attn_nn with K = n: B read transposed (q k^T,
 * dout v^T). Each element is one sum over d in increasing order of fused
 * multiply-adds from 0, times alpha, then stored or added; elements past
 * lim(r) are not touched. Same bits as ag_attn_nt_ref. */
void ag_attn_nt(int D, int m, int n, int diag, float alpha, const float *A, int lda, const float *B, int ldb,
                bool acc, float *C, int ldc);

/* The scalar references of the three above (fmaf in the same order). */
void ag_attn_nn_ref(int D, int m, int K, int diag, const float *A, int lda, const float *B, int ldb,
                    bool acc, float *C, int ldc);
void ag_attn_tn_ref(int D, int n, int m, int diag, const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc);
void ag_attn_nt_ref(int D, int m, int n, int diag, float alpha, const float *A, int lda, const float *B,
                    int ldb, bool acc, float *C, int ldc);

/* ---- naive references (plain loops, double accumulation, one thread) ---- */

void ag_attn_probs_fwd_ref(float *P, const float *q, const float *k, int BH, int T, int D,
                           float scale);
/* Returns 0, or -1 when its T doubles of workspace cannot be allocated. */
int ag_attn_probs_bwd_ref(float *dq, float *dk, const float *dP, const float *P, const float *q,
                          const float *k, int BH, int T, int D, float scale);
void ag_attn_apply_fwd_ref(float *out, const float *P, const float *v, int BH, int T, int D);
void ag_attn_apply_bwd_ref(float *dP, float *dv, const float *dout, const float *P,
                           const float *v, int BH, int T, int D);

#endif
