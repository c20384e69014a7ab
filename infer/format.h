/* format.h - the model file: one self-describing, versioned, little-endian file
 * that every model pare exports is written to and the runtime reads.
 *
 *   header (56 bytes) | config (40 + 24 per layer) | vocabulary | metadata | tensor table |
 *   activation records (version 3) | zero padding | tensor data (each tensor at a 64-byte aligned
 *   offset) | u64 checksum
 *
 * docs/format.md specifies every byte. Version 2 (what the writer writes)
 * carries the architecture of model/arch.h: the head width, per layer the
 * heads and MLP width and the rank of each linear site, the rank of the head;
 * so a structurally pruned model (whole heads or MLP neurons removed) or a
 * factorized one (W = U V stored as NAME.u and NAME.v) is stored at its
 * smaller shapes. Version 3 adds activation records (16 bytes each: tensor
 * index, bits, scale, zero point 0): the static int8 activations of an A8
 * product's input (a quantization-aware model); the writer writes version 3
 * only when a tensor has one, else version 2. Version 1 (uniform models, 40
 * bytes of config) still loads.
 * The tensors a file must hold are exactly those of pm_table_build of its
 * architecture: one definition for training, export, this reader and the
 * runtime.
 *
 * Storage types are rows of a traits table (infer/types.h): a new type is one
 * row, its block struct and its kernels.
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
 * q8s (only the nonzero codes, in quads of 4 entries per row, its size
 * given by its counts) and q8nm (2 codes of every 4 inputs with 2-bit
 * positions) store q8's codes and scales sparse: docs/format.md.
 *
 * The reader (inf_file_parse) trusts nothing: see its contract.
 */
#ifndef PARE_INF_FORMAT_H
#define PARE_INF_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/arch.h"

#define INF_MAGIC "PAREMODL"
#define INF_VERSION 3u          /* the newest version: inf_file_write writes 3 when a tensor has an
                                 * activation record, else 2 */
#define INF_VERSION_MIN 1u      /* the oldest version the reader accepts */
#define INF_HEADER_BYTES 56u
#define INF_CONFIG_V1_BYTES 40u /* version 1: the uniform config */
#define INF_CONFIG_FIXED 40u    /* version 2: the model-level fields ... */
#define INF_CONFIG_LAYER 24u    /* ... then this per layer */
#define INF_ALIGN 64u
#define INF_ROWS 16 /* rows per interleaved row block */
#define INF_ACT_RECORD 16u      /* bytes of one activation record (version 3) */
#define INF_ACT_BITS_MIN 2u
#define INF_ACT_BITS_MAX 8u

/* Caps the reader enforces (a file beyond them is rejected, not trusted). */
#define INF_MAX_TENSORS 65536u
#define INF_NAME_MAX 63u       /* bytes of a tensor name */
#define INF_MAX_DIM (1u << 24) /* each dimension */
#define INF_MAX_VOCAB (1u << 24)
#define INF_MAX_TOKEN 64u      /* bytes of one vocabulary entry */
#define INF_MAX_LAYERS 1024u
#define INF_MAX_WIDTH 65536u   /* n_embd, the head width and the heads of a layer */
#define INF_MAX_HIDDEN (1u << 20) /* the MLP width and the attention width (heads x head width) of a layer */
#define INF_MAX_CTX (1u << 20)
#define INF_MAX_META (1u << 20) /* bytes of the metadata text */

/* ---- storage types -------------------------------------------------------- */

typedef enum inf_dtype {
    INF_F32 = 0, /* IEEE binary32, row-major */
    INF_Q8 = 1,  /* int8 symmetric, per-group scales (G = K: per output channel) */
    INF_Q4 = 2,  /* int4 symmetric [-7, 7] stored as q + 8, two per byte, per-group scales */
    INF_Q4A = 3, /* int4 asymmetric [0, 15] with a zero point per group */
    INF_Q8S = 4, /* q8's codes and scales, only the nonzero codes stored (unstructured sparse) */
    INF_Q8NM = 5, /* q8's codes and scales, 2 of every 4 along the input kept with their positions (2:4) */
    INF_DTYPE_COUNT
} inf_dtype;

/* A storage type's row of the traits table: infer/types.h. */
typedef struct inf_type_traits inf_type_traits;

/* The name of storage type dt ("f32", "q8", ...), or "?" when unknown. */
const char *inf_type_name(int dt);

/* The storage type named s ("f32", "q8", ...), or -1. */
int inf_dtype_from_name(const char *s);

/* Bytes of a tensor's data for type dt, shape (ndim, shape) and group size,
 * computed from the type's row with overflow-checked multiplication one
 * factor at a time. Returns 0, or -1 with a message naming what is
 * inconsistent (an unknown type, a quantized type on a tensor that is not
 * 2-D, a group size that is not a positive multiple of the type's multiple
 * dividing K, a size that overflows 64 bits). */
int inf_tensor_bytes(int dt, int ndim, const uint32_t *shape, uint32_t group, uint64_t *bytes, char *err,
                     size_t errlen);

/* Sparse types (q8s) have a size that depends on their contents: for them
 * inf_tensor_bytes gives the smallest size (no stored value) and this the
 * largest (*max) the reader accepts; the type's content check then checks
 * the exact size against the tensor's own counts. For dense types both are
 * the one size. Returns 0, or -1 with err as inf_tensor_bytes. */
int inf_tensor_bytes_max(int dt, int ndim, const uint32_t *shape, uint32_t group, uint64_t *max, char *err,
                         size_t errlen);

/* ---- the parsed file ------------------------------------------------------ */

typedef struct inf_vocab {
    uint32_t kind;           /* 0 = byte, 1 = char (tr_vocab_kind) */
    uint32_t n;              /* entries */
    const uint8_t **tok;     /* [n] pointers into the file buffer (not NUL-terminated) */
    uint8_t *len;            /* [n] bytes of each entry */
} inf_vocab;

typedef struct inf_tensor {
    char name[INF_NAME_MAX + 1];
    int dtype;
    int ndim;
    uint32_t shape[4];      /* unused trailing entries are 1 */
    uint32_t group;         /* G of quantized types, 0 for f32 */
    uint64_t offset, bytes; /* in the file */
    const uint8_t *data;    /* file buffer + offset */
    /* version 3: the static activations of the product this weight computes (an A8 site): codes of
     * act_bits bits (symmetric) with scale act_scale; 0 = float activations */
    int act_bits;
    float act_scale;
    size_t act_at;          /* the record's offset in the file (messages) */
} inf_tensor;

typedef struct inf_file {
    uint8_t *owned;         /* the buffer when the reader allocated it (inf_file_open), else NULL */
    const uint8_t *buf;     /* the file's bytes */
    size_t len;
    uint32_t version;       /* 1 or 2 */
    pm_arch arch;           /* the model's architecture (owned; version 1: uniform) */
    float ln_eps;           /* the layer norms' epsilon */
    pm_table table;         /* the sites and tensors arch implies (owned), in model/arch.h's order */
    const inf_tensor **by_table; /* [table.n_tensor] (owned): the file's tensor for table tensor i */
    inf_vocab vocab;
    const char *meta;       /* metadata: "key=value\n" lines (not NUL-terminated), into the buffer */
    uint32_t meta_len;
    uint32_t n_tensors;
    inf_tensor *t;          /* [n_tensors] (owned), in the file's order */
    uint64_t data_offset;
} inf_file;

/* Validates buf[0, len) as a model file and fills f with views into buf (buf
 * must outlive f; f->owned stays NULL). Every count and length is checked
 * against the bytes left before it is read or anything is allocated for it,
 * every product is overflow-checked, nothing asserts. Checks, in order: the
 * size (at least a header and a checksum), the magic, the version (1 to 3),
 * reserved fields, the file size recorded in the header, the section sizes
 * (version 2: the config holds exactly n_layer per-layer entries), the
 * config (caps; version 1: heads divide the width; version 2: per layer
 * heads >= 1, heads x head width and MLP width within INF_MAX_HIDDEN, each
 * rank in [0, min(out, in)], a tied head not factorized; then pm_arch_check),
 * the vocabulary (count = config vocab, entry lengths 1..INF_MAX_TOKEN), the
 * metadata (at most INF_MAX_META bytes, no NUL byte), the tensor table
 * (count cap, name length 1..INF_NAME_MAX, printable names, storage type
 * known, ndim 1..4, each dimension 1..INF_MAX_DIM and unused ones 1, group
 * size for the type, byte count equal to what the type needs, offsets
 * 64-byte aligned inside the data region), the activation records (version
 * 3: tensor index in range and increasing, bits 2..8, scale finite > 0, zero
 * point 0), unique names, no overlap, the
 * model (exactly the tensors of pm_table_build(arch): each present with its
 * shape, 1-D ones f32, nothing else; activation records only on linear
 * products' integer weights), the tensor contents (the types'
 * checks: finite scales >= 0, zero points in range), and last the FNV-1a 64
 * checksum. Returns 0, or -1 with err = "<name>: byte <offset>: <field>:
 * <what was expected>"; nothing is left allocated on failure. name labels
 * messages (a path). */
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
 * type's layout (inf_pack_matrix in pack.h makes them). */
typedef struct inf_tensor_in {
    const char *name;
    int dtype;
    int ndim;
    uint32_t shape[4];
    uint32_t group;
    const void *data;
    uint64_t bytes;
    int act_bits;    /* > 0: an activation record (version 3): bits 2 .. 8 and ... */
    float act_scale; /* ... a finite scale > 0 */
} inf_tensor_in;

/* Writes a version-2 model file of architecture a (checked with
 * pm_arch_check and against the reader's caps) to path atomically
 * (autograd/atomic.h: "<path>.tmp", fsync, rename, fsync of the directory),
 * so path holds the old file or the new one, never a torn one. ln_eps is the
 * layer norms' epsilon (finite, > 0). vocab entries are tok[i][0, len[i]),
 * vocab_n = a->vocab of them. meta is the metadata text ("key=value" lines;
 * NULL = none; no NUL inside it; at most INF_MAX_META bytes): where the model
 * came from (checkpoint, data, export options), so `pare eval FILE` can find
 * its data. Every tensor is checked with inf_tensor_bytes first; the writer
 * does not check them against the architecture (the reader does). Returns
 * 0, or -1 with err naming the path and the failing step or the tensor;
 * path is then unchanged and the temporary file removed, except when only
 * the final fsync of the directory failed (err says so: the new file is in
 * place). */
int inf_file_write(const char *path, const pm_arch *a, float ln_eps, uint32_t vocab_kind, uint32_t vocab_n,
                   const uint8_t *const *tok, const uint8_t *len, const char *meta, const inf_tensor_in *t,
                   uint32_t n_tensors, char *err, size_t errlen);

#endif
