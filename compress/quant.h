/* quant.h - quantization as a training policy: fake-quantized weights and
 * activations of the linear sites (QAT), observers, learned step sizes
 * (LSQ) and clipping levels (PACT), post-training calibration (PTQ), and the
 * export of exactly the integers and scales training used.
 * docs/quantization.md has the formulas, papers, keys and results.
 *
 * Grids and rounding are compress/grid.h's (PyTorch's rule). Per linear
 * product (a dense site's x W^T, or a factorized site's x V^T and h U^T):
 *
 *   weights      w' = (clamp(nearbyint(w / s) + z, lo, hi) - z) s per tensor,
 *                output channel or group of G inputs, 2 .. 8 bits, symmetric
 *                or with zero points; scales from an observer over the
 *                current weights, or learned (LSQ);
 *   activations  (A8 sites, a-bits > 0) the product's input, one symmetric
 *                scale per product, from an observer over the batches, or
 *                learned (LSQ, PACT's clipping level alpha = s hi).
 *
 * An A8 product is computed the way the runtime computes it: the codes of
 * the input and of the weight multiplied exactly in integers by the
 * runtime's own kernels (infer/kernels.h), then its float epilogue, so the
 * output of a quantized site is the same bits in training and in the model
 * file (its backward is the straight-through estimator of the float product
 * of the fake-quantized values). A weight-only product (A16) is the float
 * product with the fake-quantized weight (the runtime's integer kernels with
 * float-exact activations agree with it to about 1e-6).
 *
 * Observers (what sets a scale and zero point from a range [mn, mx], by
 * compress/grid.h's cp_grid_params):
 *   minmax         min and max (activations: running over batches, PyTorch's
 *                  MinMaxObserver; weights: of the current weights)
 *   ema            activations: the first batch's min and max, then
 *                  m += c (batch - m) with c = ema-momentum (PyTorch's
 *                  MovingAverageMinMaxObserver); weights: the same over steps
 *   percentile     the range holding `percentile` % of |x| (symmetric) or of
 *                  x between the two tail quantiles (asymmetric)
 *   mse            the clipping range among 80 candidates (1.00, 0.99, ...,
 *                  0.21 of the min-max range) with the least squared
 *                  quantization error
 *   least-squares  alternate: the codes fixed, the scale (and zero point) in
 *                  closed form by least squares; the scale fixed, the codes
 *                  re-rounded; until the codes stop changing (at most 50
 *                  rounds), from the min-max start
 * percentile, mse and least-squares on activations: each batch's range
 * (over at most 65536 evenly strided values), averaged over batches as ema
 * does. Observers update during training steps (and calibration) until
 * freeze-step; evaluation and export use the state as it is.
 */
#ifndef PARE_CP_QUANT_H
#define PARE_CP_QUANT_H

#include "compress/grid.h"
#include "policy.h"

typedef enum cp_gran { CP_GRAN_TENSOR = 0, CP_GRAN_CHANNEL = 1, CP_GRAN_GROUP = 2 } cp_gran;
typedef enum cp_observer {
    CP_OBS_MINMAX = 0,
    CP_OBS_EMA = 1,
    CP_OBS_PERCENTILE = 2,
    CP_OBS_MSE = 3,
    CP_OBS_LSQFIT = 4, /* least-squares */
} cp_observer;

typedef struct cp_quant_cfg {
    int w_bits;             /* w-bits: 0 = float weights, 2 .. 8 */
    int a_bits;             /* a-bits: 0 or 16 = float activations, 2 .. 8 */
    int granularity;        /* granularity: cp_gran */
    int group_size;         /* group-size: G of granularity group */
    bool symmetric;         /* symmetric: the weights' grid (activations are always symmetric) */
    int observer;           /* observer: cp_observer */
    double ema_momentum;    /* ema-momentum: c */
    double percentile;      /* percentile */
    bool lsq, pact;         /* lsq, pact */
    int freeze_step;        /* freeze-step: observers update while step < this; 0 = never freeze */
    bool quant_head;        /* quant-head: the LM head too */
    const char *overrides;  /* quant-override: "GLOBS=SETTINGS;..." */
    int calib_batches;      /* set by `pare quantize` (not a key of the policy) */
} cp_quant_cfg;

/* One linear site's resolved setting. */
typedef struct cp_qspec {
    int w_bits;   /* 0: float weights */
    bool w_sym;
    int gran, group;
    int a_bits;   /* 0: float activations */
    int observer;
    bool lsq, pact;
} cp_qspec;

extern const cp_kind cp_quant_kind;

/* The setting of every site of table t (spec[t->n_site]; non-linear sites
 * and unquantized ones get w_bits = a_bits = 0): the keys, then each rule
 * of cfg->overrides in order (later rules win). A rule is GLOBS=SETTINGS,
 * GLOBS a comma list of pm_glob_match globs over site names, SETTINGS a
 * comma list of: wN (weight bits, w0 = float), aN (activation bits, a0 or
 * a16 = float), tensor, channel, gN (groups of N), sym, asym, lsq, nolsq,
 * pact, nopact, minmax, ema, percentile, mse, least-squares, off (float
 * weights and activations). Checks every site's result against its shapes
 * (a group that divides its input widths, multiples of 32 for the model
 * file's integer types, bits 2 .. 8, asymmetric weights only up to 4 bits,
 * pact only with activations, a tied head not quantized). Returns the number
 * of quantized sites, or -1 with err naming the key (w-bits, a-bits,
 * group-size, quant-override, ...) and what was expected. */
int cp_quant_resolve(const cp_quant_cfg *cfg, const pm_table *t, cp_qspec *spec, char *err, size_t errlen);

/* Writes a one-line description of a site's setting into buf ("W4 g32 sym
 * minmax, A8 ema"). */
void cp_qspec_describe(const cp_qspec *s, char *buf, size_t n);

/* ---- observers -------------------------------------------------------- */

/* The clipping range [*mn, *mx] observer `kind` (minmax, percentile, mse,
 * least-squares; ema is minmax here) gives x[0, n) on grid g (pct: the
 * percentile). scratch: n floats (percentile) or NULL. n >= 1, x finite. */
void cp_observe_range(int kind, const cp_grid *g, const float *x, size_t n, double pct, float *scratch, float *mn,
                      float *mx);

/* A range observer over a stream of batches (activations). */
typedef struct cp_obs {
    int kind;
    bool seen;     /* a batch has been observed */
    float mn, mx;  /* the running range */
} cp_obs;

/* Updates o with batch x[0, n): minmax keeps the running min and max, every
 * other kind sets the range from its first batch and then moves it by
 * momentum toward each batch's range (m += c (batch - m)). Large batches
 * are sampled (at most 65536 evenly strided values) for percentile, mse and
 * least-squares. scratch: 65536 floats. Under data parallelism (dist/dist.h) the
 * batch range is the widest over the ranks (a collective: every rank calls it
 * in the same order), so the state is the same on every rank. */
void cp_obs_update(cp_obs *o, const cp_grid *g, const float *x, size_t n, double momentum, double pct,
                   float *scratch);

/* ---- the policy outside training ------------------------------------- */

/* For `pare eval CHECKPOINT` and the parity tests: makes the forward of
 * model m the quantization-aware forward of checkpoint f (the policy p was
 * made by cp_quant_kind from f's stored configuration): loads the policy's
 * state from f's QUNT section and fills fwd's linear hook (fwd->user = p).
 * p must outlive the forwards. Returns 0, or -1 with err naming the section
 * and field. */
int cp_quant_forward(tr_policy *p, const tr_gpt *m, const tr_ckpt_file *f, tr_gpt_fwd *fwd, char *err, size_t errlen);

/* The quant policy of a command's set (cp_set_create made it when the
 * configuration asks for quantization), or NULL. */
tr_policy *cp_quant_of(const cp_set *s);

/* PTQ (`pare quantize`): while on, forwards with grad mode off update the
 * observers (calibration), and weight scales are observed from the weights.
 * cp_quant_freeze then fixes every scale (observers stop for good; the
 * checkpoint's QUNT section records it). */
void cp_quant_calibrate(tr_policy *p, bool on);
void cp_quant_freeze(tr_policy *p);

/* The codes the quantization-aware forward of product `tensor` (a table
 * tensor index of the weight) uses for the model's current weights:
 * q[N * K] (zero point included), scales[N * NG] and zero points[N * NG]
 * (the file's per-row layout; NG = K / G, G = K for per tensor and per
 * channel), and *G. For the parity tests. Returns 0, or -1 when the tensor
 * is not quantized. */
int cp_quant_codes(tr_policy *p, const tr_gpt *m, int tensor, int8_t *q, float *scales, int32_t *zeros, int *G);

#endif
