/* builtin.h - the generators behind builtin:NAME datasets (used by data.c
 * and by tests; the trainer goes through data.h).
 *
 * builtin:markov is a seeded random order-k Markov source over a small
 * printable alphabet. Its best achievable loss is known exactly:
 *
 *   entropy rate   h = sum_s pi(s) H(P(. | s))        (s ranges over k-grams,
 *                                                      pi is stationary)
 *   window floor   F(T) = (1/T) sum_{t=0}^{T-1} H_{min(t+1, k)}
 *                  H_m = H(X_m | X_0 .. X_{m-1}) = H(m+1-gram) - H(m-gram)
 *                  for m < k, and H_k = h.
 *
 * A model predicting position t of a window has seen t + 1 tokens, so the
 * first k - 1 positions of every window cannot reach h; F(T) is the exact
 * expected loss of the true conditional distributions when windows start in
 * the stationary law, which the generated stream does (its first k-gram is
 * drawn from pi). Entropies are in nats.
 *
 * The algorithmic tasks (copy, reverse, sort) write one example per row:
 * "cab>abc." for sort: a prompt of L letters, '>', the answer, the
 * terminator '.'; '.' also pads the row. Only the answer and the
 * terminator are scored, so the floor is 0.
 */
#ifndef PARE_TR_BUILTIN_H
#define PARE_TR_BUILTIN_H

#include <stddef.h>
#include <stdint.h>

#include "autograd/rng.h"

/* ---- builtin:markov ---- */

/* Defaults of builtin:markov: alphabet, order, successors per state,
 * uniform smoothing (keeps the chain irreducible and aperiodic), length of
 * the generated stream, and the context it is meant to be trained with. */
#define TR_MARKOV_ALPHABET " adeilnrst"
#define TR_MARKOV_K 2
#define TR_MARKOV_SUPPORT 3
#define TR_MARKOV_EPS 0.01
#define TR_MARKOV_TOKENS 500000
#define TR_MARKOV_CTX 64

typedef struct tr_markov {
    int A;        /* alphabet size */
    int k;        /* order */
    int S;        /* A^k states; state = x_{t-k+1} A^{k-1} + ... + x_t (oldest first) */
    double *P;    /* [S, A] P[s*A + a] = probability that a follows k-gram s */
    double *pi;   /* [S] stationary distribution over k-grams */
} tr_markov;

/* Builds a chain: each state puts mass (1 - eps) on `support` distinct
 * successors with Dirichlet(1) weights drawn from seed, plus eps / A on every
 * symbol; then finds pi by power iteration. Requires 2 <= A <= 64,
 * 1 <= k, A^k <= 65536, 1 <= support <= A, 0 < eps < 1. Returns 0, or -1
 * with err (bad parameters, out of memory, no convergence). Free with
 * tr_markov_free. */
int tr_markov_make(tr_markov *m, int A, int k, int support, double eps, uint64_t seed,
                   char *err, size_t errlen);

/* Frees m's arrays; m may be NULL. */
void tr_markov_free(tr_markov *m);

/* Entropy rate h in nats per token. */
double tr_markov_entropy_rate(const tr_markov *m);

/* H(X_c | X_0 .. X_{c-1}) under the stationary law, for a context of c >= 0
 * tokens (c >= k gives h). */
double tr_markov_cond_entropy(const tr_markov *m, int c);

/* F(T) of the comment above: the exact expected loss over T >= 1 positions. */
double tr_markov_window_floor(const tr_markov *m, int T);

/* Writes n >= 1 symbols (0 .. A-1) of the chain to out, starting from a
 * k-gram drawn from pi (so every window is stationary), advancing r. */
void tr_markov_generate(const tr_markov *m, ag_rng *r, uint8_t *out, size_t n);

/* ---- tasks ---- */

typedef enum tr_task_kind { TR_TASK_COPY = 0, TR_TASK_REVERSE = 1, TR_TASK_SORT = 2 } tr_task_kind;

/* Defaults: letters 'a'.. ('a' + TR_TASK_ALPHA - 1), lengths in
 * [TR_TASK_MIN_LEN, TR_TASK_MAX_LEN]. */
#define TR_TASK_ALPHA 10
#define TR_TASK_MIN_LEN 1
#define TR_TASK_MAX_LEN 8
#define TR_TASK_SEP '>'
#define TR_TASK_END '.'

/* Writes one example into out (2 * max_len + 2 bytes suffice) as text
 * "prompt>answer." and returns its length 2L + 2; L is drawn uniformly from
 * [min_len, max_len] and each letter uniformly from the first `alpha`
 * letters, with r. */
int tr_task_example(tr_task_kind kind, int alpha, int min_len, int max_len, ag_rng *r, uint8_t *out);

#endif
