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
