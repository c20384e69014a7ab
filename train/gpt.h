/* gpt.h - a GPT-style decoder written as autograd ops.
 *
 * The model (Radford et al. 2019, "Language Models are Unsupervised Multitask
 * Learners"; layout as in nanoGPT):
 *
 *   x = wte[ids] + wpe[0..T)                                    [B, T, C]
 *   for each layer l:
 *     a = ln1(x);  q, k, v = split(a Wqkv^T + bqkv)              [B, H, T, D] each
 *     x = x + merge(softmax(q k^T / sqrt(D), causal) v) Wproj^T + bproj
 *     m = ln2(x);  x = x + gelu(m Wfc^T + bfc) Wmproj^T + bmproj
 *   logits = lnf(x) Whead^T                                      [B, T, V]
 *
 * with C = n_embd, H = n_head, D = C / H, M = mlp_ratio * C hidden units,
 * V = vocab and T <= ctx. Layer norms are pre-norm (before each sub-block),
 * with eps 1e-5. With bias off, linears and layer norms have no bias. The LM
 * head is its own matrix by default; with tied it reuses wte.
 *
 * Parameters: all in one ag_params (data, grad, m, v are parallel flat
 * buffers), declared in this order with these names and shapes:
 *
 *   wte                [V, C]      token embedding              decay
 *   wpe                [ctx, C]    position embedding           decay
 *   for l = 0 .. n_layer-1:
 *   h.l.ln1.w          [C]         layer norm 1 gain            no decay
 *   h.l.ln1.b          [C]         (bias only)                  no decay
 *   h.l.attn.qkv.w     [3C, C]     fused q,k,v projection       decay
 *   h.l.attn.qkv.b     [3C]        (bias only)                  no decay
 *   h.l.attn.proj.w    [C, C]      attention output projection  decay  (residual)
 *   h.l.attn.proj.b    [C]         (bias only)                  no decay
 *   h.l.ln2.w          [C]                                      no decay
 *   h.l.ln2.b          [C]         (bias only)                  no decay
 *   h.l.mlp.fc.w       [M, C]      MLP expansion                decay
 *   h.l.mlp.fc.b       [M]         (bias only)                  no decay
 *   h.l.mlp.proj.w     [C, M]      MLP output projection        decay  (residual)
 *   h.l.mlp.proj.b     [C]         (bias only)                  no decay
 *   lnf.w              [C]         final layer norm             no decay
 *   lnf.b              [C]         (bias only)                  no decay
 *   lm_head.w          [V, C]      (untied only)                decay
 *
 * Linear weights use PyTorch's [out, in] layout (ag_linear). The qkv rows are
 * q (rows 0..C), then k (C..2C), then v (2C..3C); within each, head h owns
 * rows h*D .. (h+1)*D. "decay" is optimizer group TR_GROUP_DECAY (weight
 * decay applies), the rest TR_GROUP_NO_DECAY: as nanoGPT does, every
 * parameter with 2 or more dimensions (matrices and both embeddings) decays,
 * 1-D ones (gains and biases) do not.
 *
 * Initialisation (GPT-2): every matrix and embedding ~ N(0, 0.02), the two
 * residual projections (attn.proj.w, mlp.proj.w) ~ N(0, 0.02 / sqrt(2 n_layer)),
 * biases 0, layer norm gains 1. One ag_rng seeded with the given seed draws
 * the tensors in declaration order.
 */
#ifndef PARE_TR_GPT_H
#define PARE_TR_GPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/ops.h"
#include "autograd/params.h"

enum { TR_GROUP_DECAY = 0, TR_GROUP_NO_DECAY = 1 };

#define TR_GPT_LN_EPS 1e-5f
#define TR_GPT_INIT_STD 0.02f

typedef struct tr_gpt_config {
    int n_layer;   /* blocks, >= 1 */
    int n_head;    /* heads per block; divides n_embd */
    int n_embd;    /* width C */
    int mlp_ratio; /* MLP hidden units = mlp_ratio * n_embd */
    int ctx;       /* longest sequence (rows of wpe) */
    int vocab;     /* V, 2 .. 1<<24 */
    bool bias;     /* biases in linears and layer norms */
    bool tied;     /* LM head shares wte */
} tr_gpt_config;

/* Indices into the parameter set of one block's tensors (-1 when absent). */
typedef struct tr_gpt_layer {
    int ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b;
    int ln2_w, ln2_b, fc_w, fc_b, mproj_w, mproj_b;
} tr_gpt_layer;

typedef struct tr_gpt {
    tr_gpt_config cfg;
    ag_params params;     /* every tensor, named as above */
    int wte, wpe, lnf_w, lnf_b, lm_head; /* indices; lm_head == wte when tied; lnf_b -1 without bias */
    tr_gpt_layer *layer;  /* [n_layer] */
} tr_gpt;

/* A default configuration (the README's student-ish size): 2 layers, 4 heads,
 * width 64, MLP ratio 4, ctx 64, vocab 256, bias on, untied. */
tr_gpt_config tr_gpt_config_default(void);

/* Checks a configuration: every size positive, n_head divides n_embd, sizes
 * small enough that no shape or parameter count overflows an int/size_t.
 * Returns 0, or -1 with a message in err naming the field and what was
 * expected. */
int tr_gpt_config_check(const tr_gpt_config *cfg, char *err, size_t errlen);

/* Number of parameters (without padding) a configuration has. */
size_t tr_gpt_config_numel(const tr_gpt_config *cfg);

/* Declares the parameters of cfg, in the order and with the names above, into
 * an initialised, not yet allocated ag_params p (for readers of model files
 * that want the same names). If idx is not NULL it receives the indices.
 * Returns 0, or -1 (message in err) on a bad config or out of memory. */
int tr_gpt_declare(const tr_gpt_config *cfg, ag_params *p, tr_gpt *idx, char *err, size_t errlen);

/* Builds the model: checks cfg, declares and allocates the parameters with
 * ag_params flags (AG_PARAMS_GRAD for training, AG_PARAMS_MOMENTS for AdamW;
 * 0 for a frozen teacher), all zero. Returns 0, or -1 with err set (config
 * error or out of memory; m is then freed). The caller frees m with
 * tr_gpt_free. */
int tr_gpt_init(tr_gpt *m, const tr_gpt_config *cfg, int flags, char *err, size_t errlen);

/* Frees the parameters and index arrays. m may be NULL. */
void tr_gpt_free(tr_gpt *m);

/* GPT-2 initialisation of every parameter (see above), from `seed`. */
void tr_gpt_init_weights(tr_gpt *m, uint64_t seed);

/* Optional extras of a forward pass. Zero-initialise and set what you need. */
typedef struct tr_gpt_fwd {
    /* If not NULL: [n_layer] pointers, each receiving layer l's attention
     * probabilities P[B, H, T, T] (differentiable; for attention distillation). */
    ag_tensor **probs;
    /* If not NULL: [n_layer + 1] pointers, receiving the residual stream x
     * [B, T, C] after the embeddings (0) and after each block (l + 1). */
    ag_tensor **hidden;
    /* If not NULL: called for every parameter the forward reads, with its
     * index, before it is used; returns the tensor to use instead (a
     * fake-quantised or masked weight made with ops, so gradients flow back),
     * or w itself. Returning NULL fails the forward. */
    ag_tensor *(*weight)(void *user, ag_ctx *c, int index, ag_tensor *w);
    void *user;
} tr_gpt_fwd;

/* Runs the model on ids[B*T] (row-major [B, T], each in [0, vocab), T <= ctx)
 * and returns logits [B, T, V] in c's arena (recorded on the tape when grad
 * mode is on). opt may be NULL. Returns NULL on error with the message in
 * ag_error(c): an id out of range (named with its position), T > ctx, or out
 * of memory. */
ag_tensor *tr_gpt_forward(ag_ctx *c, tr_gpt *m, const int *ids, int B, int T, const tr_gpt_fwd *opt);

#endif
