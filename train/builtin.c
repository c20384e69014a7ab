/* builtin.c - generators of the built-in datasets: the order-k Markov source
 * with its exact loss floor, and the algorithmic tasks. See builtin.h for
 * the formulas. */
#include "builtin.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "autograd/errmsg.h"

/* Uniform double in [0, 1) with 53 random bits. */
static double uniform53(ag_rng *r) { return (double)(ag_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

/* Index drawn from the distribution p[0, n) (sums to 1 up to rounding; the
 * last index with positive mass absorbs the rounding). */
static int draw(const double *p, int n, ag_rng *r) {
    double u = uniform53(r), c = 0.0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] <= 0.0) continue;
        last = i;
        c += p[i];
        if (u < c) return i;
    }
    return last;
}

/* -sum p log p over p[0, n), skipping zeros. */
static double entropy(const double *p, size_t n) {
    double h = 0.0;
    for (size_t i = 0; i < n; i++)
        if (p[i] > 0.0) h -= p[i] * log(p[i]);
    return h;
}

int tr_markov_make(tr_markov *m, int A, int k, int support, double eps, uint64_t seed,
                   char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (A < 2 || A > 64 || k < 1 || support < 1 || support > A || !(eps > 0.0 && eps < 1.0)) {
        ag_errf(err, errlen,
                "markov chain: bad parameters (alphabet %d, order %d, support %d, eps %g); expected "
                "2 <= alphabet <= 64, order >= 1, 1 <= support <= alphabet, 0 < eps < 1",
                A, k, support, eps);
        return -1;
    }
    long S = 1;
    for (int i = 0; i < k; i++) {
        S *= A;
        if (S > 65536) {
            ag_errf(err, errlen, "markov chain: alphabet %d and order %d give more than 65536 states", A, k);
            return -1;
        }
    }
    m->A = A;
    m->k = k;
    m->S = (int)S;
    m->P = calloc((size_t)S * (size_t)A, sizeof(double));
    m->pi = calloc((size_t)S, sizeof(double));
    double *next = calloc((size_t)S, sizeof(double));
    int *perm = malloc((size_t)A * sizeof(int));
    if (!m->P || !m->pi || !next || !perm) {
        free(next);
        free(perm);
        tr_markov_free(m);
        ag_errf(err, errlen, "markov chain: out of memory for %ld states", S);
        return -1;
    }

    /* Transition rows: `support` successors chosen by a partial Fisher-Yates
     * shuffle, weights normalised exponentials (a Dirichlet(1) draw). */
    ag_rng r;
    ag_rng_seed(&r, seed);
    for (int s = 0; s < m->S; s++) {
        double *row = m->P + (size_t)s * (size_t)A;
        for (int a = 0; a < A; a++) perm[a] = a;
        double w[64], wsum = 0.0;
        for (int j = 0; j < support; j++) {
            int pick = j + (int)ag_rng_below(&r, (uint64_t)(A - j));
            int tmp = perm[j];
            perm[j] = perm[pick];
            perm[pick] = tmp;
            w[j] = -log(1.0 - uniform53(&r)); /* Exp(1); 1 - u is in (0, 1] */
            wsum += w[j];
        }
        for (int a = 0; a < A; a++) row[a] = eps / A;
        for (int j = 0; j < support; j++) row[perm[j]] += (1.0 - eps) * w[j] / wsum;
    }

    /* Stationary law by power iteration from uniform. Every row gives every
     * symbol mass >= eps / A, so after k steps every k-gram is reachable from
     * every other: the chain is irreducible and aperiodic and the iteration
     * converges geometrically. */
    for (int s = 0; s < m->S; s++) m->pi[s] = 1.0 / m->S;
    int converged = 0;
    for (int it = 0; it < 200000 && !converged; it++) {
        memset(next, 0, (size_t)S * sizeof(double));
        for (int s = 0; s < m->S; s++) {
            const double *row = m->P + (size_t)s * (size_t)A;
            int base = (int)(((long)s * A) % S);
            for (int a = 0; a < A; a++) next[base + a] += m->pi[s] * row[a];
        }
        double diff = 0.0, total = 0.0;
        for (int s = 0; s < m->S; s++) {
            diff += fabs(next[s] - m->pi[s]);
            total += next[s];
        }
        for (int s = 0; s < m->S; s++) m->pi[s] = next[s] / total;
        if (diff < 1e-14) converged = 1;
    }
    free(next);
    free(perm);
    if (!converged) {
        tr_markov_free(m);
        ag_errf(err, errlen, "markov chain: stationary distribution did not converge");
        return -1;
    }
    return 0;
}

void tr_markov_free(tr_markov *m) {
    if (!m) return;
    free(m->P);
    free(m->pi);
    m->P = NULL;
    m->pi = NULL;
}

double tr_markov_entropy_rate(const tr_markov *m) {
    double h = 0.0;
    for (int s = 0; s < m->S; s++) h += m->pi[s] * entropy(m->P + (size_t)s * (size_t)m->A, (size_t)m->A);
    return h;
}

/* Entropy of the stationary law of the first c <= k symbols of a k-gram
 * (the c-gram marginal): states sharing their oldest c symbols are
 * contiguous blocks of A^(k-c) states. */
static double block_entropy(const tr_markov *m, int c) {
    if (c == 0) return 0.0;
    int block = 1;
    for (int i = c; i < m->k; i++) block *= m->A;
    double h = 0.0;
    for (int s0 = 0; s0 < m->S; s0 += block) {
        double p = 0.0;
        for (int s = s0; s < s0 + block; s++) p += m->pi[s];
        if (p > 0.0) h -= p * log(p);
    }
    return h;
}

double tr_markov_cond_entropy(const tr_markov *m, int c) {
    if (c >= m->k) return tr_markov_entropy_rate(m);
    if (c < 0) c = 0;
    return block_entropy(m, c + 1) - block_entropy(m, c);
}

double tr_markov_window_floor(const tr_markov *m, int T) {
    if (T < 1) return NAN;
    double H[65];
    int kk = m->k < 64 ? m->k : 64;
    for (int c = 1; c <= kk; c++) H[c] = tr_markov_cond_entropy(m, c);
    double sum = 0.0;
    for (int t = 0; t < T; t++) {
        int c = t + 1 < kk ? t + 1 : kk; /* position t has seen t + 1 tokens */
        sum += H[c];
    }
    return sum / T;
}

void tr_markov_generate(const tr_markov *m, ag_rng *r, uint8_t *out, size_t n) {
    int s = draw(m->pi, m->S, r);
    /* the first k symbols are the digits of s, oldest first */
    int digits[64];
    for (int i = m->k - 1, v = s; i >= 0; i--, v /= m->A) digits[i] = v % m->A;
    size_t i = 0;
    for (; i < n && i < (size_t)m->k; i++) out[i] = (uint8_t)digits[i];
    for (; i < n; i++) {
        int a = draw(m->P + (size_t)s * (size_t)m->A, m->A, r);
        out[i] = (uint8_t)a;
        s = (int)(((long)s * m->A + a) % m->S);
    }
}

static int cmp_u8(const void *a, const void *b) {
    return (int)*(const uint8_t *)a - (int)*(const uint8_t *)b;
}

int tr_task_example(tr_task_kind kind, int alpha, int min_len, int max_len, ag_rng *r, uint8_t *out) {
    int L = min_len + (int)ag_rng_below(r, (uint64_t)(max_len - min_len + 1));
    for (int i = 0; i < L; i++) out[i] = (uint8_t)('a' + ag_rng_below(r, (uint64_t)alpha));
    out[L] = TR_TASK_SEP;
    uint8_t *ans = out + L + 1;
    switch (kind) {
    case TR_TASK_COPY:
        memcpy(ans, out, (size_t)L);
        break;
    case TR_TASK_REVERSE:
        for (int i = 0; i < L; i++) ans[i] = out[L - 1 - i];
        break;
    case TR_TASK_SORT:
        memcpy(ans, out, (size_t)L);
        qsort(ans, (size_t)L, 1, cmp_u8);
        break;
    }
    ans[L] = TR_TASK_END;
    return 2 * L + 2;
}
