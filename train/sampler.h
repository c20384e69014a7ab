/* sampler.h - the one token sampler: greedy, temperature and top-k with a
 * seeded draw. Training's tr_generate and the inference runtime's
 * inf_generate both call it, so equal logits and equal seeds give equal
 * tokens in both (tests/test_runtime.c checks this end to end).
 *
 * It is its own small library (pare_sampler, depending on autograd's RNG
 * only) so that infer/ can use it without depending on train/.
 */
#ifndef PARE_TR_SAMPLER_H
#define PARE_TR_SAMPLER_H

#include "autograd/rng.h"

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

#endif
