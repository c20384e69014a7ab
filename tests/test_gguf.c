/* test_gguf.c - infer/gguf.c: fp16 rounding, ggml's Q8_0 / Q4_0 / Q4_1 blocks
 * against their reference formulas written out here, the gpt2 writer read
 * back by the validating reader, the writer's errors, and malformed files
 * (every truncation, bad version, types, lengths, offsets). */
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

#include "infer/gguf.h"
#include "model/plan.h"
#include "train/data.h"

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_fp16(void **state) {
    (void)state;
    assert_int_equal(gg_fp16(1.0f), 0x3c00);
    assert_int_equal(gg_fp16(-2.0f), 0xc000);
    assert_int_equal(gg_fp16(65504.0f), 0x7bff);
    assert_int_equal(gg_fp16(65519.0f), 0x7bff);
    assert_int_equal(gg_fp16(65520.0f), 0x7c00);             /* the tie above the largest half: inf */
    assert_int_equal(gg_fp16(1.0f + 0x1p-11f), 0x3c00);       /* tie, to even */
    assert_int_equal(gg_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);   /* tie, to even (up) */
    assert_int_equal(gg_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    assert_int_equal(gg_fp16(0x1p-24f), 0x0001);               /* smallest subnormal */
    assert_int_equal(gg_fp16(0x1p-25f), 0x0000);               /* tie to even: 0 */
    assert_int_equal(gg_fp16(3 * 0x1p-25f), 0x0002);
    assert_int_equal(gg_fp16(0x1p-14f - 0x1p-25f), 0x0400);    /* rounds up into the normals */
    assert_int_equal(gg_fp16(bits_f(0x7fc00000u)) & 0x7c00, 0x7c00);
    assert_true((gg_fp16(bits_f(0x7fc00000u)) & 0x3ff) != 0);
    /* every finite half round-trips through float */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        assert_int_equal(gg_fp16(gg_fp32((uint16_t)h)), h);
    }
    assert_true(gg_fp32(0x3555) > 0.333f && gg_fp32(0x3555) < 0.3334f);
}

static float half_round(float x) { return gg_fp32(gg_fp16(x)); }

static void fill(float *x, int n, unsigned seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = ((float)((seed >> 8) & 0xffff) / 65535.0f - 0.5f) * 0.3f;
    }
}

static void test_q8_0(void **state) {
    (void)state;
    float x[64];
    fill(x, 64, 7);
    x[5] = 2.54f; /* block 0's amax */
    x[6] = 1.27f * 1.5f;
    gg_block_q8_0 b[2];
    gg_type(GG_Q8_0)->quantize_row(x, b, 64);
    for (int k = 0; k < 2; k++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[k * 32 + j]));
        float d = amax / 127.0f, id = 1.0f / d;
        assert_int_equal(b[k].d, gg_fp16(d));
        for (int j = 0; j < 32; j++) assert_int_equal(b[k].qs[j], (int)roundf(x[k * 32 + j] * id));
    }
    /* half away from zero: amax 127 gives d = 1, 2.5 -> 3, -2.5 -> -3 (not to even) */
    float y[32] = {127.0f, 2.5f, -2.5f, 0.5f, -0.5f};
    gg_type(GG_Q8_0)->quantize_row(y, b, 32);
    assert_int_equal(b[0].qs[1], 3);
    assert_int_equal(b[0].qs[2], -3);
    assert_int_equal(b[0].qs[3], 1);
    assert_int_equal(b[0].qs[4], -1);
    float back[32];
    gg_type(GG_Q8_0)->dequantize_row(b, back, 32);
    assert_true(back[1] == 3.0f && back[0] == 127.0f);
    /* a zero block */
    memset(y, 0, sizeof y);
    gg_type(GG_Q8_0)->quantize_row(y, b, 32);
    assert_int_equal(b[0].d, 0);
    for (int j = 0; j < 32; j++) assert_int_equal(b[0].qs[j], 0);
}

static void test_q4_0(void **state) {
    (void)state;
    float x[32];
    fill(x, 32, 3);
    x[20] = -0.4f; /* the largest magnitude, negative: d = -0.4 / -8 > 0 */
    gg_block_q4_0 b;
    gg_type(GG_Q4_0)->quantize_row(x, &b, 32);
    float d = -0.4f / -8.0f, id = 1.0f / d;
    assert_int_equal(b.d, gg_fp16(d));
    for (int j = 0; j < 16; j++) {
        int lo = (int8_t)(x[j] * id + 8.5f), hi = (int8_t)(x[j + 16] * id + 8.5f);
        lo = lo < 15 ? lo : 15, hi = hi < 15 ? hi : 15;
        assert_int_equal(b.qs[j] & 15, lo);    /* element j in the low nibble */
        assert_int_equal(b.qs[j] >> 4, hi);    /* element j + 16 in the high nibble */
    }
    assert_int_equal(b.qs[4] >> 4, 0);         /* x[20] = -8 d: code 0 */
    float back[32];
    gg_type(GG_Q4_0)->dequantize_row(&b, back, 32);
    for (int j = 0; j < 32; j++) assert_true(fabsf(back[j] - x[j]) <= 0.5f * fabsf(half_round(d)) + 1e-3f);
    /* a positive largest value gives a negative scale; it maps to code 0 */
    float y[32] = {0};
    y[0] = 8.0f, y[1] = -7.0f, y[17] = 1.0f;
    gg_type(GG_Q4_0)->quantize_row(y, &b, 32);
    assert_int_equal(b.d, gg_fp16(-1.0f));
    assert_int_equal(b.qs[0] & 15, 0);
    assert_int_equal(b.qs[1] & 15, 15);
    assert_int_equal(b.qs[1] >> 4, 7); /* y[17] = 1 = (7 - 8) * -1 */
    assert_int_equal(b.qs[2] & 15, 8);
}

static void test_q4_1(void **state) {
    (void)state;
    float x[32];
    fill(x, 32, 11);
    gg_block_q4_1 b;
    gg_type(GG_Q4_1)->quantize_row(x, &b, 32);
    float mn = x[0], mx = x[0];
    for (int j = 1; j < 32; j++) mn = fminf(mn, x[j]), mx = fmaxf(mx, x[j]);
    float d = (mx - mn) / 15.0f, id = 1.0f / d;
    assert_int_equal(b.d, gg_fp16(d));
    assert_int_equal(b.m, gg_fp16(mn));
    for (int j = 0; j < 16; j++) {
        int lo = (int8_t)((x[j] - mn) * id + 0.5f), hi = (int8_t)((x[j + 16] - mn) * id + 0.5f);
        assert_int_equal(b.qs[j] & 15, lo < 15 ? lo : 15);
        assert_int_equal(b.qs[j] >> 4, hi < 15 ? hi : 15);
    }
    float back[32];
    gg_type(GG_Q4_1)->dequantize_row(&b, back, 32);
    for (int j = 0; j < 32; j++) assert_true(fabsf(back[j] - x[j]) <= 0.6f * d + 1e-3f);
}

/* ---- the writer ------------------------------------------------------------ */

typedef struct fx {
    pm_plan p;
    tr_vocab v;
    char dir[64], path[96];
} fx;

/* A plan of a uniform model with random values. */
static int make_plan(fx *f, int L, int C, int H, int M, int ctx, bool bias, bool tied, bool byte_vocab) {
    pm_arch a;
    char err[512];
    memset(&a, 0, sizeof a);
    if (byte_vocab) tr_vocab_byte(&f->v);
    else {
        memset(&f->v, 0, sizeof f->v);
        f->v.kind = TR_VOCAB_CHAR, f->v.size = 5;
        const char syms[5] = {'\n', ' ', ',', 'a', 'b'};
        for (int i = 0; i < 256; i++) f->v.id[i] = -1;
        for (int i = 0; i < 5; i++) f->v.sym[i] = (uint8_t)syms[i], f->v.id[(uint8_t)syms[i]] = (int16_t)i;
    }
    if (pm_arch_uniform(&a, L, H, C, M, ctx, f->v.size, bias, tied) != 0) return -1;
    int rc = pm_plan_init(&f->p, &a, err, sizeof err);
    pm_arch_free(&a);
    if (rc) return -1;
    for (int i = 0; i < f->p.table.n_tensor; i++) {
        const pm_tensor *x = &f->p.table.tensor[i];
        size_t n = (size_t)x->shape[0] * (size_t)x->shape[1];
        float *d = pm_plan_alloc(&f->p, n * sizeof *d);
        if (!d) return -1;
        fill(d, (int)n, 100u + (unsigned)i);
        f->p.entry[i].data = d;
    }
    return 0;
}

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_gguf_XXXXXX");
    if (!f || !mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof f->path, "%s/m.gguf", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    pm_plan_free(&f->p);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void check_tensor(const gg_file *g, const char *name, int type, uint64_t ne0, uint64_t ne1, const float *src) {
    const gg_tensor *t = gg_find_tensor(g, name);
    if (!t) fail_msg("tensor %s missing", name);
    assert_int_equal(t->type, type);
    assert_int_equal(t->ne[0], ne0);
    assert_int_equal(t->ne[1], ne1);
    const gg_type_traits *tr = gg_type(type);
    size_t rb = ne0 / (uint64_t)tr->block * (uint64_t)tr->block_bytes;
    uint8_t *row = malloc(rb);
    float *zeros = calloc(ne0, sizeof *zeros);
    for (uint64_t r = 0; r < ne1; r++) {
        tr->quantize_row(src ? src + r * ne0 : zeros, row, (int)ne0);
        assert_memory_equal(t->data + r * rb, row, rb);
    }
    free(row), free(zeros);
}

static const float *data_of(fx *f, const char *pare_name) {
    int i = pm_table_tensor(&f->p.table, pare_name);
    return i >= 0 ? f->p.entry[i].data : NULL;
}

static void roundtrip(fx *f, int type, bool bias, bool tied) {
    char err[512];
    int L = 2, C = 64, H = 4, M = 96, ctx = 8;
    assert_int_equal(make_plan(f, L, C, H, M, ctx, bias, tied, !tied), 0);
    if (gg_write_plan(&f->p, &f->v, type, "x.ckpt", "run7", f->path, err, sizeof err) != 0) fail_msg("%s", err);
    gg_file g;
    if (gg_open(&g, f->path, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(g.version, 3);
    const gg_kv *arch = gg_find_kv(&g, "general.architecture");
    assert_non_null(arch);
    assert_int_equal(arch->type, GGV_STRING);
    assert_memory_equal(arch->val + 8, "gpt2", 4);
    assert_int_equal(gg_kv_u32(&g, "gpt2.context_length"), ctx);
    assert_int_equal(gg_kv_u32(&g, "gpt2.embedding_length"), C);
    assert_int_equal(gg_kv_u32(&g, "gpt2.feed_forward_length"), M);
    assert_int_equal(gg_kv_u32(&g, "gpt2.block_count"), L);
    assert_int_equal(gg_kv_u32(&g, "gpt2.attention.head_count"), H);
    assert_int_equal(gg_kv_u32(&g, "general.alignment"), 32);
    assert_int_equal(gg_kv_u32(&g, "tokenizer.ggml.eos_token_id"), 0);
    assert_non_null(gg_find_kv(&g, "pare.source"));
    assert_non_null(gg_find_kv(&g, "pare.run"));
    const gg_kv *eps = gg_find_kv(&g, "gpt2.attention.layer_norm_epsilon");
    assert_non_null(eps);
    assert_int_equal(eps->type, GGV_F32);
    const gg_kv *merges = gg_find_kv(&g, "tokenizer.ggml.merges");
    assert_non_null(merges);
    assert_int_equal(merges->type, GGV_ARRAY);
    assert_int_equal(merges->n, 0);
    const gg_kv *tok = gg_find_kv(&g, "tokenizer.ggml.tokens");
    assert_non_null(tok);
    assert_int_equal(tok->n, (uint64_t)f->v.size);
    /* GPT-2's byte-to-unicode: the first token is byte 0 -> U+0100 (c4 80), or '\n' -> U+010A (c4 8a) */
    uint64_t len;
    memcpy(&len, tok->val, 8);
    assert_int_equal(len, 2);
    assert_int_equal(tok->val[8], 0xc4);
    assert_int_equal(tok->val[9], f->v.kind == TR_VOCAB_BYTE ? 0x80 : 0x8a);
    check_tensor(&g, "token_embd.weight", GG_F32, C, f->v.size, data_of(f, "wte"));
    check_tensor(&g, "position_embd.weight", GG_F32, C, ctx, data_of(f, "wpe"));
    char nm[64];
    for (int l = 0; l < L; l++) {
        char pn[64];
        static const char *pare[6] = {"ln1", "attn.qkv", "attn.proj", "ln2", "mlp.fc", "mlp.proj"};
        static const char *gg[6] = {"attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"};
        int ins[6] = {C, C, C, C, C, M}, outs[6] = {1, 3 * C, C, 1, M, C};
        for (int k = 0; k < 6; k++) {
            bool lin = outs[k] != 1;
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, gg[k]);
            snprintf(pn, sizeof pn, "h.%d.%s.w", l, pare[k]);
            check_tensor(&g, nm, lin ? type : GG_F32, ins[k], lin ? (uint64_t)outs[k] : 1, data_of(f, pn));
            snprintf(nm, sizeof nm, "blk.%d.%s.bias", l, gg[k]);
            snprintf(pn, sizeof pn, "h.%d.%s.b", l, pare[k]);
            const float *b = data_of(f, pn);
            assert_true(bias == (b != NULL));
            check_tensor(&g, nm, GG_F32, lin ? (uint64_t)outs[k] : (uint64_t)C, 1, b); /* zeros when bias = false */
        }
    }
    check_tensor(&g, "output_norm.weight", GG_F32, C, 1, data_of(f, "lnf.w"));
    assert_true((gg_find_tensor(&g, "output.weight") == NULL) == tied);
    if (!tied) check_tensor(&g, "output.weight", type, C, f->v.size, data_of(f, "lm_head.w"));
    assert_int_equal(g.n_tensors, 2 + 12 * L + 2 + (tied ? 0 : 1));
    gg_close(&g);
}

static void test_write_f32(void **state) { roundtrip(*state, GG_F32, true, false); }
static void test_write_q8_0(void **state) { roundtrip(*state, GG_Q8_0, true, true); }
static void test_write_q4_0(void **state) { roundtrip(*state, GG_Q4_0, false, true); }
static void test_write_q4_1(void **state) { roundtrip(*state, GG_Q4_1, false, false); }

static void test_write_errors(void **state) {
    fx *f = *state;
    char err[512];
    /* a width that is not a multiple of 32: an error naming the tensor; f32 writes it */
    assert_int_equal(make_plan(f, 1, 48, 2, 96, 4, true, true, true), 0);
    assert_int_equal(gg_write_plan(&f->p, &f->v, GG_Q4_0, NULL, NULL, f->path, err, sizeof err), -1);
    assert_non_null(strstr(err, "blk.0.attn_qkv.weight"));
    assert_non_null(strstr(err, "multiple of 32"));
    assert_int_equal(access(f->path, F_OK), -1);
    assert_int_equal(gg_write_plan(&f->p, &f->v, GG_F32, NULL, NULL, f->path, err, sizeof err), 0);
    /* per-layer head counts */
    pm_plan_free(&f->p);
    assert_int_equal(make_plan(f, 2, 64, 4, 128, 4, true, true, true), 0);
    f->p.arch.n_hidden[1] = 64;
    assert_int_equal(gg_write_plan(&f->p, &f->v, GG_F32, NULL, NULL, f->path, err, sizeof err), -1);
    assert_non_null(strstr(err, "layer 1"));
    f->p.arch.n_hidden[1] = 128;
    f->p.arch.rank[0] = 8;
    assert_int_equal(gg_write_plan(&f->p, &f->v, GG_F32, NULL, NULL, f->path, err, sizeof err), -1);
    assert_non_null(strstr(err, "low-rank"));
    f->p.arch.rank[0] = 0;
    /* an entry with fixed scales (a QAT checkpoint of pare's grids) */
    int qi = pm_table_tensor(&f->p.table, "h.0.attn.qkv.w");
    snprintf(f->p.entry[qi].type, sizeof f->p.entry[qi].type, "q4");
    assert_int_equal(gg_write_plan(&f->p, &f->v, GG_Q4_0, NULL, NULL, f->path, err, sizeof err), -1);
    assert_non_null(strstr(err, "h.0.attn.qkv.w"));
    snprintf(f->p.entry[qi].type, sizeof f->p.entry[qi].type, "f32");
    /* non-finite weights */
    ((float *)f->p.entry[qi].data)[3] = NAN;
    assert_int_equal(gg_write_plan(&f->p, &f->v, GG_Q8_0, NULL, NULL, f->path, err, sizeof err), -1);
    assert_non_null(strstr(err, "finite"));
    assert_int_equal(gg_write_plan(&f->p, &f->v, 5, NULL, NULL, f->path, err, sizeof err), -1);
}

/* ---- malformed files --------------------------------------------------------- */

static uint8_t *load(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, fp), *n);
    fclose(fp);
    return b;
}

static int open_copy(const uint8_t *b, size_t n, char *err, size_t errlen) {
    uint8_t *c = malloc(n ? n : 1);
    memcpy(c, b, n);
    gg_file g;
    int rc = gg_open_mem(&g, c, n, err, errlen);
    if (rc == 0) gg_close(&g);
    return rc;
}

/* The offset of tensor info `name` (its name's length field) in b. */
static size_t info_at(const uint8_t *b, size_t n, const char *name) {
    size_t k = strlen(name);
    for (size_t i = 8; i + 8 + k <= n; i++) {
        uint64_t len;
        memcpy(&len, b + i, 8);
        if (len == k && !memcmp(b + i + 8, name, k)) return i;
    }
    fail_msg("no %s", name);
    return 0;
}

static void test_malformed(void **state) {
    fx *f = *state;
    char err[512];
    assert_int_equal(make_plan(f, 1, 32, 2, 64, 4, true, false, false), 0);
    assert_int_equal(gg_write_plan(&f->p, &f->v, GG_Q4_1, "s", NULL, f->path, err, sizeof err), 0);
    size_t n;
    uint8_t *b = load(f->path, &n);
    assert_int_equal(open_copy(b, n, err, sizeof err), 0);
    /* the end of the last tensor's data: the padding after it is optional */
    size_t end;
    {
        uint8_t *c0 = malloc(n);
        memcpy(c0, b, n);
        gg_file g;
        assert_int_equal(gg_open_mem(&g, c0, n, err, sizeof err), 0);
        const gg_tensor *t = &g.t[g.n_tensors - 1];
        end = (size_t)(t->data - g.buf) + (size_t)t->bytes;
        gg_close(&g);
    }
    assert_true(end > n - 32 && end <= n);
    assert_int_equal(open_copy(b, end, err, sizeof err), 0);
    /* every truncation before it fails with a message */
    for (size_t k = 0; k < end; k++) {
        err[0] = '\0';
        if (open_copy(b, k, err, sizeof err) != -1) fail_msg("truncated at %zu of %zu: accepted", k, n);
        assert_true(strncmp(err, "gguf: ", 6) == 0);
    }
    uint8_t *c = malloc(n);
#define EDIT(OFF, TYPE, VAL, WANT)                                                                                     \
    do {                                                                                                               \
        memcpy(c, b, n);                                                                                               \
        TYPE v_ = (VAL);                                                                                               \
        memcpy(c + (OFF), &v_, sizeof v_);                                                                             \
        assert_int_equal(open_copy(c, n, err, sizeof err), -1);                                                        \
        if (!strstr(err, WANT)) fail_msg("'%s' lacks '%s'", err, WANT);                                                \
    } while (0)
    EDIT(0, uint8_t, 'X', "not a GGUF file");
    EDIT(4, uint32_t, 2, "version 2");
    EDIT(8, uint64_t, (uint64_t)1 << 60, "cannot fit");
    EDIT(16, uint64_t, (uint64_t)1 << 60, "cannot fit");
    EDIT(24, uint64_t, (uint64_t)1 << 50, "truncated");              /* the first key's length */
    EDIT(24 + 8 + 20, uint32_t, 99, "value type 99");                 /* general.architecture's type */
    size_t ti = info_at(b, n, "blk.0.attn_qkv.weight"), after = ti + 8 + strlen("blk.0.attn_qkv.weight");
    EDIT(after, uint32_t, 5, "5 dimensions");
    EDIT(after + 4, uint64_t, 0, "dimension 0 is 0");
    EDIT(after + 4, uint64_t, 33, "multiple of 32");
    EDIT(after + 4 + 16, uint32_t, 6, "ggml type 6");                 /* Q5_0: not known */
    EDIT(after + 4 + 16 + 4, uint64_t, 0, "expected");                /* overlaps the tensor before it */
    uint64_t off;
    memcpy(&off, b + after + 4 + 16 + 4, 8);
    EDIT(after + 4 + 16 + 4, uint64_t, off + 4, "alignment");
    EDIT(after + 4 + 16 + 4, uint64_t, off + 32, "contiguous");
    /* the tokens array's length */
    size_t tk = info_at(b, n, "tokenizer.ggml.tokens") + 8 + strlen("tokenizer.ggml.tokens");
    EDIT(tk + 4 + 4, uint64_t, (uint64_t)1 << 40, "truncated");
    EDIT(tk + 4, uint32_t, GGV_ARRAY, "not an array");
    /* a tensor's data past the end */
    size_t last = info_at(b, n, "output.weight") + 8 + strlen("output.weight");
    EDIT(last + 4 + 8, uint64_t, 4096, "past the end");
    EDIT(last + 4, uint64_t, 64, "past the end");
#undef EDIT
    free(c);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16),
        cmocka_unit_test(test_q8_0),
        cmocka_unit_test(test_q4_0),
        cmocka_unit_test(test_q4_1),
        cmocka_unit_test_setup_teardown(test_write_f32, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_q8_0, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_q4_0, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_q4_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
