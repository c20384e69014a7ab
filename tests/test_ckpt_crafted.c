/* test_ckpt_crafted.c - crafted checkpoints: one file with a valid checksum
 * per loader check, each built from a real checkpoint by rewriting one
 * section (tr_ckpt_writer recomputes the checksum), and each rejected with a
 * message naming the section and what was expected, before anything is
 * allocated for what the file only claims. Also files that are not
 * checkpoints at all: a FIFO (must not block), a 3 GB sparse file (rejected
 * by its header without being read), a FIFO given as training data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train/checkpoint.h"
#include "train/data.h"
#include "train/trainer.h"

static char base[256], crafted[256];

/* ------------------------------------------------- a real checkpoint */

typedef struct world {
    tr_dataset *d;
    tr_gpt m;
    tr_trainer t;
} world;

static void world_open(world *w, const char *out) {
    char err[512];
    memset(w, 0, sizeof *w);
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = 8;
    if (tr_dataset_open(&w->d, "builtin:markov", &o, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_config mc = {.n_layer = 2, .n_head = 2, .n_embd = 8, .mlp_ratio = 2, .ctx = 8,
                        .vocab = w->d->vocab.size, .bias = true, .tied = false};
    if (tr_gpt_init(&w->m, &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_init_weights(&w->m, 3);
    tr_train_config tc = tr_train_config_default();
    tc.steps = 3;
    tc.batch = 2;
    tc.eval_batches = 1;
    tc.eval_every = 0;
    tc.out = out;
    if (tr_trainer_init(&w->t, &w->m, w->d, &tc, err, sizeof err) != 0) fail_msg("%s", err);
}

static void world_close(world *w) {
    tr_trainer_free(&w->t);
    tr_gpt_free(&w->m);
    tr_dataset_free(w->d);
}

/* A 3-step run with a mask on one tensor, saved to base. */
static int setup(void **state) {
    (void)state;
    snprintf(base, sizeof base, "/tmp/pare_test_crafted_%d.base.ckpt", (int)getpid());
    snprintf(crafted, sizeof crafted, "/tmp/pare_test_crafted_%d.ckpt", (int)getpid());
    world w;
    world_open(&w, base);
    if (tr_trainer_enable_masks(&w.t) != 0) fail_msg("%s", w.t.err);
    w.m.params.mask[w.m.params.offset[2]] = 0.0f;
    ag_params_mask_apply(&w.m.params);
    if (tr_train(&w.t) != TR_OK) fail_msg("%s", w.t.err);
    world_close(&w);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(base);
    unlink(crafted);
    return 0;
}

/* ---------------------------------------------------- the generator */

/* Rewrites section `tag` of base's data (data, len) into w (the writer has
 * the section open); u is the case's own argument. */
typedef void (*mutator)(tr_ckpt_writer *w, const uint8_t *data, uint64_t len, long u);

/* crafted = base with section tag rewritten by fn (tag NULL: drop section
 * `drop` only), every other section copied; the checksum is valid. */
static void craft(const char *tag, mutator fn, long u, const char *drop) {
    tr_ckpt_file f;
    char err[512];
    if (tr_ckpt_read(&f, base, err, sizeof err) != 0) fail_msg("%s", err);
    tr_ckpt_writer w;
    tr_ckpt_writer_init(&w);
    for (int i = 0; i < f.n_sections; i++) {
        const tr_ckpt_section *s = &f.sec[i];
        if (drop && !strcmp(s->tag, drop)) continue;
        tr_ckpt_begin(&w, s->tag);
        if (tag && !strcmp(s->tag, tag)) fn(&w, s->data, s->len, u);
        else tr_wr_bytes(&w, s->data, s->len);
    }
    tr_ckpt_close(&f);
    if (tr_ckpt_write(&w, crafted, err, sizeof err) != 0) fail_msg("%s", err);
    tr_ckpt_writer_free(&w);
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

/* ARCH of u layers of width 4096, heads of 64, MLP 16384, every field
 * consistent: only the TENS section's size can tell it is a lie. */
static void arch_huge(tr_ckpt_writer *w, const uint8_t *d, uint64_t n, long u) {
    (void)d, (void)n;
    uint32_t v[7] = {1, (uint32_t)u, 4096, 64, 8, rd32(d + 20), 1};
    for (int i = 0; i < 7; i++) tr_wr_u32(w, v[i]);
    for (long l = 0; l < u; l++) tr_wr_u32(w, 64), tr_wr_u32(w, 16384);
    for (long i = 0; i < u * 4 + 1; i++) tr_wr_u32(w, 0);
}

/* The same, but the per-layer table shorter than n_layer implies. */
static void arch_short(tr_ckpt_writer *w, const uint8_t *d, uint64_t n, long u) {
    (void)u;
    tr_wr_bytes(w, d, n - 4);
}

/* A rank larger than the site allows (slot u). */
static void arch_rank(tr_ckpt_writer *w, const uint8_t *d, uint64_t n, long u) {
    uint8_t *c = malloc(n);
    memcpy(c, d, n);
    uint64_t at = 28 + 2 * 8 + 4 * (uint64_t)u; /* version + 6 fields, 2 layers x (heads, hidden), rank slot u */
    c[at] = 200;
    tr_wr_bytes(w, c, n);
    free(c);
}

/* An old MODL section claiming u layers of width 4096 (ARCH dropped). */
static void modl_huge(tr_ckpt_writer *w, const uint8_t *d, uint64_t n, long u) {
    (void)d, (void)n;
    uint32_t v[7] = {(uint32_t)u, 64, 4096, 4, 8, rd32(d + 20), 1};
    for (int i = 0; i < 7; i++) tr_wr_u32(w, v[i]);
}

/* The section with its last u bytes cut. */
static void cut(tr_ckpt_writer *w, const uint8_t *d, uint64_t n, long u) { tr_wr_bytes(w, d, n - (uint64_t)u); }

/* The section with the little-endian u64 at byte `u` replaced. */
static uint64_t g_u64;
static void set_u64(tr_ckpt_writer *w, const uint8_t *d, uint64_t n, long u) {
    uint8_t *c = malloc(n);
    memcpy(c, d, n);
    for (int i = 0; i < 8; i++) c[u + i] = (uint8_t)(g_u64 >> (8 * i));
    tr_wr_bytes(w, c, n);
    free(c);
}

/* The float at byte u replaced by g_f32. */
static float g_f32;
static void set_f32(tr_ckpt_writer *w, const uint8_t *d, uint64_t n, long u) {
    uint8_t *c = malloc(n);
    memcpy(c, d, n);
    memcpy(c + u, &g_f32, 4);
    tr_wr_bytes(w, c, n);
    free(c);
}

/* The byte at u replaced by 0. */
static void nul_byte(tr_ckpt_writer *w, const uint8_t *d, uint64_t n, long u) {
    uint8_t *c = malloc(n);
    memcpy(c, d, n);
    c[u] = 0;
    tr_wr_bytes(w, c, n);
    free(c);
}

/* Loads crafted the way `pare eval` (model) or `pare train --resume`
 * (trainer) does; returns the error message (empty: it loaded). */
static const char *load(bool trainer, char *err, size_t errlen) {
    err[0] = '\0';
    if (!trainer) {
        tr_gpt m;
        tr_vocab v;
        if (tr_model_load(crafted, &m, 0, &v, NULL, err, errlen) == 0) tr_gpt_free(&m);
        return err;
    }
    world w;
    world_open(&w, "");
    if (tr_trainer_load(&w.t, crafted) != 0) snprintf(err, errlen, "%s", w.t.err);
    world_close(&w);
    return err;
}

static void expect(bool trainer, const char *want1, const char *want2) {
    char err[1024];
    load(trainer, err, sizeof err);
    print_message("%s\n", err);
    assert_non_null(strstr(err, want1));
    if (want2) assert_non_null(strstr(err, want2));
}

/* ------------------------------------------------------------ tests */

/* The base loads both ways (so each case below fails for its own reason). */
static void test_base_loads(void **state) {
    (void)state;
    craft("ZZZZ", NULL, 0, NULL);
    char err[1024];
    assert_string_equal(load(false, err, sizeof err), "");
    assert_string_equal(load(true, err, sizeof err), "");
}

/* A checkpoint claiming 19 layers of width 4096 (about 3.8e9 parameters)
 * in a few hundred bytes: rejected by its TENS section's size, before any
 * model is allocated (the audit's 676-byte file allocated 15 GB). */
static void test_claimed_model_larger_than_file(void **state) {
    (void)state;
    craft("ARCH", arch_huge, 19, NULL);
    expect(false, "section TENS", "needs");
    expect(true, "section TENS", "needs");
    /* the same claim in a checkpoint of the older MODL layout */
    craft("ARCH", NULL, 0, "ARCH");
    tr_ckpt_file f;
    char err[512];
    assert_int_equal(tr_ckpt_read(&f, crafted, err, sizeof err), 0);
    tr_ckpt_close(&f);
    /* rebuild with a MODL in ARCH's place */
    {
        tr_ckpt_file b;
        assert_int_equal(tr_ckpt_read(&b, base, err, sizeof err), 0);
        tr_ckpt_writer w;
        tr_ckpt_writer_init(&w);
        for (int i = 0; i < b.n_sections; i++) {
            tr_ckpt_begin(&w, !strcmp(b.sec[i].tag, "ARCH") ? "MODL" : b.sec[i].tag);
            if (!strcmp(b.sec[i].tag, "ARCH")) modl_huge(&w, b.sec[i].data, b.sec[i].len, 19);
            else tr_wr_bytes(&w, b.sec[i].data, b.sec[i].len);
        }
        tr_ckpt_close(&b);
        assert_int_equal(tr_ckpt_write(&w, crafted, err, sizeof err), 0);
        tr_ckpt_writer_free(&w);
    }
    expect(false, "section TENS", "needs");
}

static void test_arch_fields(void **state) {
    (void)state;
    craft("ARCH", arch_short, 0, NULL);
    expect(false, "section ARCH", "per-layer shapes");
    craft("ARCH", arch_rank, 2, NULL); /* layer 0's fc: [16, 8], rank at most 8 */
    expect(false, "rank 200", "expected 0 (dense) .. 8");
}

/* OPTM must hold exactly the model's moments, at the trainer's step; the
 * generator's state cannot be all zero; the second moments are >= 0. */
static void test_optimizer_and_trainer_state(void **state) {
    (void)state;
    craft("OPTM", cut, 4, NULL);
    expect(true, "section OPTM", "moments need");
    g_u64 = UINT64_MAX; /* an optimizer step of 2^64 - 1: NaN weights after the resume */
    craft("OPTM", set_u64, 0, NULL);
    expect(true, "optimizer is at step 18446744073709551615", "expected the same step");
    g_u64 = (uint64_t)1 << 63;
    craft("OPTM", set_u64, 0, NULL);
    expect(true, "optimizer is at step 9223372036854775808", NULL);
    g_u64 = 2; /* the trainer at step 2, the optimizer at 3 */
    craft("TRNR", set_u64, 0, NULL);
    expect(true, "section TRNR at step 2", NULL);
    g_u64 = 0;
    {
        /* all four generator words zero (bytes 16..48 of TRNR) */
        tr_ckpt_file b;
        char err[512];
        assert_int_equal(tr_ckpt_read(&b, base, err, sizeof err), 0);
        tr_ckpt_writer w;
        tr_ckpt_writer_init(&w);
        for (int i = 0; i < b.n_sections; i++) {
            tr_ckpt_begin(&w, b.sec[i].tag);
            if (!strcmp(b.sec[i].tag, "TRNR")) {
                tr_wr_bytes(&w, b.sec[i].data, 16);
                for (int k = 0; k < 4; k++) tr_wr_u64(&w, 0);
            } else {
                tr_wr_bytes(&w, b.sec[i].data, b.sec[i].len);
            }
        }
        tr_ckpt_close(&b);
        assert_int_equal(tr_ckpt_write(&w, crafted, err, sizeof err), 0);
        tr_ckpt_writer_free(&w);
    }
    expect(true, "all zero", NULL);
    g_f32 = -1.0f; /* a negative second moment (OPTM: step u64, count u32, then per tensor m, v) */
    size_t wte_numel = 0;
    {
        tr_gpt m;
        tr_vocab v;
        char err[512];
        assert_int_equal(tr_model_load(base, &m, 0, &v, NULL, err, sizeof err), 0);
        wte_numel = m.params.t[0].numel;
        tr_gpt_free(&m);
    }
    craft("OPTM", set_f32, (long)(12 + 4 * wte_numel), NULL); /* v[0] of wte */
    expect(true, "a second moment of tensor wte, element 0, is -1", ">= 0");
}

/* Tensor contents: a NUL byte in a name ("w\0e" for "wpe" would load as
 * "w"), a NaN weight (named with its index), a mask section of the wrong
 * length. */
static void test_tensor_contents(void **state) {
    (void)state;
    size_t wte_numel = 0;
    {
        tr_gpt m;
        tr_vocab v;
        char err[512];
        assert_int_equal(tr_model_load(base, &m, 0, &v, NULL, err, sizeof err), 0);
        wte_numel = m.params.t[0].numel;
        tr_gpt_free(&m);
    }
    /* TENS: count, then "wte": len 3 + name + ndim + 2 dims + floats, then "wpe"'s name */
    long wte_floats = 4 + 4 + 3 + 4 + 8;
    long wpe_name = wte_floats + 4 * (long)wte_numel + 4;
    craft("TENS", nul_byte, wpe_name + 1, NULL);
    expect(false, "NUL byte", NULL);
    g_f32 = NAN;
    craft("TENS", set_f32, wte_floats + 4 * 5, NULL);
    expect(false, "a weight of tensor wte, element 5, is nan", "expected finite");
    g_f32 = INFINITY;
    craft("TENS", set_f32, wte_floats, NULL);
    expect(true, "element 0, is inf", NULL);
    craft("MASK", cut, 1, NULL);
    expect(false, "section MASK", "mask bits");
}

/* Not a checkpoint: a FIFO is refused without blocking; a 3 GB file whose
 * header is wrong is refused by the header, without reading 3 GB; a FIFO as
 * training data is refused before it is opened. */
static void test_not_a_checkpoint(void **state) {
    (void)state;
    char fifo[300], err[512];
    snprintf(fifo, sizeof fifo, "%s.fifo", crafted);
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    tr_ckpt_file f;
    assert_int_equal(tr_ckpt_read(&f, fifo, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
    tr_dataset *d = NULL;
    tr_data_opts o = tr_data_opts_default();
    o.ctx = 8;
    assert_int_equal(tr_dataset_open(&d, fifo, &o, err, sizeof err), -1);
    assert_non_null(strstr(err, "a FIFO"));
    unlink(fifo);

    int fd = open(crafted, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "NOTACKPT", 8), 8);
    int sparse = ftruncate(fd, (off_t)3 << 30); /* 3 GB, sparse: no disk used */
    close(fd);
    if (sparse == 0) {
        assert_int_equal(tr_ckpt_read(&f, crafted, err, sizeof err), -1);
        assert_non_null(strstr(err, "not a pare checkpoint"));
    } else {
        print_message("note: no sparse 3 GB file on this file system; the large-file case was not run\n");
    }
    unlink(crafted);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_loads),
        cmocka_unit_test(test_claimed_model_larger_than_file),
        cmocka_unit_test(test_arch_fields),
        cmocka_unit_test(test_optimizer_and_trainer_state),
        cmocka_unit_test(test_tensor_contents),
        cmocka_unit_test(test_not_a_checkpoint),
    };
    return cmocka_run_group_tests_name("ckpt_crafted", tests, setup, teardown);
}
