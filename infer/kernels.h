/* kernels.h - the matrix products of the runtime: f32, int8 and int4 weights,
 * one portable scalar reference beside every SIMD kernel, the instruction set
 * chosen at run time.
 *
 * out[T, N] = x[T, K] W[N, K]^T for a weight W stored in any storage type.
 *
 * f32: one token (decode) runs a matrix-vector kernel; more tokens call
 * OpenBLAS sgemm (ag_sgemm). The matrix-vector kernel has a fixed reduction
 * order: lane j of 16 accumulates columns k = j mod 16 with fused
 * multiply-adds, the lanes are summed as (j, j+8), (j, j+4), (j, j+2), (j, j+1)
 * and the K mod 16 tail is added last in column order; the scalar reference,
 * AVX2 and AVX-512 versions all do exactly this, so they give the same bits.
 *
 * Quantized weights (q8, q4, q4a; q8s and q8nm, q8's codes stored sparse:
 * the same integers, so the same bits as q8) with float activations. Each activation row
 * x[K] is split into L int8 "limbs" (L = 1, 2 or 3; default 3) on the grid of
 * compress/grid.h:
 *   sx = max|x| / 127,  u = x * (1 / sx),
 *   a0 = nearbyint(u),              r0 = u - a0          (|r0| <= 1/2)
 *   a1 = nearbyint(254 r0),         r1 = 254 r0 - a1
 *   a2 = nearbyint(254 r1)
 *   x ~= sx (a0 + a1 / 254 + a2 / 254^2)    (each a_l clamped to [-127, 127])
 * With three limbs the representation error is about 2^-24 of max|x|: float
 * precision. Then, per group g of G columns and per row, exact integer dot
 * products I_l = sum_k q_k a_l,k (zero points subtracted as z * sum_k a_l,k)
 * are accumulated per limb in float, one fused multiply-add per group, and
 * the limbs joined once per row:
 *   y_l = fma(s_g, I_l,g, y_l) over the groups,
 *   out = sx * (y0 + (y1 + y2 / 254) / 254)
 * so the result equals the float product with the dequantized weights up to
 * rounding (the parity tests measure about 1e-6; two limbs give about 1e-4,
 * one about 2e-2). With L = 1 this is ordinary dynamic int8 activation
 * quantization: fastest, but no longer float-exact.
 *
 * Static activations (A8 sites of a quantization-aware model): a weight with
 * an activation scale sa (inf_weight.act_hi > 0, from the model file's
 * activation record) takes ONE int8 operand, the codes
 * a = clamp(nearbyint(x * (1 / sa)), -hi, hi) of compress/grid.h, and the
 * same kernels with L = 1 and sx = sa: out = sa * (sum_g fma(s_g, I_g)), the
 * quantized product of compress/grid.h that training's forward computes with
 * these same kernels. Such a product runs the integer kernel at every token
 * count (never dequantize + sgemm), so each token's result is the same bits
 * however many tokens a call has.
 *
 * Integer parts are exact on every instruction set (AVX-512 VNNI vpdpbusd,
 * AVX2 vpmaddubsw/vpmaddwd with no saturating case, scalar), and the float
 * combination is the same sequence of operations, so every kernel gives the
 * same bits as the scalar reference (tests/test_kernels.c checks this).
 *
 * Threads: rows are split over OpenMP threads in 16-row blocks; each output is
 * computed by one thread in a fixed order, so results do not depend on the
 * thread count.
 */
#ifndef PARE_INF_KERNELS_H
#define PARE_INF_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format.h"

typedef enum inf_isa {
    INF_ISA_SCALAR = 0,
    INF_ISA_AVX2 = 1,       /* AVX2 + FMA */
    INF_ISA_AVX512 = 2,     /* AVX-512 F/BW/VL + VNNI */
    INF_ISA_COUNT
} inf_isa;

/* The best instruction set this CPU supports (checked once with
 * __builtin_cpu_supports). The environment variable PARE_ISA=scalar|avx2|avx512
 * can lower it (never raise it beyond what the CPU has). */
inf_isa inf_isa_best(void);
const char *inf_isa_name(inf_isa isa);
/* True when this CPU can run isa. */
int inf_isa_supported(inf_isa isa);

/* A weight prepared for the kernels: views into the tensor's data plus the
 * small per-(row, group) tables the integer kernels need (owned). */
typedef struct inf_weight {
    int dtype;
    int N, K, G, NB, NG;     /* rows, columns, group size, row blocks, groups per row */
    const float *f32;        /* [N, K] (f32) */
    const uint8_t *codes;    /* block structs (quantized) */
    const float *scales;     /* [NB, NG, 16] */
    int32_t *corr;           /* [NB, NG, 16]: q8, q8s: 128 * sum of the group's codes; q4/q4a: zero point */
    int NC;                  /* q8s: chunks per group (ceil(G / INF_Q8S_CHUNK)) */
    const uint8_t *slots;    /* q8s: the quads (inf_blk_q8s) */
    const uint32_t *counts;  /* q8s: [NB, NG, NC] quads of each (row block, group, chunk) */
    uint64_t *soff;          /* q8s: [NB * NG * NC + 1] (owned): the first quad of each (row block, group, chunk) */
    /* static activations (an A8 site): codes on [-act_hi, act_hi] with scale act_scale; act_hi = 0: float
     * activations (limbs). Set with inf_weight_set_act. */
    int act_hi;
    float act_scale, act_inv;
} inf_weight;

/* Prepares w from a validated 2-D tensor t (t's data must outlive w): the
 * sizes here, the rest by its storage type's row (types.h: prepare).
 * Returns 0, or -1 with err (not 2-D, an unknown type, out of memory). */
int inf_weight_init(inf_weight *w, const inf_tensor *t, char *err, size_t errlen);
void inf_weight_free(inf_weight *w); /* w may be NULL */

/* Points w (made by inf_weight_init from a tensor of the same type, shape and
 * group) at t's data and recomputes its tables in place, allocating nothing;
 * its activation settings stay. For quantization-aware training, whose codes
 * change every step. Returns 0, or -1 with err (another type or shape). */
int inf_weight_update(inf_weight *w, const inf_tensor *t, char *err, size_t errlen);

/* Makes w an A8 site's weight: its activations become static codes of
 * `bits` bits (2 .. 8, symmetric: [-(2^(bits-1) - 1), 2^(bits-1) - 1]) with
 * scale sa (finite, > 0; act_inv = 1.0f / sa); bits 0 goes back to float
 * activations. Returns 0, or -1 with err (bits or scale out of range, or an
 * f32 weight: static activations need an integer kernel). */
int inf_weight_set_act(inf_weight *w, int bits, float sa, char *err, size_t errlen);

/* Scratch and settings of the kernels (activation limbs). One per thread of
 * the caller; the kernels parallelise inside. */
typedef struct inf_kctx {
    inf_isa isa;
    int limbs;               /* 1..3: limbs of float activations */
    int L;                   /* limbs of the activations now in a, au (1 after a static A8 site's codes) */
    int8_t *a;               /* [T, L, K] limbs */
    uint8_t *au;             /* [T, L, K] limbs + 128 (VNNI int8) */
    float *sx;               /* [T] */
    int32_t *asum;           /* [T, L, NG] group sums of the limbs */
    uint32_t *apk;           /* [T, K] the limbs of each column packed (q8s): bits 0-15 a0 (int16), 16-23 a1,
                              * 24-31 a2 (int8; 0 for limbs beyond L) */
    size_t cap_p;
    float *wbuf;             /* [K, NB*16] dequantized weight for the GEMM path */
    size_t cap_a, cap_t, cap_s, cap_w;
} inf_kctx;

/* Token count from which int4 products dequantize and call sgemm. int8
 * products use the integer kernel at every token count: with its token tile
 * it is faster than dequantizing and sgemm (small model prompt 1.35x f32's,
 * docs/inference.md), and int4's tile kernel is not. */
#define INF_GEMM_MIN_T 16

/* Initialises k for isa (clamped to inf_isa_best()) and limbs (1..3). */
void inf_kctx_init(inf_kctx *k, inf_isa isa, int limbs);
void inf_kctx_free(inf_kctx *k); /* k may be NULL */

/* out[T, N] = x[T, K] W^T (no bias). Returns 0, or -1 when scratch memory
 * cannot be allocated. */
int inf_matmul(inf_kctx *k, const inf_weight *w, const float *x, int T, float *out);

/* Grows k's activation scratch for T tokens of up to K columns (every group
 * size), so that later products of that size allocate nothing. Returns 0, or
 * -1 (out of memory). */
int inf_kctx_reserve(inf_kctx *k, int T, int K);

/* One token's product in pieces, for callers that split rows over their own
 * threads (the runtime's decode step). inf_matvec_prepare makes x[K]'s
 * activation limbs for w's kernels in k (nothing for f32; -1 when scratch
 * cannot be allocated, else 0); inf_matvec_rows then writes out[r] for rows
 * r in [rb0 * 16, min(rb1 * 16, N)) of out[N] = W x, x being the same vector
 * given to prepare. Each row's result is the bits inf_matmul(k, w, x, 1, out)
 * gives it, however the rows are split. */
int inf_matvec_prepare(inf_kctx *k, const inf_weight *w, const float *x);
void inf_matvec_rows(const inf_kctx *k, const inf_weight *w, const float *x, float *out, int rb0, int rb1);

/* One group's step of the quantized product's float epilogue over rows:
 * y[r, n] = fmaf(s[n], I[r, n], first ? +0 : y[r, n]) for r < R, n < N (s:
 * the group's scale of every output row), and for the last group (sa > 0)
 * then y = y * sa and, when b is not NULL, y = y + b[n] (the bias add the
 * runtime does after the product): what every integer kernel does per group, for callers that form the
 * group's exact integer dot products I (as floats) themselves, e.g. with
 * sgemm on integer-valued floats (exact while every partial sum stays below
 * 2^24). Scalar and FMA versions give the same bits (chosen at run time). */
void inf_qacc_rows(float *y, const float *I, const float *s, int R, int N, bool first, float sa, const float *b);

/* Splits x[T, K] into limbs as described above (exposed for the tests). */
int inf_quantize_act(inf_kctx *k, const float *x, int T, int K, int G);

/* The static codes of x[T, w->K] for A8 weight w (act_hi > 0), their + 128
 * form and group sums, into k (k->L = 1, k->sx[t] = w->act_scale); for the
 * tests and for callers of the tile kernels. Returns 0 or -1 (out of memory). */
int inf_quantize_act_static(inf_kctx *k, const inf_weight *w, const float *x, int T);

/* The 16-lane f32 dot product in the fixed order above (scalar reference). */
float inf_dot_f32_ref(const float *x, const float *w, int K);

/* ---- per-ISA entry points (internal; the tests call them directly) ----
 * Each storage type's row (types.h) holds its kernels per instruction set;
 * the _for functions return the row's entry for isa, or the next lower
 * instruction set's when it has none (NULL for an unknown type). */

/* Rows [rb0 * 16, rb1 * 16) of out[T, N] for a quantized weight, limbs
 * already in k. */
typedef void (*inf_qkernel)(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1);
inf_qkernel inf_qkernel_for(inf_isa isa, int dtype);

/* Dequantizes row blocks [rb0, rb1) of a quantized weight into
 * out[K, ldo] (column r of out is row r of W; ldo >= NB * 16). */
typedef void (*inf_dkernel)(const inf_weight *w, float *out, int ldo, int rb0, int rb1);
inf_dkernel inf_dkernel_for(inf_isa isa, int dtype);

/* Attention's weighted sum of value rows: y[n] = sum over j in [0, m) of
 * (c[j] * scale) v[j, :n] (v rows ldv apart), accumulated from +0 in the
 * order j = 0, 1, ..., each step one multiply and one add per element: the
 * same bits on every instruction set (the AVX-512 version keeps y in
 * registers instead of loading and storing it for every row). */
typedef void (*inf_wsum_fn)(float *y, const float *c, float scale, const float *v, int m, int n, int ldv);
inf_wsum_fn inf_wsum_for(inf_isa isa);

/* x[i] = gelu(x[i] + b[i]) for i < n (b may be NULL: no bias): the tanh form
 * of the training op with the training op's arithmetic,
 * x / (1 + exp(-2 sqrt(2/pi) (x + 0.044715 x^3))) computed as
 * x * ag_inv_1p_exp(...) (autograd/vecmath.h); the same bits on every
 * instruction set (isa is accepted for symmetry with the other kernels). */
typedef void (*inf_gelu_fn)(float *x, const float *b, int n);
inf_gelu_fn inf_gelu_for(inf_isa isa);

/* Attention's softmax numerators: sc[j] = sc[j] * scale, then with m the
 * largest of them sc[j] = exp(sc[j] - m) for j < n (n >= 1), the exponential
 * being the training softmax's ag_exp_nonpos (autograd/vecmath.h); returns
 * their sum, accumulated in double in the order j = 0, 1, ... Every
 * instruction set gives the same bits (the maximum does not depend on the
 * order, NaN never wins it, and which zero wins does not change sc - m). */
typedef double (*inf_softmax_fn)(float *sc, int n, float scale);
inf_softmax_fn inf_softmax_for(inf_isa isa);

/* out[N] = W[N, K] x[K] for rows [r0, r1), f32 (the f32 row's matvec
 * kernels; attention's q . k products use them too). */
typedef void (*inf_fkernel)(const float *w, const float *x, int K, float *out, int r0, int r1);
inf_fkernel inf_fkernel_for(inf_isa isa);

#endif
