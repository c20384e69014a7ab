/* test_format.c - the model file: a round trip, and the reader's refusal of
 * every malformed file: truncation at every byte offset, byte flips across the
 * header and tables, and one crafted file per check of the reader, each
 * rejected with its own message. Under ASan (the Sanitize build) this also
 * proves there is no out-of-bounds read, crash or leak on any of them. */
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
#include "infer/format.h"
#include "infer/runtime.h"
#include "model_fixture.h"

typedef struct fixture {
    char path[64];
    uint8_t *buf; /* a valid file (q4a linear weights: every section present) */
    size_t len;
    char err[512];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->path, sizeof f->path, "test_format_%d.pare", (int)getpid());
    fx_spec s = fx_default(INF_Q4A);
    if (fx_write_model(f->path, &s, f->err, sizeof f->err)) fail_msg("%s", f->err);
    f->buf = fx_read(f->path, &f->len);
    assert_non_null(f->buf);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    unlink(f->path);
    free(f->buf);
    free(f);
    return 0;
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void fix_checksum(uint8_t *b, size_t len) { put64(b + len - 8, ag_fnv1a(AG_FNV_INIT, b, len - 8)); }

/* Offset of the table entry of tensor `name`. */
static size_t entry_of(const uint8_t *b, const char *name) {
    size_t p = INF_HEADER_BYTES + INF_CONFIG_BYTES + get32(b + 28) + get32(b + 32);
    uint32_t n = get32(b + 36);
    for (uint32_t i = 0; i < n; i++) {
        uint16_t nl = (uint16_t)(b[p] | b[p + 1] << 8);
        if (nl == strlen(name) && !memcmp(b + p + 2, name, nl)) return p;
        p += 42 + nl;
    }
    fail_msg("no entry %s", name);
    return 0;
}
/* field offsets inside an entry of a name of nl bytes */
#define E_DTYPE(nl) (2 + (nl))
#define E_NDIM(nl) (3 + (nl))
#define E_SHAPE(nl, d) (6 + (nl) + 4 * (d))
#define E_GROUP(nl) (22 + (nl))
#define E_OFFSET(nl) (26 + (nl))
#define E_BYTES(nl) (34 + (nl))

static void test_round_trip(void **state) {
    fixture *f = *state;
    inf_file m;
    if (inf_file_parse(&m, f->buf, f->len, "x", f->err, sizeof f->err)) fail_msg("%s", f->err);
    assert_int_equal(m.version, INF_VERSION);
    assert_int_equal(m.cfg.n_layer, 1);
    assert_int_equal(m.cfg.n_embd, 32);
    assert_int_equal(m.cfg.n_hidden, 128);
    assert_int_equal(m.cfg.vocab, 8);
    assert_int_equal(m.vocab.n, 8);
    assert_int_equal(m.vocab.tok[2][0], 'c');
    const inf_tensor *t = inf_file_find(&m, "h.0.mlp.fc.w");
    assert_non_null(t);
    assert_int_equal(t->dtype, INF_Q4A);
    assert_int_equal(t->shape[0], 128);
    assert_int_equal(t->group, 32);
    assert_int_equal(t->offset % INF_ALIGN, 0);
    assert_int_equal(inf_file_find(&m, "h.0.ln1.w")->dtype, INF_F32);
    char val[64];
    assert_string_equal(inf_file_meta(&m, "data", val, sizeof val), "builtin:copy");
    assert_string_equal(inf_file_meta(&m, "source", val, sizeof val), "fixture");
    assert_null(inf_file_meta(&m, "dat", val, sizeof val));
    inf_file_close(&m);
    /* and through the file path, owning its buffer */
    if (inf_file_open(&m, f->path, f->err, sizeof f->err)) fail_msg("%s", f->err);
    assert_non_null(m.owned);
    inf_file_close(&m);
    inf_file_close(NULL);
}

/* Every proper prefix of a valid file is rejected with a message. */
static void test_truncation_at_every_offset(void **state) {
    fixture *f = *state;
    for (size_t n = 0; n < f->len; n++) {
        uint8_t *exact = malloc(n ? n : 1); /* exactly n bytes, so ASan sees any read past them */
        memcpy(exact, f->buf, n);
        inf_file m;
        f->err[0] = '\0';
        if (inf_file_parse(&m, exact, n, "t", f->err, sizeof f->err) == 0) fail_msg("prefix of %zu bytes accepted", n);
        assert_non_null(strstr(f->err, "byte "));
        free(exact);
    }
}

/* Flipping bits of any byte of the header, config, vocabulary and table is
 * rejected (by a field check or the checksum); with the checksum recomputed
 * it is rejected or, if the file is still valid, runs without a crash. */
static void test_byte_flips(void **state) {
    fixture *f = *state;
    uint8_t *b = malloc(f->len);
    size_t meta = (size_t)get64(f->buf + 48); /* data offset: everything before is header and tables */
    const uint8_t masks[3] = {0x01, 0x80, 0xff};
    int rejected_by_field = 0, accepted = 0;
    for (size_t i = 0; i < meta; i++)
        for (int mi = 0; mi < 3; mi++) {
            memcpy(b, f->buf, f->len);
            b[i] ^= masks[mi];
            inf_file m;
            if (inf_file_parse(&m, b, f->len, "flip", f->err, sizeof f->err) == 0)
                fail_msg("flip of byte %zu by 0x%02x accepted", i, masks[mi]);
            fix_checksum(b, f->len);
            inf_model mod;
            if (inf_model_parse(&mod, b, f->len, "flip", f->err, sizeof f->err) == 0) {
                accepted++; /* e.g. a changed weight value in a padding row: still a valid model */
                inf_session s;
                if (inf_session_init(&s, &mod, inf_isa_best(), 3, f->err, sizeof f->err) == 0) {
                    int id = 1;
                    float lg[256];
                    assert_int_equal(inf_forward(&s, &id, 1, lg, false, f->err, sizeof f->err), 0);
                    inf_session_free(&s);
                }
            } else {
                rejected_by_field++;
                assert_null(strstr(f->err, "checksum"));
            }
            inf_model_close(&mod);
        }
    /* flips in the data region are caught by the checksum (or, for a scale
     * or zero point, by the content check that runs before it) */
    for (size_t i = meta; i < f->len - 8; i += 97) {
        memcpy(b, f->buf, f->len);
        b[i] ^= 0x10;
        inf_file m;
        assert_int_equal(inf_file_parse(&m, b, f->len, "flip", f->err, sizeof f->err), -1);
        assert_true(strstr(f->err, "checksum") || strstr(f->err, "scale") || strstr(f->err, "zero point"));
    }
    print_message("byte flips over %zu header/table bytes: %d rejected by a field check with a valid checksum, %d "
                  "still valid\n", meta, rejected_by_field, accepted);
    assert_true(rejected_by_field > 0);
    free(b);
}

/* ---- one crafted file per check ---- */

typedef void (*mutate_fn)(uint8_t *b, size_t *len);

static void expect_reject(fixture *f, mutate_fn mut, bool fix_sum, const char *want) {
    uint8_t *b = malloc(f->len + 256);
    memcpy(b, f->buf, f->len);
    size_t len = f->len;
    mut(b, &len);
    if (fix_sum && len >= 8) fix_checksum(b, len);
    inf_file m;
    f->err[0] = '\0';
    if (inf_file_parse(&m, b, len, "crafted", f->err, sizeof f->err) == 0) fail_msg("accepted; expected '%s'", want);
    if (!strstr(f->err, want)) fail_msg("error '%s' does not contain '%s'", f->err, want);
    free(b);
}

#define MUT(name, ...)                                                                                        \
    static void name(uint8_t *b, size_t *len) {                                                               \
        (void)b;                                                                                              \
        (void)len;                                                                                            \
        __VA_ARGS__;                                                                                          \
    }

MUT(m_short, *len = 60)
MUT(m_magic, b[0] = 'X')
MUT(m_version, put32(b + 8, 2))
MUT(m_flags, put32(b + 12, 1))
MUT(m_filesize, put64(b + 16, get64(b + 16) + 64))
MUT(m_config_size, put32(b + 24, 44))
MUT(m_tensor_count0, put32(b + 36, 0))
MUT(m_tensor_count_cap, put32(b + 36, INF_MAX_TENSORS + 1))
MUT(m_table_size, put32(b + 40, 10))
MUT(m_meta_size, put32(b + 32, INF_MAX_META + 1))
MUT(m_header_reserved, put32(b + 44, 3))
MUT(m_meta_nul, b[INF_HEADER_BYTES + INF_CONFIG_BYTES + get32(b + 28) + 3] = 0)
MUT(m_data_offset, put64(b + 48, get64(b + 48) + 8))
MUT(m_layers0, put32(b + 56, 0))
MUT(m_layers_cap, put32(b + 56, INF_MAX_LAYERS + 1))
MUT(m_heads, put32(b + 60, 3))
MUT(m_bias2, put32(b + 80, 2))
MUT(m_eps_nan, {
    float v = NAN;
    memcpy(b + 88, &v, 4);
})
MUT(m_config_reserved, put32(b + 92, 1))
MUT(m_vocab_kind, put32(b + 96, 7))
MUT(m_vocab_count, put32(b + 100, 9))
MUT(m_vocab_entry_len, b[104] = 0)
MUT(m_name_len0, {
    size_t e = entry_of(b, "wte");
    b[e] = 0, b[e + 1] = 0;
})
MUT(m_name_len_cap, {
    size_t e = entry_of(b, "wte");
    b[e] = 64, b[e + 1] = 0;
})
MUT(m_name_unprintable, b[entry_of(b, "wte") + 3] = '\n')
MUT(m_dtype, b[entry_of(b, "wte") + E_DTYPE(3)] = 9)
MUT(m_ndim0, b[entry_of(b, "wte") + E_NDIM(3)] = 0)
MUT(m_ndim5, b[entry_of(b, "wte") + E_NDIM(3)] = 5)
MUT(m_dim0, put32(b + entry_of(b, "wte") + E_SHAPE(3, 0), 0))
MUT(m_dim_cap, put32(b + entry_of(b, "wte") + E_SHAPE(3, 1), INF_MAX_DIM + 1))
MUT(m_unused_dim, put32(b + entry_of(b, "wte") + E_SHAPE(3, 2), 2))
MUT(m_group_f32, put32(b + entry_of(b, "wte") + E_GROUP(3), 32))
MUT(m_group_q, put32(b + entry_of(b, "lm_head.w") + E_GROUP(9), 48))
MUT(m_quant_vector, {
    size_t e = entry_of(b, "lnf.w");
    b[e + E_DTYPE(5)] = INF_Q8;
})
MUT(m_bytes, {
    size_t e = entry_of(b, "wte");
    put64(b + e + E_BYTES(3), get64(b + e + E_BYTES(3)) + 4);
})
MUT(m_offset_align, {
    size_t e = entry_of(b, "wte");
    put64(b + e + E_OFFSET(3), get64(b + e + E_OFFSET(3)) + 4);
})
MUT(m_offset_outside, put64(b + entry_of(b, "wte") + E_OFFSET(3), (uint64_t)1 << 40))
MUT(m_offset_before_data, put64(b + entry_of(b, "wte") + E_OFFSET(3), 0))
MUT(m_overlap, {
    size_t e = entry_of(b, "wpe"), w = entry_of(b, "wte");
    put64(b + e + E_OFFSET(3), get64(b + w + E_OFFSET(3)));
})
MUT(m_duplicate, memcpy(b + entry_of(b, "wpe") + 2, "wte", 3))
MUT(m_missing, memcpy(b + entry_of(b, "wpe") + 2, "wqe", 3))
MUT(m_shape_config, {
    /* wpe [4, 32] -> [8, 16]: same bytes, wrong shape */
    size_t e = entry_of(b, "wpe");
    put32(b + e + E_SHAPE(3, 0), 8);
    put32(b + e + E_SHAPE(3, 1), 16);
})
MUT(m_overflow, {
    size_t e = entry_of(b, "wte");
    b[e + E_NDIM(3)] = 4;
    for (int d = 0; d < 4; d++) put32(b + e + E_SHAPE(3, d), INF_MAX_DIM);
})
MUT(m_padding, b[get64(b + 48) - 1] = 1)
MUT(m_scale_nan, {
    size_t e = entry_of(b, "lm_head.w");
    uint64_t off = get64(b + e + E_OFFSET(9));
    /* lm_head [8, 32] q4a: 1 row block x 4 column blocks of 64 bytes, then scales */
    float v = NAN;
    memcpy(b + off + 4 * 64, &v, 4);
})
MUT(m_zero_point, {
    size_t e = entry_of(b, "lm_head.w");
    uint64_t off = get64(b + e + E_OFFSET(9));
    b[off + 4 * 64 + 16 * 4] = 16; /* after 1 group x 16 scales */
})
MUT(m_checksum, b[*len - 20] ^= 1)

static void test_crafted_files(void **state) {
    fixture *f = *state;
    const struct {
        mutate_fn fn;
        bool fix;
        const char *want;
    } cases[] = {
        {m_short, false, "file size: 60 bytes: too short"},
        {m_magic, true, "magic: not a pare model file"},
        {m_version, true, "byte 8: version: 2"},
        {m_flags, true, "byte 12: flags"},
        {m_filesize, true, "byte 16: file size: header says"},
        {m_config_size, true, "byte 24: config size: 44"},
        {m_tensor_count0, true, "byte 36: tensor count: 0"},
        {m_tensor_count_cap, true, "tensor count: 65537"},
        {m_table_size, true, "byte 40: table size: 10 bytes"},
        {m_meta_size, true, "byte 32: metadata size: 1048577"},
        {m_header_reserved, true, "byte 44: header reserved: 3"},
        {m_meta_nul, true, "metadata: a NUL byte"},
        {m_data_offset, true, "byte 48: data offset"},
        {m_layers0, true, "byte 56: config n_layer: 0"},
        {m_layers_cap, true, "config n_layer: 1025"},
        {m_heads, true, "3 heads do not divide the width 32"},
        {m_bias2, true, "byte 80: config bias: 2"},
        {m_eps_nan, true, "byte 88: config ln_eps"},
        {m_config_reserved, true, "byte 92: config reserved"},
        {m_vocab_kind, true, "byte 96: vocabulary kind: 7"},
        {m_vocab_count, true, "vocabulary count: 9 entries: the config says vocab 8"},
        {m_vocab_entry_len, true, "byte 104: vocabulary entry length: entry 0 has 0 bytes"},
        {m_name_len0, true, "tensor name length: tensor 0: 0 bytes"},
        {m_name_len_cap, true, "tensor name length: tensor 0: 64 bytes"},
        {m_name_unprintable, true, "tensor name: tensor 0: byte 0x0a"},
        {m_dtype, true, "storage type: tensor 'wte': 9"},
        {m_ndim0, true, "ndim: tensor 'wte': 0"},
        {m_ndim5, true, "ndim: tensor 'wte': 5"},
        {m_dim0, true, "tensor 'wte' dimension 0 is 0"},
        {m_dim_cap, true, "tensor 'wte' dimension 1 is 16777217"},
        {m_unused_dim, true, "dimension 2 is 2: expected 1 (unused)"},
        {m_group_f32, true, "group size: tensor 'wte': group size 32: expected 0 for f32"},
        {m_group_q, true, "group size: tensor 'lm_head.w': group size 48"},
        {m_quant_vector, true, "tensor 'lnf.w': ndim 1: q8 stores matrices only"},
        {m_bytes, true, "byte count: tensor 'wte'"},
        {m_offset_align, true, "offset: tensor 'wte'"},
        {m_offset_outside, true, "offset: tensor 'wte': 1099511627776"},
        {m_offset_before_data, true, "offset: tensor 'wte': 0 "},
        {m_overlap, true, "overlaps tensor"},
        {m_duplicate, true, "tensor name 'wte' appears twice"},
        {m_missing, true, "missing tensor 'wpe'"},
        {m_shape_config, true, "tensor 'wpe' is 2D [8, 16]: the config implies 2D [4, 32]"},
        {m_overflow, true, "size overflows 64 bits"},
        {m_padding, true, "padding"},
        {m_scale_nan, true, "scale: tensor 'lm_head.w' scale 0 is nan"},
        {m_zero_point, true, "zero point: tensor 'lm_head.w' zero point 0 is 16"},
        {m_checksum, false, "checksum: stored"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_reject(f, cases[i].fn, cases[i].fix, cases[i].want);
}

/* A tensor the config does not imply is refused by name. */
static void test_unexpected_tensor(void **state) {
    fixture *f = *state;
    inf_file m;
    if (inf_file_parse(&m, f->buf, f->len, "x", f->err, sizeof f->err)) fail_msg("%s", f->err);
    inf_tensor_in t[64];
    uint32_t n = m.n_tensors;
    for (uint32_t i = 0; i < n; i++) {
        t[i].name = m.t[i].name, t[i].dtype = m.t[i].dtype, t[i].ndim = m.t[i].ndim;
        memcpy(t[i].shape, m.t[i].shape, sizeof t[i].shape);
        t[i].group = m.t[i].group, t[i].data = m.t[i].data, t[i].bytes = m.t[i].bytes;
    }
    float extra[4] = {1, 2, 3, 4};
    t[n] = (inf_tensor_in){"extra.w", INF_F32, 1, {4, 1, 1, 1}, 0, extra, 16};
    const uint8_t *tok[8];
    for (uint32_t i = 0; i < 8; i++) tok[i] = m.vocab.tok[i];
    char p2[80];
    snprintf(p2, sizeof p2, "%s.extra", f->path);
    if (inf_file_write(p2, &m.cfg, m.vocab.kind, m.vocab.n, tok, m.vocab.len, NULL, t, n + 1, f->err, sizeof f->err))
        fail_msg("%s", f->err);
    inf_file_close(&m);
    inf_file bad;
    assert_int_equal(inf_file_open(&bad, p2, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "unexpected tensor 'extra.w'"));
    unlink(p2);
    /* the writer refuses a tensor whose bytes do not match its type and shape */
    t[n].bytes = 12;
    assert_int_equal(inf_file_write(p2, &bad.cfg, 1, 0, NULL, NULL, NULL, &t[n], 1, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "need 16"));
    assert_int_equal(access(p2, F_OK), -1);
    /* a missing file names the path */
    assert_int_equal(inf_file_open(&bad, "/nonexistent/model.pare", f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "/nonexistent/model.pare: cannot open"));
}

/* Every storage type, bias and tying combination round-trips and runs. */
static void test_variants_parse_and_run(void **state) {
    fixture *f = *state;
    for (int dt = 0; dt < INF_DTYPE_COUNT; dt++)
        for (int v = 0; v < 4; v++) {
            fx_spec s = fx_default(dt);
            s.bias = v & 1, s.tied = (v >> 1) & 1, s.V = v == 3 ? 256 : 8;
            if (fx_write_model(f->path, &s, f->err, sizeof f->err)) fail_msg("%s", f->err);
            inf_model m;
            if (inf_model_open(&m, f->path, f->err, sizeof f->err)) fail_msg("%s %d: %s", inf_type(dt)->name, v, f->err);
            inf_session ses;
            assert_int_equal(inf_session_init(&ses, &m, inf_isa_best(), 3, f->err, sizeof f->err), 0);
            int ids[4] = {1, 2, 3, 0};
            float lg[4 * 256];
            assert_int_equal(inf_forward(&ses, ids, 4, lg, true, f->err, sizeof f->err), 0);
            for (int i = 0; i < 4 * s.V; i++) assert_true(isfinite(lg[i]));
            inf_session_free(&ses);
            inf_model_close(&m);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation_at_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_byte_flips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crafted_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unexpected_tensor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_variants_parse_and_run, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
