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
 * buffers), one per tensor of the model's table (model/arch.h: names,
 * shapes, order and initialisation are defined there, once, for training,
 * checkpoints, export, the model file and the runtime). Parameter i is table
 * tensor i. Matrices and embeddings (2-D) are in optimizer group
 * TR_GROUP_DECAY (weight decay applies, as nanoGPT does), gains and biases
 * in TR_GROUP_NO_DECAY.
 *
 * Layers may differ in heads and MLP width, and linear sites may be
 * factorized (W = U V): a structurally pruned or factorized model trains and
 * runs like any other (tr_gpt_init_arch). pare train builds uniform ones
 * from the keys (tr_gpt_config).
 *
 * Initialisation (GPT-2): every matrix and embedding ~ N(0, 0.02), the two
 * residual projections (attn.proj.w, mlp.proj.w) ~ N(0, 0.02 / sqrt(2 n_layer)),
 * biases 0, layer norm gains 1. One ag_rng seeded with the given seed draws
 * the tensors in table order.
 *
 * The forward's hook point is the linear site (tr_gpt_fwd.linear): every
 * matrix product of a linear site (x W^T + b, or x V^T then U^T + b for a
 * factorized one) goes through it, so weight and activation fake
 * quantization, low-rank factors and activation observers wrap one place.
 */
#ifndef PARE_TR_GPT_H
#define PARE_TR_GPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/ops.h"
#include "autograd/params.h"
#include "model/arch.h"

enum { TR_GROUP_DECAY = 0, TR_GROUP_NO_DECAY = 1 };

#define TR_GPT_LN_EPS 1e-5f
#define TR_GPT_INIT_STD 0.02f

/* The uniform configuration the command line describes (every layer alike). */
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

/* One block's sites (indices into the model's table). */
typedef struct tr_gpt_layer {
    int ln1, qkv, proj, ln2, fc, mproj;
} tr_gpt_layer;

typedef struct tr_gpt {
    pm_arch arch;         /* the model's shape (owned) */
    pm_table table;       /* its sites and tensors (owned); tensor i is parameter i */
    ag_params params;     /* every tensor, named as in the table */
    int wte, wpe, lnf, head; /* model-level sites */
    tr_gpt_layer *layer;  /* [n_layer] */
} tr_gpt;

/* The default configuration: the model keys' defaults (train/keys.c: 4
 * layers, 4 heads, width 128, MLP ratio 4, bias on, untied, ctx 0 = the
 * data's own, which a caller must set), vocab 256. */
tr_gpt_config tr_gpt_config_default(void);

/* Checks a configuration: every size positive, n_head divides n_embd, sizes
 * small enough that no shape or parameter count overflows an int/size_t.
 * Returns 0, or -1 with a message in err naming the field and what was
 * expected. */
int tr_gpt_config_check(const tr_gpt_config *cfg, char *err, size_t errlen);

/* Number of parameters (without padding) a configuration has. */
size_t tr_gpt_config_numel(const tr_gpt_config *cfg);

/* The architecture of a uniform configuration (owned arrays; pm_arch_free).
 * Returns 0, or -1 with err (a bad configuration, out of memory). */
int tr_gpt_config_arch(const tr_gpt_config *cfg, pm_arch *a, char *err, size_t errlen);

/* Builds the model of a checked uniform configuration: declares and
 * allocates the parameters with ag_params flags (AG_PARAMS_GRAD for
 * training, AG_PARAMS_MOMENTS for AdamW; 0 for a frozen teacher), all zero.
 * Returns 0, or -1 with err set (config error or out of memory; m is then
 * freed). The caller frees m with tr_gpt_free. */
int tr_gpt_init(tr_gpt *m, const tr_gpt_config *cfg, int flags, char *err, size_t errlen);

/* The same for any architecture (per-layer heads and widths, factorized
 * sites); a is copied. */
int tr_gpt_init_arch(tr_gpt *m, const pm_arch *a, int flags, char *err, size_t errlen);

/* Frees the parameters, table and arch. m may be NULL. */
void tr_gpt_free(tr_gpt *m);

/* GPT-2 initialisation of every parameter (see above), from `seed`. */
void tr_gpt_init_weights(tr_gpt *m, uint64_t seed);

/* The parameter holding table tensor i (i >= 0). */
static inline ag_tensor *tr_gpt_param(tr_gpt *m, int i) { return ag_param(&m->params, i); }

/* Optional extras of a forward pass. Zero-initialise and set what you need. */
typedef struct tr_gpt_fwd {
    /* If not NULL: [n_layer] pointers, each receiving layer l's attention
     * probabilities P[B, H, T, T] (differentiable; for attention distillation). */
    ag_tensor **probs;
    /* If not NULL: [n_layer + 1] pointers, receiving the residual stream x
     * [B, T, C] after the embeddings (0) and after each block (l + 1). */
    ag_tensor **hidden;
    /* If not NULL: [n_layer] pointers, receiving each layer's qkv projection
     * [B, T, 3A] (q, k, v of every head; for value-relation distillation). */
    ag_tensor **qkv;
    /* If not NULL: computes every matrix product of a linear site instead of
     * ag_linear(c, x, w, b): part is PM_W for a dense site, PM_V (x V^T, no
     * bias) then PM_U (h U^T + b) for a factorized one. Returns the output
     * (made with ops, so gradients flow), or NULL to fail the forward. */
    ag_tensor *(*linear)(void *user, ag_ctx *c, const pm_site *site, pm_part part, ag_tensor *x, ag_tensor *w,
                         ag_tensor *b);
    void *user;
} tr_gpt_fwd;

/* Runs the model on ids[B*T] (row-major [B, T], each in [0, vocab), T <= ctx)
 * and returns logits [B, T, V] in c's arena (recorded on the tape when grad
 * mode is on). opt may be NULL. Returns NULL on error with the message in
 * ag_error(c): an id out of range (named with its position), T > ctx, or out
 * of memory. */
ag_tensor *tr_gpt_forward(ag_ctx *c, tr_gpt *m, const int *ids, int B, int T, const tr_gpt_fwd *opt);

/* About how many bytes of activations one forward of B sequences of T
 * tokens keeps (training: with their gradients and what the backward saves,
 * about three times as much): the embeddings, each layer's norms, products,
 * attention probabilities [H, T, T] and MLP, the logits. An estimate (within
 * a factor of about 2) for refusing a batch the machine cannot hold before
 * the operating system kills the process for it. */
double tr_gpt_step_bytes(const pm_arch *a, int B, int T, bool training);

/* Checks that tr_gpt_step_bytes fits in this machine's physical memory.
 * Returns 0, or -1 with err naming the batch, the estimate and the memory
 * ("--batch 1048576 x 17 tokens: about 31 GB of activations, this machine
 * has 24 GB: expected a smaller --batch"). */
int tr_gpt_check_batch(const pm_arch *a, int B, int T, bool training, char *err, size_t errlen);

#endif
