/* types.h - storage types: one row of a traits table per type, as ggml's
 * type traits. Everything pare knows about a storage type is in its row
 * (infer/types.c) and the kernels the row points to (infer/kernels.c for the
 * scalar references, infer/kernels_x86.c for the SIMD versions):
 *
 *   bytes      the layout's geometry (columns per block struct, block bytes,
 *              group rule, zero points), from which inf_tensor_bytes
 *              computes and the reader checks a tensor's size;
 *   check      the contents the kernels rely on (finite scales >= 0, zero
 *              points in range): the reader's content check;
 *   pack       floats to the layout, with the grid's own scales or FIXED
 *              ones given by an export plan (a quantization-aware
 *              checkpoint's), validated and used as given: the exporter;
 *   row        one dequantized row (embedding lookups, tests);
 *   act        what the kernels need of the activations (float rows, limbs,
 *              their +128 form, their group sums);
 *   prepare    the weight's tables for the kernels (inf_weight.corr);
 *   kernels    per instruction set: the tile kernel (quantized rows of
 *              out[T, N] from the limbs), the matrix-vector rows (f32), the
 *              dequantize kernel (the GEMM path); a missing entry falls back
 *              to the next lower instruction set, the scalar entry is the
 *              reference every other one must match bit for bit;
 *   policy     when inf_matmul dequantizes and calls sgemm, how rows are
 *              grouped and split over threads, what a decode thread claims.
 *
 * Adding a storage type: a dtype number (format.h), its block struct with a
 * static_assert on its size (below), its row in types.c, its kernels, and a
 * line in tests/test_kernels.c's list of types (docs/format.md).
 */
#ifndef PARE_INF_TYPES_H
#define PARE_INF_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format.h"
#include "kernels.h"

/* 16 rows x 4 consecutive columns of int8 codes: q[row][col]. */
typedef struct inf_blk_q8 {
    int8_t q[INF_ROWS][4];
} inf_blk_q8;
_Static_assert(sizeof(inf_blk_q8) == 64, "inf_blk_q8 is 64 bytes");

/* 16 rows x 8 consecutive columns of 4-bit codes: byte q[row][j] holds column
 * j in its low nibble and column j + 4 in its high nibble. */
typedef struct inf_blk_q4 {
    uint8_t q[INF_ROWS][4];
} inf_blk_q4;
_Static_assert(sizeof(inf_blk_q4) == 64, "inf_blk_q4 is 64 bytes");

/* q8s (unstructured sparse int8): a group's columns are taken in chunks of
 * INF_Q8S_CHUNK (the last one of a group may be narrower); a (row block,
 * group, chunk) holds quads, each four entries per row: entry s of row i is
 * the code q[i][s] at column chunk start + idx[i][s] (q = 0: padding, adds
 * nothing). A row's nonzero codes come in increasing column order, quad
 * after quad. docs/format.md. */
#define INF_Q8S_CHUNK 256
typedef struct inf_blk_q8s {
    uint8_t idx[INF_ROWS][4];
    int8_t q[INF_ROWS][4];
} inf_blk_q8s;
_Static_assert(sizeof(inf_blk_q8s) == 128, "inf_blk_q8s is 128 bytes");

/* q8nm (2:4 sparse int8): 16 rows x 8 consecutive columns, two codes kept
 * of each 4 columns: entry e (0..3) of row i is the code q[i][e] at column
 * 4 (e / 2) + ((pos[i] >> 2e) & 3) of the block; the two positions of a
 * half are strictly increasing. */
typedef struct inf_blk_q8nm {
    int8_t q[INF_ROWS][4];
    uint8_t pos[INF_ROWS];
} inf_blk_q8nm;
_Static_assert(sizeof(inf_blk_q8nm) == 80, "inf_blk_q8nm is 80 bytes");

/* What a type's kernels read of the activations (inf_type_traits.act). */
enum {
    INF_ACT_FLOAT = 0, /* the float rows themselves */
    INF_ACT_LIMBS = 1, /* the int8 limbs of compress/grid.h and the rows' scales */
    INF_ACT_U8 = 2,    /* the limbs + 128 (the unsigned operand of VNNI's vpdpbusd) */
    INF_ACT_SUMS = 4,  /* the limbs' group sums (zero-point terms) */
    INF_ACT_PACK = 8,  /* the limbs of each column packed in one int32 (the gather operand of q8s) */
};

struct inf_type_traits {
    const char *name; /* "f32", "q8", "q4", "q4a": as --format and the metadata spell it */
    int scheme;       /* its grid (cp_qscheme of compress/grid.h), -1 for f32 */

    /* bytes: a tensor seen as [N, K] (K = last dimension). Quantized layouts
     * are row blocks of 16 rows (format.h): NB x (K / cols_per_block) block
     * structs, then f32 scales [NB][K / G][16], then (has_zero) u8 zero
     * points [NB][K / G][16]. A type without groups (group_multiple 0)
     * stores block_bytes per value, any ndim. */
    int cols_per_block; /* kb: columns one block struct covers (f32: 1) */
    int block_bytes;    /* bytes of one block struct (f32: 4 bytes per value) */
    int group_multiple; /* G must be a positive multiple of this dividing K (0: no groups) */
    bool matrix_only;   /* only 2-D tensors */
    bool has_zero;      /* stores zero points */
    /* sparse (q8s): the size depends on the contents (inf_tensor_bytes gives
     * the smallest, inf_tensor_bytes_max the largest, check the exact one) */
    bool sparse;
    /* q8s, q8nm: the layout is made from the dense q8 layout of the same
     * codes and scales (pack is NULL): the bytes of q8 layout q8 ([N, K],
     * group G) in this layout; out NULL: only the size. Returns 0, or -1
     * when these codes do not fit it (q8nm: more than 2 of 4 nonzero). */
    int (*from_q8)(const uint8_t *q8, int N, int K, int G, uint8_t *out, uint64_t *bytes);

    /* Contents of a tensor whose size is already checked: returns 0, or -1
     * with *at = the offending byte's offset inside the tensor's data,
     * *field its name ("scale", "zero point") and `what` the message. NULL:
     * nothing to check. */
    int (*check)(const inf_tensor *t, uint64_t *at, const char **field, char *what, size_t n);

    /* out (zeroed, inf_tensor_bytes of [N, K] with group G) = w[N, K]
     * (row-major, finite) in this layout. scale, zero: NULL (the grid
     * computes them) or fixed parameters [N, K / G] used as given after
     * validation (cp_quantize_fixed). Returns 0, or -1 with err. */
    int (*pack)(const float *w, int N, int K, int G, const float *scale, const int32_t *zero, uint8_t *out,
                char *err, size_t errlen);

    /* out[K] = row `row` of t seen as [N, K], dequantized: exactly
     * cp_dequantize_value of each code. */
    void (*row)(const inf_tensor *t, size_t row, float *out);

    /* kernels */
    unsigned act; /* INF_ACT_* flags */
    /* Fills w (dtype, N, K, G, NB, NG already set) from the validated 2-D
     * tensor t: data views and owned tables. Returns 0, or -1 with err. */
    int (*prepare)(inf_weight *w, const inf_tensor *t, char *err, size_t errlen);
    int gemm_min_t;           /* tokens from which inf_matmul runs sgemm (on the dequantized weight if deq) */
    int mm_blocks;            /* row blocks per work item of inf_matmul's row split */
    size_t par_min_decode;    /* multiply-adds from which a one-token product splits over threads */
    size_t par_min_batch;     /* the same for 2 .. gemm_min_t - 1 tokens */
    int decode_blocks;        /* row blocks a thread claims at once in the decode step */
    inf_qkernel tile[INF_ISA_COUNT];   /* quantized: rows of out[T, N] from the limbs in the context */
    inf_fkernel matvec[INF_ISA_COUNT]; /* float weights: rows of out[N] = W x */
    inf_dkernel deq[INF_ISA_COUNT];    /* quantized: row blocks to f32 [K, ldo] for sgemm */
};

/* Lays out codes q[N, K] that are already on integer type dtype's grid
 * (q8: -127..127; q4: -7..7; q4a: 0..15), with scales and zero points
 * [N, K / G] (zero: q4a only, else ignored), in the type's layout into out
 * (inf_tensor_bytes of [N, K] with group G): the bytes inf_pack_matrix_fixed
 * makes from the floats (q - z) s with those scales. For quantization-aware
 * training, which has the codes already. Returns 0, or -1 with err (not an
 * integer type, a group the type cannot use, a code outside the grid, q4a
 * without zero points). */
int inf_pack_codes(int dtype, const int8_t *q, int N, int K, int G, const float *scale, const int32_t *zero,
                   uint8_t *out, char *err, size_t errlen);

/* The traits of storage type dt (an inf_dtype), or NULL when dt is unknown. */
const inf_type_traits *inf_type(int dt);

#endif
