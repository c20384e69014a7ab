/* sampler.h - the one token sampler: greedy, temperature and top-k with a
 * seeded draw. Training's tr_generate and the inference runtime's
 * inf_generate both call it, so equal logits and equal seeds give equal
 * tokens in both (tests/test_runtime.c checks this end to end).
 *
 * It is its own small library (pare_sampler, depending on autograd's RNG
 * and the key tables only) so that infer/ can use it without depending on
 * train/.
 */
#ifndef PARE_TR_SAMPLER_H
#define PARE_TR_SAMPLER_H

#include <stdint.h>

#include "autograd/rng.h"
#include "keys/options.h"

/* Chooses a token from logits[V] (V >= 1).
 *
 * temperature <= 0: the argmax (the first index among equal maxima); rng is
 * not used and may be NULL.
 * temperature > 0: p_i proportional to exp((logits[i] - max) / temperature)
 * over the tokens whose logit is at least the top_k-th largest value (top_k
 * <= 0 or >= V = all tokens; every token tied with the k-th value stays, so
 * more than k may be kept), computed in double; one u = ag_rng_uniform(rng)
 * picks the first i with u * sum p < p_0 + ... + p_i. Exactly one draw is
 * taken from rng per call.
 *
 * probs[V] is caller-owned scratch (it holds the unnormalised p on return).
 * Returns the chosen index in [0, V). No errors: callers check V and the
 * buffers. */
int tr_sample_pick(const float *logits, int V, double temperature, int top_k, ag_rng *rng, double *probs);

/* What a generation asks for: `pare sample` (checkpoints) and `pare
 * generate` (model files) share these keys. */
typedef struct tr_sample_opts {
    const char *prompt; /* text to continue ("" = a newline, or token 0) */
    int tokens;         /* tokens to generate */
    double temperature; /* 0 = greedy argmax */
    int top_k;          /* 0 = every token */
    uint64_t seed;      /* the sampling generator's seed (key sample-seed) */
} tr_sample_opts;

/* The rows prompt, tokens, temperature, top-k and sample-seed. */
void tr_sample_keys(pare_keys *k, tr_sample_opts *s);

/* Only temperature, top-k and sample-seed (pare train's final sample has its
 * own length key and no prompt). */
void tr_sample_style_keys(pare_keys *k, tr_sample_opts *s);

#endif
