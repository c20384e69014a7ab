/* format.h - the model file: one self-describing, versioned, little-endian file
 * that every model pare exports is written to and the runtime reads.
 *
 *   header (56 bytes) | config (40) | vocabulary | metadata | tensor table | zero padding |
 *   tensor data (each tensor at a 64-byte aligned offset) | u64 checksum
 *
 * docs/format.md specifies every byte. Storage types are rows of a traits table
 * (inf_type_traits, below): a new type (activation quantization, sparse, N:M,
 * low-rank) is one row, its block struct and its kernel.
 *
 * Quantized matrices W[N, K] (PyTorch's [out, in]) are stored row-block
 * interleaved for the kernels: rows are taken 16 at a time (a row block; the
 * last block is padded with zero rows), and within a block the codes of 16 rows
 * for a few consecutive columns form one 64-byte block struct, so one pass over
 * the tensor streams the whole matrix:
 *
 *   codes   [NB][K / kb] blocks (inf_blk_q8: kb = 4 columns, inf_blk_q4: kb = 8)
 *   scales  f32 [NB][K / G][16]      (NB = ceil(N / 16), G = group size)
 *   zeros   u8  [NB][K / G][16]      (q4a only)
 *
 * The reader (inf_file_parse) trusts nothing: see its contract.
 */
#ifndef PARE_INF_FORMAT_H
#define PARE_INF_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INF_MAGIC "PAREMODL"
#define INF_VERSION 1u
#define INF_HEADER_BYTES 56u
#define INF_CONFIG_BYTES 40u
#define INF_ALIGN 64u
#define INF_ROWS 16 /* rows per interleaved row block */

/* Caps the reader enforces (a file beyond them is rejected, not trusted). */
#define INF_MAX_TENSORS 65536u
#define INF_NAME_MAX 63u       /* bytes of a tensor name */
#define INF_MAX_DIM (1u << 24) /* each dimension */
#define INF_MAX_VOCAB (1u << 24)
#define INF_MAX_TOKEN 64u      /* bytes of one vocabulary entry */
#define INF_MAX_LAYERS 1024u
#define INF_MAX_WIDTH 65536u   /* n_embd and the MLP width */
#define INF_MAX_CTX (1u << 20)
#define INF_MAX_META (1u << 20) /* bytes of the metadata text */

/* ---- storage types -------------------------------------------------------- */

typedef enum inf_dtype {
    INF_F32 = 0, /* IEEE binary32, row-major */
    INF_Q8 = 1,  /* int8 symmetric, per-group scales (G = K: per output channel) */
    INF_Q4 = 2,  /* int4 symmetric [-7, 7] stored as q + 8, two per byte, per-group scales */
    INF_Q4A = 3, /* int4 asymmetric [0, 15] with a zero point per group */
    INF_DTYPE_COUNT
} inf_dtype;

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

typedef struct inf_tensor inf_tensor;

/* One row per storage type. */
typedef struct inf_type_traits {
    const char *name;      /* "f32", "q8", "q4", "q4a" */
    int cols_per_block;    /* kb: columns one block struct covers (f32: 1) */
    int block_bytes;       /* bytes of one block struct (f32: 4 bytes per value) */
    int group_multiple;    /* G must be a multiple of this (0: no groups) */
    bool matrix_only;      /* only 2-D tensors */
    bool has_zero;         /* stores zero points */
    /* out[K] = the dequantized row `row` (< N) of a tensor seen as [N, K]
     * (K = last dimension); exactly cp_dequantize_value of each code */
    void (*row)(const inf_tensor *t, size_t row, float *out);
} inf_type_traits;

/* The traits of a type, or NULL when dt is out of range. */
const inf_type_traits *inf_type(int dt);

/* The storage type named s ("f32", "q8", ...), or -1. */
int inf_dtype_from_name(const char *s);

/* Bytes of a tensor's data for type dt, shape (ndim, shape) and group size,
 * computed with overflow-checked multiplication one factor at a time. Returns
 * 0, or -1 with a message naming what is inconsistent (a quantized type on a
 * tensor that is not 2-D, a group size that is not a positive multiple of the
 * type's multiple dividing K, a size that overflows 64 bits). */
int inf_tensor_bytes(int dt, int ndim, const uint32_t *shape, uint32_t group, uint64_t *bytes, char *err,
                     size_t errlen);

/* ---- the parsed file ------------------------------------------------------ */

typedef struct inf_config {
    uint32_t n_layer, n_head, n_embd, n_hidden, ctx, vocab;
    uint32_t bias, tied; /* 0 or 1 */
    float ln_eps;
} inf_config;

typedef struct inf_vocab {
    uint32_t kind;           /* 0 = byte, 1 = char (tr_vocab_kind) */
    uint32_t n;              /* entries */
    const uint8_t **tok;     /* [n] pointers into the file buffer (not NUL-terminated) */
    uint8_t *len;            /* [n] bytes of each entry */
} inf_vocab;

struct inf_tensor {
    char name[INF_NAME_MAX + 1];
    int dtype;
    int ndim;
    uint32_t shape[4];      /* unused trailing entries are 1 */
    uint32_t group;         /* G of quantized types, 0 for f32 */
    uint64_t offset, bytes; /* in the file */
    const uint8_t *data;    /* file buffer + offset */
};

typedef struct inf_file {
    uint8_t *owned;         /* the buffer when the reader allocated it (inf_file_open), else NULL */
    const uint8_t *buf;     /* the file's bytes */
    size_t len;
    uint32_t version;
    inf_config cfg;
    inf_vocab vocab;
    const char *meta;       /* metadata: "key=value\n" lines (not NUL-terminated), into the buffer */
    uint32_t meta_len;
    uint32_t n_tensors;
    inf_tensor *t;          /* [n_tensors] (owned) */
    uint64_t data_offset;
} inf_file;

/* Validates buf[0, len) as a model file and fills f with views into buf (buf
 * must outlive f; f->owned stays NULL). Checks, in order: the size (at least a
 * header and a checksum), every read against the bytes left, the magic, the
 * version, reserved fields, the file size recorded in the header, the config
 * (caps, heads divide width, eps finite and positive), the vocabulary (count =
 * config vocab, entry lengths 1..INF_MAX_TOKEN), the metadata (at most
 * INF_MAX_META bytes, no NUL byte), the tensor table (count cap,
 * name length 1..INF_NAME_MAX, printable names, unique names, storage type in
 * range, ndim 1..4 each dimension 1..INF_MAX_DIM and unused ones 1, group size
 * for the type, byte count equal to what the type needs, offsets 64-byte
 * aligned, inside the data region and not overlapping), the data offset, the
 * model (every GPT tensor present with the shape the config implies, 1-D ones
 * f32, nothing unknown), the tensor contents (scales finite, zero points <=
 * 15), and last the FNV-1a 64 checksum. Returns 0, or -1 with err =
 * "<name>: byte <offset>: <field>: <what was expected>"; nothing is left
 * allocated on failure. name labels messages (a path). */
int inf_file_parse(inf_file *f, const uint8_t *buf, size_t len, const char *name, char *err, size_t errlen);

/* Reads the file at path (its size first, then the bytes into a 64-byte
 * aligned buffer) and parses it as inf_file_parse does. f owns the buffer.
 * Returns 0, or -1 with err (cannot open or read, or any parse error). */
int inf_file_open(inf_file *f, const char *path, char *err, size_t errlen);

/* Frees what f owns; f may be NULL or zeroed. */
void inf_file_close(inf_file *f);

/* The tensor with this name, or NULL. */
const inf_tensor *inf_file_find(const inf_file *f, const char *name);

/* The value of `key` in the metadata lines ("key=value"), copied into buf (n
 * bytes, NUL-terminated, truncated if longer), or NULL when absent. */
const char *inf_file_meta(const inf_file *f, const char *key, char *buf, size_t n);


/* ---- writing -------------------------------------------------------------- */

/* One tensor to write: its data are `bytes` bytes already in the storage
 * type's layout (see inf_pack_* in quantize.h for making them). */
typedef struct inf_tensor_in {
    const char *name;
    int dtype;
    int ndim;
    uint32_t shape[4];
    uint32_t group;
    const void *data;
    uint64_t bytes;
} inf_tensor_in;

/* Writes a model file to path atomically: "<path>.tmp" is written, fsync'd,
 * renamed over path and the directory fsync'd, so path holds the old file or
 * the new one, never a torn one. vocab entries are tok[i][0, len[i]). meta is
 * the metadata text ("key=value" lines; NULL = none; no NUL inside it; at
 * most INF_MAX_META bytes): where the model came from (checkpoint, data,
 * export options), so `pare eval FILE` can find its data.
 * Every tensor is checked with inf_tensor_bytes first. Returns 0, or -1 with
 * err naming the path and the failing step or the tensor; path is then
 * unchanged and the temporary file removed. */
int inf_file_write(const char *path, const inf_config *cfg, uint32_t vocab_kind, uint32_t vocab_n,
                   const uint8_t *const *tok, const uint8_t *len, const char *meta, const inf_tensor_in *t,
                   uint32_t n_tensors, char *err, size_t errlen);

#endif
