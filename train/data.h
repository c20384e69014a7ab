/* data.h - what the trainer reads: a vocabulary, a dataset (a text file or a
 * built-in generated set), batches of token ids, and task accuracy.
 *
 * Tokens. Every token id is < 256 and stands for one byte of text. A byte
 * vocabulary maps byte b to id b (V = 256). A character vocabulary is the
 * sorted set of distinct bytes of a corpus (tinyshakespeare has 65), so the
 * model's output layer is smaller. A vocabulary packs into at most
 * TR_VOCAB_PACK_MAX bytes, so checkpoints and model files can carry it and a
 * mismatch with the data is caught by tr_vocab_compare or by opening the data
 * with the checkpoint's vocabulary (tr_data_opts.vocab_fixed).
 *
 * Datasets. tr_dataset_open takes a spec: a file path, or builtin:NAME (see
 * TR_BUILTIN_NAMES). Token streams (text files, builtin:markov) are split
 * deterministically as nanoGPT does: the first 90% of tokens train, the last
 * 10% validate. Algorithmic tasks (builtin:copy, reverse, sort) have no
 * stream: every training row is a fresh example drawn from the caller's RNG,
 * and validation examples come from a fixed seed.
 *
 * Batches. x[B*T] are inputs, y[B*T] the targets: the same row shifted by one
 * token, with TR_IGNORE at positions that are not scored (padding, the prompt
 * of a task). Training batches draw from an ag_rng the caller owns; a
 * checkpoint that saves that RNG resumes the data stream exactly. Validation
 * batch i depends only on (dataset, B, T, i): the same batches at every
 * evaluation, whatever the training progress.
 *
 * Errors: functions that can fail return 0 or -1 and write a message naming
 * the file or thing and what was expected into err (errlen bytes, always
 * NUL-terminated when errlen > 0). Nothing here asserts on input or exits.
 */
#ifndef PARE_TR_DATA_H
#define PARE_TR_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/rng.h"

/* Target value of positions that are not scored; pass it to
 * ag_cross_entropy as ignore_index. */
#define TR_IGNORE (-1)

/* ---- vocabulary -------------------------------------------------------- */

typedef enum tr_vocab_kind {
    TR_VOCAB_BYTE = 0, /* id = byte value, V = 256 */
    TR_VOCAB_CHAR = 1, /* id = rank of the byte among the corpus's distinct bytes */
} tr_vocab_kind;

typedef struct tr_vocab {
    tr_vocab_kind kind;
    int size;                 /* V, 1..256 */
    uint8_t sym[256];         /* [V] id -> byte, strictly increasing */
    int16_t id[256];          /* byte -> id, or -1 when the byte is not in the vocabulary */
} tr_vocab;

/* Longest packed vocabulary: kind, V-1, then V symbol bytes. */
#define TR_VOCAB_PACK_MAX 258

/* Makes the byte vocabulary (V = 256). */
void tr_vocab_byte(tr_vocab *v);

/* Makes the character vocabulary of text[0, n): its distinct bytes, sorted.
 * Returns 0, or -1 when n == 0 (no symbols; err says so). */
int tr_vocab_chars(tr_vocab *v, const uint8_t *text, size_t n, char *err, size_t errlen);

/* Encodes text[0, n) into ids[0, n). Returns 0, or -1 when a byte is not in
 * the vocabulary (err names the byte and its offset); ids is then partly
 * written. */
int tr_vocab_encode(const tr_vocab *v, const uint8_t *text, size_t n, int *ids, char *err, size_t errlen);

/* Decodes ids[0, n) into out (n + 1 bytes; NUL-terminated). Ids outside
 * [0, V) decode as '?'. Returns out. */
char *tr_vocab_decode(const tr_vocab *v, const int *ids, size_t n, char *out);

/* Writes v into out[TR_VOCAB_PACK_MAX] and returns the bytes written (V + 2).
 * Format: u8 kind, u8 V-1, then the V symbol bytes in id order. */
size_t tr_vocab_pack(const tr_vocab *v, uint8_t *out);

/* Reads a packed vocabulary from buf[0, len), checking the kind, that the
 * length matches V and that the symbols are strictly increasing (and the
 * identity for a byte vocabulary). Returns 0, or -1 with err. */
int tr_vocab_unpack(tr_vocab *v, const uint8_t *buf, size_t len, char *err, size_t errlen);

/* Returns 0 when a and b are the same vocabulary; otherwise -1 and err
 * describes both and the first difference, for example
 * "vocabulary mismatch: model has char vocabulary of 65 symbols, data has
 * char vocabulary of 62 symbols (first difference at id 12: 'M' vs 'N')".
 * a_name and b_name label the two sides in the message. */
int tr_vocab_compare(const tr_vocab *a, const char *a_name, const tr_vocab *b, const char *b_name,
                     char *err, size_t errlen);

/* ---- datasets ---------------------------------------------------------- */

typedef enum tr_data_kind {
    TR_DATA_TEXT = 0,   /* a text file */
    TR_DATA_MARKOV = 1, /* builtin:markov, a generated token stream with a known floor */
    TR_DATA_TASK = 2,   /* builtin:copy / reverse / sort: one example per row */
} tr_data_kind;

/* The names builtin:NAME accepts, for help texts. */
#define TR_BUILTIN_NAMES "markov, copy, reverse, sort"

/* Seed of the built-in generators when the caller does not choose one. The
 * data's seed is separate from the training seed: changing the training seed
 * does not change the language or the validation set. */
#define TR_DATA_SEED_DEFAULT 1234u

typedef struct tr_data_opts {
    tr_vocab_kind vocab;         /* byte or char (ignored when vocab_fixed is set) */
    const tr_vocab *vocab_fixed; /* if not NULL, use this vocabulary (from a checkpoint);
                                    data with a byte outside it is an error */
    int ctx;                     /* T the model trains with; each split must hold T + 1 tokens,
                                    a task's longest example must fit in T + 1 */
    uint64_t seed;               /* seed of a built-in generator (TR_DATA_SEED_DEFAULT) */
} tr_data_opts;

/* Defaults: byte vocabulary, no fixed vocabulary, ctx 0 (must be set),
 * TR_DATA_SEED_DEFAULT. */
tr_data_opts tr_data_opts_default(void);

/* Every field is read-only after tr_dataset_open. */
typedef struct tr_dataset {
    tr_data_kind kind;
    char spec[256];           /* the spec as given (path or builtin:NAME), truncated */
    tr_vocab vocab;
    int ctx;                  /* T it was opened for */
    uint8_t *tok;             /* [n_tok] token ids of the whole stream (NULL for tasks) */
    size_t n_tok;             /* stream length */
    size_t n_train;           /* tok[0, n_train) trains, tok[n_train, n_tok) validates */
    uint64_t source_bytes;    /* bytes of the file / of the generated stream; 0 for tasks */
    uint64_t hash;            /* FNV-1a 64 of the source bytes; for tasks, of the generator's
                                 description and its first validation examples */
    double floor;             /* best achievable mean loss (nats per scored token) over
                                 windows of ctx positions; NAN when unknown (text files) */
    double entropy_rate;      /* builtin:markov: entropy rate in nats/token; else NAN */
    bool has_accuracy;        /* tasks: tr_batch_accuracy is meaningful */
    uint64_t seed;            /* the data seed: built-in generators and validation batches */
    int task;                 /* tasks: a tr_task_kind (builtin.h) */
    int task_min_len, task_max_len; /* tasks: length range of the sequence to transform */
    int task_alpha;           /* tasks: number of letters used */
} tr_dataset;

/* Opens spec with options o (NULL = tr_data_opts_default()). On success
 * *out owns a new dataset (free with tr_dataset_free) and 0 is returned.
 * Errors (-1, *out = NULL, err set):
 *   a missing or unreadable file (names the path and the system's reason);
 *   an empty file; a binary file (a NUL byte, or more than 10% control bytes
 *   other than tab, newline, carriage return, form feed, vertical tab, escape);
 *   a split shorter than ctx + 1 tokens (names the split, its length and ctx);
 *   ctx < 1; a byte outside vocab_fixed (names the byte and its offset);
 *   a task whose examples do not fit in ctx + 1 tokens (names the minimum);
 *   an unknown builtin name (lists the known ones); out of memory. */
int tr_dataset_open(tr_dataset **out, const char *spec, const tr_data_opts *o, char *err, size_t errlen);

/* Frees d. d may be NULL. */
void tr_dataset_free(tr_dataset *d);

/* The context a built-in set is meant to be trained with (a task's longest
 * example; 64 for markov), or 0 for a file spec or an unknown name. */
int tr_data_default_ctx(const char *spec);

/* One line describing d for progress output, e.g.
 * "builtin:markov: 500000 tokens (450000 train, 50000 val), vocab char 10,
 * floor 0.8123 nats/token (entropy rate 0.8001)". Returns out (n bytes). */
char *tr_dataset_describe(const tr_dataset *d, char *out, size_t n);

/* A text prompt for sampling and its expected continuation, both
 * NUL-terminated in buffers of n bytes: for tasks validation example i
 * ("cab>" and "abc."), for streams the first 16 validation tokens and "".
 * Returns 0, or -1 when n is too small. */
int tr_dataset_prompt(const tr_dataset *d, int i, char *prompt, char *expected, size_t n);

/* ---- batches ----------------------------------------------------------- */

typedef struct tr_batch {
    int B, T;
    int *x;   /* [B, T] input ids */
    int *y;   /* [B, T] target ids, or TR_IGNORE where not scored */
} tr_batch;

/* Allocates a batch of B rows of T positions. Returns 0, or -1 when B or T
 * is < 1 or memory runs out (err set). */
int tr_batch_init(tr_batch *b, int B, int T, char *err, size_t errlen);

/* Frees the arrays; b may be NULL or already freed. */
void tr_batch_free(tr_batch *b);

/* Fills b with a training batch drawn with rng (advancing it). Streams:
 * each row is a window tok[s, s + T] of the train split at a uniform start s
 * (y[t] = x[t+1]), every position scored. Tasks: each row a fresh example
 * (see docs/data.md), scored on the answer and its terminator.
 * Returns 0, or -1 when b->T differs from the dataset's ctx (err set). */
int tr_data_train_batch(const tr_dataset *d, ag_rng *rng, tr_batch *b, char *err, size_t errlen);

/* Fills b with validation batch i (i >= 0): for streams, windows of the
 * validation split at starts drawn from a seed fixed by i; for tasks,
 * validation examples i*B .. i*B+B-1 (each fixed by its index). The same
 * (d, B, T, i) gives the same batch on every call. Returns 0 or -1 as
 * tr_data_train_batch. */
int tr_data_val_batch(const tr_dataset *d, int i, tr_batch *b, char *err, size_t errlen);

/* Exact-match accuracy, teacher-forced: a row is correct when at every
 * scored position (y != TR_IGNORE) the argmax of logits (first index on
 * ties) equals y. logits: [B, T, V]. Adds the number of rows with at least
 * one scored position to *total and the number of correct ones to *correct
 * (the caller zeroes them, so batches accumulate). */
void tr_batch_accuracy(const tr_batch *b, const float *logits, int V, long *correct, long *total);


#endif
