/* runtime.h - running a model file: batched forward for evaluation and
 * prompts, token-by-token generation with a KV cache, sampling.
 *
 * The forward is the training forward (train/gpt.h) written as plain loops
 * over one sequence:
 *   x = wte[ids] + wpe[pos ..]                                   [T, C]
 *   per layer l: x += proj(attn(ln1(x)));  x += mproj(gelu(fc(ln2(x))))
 *   logits = lnf(x) head^T                                       [T, V]
 * with the file's architecture (model/arch.h): layer l has H_l heads of
 * width D (attention width A_l = H_l D) and M_l MLP units, and a linear site
 * of rank r > 0 is two products, h = x V^T [T, r] then out = h U^T + b,
 * exactly as training runs it. The model sets itself up from the table of
 * sites (pm_table), not from tensor names. Matrix products go through
 * infer/kernels.h for each weight's storage type; keys and values of every
 * position are kept in a cache (layer l: [H_l, ctx, D]), so a new token
 * costs one row of work. Layer norms accumulate in double, GELU is the tanh
 * form, attention is the exact causal softmax; the result equals the
 * training forward with the file's (dequantized) weights within float
 * rounding (tests/test_runtime.c).
 */
#ifndef PARE_INF_RUNTIME_H
#define PARE_INF_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/rng.h"
#include "format.h"
#include "kernels.h"

/* A linear site ready for the kernels: out = x W^T + b, or, factorized
 * (rank > 0), h = x V^T then out = h U^T + b. */
typedef struct inf_linear {
    int out, in, rank;  /* W [out, in]; rank 0 = dense */
    inf_weight w;       /* [out, in] when dense (a tied head's is wte) */
    inf_weight u, v;    /* [out, rank] and [rank, in] when factorized */
    const float *b;     /* [out], or NULL */
} inf_linear;

typedef struct inf_layer {
    int H, A, M;                                 /* heads, attention width H * D, MLP width */
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;  /* [C]; biases NULL without bias */
    inf_linear qkv, proj, fc, mproj;             /* [3A, C], [C, A], [M, C], [C, M] */
    size_t kv_off;                               /* this layer's [H, ctx, D] in the key (and value) cache */
} inf_layer;

/* One stage of the decode step (runtime.c): a product or a layer's attention. */
typedef struct inf_step inf_step;

typedef struct inf_model {
    inf_file file;           /* the validated file (owns the bytes when opened from a path) */
    int n_layer, C, D, ctx, V;
    int max_H, max_A, max_M, max_R; /* the largest heads, attention width, MLP width and rank of any layer (max_R >= 1) */
    float eps;
    const inf_tensor *wte, *wpe; /* [V, C], [ctx, C]: rows dequantized on lookup */
    const float *lnf_w, *lnf_b;
    inf_linear head;         /* [V, C]: lm_head (dense or factorized), or wte when tied */
    inf_layer *layer;        /* [n_layer] */
    size_t kv_floats;        /* floats of the key cache (and of the value cache): sum over layers of A_l * ctx */
    size_t decode_bytes;     /* bytes of the weights one decoded token reads (every linear site's) */
    inf_step *step;          /* [n_steps]: the decode step's stages, in order */
    int n_steps;
} inf_model;

/* Opens and validates a model file (inf_file_open) and prepares its weights.
 * Returns 0, or -1 with err; the caller closes m with inf_model_close either
 * way (it accepts a half-built model). */
int inf_model_open(inf_model *m, const char *path, char *err, size_t errlen);

/* Same from bytes already in memory (buf must outlive m). */
int inf_model_parse(inf_model *m, const uint8_t *buf, size_t len, const char *name, char *err, size_t errlen);

void inf_model_close(inf_model *m); /* m may be NULL */

/* The storage type name shared by every linear site's weights ("q8", ...),
 * or "mixed". */
const char *inf_model_storage(const inf_model *m);

/* One generation or evaluation stream: the KV cache, the scratch buffers and
 * the kernels' settings. */
typedef struct inf_session {
    const inf_model *m;
    inf_kctx k;
    int pos;                 /* positions in the cache */
    float *kc, *vc;          /* [kv_floats] each: layer l's [H_l, ctx, D] at layer[l].kv_off */
    float *x, *a;            /* [cap, C] residual stream, layer norm / product output */
    float *qkv, *y;          /* [cap, 3 max_A], [cap, max_A] */
    float *h, *r;            /* [cap, max_M] MLP units, [cap, max_R] a factorized site's x V^T */
    float *att, *row;        /* [cap, max_H, ctx] attention rows, [max(C, V)] */
    int cap;
    double *probs;           /* [V] sampling scratch */
    /* the one-token decode step (runtime.c): it uses every thread
     * (ag_get_threads) when the model's decode_bytes >= decode_par_min
     * (INF_DECODE_PAR_MIN after init; 0 = always), else one; per-thread
     * scratch for up to nthr threads and the stages' work counters */
    size_t decode_par_min;
    int nthr;
    inf_kctx *tk;            /* [nthr] kernel contexts (activation limbs) */
    float *tln;              /* [nthr, C] layer norm outputs */
    struct inf_stage *stage; /* [n_steps + 1]: the stages, then the count of threads done */
} inf_session;

/* Weight bytes per token below which the decode step runs on one thread.
 * Such a token takes tens of microseconds, and a second thread arrives 17-35
 * us after the step's parallel region opens on a quiet machine (hundreds of
 * microseconds when another process holds the other core) while the first
 * must wait for it to leave; what two cores gain is mostly bandwidth. On the
 * nanoGPT baseline model at 2 threads, splitting made f32 (3.3 MB) 1.2x
 * faster, q8 (0.9 MB) even and q4 (0.6 MB) 1.2x slower than one thread. */
#define INF_DECODE_PAR_MIN ((size_t)2 << 20)

/* Makes a session for m (which must outlive it) with the kernels' instruction
 * set (clamped to what the CPU has) and activation limbs (1..3; 3 keeps
 * parity with float, see kernels.h). Returns 0, or -1 (out of memory). */
int inf_session_init(inf_session *s, const inf_model *m, inf_isa isa, int limbs, char *err, size_t errlen);
void inf_session_free(inf_session *s); /* s may be NULL */

/* Empties the KV cache. */
void inf_session_reset(inf_session *s);

/* Runs ids[0, T) at positions pos .. pos+T-1 (appending to the cache) and
 * writes logits: all T rows into logits[T, V] when all_rows, else only the
 * last row into logits[V]. Returns 0, or -1 with err: an id outside [0, V)
 * (named with its index), pos + T > ctx, T < 1, out of memory. */
int inf_forward(inf_session *s, const int *ids, int T, float *logits, bool all_rows, char *err, size_t errlen);

/* Generates up to n_new tokens after ids[0, n_prompt) into out[0, n_prompt +
 * n_new) (prompt copied first). Uses the KV cache while the sequence fits in
 * ctx; beyond that the window of the last ctx tokens slides, as train's
 * tr_generate does (each step then recomputes the window). Each token is
 * chosen by tr_sample_pick (train/sampler.h, the sampler tr_generate uses),
 * so equal logits and seeds give equal tokens. Stops after
 * stop_id when stop_id >= 0. If on_token is not NULL it is called with every
 * new token (for streaming output). Returns the total length, or -1 with err. */
int inf_generate(inf_session *s, const int *ids, int n_prompt, int n_new, double temperature, int top_k,
                 int stop_id, ag_rng *rng, int *out, void (*on_token)(void *user, int id), void *user, char *err,
                 size_t errlen);

#endif
