/* sampler.c - greedy, temperature and top-k sampling with one seeded draw. */
#include "sampler.h"

#include <assert.h>
#include <math.h>

/* The k-th largest value of logits[V], ties counted together: k passes of
 * "the largest value below the previous one", stopping once at least k
 * entries are at or above it. */
static double kth_largest(const float *logits, int V, int k) {
    double below = INFINITY, cut = -INFINITY;
    int kept = 0;
    while (kept < k) {
        double v = -INFINITY;
        for (int i = 0; i < V; i++)
            if (logits[i] < below && logits[i] > v) v = logits[i];
        if (v == -INFINITY) break;
        for (int i = 0; i < V; i++) kept += logits[i] == v;
        below = cut = v;
    }
    return cut;
}

int tr_sample_pick(const float *logits, int V, double temperature, int top_k, ag_rng *rng, double *probs) {
    assert(V >= 1 && logits && probs);
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    double cut = top_k > 0 && top_k < V ? kth_largest(logits, V, top_k) : -INFINITY;
    double sum = 0, top = logits[best];
    for (int i = 0; i < V; i++) {
        probs[i] = logits[i] >= cut ? exp((logits[i] - top) / temperature) : 0.0;
        sum += probs[i];
    }
    double u = (double)ag_rng_uniform(rng) * sum, acc = 0;
    for (int i = 0; i < V; i++) {
        acc += probs[i];
        if (u < acc && probs[i] > 0) return i;
    }
    return best;
}

void tr_sample_style_keys(pare_keys *k, tr_sample_opts *s) {
    pare_opt r[] = {
        PARE_OPT_FLOAT("temperature", &s->temperature, "0.8", 0, 100, "softmax temperature (0 = greedy argmax)"),
        PARE_OPT_INT("top-k", &s->top_k, "0", 0, 1 << 24, "sample only among the k most likely tokens (0 = all)"),
        PARE_OPT_U64("sample-seed", &s->seed, "1", "seed of the sampling generator"),
    };
    pare_keys_add(k, r, (int)(sizeof r / sizeof r[0]));
}

void tr_sample_keys(pare_keys *k, tr_sample_opts *s) {
    pare_opt r[] = {
        PARE_OPT_STRING("prompt", &s->prompt, "", "text to continue (\"\" = start from a newline, or token 0)"),
        PARE_OPT_INT("tokens", &s->tokens, "200", 0, 1000000, "tokens to generate"),
    };
    pare_keys_add(k, r, (int)(sizeof r / sizeof r[0]));
    tr_sample_style_keys(k, s);
}
