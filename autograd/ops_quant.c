/* ops_quant.c - fake quantization, forward beside backward: the
 * straight-through estimator with clipping, the learned step size (LSQ) and
 * the learned clipping level (PACT).
 *
 * Forward (every mode): the grid of compress/grid.h, PyTorch's rule. With s
 * the element's scale (PACT: s = alpha / hi), z its zero point and [lo, hi]
 * the code range,
 *   q = clamp(nearbyint(x * (1 / s)) + z, lo, hi),   y = (q - z) * s.
 *
 * Backward, with g = dL/dy:
 *  - STE (Bengio et al. 2013; PyTorch's fake_quantize_per_{tensor,channel}_affine):
 *      dx = g where lo <= nearbyint(x / s) + z <= hi (the rounded value before
 *      clamping), else 0. The scale gets no gradient (an observer sets it).
 *  - LSQ (Esser et al. 2020, "Learned Step Size Quantization", eq. 3), with
 *      v = x / s, Qn = z - lo, Qp = hi - z and the gradient scale gs:
 *        dx = g                      if -Qn < v < Qp, else 0
 *        ds += gs g (nearbyint(v) - v)  if -Qn < v < Qp
 *              gs g (-Qn)               if v <= -Qn
 *              gs g Qp                  if v >= Qp
 *      The paper decides "inside" on the unrounded v; PyTorch's learnable fake
 *      quantization (_fake_quantize_learnable_per_tensor_affine) decides on the
 *      rounded one, so for v in [Qp, Qp + 1/2) it gives ds = g (round(v) - v)
 *      and dx = g where the paper gives gs g Qp and 0. pare follows the paper.
 *  - PACT (Choi et al. 2018, "PACT: Parameterized Clipping Activation", eq.
 *      3), on the symmetric grid [-hi, hi] with s = alpha / hi (signed
 *      activations: the clip is [-alpha, alpha]):
 *        dx = g       if -alpha < x < alpha, else 0
 *        dalpha += g  if x >= alpha,  -g if x <= -alpha,  0 inside
 *      (the quantization inside the range is passed straight through, as the
 *      paper does).
 * Scale gradients are sums over each scale's elements in double, in index
 * order (one scale: blocks of a fixed size, then the blocks in order), so
 * they do not depend on the thread count.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "compress/grid.h"
#include "ops.h"
#include "ops_internal.h"
#include "parallel.h"
#include "vecmath.h"

typedef struct {
    ag_fq q;           /* a copy; zero points copied into the arena */
    size_t nseg, seg;  /* segments of seg elements, one scale each (or all scale 0) */
    int nscale;
} fq_saved;

/* The scale of segment j (PACT: alpha / hi). */
static inline float seg_scale(const fq_saved *s, const float *p, size_t j) {
    float v = p[s->nscale == 1 ? 0 : j];
    return s->q.mode == AG_FQ_PACT ? v / (float)s->q.hi : v;
}

static inline int seg_zero(const fq_saved *s, size_t j) {
    return s->q.zero ? (int)s->q.zero[s->nscale == 1 ? 0 : j] : 0;
}

/* dx += g where the rounded value is inside the grid (vectorised; the same
 * decision as cp_code_inside). */
AG_SIMD_CLONES static void ste_bwd(float *dx, const float *x, const float *g, size_t n, float inv, float z, float lo,
                                   float hi) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float r = cp_rne(x[i] * inv) + z;
        dx[i] += r >= lo && r <= hi ? g[i] : 0.0f;
    }
}

/* The backward of segment j: dx (when x has a gradient) and the segment's
 * contribution to its scale's gradient (returned, in double). */
static double seg_backward(const fq_saved *s, const float *x, const float *g, float *dx, const float *p, size_t j) {
    size_t i0 = j * s->seg, i1 = i0 + s->seg;
    float sc = seg_scale(s, p, j), inv = 1.0f / sc;
    int z = seg_zero(s, j), lo = s->q.lo, hi = s->q.hi;
    double ds = 0;
    switch (s->q.mode) {
    case AG_FQ_STE:
        if (dx) ste_bwd(dx + i0, x + i0, g + i0, i1 - i0, inv, (float)z, (float)lo, (float)hi);
        return 0;
    case AG_FQ_LSQ: {
        float qn = (float)(z - lo), qp = (float)(hi - z);
        for (size_t i = i0; i < i1; i++) {
            float v = x[i] * inv;
            if (v <= -qn) {
                ds += (double)g[i] * -qn;
            } else if (v >= qp) {
                ds += (double)g[i] * qp;
            } else {
                ds += (double)g[i] * (double)(cp_rne(v) - v);
                if (dx) dx[i] += g[i];
            }
        }
        return ds * s->q.grad_scale;
    }
    default: { /* PACT */
        float a = p[s->nscale == 1 ? 0 : j];
        for (size_t i = i0; i < i1; i++) {
            if (x[i] >= a) ds += g[i];
            else if (x[i] <= -a) ds -= g[i];
            else if (dx) dx[i] += g[i];
        }
        return ds;
    }
    }
}

static void fake_quant_backward(ag_node *n) {
    ag_tensor *x = n->in[0], *p = n->in[1], *out = n->out;
    const fq_saved *s = n->saved;
    const float *X = x->data, *G = out->grad, *P = p->data;
    float *dX = x->grad, *dP = s->q.mode == AG_FQ_STE ? NULL : p->grad;
    long nseg = (long)s->nseg;
    if (s->nscale > 1 || !dP) { /* one thread per segment: each scale's sum is its segment's, in order */
        ag_join join = {0};
#pragma omp parallel if (x->numel >= AG_PAR_MIN && nseg > 1)
        {
#pragma omp for schedule(static) nowait
            for (long j = 0; j < nseg; j++) {
                double d = seg_backward(s, X, G, dX, P, (size_t)j);
                if (dP) dP[j] += (float)d;
            }
            ag_region_join(&join);
        }
        return;
    }
    /* one scale over every segment: segment sums in parallel, then in order */
    double *part = n->saved2;
    ag_join join = {0};
#pragma omp parallel if (x->numel >= AG_PAR_MIN && nseg > 1)
    {
#pragma omp for schedule(static) nowait
        for (long j = 0; j < nseg; j++) part[j] = seg_backward(s, X, G, dX, P, (size_t)j);
        ag_region_join(&join);
    }
    double tot = 0;
    for (long j = 0; j < nseg; j++) tot += part[j];
    dP[0] += (float)tot;
}

/* One segment's forward: y = (q - z) s, the codes, and (count) how many the
 * grid clipped; vectorised (float steps, exact on these integers: the same
 * values as cp_code). */
AG_SIMD_CLONES static size_t fq_fwd(float *y, int8_t *codes, float *fc, const float *x, size_t n, float sc, float inv,
                                    float z, float lo, float hi, bool count) {
    size_t clip = 0;
    if (fc && !codes) {
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float q = cp_code_f(x[i], inv, z, lo, hi) - z;
            y[i] = q * sc;
            fc[i] = q;
        }
    } else if (codes) {
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float q = cp_code_f(x[i], inv, z, lo, hi);
            y[i] = (q - z) * sc;
            codes[i] = (int8_t)q;
        }
        if (fc)
#pragma omp simd
            for (size_t i = 0; i < n; i++) fc[i] = (float)codes[i] - z;
    } else {
#pragma omp simd
        for (size_t i = 0; i < n; i++) y[i] = (cp_code_f(x[i], inv, z, lo, hi) - z) * sc;
    }
    if (count)
#pragma omp simd reduction(+ : clip)
        for (size_t i = 0; i < n; i++) {
            float r = cp_rne(x[i] * inv) + z;
            clip += r < lo || r > hi;
        }
    return clip;
}

ag_tensor *ag_fake_quant(ag_ctx *c, ag_tensor *x, ag_tensor *p, const ag_fq *q) {
    if (!x || !p) return NULL;
    assert(q->lo < q->hi && q->group >= 1 && x->numel % (size_t)q->group == 0);
    size_t seg = (size_t)q->group, nseg = x->numel / seg;
    assert(p->numel == 1 || p->numel == nseg);
    assert(q->mode != AG_FQ_PACT || (q->lo == -q->hi && !q->zero));
    int nscale = (int)p->numel;
    for (int j = 0; j < nscale; j++) {
        float v = p->data[j];
        if (!isfinite(v) || !(v > 0.0f)) {
            ag_fail(c, "fake_quant %s: %s %d of %s is %g: expected a finite value > 0", x->name ? x->name : "?",
                    q->mode == AG_FQ_PACT ? "clipping level" : "scale", j, p->name ? p->name : "?", (double)v);
            return NULL;
        }
    }
    ag_tensor *out = ag_new(c, x->ndim, x->shape, "fake_quant");
    if (!out) return NULL;
    fq_saved sv = {*q, nseg, seg, nscale};
    const float *X = x->data, *P = p->data;
    float *Y = out->data;
    int8_t *codes = q->codes;
    long ns = (long)nseg;
    size_t nclip = 0;
    ag_join join = {0};
#pragma omp parallel if (x->numel >= AG_PAR_MIN && ns > 1) reduction(+ : nclip)
    {
#pragma omp for schedule(static) nowait
        for (long j = 0; j < ns; j++) {
            size_t i0 = (size_t)j * seg, i1 = i0 + seg;
            float sc = seg_scale(&sv, P, (size_t)j), inv = 1.0f / sc;
            int z = seg_zero(&sv, (size_t)j);
            if (q->mode != AG_FQ_PACT) {
                nclip += fq_fwd(Y + i0, codes ? codes + i0 : NULL, q->fcodes ? q->fcodes + i0 : NULL, X + i0, i1 - i0, sc,
                                inv, (float)z, (float)q->lo, (float)q->hi, q->clipped != NULL);
            } else {
                fq_fwd(Y + i0, codes ? codes + i0 : NULL, q->fcodes ? q->fcodes + i0 : NULL, X + i0, i1 - i0, sc, inv,
                       (float)z, (float)q->lo, (float)q->hi, false);
                if (q->clipped) {
                    float a = P[nscale == 1 ? 0 : j];
                    for (size_t i = i0; i < i1; i++) nclip += !(X[i] > -a && X[i] < a);
                }
            }
        }
        ag_region_join(&join);
    }
    if (q->clipped) *q->clipped = nclip;
    ag_node *n = ag_record(c, "fake_quant", fake_quant_backward, out, x, q->mode == AG_FQ_STE ? NULL : p, NULL);
    if (n) {
        fq_saved *s = ag_alloc(c, sizeof *s);
        if (!s) return NULL;
        *s = sv;
        s->q.codes = NULL;
        s->q.clipped = NULL;
        s->q.fcodes = NULL;
        if (q->zero) {
            int32_t *z = ag_alloc(c, (size_t)nscale * sizeof *z);
            if (!z) return NULL;
            memcpy(z, q->zero, (size_t)nscale * sizeof *z);
            s->q.zero = z;
        }
        n->saved = s;
        n->in[1] = p; /* read in the backward (no gradient for STE: not recorded as its input) */
        if (q->mode != AG_FQ_STE && nscale == 1 && !(n->saved2 = ag_alloc(c, nseg * sizeof(double)))) return NULL;
    } else if (ag_error(c)) {
        return NULL;
    }
    return out;
}
