/* types.c - the storage types' traits table (see types.h): one row per
 * type, with the functions a row points to (checks, packing, dequantized
 * rows, weight preparation); the kernels are in kernels.c / kernels_x86.c. */
#include "types.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/grid.h"
#include "kernels_internal.h"

#if defined(__x86_64__)
#define X86(f) f
#else
#define X86(f) NULL
#endif

static float rdf(const uint8_t *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}

/* Geometry of a quantized [N, K] tensor with group G. */
typedef struct {
    size_t N, K, G, NB, NG;
    size_t codes_bytes, scales_bytes, zeros_bytes;
} qgeom;

static qgeom geom(const inf_type_traits *tr, size_t N, size_t K, size_t G) {
    qgeom g;
    g.N = N, g.K = K, g.G = G;
    g.NB = (N + INF_ROWS - 1) / INF_ROWS;
    g.NG = K / G;
    g.codes_bytes = g.NB * (K / (size_t)tr->cols_per_block) * (size_t)tr->block_bytes;
    g.scales_bytes = g.NB * g.NG * INF_ROWS * sizeof(float);
    g.zeros_bytes = tr->has_zero ? g.NB * g.NG * INF_ROWS : 0;
    return g;
}

static qgeom geom_of(const inf_tensor *t) { return geom(inf_type(t->dtype), t->shape[0], t->shape[1], t->group); }

/* ------------------------------------------------------------------ f32 */

static int pack_f32(const float *w, int N, int K, int G, const float *scale, const int32_t *zero, uint8_t *out,
                    char *err, size_t errlen) {
    (void)G;
    if (scale || zero) {
        snprintf(err, errlen, "f32 stores no scales or zero points: expected none in the plan");
        return -1;
    }
    memcpy(out, w, (size_t)N * (size_t)K * sizeof(float));
    return 0;
}

static void row_f32(const inf_tensor *t, size_t row, float *out) {
    size_t K = t->shape[t->ndim - 1];
    memcpy(out, t->data + row * K * sizeof(float), K * sizeof(float));
}

/* Every value finite: a model holding a NaN or an infinity is corrupt (the
 * trainer never writes one), and running it would only print "loss nan". */
static int check_f32(const inf_tensor *t, uint64_t *at, const char **field, char *what, size_t n) {
    size_t count = (size_t)(t->bytes / 4);
    for (size_t j = 0; j < count; j++) {
        float v = rdf(t->data + 4 * j);
        if (!isfinite(v)) {
            *at = 4 * j, *field = "value";
            snprintf(what, n, "tensor '%s' element %zu is %g: expected finite values", t->name, j, (double)v);
            return -1;
        }
    }
    return 0;
}

static int prepare_f32(inf_weight *w, const inf_tensor *t, char *err, size_t errlen) {
    (void)err, (void)errlen;
    w->f32 = (const float *)(const void *)t->data;
    return 0;
}

/* ------------------------------------------------------------ quantized */

/* Scales finite and >= 0; zero points (has_zero) <= 15. */
static int check_quant(const inf_tensor *t, uint64_t *at, const char **field, char *what, size_t n) {
    qgeom g = geom_of(t);
    const uint8_t *sc = t->data + g.codes_bytes;
    for (size_t j = 0; j < g.NB * g.NG * INF_ROWS; j++) {
        float s = rdf(sc + 4 * j);
        /* the integer kernels add s * (a group's exact sum of at most 127 x 127 x G)
         * over K / G groups: bounded so that this cannot overflow */
        double lim = 1e38 / (16129.0 * (double)g.K);
        if (!isfinite(s) || s < 0.0f || (double)s > lim) {
            *at = g.codes_bytes + 4 * j, *field = "scale";
            snprintf(what, n, "tensor '%s' scale %zu is %g: expected finite, >= 0 and at most %.3g (larger overflows "
                     "the integer kernels)", t->name, j, (double)s, lim);
            return -1;
        }
    }
    if (g.zeros_bytes) {
        const uint8_t *z = sc + g.scales_bytes;
        for (size_t j = 0; j < g.NB * g.NG * INF_ROWS; j++)
            if (z[j] > 15) {
                *at = g.codes_bytes + g.scales_bytes + j, *field = "zero point";
                snprintf(what, n, "tensor '%s' zero point %zu is %u: expected 0..15", t->name, j, z[j]);
                return -1;
            }
    }
    return 0;
}

/* The codes q[N, K], scales sc[N, NG] and zero points z[N, NG] of w under the
 * type's grid: its own parameters, or the fixed ones validated and used as
 * given. */
static int quantize(const inf_type_traits *tr, const float *w, int N, int K, int G, const float *scale,
                    const int32_t *zero, int8_t *q, float *sc, uint8_t *z, char *err, size_t errlen) {
    cp_qscheme s = (cp_qscheme)tr->scheme;
    size_t NG = (size_t)(K / G);
    if (!scale) {
        if (zero) {
            snprintf(err, errlen, "zero points without scales: expected both or neither");
            return -1;
        }
        return cp_quantize(s, w, N, K, G, q, sc, z, err, errlen);
    }
    if (cp_quantize_fixed(s, w, N, K, G, scale, zero, q, err, errlen)) return -1;
    for (size_t i = 0; i < (size_t)N * NG; i++) {
        sc[i] = scale[i];
        z[i] = zero ? (uint8_t)zero[i] : 0;
    }
    return 0;
}

/* Codes, scales and zero points of w in the row-block layout (format.h);
 * put(block, i, k, code) stores the code of row i of a row block, column k. */
static int pack_blocks(const inf_type_traits *tr, const float *w, int N, int K, int G, const float *scale,
                       const int32_t *zero, uint8_t *out, void (*put)(uint8_t *blocks, int i, int k, int q),
                       char *err, size_t errlen) {
    qgeom g = geom(tr, (size_t)N, (size_t)K, (size_t)G);
    int8_t *q = malloc((size_t)N * K);
    float *sc = malloc((size_t)N * g.NG * sizeof(float));
    uint8_t *z = malloc((size_t)N * g.NG);
    int rc = -1;
    if (!q || !sc || !z) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (quantize(tr, w, N, K, G, scale, zero, q, sc, z, err, errlen)) goto done;
    float *scales = (float *)(void *)(out + g.codes_bytes);
    uint8_t *zeros = out + g.codes_bytes + g.scales_bytes;
    size_t row_block_bytes = (size_t)(K / tr->cols_per_block) * (size_t)tr->block_bytes;
    for (size_t rb = 0; rb < g.NB; rb++)
        for (int i = 0; i < INF_ROWS; i++) {
            size_t r = rb * INF_ROWS + (size_t)i;
            bool real = r < (size_t)N;
            for (size_t gi = 0; gi < g.NG; gi++) {
                scales[(rb * g.NG + gi) * INF_ROWS + (size_t)i] = real ? sc[r * g.NG + gi] : 0.0f;
                if (tr->has_zero) zeros[(rb * g.NG + gi) * INF_ROWS + (size_t)i] = real ? z[r * g.NG + gi] : 0;
            }
            for (int k = 0; k < K; k++) put(out + rb * row_block_bytes, i, k, real ? q[r * K + (size_t)k] : 0);
        }
    rc = 0;
done:
    free(q), free(sc), free(z);
    return rc;
}

/* Codes (already on the type's grid), scales and zero points [N, NG] in the
 * row-block layout, with the row's put function; out zeroed by the caller. */
static void pack_codes_blocks(const inf_type_traits *tr, const int8_t *q, int N, int K, int G, const float *sc,
                              const int32_t *z, uint8_t *out, void (*put)(uint8_t *blocks, int i, int k, int q)) {
    qgeom g = geom(tr, (size_t)N, (size_t)K, (size_t)G);
    float *scales = (float *)(void *)(out + g.codes_bytes);
    uint8_t *zeros = out + g.codes_bytes + g.scales_bytes;
    size_t row_block_bytes = (size_t)(K / tr->cols_per_block) * (size_t)tr->block_bytes;
    for (size_t rb = 0; rb < g.NB; rb++)
        for (int i = 0; i < INF_ROWS; i++) {
            size_t r = rb * INF_ROWS + (size_t)i;
            bool real = r < (size_t)N;
            for (size_t gi = 0; gi < g.NG; gi++) {
                scales[(rb * g.NG + gi) * INF_ROWS + (size_t)i] = real ? sc[r * g.NG + gi] : 0.0f;
                if (tr->has_zero) zeros[(rb * g.NG + gi) * INF_ROWS + (size_t)i] = real && z ? (uint8_t)z[r * g.NG + gi] : 0;
            }
            for (int k = 0; k < K; k++) put(out + rb * row_block_bytes, i, k, real ? q[r * K + (size_t)k] : 0);
        }
}

static void put_q8(uint8_t *blocks, int i, int k, int q);
static void put_q4(uint8_t *blocks, int i, int k, int nib);
static void put_q4_sym(uint8_t *blocks, int i, int k, int q);

int inf_pack_codes(int dtype, const int8_t *q, int N, int K, int G, const float *scale, const int32_t *zero,
                   uint8_t *out, char *err, size_t errlen) {
    const inf_type_traits *tr = inf_type(dtype);
    if (!tr || tr->from_q8 || !tr->group_multiple || G < 1 || K % G != 0 || G % tr->group_multiple != 0 || (tr->has_zero && !zero)) {
        snprintf(err, errlen, "packing codes as %s with group %d of %d columns: expected an integer type, a group "
                 "that is a multiple of %d dividing the width%s", inf_type_name(dtype), G, K,
                 tr ? tr->group_multiple : 32, tr && tr->has_zero ? ", and zero points" : "");
        return -1;
    }
    cp_grid gr = cp_scheme_grid((cp_qscheme)tr->scheme);
    for (size_t i = 0; i < (size_t)N * K; i++)
        if (q[i] < gr.lo || q[i] > gr.hi) {
            snprintf(err, errlen, "packing codes as %s: code %d of row %zu, column %zu: expected %d..%d", tr->name,
                     q[i], i / (size_t)K, i % (size_t)K, gr.lo, gr.hi);
            return -1;
        }
    qgeom g = geom(tr, (size_t)N, (size_t)K, (size_t)G);
    memset(out, 0, g.codes_bytes + g.scales_bytes + g.zeros_bytes);
    pack_codes_blocks(tr, q, N, K, G, scale, zero, out,
                      dtype == INF_Q8 ? put_q8 : tr->has_zero ? put_q4 : put_q4_sym);
    return 0;
}

/* ---- q8 */

static void put_q8(uint8_t *blocks, int i, int k, int q) {
    ((inf_blk_q8 *)(void *)blocks)[k / 4].q[i][k % 4] = (int8_t)q;
}

static int pack_q8(const float *w, int N, int K, int G, const float *scale, const int32_t *zero, uint8_t *out,
                   char *err, size_t errlen) {
    return pack_blocks(inf_type(INF_Q8), w, N, K, G, scale, zero, out, put_q8, err, errlen);
}

static void row_q8(const inf_tensor *t, size_t row, float *out) {
    qgeom g = geom_of(t);
    size_t rb = row / INF_ROWS, i = row % INF_ROWS;
    const inf_blk_q8 *blk = (const inf_blk_q8 *)(const void *)t->data + rb * (g.K / 4);
    const uint8_t *sc = t->data + g.codes_bytes;
    for (size_t k = 0; k < g.K; k++) {
        float s = rdf(sc + ((rb * g.NG + k / g.G) * INF_ROWS + i) * 4);
        out[k] = cp_dequantize_value(CP_INT8_SYM, blk[k / 4].q[i][k % 4], s, 0);
    }
}

/* corr = 128 * the sum of each (row, group)'s codes: what the +128 form of
 * the activations adds to an integer dot product. */
static int prepare_q8(inf_weight *w, const inf_tensor *t, char *err, size_t errlen) {
    qgeom g = geom_of(t);
    w->codes = t->data;
    w->scales = (const float *)(const void *)(t->data + g.codes_bytes);
    if (!w->corr) w->corr = malloc(g.NB * g.NG * INF_ROWS * sizeof *w->corr); /* kept by inf_weight_update */
    if (!w->corr) {
        snprintf(err, errlen, "tensor '%s': out of memory", t->name);
        return -1;
    }
    const inf_blk_q8 *b = (const inf_blk_q8 *)(const void *)w->codes;
    for (int rb = 0; rb < w->NB; rb++)
        for (int gi = 0; gi < w->NG; gi++)
            for (int i = 0; i < INF_ROWS; i++) {
                int32_t s = 0;
                for (int kc = gi * w->G / 4; kc < (gi + 1) * w->G / 4; kc++)
                    for (int j = 0; j < 4; j++) s += b[(size_t)rb * (w->K / 4) + kc].q[i][j];
                w->corr[((size_t)rb * w->NG + gi) * INF_ROWS + i] = 128 * s;
            }
    return 0;
}

/* ---- q4 and q4a: nibbles; q4 stores q + 8, q4a the code with its zero point */

static void put_q4(uint8_t *blocks, int i, int k, int nib) {
    int j = k % 8;
    uint8_t *byte = &((inf_blk_q4 *)(void *)blocks)[k / 8].q[i][j % 4];
    *byte = j < 4 ? (uint8_t)((*byte & 0xF0) | nib) : (uint8_t)((*byte & 0x0F) | (nib << 4));
}

static void put_q4_sym(uint8_t *blocks, int i, int k, int q) { put_q4(blocks, i, k, q + 8); }

static int pack_q4(const float *w, int N, int K, int G, const float *scale, const int32_t *zero, uint8_t *out,
                   char *err, size_t errlen) {
    return pack_blocks(inf_type(INF_Q4), w, N, K, G, scale, zero, out, put_q4_sym, err, errlen);
}

static int pack_q4a(const float *w, int N, int K, int G, const float *scale, const int32_t *zero, uint8_t *out,
                    char *err, size_t errlen) {
    return pack_blocks(inf_type(INF_Q4A), w, N, K, G, scale, zero, out, put_q4, err, errlen);
}

static void row_q4(const inf_tensor *t, size_t row, float *out) {
    qgeom g = geom_of(t);
    size_t rb = row / INF_ROWS, i = row % INF_ROWS;
    const inf_blk_q4 *blk = (const inf_blk_q4 *)(const void *)t->data + rb * (g.K / 8);
    const uint8_t *sc = t->data + g.codes_bytes, *zp = sc + g.scales_bytes;
    for (size_t k = 0; k < g.K; k++) {
        size_t gi = (rb * g.NG + k / g.G) * INF_ROWS + i;
        int z = g.zeros_bytes ? zp[gi] : 8;
        size_t j = k % 8;
        uint8_t byte = blk[k / 8].q[i][j % 4];
        int nib = j < 4 ? (byte & 15) : (byte >> 4);
        out[k] = cp_dequantize_value(CP_INT4_ASYM, nib, rdf(sc + gi * 4), z); /* s * (nib - z) */
    }
}

/* corr = the zero point of each (row, group): 8 for q4, the stored one for q4a. */
static int prepare_q4(inf_weight *w, const inf_tensor *t, char *err, size_t errlen) {
    qgeom g = geom_of(t);
    w->codes = t->data;
    w->scales = (const float *)(const void *)(t->data + g.codes_bytes);
    size_t n = g.NB * g.NG * INF_ROWS;
    if (!w->corr) w->corr = malloc(n * sizeof *w->corr); /* kept by inf_weight_update */
    if (!w->corr) {
        snprintf(err, errlen, "tensor '%s': out of memory", t->name);
        return -1;
    }
    const uint8_t *z = t->data + g.codes_bytes + g.scales_bytes;
    for (size_t i = 0; i < n; i++) w->corr[i] = g.zeros_bytes ? z[i] : 8;
    return 0;
}

/* ---- q8s: q8's codes and scales, only the nonzero codes (docs/format.md)
 *
 *   counts u32 [NB][NG][NC]   quads of each (row block, group, chunk)
 *   scales f32 [NB][NG][16]   as q8
 *   quads  inf_blk_q8s        counts[0][0][0] quads of (0, 0, 0), then (0, 0, 1), ...
 *
 * NC = ceil(G / INF_Q8S_CHUNK) chunks per group; chunk c of group g covers
 * columns g G + c CHUNK .. min(g G + (c + 1) CHUNK, (g + 1) G) - 1. */

#define Q8S_QUAD ((uint64_t)sizeof(inf_blk_q8s))
#define Q8S_MAX_QUADS ((uint64_t)INF_Q8S_CHUNK / 4) /* a chunk's row has at most CHUNK nonzero codes */

static uint64_t q8s_chunks(uint64_t G) { return (G + INF_Q8S_CHUNK - 1) / INF_Q8S_CHUNK; }

/* Counts and scales: 4 bytes per (row block, group, chunk), 64 per (row block, group). */
static uint64_t q8s_fixed(uint64_t NB, uint64_t NG, uint64_t NC) { return NB * NG * (4 * NC + 4 * INF_ROWS); }

typedef struct {
    size_t NB, NG, NC, G, K, N;
    const uint32_t *counts;
    const uint8_t *scales, *quads;
} q8s_view;

static q8s_view q8s_of(const inf_tensor *t) {
    q8s_view v;
    v.N = t->shape[0], v.K = t->shape[1], v.G = t->group;
    v.NB = (v.N + INF_ROWS - 1) / INF_ROWS, v.NG = v.K / v.G, v.NC = q8s_chunks(v.G);
    v.counts = (const uint32_t *)(const void *)t->data;
    v.scales = t->data + 4 * v.NB * v.NG * v.NC;
    v.quads = t->data + q8s_fixed(v.NB, v.NG, v.NC);
    return v;
}

static uint32_t rdu32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Width of chunk c of a group of G columns. */
static size_t q8s_width(size_t G, size_t c) {
    size_t w = G - c * INF_Q8S_CHUNK;
    return w < INF_Q8S_CHUNK ? w : INF_Q8S_CHUNK;
}

/* Counts within bounds and adding up to the tensor's size, scales as q8's,
 * and in every row of every chunk its columns inside the chunk, the nonzero
 * codes at strictly increasing columns, padding rows (past N) all zero. */
static int check_q8s(const inf_tensor *t, uint64_t *at, const char **field, char *what, size_t n) {
    q8s_view v = q8s_of(t);
    uint64_t nchunk = (uint64_t)v.NB * v.NG * v.NC, fixed = q8s_fixed(v.NB, v.NG, v.NC), quads = 0;
    if (t->bytes < fixed) {
        *at = 0, *field = "byte count";
        snprintf(what, n, "tensor '%s': %llu bytes: q8s needs at least %llu", t->name, (unsigned long long)t->bytes,
                 (unsigned long long)fixed);
        return -1;
    }
    for (uint64_t j = 0; j < nchunk; j++) {
        uint32_t c = rdu32(t->data + 4 * j);
        if (c > Q8S_MAX_QUADS) {
            *at = 4 * j, *field = "quad count";
            snprintf(what, n, "tensor '%s' quad count %llu is %u: expected at most %llu (a chunk of %d columns)",
                     t->name, (unsigned long long)j, c, (unsigned long long)Q8S_MAX_QUADS, INF_Q8S_CHUNK);
            return -1;
        }
        quads += c;
    }
    if (fixed + quads * Q8S_QUAD != t->bytes) {
        *at = 0, *field = "quad count";
        snprintf(what, n, "tensor '%s': its counts add up to %llu quads, %llu bytes with the scales: the tensor has "
                 "%llu", t->name, (unsigned long long)quads, (unsigned long long)(fixed + quads * Q8S_QUAD),
                 (unsigned long long)t->bytes);
        return -1;
    }
    double lim = 1e38 / (16129.0 * (double)v.K);
    uint64_t sc_at = 4 * nchunk;
    for (uint64_t j = 0; j < (uint64_t)v.NB * v.NG * INF_ROWS; j++) {
        float sc = rdf(v.scales + 4 * j);
        if (!isfinite(sc) || sc < 0.0f || (double)sc > lim) {
            *at = sc_at + 4 * j, *field = "scale";
            snprintf(what, n, "tensor '%s' scale %llu is %g: expected finite, >= 0 and at most %.3g (larger overflows "
                     "the integer kernels)", t->name, (unsigned long long)j, (double)sc, lim);
            return -1;
        }
    }
    uint64_t off = 0; /* quads before the current chunk */
    for (size_t rb = 0; rb < v.NB; rb++)
        for (size_t g = 0; g < v.NG; g++)
            for (size_t c = 0; c < v.NC; c++) {
                uint32_t cnt = v.counts[(rb * v.NG + g) * v.NC + c];
                size_t width = q8s_width(v.G, c);
                const inf_blk_q8s *qd = (const inf_blk_q8s *)(const void *)(v.quads + off * Q8S_QUAD);
                for (int i = 0; i < INF_ROWS; i++) {
                    int last = -1;
                    bool pad = rb * INF_ROWS + (size_t)i >= v.N;
                    for (uint32_t j = 0; j < cnt; j++)
                        for (int e = 0; e < 4; e++) {
                            uint64_t where = fixed + (off + j) * Q8S_QUAD + (uint64_t)(4 * i + e);
                            int col = qd[j].idx[i][e], q = qd[j].q[i][e];
                            if ((size_t)col >= width) {
                                *at = where, *field = "column";
                                snprintf(what, n, "tensor '%s' row block %zu group %zu chunk %zu row %d quad %u: "
                                         "column %d: expected below the chunk's width %zu", t->name, rb, g, c, i, j,
                                         col, width);
                                return -1;
                            }
                            if (!q) continue;
                            if (pad) {
                                *at = where + 64, *field = "code";
                                snprintf(what, n, "tensor '%s' row block %zu row %d is past the %zu rows: expected "
                                         "code 0, found %d", t->name, rb, i, v.N, q);
                                return -1;
                            }
                            if (col <= last) {
                                *at = where, *field = "column";
                                snprintf(what, n, "tensor '%s' row block %zu group %zu chunk %zu row %d quad %u: "
                                         "code at column %d after one at %d: expected strictly increasing columns",
                                         t->name, rb, g, c, i, j, col, last);
                                return -1;
                            }
                            last = col;
                        }
                }
                off += cnt;
            }
    return 0;
}

static int from_q8_q8s(const uint8_t *q8, int N, int K, int G, uint8_t *out, uint64_t *bytes) {
    size_t NB = ((size_t)N + INF_ROWS - 1) / INF_ROWS, NG = (size_t)(K / G), NC = q8s_chunks((uint64_t)G);
    uint64_t fixed = q8s_fixed(NB, NG, NC), quads = 0;
    const inf_blk_q8 *all = (const inf_blk_q8 *)(const void *)q8;
    const uint8_t *scales = q8 + NB * (size_t)(K / 4) * sizeof(inf_blk_q8);
    if (out) memcpy(out + 4 * NB * NG * NC, scales, NB * NG * INF_ROWS * sizeof(float));
    uint32_t *counts = out ? (uint32_t *)(void *)out : NULL;
    for (size_t rb = 0; rb < NB; rb++) {
        const inf_blk_q8 *blk = all + rb * (size_t)(K / 4);
        for (size_t g = 0; g < NG; g++)
            for (size_t c = 0; c < NC; c++) {
                size_t c0 = g * (size_t)G + c * INF_Q8S_CHUNK, width = q8s_width((size_t)G, c);
                uint32_t most = 0;
                for (int i = 0; i < INF_ROWS; i++) {
                    uint32_t nz = 0;
                    for (size_t k = c0; k < c0 + width; k++) nz += blk[k / 4].q[i][k % 4] != 0;
                    most = nz > most ? nz : most;
                }
                uint32_t cnt = (most + 3) / 4;
                if (out) {
                    counts[(rb * NG + g) * NC + c] = cnt;
                    inf_blk_q8s *qd = (inf_blk_q8s *)(void *)(out + fixed + quads * Q8S_QUAD);
                    memset(qd, 0, cnt * Q8S_QUAD);
                    for (int i = 0; i < INF_ROWS; i++) {
                        uint32_t e = 0;
                        for (size_t k = c0; k < c0 + width; k++) {
                            int q = blk[k / 4].q[i][k % 4];
                            if (!q) continue;
                            qd[e / 4].idx[i][e % 4] = (uint8_t)(k - c0), qd[e / 4].q[i][e % 4] = (int8_t)q, e++;
                        }
                    }
                }
                quads += cnt;
            }
    }
    *bytes = fixed + quads * Q8S_QUAD;
    return 0;
}

static void row_q8s(const inf_tensor *t, size_t row, float *out) {
    q8s_view v = q8s_of(t);
    size_t rb = row / INF_ROWS, i = row % INF_ROWS;
    memset(out, 0, v.K * sizeof *out); /* a zero code is +0, as q8's 0 * s (s >= 0) */
    uint64_t off = 0;
    for (size_t j = 0; j < rb * v.NG * v.NC; j++) off += v.counts[j];
    for (size_t g = 0; g < v.NG; g++) {
        float s = rdf(v.scales + ((rb * v.NG + g) * INF_ROWS + i) * 4);
        for (size_t c = 0; c < v.NC; c++) {
            uint32_t cnt = v.counts[(rb * v.NG + g) * v.NC + c];
            const inf_blk_q8s *qd = (const inf_blk_q8s *)(const void *)(v.quads + off * Q8S_QUAD);
            for (uint32_t j = 0; j < cnt; j++)
                for (int e = 0; e < 4; e++)
                    if (qd[j].q[i][e])
                        out[g * v.G + c * INF_Q8S_CHUNK + qd[j].idx[i][e]] =
                            cp_dequantize_value(CP_INT8_SYM, qd[j].q[i][e], s, 0);
            off += cnt;
        }
    }
}

/* Quad offsets, and corr = 128 * the sum of each (row, group)'s codes (the
 * +128 activations' correction, as q8's). */
static int prepare_q8s(inf_weight *w, const inf_tensor *t, char *err, size_t errlen) {
    q8s_view v = q8s_of(t);
    w->NC = (int)v.NC;
    w->counts = v.counts;
    w->scales = (const float *)(const void *)v.scales;
    w->slots = v.quads;
    size_t nchunk = v.NB * v.NG * v.NC;
    if (!w->soff) w->soff = malloc((nchunk + 1) * sizeof *w->soff); /* kept by inf_weight_update */
    if (!w->corr) w->corr = malloc(v.NB * v.NG * INF_ROWS * sizeof *w->corr);
    if (!w->soff || !w->corr) {
        snprintf(err, errlen, "tensor '%s': out of memory", t->name);
        return -1;
    }
    w->soff[0] = 0;
    for (size_t j = 0; j < nchunk; j++) w->soff[j + 1] = w->soff[j] + v.counts[j];
    const inf_blk_q8s *qd = (const inf_blk_q8s *)(const void *)v.quads;
    for (size_t rb = 0; rb < v.NB; rb++)
        for (size_t g = 0; g < v.NG; g++)
            for (int i = 0; i < INF_ROWS; i++) {
                int32_t sum = 0;
                for (uint64_t j = w->soff[(rb * v.NG + g) * v.NC]; j < w->soff[(rb * v.NG + g + 1) * v.NC]; j++)
                    for (int e = 0; e < 4; e++) sum += qd[j].q[i][e];
                w->corr[(rb * v.NG + g) * INF_ROWS + (size_t)i] = 128 * sum;
            }
    return 0;
}

/* ---- q8nm: 2:4 (docs/format.md): blocks [NB][K / 8] of inf_blk_q8nm, then
 * scales f32 [NB][NG][16] as q8 */

static int check_q8nm(const inf_tensor *t, uint64_t *at, const char **field, char *what, size_t n) {
    if (check_quant(t, at, field, what, n)) return -1;
    qgeom g = geom_of(t);
    const inf_blk_q8nm *b = (const inf_blk_q8nm *)(const void *)t->data;
    size_t KB = g.K / 8;
    for (size_t rb = 0; rb < g.NB; rb++)
        for (size_t kb = 0; kb < KB; kb++) {
            const inf_blk_q8nm *x = &b[rb * KB + kb];
            uint64_t base = (rb * KB + kb) * sizeof *x;
            for (int i = 0; i < INF_ROWS; i++) {
                int p = x->pos[i];
                if ((p & 3) >= ((p >> 2) & 3) || ((p >> 4) & 3) >= (p >> 6)) {
                    *at = base + 64 + (uint64_t)i, *field = "positions";
                    snprintf(what, n, "tensor '%s' row block %zu columns %zu..%zu row %d: positions byte 0x%02x: "
                             "expected two increasing positions per 4 columns", t->name, rb, 8 * kb, 8 * kb + 7, i, p);
                    return -1;
                }
                if (rb * INF_ROWS + (size_t)i >= g.N)
                    for (int e = 0; e < 4; e++)
                        if (x->q[i][e]) {
                            *at = base + 4 * (uint64_t)i + (uint64_t)e, *field = "code";
                            snprintf(what, n, "tensor '%s' row block %zu row %d is past the %zu rows: expected code 0, "
                                     "found %d", t->name, rb, i, g.N, x->q[i][e]);
                            return -1;
                        }
            }
        }
    return 0;
}

static int from_q8_q8nm(const uint8_t *q8, int N, int K, int G, uint8_t *out, uint64_t *bytes) {
    const inf_type_traits *tr = inf_type(INF_Q8NM);
    qgeom g = geom(tr, (size_t)N, (size_t)K, (size_t)G);
    const inf_blk_q8 *src = (const inf_blk_q8 *)(const void *)q8;
    size_t KB = (size_t)K / 8, K4 = (size_t)K / 4;
    for (size_t rb = 0; rb < g.NB; rb++)
        for (size_t kb = 0; kb < KB; kb++)
            for (int i = 0; i < INF_ROWS; i++) {
                int posb = 0;
                int8_t qs[4];
                for (int h = 0; h < 2; h++) {
                    const int8_t *c = src[rb * K4 + 2 * kb + (size_t)h].q[i]; /* columns 8 kb + 4 h .. + 3 */
                    int sel[2], ns = 0;
                    for (int j = 0; j < 4; j++)
                        if (c[j]) {
                            if (ns == 2) return -1;
                            sel[ns++] = j;
                        }
                    for (int j = 0; j < 4 && ns < 2; j++) /* fill up with the first unused positions, in order */
                        if (!(ns == 1 && sel[0] == j)) {
                            sel[ns++] = j;
                            if (ns == 2 && sel[0] > sel[1]) sel[0] ^= sel[1], sel[1] ^= sel[0], sel[0] ^= sel[1];
                        }
                    posb |= sel[0] << (4 * h) | sel[1] << (4 * h + 2);
                    qs[2 * h] = c[sel[0]], qs[2 * h + 1] = c[sel[1]];
                }
                if (out) {
                    inf_blk_q8nm *d = (inf_blk_q8nm *)(void *)out + rb * KB + kb;
                    memcpy(d->q[i], qs, 4);
                    d->pos[i] = (uint8_t)posb;
                }
            }
    size_t q8_codes = g.NB * K4 * sizeof(inf_blk_q8);
    if (out) memcpy(out + g.codes_bytes, q8 + q8_codes, g.scales_bytes);
    *bytes = g.codes_bytes + g.scales_bytes;
    return 0;
}

/* The column (0..7) of entry e of a block row with positions byte p. */
static inline int nm_col(int p, int e) { return 4 * (e / 2) + ((p >> (2 * e)) & 3); }

static void row_q8nm(const inf_tensor *t, size_t row, float *out) {
    qgeom g = geom_of(t);
    size_t rb = row / INF_ROWS, i = row % INF_ROWS, KB = g.K / 8;
    const inf_blk_q8nm *b = (const inf_blk_q8nm *)(const void *)t->data + rb * KB;
    const uint8_t *sc = t->data + g.codes_bytes;
    memset(out, 0, g.K * sizeof *out); /* a zero code is +0, as q8's 0 * s (s >= 0) */
    for (size_t kb = 0; kb < KB; kb++)
        for (int e = 0; e < 4; e++) {
            size_t k = 8 * kb + (size_t)nm_col(b[kb].pos[i], e);
            if (b[kb].q[i][e])
                out[k] = cp_dequantize_value(CP_INT8_SYM, b[kb].q[i][e], rdf(sc + ((rb * g.NG + k / g.G) * INF_ROWS + i) * 4), 0);
        }
}

static int prepare_q8nm(inf_weight *w, const inf_tensor *t, char *err, size_t errlen) {
    qgeom g = geom_of(t);
    w->codes = t->data;
    w->scales = (const float *)(const void *)(t->data + g.codes_bytes);
    if (!w->corr) w->corr = malloc(g.NB * g.NG * INF_ROWS * sizeof *w->corr); /* kept by inf_weight_update */
    if (!w->corr) {
        snprintf(err, errlen, "tensor '%s': out of memory", t->name);
        return -1;
    }
    const inf_blk_q8nm *b = (const inf_blk_q8nm *)(const void *)w->codes;
    for (int rb = 0; rb < w->NB; rb++)
        for (int gi = 0; gi < w->NG; gi++)
            for (int i = 0; i < INF_ROWS; i++) {
                int32_t s = 0;
                for (int kb = gi * w->G / 8; kb < (gi + 1) * w->G / 8; kb++)
                    for (int e = 0; e < 4; e++) s += b[(size_t)rb * (w->K / 8) + kb].q[i][e];
                w->corr[((size_t)rb * w->NG + gi) * INF_ROWS + i] = 128 * s;
            }
    return 0;
}

/* ------------------------------------------------------------------ the table */

/* Work (multiply-adds) below which a float product runs on one thread:
 * waking a sleeping OpenMP thread (OMP_WAIT_POLICY=PASSIVE) costs tens of
 * microseconds, more than a small layer's whole product. */
#define INF_PAR_MIN ((size_t)1 << 18)

/* The same for the integer kernels, which are about ten times faster per
 * weight than f32: a decode product of the "small" model (at most 384 x 1536
 * weights) takes about 15 us on one thread, less than one wake-up, and
 * splitting it made 2-thread decode 2.7x slower than 1 thread under
 * OMP_WAIT_POLICY=PASSIVE (docs/inference.md). Batched int8 products
 * (prompts, evaluation) split from 4M multiply-adds, the size from which
 * ag_sgemm splits f32 products: at the nanoGPT baseline's 64-token prompt
 * (products of 1M to 4M multiply-adds) under OMP_WAIT_POLICY=PASSIVE,
 * splitting from 1M made the int8 prompt 0.83-0.96x f32 at 2 threads, from 4M
 * 0.95-1.07x (paired runs, docs/inference.md). */
#define INF_QPAR_MIN ((size_t)1 << 22)
#define INF_QPAR_BATCH_MIN ((size_t)1 << 22)

static const inf_type_traits traits[INF_DTYPE_COUNT] = {
    [INF_F32] = {
        .name = "f32", .scheme = -1,
        .cols_per_block = 1, .block_bytes = 4, .group_multiple = 0, .matrix_only = false, .has_zero = false,
        .check = check_f32, .pack = pack_f32, .row = row_f32,
        .act = INF_ACT_FLOAT, .prepare = prepare_f32,
        /* one token: the matrix-vector kernel; more: sgemm on the weight itself */
        .gemm_min_t = 2, .mm_blocks = 1, .par_min_decode = INF_PAR_MIN, .par_min_batch = INF_PAR_MIN,
        .decode_blocks = 4,
        .matvec = {[INF_ISA_SCALAR] = inf_f32_scalar, [INF_ISA_AVX2] = X86(inf_f32_avx2),
                   [INF_ISA_AVX512] = X86(inf_f32_avx512)},
    },
    [INF_Q8] = {
        .name = "q8", .scheme = CP_INT8_SYM,
        .cols_per_block = 4, .block_bytes = (int)sizeof(inf_blk_q8), .group_multiple = 32, .matrix_only = true,
        .has_zero = false,
        .check = check_quant, .pack = pack_q8, .row = row_q8,
        .act = INF_ACT_LIMBS | INF_ACT_U8, .prepare = prepare_q8,
        /* the integer kernel at every token count: with its token tile it is
         * faster than dequantizing and sgemm (docs/inference.md) */
        .gemm_min_t = INT_MAX, .mm_blocks = 2, .par_min_decode = INF_QPAR_MIN, .par_min_batch = INF_QPAR_BATCH_MIN,
        .decode_blocks = 2,
        .tile = {[INF_ISA_SCALAR] = inf_q8_scalar, [INF_ISA_AVX2] = X86(inf_q8_avx2),
                 [INF_ISA_AVX512] = X86(inf_q8_avx512)},
        .deq = {[INF_ISA_SCALAR] = inf_deq_q8_scalar, [INF_ISA_AVX512] = X86(inf_deq_q8_avx512)},
    },
    [INF_Q4] = {
        .name = "q4", .scheme = CP_INT4_SYM,
        .cols_per_block = 8, .block_bytes = (int)sizeof(inf_blk_q4), .group_multiple = 32, .matrix_only = true,
        .has_zero = false,
        .check = check_quant, .pack = pack_q4, .row = row_q4,
        .act = INF_ACT_LIMBS | INF_ACT_SUMS, .prepare = prepare_q4,
        /* int4's token-tile kernel is slower than dequantize + sgemm from 16 tokens */
        .gemm_min_t = INF_GEMM_MIN_T, .mm_blocks = 2, .par_min_decode = INF_QPAR_MIN,
        .par_min_batch = INF_QPAR_BATCH_MIN, .decode_blocks = 2,
        .tile = {[INF_ISA_SCALAR] = inf_q4_scalar, [INF_ISA_AVX2] = X86(inf_q4_avx2),
                 [INF_ISA_AVX512] = X86(inf_q4_avx512)},
        .deq = {[INF_ISA_SCALAR] = inf_deq_q4_scalar, [INF_ISA_AVX512] = X86(inf_deq_q4_avx512)},
    },
    [INF_Q4A] = {
        .name = "q4a", .scheme = CP_INT4_ASYM,
        .cols_per_block = 8, .block_bytes = (int)sizeof(inf_blk_q4), .group_multiple = 32, .matrix_only = true,
        .has_zero = true,
        .check = check_quant, .pack = pack_q4a, .row = row_q4,
        .act = INF_ACT_LIMBS | INF_ACT_SUMS, .prepare = prepare_q4,
        .gemm_min_t = INF_GEMM_MIN_T, .mm_blocks = 2, .par_min_decode = INF_QPAR_MIN,
        .par_min_batch = INF_QPAR_BATCH_MIN, .decode_blocks = 2,
        .tile = {[INF_ISA_SCALAR] = inf_q4_scalar, [INF_ISA_AVX2] = X86(inf_q4_avx2),
                 [INF_ISA_AVX512] = X86(inf_q4_avx512)},
        .deq = {[INF_ISA_SCALAR] = inf_deq_q4_scalar, [INF_ISA_AVX512] = X86(inf_deq_q4_avx512)},
    },
    [INF_Q8S] = {
        .name = "q8s", .scheme = CP_INT8_SYM,
        .cols_per_block = 1, .block_bytes = (int)sizeof(inf_blk_q8s), .group_multiple = 32, .matrix_only = true,
        .has_zero = false, .sparse = true, .from_q8 = from_q8_q8s,
        .check = check_q8s, .pack = NULL, .row = row_q8s,
        .act = INF_ACT_LIMBS | INF_ACT_U8 | INF_ACT_PACK, .prepare = prepare_q8s,
        /* the integer kernel at every token count, as q8: the same bits as the dense q8 file */
        .gemm_min_t = INT_MAX, .mm_blocks = 2, .par_min_decode = INF_QPAR_MIN, .par_min_batch = INF_QPAR_BATCH_MIN,
        .decode_blocks = 2,
        .tile = {[INF_ISA_SCALAR] = inf_q8s_scalar, [INF_ISA_AVX2] = X86(inf_q8s_avx2),
                 [INF_ISA_AVX512] = X86(inf_q8s_avx512)},
        .deq = {[INF_ISA_SCALAR] = inf_deq_q8s_scalar},
    },
    [INF_Q8NM] = {
        .name = "q8nm", .scheme = CP_INT8_SYM,
        .cols_per_block = 8, .block_bytes = (int)sizeof(inf_blk_q8nm), .group_multiple = 32, .matrix_only = true,
        .has_zero = false, .from_q8 = from_q8_q8nm,
        .check = check_q8nm, .pack = NULL, .row = row_q8nm,
        .act = INF_ACT_LIMBS | INF_ACT_U8, .prepare = prepare_q8nm,
        .gemm_min_t = INT_MAX, .mm_blocks = 2, .par_min_decode = INF_QPAR_MIN, .par_min_batch = INF_QPAR_BATCH_MIN,
        .decode_blocks = 2,
        .tile = {[INF_ISA_SCALAR] = inf_q8nm_scalar, [INF_ISA_AVX2] = X86(inf_q8nm_avx2),
                 [INF_ISA_AVX512] = X86(inf_q8nm_avx512)},
        .deq = {[INF_ISA_SCALAR] = inf_deq_q8nm_scalar},
    },
};

const inf_type_traits *inf_type(int dt) {
    if (dt < 0 || dt >= INF_DTYPE_COUNT || !traits[dt].name) return NULL;
    return &traits[dt];
}

const char *inf_type_name(int dt) {
    const inf_type_traits *tr = inf_type(dt);
    return tr ? tr->name : "?";
}

int inf_dtype_from_name(const char *s) {
    for (int i = 0; i < INF_DTYPE_COUNT; i++)
        if (inf_type(i) && strcmp(s, traits[i].name) == 0) return i;
    return -1;
}

static bool mul_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static bool add_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_add_overflow(a, b, out); }

int inf_tensor_bytes(int dt, int ndim, const uint32_t *shape, uint32_t group, uint64_t *bytes, char *err,
                     size_t errlen) {
    const inf_type_traits *tr = inf_type(dt);
    if (!tr) {
        snprintf(err, errlen, "storage type %d: expected 0..%d", dt, INF_DTYPE_COUNT - 1);
        return -1;
    }
    if (ndim < 1 || ndim > 4) {
        snprintf(err, errlen, "ndim %d: expected 1..4", ndim);
        return -1;
    }
    if (tr->matrix_only && ndim != 2) {
        snprintf(err, errlen, "ndim %d: %s stores matrices only (ndim 2)", ndim, tr->name);
        return -1;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 1 || shape[i] > INF_MAX_DIM) {
            snprintf(err, errlen, "dimension %d is %u: expected 1..%u", i, shape[i], INF_MAX_DIM);
            return -1;
        }
    if (!tr->group_multiple) {
        if (group != 0) {
            snprintf(err, errlen, "group size %u: expected 0 for %s", group, tr->name);
            return -1;
        }
        uint64_t n = (uint64_t)tr->block_bytes;
        for (int i = 0; i < ndim; i++)
            if (!mul_u64(n, shape[i], &n)) {
                snprintf(err, errlen, "size overflows 64 bits at dimension %d", i);
                return -1;
            }
        *bytes = n;
        return 0;
    }
    uint64_t N = shape[0], K = shape[1];
    if (group == 0 || group % (uint32_t)tr->group_multiple != 0 || K % group != 0) {
        snprintf(err, errlen, "group size %u: expected a positive multiple of %d dividing the input size %llu",
                 group, tr->group_multiple, (unsigned long long)K);
        return -1;
    }
    uint64_t NB = (N + INF_ROWS - 1) / INF_ROWS, NG = K / group, codes, groups, scales, zeros, n;
    if (tr->sparse) { /* the counts and scales; the slots follow (inf_tensor_bytes_max) */
        *bytes = q8s_fixed(NB, NG, q8s_chunks(group)); /* at most 2^20 x 2^24 x 68: no overflow */
        return 0;
    }
    bool ok = mul_u64(NB, K / (uint64_t)tr->cols_per_block, &codes) &&
              mul_u64(codes, (uint64_t)tr->block_bytes, &codes) && mul_u64(NB, NG, &groups) &&
              mul_u64(groups, INF_ROWS, &groups) && mul_u64(groups, sizeof(float), &scales);
    zeros = tr->has_zero ? groups : 0;
    if (!ok || !add_u64(codes, scales, &n) || !add_u64(n, zeros, &n)) {
        snprintf(err, errlen, "size overflows 64 bits");
        return -1;
    }
    *bytes = n;
    return 0;
}

int inf_tensor_bytes_max(int dt, int ndim, const uint32_t *shape, uint32_t group, uint64_t *max, char *err,
                         size_t errlen) {
    if (inf_tensor_bytes(dt, ndim, shape, group, max, err, errlen)) return -1;
    if (!inf_type(dt)->sparse) return 0;
    uint64_t NB = ((uint64_t)shape[0] + INF_ROWS - 1) / INF_ROWS, NG = shape[1] / group, slots, extra;
    if (!mul_u64(NB * NG * q8s_chunks(group), Q8S_MAX_QUADS, &slots) || !mul_u64(slots, Q8S_QUAD, &extra) ||
        !add_u64(*max, extra, max)) {
        snprintf(err, errlen, "size overflows 64 bits");
        return -1;
    }
    return 0;
}
