/* test_data.c - train/data and train/builtin: vocabularies, the split,
 * batches, task rows and accuracy, every error case, and the Markov floor
 * against brute force and against a long sample. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/hash.h"
#include "train/builtin.h"
#include "train/data.h"

/* ---- fixture: a scratch directory for data files ---- */

typedef struct fixture {
    char dir[64];
    char path[128]; /* last file written */
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/pare-test-data-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    static const char *names[] = {"a.txt", "empty.txt", "bin.txt", "ctrl.txt", "short.txt", "odd.txt", "other.txt"};
    char p[160];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", f->dir, names[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Writes n bytes to dir/name and leaves the path in f->path. */
static const char *write_file(fixture *f, const char *name, const void *bytes, size_t n) {
    snprintf(f->path, sizeof f->path, "%s/%s", f->dir, name);
    FILE *fp = fopen(f->path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    fclose(fp);
    return f->path;
}

/* A pseudo-text of n bytes over "abcdefgh \n" from a seed. */
static char *make_text(size_t n, uint64_t seed) {
    static const char alpha[] = "abcdefgh \n";
    char *t = malloc(n);
    ag_rng r;
    ag_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) t[i] = alpha[ag_rng_below(&r, 10)];
    return t;
}

static tr_dataset *open_ok(const char *spec, tr_vocab_kind vk, int ctx) {
    tr_data_opts o = tr_data_opts_default();
    o.vocab = vk;
    o.ctx = ctx;
    tr_dataset *d = NULL;
    char err[512] = "";
    int rc = tr_dataset_open(&d, spec, &o, err, sizeof err);
    if (rc != 0) print_error("open %s: %s\n", spec, err);
    assert_int_equal(rc, 0);
    assert_non_null(d);
    return d;
}

/* Opens spec expecting failure; the message must contain each of the
 * NULL-terminated words. */
static void open_fails(const char *spec, const tr_data_opts *o, ...) {
    tr_dataset *d = (tr_dataset *)1;
    char err[512] = "";
    assert_int_equal(tr_dataset_open(&d, spec, o, err, sizeof err), -1);
    assert_null(d);
    va_list ap;
    va_start(ap, o);
    for (const char *w; (w = va_arg(ap, const char *));) {
        if (!strstr(err, w)) print_error("message \"%s\" lacks \"%s\"\n", err, w);
        assert_non_null(strstr(err, w));
    }
    va_end(ap);
}

/* ---- vocabulary ---- */

static void test_char_vocab_is_sorted_distinct_bytes(void **state) {
    (void)state;
    tr_vocab v;
    const char *s = "hello world";
    assert_int_equal(tr_vocab_chars(&v, (const uint8_t *)s, strlen(s), NULL, 0), 0);
    assert_int_equal(v.kind, TR_VOCAB_CHAR);
    assert_int_equal(v.size, 8);
    assert_memory_equal(v.sym, " dehlorw", 8);
    assert_int_equal(v.id['h'], 3);
    assert_int_equal(v.id['z'], -1);
    char err[256];
    assert_int_equal(tr_vocab_chars(&v, (const uint8_t *)s, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
}

static void test_encode_decode_round_trip(void **state) {
    (void)state;
    const char *s = "To be, or not to be: that is the question.\n";
    size_t n = strlen(s);
    tr_vocab vc, vb;
    tr_vocab_chars(&vc, (const uint8_t *)s, n, NULL, 0);
    tr_vocab_byte(&vb);
    int ids[64];
    char out[65];
    assert_int_equal(tr_vocab_encode(&vc, (const uint8_t *)s, n, ids, NULL, 0), 0);
    for (size_t i = 0; i < n; i++) assert_true(ids[i] >= 0 && ids[i] < vc.size);
    assert_string_equal(tr_vocab_decode(&vc, ids, n, out), s);
    assert_int_equal(tr_vocab_encode(&vb, (const uint8_t *)s, n, ids, NULL, 0), 0);
    assert_int_equal(ids[0], 'T');
    assert_string_equal(tr_vocab_decode(&vb, ids, n, out), s);
    char err[256];
    assert_int_equal(tr_vocab_encode(&vc, (const uint8_t *)"to bZ", 5, ids, err, sizeof err), -1);
    assert_non_null(strstr(err, "'Z'"));
    assert_non_null(strstr(err, "offset 4"));
}

static void test_vocab_pack_unpack_and_compare(void **state) {
    (void)state;
    tr_vocab a, b, byte;
    tr_vocab_chars(&a, (const uint8_t *)"abcxyz", 6, NULL, 0);
    tr_vocab_byte(&byte);
    uint8_t buf[TR_VOCAB_PACK_MAX];
    size_t n = tr_vocab_pack(&a, buf);
    assert_int_equal(n, 8);
    char err[512];
    assert_int_equal(tr_vocab_unpack(&b, buf, n, err, sizeof err), 0);
    assert_int_equal(tr_vocab_compare(&a, "model", &b, "data", err, sizeof err), 0);
    assert_int_equal(b.id['x'], 3);
    n = tr_vocab_pack(&byte, buf);
    assert_int_equal(n, 258);
    assert_int_equal(tr_vocab_unpack(&b, buf, n, err, sizeof err), 0);
    assert_int_equal(b.kind, TR_VOCAB_BYTE);
    assert_int_equal(b.id[200], 200);
    /* corrupt packings */
    n = tr_vocab_pack(&a, buf);
    assert_int_equal(tr_vocab_unpack(&b, buf, n - 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "symbols"));
    buf[3] = buf[2];
    assert_int_equal(tr_vocab_unpack(&b, buf, n, err, sizeof err), -1);
    assert_non_null(strstr(err, "increasing"));
    buf[0] = 7;
    assert_int_equal(tr_vocab_unpack(&b, buf, n, err, sizeof err), -1);
    assert_non_null(strstr(err, "kind"));
    /* mismatches name both sides */
    tr_vocab_chars(&b, (const uint8_t *)"abdxyz", 6, NULL, 0);
    assert_int_equal(tr_vocab_compare(&a, "checkpoint", &b, "data 'x.txt'", err, sizeof err), -1);
    assert_non_null(strstr(err, "checkpoint has char vocabulary of 6"));
    assert_non_null(strstr(err, "id 2: 'c' vs 'd'"));
    assert_int_equal(tr_vocab_compare(&a, "checkpoint", &byte, "data", err, sizeof err), -1);
    assert_non_null(strstr(err, "byte vocabulary of 256"));
}

static void test_hash_is_fnv1a(void **state) {
    (void)state;
    /* published FNV-1a 64 test vectors */
    assert_true(ag_fnv1a(AG_FNV_INIT, "", 0) == 0xcbf29ce484222325ULL);
    assert_true(ag_fnv1a(AG_FNV_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL);
    assert_true(ag_fnv1a(AG_FNV_INIT, "foobar", 6) == 0x85944171f73967e8ULL);
}

/* ---- text files: split and batches ---- */

static void test_split_is_first_90_percent(void **state) {
    fixture *f = *state;
    char *t = make_text(1005, 1);
    tr_dataset *d = open_ok(write_file(f, "odd.txt", t, 1005), TR_VOCAB_BYTE, 8);
    assert_int_equal(d->kind, TR_DATA_TEXT);
    assert_int_equal(d->n_tok, 1005);
    assert_int_equal(d->n_train, 904); /* floor(0.9 * 1005) */
    assert_int_equal(d->source_bytes, 1005);
    assert_true(d->hash == ag_fnv1a(AG_FNV_INIT, t, 1005));
    assert_true(isnan(d->floor));
    assert_false(d->has_accuracy);
    for (size_t i = 0; i < 1005; i++) assert_int_equal(d->tok[i], (uint8_t)t[i]);
    tr_dataset_free(d);
    d = open_ok(f->path, TR_VOCAB_CHAR, 8);
    assert_int_equal(d->vocab.size, 10);
    for (size_t i = 0; i < 1005; i++) assert_int_equal(d->vocab.sym[d->tok[i]], (uint8_t)t[i]);
    tr_dataset_free(d);
    free(t);
}

/* Index s in [lo, hi] with tok[s, s+T) == x and tok[s+1, s+T] == y, or -1. */
static long find_window(const tr_dataset *d, const int *x, const int *y, int T, size_t lo, size_t hi) {
    for (size_t s = lo; s <= hi; s++) {
        int ok = 1;
        for (int t = 0; t < T && ok; t++) ok = d->tok[s + t] == x[t] && d->tok[s + t + 1] == y[t];
        if (ok) return (long)s;
    }
    return -1;
}

static void test_batches_are_shifted_windows_of_their_split(void **state) {
    fixture *f = *state;
    char *t = make_text(3000, 2);
    tr_dataset *d = open_ok(write_file(f, "a.txt", t, 3000), TR_VOCAB_CHAR, 16);
    free(t);
    tr_batch b;
    assert_int_equal(tr_batch_init(&b, 5, 16, NULL, 0), 0);
    ag_rng r;
    ag_rng_seed(&r, 7);
    for (int rep = 0; rep < 4; rep++) {
        assert_int_equal(tr_data_train_batch(d, &r, &b, NULL, 0), 0);
        for (int row = 0; row < 5; row++) {
            const int *x = b.x + row * 16, *y = b.y + row * 16;
            for (int i = 0; i < 15; i++) assert_int_equal(y[i], x[i + 1]);
            assert_true(find_window(d, x, y, 16, 0, d->n_train - 17) >= 0);
        }
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tr_data_val_batch(d, i, &b, NULL, 0), 0);
        for (int row = 0; row < 5; row++)
            assert_true(find_window(d, b.x + row * 16, b.y + row * 16, 16, d->n_train, d->n_tok - 17) >= 0);
    }
    tr_batch_free(&b);
    tr_dataset_free(d);
}

static void test_batches_follow_the_seed(void **state) {
    fixture *f = *state;
    char *t = make_text(5000, 3);
    tr_dataset *d = open_ok(write_file(f, "a.txt", t, 5000), TR_VOCAB_BYTE, 32);
    free(t);
    tr_batch a, b, c;
    tr_batch_init(&a, 4, 32, NULL, 0);
    tr_batch_init(&b, 4, 32, NULL, 0);
    tr_batch_init(&c, 4, 32, NULL, 0);
    ag_rng r1, r2, r3;
    ag_rng_seed(&r1, 11);
    ag_rng_seed(&r2, 11);
    ag_rng_seed(&r3, 12);
    for (int step = 0; step < 3; step++) {
        tr_data_train_batch(d, &r1, &a, NULL, 0);
        tr_data_train_batch(d, &r2, &b, NULL, 0);
        tr_data_train_batch(d, &r3, &c, NULL, 0);
        assert_memory_equal(a.x, b.x, sizeof(int) * 128);
        assert_memory_equal(a.y, b.y, sizeof(int) * 128);
        assert_memory_not_equal(a.x, c.x, sizeof(int) * 128);
    }
    /* the rng is the whole position: a copy resumes the stream exactly */
    ag_rng saved = r1;
    tr_data_train_batch(d, &r1, &a, NULL, 0);
    tr_data_train_batch(d, &saved, &b, NULL, 0);
    assert_memory_equal(a.x, b.x, sizeof(int) * 128);
    /* validation batches do not depend on training progress, and differ by index */
    tr_data_val_batch(d, 2, &a, NULL, 0);
    for (int k = 0; k < 5; k++) tr_data_train_batch(d, &r1, &c, NULL, 0);
    tr_data_val_batch(d, 2, &b, NULL, 0);
    assert_memory_equal(a.x, b.x, sizeof(int) * 128);
    assert_memory_equal(a.y, b.y, sizeof(int) * 128);
    tr_data_val_batch(d, 3, &c, NULL, 0);
    assert_memory_not_equal(a.x, c.x, sizeof(int) * 128);
    /* a batch of the wrong width is refused */
    tr_batch w;
    char err[256];
    tr_batch_init(&w, 4, 31, NULL, 0);
    assert_int_equal(tr_data_train_batch(d, &r1, &w, err, sizeof err), -1);
    assert_non_null(strstr(err, "32"));
    tr_batch_free(&w);
    tr_batch_free(&w); /* freeing twice is harmless */
    assert_int_equal(tr_batch_init(&w, 0, 4, err, sizeof err), -1);
    assert_non_null(strstr(err, "at least 1"));
    tr_batch_free(NULL);
    tr_batch_free(&a);
    tr_batch_free(&b);
    tr_batch_free(&c);
    tr_dataset_free(d);
    tr_dataset_free(NULL);
}

/* ---- errors ---- */

static void test_bad_files_are_clear_errors(void **state) {
    fixture *f = *state;
    tr_data_opts o = tr_data_opts_default();
    o.ctx = 8;
    char missing[160];
    snprintf(missing, sizeof missing, "%s/no-such-file.txt", f->dir);
    open_fails(missing, &o, missing, "cannot open", NULL);
    open_fails(f->dir, &o, f->dir, "not a regular file", NULL);
    open_fails(write_file(f, "empty.txt", "", 0), &o, f->path, "empty", NULL);
    char bin[200];
    memset(bin, 'a', sizeof bin);
    bin[57] = 0;
    open_fails(write_file(f, "bin.txt", bin, sizeof bin), &o, f->path, "binary", "offset 57", NULL);
    for (int i = 0; i < 200; i += 5) bin[i] = 0x01; /* 20% control bytes, no NUL */
    bin[57] = 'a';
    open_fails(write_file(f, "ctrl.txt", bin, sizeof bin), &o, f->path, "binary", "control", NULL);
    /* 80 bytes: train 72, validation 8 < ctx + 1 = 9 */
    char *t = make_text(80, 4);
    write_file(f, "short.txt", t, 80);
    open_fails(f->path, &o, f->path, "validation split has 8 tokens", "at least 9", NULL);
    o.ctx = 80;
    open_fails(f->path, &o, f->path, "train split has 72 tokens", "at least 81", NULL);
    o.ctx = 0;
    open_fails(f->path, &o, f->path, "context 0", NULL);
    free(t);
    o.ctx = 8;
    open_fails("builtin:nonsense", &o, "nonsense", "markov, copy, reverse, sort", NULL);
    open_fails("", &o, "builtin:NAME", NULL);
    o.ctx = 10;
    open_fails("builtin:reverse", &o, "builtin:reverse", "at least 17", NULL);
}

static void test_fixed_vocabulary_rejects_foreign_bytes(void **state) {
    fixture *f = *state;
    const char *s = "abababababababababababababababababababababababababababababababababab";
    tr_vocab v;
    tr_vocab_chars(&v, (const uint8_t *)"ab", 2, NULL, 0);
    tr_data_opts o = tr_data_opts_default();
    o.ctx = 4;
    o.vocab_fixed = &v;
    tr_dataset *d = NULL;
    assert_int_equal(tr_dataset_open(&d, write_file(f, "a.txt", s, strlen(s)), &o, NULL, 0), 0);
    assert_int_equal(d->vocab.size, 2);
    tr_dataset_free(d);
    char other[80];
    memcpy(other, s, 60);
    other[40] = 'c';
    open_fails(write_file(f, "other.txt", other, 60), &o, f->path, "'c'", "offset 40", "vocabulary of 2", NULL);
    open_fails("builtin:markov", &o, "builtin:markov", "not in the model's char vocabulary", NULL);
}

/* ---- tasks ---- */

static void check_task_rows(const tr_dataset *d, const tr_batch *b, tr_task_kind kind) {
    char row[256];
    for (int r = 0; r < b->B; r++) {
        const int *x = b->x + r * b->T, *y = b->y + r * b->T;
        tr_vocab_decode(&d->vocab, x, (size_t)b->T, row);
        const char *sep = strchr(row, '>');
        assert_non_null(sep);
        int L = (int)(sep - row);
        assert_true(L >= d->task_min_len && L <= d->task_max_len);
        char want[32];
        memcpy(want, row, (size_t)L);
        if (kind == TR_TASK_REVERSE)
            for (int i = 0; i < L; i++) want[i] = row[L - 1 - i];
        if (kind == TR_TASK_SORT)
            for (int i = 0; i < L; i++)
                for (int j = i + 1; j < L; j++)
                    if (want[j] < want[i]) {
                        char c = want[i];
                        want[i] = want[j];
                        want[j] = c;
                    }
        want[L] = '.';
        /* scored exactly at positions L .. 2L, with the answer and '.' as targets */
        for (int t = 0; t < b->T; t++) {
            if (t >= L && t <= 2 * L) {
                assert_int_equal(y[t], d->vocab.id[(uint8_t)want[t - L]]);
                if (t < 2 * L) assert_int_equal(x[t + 1], y[t]);
            } else {
                assert_int_equal(y[t], TR_IGNORE);
            }
        }
        for (int t = 2 * L + 2; t < b->T; t++) assert_int_equal(x[t], d->vocab.id['.']);
    }
}

static void test_task_rows_score_only_the_answer(void **state) {
    (void)state;
    static const char *names[] = {"builtin:copy", "builtin:reverse", "builtin:sort"};
    for (int k = 0; k < 3; k++) {
        int T = tr_data_default_ctx(names[k]);
        assert_int_equal(T, 2 * TR_TASK_MAX_LEN + 1);
        tr_dataset *d = open_ok(names[k], TR_VOCAB_CHAR, T + 3);
        assert_int_equal(d->kind, TR_DATA_TASK);
        assert_true(d->has_accuracy);
        assert_int_equal(d->vocab.size, TR_TASK_ALPHA + 2);
        assert_true(d->floor == 0.0);
        tr_batch b;
        tr_batch_init(&b, 32, T + 3, NULL, 0);
        ag_rng r;
        ag_rng_seed(&r, 5);
        tr_data_train_batch(d, &r, &b, NULL, 0);
        check_task_rows(d, &b, (tr_task_kind)k);
        tr_data_val_batch(d, 0, &b, NULL, 0);
        check_task_rows(d, &b, (tr_task_kind)k);
        /* validation example i is the same whatever the batch size */
        tr_batch b4;
        tr_batch_init(&b4, 4, T + 3, NULL, 0);
        tr_data_val_batch(d, 2, &b4, NULL, 0);
        tr_data_val_batch(d, 0, &b, NULL, 0);
        assert_memory_equal(b4.x, b.x + 8 * (T + 3), sizeof(int) * 4 * (T + 3));
        char prompt[64], expected[64];
        assert_int_equal(tr_dataset_prompt(d, 8, prompt, expected, sizeof prompt), 0);
        char row[64];
        tr_vocab_decode(&d->vocab, b.x + 8 * (T + 3), (size_t)(T + 3), row);
        assert_memory_equal(row, prompt, strlen(prompt));
        assert_memory_equal(row + strlen(prompt), expected, strlen(expected));
        assert_int_equal(expected[strlen(expected) - 1], '.');
        tr_batch_free(&b4);
        tr_batch_free(&b);
        tr_dataset_free(d);
    }
    /* tasks with a byte vocabulary use byte ids */
    tr_dataset *d = open_ok("builtin:sort", TR_VOCAB_BYTE, 20);
    assert_int_equal(d->vocab.size, 256);
    tr_batch b;
    tr_batch_init(&b, 8, 20, NULL, 0);
    ag_rng r;
    ag_rng_seed(&r, 5);
    tr_data_train_batch(d, &r, &b, NULL, 0);
    check_task_rows(d, &b, TR_TASK_SORT);
    assert_true(b.x[0] >= 'a' && b.x[0] < 'a' + TR_TASK_ALPHA);
    tr_batch_free(&b);
    tr_dataset_free(d);
}

static void test_accuracy_is_exact_match_of_scored_positions(void **state) {
    (void)state;
    tr_dataset *d = open_ok("builtin:reverse", TR_VOCAB_CHAR, 17);
    int B = 6, T = 17, V = d->vocab.size;
    tr_batch b;
    tr_batch_init(&b, B, T, NULL, 0);
    tr_data_val_batch(d, 0, &b, NULL, 0);
    float *logits = calloc((size_t)B * T * V, sizeof(float));
    for (int p = 0; p < B * T; p++)
        logits[(size_t)p * V + (b.y[p] == TR_IGNORE ? 0 : b.y[p])] = 1.0f; /* one-hot on the target */
    long correct = 0, total = 0;
    tr_batch_accuracy(&b, logits, V, &correct, &total);
    assert_int_equal(total, B);
    assert_int_equal(correct, B);
    /* a wrong argmax at an ignored position changes nothing */
    int ign = 0;
    while (b.y[ign] != TR_IGNORE) ign++;
    logits[(size_t)ign * V + 3] = 5.0f;
    /* one wrong scored position (the last, the terminator) fails row 2 only */
    int last = 3 * T - 1; /* the last position of row 2 */
    while (b.y[last] == TR_IGNORE) last--;
    logits[(size_t)last * V + (b.y[last] + 1) % V] = 2.0f;
    correct = total = 0;
    tr_batch_accuracy(&b, logits, V, &correct, &total);
    assert_int_equal(total, B);
    assert_int_equal(correct, B - 1);
    /* counts accumulate over calls */
    tr_batch_accuracy(&b, logits, V, &correct, &total);
    assert_int_equal(total, 2 * B);
    assert_int_equal(correct, 2 * (B - 1));
    free(logits);
    tr_batch_free(&b);
    tr_dataset_free(d);
}

/* ---- Markov source and its floor ---- */

/* Brute force over every sequence of length T + 1 under the stationary law:
 * the mean over positions t of E[-log p(x_{t+1} | x_0..x_t)], with the
 * conditionals obtained by summing sequence probabilities. Needs A^(T+1)
 * small. Sequences are at least k long (the stationary law is over k-grams). */
static double brute_force_floor(const tr_markov *m, int T) {
    int A = m->A, k = m->k, n = T + 1 > k ? T + 1 : k; /* the prefixes marginalise the rest */
    long N = 1;
    for (int i = 0; i < n; i++) N *= A;
    double *p = malloc((size_t)N * sizeof(double));
    for (long q = 0; q < N; q++) {
        int x[16];
        long v = q;
        for (int i = n - 1; i >= 0; i--, v /= A) x[i] = (int)(v % A);
        int s = 0;
        for (int i = 0; i < k; i++) s = s * A + x[i];
        double pr = m->pi[s];
        for (int i = k; i < n; i++) {
            pr *= m->P[(size_t)s * A + x[i]];
            s = (s * A + x[i]) % m->S;
        }
        p[q] = pr;
    }
    double total = 0.0;
    for (int t = 0; t < T; t++) {
        /* prefixes of length t+1 and t+2: sequences sharing them are blocks */
        long blk1 = 1, blk2 = 1;
        for (int i = t + 1; i < n; i++) blk1 *= A;
        for (int i = t + 2; i < n; i++) blk2 *= A;
        double h = 0.0;
        for (long q0 = 0; q0 < N; q0 += blk2) {
            double p2 = 0.0, p1 = 0.0;
            for (long q = q0; q < q0 + blk2; q++) p2 += p[q];
            long b1 = q0 / blk1 * blk1;
            for (long q = b1; q < b1 + blk1; q++) p1 += p[q];
            if (p2 > 0.0) h -= p2 * log(p2 / p1);
        }
        total += h;
    }
    free(p);
    return total / T;
}

static void test_markov_floor_matches_brute_force(void **state) {
    (void)state;
    int configs[][3] = {{2, 2, 1}, {3, 2, 2}, {2, 3, 2}};
    for (int c = 0; c < 3; c++) {
        tr_markov m;
        char err[256];
        assert_int_equal(tr_markov_make(&m, configs[c][0], configs[c][1], configs[c][2], 0.05, 99 + c, err, sizeof err), 0);
        /* pi is stationary */
        double *next = calloc((size_t)m.S, sizeof(double)), sum = 0.0;
        for (int s = 0; s < m.S; s++)
            for (int a = 0; a < m.A; a++) next[(s * m.A + a) % m.S] += m.pi[s] * m.P[(size_t)s * m.A + a];
        for (int s = 0; s < m.S; s++) {
            assert_float_equal(next[s], m.pi[s], 1e-12);
            sum += m.pi[s];
        }
        assert_float_equal(sum, 1.0, 1e-12);
        free(next);
        for (int T = 1; T <= 5; T++) {
            double want = brute_force_floor(&m, T), got = tr_markov_window_floor(&m, T);
            assert_float_equal(got, want, 1e-10);
        }
        /* long windows approach the rate from above */
        double h = tr_markov_entropy_rate(&m);
        assert_true(tr_markov_window_floor(&m, 1000) >= h - 1e-12);
        assert_float_equal(tr_markov_window_floor(&m, 1000), h, 0.01);
        tr_markov_free(&m);
    }
    tr_markov bad;
    char err[256];
    assert_int_equal(tr_markov_make(&bad, 1, 2, 1, 0.1, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "alphabet"));
    assert_int_equal(tr_markov_make(&bad, 64, 4, 2, 0.1, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "65536"));
    tr_markov_free(NULL);
}

/* The plug-in conditional entropy of a long sample of the default chain
 * matches the computed rate. */
static void test_markov_sample_entropy_matches_rate(void **state) {
    (void)state;
    tr_markov m;
    int A = (int)strlen(TR_MARKOV_ALPHABET);
    assert_int_equal(tr_markov_make(&m, A, TR_MARKOV_K, TR_MARKOV_SUPPORT, TR_MARKOV_EPS, 7, NULL, 0), 0);
    size_t n = 2000000;
    uint8_t *x = malloc(n);
    ag_rng r;
    ag_rng_seed(&r, 8);
    tr_markov_generate(&m, &r, x, n);
    long *count = calloc((size_t)m.S * A, sizeof(long)), *row = calloc((size_t)m.S, sizeof(long));
    int s = 0;
    for (int i = 0; i < m.k; i++) s = s * A + x[i];
    for (size_t i = (size_t)m.k; i < n; i++) {
        count[(size_t)s * A + x[i]]++;
        row[s]++;
        s = (s * A + x[i]) % m.S;
    }
    double h = 0.0, N = (double)(n - (size_t)m.k);
    for (int q = 0; q < m.S; q++)
        for (int a = 0; a < A; a++) {
            long c = count[(size_t)q * A + a];
            if (c) h -= c / N * log((double)c / row[q]);
        }
    double rate = tr_markov_entropy_rate(&m);
    print_message("markov: entropy rate %.5f nats, sample estimate %.5f, log A %.5f\n", rate, h, log(A));
    assert_float_equal(h, rate, 0.01);
    assert_true(rate < 0.6 * log(A)); /* well below a uniform guess */
    free(count);
    free(row);
    free(x);
    tr_markov_free(&m);
}

static void test_builtin_markov_dataset(void **state) {
    (void)state;
    tr_dataset *d = open_ok("builtin:markov", TR_VOCAB_CHAR, TR_MARKOV_CTX);
    assert_int_equal(d->kind, TR_DATA_MARKOV);
    assert_int_equal(d->vocab.size, (int)strlen(TR_MARKOV_ALPHABET));
    assert_int_equal(d->n_tok, TR_MARKOV_TOKENS);
    assert_int_equal(d->n_train, TR_MARKOV_TOKENS / 10 * 9);
    assert_true(d->floor > d->entropy_rate && d->floor < log(d->vocab.size));
    /* the floor is the mean over positions t of H(X_{t+1} | the t+1 tokens before) */
    tr_markov m;
    assert_int_equal(tr_markov_make(&m, d->vocab.size, TR_MARKOV_K, TR_MARKOV_SUPPORT, TR_MARKOV_EPS,
                                    TR_DATA_SEED_DEFAULT ^ 0x67656e6572617465ULL, NULL, 0), 0);
    double want = 0.0;
    for (int t = 0; t < TR_MARKOV_CTX; t++) want += tr_markov_cond_entropy(&m, t + 1);
    want /= TR_MARKOV_CTX;
    assert_true(tr_markov_cond_entropy(&m, 1) > tr_markov_entropy_rate(&m));
    assert_float_equal(d->floor, want, 1e-12);
    assert_float_equal(d->entropy_rate, tr_markov_entropy_rate(&m), 1e-15);
    tr_markov_free(&m);
    char line[256];
    print_message("%s\n", tr_dataset_describe(d, line, sizeof line));
    /* the same seed gives the same data; another seed another */
    tr_dataset *d2 = open_ok("builtin:markov", TR_VOCAB_CHAR, TR_MARKOV_CTX);
    assert_true(d->hash == d2->hash);
    tr_dataset_free(d2);
    tr_data_opts o = tr_data_opts_default();
    o.ctx = 16;
    o.seed = 99;
    assert_int_equal(tr_dataset_open(&d2, "builtin:markov", &o, NULL, 0), 0);
    assert_true(d->hash != d2->hash);
    assert_true(d2->floor > d->floor || d2->floor < d->floor);
    tr_dataset_free(d2);
    char prompt[32], expected[32];
    assert_int_equal(tr_dataset_prompt(d, 0, prompt, expected, sizeof prompt), 0);
    assert_int_equal(strlen(prompt), 16);
    for (int i = 0; i < 16; i++) assert_non_null(strchr(TR_MARKOV_ALPHABET, prompt[i]));
    tr_dataset_free(d);
}

/* ---- tinyshakespeare ---- */

static void test_tinyshakespeare(void **state) {
    (void)state;
    const char *dir = getenv("PARE_SHARED_DATA");
    char path[512];
    snprintf(path, sizeof path, "%s/tinyshakespeare.txt", dir ? dir : "../shared/data");
    if (access(path, R_OK) != 0) {
        printf("SKIP: %s is absent; the tinyshakespeare checks did not run\n", path);
        skip();
    }
    tr_dataset *d = open_ok(path, TR_VOCAB_CHAR, 64);
    assert_int_equal(d->source_bytes, 1115394);
    assert_int_equal(d->vocab.size, 65);
    assert_int_equal(d->n_train, 1003854);
    char line[256];
    print_message("%s, hash %016llx\n", tr_dataset_describe(d, line, sizeof line), (unsigned long long)d->hash);
    tr_dataset_free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_char_vocab_is_sorted_distinct_bytes),
        cmocka_unit_test(test_encode_decode_round_trip),
        cmocka_unit_test(test_vocab_pack_unpack_and_compare),
        cmocka_unit_test(test_hash_is_fnv1a),
        cmocka_unit_test_setup_teardown(test_split_is_first_90_percent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batches_are_shifted_windows_of_their_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batches_follow_the_seed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_files_are_clear_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fixed_vocabulary_rejects_foreign_bytes, setup, teardown),
        cmocka_unit_test(test_task_rows_score_only_the_answer),
        cmocka_unit_test(test_accuracy_is_exact_match_of_scored_positions),
        cmocka_unit_test(test_markov_floor_matches_brute_force),
        cmocka_unit_test(test_markov_sample_entropy_matches_rate),
        cmocka_unit_test(test_builtin_markov_dataset),
        cmocka_unit_test(test_tinyshakespeare),
    };
    return cmocka_run_group_tests_name("data", tests, NULL, NULL);
}
