/* test_checkpoint.c - the checkpoint file: sections round-trip, a model
 * round-trips through tr_trainer_save / tr_model_load, and every kind of
 * damage (a flipped byte, truncation, a wrong magic or version, a section
 * length past the end, a short field) is rejected with a message naming it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/hash.h"
#include "tmpfiles.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/trainer.h"

static char path[256];

static int setup(void **state) {
    (void)state;
    snprintf(path, sizeof path, "/tmp/pare_test_ckpt_%d.ckpt", (int)getpid());
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(path);
    return 0;
}

static void write_sample(const char *p) {
    tr_ckpt_writer w;
    tr_ckpt_writer_init(&w);
    tr_ckpt_begin(&w, "AAAA");
    tr_wr_u32(&w, 0xdeadbeefu);
    tr_wr_u64(&w, 0x0123456789abcdefull);
    tr_wr_f64(&w, -2.5);
    tr_wr_str(&w, "hello");
    float x[3] = {1.5f, -0.0f, 3e-38f};
    tr_wr_f32s(&w, x, 3);
    tr_ckpt_begin(&w, "ZZZZ"); /* a section no reader knows */
    tr_wr_u32(&w, 7);
    char err[512];
    if (tr_ckpt_write(&w, p, err, sizeof err) != 0) fail_msg("%s", err);
    tr_ckpt_writer_free(&w);
}

static size_t file_bytes(const char *p, uint8_t **out) {
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    *out = malloc((size_t)n);
    assert_int_equal(fread(*out, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return (size_t)n;
}

static void put_file(const char *p, const uint8_t *b, size_t n) {
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void test_sections_round_trip(void **state) {
    (void)state;
    write_sample(path);
    assert_int_equal(count_temporaries(path), 0); /* the temporary is gone */
    tr_ckpt_file f;
    char err[512];
    assert_int_equal(tr_ckpt_read(&f, path, err, sizeof err), 0);
    assert_int_equal(f.n_sections, 2);
    assert_null(tr_ckpt_find(&f, "MISS"));
    tr_rd rd;
    assert_int_equal(tr_rd_open(&rd, &f, "AAAA"), 0);
    uint32_t a;
    uint64_t b;
    double d;
    char *s;
    float x[3];
    assert_int_equal(tr_rd_u32(&rd, "a", &a), 0);
    assert_int_equal(tr_rd_u64(&rd, "b", &b), 0);
    assert_int_equal(tr_rd_f64(&rd, "d", &d), 0);
    assert_int_equal(tr_rd_str(&rd, "s", 100, &s), 0);
    assert_int_equal(tr_rd_f32s(&rd, "x", x, 3), 0);
    assert_int_equal(tr_rd_done(&rd), 0);
    assert_int_equal(a, 0xdeadbeefu);
    assert_true(b == 0x0123456789abcdefull);
    assert_true(d == -2.5);
    assert_string_equal(s, "hello");
    free(s);
    float want[3] = {1.5f, -0.0f, 3e-38f};
    assert_memory_equal(x, want, sizeof x);
    /* reading past the end names the section and the field */
    assert_int_equal(tr_rd_open(&rd, &f, "ZZZZ"), 0);
    assert_int_equal(tr_rd_u64(&rd, "wide", &b), -1);
    assert_non_null(strstr(rd.err, "section ZZZZ"));
    assert_non_null(strstr(rd.err, "field wide needs 8 bytes, 4 left"));
    /* a string longer than its limit */
    assert_int_equal(tr_rd_open(&rd, &f, "AAAA"), 0);
    tr_rd_u32(&rd, "a", &a);
    tr_rd_u64(&rd, "b", &b);
    tr_rd_f64(&rd, "d", &d);
    assert_int_equal(tr_rd_str(&rd, "s", 3, &s), -1);
    assert_null(s);
    assert_non_null(strstr(rd.err, "field s: length 5 exceeds"));
    /* the bytes on disk are little-endian as documented */
    const uint8_t *p = f.buf;
    assert_memory_equal(p, "PARECKPT", 8);
    assert_int_equal(p[8], 1);
    assert_int_equal(p[12], 2);
    assert_memory_equal(p + 32, "AAAA", 4);
    assert_int_equal(p[32 + 16], 0xef);
    assert_int_equal(p[32 + 19], 0xde);
    tr_ckpt_close(&f);
    tr_ckpt_close(NULL);
}

static void expect_reject(const uint8_t *b, size_t n, const char *needle) {
    put_file(path, b, n);
    tr_ckpt_file f;
    char err[512];
    assert_int_equal(tr_ckpt_read(&f, path, err, sizeof err), -1);
    print_message("%s\n", err);
    if (!strstr(err, needle)) fail_msg("expected '%s' in: %s", needle, err);
    assert_null(f.buf);
}

static void test_damage_is_rejected(void **state) {
    (void)state;
    write_sample(path);
    uint8_t *b;
    size_t n = file_bytes(path, &b);
    uint8_t *c = malloc(n);

    for (size_t at = 32; at < n; at += 5) { /* any flipped payload byte */
        memcpy(c, b, n);
        c[at] ^= 0x10;
        expect_reject(c, n, "checksum mismatch");
    }
    expect_reject(b, n - 1, "truncated");
    expect_reject(b, 20, "shorter than the 32-byte header");
    memcpy(c, b, n);
    c[0] = 'X';
    expect_reject(c, n, "not a pare checkpoint");
    memcpy(c, b, n);
    c[8] = 9;
    expect_reject(c, n, "format version 9");

    /* a section length past the end, with a valid checksum over the lie */
    memcpy(c, b, n);
    c[32 + 8] = 0xff;
    uint64_t h = ag_fnv1a(AG_FNV_INIT, c + 32, n - 32);
    for (int i = 0; i < 8; i++) c[24 + i] = (uint8_t)(h >> (8 * i));
    expect_reject(c, n, "section AAAA claims");

    /* a section count the payload cannot hold */
    memcpy(c, b, n);
    c[12] = 200;
    expect_reject(c, n, "200 sections cannot fit");

    tr_ckpt_file f;
    char err[512];
    assert_int_equal(tr_ckpt_read(&f, "/nonexistent/dir/x.ckpt", err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot open"));
    free(b);
    free(c);
}

static void test_failed_write_keeps_the_old_file(void **state) {
    (void)state;
    write_sample(path);
    uint8_t *before;
    size_t n = file_bytes(path, &before);
    tr_ckpt_writer w;
    tr_ckpt_writer_init(&w);
    tr_ckpt_begin(&w, "AAAA");
    tr_wr_u32(&w, 1);
    char err[512];
    assert_int_equal(tr_ckpt_write(&w, "/nonexistent/dir/x.ckpt", err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/dir/x.ckpt"));
    /* overwriting works and replaces the file atomically */
    assert_int_equal(tr_ckpt_write(&w, path, err, sizeof err), 0);
    uint8_t *after;
    size_t m = file_bytes(path, &after);
    assert_true(m != n || memcmp(before, after, n) != 0);
    tr_ckpt_writer_free(&w);
    tr_ckpt_writer_free(NULL);
    free(before);
    free(after);
}

/* tr_trainer_save + tr_model_load give back the same model, vocabulary and
 * configuration text; a damaged TENS section is named. */
static void test_model_round_trip(void **state) {
    (void)state;
    char err[512];
    tr_dataset *d;
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = 17;
    assert_int_equal(tr_dataset_open(&d, "builtin:copy", &o, err, sizeof err), 0);
    tr_gpt_config mc = {.n_layer = 1, .n_head = 2, .n_embd = 8, .mlp_ratio = 2, .ctx = 17,
                        .vocab = d->vocab.size, .bias = false, .tied = true};
    tr_gpt m;
    assert_int_equal(tr_gpt_init(&m, &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err), 0);
    tr_gpt_init_weights(&m, 4);
    tr_trainer t;
    tr_train_config tc = tr_train_config_default();
    tc.batch = 2;
    assert_int_equal(tr_trainer_init(&t, &m, d, &tc, err, sizeof err), 0);
    t.config_text = "data=builtin:copy\nn-layer=1\n";
    if (tr_trainer_save(&t, path) != 0) fail_msg("%s", t.err);

    tr_gpt m2;
    tr_vocab v;
    char *conf;
    if (tr_model_load(path, &m2, 0, &v, &conf, err, sizeof err) != 0) fail_msg("%s", err);
    assert_string_equal(conf, "data=builtin:copy\nn-layer=1\n");
    assert_int_equal(tr_vocab_compare(&v, "a", &d->vocab, "b", err, sizeof err), 0);
    assert_true(m2.arch.tied && !m2.arch.bias && m2.arch.vocab == mc.vocab && m2.arch.ctx == 17);
    assert_true(pm_arch_equal(&m2.arch, &m.arch));
    assert_int_equal(m2.params.n, m.params.n);
    assert_memory_equal(m2.params.data, m.params.data, m.params.n * sizeof(float));
    free(conf);
    tr_gpt_free(&m2);

    /* a tensor name changed (same length) and the checksum fixed up: the
     * field reader names the tensor */
    {
        uint8_t *b0;
        size_t n0 = file_bytes(path, &b0);
        uint8_t *hit = NULL;
        for (size_t i = 0; i + 5 <= n0; i++)
            if (!memcmp(b0 + i, "lnf.w", 5)) hit = b0 + i;
        assert_non_null(hit);
        hit[4] = 'x';
        uint64_t h0 = ag_fnv1a(AG_FNV_INIT, b0 + 32, n0 - 32);
        for (int i = 0; i < 8; i++) b0[24 + i] = (uint8_t)(h0 >> (8 * i));
        put_file(path, b0, n0);
        assert_int_equal(tr_model_load(path, &m2, 0, &v, NULL, err, sizeof err), -1);
        print_message("%s\n", err);
        assert_non_null(strstr(err, "'lnf.x', expected 'lnf.w'"));
        hit[4] = 'w';
        h0 = ag_fnv1a(AG_FNV_INIT, b0 + 32, n0 - 32);
        for (int i = 0; i < 8; i++) b0[24 + i] = (uint8_t)(h0 >> (8 * i));
        put_file(path, b0, n0);
        free(b0);
    }

    /* truncate the file inside the TENS section and fix up the header: the
     * checksum passes, and the reader finds the section shorter than the
     * architecture needs before it allocates the model */
    uint8_t *b;
    size_t n = file_bytes(path, &b);
    tr_ckpt_file f;
    assert_int_equal(tr_ckpt_read(&f, path, err, sizeof err), 0);
    const tr_ckpt_section *s = tr_ckpt_find(&f, "TENS");
    assert_non_null(s);
    size_t tens_hdr = (size_t)(s->data - f.buf) - 16, cut = 40;
    tr_ckpt_close(&f);
    uint64_t newlen = 0;
    for (int i = 0; i < 8; i++) newlen |= (uint64_t)b[tens_hdr + 8 + i] << (8 * i);
    newlen -= cut;
    for (int i = 0; i < 8; i++) b[tens_hdr + 8 + i] = (uint8_t)(newlen >> (8 * i));
    memmove(b + tens_hdr + 16 + newlen, b + tens_hdr + 16 + newlen + cut, n - (tens_hdr + 16 + newlen + cut));
    n -= cut;
    uint64_t payload = n - 32, h = ag_fnv1a(AG_FNV_INIT, b + 32, n - 32);
    for (int i = 0; i < 8; i++) {
        b[16 + i] = (uint8_t)(payload >> (8 * i));
        b[24 + i] = (uint8_t)(h >> (8 * i));
    }
    put_file(path, b, n);
    assert_int_equal(tr_model_load(path, &m2, 0, &v, NULL, err, sizeof err), -1);
    print_message("%s\n", err);
    assert_non_null(strstr(err, "section TENS"));
    assert_non_null(strstr(err, "needs"));
    free(b);
    tr_trainer_free(&t);
    tr_gpt_free(&m);
    tr_dataset_free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sections_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damage_is_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_keeps_the_old_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_round_trip, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
