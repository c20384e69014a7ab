/* gguf.h - GGUF version 3 files for llama.cpp: ggml's Q8_0 / Q4_0 / Q4_1
 * blocks and fp16, a writer of a pare export plan as llama.cpp's `gpt2`
 * architecture, and a validating reader (every length checked against the
 * bytes left, as infer/format.c's). docs/gguf.md has the mapping and traps.
 *
 * Blocks (ggml-common.h; 32 weights of one output row, fp16 scale d):
 *   Q8_0  d = amax / 127, q = roundf(x * (1 / d)) (half away from zero), x' = q d
 *   Q4_0  m = the value of largest magnitude (signed), d = m / -8,
 *         q = min(15, (int8)(x * (1 / d) + 8.5)), x' = (q - 8) d; byte j holds
 *         element j in its low nibble and element j + 16 in its high nibble
 *   Q4_1  d = (max - min) / 15, m = min (both fp16), q = min(15, (int8)((x -
 *         min) * (1 / d) + 0.5)), x' = q d + m; nibbles as Q4_0
 * The scale is computed in float and used unrounded by the quantizer (as
 * ggml's reference quantizers do); the file holds its fp16 rounding.
 */
#ifndef PARE_INF_GGUF_H
#define PARE_INF_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/plan.h"
#include "train/data.h"

/* ggml's type ids of the types pare writes. */
enum { GG_F32 = 0, GG_F16 = 1, GG_Q4_0 = 2, GG_Q4_1 = 3, GG_Q8_0 = 8 };
#define GG_BLOCK 32
#define GG_ALIGN 32

typedef struct { uint16_t d; int8_t qs[GG_BLOCK]; } gg_block_q8_0;
typedef struct { uint16_t d; uint8_t qs[GG_BLOCK / 2]; } gg_block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[GG_BLOCK / 2]; } gg_block_q4_1;
_Static_assert(sizeof(gg_block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(gg_block_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(gg_block_q4_1) == 20, "Q4_1 block is 20 bytes");

/* One row of the traits table per ggml type pare knows. */
typedef struct gg_type_traits {
    int id;
    const char *name;      /* "f32", "q8_0", ... */
    int block;             /* elements per block */
    int block_bytes;       /* bytes per block */
    void (*quantize_row)(const float *x, void *out, int K);  /* K a multiple of block */
    void (*dequantize_row)(const void *in, float *y, int K);
} gg_type_traits;

/* The traits of ggml type id, or NULL when pare does not know it. */
const gg_type_traits *gg_type(int id);
/* The ggml type named name ("f32", "q8_0", "q4_0", "q4_1"), or -1. */
int gg_type_from_name(const char *name);

/* float -> IEEE fp16, round to nearest even (NaN stays NaN, overflow gives inf), and back (exact). */
uint16_t gg_fp16(float f);
float gg_fp32(uint16_t h);

/* Writes plan p (uniform, dense, n_head * head_dim == n_embd) with vocabulary
 * v as a GGUF v3 file of llama.cpp's gpt2 architecture at path (through a
 * temporary file and a rename). The linear weights (attn_qkv, attn_output,
 * ffn_up, ffn_down, an untied output) in ggml type wtype (GG_F32, GG_Q8_0,
 * GG_Q4_0, GG_Q4_1), everything else F32; bias = false models get zero
 * biases. source and run (NULL = omitted) go into pare.source / pare.run.
 * Returns 0, or -1 with err naming the problem: an architecture gpt2 cannot
 * express (per-layer head counts or MLP widths, factorized sites, an
 * attention width unlike n_embd), a plan entry with fixed scales or masks it
 * cannot honour, a width that is not a multiple of 32 (naming the tensor),
 * non-finite weights, I/O errors. */
int gg_write_plan(const pm_plan *p, const tr_vocab *v, int wtype, const char *source, const char *run,
                  const char *path, char *err, size_t errlen);

/* ---- the validating reader ------------------------------------------------ */

enum {
    GGV_U8 = 0, GGV_I8, GGV_U16, GGV_I16, GGV_U32, GGV_I32, GGV_F32, GGV_BOOL, GGV_STRING, GGV_ARRAY, GGV_U64,
    GGV_I64, GGV_F64, GGV_COUNT
};

typedef struct gg_kv {
    const char *key;        /* NUL-terminated copy (owned by the file) */
    int type;               /* GGV_* */
    int arr_type;           /* element type of an array */
    uint64_t n;             /* array length (1 for scalars) */
    const uint8_t *val;     /* the value's bytes in the file's buffer (strings: the u64 length first) */
} gg_kv;

typedef struct gg_tensor {
    const char *name;
    uint32_t ndim;
    uint64_t ne[4];
    int type;
    uint64_t offset;        /* relative to the data section */
    uint64_t bytes;
    const uint8_t *data;
} gg_tensor;

typedef struct gg_file {
    uint8_t *buf;           /* the whole file (owned) */
    size_t size;
    uint32_t version, alignment;
    uint64_t n_kv, n_tensors;
    gg_kv *kv;
    gg_tensor *t;
    char *names;            /* storage of the keys and names */
} gg_file;

/* Parses and validates buf[0, size) (taken over: freed by gg_close, also on
 * failure): magic, version 3, every count and length against the bytes left,
 * value types, UTF-8-free byte strings, tensor dims (1..4, nonzero, rows
 * multiples of the block), known types, offsets aligned, in order,
 * contiguous up to padding and inside the file, general.alignment a u32
 * power of two. Returns 0, or -1 with err naming the field and its offset. */
int gg_open_mem(gg_file *f, uint8_t *buf, size_t size, char *err, size_t errlen);
/* Reads path and gg_open_mem's it. */
int gg_open(gg_file *f, const char *path, char *err, size_t errlen);
void gg_close(gg_file *f); /* f may be zeroed */

/* The KV named key, or NULL. */
const gg_kv *gg_find_kv(const gg_file *f, const char *key);
/* A u32 KV's value (-1 when absent or of another type). */
int64_t gg_kv_u32(const gg_file *f, const char *key);
/* The tensor named name, or NULL. */
const gg_tensor *gg_find_tensor(const gg_file *f, const char *name);

#endif
