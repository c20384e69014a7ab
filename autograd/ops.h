/* ops.h - every differentiable op of the engine.
 *
 * Each op makes its output in the context's arena and, when a gradient is
 * needed, records a tape node whose backward *accumulates* into the inputs'
 * grads. Forward and backward of an op sit side by side in one ops_*.c file;
 * adding an op means writing that pair, declaring it here, and adding it to
 * the gradient-check table in tests/test_gradcheck.c.
 *
 * Conventions: outputs first in kernels; shapes in comments use B = batch,
 * T = time, C = channels, H = heads, D = head size (C / H), V = vocabulary,
 * N = rows. Every op returns NULL if any tensor input is NULL or memory runs
 * out (see tape.h); shape mismatches are programming errors and assert.
 */
#ifndef PARE_AG_OPS_H
#define PARE_AG_OPS_H

#include <stdint.h>

#include "tape.h"

/* ---- linear algebra (ops_matmul.c) ---- */

/* out = op(a) op(b). a is [..., M, K] (or [..., K, M] with ta); b is [K, N]
 * (or [N, K] with tb), or has a's leading dimensions for a batched product.
 * With 2-D b and no ta, a's leading dimensions are folded into M (one sgemm).
 * out: [..., M, N]. */
ag_tensor *ag_matmul(ag_ctx *c, ag_tensor *a, ag_tensor *b, bool ta, bool tb);

/* out[N, Cout] = x[N, Cin] w[Cout, Cin]^T + bias[Cout] (bias may be NULL).
 * x may have any leading dimensions; out keeps them. The layer every model
 * linear uses (PyTorch's weight layout). */
ag_tensor *ag_linear(ag_ctx *c, ag_tensor *x, ag_tensor *w, ag_tensor *bias);

/* ---- elementwise (ops_elementwise.c) ---- */

/* out = a + b. b has a's shape, or the shape of a's trailing dimensions
 * (a bias [C] over [B, T, C], positions [T, C] over [B, T, C]). */
ag_tensor *ag_add(ag_ctx *c, ag_tensor *a, ag_tensor *b);

/* out = a * b elementwise, with the same broadcasting as ag_add. */
ag_tensor *ag_mul(ag_ctx *c, ag_tensor *a, ag_tensor *b);

/* out = s * a. */
ag_tensor *ag_scale(ag_ctx *c, ag_tensor *a, float s);

/* out = GELU(a), tanh form: 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3))). */
ag_tensor *ag_gelu(ag_ctx *c, ag_tensor *a);

/* A view of a with another shape of the same numel; gradients flow through
 * the shared memory, so no tape node is needed. */
ag_tensor *ag_reshape(ag_ctx *c, ag_tensor *a, int ndim, const int *shape);

/* ---- embedding and normalisation (ops_nn.c) ---- */

/* out[..., C] = table[ids[...], :]. ids has ndim dimensions of the given
 * shape; each id must be in [0, V). An id out of range is input, not a bug:
 * the op sets the error (naming the id and position) and returns NULL. */
ag_tensor *ag_embedding(ag_ctx *c, ag_tensor *table, const int *ids, int ndim, const int *shape);

/* Layer norm over the last dimension: (x - mean) / sqrt(var + eps) * w + b.
 * w and b are [C]; b may be NULL (a model without biases). */
ag_tensor *ag_layernorm(ag_ctx *c, ag_tensor *x, ag_tensor *w, ag_tensor *b, float eps);

/* Softmax over the last dimension. */
ag_tensor *ag_softmax(ag_ctx *c, ag_tensor *x);

/* ---- attention (ops_attention.c) ---- */

/* Takes channel block `part` of `nparts` from x[B, T, nparts*C] and lays it
 * out as heads: out[B, H, T, C/H]. With nparts = 3 and part 0, 1, 2 this
 * splits a fused qkv projection into q, k and v. */
ag_tensor *ag_split_heads(ag_ctx *c, ag_tensor *x, int n_head, int part, int nparts);

/* The inverse layout: y[B, H, T, D] -> out[B, T, H*D]. */
ag_tensor *ag_merge_heads(ag_ctx *c, ag_tensor *y);

/* Causal attention probabilities: P[B, H, T, T] = softmax(q k^T / sqrt(D))
 * with P[.., i, j] = 0 for j > i. P is an ordinary tensor: a distillation
 * loss may read it and send gradient into it. */
ag_tensor *ag_attn_probs(ag_ctx *c, ag_tensor *q, ag_tensor *k);

/* out[B, H, T, D] = P[B, H, T, T] v[B, H, T, D]. P is taken as causal: its
 * entries above the diagonal are never read (treated as 0) and get no
 * gradient. The product skips the masked upper triangle. */
ag_tensor *ag_attn_apply(ag_ctx *c, ag_tensor *P, ag_tensor *v);

/* attn_probs read straight from a fused qkv [B, T, 3C] (q = columns [0, C),
 * k = [C, 2C), each split into n_head heads of C/n_head): the same P
 * [B, H, T, T] as attn_probs(split_heads(qkv, H, 0, 3), split_heads(qkv, H,
 * 1, 3)) without the copies; the backward adds into qkv's gradient. n_head
 * must divide C and 3 must divide qkv's last dimension. */
ag_tensor *ag_attn_probs_qkv(ag_ctx *c, ag_tensor *qkv, int n_head);

/* merge_heads(attn_apply(P, split_heads(qkv, H, 2, 3))) in one op: v read
 * from columns [2C, 3C) of qkv [B, T, 3C], out [B, T, C]; H = P->shape[1].
 * P is taken as causal as in attn_apply. */
ag_tensor *ag_attn_apply_merge(ag_ctx *c, ag_tensor *P, ag_tensor *qkv);

/* attn_apply_merge(attn_probs_qkv(qkv, H), qkv) as one op, for a caller
 * that does not read P: out [B, T, C] from the fused qkv [B, T, 3C]. P is
 * kept in the node's own buffer, not as a tensor with a gradient, so the
 * backward needs no P gradient (no zeroing, no round trip through memory):
 * per head, on one thread, dP = dout v^T into a scratch row block, dv, then
 * dS in place and dq, dk. Forward and backward each run in one parallel
 * region over the heads. Same bits as the two-op composition (tested). Where
 * the direct per-head kernels are not used (ag_attn_direct(D) false: no
 * AVX-512F, or D not 16/32/48/64) it records the two ops instead. */
ag_tensor *ag_attention_qkv(ag_ctx *c, ag_tensor *qkv, int n_head);

/* Both of the above; if probs is not NULL, *probs receives P (an arena
 * tensor like any other, NULL on error). The kernels run in parallel over the
 * B*H heads and give the same bits for any thread count. */
ag_tensor *ag_attention(ag_ctx *c, ag_tensor *q, ag_tensor *k, ag_tensor *v, ag_tensor **probs);

/* ---- losses and reductions (ops_loss.c) ---- */

/* Mean over rows of -log softmax(logits)[target] for logits [..., V] and
 * targets [rows]; rows whose target equals ignore_index are left out of the
 * sum and the count. A target outside [0, V) other than ignore_index sets the
 * error and returns NULL. out: scalar [1]. If every row is ignored the loss
 * is 0 and no gradient flows. */
ag_tensor *ag_cross_entropy(ag_ctx *c, ag_tensor *logits, const int *targets, int ignore_index);

/* Knowledge distillation (Hinton et al. 2015): with p = softmax(teacher/tau)
 * and q = softmax(student/tau), out = tau^2 * mean over rows of
 * sum_v p_v (log p_v - log q_v). Both inputs [..., V]. out: scalar. */
ag_tensor *ag_kl_div(ag_ctx *c, ag_tensor *student, ag_tensor *teacher, float tau);

/* KL between probability rows (attention distillation, MiniLM): with p the
 * teacher's rows and q the student's (both [..., T], each row summing to 1,
 * zeros where masked), out = mean over rows of sum_{p_j > 0} p_j (log p_j -
 * log q_j); q is floored at FLT_MIN. out: scalar. */
ag_tensor *ag_prob_kl(ag_ctx *c, ag_tensor *p_student, ag_tensor *p_teacher);

/* Mean squared error: mean((a - b)^2). out: scalar. */
ag_tensor *ag_mse(ag_ctx *c, ag_tensor *a, ag_tensor *b);

/* L1 norm: sum |a|. The gradient at exactly 0 is 0. out: scalar. */
ag_tensor *ag_l1(ag_ctx *c, ag_tensor *a);

/* Sum and mean of all elements (accumulated in double). out: scalar. */
ag_tensor *ag_sum(ag_ctx *c, ag_tensor *a);
ag_tensor *ag_mean(ag_ctx *c, ag_tensor *a);

/* ---- fake quantization (ops_quant.c) ---- */

/* How ag_fake_quant quantizes and what its backward is (formulas in ops_quant.c). */
typedef enum ag_fq_mode {
    AG_FQ_STE = 0,  /* straight-through estimator with clipping (PyTorch's fake_quantize_*_affine); p: the scales */
    AG_FQ_LSQ = 1,  /* learned step size (Esser et al. 2020): p is trainable and gets the paper's gradient */
    AG_FQ_PACT = 2, /* learned clipping level (Choi et al. 2018), symmetric: p is alpha, the scale alpha / hi */
} ag_fq_mode;

typedef struct ag_fq {
    int lo, hi;           /* the code range (compress/grid.h's grids); PACT: lo = -hi */
    int group;            /* consecutive elements sharing one scale: element i uses scale i / group (or the one
                           * scale when p has one value); divides x's numel */
    const int32_t *zero;  /* zero points, one per scale (copied), or NULL: 0 (PACT: NULL) */
    int mode;             /* ag_fq_mode */
    float grad_scale;     /* LSQ: the scale's gradient is multiplied by this (1 / sqrt(N Qp)) */
    int8_t *codes;        /* if not NULL: receives the codes q[numel] (zero point included) */
    size_t *clipped;      /* if not NULL: receives how many elements the grid clipped (their rounded value, or
                           * for PACT the value itself, outside the grid) */
    float *fcodes;        /* if not NULL: receives q - z [numel] as floats (integer products through sgemm) */
} ag_fq;

/* out = (clamp(nearbyint(x * (1 / s)) + z, lo, hi) - z) * s, elementwise,
 * with s and z of the element's group (compress/grid.h's rule: PyTorch's
 * fake quantization bit for bit). p holds the scales (STE, LSQ) or the
 * clipping levels alpha (PACT: s = alpha / hi), one value or x->numel /
 * group values, each finite and > 0 (else the error names x, p and the
 * value, and NULL is returned). Backward: STE, LSQ or PACT as above. */
ag_tensor *ag_fake_quant(ag_ctx *c, ag_tensor *x, ag_tensor *p, const ag_fq *q);

#endif
