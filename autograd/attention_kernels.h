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
