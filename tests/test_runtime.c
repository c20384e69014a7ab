/* test_runtime.c - parity of the runtime with the training forward.
 *
 * f32: the runtime's logits on fixed inputs equal tr_gpt_forward of the same
 * weights within 1e-5 (relative to the row's largest logit), through both the
 * batched prompt path and the token-by-token KV-cache path, and greedy
 * generation of 256 tokens (sliding past the context) gives the same tokens as
 * tr_generate. q8, q4, q4a: the runtime's logits equal the training forward
 * with every exported weight replaced by its fake-quantized (dequantized)
 * value, within 1e-5. The same for models with pruned heads and MLP neurons
 * per layer and factorized sites (version-2 files), whose decode is also the
 * same bits at 1, 2 and 3 threads. Export plans: a smaller architecture
 * writes the smaller model, fixed scales are used as given. Plus sampling
 * rules and bad input. */
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

#include "autograd/parallel.h"
#include "autograd/rng.h"
#include "compress/grid.h"
#include "infer/export.h"
#include "infer/pack.h"
#include "infer/runtime.h"
#include "infer/types.h"
#include "train/sampler.h"
#include "train/trainer.h"

enum { CTX = 32 };

typedef struct fixture {
    tr_gpt m;
    tr_vocab v;
    ag_ctx *c;
    char path[64];
    int ids[CTX];
} fixture;

/* A small model whose logits are spread out (weights larger than GPT-2's
 * init, random gains and biases), so that argmax is never a near tie. */
static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    tr_gpt_config cfg = tr_gpt_config_default();
    cfg.n_layer = 2, cfg.n_head = 4, cfg.n_embd = 64, cfg.mlp_ratio = 4, cfg.ctx = CTX, cfg.vocab = 65;
    char err[256];
    if (tr_gpt_init(&f->m, &cfg, 0, err, sizeof err)) fail_msg("%s", err);
    tr_gpt_init_weights(&f->m, 3);
    ag_rng r;
    ag_rng_seed(&r, 9);
    ag_params *p = &f->m.params;
    for (int i = 0; i < p->count; i++) {
        ag_tensor *t = &p->t[i];
        for (size_t j = 0; j < t->numel; j++)
            t->data[j] = t->ndim == 2 ? t->data[j] * 6.0f : t->data[j] + 0.1f * ag_rng_normal(&r);
    }
    uint8_t text[65];
    for (int i = 0; i < 65; i++) text[i] = (uint8_t)(32 + i);
    if (tr_vocab_chars(&f->v, text, 65, err, sizeof err)) fail_msg("%s", err);
    f->c = ag_ctx_new();
    ag_set_grad(f->c, false);
    snprintf(f->path, sizeof f->path, "test_runtime_%d.pare", (int)getpid());
    for (int i = 0; i < CTX; i++) f->ids[i] = (i * 7 + 3) % 65;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    unlink(f->path);
    tr_gpt_free(&f->m);
    ag_ctx_free(f->c);
    free(f);
    return 0;
}

/* max over positions of max|a - b| / max|b| of the row */
static double row_rel_err(const float *a, const float *b, int T, int V) {
    double worst = 0;
    for (int t = 0; t < T; t++) {
        double e = 0, mx = 1e-30;
        for (int v = 0; v < V; v++) {
            e = fmax(e, fabs((double)a[t * V + v] - b[t * V + v]));
            mx = fmax(mx, fabs((double)b[t * V + v]));
        }
        worst = fmax(worst, e / mx);
    }
    return worst;
}

/* Exports `model` as dtype/group, runs the runtime on f->ids both ways and
 * compares with the training forward of `ref_model` (the same weights, or
 * their fake-quantized values). */
static void check_parity_of(fixture *f, tr_gpt *model, int dtype, int group, tr_gpt *ref_model) {
    char err[512];
    inf_export_opts o = {dtype, group, false, NULL, false};
    if (inf_export_gpt(model, &f->v, &o, f->path, err, sizeof err)) fail_msg("%s", err);
    ag_ctx_reset(f->c);
    ag_tensor *ref = tr_gpt_forward(f->c, ref_model, f->ids, 1, CTX, NULL); /* [1, T, V] */
    assert_non_null(ref);
    int V = 65;
    inf_model m;
    if (inf_model_open(&m, f->path, err, sizeof err)) fail_msg("%s", err);
    assert_true(pm_arch_equal(&m.file.arch, &model->arch)); /* the file holds the model's own shapes */
    inf_session s;
    assert_int_equal(inf_session_init(&s, &m, inf_isa_best(), 3, err, sizeof err), 0);
    float *lg = malloc(sizeof(float) * CTX * V), *step = malloc(sizeof(float) * CTX * V);
    assert_int_equal(inf_forward(&s, f->ids, CTX, lg, true, err, sizeof err), 0);
    double e1 = row_rel_err(lg, ref->data, CTX, V);
    inf_session_reset(&s);
    for (int t = 0; t < CTX; t++) assert_int_equal(inf_forward(&s, &f->ids[t], 1, step + t * V, false, err, sizeof err), 0);
    double e2 = row_rel_err(step, ref->data, CTX, V);
    print_message("parity %s group %d%s: prompt path %.2e, decode path %.2e (relative to the row's max |logit|)\n",
                  inf_type_name(dtype), group, pm_arch_is_uniform(&model->arch) ? "" : " (per-layer shapes, factors)",
                  e1, e2);
    assert_true(e1 <= 1e-5);
    assert_true(e2 <= 1e-5);
    /* int8 products run the same integer kernel for a prompt as for one
     * token (no dequantize + sgemm path), so the two paths give the same bits */
    if (dtype == INF_Q8) assert_memory_equal(lg, step, sizeof(float) * CTX * V);
    free(lg), free(step);
    inf_session_free(&s);
    inf_model_close(&m);
}

static void check_parity(fixture *f, int dtype, int group, tr_gpt *ref_model) {
    check_parity_of(f, &f->m, dtype, group, ref_model);
}

static void test_f32_logits_match_training_forward(void **state) {
    fixture *f = *state;
    check_parity(f, INF_F32, 0, &f->m);
}

/* A copy of src with each weight the export rules quantize fake-quantized. */
static void fake_quant_model(const tr_gpt *src, const inf_export_opts *o, tr_gpt *q) {
    char err[256];
    if (tr_gpt_init_arch(q, &src->arch, 0, err, sizeof err)) fail_msg("%s", err);
    memcpy(q->params.data, src->params.data, src->params.n * sizeof(float));
    for (int i = 0; i < q->params.count; i++) {
        ag_tensor *t = &q->params.t[i];
        if (!inf_export_quantizes(o, &q->table, i)) continue;
        int rc = cp_fake_quant((cp_qscheme)inf_dtype_scheme(o->dtype), t->data, t->shape[0], t->shape[1], o->group,
                               t->data, err, sizeof err);
        assert_int_equal(rc, 0);
    }
}

static void check_quantized(fixture *f, int dtype, int group) {
    inf_export_opts o = {dtype, group, false, NULL, false};
    tr_gpt q;
    fake_quant_model(&f->m, &o, &q);
    check_parity(f, dtype, group, &q);
    tr_gpt_free(&q);
}

static void test_q8_per_channel_parity(void **state) { check_quantized(*state, INF_Q8, 0); }
static void test_q8_group_parity(void **state) { check_quantized(*state, INF_Q8, 32); }
static void test_q4_parity(void **state) { check_quantized(*state, INF_Q4, 32); }
static void test_q4a_parity(void **state) { check_quantized(*state, INF_Q4A, 64); }

/* Decodes every position of f->ids from `model` exported as dtype/group at
 * 1, 2 and 3 threads (twice per session: the second pass reuses the
 * session's scratch), the step split over the threads however small the
 * model, and fails unless the logits are the same bits each time. */
static void check_decode_bits(fixture *f, tr_gpt *model, int dtype, int group) {
    char err[512];
    int V = 65;
    inf_export_opts o = {dtype, group, false, NULL, false};
    if (inf_export_gpt(model, &f->v, &o, f->path, err, sizeof err)) fail_msg("%s", err);
    inf_model m;
    if (inf_model_open(&m, f->path, err, sizeof err)) fail_msg("%s", err);
    float *ref = malloc(sizeof(float) * CTX * V), *got = malloc(sizeof(float) * CTX * V);
    for (int nt = 1; nt <= 3; nt++) {
        ag_set_threads(nt);
        inf_session s;
        assert_int_equal(inf_session_init(&s, &m, inf_isa_best(), 3, err, sizeof err), 0);
        assert_true(m.decode_bytes < s.decode_par_min); /* this small model decodes on one thread ... */
        s.decode_par_min = 0;                              /* ... unless told otherwise */
        for (int rep = 0; rep < 2; rep++) {
            inf_session_reset(&s);
            float *out = nt == 1 && rep == 0 ? ref : got;
            for (int t = 0; t < CTX; t++)
                assert_int_equal(inf_forward(&s, &f->ids[t], 1, out + t * V, false, err, sizeof err), 0);
            if (out == got && memcmp(got, ref, sizeof(float) * CTX * V) != 0)
                fail_msg("%s decode at %d threads (pass %d) differs from 1 thread", inf_type_name(dtype), nt, rep);
        }
        inf_session_free(&s);
    }
    ag_set_threads(1);
    free(ref), free(got);
    inf_model_close(&m);
}

/* The decode step splits each token's work over the threads: logits of
 * every position are the same bits at 1, 2 and 3 threads, for every storage
 * type (and the same as the 1-thread decode of a fresh session). */
static void test_decode_same_bits_any_thread_count(void **state) {
    fixture *f = *state;
    const int dtypes[4] = {INF_F32, INF_Q8, INF_Q4, INF_Q4A};
    for (int di = 0; di < 4; di++) check_decode_bits(f, &f->m, dtypes[di], dtypes[di] == INF_F32 ? 0 : 32);
}

/* ---- per-layer shapes and factorized sites ---- */

/* A GPT as a structured pruning and a factorization would leave it: width
 * 96, heads of 32; layer 0 keeps 3 heads and 384 MLP units, layer 1 2 heads
 * and 160 units with its fc factorized (rank 32), layer 2 1 head and 64 units
 * with qkv and mproj factorized (rank 32); the head factorized (rank 32).
 * Every input width is a multiple of 32, so every storage type can hold it.
 * Weights spread as in setup. */
static void pruned_model(tr_gpt *m, bool odd) {
    pm_arch a;
    char err[256];
    memset(&a, 0, sizeof a);
    if (!odd) {
        a.n_layer = 3, a.n_embd = 96, a.head_dim = 32;
    } else { /* widths and ranks that are no multiples of anything: f32 only */
        a.n_layer = 2, a.n_embd = 48, a.head_dim = 12;
    }
    a.ctx = CTX, a.vocab = 65, a.bias = true, a.tied = false;
    assert_int_equal(pm_arch_alloc(&a), 0);
    if (!odd) {
        const int H[3] = {3, 2, 1}, M[3] = {384, 160, 64};
        for (int l = 0; l < 3; l++) a.n_head[l] = H[l], a.n_hidden[l] = M[l];
        a.rank[pm_rank_slot(&a, 1, PM_FC)] = 32;
        a.rank[pm_rank_slot(&a, 2, PM_QKV)] = 32;
        a.rank[pm_rank_slot(&a, 2, PM_MPROJ)] = 32;
        a.rank[pm_rank_slot(&a, -1, PM_HEAD)] = 32;
    } else {
        a.n_head[0] = 4, a.n_head[1] = 1, a.n_hidden[0] = 50, a.n_hidden[1] = 17;
        a.rank[pm_rank_slot(&a, 0, PM_FC)] = 5;
        a.rank[pm_rank_slot(&a, 1, PM_PROJ)] = 3;
        a.rank[pm_rank_slot(&a, -1, PM_HEAD)] = 7;
    }
    if (tr_gpt_init_arch(m, &a, 0, err, sizeof err)) fail_msg("%s", err);
    pm_arch_free(&a);
    tr_gpt_init_weights(m, 11);
    ag_rng r;
    ag_rng_seed(&r, 12);
    for (int i = 0; i < m->params.count; i++) {
        ag_tensor *t = &m->params.t[i];
        pm_part part = m->table.tensor[i].part;
        float k = part == PM_U || part == PM_V ? 2.5f : 6.0f; /* a factor pair's product: about 6x too */
        for (size_t j = 0; j < t->numel; j++)
            t->data[j] = t->ndim == 2 ? t->data[j] * k : t->data[j] + 0.1f * ag_rng_normal(&r);
    }
}

static void test_pruned_factorized_parity(void **state) {
    fixture *f = *state;
    tr_gpt p, q;
    pruned_model(&p, false);
    check_parity_of(f, &p, INF_F32, 0, &p);
    const int dtypes[3] = {INF_Q8, INF_Q4, INF_Q4A};
    for (int di = 0; di < 3; di++) {
        inf_export_opts o = {dtypes[di], 32, false, NULL, false};
        fake_quant_model(&p, &o, &q);
        check_parity_of(f, &p, dtypes[di], 32, &q);
        tr_gpt_free(&q);
    }
    tr_gpt_free(&p);
    pruned_model(&p, true);
    check_parity_of(f, &p, INF_F32, 0, &p);
    tr_gpt_free(&p);
}

static void test_pruned_factorized_decode_same_bits(void **state) {
    fixture *f = *state;
    tr_gpt p;
    pruned_model(&p, false);
    check_decode_bits(f, &p, INF_F32, 0);
    check_decode_bits(f, &p, INF_Q8, 32);
    check_decode_bits(f, &p, INF_Q4, 32);
    tr_gpt_free(&p);
    pruned_model(&p, true);
    check_decode_bits(f, &p, INF_F32, 0);
    tr_gpt_free(&p);
}

/* A quantized type cannot store a matrix whose input width is not a multiple
 * of 32: the export names the tensor and the rule, and leaves no file. */
static void test_width_rule(void **state) {
    fixture *f = *state;
    tr_gpt p;
    pruned_model(&p, true);
    char err[512];
    inf_export_opts o = {INF_Q8, 0, false, NULL, false};
    unlink(f->path);
    assert_int_equal(inf_export_gpt(&p, &f->v, &o, f->path, err, sizeof err), -1);
    if (!strstr(err, "tensor 'h.0.attn.qkv.w' [144, 48] as q8 (set by --format): its input width 48 is not a multiple "
                     "of 32"))
        fail_msg("%s", err);
    assert_int_equal(access(f->path, F_OK), -1);
    tr_gpt_free(&p);
}

/* ---- export plans ---- */

/* A plan whose architecture is smaller than the model's (pm_plan_set_arch,
 * as a structured-pruning policy's export hook does) writes the smaller
 * model: the file's architecture is the plan's, and it runs to the training
 * forward of that architecture with the plan's values. */
static void test_plan_smaller_arch(void **state) {
    fixture *f = *state;
    char err[512];
    pm_plan p;
    assert_int_equal(inf_plan_from_gpt(&p, &f->m, err, sizeof err), 0);
    pm_arch small;
    assert_int_equal(pm_arch_copy(&small, &f->m.arch), 0);
    small.n_head[0] = 1, small.n_hidden[0] = 96, small.n_hidden[1] = 32;
    small.rank[pm_rank_slot(&small, 1, PM_FC)] = 32;
    if (pm_plan_set_arch(&p, &small, err, sizeof err)) fail_msg("%s", err);
    tr_gpt ref;
    if (tr_gpt_init_arch(&ref, &small, 0, err, sizeof err)) fail_msg("%s", err);
    pm_arch_free(&small);
    /* the plan's values: the reference model's, drawn here */
    tr_gpt_init_weights(&ref, 21);
    for (int i = 0; i < ref.params.count; i++) {
        ag_tensor *t = &ref.params.t[i];
        for (size_t j = 0; j < t->numel; j++) t->data[j] *= t->ndim == 2 ? 6.0f : 1.0f;
        float *d = pm_plan_alloc(&p, t->numel * sizeof(float));
        assert_non_null(d);
        memcpy(d, t->data, t->numel * sizeof(float));
        p.entry[i].data = d;
    }
    /* an entry without values is named */
    const float *keep = p.entry[3].data;
    p.entry[3].data = NULL;
    assert_int_equal(inf_plan_write(&p, &f->v, NULL, f->path, err, sizeof err), -1);
    assert_non_null(strstr(err, p.table.tensor[3].name));
    p.entry[3].data = keep;
    if (inf_plan_write(&p, &f->v, "source=plan\n", f->path, err, sizeof err)) fail_msg("%s", err);
    inf_model m;
    if (inf_model_open(&m, f->path, err, sizeof err)) fail_msg("%s", err);
    assert_true(pm_arch_equal(&m.file.arch, &p.arch));
    assert_int_equal(m.layer[0].H, 1);
    assert_int_equal(m.layer[1].fc.rank, 32);
    inf_session s;
    assert_int_equal(inf_session_init(&s, &m, inf_isa_best(), 3, err, sizeof err), 0);
    int V = 65;
    float *lg = malloc(sizeof(float) * CTX * V);
    assert_int_equal(inf_forward(&s, f->ids, CTX, lg, true, err, sizeof err), 0);
    ag_ctx_reset(f->c);
    ag_tensor *want = tr_gpt_forward(f->c, &ref, f->ids, 1, CTX, NULL);
    assert_non_null(want);
    assert_true(row_rel_err(lg, want->data, CTX, V) <= 1e-5);
    free(lg);
    inf_session_free(&s);
    inf_model_close(&m);
    tr_gpt_free(&ref);
    pm_plan_free(&p);
}

/* Fixed scales and zero points in a plan entry (a quantization-aware
 * checkpoint's) are what the file stores, validated first. */
static void test_plan_fixed_scales(void **state) {
    fixture *f = *state;
    char err[512];
    inf_export_opts o = {INF_Q8, 32, false, NULL, false};
    pm_plan p;
    assert_int_equal(inf_plan_from_gpt(&p, &f->m, err, sizeof err), 0);
    assert_int_equal(inf_plan_apply(&p, &o, err, sizeof err), 0);
    pm_plan_entry *e = pm_plan_find(&p, "h.0.mlp.fc.w"); /* [256, 64], groups of 32 */
    assert_non_null(e);
    assert_string_equal(e->type, "q8");
    assert_string_equal(e->by, "--format");
    int N = 256, K = 64, NG = 2;
    float *sc = pm_plan_alloc(&p, sizeof(float) * N * NG);
    int8_t *q = malloc((size_t)N * K);
    assert_int_equal(cp_quantize(CP_INT8_SYM, e->data, N, K, 32, q, sc, NULL, err, sizeof err), 0);
    for (int i = 0; i < N * NG; i++) sc[i] *= 1.25f; /* not the grid's own: a trained scale */
    e->scale = sc;
    snprintf(e->by, sizeof e->by, "qat");
    /* a q4a entry with fixed scales but no zero points, and a NaN scale, are refused by name */
    pm_plan_entry *e2 = pm_plan_find(&p, "h.1.mlp.fc.w");
    snprintf(e2->type, sizeof e2->type, "q4a");
    e2->scale = sc;
    assert_int_equal(inf_plan_write(&p, &f->v, NULL, f->path, err, sizeof err), -1);
    assert_non_null(strstr(err, "tensor 'h.1.mlp.fc.w' [256, 64] as q4a"));
    assert_non_null(strstr(err, "zero points"));
    snprintf(e2->type, sizeof e2->type, "q8");
    e2->scale = NULL;
    sc[7] = NAN;
    assert_int_equal(inf_plan_write(&p, &f->v, NULL, f->path, err, sizeof err), -1);
    assert_non_null(strstr(err, "tensor 'h.0.mlp.fc.w' [256, 64] as q8 (set by qat)"));
    assert_non_null(strstr(err, "row 3, group 1 is nan"));
    sc[7] = sc[6];
    if (inf_plan_write(&p, &f->v, NULL, f->path, err, sizeof err)) fail_msg("%s", err);
    inf_file file;
    if (inf_file_open(&file, f->path, err, sizeof err)) fail_msg("%s", err);
    const inf_tensor *t = inf_file_find(&file, "h.0.mlp.fc.w");
    assert_int_equal(t->dtype, INF_Q8);
    int8_t *want = malloc((size_t)N * K);
    assert_int_equal(cp_quantize_fixed(CP_INT8_SYM, e->data, N, K, 32, sc, NULL, want, err, sizeof err), 0);
    float row[64];
    for (int r = 0; r < N; r++) {
        inf_type(INF_Q8)->row(t, (size_t)r, row);
        for (int k = 0; k < K; k++) {
            float s = sc[r * NG + k / 32], v = s * (float)want[r * K + k];
            assert_memory_equal(&row[k], &v, sizeof v); /* the given scale, the codes it implies */
        }
    }
    inf_file_close(&file);
    free(q), free(want);
    pm_plan_free(&p);
}

static void test_greedy_256_tokens_identical(void **state) {
    fixture *f = *state;
    char err[512];
    inf_export_opts o = {INF_F32, 0, false, "data=x\n", false};
    if (inf_export_gpt(&f->m, &f->v, &o, f->path, err, sizeof err)) fail_msg("%s", err);
    int want[4 + 256], got[4 + 256];
    ag_rng r1, r2;
    ag_rng_seed(&r1, 1);
    ag_rng_seed(&r2, 1);
    int n1 = tr_generate(f->c, &f->m, f->ids, 4, 256, 0.0, 0, -1, &r1, want, err, sizeof err);
    assert_int_equal(n1, 260);
    inf_model m;
    if (inf_model_open(&m, f->path, err, sizeof err)) fail_msg("%s", err);
    inf_session s;
    assert_int_equal(inf_session_init(&s, &m, inf_isa_best(), 3, err, sizeof err), 0);
    int n2 = inf_generate(&s, f->ids, 4, 256, 0.0, 0, -1, &r2, got, NULL, NULL, err, sizeof err);
    assert_int_equal(n2, 260);
    assert_memory_equal(got, want, sizeof want);
    /* the same with temperature sampling and a seed: same logits, same draws */
    ag_rng_seed(&r1, 5);
    ag_rng_seed(&r2, 5);
    n1 = tr_generate(f->c, &f->m, f->ids, 4, 40, 0.8, 10, -1, &r1, want, err, sizeof err);
    n2 = inf_generate(&s, f->ids, 4, 40, 0.8, 10, -1, &r2, got, NULL, NULL, err, sizeof err);
    assert_int_equal(n1, n2);
    assert_memory_equal(got, want, sizeof(int) * (size_t)n1);
    inf_session_free(&s);
    inf_model_close(&m);
}

static void test_pick_rules(void **state) {
    (void)state;
    const float lg[5] = {1.0f, 3.0f, 3.0f, -2.0f, 0.5f};
    double probs[5];
    ag_rng r;
    ag_rng_seed(&r, 1);
    assert_int_equal(tr_sample_pick(lg, 5, 0.0, 0, &r, probs), 1); /* first on ties */
    int seen[5] = {0};
    for (int i = 0; i < 2000; i++) seen[tr_sample_pick(lg, 5, 1.0, 2, &r, probs)]++;
    assert_true(seen[1] > 0 && seen[2] > 0); /* both tied top values stay */
    assert_int_equal(seen[0] + seen[3] + seen[4], 0);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 4000; i++) seen[tr_sample_pick(lg, 5, 1.0, 0, &r, probs)]++;
    assert_true(seen[0] > 0 && seen[4] > 0 && seen[3] > 0);
}

static void test_bad_input(void **state) {
    fixture *f = *state;
    char err[512];
    inf_export_opts o = {INF_Q4, 48, false, NULL, false}; /* 48 is not a multiple of 32 */
    assert_int_equal(inf_export_gpt(&f->m, &f->v, &o, f->path, err, sizeof err), -1);
    assert_non_null(strstr(err, "group size 48"));
    o.group = 0;
    o.dtype = INF_F32;
    if (inf_export_gpt(&f->m, &f->v, &o, f->path, err, sizeof err)) fail_msg("%s", err);
    inf_model m;
    if (inf_model_open(&m, f->path, err, sizeof err)) fail_msg("%s", err);
    inf_session s;
    assert_int_equal(inf_session_init(&s, &m, INF_ISA_SCALAR, 3, err, sizeof err), 0);
    float lg[65];
    int bad = 65;
    assert_int_equal(inf_forward(&s, &bad, 1, lg, false, err, sizeof err), -1);
    assert_non_null(strstr(err, "token 65 at index 0"));
    int many[CTX + 1] = {0};
    assert_int_equal(inf_forward(&s, many, CTX + 1, NULL, false, err, sizeof err), -1);
    assert_non_null(strstr(err, "context holds 32"));
    inf_session_free(&s);
    inf_model_close(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_f32_logits_match_training_forward, setup, teardown),
        cmocka_unit_test_setup_teardown(test_q8_per_channel_parity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_q8_group_parity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_q4_parity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_q4a_parity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_same_bits_any_thread_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pruned_factorized_parity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pruned_factorized_decode_same_bits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_width_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_smaller_arch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_fixed_scales, setup, teardown),
        cmocka_unit_test_setup_teardown(test_greedy_256_tokens_identical, setup, teardown),
        cmocka_unit_test(test_pick_rules),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
