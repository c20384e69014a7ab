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
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "autograd/hash.h"
#include "infer/format.h"
#include "tmpfiles.h"
#include "infer/runtime.h"
#include "infer/types.h"
#include "model_fixture.h"

typedef struct fixture {
    char path[64];
    uint8_t *buf; /* a valid version-2 file (q4a linear weights: every section present) */
    size_t len;
    uint8_t *v1; /* the same model as a version-1 file, laid out by hand */
    size_t v1_len;
    uint8_t *fac; /* a version-2 file with per-layer heads and MLP widths and factorized sites */
    size_t fac_len;
    char err[512];
} fixture;

/* 2 layers of width 32, head width 16: layer 0 has 2 heads, MLP 128 and a
 * factorized qkv (rank 8); layer 1 has 1 head, MLP 64 and a factorized fc
 * (rank 4); the head is factorized (rank 4); q8 where the input width allows. */
static fx_spec fac_spec(int dtype) {
    fx_spec s = fx_default(dtype);
    s.n_layer = 2, s.heads[0] = 2, s.heads[1] = 1, s.hidden[0] = 128, s.hidden[1] = 64, s.ctx = 6;
    s.rank[0 * PM_LINEARS_PER_LAYER + 0] = 8; /* h.0.attn.qkv */
    s.rank[1 * PM_LINEARS_PER_LAYER + 2] = 4; /* h.1.mlp.fc */
    s.rank[2 * PM_LINEARS_PER_LAYER] = 4;     /* lm_head */
    return s;
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->path, sizeof f->path, "test_format_%d.pare", (int)getpid());
    fx_spec s = fac_spec(INF_Q8);
    if (fx_write_model(f->path, &s, f->err, sizeof f->err)) fail_msg("%s", f->err);
    f->fac = fx_read(f->path, &f->fac_len);
    s = fx_default(INF_Q4A);
    if (fx_write_model(f->path, &s, f->err, sizeof f->err)) fail_msg("%s", f->err);
    f->buf = fx_read(f->path, &f->len);
    assert_non_null(f->buf);
    assert_non_null(f->fac);
    f->v1 = fx_v1_from_v2(f->buf, f->len, &f->v1_len);
    assert_non_null(f->v1);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    unlink(f->path);
    free(f->buf), free(f->v1), free(f->fac);
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

/* Offsets of the sections (from the header's sizes). */
static size_t vocab_at(const uint8_t *b) { return INF_HEADER_BYTES + get32(b + 24); }
static size_t meta_at(const uint8_t *b) { return vocab_at(b) + get32(b + 28); }
static size_t table_at(const uint8_t *b) { return meta_at(b) + get32(b + 32); }

/* Version-2 config fields (docs/format.md): model-level, then per layer. */
#define C_NLAYER 56
#define C_NEMBD 60
#define C_HEADDIM 64
#define C_BIAS 76
#define C_TIED 80
#define C_EPS 84
#define C_HEADRANK 88
#define C_RESERVED 92
#define C_LAYER(l) (96 + 24 * (l))      /* n_head, then n_hidden, then the 4 ranks */
#define C_RANK(l, j) (C_LAYER(l) + 8 + 4 * (j))

/* Offset of the table entry of tensor `name`. */
static size_t entry_of(const uint8_t *b, const char *name) {
    size_t p = table_at(b);
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
    assert_int_equal(m.version, 2); /* no activation records: version 2, as before they existed */
    assert_int_equal(m.arch.n_layer, 1);
    assert_int_equal(m.arch.n_embd, 32);
    assert_int_equal(m.arch.head_dim, 16);
    assert_int_equal(m.arch.n_head[0], 2);
    assert_int_equal(m.arch.n_hidden[0], 128);
    assert_int_equal(m.arch.vocab, 8);
    assert_true(m.ln_eps == 1e-5f);
    assert_int_equal(get32(f->buf + 24), INF_CONFIG_FIXED + INF_CONFIG_LAYER);
    /* the table the reader built from the config, each entry the file's tensor */
    assert_int_equal(m.table.n_tensor, (int)m.n_tensors);
    for (int i = 0; i < m.table.n_tensor; i++) assert_string_equal(m.by_table[i]->name, m.table.tensor[i].name);
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

/* Every proper prefix of a valid file (each of the three) is rejected with a
 * message. */
static void truncations(fixture *f, const uint8_t *buf, size_t len) {
    for (size_t n = 0; n < len; n++) {
        uint8_t *exact = malloc(n ? n : 1); /* exactly n bytes, so ASan sees any read past them */
        memcpy(exact, buf, n);
        inf_file m;
        f->err[0] = '\0';
        if (inf_file_parse(&m, exact, n, "t", f->err, sizeof f->err) == 0) fail_msg("prefix of %zu bytes accepted", n);
        assert_non_null(strstr(f->err, "byte "));
        free(exact);
    }
}

static void test_truncation_at_every_offset(void **state) {
    fixture *f = *state;
    truncations(f, f->buf, f->len);
    truncations(f, f->v1, f->v1_len);
    truncations(f, f->fac, f->fac_len);
}

/* Flipping bits of any byte of the header, config, vocabulary and table is
 * rejected (by a field check or the checksum); with the checksum recomputed
 * it is rejected or, if the file is still valid, runs without a crash. */
static void byte_flips(fixture *f, const uint8_t *buf, size_t len) {
    uint8_t *b = malloc(len);
    size_t meta = (size_t)get64(buf + 48); /* data offset: everything before is header and tables */
    const uint8_t masks[3] = {0x01, 0x80, 0xff};
    int rejected_by_field = 0, accepted = 0;
    for (size_t i = 0; i < meta; i++)
        for (int mi = 0; mi < 3; mi++) {
            memcpy(b, buf, len);
            b[i] ^= masks[mi];
            inf_file m;
            if (inf_file_parse(&m, b, len, "flip", f->err, sizeof f->err) == 0)
                fail_msg("flip of byte %zu by 0x%02x accepted", i, masks[mi]);
            fix_checksum(b, len);
            inf_model mod;
            if (inf_model_parse(&mod, b, len, "flip", f->err, sizeof f->err) == 0) {
                accepted++; /* e.g. a changed weight value in a padding row: still a valid model */
                inf_session s;
                if (inf_session_init(&s, &mod, inf_isa_best(), 3, f->err, sizeof f->err) == 0) {
                    int ids[2] = {1, 2};
                    float lg[2 * 256];
                    assert_int_equal(inf_forward(&s, ids, 1, lg, false, f->err, sizeof f->err), 0);
                    assert_int_equal(inf_forward(&s, ids, 2, lg, true, f->err, sizeof f->err), 0);
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
    for (size_t i = meta; i < len - 8; i += 97) {
        memcpy(b, buf, len);
        b[i] ^= 0x10;
        inf_file m;
        assert_int_equal(inf_file_parse(&m, b, len, "flip", f->err, sizeof f->err), -1);
        assert_true(strstr(f->err, "checksum") || strstr(f->err, "scale") || strstr(f->err, "zero point"));
    }
    print_message("byte flips over %zu header/table bytes (version %u): %d rejected by a field check with a valid "
                  "checksum, %d still valid\n", meta, get32(buf + 8), rejected_by_field, accepted);
    assert_true(rejected_by_field > 0);
    free(b);
}

static void test_byte_flips(void **state) {
    fixture *f = *state;
    byte_flips(f, f->buf, f->len);
    byte_flips(f, f->v1, f->v1_len);
    byte_flips(f, f->fac, f->fac_len);
}

/* ---- one crafted file per check ---- */

typedef void (*mutate_fn)(uint8_t *b, size_t *len);

static void expect_reject_in(fixture *f, const uint8_t *src, size_t src_len, mutate_fn mut, bool fix_sum,
                             const char *want) {
    uint8_t *b = malloc(src_len + 256);
    memcpy(b, src, src_len);
    size_t len = src_len;
    mut(b, &len);
    if (fix_sum && len >= 8) fix_checksum(b, len);
    inf_file m;
    f->err[0] = '\0';
    if (inf_file_parse(&m, b, len, "crafted", f->err, sizeof f->err) == 0) fail_msg("accepted; expected '%s'", want);
    if (!strstr(f->err, want)) fail_msg("error '%s' does not contain '%s'", f->err, want);
    free(b);
}

static void expect_reject(fixture *f, mutate_fn mut, bool fix_sum, const char *want) {
    expect_reject_in(f, f->buf, f->len, mut, fix_sum, want);
}

#define MUT(name, ...)                                                                                        \
    static void name(uint8_t *b, size_t *len) {                                                               \
        (void)b;                                                                                              \
        (void)len;                                                                                            \
        __VA_ARGS__;                                                                                          \
    }

MUT(m_short, *len = 60)
MUT(m_magic, b[0] = 'X')
MUT(m_version, put32(b + 8, 4))
MUT(m_flags, put32(b + 12, 1))
MUT(m_filesize, put64(b + 16, get64(b + 16) + 64))
MUT(m_config_size, put32(b + 24, 44))
MUT(m_tensor_count0, put32(b + 36, 0))
MUT(m_tensor_count_cap, put32(b + 36, INF_MAX_TENSORS + 1))
MUT(m_table_size, put32(b + 40, 10))
MUT(m_meta_size, put32(b + 32, INF_MAX_META + 1))
MUT(m_header_reserved, put32(b + 44, 3))
MUT(m_meta_nul, b[meta_at(b) + 3] = 0)
MUT(m_data_offset, put64(b + 48, get64(b + 48) + 8))
MUT(m_layers0, put32(b + 56, 0))
MUT(m_layers_cap, put32(b + 56, INF_MAX_LAYERS + 1))
MUT(m_layer_table_short, put32(b + C_NLAYER, 2)) /* 2 layers, a config of 1 layer's bytes */
MUT(m_layer_table_long, put32(b + 24, get32(b + 24) + 24))
MUT(m_heads0, put32(b + C_LAYER(0), 0))
MUT(m_heads_qkv, put32(b + C_LAYER(0), 3)) /* 3 heads of 16: the qkv tensor holds 2 */
MUT(m_head_dim_qkv, put32(b + C_HEADDIM, 8))
MUT(m_attn_width_cap, {
    put32(b + C_HEADDIM, 65536);
    put32(b + C_LAYER(0), 17);
})
MUT(m_hidden0, put32(b + C_LAYER(0) + 4, 0))
MUT(m_rank_too_big, put32(b + C_RANK(0, 2), 33)) /* mlp.fc [128, 32]: rank <= 32 */
MUT(m_rank_dense_file, put32(b + C_RANK(0, 2), 4)) /* the config says factorized, the file has .w */
MUT(m_head_rank_too_big, put32(b + C_HEADRANK, 9)) /* lm_head [8, 32] */
MUT(m_tied_factorized, {
    put32(b + C_TIED, 1);
    put32(b + C_HEADRANK, 4);
})
MUT(m_bias2, put32(b + C_BIAS, 2))
MUT(m_eps_nan, {
    float v = NAN;
    memcpy(b + C_EPS, &v, 4);
})
MUT(m_config_reserved, put32(b + C_RESERVED, 1))
MUT(m_vocab_kind, put32(b + vocab_at(b), 7))
MUT(m_vocab_count, put32(b + vocab_at(b) + 4, 9))
MUT(m_vocab_entry_len, b[vocab_at(b) + 8] = 0)
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
        {m_version, true, "byte 8: version: 4: this reader supports versions 1 to 3"},
        {m_flags, true, "byte 12: flags"},
        {m_filesize, true, "byte 16: file size: header says"},
        {m_config_size, true, "byte 24: config size: 44: expected 64..24616"},
        {m_tensor_count0, true, "byte 36: tensor count: 0"},
        {m_tensor_count_cap, true, "tensor count: 65537"},
        {m_table_size, true, "byte 40: table size: 10 bytes"},
        {m_meta_size, true, "byte 32: metadata size: 1048577"},
        {m_header_reserved, true, "byte 44: header reserved: 3"},
        {m_meta_nul, true, "metadata: a NUL byte"},
        {m_data_offset, true, "byte 48: data offset"},
        {m_layers0, true, "byte 56: config n_layer: 0"},
        {m_layers_cap, true, "config n_layer: 1025"},
        {m_layer_table_short, true, "byte 24: config size: 64 bytes: 2 layers need 88 (40 + 24 per layer)"},
        {m_layer_table_long, true, "byte 24: config size: 88 bytes: 1 layers need 64"},
        {m_heads0, true, "byte 96: config layer heads: layer 0: 0 heads: expected 1..65536"},
        {m_heads_qkv, true, "shape: tensor 'h.0.attn.qkv.w' is 2D [96, 32]: the config implies 2D [144, 32] (3 x 3 "
                            "heads x head width 16)"},
        {m_head_dim_qkv, true, "tensor 'h.0.attn.qkv.w' is 2D [96, 32]: the config implies 2D [48, 32] (3 x 2 heads "
                               "x head width 8)"},
        {m_attn_width_cap, true, "layer 0: 17 heads of width 65536 make 1114112: expected an attention width of at "
                                 "most 1048576"},
        {m_hidden0, true, "byte 100: config layer MLP width: layer 0: 0 units"},
        {m_rank_too_big, true, "byte 112: config rank: layer 0 mlp.fc: rank 33: expected 0 (dense) .. 32 = min(out "
                               "128, in 32)"},
        {m_rank_dense_file, true, "missing tensor 'h.0.mlp.fc.u' (the config implies it)"},
        {m_head_rank_too_big, true, "byte 88: config rank: lm_head: rank 9: expected 0 (dense) .. 8"},
        {m_tied_factorized, true, "byte 88: config head rank: 4: a tied head is wte itself and cannot be factorized"},
        {m_bias2, true, "byte 76: config bias: 2"},
        {m_eps_nan, true, "byte 84: config ln_eps"},
        {m_config_reserved, true, "byte 92: config reserved"},
        {m_vocab_kind, true, "byte 120: vocabulary kind: 7"},
        {m_vocab_count, true, "byte 124: vocabulary count: 9 entries: the config says vocab 8"},
        {m_vocab_entry_len, true, "byte 128: vocabulary entry length: entry 0 has 0 bytes"},
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

/* ---- a sparse tensor (q8s): its counts, columns and size checked ---- */

static size_t sp_data, sp_entry; /* lm_head.w [8, 32] of the q8s file: its data and its table entry */
static uint32_t sp_count;        /* its one (row block, group, chunk)'s quad count */
#define SP_QUAD(j) (sp_data + 4 + 64 + 128 * (size_t)(j)) /* quad j: idx[16][4], then q[16][4] */
MUT(s_count_cap, put32(b + sp_data, 65))        /* a chunk of 32 columns: at most 64 quads */
MUT(s_count_sum, put32(b + sp_data, sp_count - 1)) /* the counts no longer add up to the size */
MUT(s_bytes_min, put64(b + sp_entry + E_BYTES(9), 67))
MUT(s_bytes_max, put64(b + sp_entry + E_BYTES(9), 68 + 64 * 128 + 128))
MUT(s_column, b[SP_QUAD(0)] = 40)               /* past the chunk's 32 columns */
MUT(s_order, {
    b[SP_QUAD(0)] = 5, b[SP_QUAD(0) + 64] = 3, b[SP_QUAD(0) + 1] = 5, b[SP_QUAD(0) + 65] = 4; /* two codes at one column */
})
MUT(s_padding_row, b[SP_QUAD(0) + 64 + 4 * 8] = 1) /* row 8 of 8 rows */
MUT(s_scale, put32(b + sp_data + 4, 0x7FC00000u)) /* a NaN scale */
MUT(s_truncated, *len = sp_data + 40)
/* q8nm: lm_head.w's first block (16 rows x 8 columns): codes q[16][4], then positions pos[16] */
MUT(n_positions, b[sp_data + 64] = 0x05)        /* row 0: positions 1 and 1 */
MUT(n_padding_row, b[sp_data + 4 * 8] = 2)      /* row 8 of 8 rows */

static void test_sparse_tensor_checks(void **state) {
    fixture *f = *state;
    fx_spec s = fx_default(INF_Q8S);
    if (fx_write_model(f->path, &s, f->err, sizeof f->err)) fail_msg("%s", f->err);
    size_t len = 0;
    uint8_t *b = fx_read(f->path, &len);
    assert_non_null(b);
    inf_file m;
    if (inf_file_parse(&m, b, len, "q8s", f->err, sizeof f->err)) fail_msg("%s", f->err);
    const inf_tensor *t = inf_file_find(&m, "lm_head.w");
    assert_non_null(t);
    assert_int_equal(t->dtype, INF_Q8S);
    assert_int_equal(t->shape[0], 8), assert_int_equal(t->shape[1], 32), assert_int_equal(t->group, 32);
    sp_data = (size_t)t->offset, sp_entry = entry_of(b, "lm_head.w");
    sp_count = get32(b + sp_data);
    assert_true(sp_count >= 2 && t->bytes == 68 + 128 * (uint64_t)sp_count); /* one row block, group, chunk */
    inf_file_close(&m);
    const struct {
        mutate_fn fn;
        const char *want;
    } cases[] = {
        {s_count_cap, "quad count: tensor 'lm_head.w' quad count 0 is 65: expected at most 64"},
        {s_count_sum, "quad count: tensor 'lm_head.w': its counts add up to"},
        {s_bytes_min, "byte count: tensor 'lm_head.w': 67: its type and shape need 68 to 8260"},
        {s_bytes_max, "byte count: tensor 'lm_head.w': 8388: its type and shape need 68 to 8260"},
        {s_column, "column: tensor 'lm_head.w' row block 0 group 0 chunk 0 row 0 quad 0: column 40"},
        {s_order, "expected strictly increasing columns"},
        {s_padding_row, "row block 0 row 8 is past the 8 rows: expected code 0"},
        {s_scale, "scale: tensor 'lm_head.w' scale 0 is nan"},
        {s_truncated, "truncated"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_reject_in(f, b, len, cases[i].fn, true, cases[i].want);
    /* every truncation is refused without reading past it */
    for (size_t n = 0; n < len; n += n < 4096 ? 1 : 61) {
        uint8_t *c = malloc(n ? n : 1);
        memcpy(c, b, n);
        assert_int_equal(inf_file_parse(&m, c, n, "cut", f->err, sizeof f->err), -1);
        free(c);
    }
    free(b);
    /* q8nm: positions and padding rows */
    fx_spec nm = fx_default(INF_Q8NM);
    if (fx_write_model(f->path, &nm, f->err, sizeof f->err)) fail_msg("%s", f->err);
    b = fx_read(f->path, &len);
    assert_non_null(b);
    if (inf_file_parse(&m, b, len, "q8nm", f->err, sizeof f->err)) fail_msg("%s", f->err);
    t = inf_file_find(&m, "lm_head.w");
    assert_int_equal(t->dtype, INF_Q8NM);
    assert_true(t->bytes == 4 * 80 + 64); /* 4 blocks of 8 columns, 16 scales */
    sp_data = (size_t)t->offset;
    inf_file_close(&m);
    expect_reject_in(f, b, len, n_positions, true,
                     "positions: tensor 'lm_head.w' row block 0 columns 0..7 row 0: positions byte 0x05");
    expect_reject_in(f, b, len, n_padding_row, true, "code: tensor 'lm_head.w' row block 0 row 8 is past the 8 rows");
    free(b);
    /* a mostly zero model and a 2:4 one: the q8s and q8nm files are smaller and their logits are the q8
     * file's bits */
    for (int kind = 0; kind < 2; kind++) {
        float lg[2][4 * 8];
        size_t bytes[2];
        for (int i = 0; i < 2; i++) {
            fx_spec z = fx_default(i ? (kind ? INF_Q8NM : INF_Q8S) : INF_Q8);
            if (kind) z.nm24 = 1;
            else z.zero_frac = 0.9f;
            z.hidden[0] = 320, z.group = 0;
            if (fx_write_model(f->path, &z, f->err, sizeof f->err)) fail_msg("%s", f->err);
            uint8_t *fb = fx_read(f->path, &bytes[i]);
            free(fb);
            inf_model mo;
            if (inf_model_open(&mo, f->path, f->err, sizeof f->err)) fail_msg("%s", f->err);
            inf_session ses;
            assert_int_equal(inf_session_init(&ses, &mo, inf_isa_best(), 3, f->err, sizeof f->err), 0);
            int ids[4] = {1, 2, 3, 0};
            assert_int_equal(inf_forward(&ses, ids, 4, lg[i], true, f->err, sizeof f->err), 0);
            inf_session_free(&ses);
            inf_model_close(&mo);
        }
        assert_memory_equal(lg[0], lg[1], sizeof lg[0]);
        assert_true(bytes[1] < bytes[0]);
    }
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
        t[i].act_bits = m.t[i].act_bits, t[i].act_scale = m.t[i].act_scale;
    }
    float extra[4] = {1, 2, 3, 4};
    t[n] = (inf_tensor_in){"extra.w", INF_F32, 1, {4, 1, 1, 1}, 0, extra, 16, 0, 0.0f};
    const uint8_t *tok[8];
    for (uint32_t i = 0; i < 8; i++) tok[i] = m.vocab.tok[i];
    char p2[80];
    snprintf(p2, sizeof p2, "%s.extra", f->path);
    if (inf_file_write(p2, &m.arch, m.ln_eps, m.vocab.kind, m.vocab.n, tok, m.vocab.len, NULL, t, n + 1, f->err,
                       sizeof f->err))
        fail_msg("%s", f->err);
    inf_file bad;
    assert_int_equal(inf_file_open(&bad, p2, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "unexpected tensor 'extra.w'"));
    unlink(p2);
    /* the writer refuses a tensor whose bytes do not match its type and shape */
    t[n].bytes = 12;
    assert_int_equal(inf_file_write(p2, &m.arch, m.ln_eps, m.vocab.kind, m.vocab.n, tok, m.vocab.len, NULL, &t[n], 1,
                                    f->err, sizeof f->err),
                     -1);
    assert_non_null(strstr(f->err, "need 16"));
    assert_int_equal(access(p2, F_OK), -1);
    /* ... and an architecture the reader would refuse */
    m.arch.tied = true, m.arch.rank[m.arch.n_layer * PM_LINEARS_PER_LAYER] = 2;
    assert_int_equal(inf_file_write(p2, &m.arch, m.ln_eps, m.vocab.kind, m.vocab.n, tok, m.vocab.len, NULL, t, n, f->err,
                                    sizeof f->err),
                     -1);
    assert_non_null(strstr(f->err, "tied head"));
    assert_int_equal(access(p2, F_OK), -1);
    inf_file_close(&m);
    /* a missing file names the path */
    assert_int_equal(inf_file_open(&bad, "/nonexistent/model.pare", f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "/nonexistent/model.pare: cannot open"));
}

/* Every storage type, bias and tying combination round-trips and runs, for
 * a uniform model and one with per-layer shapes and factorized sites. */
static void test_variants_parse_and_run(void **state) {
    fixture *f = *state;
    for (int dt = 0; dt < INF_DTYPE_COUNT; dt++)
        for (int v = 0; v < 8; v++) {
            fx_spec s = v < 4 ? fx_default(dt) : fac_spec(dt);
            s.bias = v & 1, s.tied = (v >> 1) & 1, s.V = (v & 3) == 3 ? 256 : 8;
            if (s.tied) s.rank[s.n_layer * PM_LINEARS_PER_LAYER] = 0;
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

/* ---- per-layer shapes, factor pairs, version 1 ---- */

/* Sets dimension d of tensor `name` to v and its byte count to what its type
 * then needs (never more than before here, so nothing overlaps). */
static void set_dim(uint8_t *b, const char *name, int d, uint32_t v) {
    size_t e = entry_of(b, name), nl = strlen(name);
    put32(b + e + E_SHAPE(nl, d), v);
    uint32_t shape[4];
    for (int i = 0; i < 4; i++) shape[i] = get32(b + e + E_SHAPE(nl, i));
    uint64_t bytes;
    char why[128];
    assert_int_equal(inf_tensor_bytes(b[e + E_DTYPE(nl)], b[e + E_NDIM(nl)], shape, get32(b + e + E_GROUP(nl)), &bytes,
                                      why, sizeof why),
                     0);
    put64(b + e + E_BYTES(nl), bytes);
}

MUT(f_v_inner, set_dim(b, "h.1.mlp.fc.v", 0, 3))
MUT(f_u_inner, set_dim(b, "h.1.mlp.fc.u", 1, 3))
MUT(f_head_v_inner, set_dim(b, "lm_head.v", 0, 5))
MUT(f_dense_config, put32(b + C_RANK(1, 2), 0)) /* the config says dense, the file has the factors */
MUT(f_rank_mismatch, put32(b + C_RANK(1, 2), 3))
MUT(f_rank_too_big, put32(b + C_RANK(1, 2), 33)) /* mlp.fc of layer 1 is [64, 32] */
MUT(f_heads_layer1, put32(b + C_LAYER(1), 2))    /* layer 1 stores 1 head */
MUT(f_hidden_layer1, put32(b + C_LAYER(1) + 4, 128))
MUT(f_short_table, put32(b + C_NLAYER, 3))
MUT(f_tied_factorized, put32(b + C_TIED, 1))

static void test_per_layer_and_factor_checks(void **state) {
    fixture *f = *state;
    inf_file m;
    if (inf_file_parse(&m, f->fac, f->fac_len, "fac", f->err, sizeof f->err)) fail_msg("%s", f->err);
    assert_int_equal(m.arch.n_head[0], 2);
    assert_int_equal(m.arch.n_head[1], 1);
    assert_int_equal(m.arch.n_hidden[1], 64);
    assert_int_equal(get32(f->fac + 24), INF_CONFIG_FIXED + 2 * INF_CONFIG_LAYER);
    const inf_tensor *u = inf_file_find(&m, "h.1.mlp.fc.u"), *v = inf_file_find(&m, "h.1.mlp.fc.v");
    assert_non_null(u), assert_non_null(v);
    assert_int_equal(u->shape[0], 64), assert_int_equal(u->shape[1], 4);
    assert_int_equal(v->shape[0], 4), assert_int_equal(v->shape[1], 32);
    assert_int_equal(v->dtype, INF_Q8); /* its input width is 32 */
    assert_int_equal(u->dtype, INF_F32);
    assert_null(inf_file_find(&m, "h.1.mlp.fc.w"));
    assert_null(inf_file_find(&m, "lm_head.w"));
    assert_int_equal(inf_file_find(&m, "h.1.attn.qkv.w")->shape[0], 48); /* 3 x 1 head x 16 */
    assert_int_equal(inf_file_find(&m, "h.1.attn.proj.w")->shape[1], 16);
    inf_file_close(&m);
    const struct {
        mutate_fn fn;
        const char *want;
    } cases[] = {
        {f_v_inner, "tensor 'h.1.mlp.fc.v' is 2D [3, 32]: the config implies 2D [4, 32] (the factors U [64, 4] and V "
                    "[4, 32] of h.1.mlp.fc at rank 4)"},
        {f_u_inner, "tensor 'h.1.mlp.fc.u' is 2D [64, 3]: the config implies 2D [64, 4] (the factors"},
        {f_head_v_inner, "tensor 'lm_head.v' is 2D [5, 32]: the config implies 2D [4, 32]"},
        {f_dense_config, "missing tensor 'h.1.mlp.fc.w' (the config implies it)"},
        {f_rank_mismatch, "tensor 'h.1.mlp.fc.u' is 2D [64, 4]: the config implies 2D [64, 3]"},
        {f_rank_too_big, "config rank: layer 1 mlp.fc: rank 33: expected 0 (dense) .. 32 = min(out 64, in 32)"},
        {f_heads_layer1, "tensor 'h.1.attn.qkv.w' is 2D [48, 32]: the config implies 2D [96, 32] (3 x 2 heads x head "
                         "width 16)"},
        {f_hidden_layer1, "tensor 'h.1.mlp.fc.u' is 2D [64, 4]: the config implies 2D [128, 4]"},
        {f_short_table, "byte 24: config size: 88 bytes: 3 layers need 112"},
        {f_tied_factorized, "config head rank: 4: a tied head is wte itself and cannot be factorized"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_reject_in(f, f->fac, f->fac_len, cases[i].fn, true, cases[i].want);
}

/* Logits of ids[0, 4) through the batched path and token by token. */
static void run_logits(fixture *f, const uint8_t *buf, size_t len, float *batched, float *decoded, int V) {
    inf_model m;
    if (inf_model_parse(&m, buf, len, "run", f->err, sizeof f->err)) fail_msg("%s", f->err);
    inf_session s;
    assert_int_equal(inf_session_init(&s, &m, inf_isa_best(), 3, f->err, sizeof f->err), 0);
    int ids[4] = {1, 2, 3, 0};
    assert_int_equal(inf_forward(&s, ids, 4, batched, true, f->err, sizeof f->err), 0);
    inf_session_reset(&s);
    for (int t = 0; t < 4; t++) assert_int_equal(inf_forward(&s, &ids[t], 1, decoded + t * V, false, f->err, sizeof f->err), 0);
    for (int i = 0; i < 4 * V; i++) assert_true(isfinite(batched[i]) && isfinite(decoded[i]));
    inf_session_free(&s);
    inf_model_close(&m);
}

MUT(v1_heads, put32(b + 60, 3))
MUT(v1_config_size, put32(b + 24, 64))
MUT(v1_hidden, put32(b + 68, 0))

/* A version-1 file (laid out by hand in model_fixture.h) loads as the same
 * uniform architecture, and runs to the same logits bits as the version-2
 * file of the same tensors; its own fields are still checked. */

/* ---- version 3: activation records (A8 sites) ---- */

/* A version-3 file: fx_default(q8) with an activation record on every
 * quantized product weight (5 of them). */
static uint8_t *act_file(fixture *f, int dtype, size_t *len) {
    fx_spec s = fx_default(dtype);
    s.act_bits = 8;
    if (fx_write_model(f->path, &s, f->err, sizeof f->err)) fail_msg("%s", f->err);
    uint8_t *b = fx_read(f->path, len);
    assert_non_null(b);
    return b;
}

static size_t act_at(const uint8_t *b) { return table_at(b) + get32(b + 40); }
/* the table index of the file's tensor `name` */
static uint32_t index_of(const uint8_t *b, const char *name) {
    size_t p = table_at(b);
    uint32_t n = get32(b + 36);
    for (uint32_t i = 0; i < n; i++) {
        uint16_t nl = (uint16_t)(b[p] | b[p + 1] << 8);
        if (nl == strlen(name) && !memcmp(b + p + 2, name, nl)) return i;
        p += 42 + nl;
    }
    fail_msg("no entry %s", name);
    return 0;
}

MUT(a_index_range, put32(b + act_at(b), get32(b + 36)))
MUT(a_order, put32(b + act_at(b) + 16, get32(b + act_at(b))))
MUT(a_bits, put32(b + act_at(b) + 4, 9))
MUT(a_bits1, put32(b + act_at(b) + 4, 1))
MUT(a_scale0, put32(b + act_at(b) + 8, 0))
MUT(a_scale_nan, put32(b + act_at(b) + 8, 0x7fc00000u))
MUT(a_scale_neg, put32(b + act_at(b) + 8, 0xbf800000u))
MUT(a_zero, put32(b + act_at(b) + 12, 3))
MUT(a_bias, put32(b + act_at(b), index_of(b, "h.0.attn.qkv.b")))
MUT(a_embedding, put32(b + act_at(b), index_of(b, "wte"))) /* untied: wte is no product's weight */
MUT(a_size_odd, put32(b + 44, get32(b + 44) - 8))
MUT(a_size_cap, put32(b + 44, 16 * (get32(b + 36) + 1)))

static void test_activation_records(void **state) {
    fixture *f = *state;
    size_t len;
    uint8_t *b = act_file(f, INF_Q8, &len);
    inf_file m;
    if (inf_file_parse(&m, b, len, "v3", f->err, sizeof f->err)) fail_msg("%s", f->err);
    assert_int_equal(m.version, 3);
    assert_int_equal(get32(b + 44), 5 * INF_ACT_RECORD);
    int with = 0;
    for (uint32_t i = 0; i < m.n_tensors; i++)
        if (m.t[i].act_bits) {
            with++;
            assert_int_equal(m.t[i].act_bits, 8);
            assert_true(m.t[i].act_scale == 0.02f + 0.001f * (float)i);
            assert_int_equal(m.t[i].dtype, INF_Q8);
        }
    assert_int_equal(with, 5);
    inf_file_close(&m);
    /* the runtime takes the static scales; the file runs */
    inf_model mod;
    if (inf_model_parse(&mod, b, len, "v3", f->err, sizeof f->err)) fail_msg("%s", f->err);
    assert_int_equal(mod.layer[0].qkv.w.act_hi, 127);
    assert_true(mod.head.w.act_scale > 0);
    inf_session s;
    assert_int_equal(inf_session_init(&s, &mod, inf_isa_best(), 3, f->err, sizeof f->err), 0);
    int ids[3] = {1, 2, 3};
    float lg[3 * 8];
    assert_int_equal(inf_forward(&s, ids, 3, lg, true, f->err, sizeof f->err), 0);
    inf_session_free(&s);
    inf_model_close(&mod);
    /* one crafted file per check of the records */
    const struct {
        mutate_fn fn;
        const char *want;
    } cases[] = {
        {a_index_range, "activation tensor: record 0: tensor 17: expected a tensor index in [0, 17)"},
        {a_order, "activation tensor: record 1: tensor"},
        {a_bits, "activation bits: 9: expected 2..8"},
        {a_bits1, "activation bits: 1: expected 2..8"},
        {a_scale0, "activation scale: tensor 'h.0.attn.qkv.w': 0: expected a finite scale > 0"},
        {a_scale_nan, "activation scale: tensor 'h.0.attn.qkv.w': nan"},
        {a_scale_neg, "activation scale: tensor 'h.0.attn.qkv.w': -1"},
        {a_zero, "activation zero point: tensor 'h.0.attn.qkv.w': 3: expected 0"},
        {a_bias, "tensor 'h.0.attn.qkv.b' is not the weight of a linear product"},
        {a_embedding, "tensor 'wte' is not the weight of a linear product"},
        {a_size_odd, "activation records size: 72 bytes: expected a multiple of 16"},
        {a_size_cap, "activation records size: 288 bytes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_reject_in(f, b, len, cases[i].fn, true, cases[i].want);
    /* every prefix and flips over the header, tables and records */
    truncations(f, b, len);
    byte_flips(f, b, len);
    /* the writer refuses bad records; a record on an f32 weight is the reader's to refuse */
    inf_file p;
    if (inf_file_parse(&p, b, len, "v3", f->err, sizeof f->err)) fail_msg("%s", f->err);
    inf_tensor_in t[64];
    for (uint32_t i = 0; i < p.n_tensors; i++)
        t[i] = (inf_tensor_in){p.t[i].name, p.t[i].dtype, p.t[i].ndim, {p.t[i].shape[0], p.t[i].shape[1], 1, 1},
                               p.t[i].group, p.t[i].data, p.t[i].bytes, p.t[i].act_bits, p.t[i].act_scale};
    const uint8_t *tok[8];
    for (uint32_t i = 0; i < 8; i++) tok[i] = p.vocab.tok[i];
    char p2[80];
    snprintf(p2, sizeof p2, "%s.act", f->path);
    uint32_t qi = index_of(b, "h.0.attn.qkv.w");
    t[qi].act_bits = 12;
    assert_int_equal(inf_file_write(p2, &p.arch, p.ln_eps, p.vocab.kind, p.vocab.n, tok, p.vocab.len, NULL, t,
                                    p.n_tensors, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "tensor 'h.0.attn.qkv.w': activations of 12 bits"));
    t[qi].act_bits = 8, t[qi].act_scale = INFINITY;
    assert_int_equal(inf_file_write(p2, &p.arch, p.ln_eps, p.vocab.kind, p.vocab.n, tok, p.vocab.len, NULL, t,
                                    p.n_tensors, f->err, sizeof f->err), -1);
    inf_file_close(&p);
    free(b);
    /* an f32 product weight with a record */
    b = act_file(f, INF_F32, &len);
    assert_int_equal(get32(b + 8), 2); /* no quantized weight: no record, version 2 */
    if (inf_file_parse(&p, b, len, "f32", f->err, sizeof f->err)) fail_msg("%s", f->err);
    for (uint32_t i = 0; i < p.n_tensors; i++)
        t[i] = (inf_tensor_in){p.t[i].name, p.t[i].dtype, p.t[i].ndim, {p.t[i].shape[0], p.t[i].shape[1], 1, 1},
                               p.t[i].group, p.t[i].data, p.t[i].bytes, 0, 0.0f};
    for (uint32_t i = 0; i < 8; i++) tok[i] = p.vocab.tok[i];
    qi = index_of(b, "h.0.attn.qkv.w");
    t[qi].act_bits = 8, t[qi].act_scale = 0.5f;
    if (inf_file_write(p2, &p.arch, p.ln_eps, p.vocab.kind, p.vocab.n, tok, p.vocab.len, NULL, t, p.n_tensors, f->err,
                       sizeof f->err))
        fail_msg("%s", f->err);
    inf_file bad;
    assert_int_equal(inf_file_open(&bad, p2, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "tensor 'h.0.attn.qkv.w' is f32: static activations need an integer storage type"));
    unlink(p2);
    inf_file_close(&p);
    free(b);
}

static void test_version1_loads(void **state) {
    fixture *f = *state;
    inf_file a, b;
    if (inf_file_parse(&a, f->buf, f->len, "v2", f->err, sizeof f->err)) fail_msg("%s", f->err);
    if (inf_file_parse(&b, f->v1, f->v1_len, "v1", f->err, sizeof f->err)) fail_msg("%s", f->err);
    assert_int_equal(b.version, 1);
    assert_int_equal(get32(f->v1 + 24), INF_CONFIG_V1_BYTES);
    assert_true(pm_arch_equal(&a.arch, &b.arch));
    assert_int_equal(b.arch.head_dim, 16);
    assert_true(a.ln_eps == b.ln_eps);
    assert_int_equal(a.n_tensors, b.n_tensors);
    for (uint32_t i = 0; i < a.n_tensors; i++) {
        assert_string_equal(a.t[i].name, b.t[i].name);
        assert_int_equal(a.t[i].bytes, b.t[i].bytes);
        assert_memory_equal(a.t[i].data, b.t[i].data, (size_t)a.t[i].bytes);
    }
    inf_file_close(&a), inf_file_close(&b);
    float l2[2][4 * 8], l1[2][4 * 8];
    run_logits(f, f->buf, f->len, l2[0], l2[1], 8);
    run_logits(f, f->v1, f->v1_len, l1[0], l1[1], 8);
    assert_memory_equal(l1, l2, sizeof l1);
    expect_reject_in(f, f->v1, f->v1_len, v1_heads, true, "byte 60: config n_head: 3 heads do not divide the width 32");
    expect_reject_in(f, f->v1, f->v1_len, v1_config_size, true, "byte 24: config size: 64: expected 40..40");
    expect_reject_in(f, f->v1, f->v1_len, v1_hidden, true, "byte 68: config n_hidden: 0");
}

/* The writer goes through the one atomic helper: a write that fails part
 * way (the file size limit) leaves the old file valid and no temporary. */
static void test_writer_is_atomic(void **state) {
    fixture *f = *state;
    fx_spec s = fac_spec(INF_F32); /* about 60 KB */
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim.rlim_cur = 16384, lim.rlim_max = old.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = fx_write_model(f->path, &s, f->err, sizeof f->err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(f->err, "write failed"));
    assert_int_equal(count_temporaries(f->path), 0);
    size_t n;
    uint8_t *b = fx_read(f->path, &n);
    assert_non_null(b);
    assert_int_equal(n, f->len);
    assert_memory_equal(b, f->buf, n); /* the file written by setup, intact */
    free(b);
    /* a parent that is a regular file */
    char p2[96];
    snprintf(p2, sizeof p2, "%s/x.pare", f->path);
    assert_int_equal(fx_write_model(p2, &s, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "cannot create"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation_at_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_byte_flips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crafted_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unexpected_tensor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_variants_parse_and_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_per_layer_and_factor_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version1_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_activation_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_is_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sparse_tensor_checks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
