/* data.c - vocabularies, datasets (text files and built-in sets), batches and
 * task accuracy. See data.h for the contracts and docs/data.md for the
 * formats. */
#include "data.h"
#include "keys.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "builtin.h"
#include "autograd/errmsg.h"
#include "autograd/hash.h"

/* A byte as it should appear in a message: 'c' when printable, else 0xNN. */
static const char *byte_str(uint8_t b, char buf[8]) {
    if (b >= 0x20 && b < 0x7f && b != '\'')
        snprintf(buf, 8, "'%c'", b);
    else
        snprintf(buf, 8, "0x%02x", b);
    return buf;
}


/* ---- vocabulary ---------------------------------------------------------- */

static void vocab_index(tr_vocab *v) {
    for (int b = 0; b < 256; b++) v->id[b] = -1;
    for (int i = 0; i < v->size; i++) v->id[v->sym[i]] = (int16_t)i;
}

void tr_vocab_byte(tr_vocab *v) {
    memset(v, 0, sizeof *v);
    v->kind = TR_VOCAB_BYTE;
    v->size = 256;
    for (int b = 0; b < 256; b++) v->sym[b] = (uint8_t)b;
    vocab_index(v);
}

int tr_vocab_chars(tr_vocab *v, const uint8_t *text, size_t n, char *err, size_t errlen) {
    memset(v, 0, sizeof *v);
    if (n == 0) {
        ag_errf(err, errlen, "character vocabulary: the text is empty; expected at least one byte");
        return -1;
    }
    bool seen[256] = {false};
    for (size_t i = 0; i < n; i++) seen[text[i]] = true;
    v->kind = TR_VOCAB_CHAR;
    for (int b = 0; b < 256; b++)
        if (seen[b]) v->sym[v->size++] = (uint8_t)b;
    vocab_index(v);
    return 0;
}

int tr_vocab_encode(const tr_vocab *v, const uint8_t *text, size_t n, int *ids, char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++) {
        int id = v->id[text[i]];
        if (id < 0) {
            char bs[8];
            ag_errf(err, errlen, "byte %s at offset %zu is not in the %s vocabulary of %d symbols",
                    byte_str(text[i], bs), i, v->kind == TR_VOCAB_CHAR ? "char" : "byte", v->size);
            return -1;
        }
        ids[i] = id;
    }
    return 0;
}

char *tr_vocab_decode(const tr_vocab *v, const int *ids, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) out[i] = (ids[i] >= 0 && ids[i] < v->size) ? (char)v->sym[ids[i]] : '?';
    out[n] = '\0';
    return out;
}

size_t tr_vocab_pack(const tr_vocab *v, uint8_t *out) {
    out[0] = (uint8_t)v->kind;
    out[1] = (uint8_t)(v->size - 1);
    memcpy(out + 2, v->sym, (size_t)v->size);
    return (size_t)v->size + 2;
}

int tr_vocab_unpack(tr_vocab *v, const uint8_t *buf, size_t len, char *err, size_t errlen) {
    memset(v, 0, sizeof *v);
    if (len < 3) {
        ag_errf(err, errlen, "packed vocabulary: %zu bytes; expected at least 3", len);
        return -1;
    }
    if (buf[0] != TR_VOCAB_BYTE && buf[0] != TR_VOCAB_CHAR) {
        ag_errf(err, errlen, "packed vocabulary: kind %u; expected 0 (byte) or 1 (char)", buf[0]);
        return -1;
    }
    int size = buf[1] + 1;
    if (len != (size_t)size + 2) {
        ag_errf(err, errlen, "packed vocabulary: %zu bytes for %d symbols; expected %d", len, size, size + 2);
        return -1;
    }
    for (int i = 1; i < size; i++)
        if (buf[2 + i] <= buf[1 + i]) {
            ag_errf(err, errlen, "packed vocabulary: symbols not strictly increasing at id %d", i);
            return -1;
        }
    if (buf[0] == TR_VOCAB_BYTE && (size != 256 || buf[2] != 0)) {
        ag_errf(err, errlen, "packed vocabulary: a byte vocabulary must have all 256 bytes in order");
        return -1;
    }
    v->kind = (tr_vocab_kind)buf[0];
    v->size = size;
    memcpy(v->sym, buf + 2, (size_t)size);
    vocab_index(v);
    return 0;
}

int tr_vocab_compare(const tr_vocab *a, const char *a_name, const tr_vocab *b, const char *b_name,
                     char *err, size_t errlen) {
    if (a->kind == b->kind && a->size == b->size && memcmp(a->sym, b->sym, (size_t)a->size) == 0) return 0;
    const char *ka = a->kind == TR_VOCAB_CHAR ? "char" : "byte";
    const char *kb = b->kind == TR_VOCAB_CHAR ? "char" : "byte";
    int n = a->size < b->size ? a->size : b->size, i = 0;
    while (i < n && a->sym[i] == b->sym[i]) i++;
    if (i < n) {
        char sa[8], sb[8];
        ag_errf(err, errlen,
                "vocabulary mismatch: %s has %s vocabulary of %d symbols, %s has %s vocabulary of %d "
                "symbols (first difference at id %d: %s vs %s)",
                a_name, ka, a->size, b_name, kb, b->size, i, byte_str(a->sym[i], sa), byte_str(b->sym[i], sb));
    } else {
        ag_errf(err, errlen, "vocabulary mismatch: %s has %s vocabulary of %d symbols, %s has %s vocabulary of %d symbols",
                a_name, ka, a->size, b_name, kb, b->size);
    }
    return -1;
}

/* ---- datasets ------------------------------------------------------------ */

tr_data_opts tr_data_opts_default(void) {
    tr_data_opts o = {.vocab = TR_VOCAB_BYTE, .vocab_fixed = NULL, .ctx = 0, .seed = 0};
    const char *spec = NULL;
    pare_keys k = {.n = 0};
    tr_data_keys(&k, &spec, &o);
    char err[256];
    if (pare_opts_defaults(k.row, k.n, err, sizeof err) != 0) abort(); /* a bad default in keys.c is a bug */
    return o;
}

/* Salts that separate the random streams derived from the data seed. */
#define SALT_GENERATE 0x67656e6572617465ULL /* the markov chain and its stream */
#define SALT_VAL 0x76616c6964617465ULL      /* validation batches / examples */
#define GOLDEN 0x9e3779b97f4a7c15ULL

static const char *task_names[] = {"copy", "reverse", "sort"};

/* Reads a whole regular file into *buf (malloc'd) and *n. */
static int read_file(const char *path, uint8_t **buf, size_t *n, char *err, size_t errlen) {
    *buf = NULL;
    *n = 0;
    /* the type first: opening a FIFO (or a terminal) would block */
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        ag_errf(err, errlen, "data file '%s': not a regular file (%s); expected a text file", path,
                S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISDIR(st.st_mode) ? "a directory" : "a device or socket");
        return -1;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        ag_errf(err, errlen, "data file '%s': cannot open: %s; expected a readable text file", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        ag_errf(err, errlen, "data file '%s': not a regular file; expected a text file", path);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *b = malloc(size ? size : 1);
    if (!b) {
        fclose(f);
        ag_errf(err, errlen, "data file '%s': out of memory for %zu bytes", path, size);
        return -1;
    }
    size_t got = fread(b, 1, size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != size) {
        free(b);
        ag_errf(err, errlen, "data file '%s': read %zu of %zu bytes; expected the whole file", path, got, size);
        return -1;
    }
    *buf = b;
    *n = size;
    return 0;
}

/* Text means: no NUL byte, and at most 10% control bytes other than
 * \t \n \v \f \r and ESC (bytes >= 0x80 count as text: UTF-8). */
static int check_text(const char *path, const uint8_t *b, size_t n, char *err, size_t errlen) {
    size_t ctrl = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = b[i];
        if (c == 0) {
            ag_errf(err, errlen, "data file '%s': looks binary (NUL byte at offset %zu); expected a text file", path, i);
            return -1;
        }
        if ((c < 0x20 && !(c >= '\t' && c <= '\r') && c != 0x1b) || c == 0x7f) ctrl++;
    }
    if (ctrl * 10 > n) {
        ag_errf(err, errlen,
                "data file '%s': looks binary (%zu of %zu bytes are control characters); expected a text file",
                path, ctrl, n);
        return -1;
    }
    return 0;
}

/* Turns text bytes into the dataset's token stream (vocabulary already set)
 * and checks both splits against ctx. */
static int make_stream(tr_dataset *d, const uint8_t *text, size_t n, char *err, size_t errlen) {
    d->tok = malloc(n ? n : 1);
    if (!d->tok) {
        ag_errf(err, errlen, "data '%s': out of memory for %zu tokens", d->spec, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        int id = d->vocab.id[text[i]];
        if (id < 0) {
            char bs[8];
            ag_errf(err, errlen,
                    "data '%s': byte %s at offset %zu is not in the model's %s vocabulary of %d symbols; "
                    "expected data the vocabulary covers",
                    d->spec, byte_str(text[i], bs), i, d->vocab.kind == TR_VOCAB_CHAR ? "char" : "byte",
                    d->vocab.size);
            return -1;
        }
        d->tok[i] = (uint8_t)id;
    }
    d->n_tok = n;
    d->n_train = n / 10 * 9 + (n % 10) * 9 / 10; /* floor(0.9 n) without overflow */
    size_t need = (size_t)d->ctx + 1, n_val = n - d->n_train;
    if (d->n_train < need) {
        ag_errf(err, errlen,
                "data '%s': train split has %zu tokens (first 90%% of %zu); context %d needs at least %zu",
                d->spec, d->n_train, n, d->ctx, need);
        return -1;
    }
    if (n_val < need) {
        ag_errf(err, errlen,
                "data '%s': validation split has %zu tokens (last 10%% of %zu); context %d needs at least %zu",
                d->spec, n_val, n, d->ctx, need);
        return -1;
    }
    return 0;
}

static int open_text(tr_dataset *d, const char *path, const tr_data_opts *o, char *err, size_t errlen) {
    uint8_t *text;
    size_t n;
    if (read_file(path, &text, &n, err, errlen) != 0) return -1;
    if (n == 0) {
        free(text);
        ag_errf(err, errlen, "data file '%s': empty; expected a text file", path);
        return -1;
    }
    if (check_text(path, text, n, err, errlen) != 0) {
        free(text);
        return -1;
    }
    if (o->vocab_fixed)
        d->vocab = *o->vocab_fixed;
    else if (o->vocab == TR_VOCAB_CHAR)
        tr_vocab_chars(&d->vocab, text, n, NULL, 0);
    else
        tr_vocab_byte(&d->vocab);
    if (d->vocab.size < 2) {
        ag_errf(err, errlen, "data file '%s': its %zu bytes are all '%c': a character vocabulary needs at least 2 "
                "distinct symbols (or use --vocab byte)", path, n, text[0] >= 0x20 && text[0] < 0x7f ? text[0] : '?');
        free(text);
        return -1;
    }
    d->kind = TR_DATA_TEXT;
    d->source_bytes = n;
    d->hash = ag_fnv1a(AG_FNV_INIT, text, n);
    d->floor = NAN;
    int rc = make_stream(d, text, n, err, errlen);
    free(text);
    return rc;
}

/* The vocabulary of a built-in set: the fixed one, bytes, or the sorted
 * symbols it can emit. */
static int builtin_vocab(tr_dataset *d, const tr_data_opts *o, const char *symbols, char *err, size_t errlen) {
    if (o->vocab_fixed) {
        d->vocab = *o->vocab_fixed;
        for (const char *p = symbols; *p; p++)
            if (d->vocab.id[(uint8_t)*p] < 0) {
                char bs[8];
                ag_errf(err, errlen, "data '%s': symbol %s is not in the model's %s vocabulary of %d symbols",
                        d->spec, byte_str((uint8_t)*p, bs), d->vocab.kind == TR_VOCAB_CHAR ? "char" : "byte",
                        d->vocab.size);
                return -1;
            }
        return 0;
    }
    if (o->vocab == TR_VOCAB_CHAR)
        return tr_vocab_chars(&d->vocab, (const uint8_t *)symbols, strlen(symbols), err, errlen);
    tr_vocab_byte(&d->vocab);
    return 0;
}

static int open_markov(tr_dataset *d, const tr_data_opts *o, char *err, size_t errlen) {
    const char *alpha = TR_MARKOV_ALPHABET;
    int A = (int)strlen(alpha);
    if (builtin_vocab(d, o, alpha, err, errlen) != 0) return -1;
    tr_markov m;
    if (tr_markov_make(&m, A, TR_MARKOV_K, TR_MARKOV_SUPPORT, TR_MARKOV_EPS, d->seed ^ SALT_GENERATE, err,
                       errlen) != 0)
        return -1;
    size_t n = TR_MARKOV_TOKENS;
    uint8_t *text = malloc(n);
    if (!text) {
        tr_markov_free(&m);
        ag_errf(err, errlen, "data '%s': out of memory for %zu tokens", d->spec, n);
        return -1;
    }
    ag_rng r;
    ag_rng_seed(&r, (d->seed ^ SALT_GENERATE) + GOLDEN);
    tr_markov_generate(&m, &r, text, n);
    for (size_t i = 0; i < n; i++) text[i] = (uint8_t)alpha[text[i]];
    d->kind = TR_DATA_MARKOV;
    d->entropy_rate = tr_markov_entropy_rate(&m);
    d->floor = tr_markov_window_floor(&m, d->ctx);
    tr_markov_free(&m);
    d->source_bytes = n;
    d->hash = ag_fnv1a(AG_FNV_INIT, text, n);
    int rc = make_stream(d, text, n, err, errlen);
    free(text);
    return rc;
}

static void task_val_example(const tr_dataset *d, long k, uint8_t *out, int *len) {
    ag_rng r;
    ag_rng_seed(&r, (d->seed ^ SALT_VAL) + (uint64_t)k * GOLDEN);
    *len = tr_task_example((tr_task_kind)d->task, d->task_alpha, d->task_min_len, d->task_max_len, &r, out);
}

static int open_task(tr_dataset *d, int task, const tr_data_opts *o, char *err, size_t errlen) {
    d->kind = TR_DATA_TASK;
    d->task = task;
    d->task_alpha = TR_TASK_ALPHA;
    d->task_min_len = TR_TASK_MIN_LEN;
    d->task_max_len = TR_TASK_MAX_LEN;
    d->has_accuracy = true;
    d->floor = 0.0; /* the answer is a function of the prompt */
    char symbols[64];
    int n = 0;
    symbols[n++] = TR_TASK_END;
    symbols[n++] = TR_TASK_SEP;
    for (int i = 0; i < d->task_alpha; i++) symbols[n++] = (char)('a' + i);
    symbols[n] = '\0';
    if (builtin_vocab(d, o, symbols, err, errlen) != 0) return -1;
    int need = 2 * d->task_max_len + 1; /* the longest example has 2L + 2 tokens = T + 1 */
    if (d->ctx < need) {
        ag_errf(err, errlen, "data '%s': examples have up to %d tokens; context %d is too short, expected at least %d",
                d->spec, 2 * d->task_max_len + 2, d->ctx, need);
        return -1;
    }
    char desc[128];
    int dl = snprintf(desc, sizeof desc, "task %s alpha %d len %d..%d seed %llu", task_names[task], d->task_alpha,
                      d->task_min_len, d->task_max_len, (unsigned long long)d->seed);
    uint64_t h = ag_fnv1a(AG_FNV_INIT, desc, (size_t)dl);
    uint8_t ex[256];
    for (long k = 0; k < 256; k++) {
        int len;
        task_val_example(d, k, ex, &len);
        h = ag_fnv1a(h, ex, (size_t)len);
    }
    d->hash = h;
    d->source_bytes = 0;
    return 0;
}

int tr_dataset_open(tr_dataset **out, const char *spec, const tr_data_opts *o, char *err, size_t errlen) {
    *out = NULL;
    tr_data_opts def = tr_data_opts_default();
    if (!o) o = &def;
    if (!spec || !*spec) {
        ag_errf(err, errlen, "data: empty spec; expected a file path or builtin:NAME (%s)", TR_BUILTIN_NAMES);
        return -1;
    }
    if (o->ctx < 1) {
        ag_errf(err, errlen, "data '%s': context %d; expected at least 1", spec, o->ctx);
        return -1;
    }
    tr_dataset *d = calloc(1, sizeof *d);
    if (!d) {
        ag_errf(err, errlen, "data '%s': out of memory", spec);
        return -1;
    }
    snprintf(d->spec, sizeof d->spec, "%s", spec);
    d->ctx = o->ctx;
    d->seed = o->seed;
    d->floor = NAN;
    d->entropy_rate = NAN;
    int rc;
    if (strncmp(spec, "builtin:", 8) == 0) {
        const char *name = spec + 8;
        if (strcmp(name, "markov") == 0) {
            rc = open_markov(d, o, err, errlen);
        } else {
            int task = -1;
            for (int i = 0; i < 3; i++)
                if (strcmp(name, task_names[i]) == 0) task = i;
            if (task < 0) {
                ag_errf(err, errlen, "data '%s': unknown built-in dataset '%s'; expected one of: %s", spec, name,
                        TR_BUILTIN_NAMES);
                rc = -1;
            } else {
                rc = open_task(d, task, o, err, errlen);
            }
        }
    } else {
        rc = open_text(d, spec, o, err, errlen);
    }
    if (rc != 0) {
        tr_dataset_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

void tr_dataset_free(tr_dataset *d) {
    if (!d) return;
    free(d->tok);
    free(d);
}

int tr_data_default_ctx(const char *spec) {
    if (!spec || strncmp(spec, "builtin:", 8) != 0) return 0;
    const char *name = spec + 8;
    if (strcmp(name, "markov") == 0) return TR_MARKOV_CTX;
    for (int i = 0; i < 3; i++)
        if (strcmp(name, task_names[i]) == 0) return 2 * TR_TASK_MAX_LEN + 1;
    return 0;
}

char *tr_dataset_describe(const tr_dataset *d, char *out, size_t n) {
    const char *vk = d->vocab.kind == TR_VOCAB_CHAR ? "char" : "byte";
    if (d->kind == TR_DATA_TASK) {
        snprintf(out, n, "%s: %s of %d..%d letters from %d, one example per row, vocab %s %d, floor 0 (answer scored)",
                 d->spec, task_names[d->task], d->task_min_len, d->task_max_len, d->task_alpha, vk, d->vocab.size);
    } else if (d->kind == TR_DATA_MARKOV) {
        snprintf(out, n,
                 "%s: %zu tokens (%zu train, %zu val), vocab %s %d, floor %.4f nats/token over %d positions "
                 "(entropy rate %.4f)",
                 d->spec, d->n_tok, d->n_train, d->n_tok - d->n_train, vk, d->vocab.size, d->floor, d->ctx,
                 d->entropy_rate);
    } else {
        snprintf(out, n, "%s: %zu tokens (%zu train, %zu val), vocab %s %d", d->spec, d->n_tok, d->n_train,
                 d->n_tok - d->n_train, vk, d->vocab.size);
    }
    return out;
}

int tr_dataset_prompt(const tr_dataset *d, int i, char *prompt, char *expected, size_t n) {
    if (d->kind == TR_DATA_TASK) {
        uint8_t ex[256];
        int len;
        task_val_example(d, i < 0 ? 0 : i, ex, &len);
        int L = (len - 2) / 2;
        if ((size_t)len + 1 > n) return -1;
        memcpy(prompt, ex, (size_t)L + 1);
        prompt[L + 1] = '\0';
        memcpy(expected, ex + L + 1, (size_t)L + 1);
        expected[L + 1] = '\0';
        return 0;
    }
    size_t m = 16, n_val = d->n_tok - d->n_train;
    if (m > n_val) m = n_val;
    if (m + 1 > n) return -1;
    for (size_t k = 0; k < m; k++) prompt[k] = (char)d->vocab.sym[d->tok[d->n_train + k]];
    prompt[m] = '\0';
    if (n > 0) expected[0] = '\0';
    return 0;
}

/* ---- batches ------------------------------------------------------------- */

int tr_batch_init(tr_batch *b, int B, int T, char *err, size_t errlen) {
    memset(b, 0, sizeof *b);
    if (B < 1 || T < 1) {
        ag_errf(err, errlen, "batch: %d rows of %d positions; expected both at least 1", B, T);
        return -1;
    }
    size_t n = (size_t)B * (size_t)T;
    b->x = malloc(n * sizeof(int));
    b->y = malloc(n * sizeof(int));
    if (!b->x || !b->y) {
        tr_batch_free(b);
        ag_errf(err, errlen, "batch: out of memory for %d x %d", B, T);
        return -1;
    }
    b->B = B;
    b->T = T;
    return 0;
}

void tr_batch_free(tr_batch *b) {
    if (!b) return;
    free(b->x);
    free(b->y);
    b->x = b->y = NULL;
}

/* Row from stream start s: x = tok[s, s+T), y = tok[s+1, s+T]. */
static void stream_row(const tr_dataset *d, size_t s, int *x, int *y, int T) {
    for (int t = 0; t < T; t++) {
        x[t] = d->tok[s + (size_t)t];
        y[t] = d->tok[s + (size_t)t + 1];
    }
}

/* Row from a task example ex[0, len): scored targets are the answer and
 * the terminator (positions L .. 2L, whose targets are ex[L+1 .. 2L+1]);
 * after the example the row is padded with the terminator, unscored. */
static void task_row(const tr_dataset *d, const uint8_t *ex, int len, int *x, int *y, int T) {
    int L = (len - 2) / 2, pad = d->vocab.id[TR_TASK_END];
    for (int t = 0; t < T; t++) {
        x[t] = t < len ? d->vocab.id[ex[t]] : pad;
        y[t] = (t >= L && t + 1 < len) ? d->vocab.id[ex[t + 1]] : TR_IGNORE;
    }
}

static int check_batch(const tr_dataset *d, const tr_batch *b, char *err, size_t errlen) {
    if (!b->x || !b->y || b->B < 1 || b->T != d->ctx) {
        ag_errf(err, errlen, "data '%s': batch has %d positions per row; expected the context %d", d->spec, b->T,
                d->ctx);
        return -1;
    }
    return 0;
}

int tr_data_train_batch(const tr_dataset *d, ag_rng *rng, tr_batch *b, char *err, size_t errlen) {
    if (check_batch(d, b, err, errlen) != 0) return -1;
    int T = b->T;
    for (int r = 0; r < b->B; r++) {
        int *x = b->x + (size_t)r * T, *y = b->y + (size_t)r * T;
        if (d->kind == TR_DATA_TASK) {
            uint8_t ex[256];
            int len = tr_task_example((tr_task_kind)d->task, d->task_alpha, d->task_min_len, d->task_max_len, rng, ex);
            task_row(d, ex, len, x, y, T);
        } else {
            size_t s = (size_t)ag_rng_below(rng, (uint64_t)(d->n_train - (size_t)T));
            stream_row(d, s, x, y, T);
        }
    }
    return 0;
}

int tr_data_val_batch(const tr_dataset *d, int i, tr_batch *b, char *err, size_t errlen) {
    if (check_batch(d, b, err, errlen) != 0) return -1;
    if (i < 0) {
        ag_errf(err, errlen, "data '%s': validation batch %d; expected an index >= 0", d->spec, i);
        return -1;
    }
    int T = b->T;
    ag_rng r;
    ag_rng_seed(&r, (d->seed ^ SALT_VAL) - (uint64_t)(i + 1) * GOLDEN);
    size_t n_val = d->n_tok - d->n_train;
    for (int row = 0; row < b->B; row++) {
        int *x = b->x + (size_t)row * T, *y = b->y + (size_t)row * T;
        if (d->kind == TR_DATA_TASK) {
            uint8_t ex[256];
            int len;
            task_val_example(d, (long)i * b->B + row, ex, &len);
            task_row(d, ex, len, x, y, T);
        } else {
            size_t s = d->n_train + (size_t)ag_rng_below(&r, (uint64_t)(n_val - (size_t)T));
            stream_row(d, s, x, y, T);
        }
    }
    return 0;
}

void tr_batch_accuracy(const tr_batch *b, const float *logits, int V, long *correct, long *total) {
    for (int r = 0; r < b->B; r++) {
        int scored = 0, ok = 1;
        for (int t = 0; t < b->T; t++) {
            size_t pos = (size_t)r * b->T + t;
            int y = b->y[pos];
            if (y == TR_IGNORE) continue;
            scored = 1;
            const float *l = logits + pos * (size_t)V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (l[v] > l[best]) best = v;
            if (best != y) ok = 0;
        }
        if (scored) {
            (*total)++;
            *correct += ok;
        }
    }
}
