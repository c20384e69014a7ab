/* test_sparsity.c - compress/sparsity.c: PyTorch's pruning counts, the
 * schedules' formulas, masks that keep zeros (weights and both moments)
 * through many steps and a resume, N:M groups, RigL regrowing by the dense
 * gradient and SET at random with the right counts (regrown weights and
 * moments zero), heads and neurons always whole, their physical removal
 * (the smaller model computes what the masked one did, and the export plan
 * writes a file the runtime runs to the training forward's logits), L1 and
 * group lasso, and the errors bad keys get. The masks against PyTorch's
 * l1_unstructured and global_unstructured: tests/parity/parity_prune.c. */
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

#include "compress/sparsity.h"
#include "infer/export.h"
#include "infer/runtime.h"
#include "train/trainer.h"

#define assert_close(a, b, eps) assert_true(fabs((double)(a) - (double)(b)) <= (eps))

typedef struct world {
    tr_dataset *d;
    tr_gpt m;
    tr_trainer t;
    tr_policy *p;
} world;

/* 2 layers, 2 heads of width 16 (C = 32), 64 MLP units, untied head, biases. */
static void world_open(world *w, int steps, const char *out) {
    char err[512];
    memset(w, 0, sizeof *w);
    tr_data_opts o = tr_data_opts_default();
    o.vocab = TR_VOCAB_CHAR;
    o.ctx = 16;
    if (tr_dataset_open(&w->d, "builtin:markov", &o, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_config mc = {.n_layer = 2, .n_head = 2, .n_embd = 32, .mlp_ratio = 2, .ctx = 16,
                        .vocab = w->d->vocab.size, .bias = true, .tied = false};
    if (tr_gpt_init(&w->m, &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) fail_msg("%s", err);
    tr_gpt_init_weights(&w->m, 3);
    tr_train_config tc = tr_train_config_default();
    tc.steps = steps;
    tc.batch = 4;
    tc.warmup = 2;
    tc.lr = 3e-3;
    tc.eval_every = 0;
    tc.eval_batches = 1;
    tc.out = out;
    if (tr_trainer_init(&w->t, &w->m, w->d, &tc, err, sizeof err) != 0) fail_msg("%s", err);
}

static void world_close(world *w) {
    tr_trainer_free(&w->t);
    if (w->p) cp_sparsity_kind.destroy(w->p);
    tr_gpt_free(&w->m);
    tr_dataset_free(w->d);
}

/* The keys' defaults. */
static cp_sparsity_cfg defaults(void) {
    cp_sparsity_cfg c;
    pare_keys k = {.n = 0};
    cp_sparsity_kind.keys(&k, &c);
    char err[256];
    if (pare_opts_defaults(k.row, k.n, err, sizeof err) != 0) fail_msg("%s", err);
    return c;
}

static void add(world *w, const cp_sparsity_cfg *c) {
    char err[512];
    w->p = cp_sparsity_kind.create(c, err, sizeof err);
    if (!w->p) fail_msg("%s", err);
    assert_int_equal(tr_trainer_add_policy(&w->t, w->p), 0);
}

static bool prunable(const char *name) {
    return strstr(name, ".w") && (strstr(name, "attn.") || strstr(name, "mlp.") || !strcmp(name, "lm_head.w"));
}

/* ------------------------------------------------------------ counting */

static void test_counts_and_magnitude(void **state) {
    (void)state;
    assert_int_equal(cp_prune_count(0.25, 10), 2);
    assert_int_equal(cp_prune_count(0.35, 10), 4); /* 3.5 -> 4 */
    assert_int_equal(cp_prune_count(0.45, 10), 4); /* 4.5 -> 4: half to even */
    assert_int_equal(cp_prune_count(0.5, 5), 2);   /* 2.5 -> 2 */
    assert_int_equal(cp_prune_count(1.0, 7), 7);
    assert_int_equal(cp_prune_count(0.0, 7), 0);
    float a[6] = {0.5f, -0.1f, 0.3f, -0.9f, 0.05f, 0.7f}, b[4] = {-0.2f, 0.01f, 0.8f, -0.4f};
    float ma[6] = {1, 1, 1, 1, 1, 1}, mb[4] = {1, 1, 1, 1};
    const float *w[2] = {a, b};
    float *m[2] = {ma, mb};
    size_t n[2] = {6, 4};
    /* one tensor: round(0.5 x 6) = 3 smallest |w|: 0.05, -0.1, 0.3 */
    assert_int_equal(cp_magnitude_prune(w, m, n, 1, 0.5), 3);
    float want_a[6] = {1, 0, 0, 1, 0, 1};
    assert_memory_equal(ma, want_a, sizeof ma);
    /* global over both, amount 0.6: 6 of 10; the 3 already masked count first, then 0.01, -0.2, 0.5... */
    assert_int_equal(cp_magnitude_prune(w, m, n, 2, 0.6), 6);
    float want_a2[6] = {1, 0, 0, 1, 0, 1}, want_b2[4] = {0, 0, 1, 0};
    assert_memory_equal(ma, want_a2, sizeof ma);
    assert_memory_equal(mb, want_b2, sizeof mb);
}

static void test_schedules(void **state) {
    (void)state;
    /* gradual (Zhu and Gupta): events at 10, 30, ..., 110; s_f + (0 - s_f)(1 - k/5)^3 */
    for (long t = 0; t <= 130; t++) {
        double s = cp_schedule_at(CP_SCHED_GRADUAL, 0.9, 10, 110, 20, t);
        if (t < 10 || t > 110 || (t - 10) % 20) {
            assert_true(s == -1.0);
            continue;
        }
        double k = (t - 10) / 20.0, r = 1 - k / 5.0;
        assert_close(s, 0.9 + (0 - 0.9) * r * r * r, 1e-15);
    }
    assert_close(cp_schedule_at(CP_SCHED_GRADUAL, 0.9, 10, 110, 20, 110), 0.9, 1e-15);
    assert_close(cp_schedule_at(CP_SCHED_GRADUAL, 0.9, 10, 110, 20, 10), 0.0, 1e-15);
    /* iterative: 6 rounds, each removing the same fraction of what is left, the last at s_f */
    double prev = 0, frac = -1;
    for (long t = 10; t <= 110; t += 20) {
        double s = cp_schedule_at(CP_SCHED_ITERATIVE, 0.9, 10, 110, 20, t);
        double f = (s - prev) / (1 - prev);
        if (frac >= 0) assert_close(f, frac, 1e-12);
        frac = f, prev = s;
    }
    assert_close(prev, 0.9, 1e-12);
    /* one-shot: once, at the start */
    assert_close(cp_schedule_at(CP_SCHED_ONESHOT, 0.75, 40, 0, 1, 40), 0.75, 0);
    assert_true(cp_schedule_at(CP_SCHED_ONESHOT, 0.75, 40, 0, 1, 41) == -1.0);
    /* RigL's cosine-decayed update fraction */
    assert_close(cp_dst_fraction(0.3, 0, 100), 0.3, 1e-15);
    assert_close(cp_dst_fraction(0.3, 50, 100), 0.15, 1e-15);
    assert_close(cp_dst_fraction(0.3, 100, 100), 0.0, 1e-15);
    assert_close(cp_dst_fraction(0.3, 101, 100), 0.0, 0);
    /* ERK: densities proportional to (out + in) / (out in), the total at 1 - s, none above 1 */
    int out[3] = {96, 32, 8}, in[3] = {32, 96, 4};
    double d[3];
    cp_erk_densities(out, in, 3, 0.9, d);
    double kept = 0, total = 0;
    for (int i = 0; i < 3; i++) kept += d[i] * out[i] * in[i], total += (double)out[i] * in[i];
    assert_close(kept / total, 0.1, 1e-12);
    assert_close(d[0], d[1], 1e-12);
    assert_true(d[2] > d[0] && d[2] <= 1.0);
}

/* ---------------------------------------------------- masks through training */

static void assert_masked_zero(const ag_params *p) {
    for (size_t j = 0; j < p->n; j++)
        if (p->mask[j] == 0.0f) assert_true(p->data[j] == 0.0f && p->m[j] == 0.0f && p->v[j] == 0.0f);
}

/* Each prunable tensor ends at exactly round(s x n) zeros. */
static void assert_site_sparsity(const tr_gpt *m, double s) {
    for (int i = 0; i < m->params.count; i++) {
        if (!prunable(m->params.names[i])) continue;
        assert_int_equal(ag_params_masked(&m->params, i), cp_prune_count(s, m->params.t[i].numel));
    }
}

/* Gradual magnitude pruning and SET: 16 steps straight against 8 + checkpoint
 * + a new trainer + 8: the same weights, moments and masks bit for bit;
 * masked entries zero in the weights and both moments. */
static void run_resume(cp_sparsity_cfg c, const char *tag) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/pare_test_sparsity_%d_%s.ckpt", (int)getpid(), tag);
    world a;
    world_open(&a, 16, NULL);
    add(&a, &c);
    assert_int_equal(tr_train(&a.t), TR_OK);
    assert_masked_zero(&a.m.params);
    world b;
    world_open(&b, 16, path);
    add(&b, &c);
    for (int s = 0; s < 8; s++) assert_int_equal(tr_train_step(&b.t), TR_OK);
    assert_int_equal(tr_trainer_save(&b.t, path), 0);
    world_close(&b);
    world r;
    world_open(&r, 16, path);
    add(&r, &c);
    assert_int_equal(tr_trainer_load(&r.t, path), 0);
    assert_int_equal(r.t.step, 8);
    assert_masked_zero(&r.m.params);
    assert_int_equal(tr_train(&r.t), TR_OK);
    size_t n = a.m.params.n * sizeof(float);
    assert_memory_equal(a.m.params.data, r.m.params.data, n);
    assert_memory_equal(a.m.params.m, r.m.params.m, n);
    assert_memory_equal(a.m.params.v, r.m.params.v, n);
    assert_memory_equal(a.m.params.mask, r.m.params.mask, n);
    if (c.prune == CP_PRUNE_MAGNITUDE) assert_site_sparsity(&a.m, c.sparsity);
    world_close(&a);
    world_close(&r);
    unlink(path);
}

static void test_masks_hold_and_resume(void **state) {
    (void)state;
    cp_sparsity_cfg c = defaults();
    c.prune = CP_PRUNE_MAGNITUDE;
    c.sparsity = 0.7;
    c.schedule = CP_SCHED_GRADUAL;
    c.start = 2, c.end = 10, c.every = 2;
    run_resume(c, "gradual");
    c = defaults();
    c.prune = CP_PRUNE_SET;
    c.sparsity = 0.8;
    c.dst_every = 3;
    c.dst_end = 14;
    run_resume(c, "set");
}

/* Global magnitude pruning: one threshold over every prunable tensor: every
 * pruned |w| is below every kept one, the count is round(s x N) of all. */
static void test_global_threshold(void **state) {
    (void)state;
    world w;
    world_open(&w, 2, NULL);
    cp_sparsity_cfg c = defaults();
    c.prune = CP_PRUNE_MAGNITUDE;
    c.scope = CP_SCOPE_GLOBAL;
    c.sparsity = 0.6;
    add(&w, &c);
    assert_int_equal(tr_trainer_prepare(&w.t), 0);
    const ag_params *p = &w.m.params;
    float *w0 = malloc(p->n * sizeof *w0);
    memcpy(w0, p->data, p->n * sizeof *w0);
    assert_int_equal(cp_sparsity_apply_now(w.p, &w.t), 0);
    size_t masked = 0, total = 0;
    float kept_min = INFINITY, gone_max = 0;
    for (int i = 0; i < p->count; i++) {
        if (!prunable(p->names[i])) {
            assert_int_equal(ag_params_masked(p, i), 0);
            continue;
        }
        masked += ag_params_masked(p, i);
        total += p->t[i].numel;
        for (size_t j = 0; j < p->t[i].numel; j++) {
            size_t o = p->offset[i] + j;
            if (p->mask[o] != 0.0f) kept_min = fminf(kept_min, fabsf(w0[o]));
            else gone_max = fmaxf(gone_max, fabsf(w0[o])), assert_true(p->data[o] == 0.0f);
        }
    }
    assert_int_equal(masked, cp_prune_count(0.6, total));
    assert_true(gone_max <= kept_min);
    /* per-site fractions differ (one threshold, not one fraction per tensor) */
    int q = ag_params_find(p, "h.0.attn.proj.w"), l = ag_params_find(p, "lm_head.w");
    assert_true((double)ag_params_masked(p, q) / p->t[q].numel != (double)ag_params_masked(p, l) / p->t[l].numel);
    free(w0);
    world_close(&w);
}

/* N:M: after the schedule, at most N of every M consecutive inputs of every
 * row stay, in every prunable tensor; halfway through, fewer groups are full. */
static void test_nm_groups_hold(void **state) {
    (void)state;
    world w;
    world_open(&w, 12, NULL);
    cp_sparsity_cfg c = defaults();
    c.prune = CP_PRUNE_NM;
    c.nm = "2:4";
    c.schedule = CP_SCHED_GRADUAL;
    c.start = 0, c.end = 8, c.every = 2;
    add(&w, &c);
    for (int s = 0; s < 12; s++) {
        assert_int_equal(tr_train_step(&w.t), TR_OK);
        const ag_params *p = &w.m.params;
        for (int i = 0; i < p->count; i++) {
            if (!prunable(p->names[i])) continue;
            const ag_tensor *t = &p->t[i];
            size_t viol = 0;
            for (size_t g = 0; g < t->numel / 4; g++) {
                int nz = 0;
                for (int j = 0; j < 4; j++) nz += t->data[g * 4 + j] != 0.0f;
                viol += nz > 2;
            }
            if (w.t.step >= 8) assert_int_equal(viol, 0);
            if (w.t.step == 4) assert_true(viol > 0); /* the ramp: (1 - (1 - 2/4)^3) of the candidates */
        }
    }
    assert_masked_zero(&w.m.params);
    assert_site_sparsity(&w.m, 0.5);
    world_close(&w);
}

/* ---------------------------------------------------------- SET and RigL */

typedef struct snap {
    float *grad, *data, *mask;
    size_t n;
} snap;

static int snap_backward(tr_policy *p, tr_trainer *t) {
    snap *s = p->user;
    memcpy(s->grad, t->model->params.grad, s->n * sizeof(float));
    return 0;
}

static int snap_step(tr_policy *p, tr_trainer *t) { /* runs before the sparsity policy's update */
    snap *s = p->user;
    memcpy(s->data, t->model->params.data, s->n * sizeof(float));
    memcpy(s->mask, t->model->params.mask, s->n * sizeof(float));
    return 0;
}

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y;
}

/* One update at step 2: per tensor, the k active weights of smallest |w| go
 * and k come back: RigL's the k largest |dense gradient| among the inactive,
 * SET's a random k; the active count is unchanged, the regrown weights and
 * moments are zero. Returns the regrown positions' bitmap (caller frees). */
static unsigned char *dst_update_check(int kind, uint64_t seed, long *moved) {
    world w;
    world_open(&w, 10, NULL);
    w.t.cfg.seed = seed;
    cp_sparsity_cfg c = defaults();
    c.prune = kind;
    c.sparsity = 0.7;
    c.density = CP_DENSITY_UNIFORM;
    c.dst_every = 2;
    c.dst_end = 10;
    c.dst_fraction = 0.3;
    size_t n = w.m.params.n;
    snap sn = {malloc(n * 4), malloc(n * 4), malloc(n * 4), n};
    tr_policy probe = {.name = "snap", .user = &sn, .after_backward = snap_backward, .after_step = snap_step};
    assert_int_equal(tr_trainer_add_policy(&w.t, &probe), 0);
    add(&w, &c);
    assert_int_equal(tr_train_step(&w.t), TR_OK);
    assert_int_equal(tr_train_step(&w.t), TR_OK); /* done = 2: an update */
    const ag_params *p = &w.m.params;
    unsigned char *grown = calloc(n, 1);
    double f = cp_dst_fraction(0.3, 2, 10);
    *moved = 0;
    for (int i = 0; i < p->count; i++) {
        if (!prunable(p->names[i])) continue;
        size_t o = p->offset[i], ne = p->t[i].numel, active = 0, dropped = 0, regrown = 0;
        for (size_t j = 0; j < ne; j++) active += sn.mask[o + j] != 0.0f;
        size_t k = cp_prune_count(f, active);
        assert_true(k > 0);
        /* the dropped: the k smallest |w| of the active (no ties in random weights) */
        float *act = malloc(active * sizeof *act), *cand = malloc(ne * sizeof *cand);
        size_t na = 0, nc = 0;
        for (size_t j = 0; j < ne; j++)
            if (sn.mask[o + j] != 0.0f) act[na++] = -fabsf(sn.data[o + j]);
        qsort(act, na, sizeof *act, cmp_desc); /* descending -|w|: smallest |w| first */
        float thr = -act[k - 1];
        size_t after = 0;
        for (size_t j = 0; j < ne; j++) {
            bool was = sn.mask[o + j] != 0.0f, is = p->mask[o + j] != 0.0f;
            after += is;
            bool drop = was && fabsf(sn.data[o + j]) <= thr;
            dropped += drop;
            if (!was || drop) cand[nc++] = fabsf(sn.grad[o + j]);
            if (is && (!was || drop)) { /* regrown: starts at zero with zero moments */
                regrown++;
                grown[o + j] = 1;
                assert_true(p->data[o + j] == 0.0f && p->m[o + j] == 0.0f && p->v[o + j] == 0.0f);
                *moved += !was;
            }
            if (was && !drop) assert_true(is); /* the rest stay */
        }
        assert_int_equal(dropped, k);
        assert_int_equal(regrown, k);
        assert_int_equal(after, active);
        if (kind == CP_PRUNE_RIGL) { /* exactly the k largest gradients among the candidates */
            qsort(cand, nc, sizeof *cand, cmp_desc);
            for (size_t j = 0; j < ne; j++)
                if (grown[o + j]) assert_true(fabsf(sn.grad[o + j]) >= cand[k - 1]);
        }
        free(act);
        free(cand);
    }
    free(sn.grad), free(sn.data), free(sn.mask);
    world_close(&w);
    return grown;
}

static void test_rigl_and_set_regrowth(void **state) {
    (void)state;
    long mr, m1, m2;
    unsigned char *r = dst_update_check(CP_PRUNE_RIGL, 1, &mr);
    unsigned char *s1 = dst_update_check(CP_PRUNE_SET, 1, &m1);
    unsigned char *s2 = dst_update_check(CP_PRUNE_SET, 2, &m2);
    assert_true(mr > 0 && m1 > 0);
    /* SET is not RigL, and two seeds grow different weights */
    world w;
    world_open(&w, 1, NULL);
    size_t n = w.m.params.n, diff_r = 0, diff_s = 0;
    world_close(&w);
    for (size_t j = 0; j < n; j++) diff_r += r[j] != s1[j], diff_s += s1[j] != s2[j];
    assert_true(diff_r > 0 && diff_s > 0);
    free(r), free(s1), free(s2);
}

/* -------------------------------------------------- heads and neurons */

/* Each head of each layer: every entry of its qkv rows and biases and proj
 * columns masked, or none. Returns the heads masked. */
static int whole_heads(const tr_gpt *m) {
    const ag_params *p = &m->params;
    int D = m->arch.head_dim, pruned = 0;
    for (int l = 0; l < m->arch.n_layer; l++) {
        char n1[64], n2[64], n3[64];
        snprintf(n1, sizeof n1, "h.%d.attn.qkv.w", l);
        snprintf(n2, sizeof n2, "h.%d.attn.qkv.b", l);
        snprintf(n3, sizeof n3, "h.%d.attn.proj.w", l);
        int qw = ag_params_find(p, n1), qb = ag_params_find(p, n2), pw = ag_params_find(p, n3);
        int A = m->arch.n_head[l] * D, C = m->arch.n_embd;
        for (int h = 0; h < m->arch.n_head[l]; h++) {
            size_t zeros = 0, all = 0;
            for (int j = 0; j < 3; j++)
                for (int d = 0; d < D; d++) {
                    int row = j * A + h * D + d;
                    for (int c = 0; c < C; c++) zeros += p->mask[p->offset[qw] + (size_t)row * C + c] == 0, all++;
                    zeros += p->mask[p->offset[qb] + row] == 0, all++;
                }
            for (int r = 0; r < C; r++)
                for (int d = 0; d < D; d++) zeros += p->mask[p->offset[pw] + (size_t)r * A + h * D + d] == 0, all++;
            assert_true(zeros == 0 || zeros == all);
            pruned += zeros == all;
        }
    }
    return pruned;
}

static int whole_units(const tr_gpt *m) {
    const ag_params *p = &m->params;
    int pruned = 0;
    for (int l = 0; l < m->arch.n_layer; l++) {
        char n1[64], n2[64], n3[64];
        snprintf(n1, sizeof n1, "h.%d.mlp.fc.w", l);
        snprintf(n2, sizeof n2, "h.%d.mlp.fc.b", l);
        snprintf(n3, sizeof n3, "h.%d.mlp.proj.w", l);
        int fw = ag_params_find(p, n1), fb = ag_params_find(p, n2), mw = ag_params_find(p, n3);
        int M = m->arch.n_hidden[l], C = m->arch.n_embd;
        for (int i = 0; i < M; i++) {
            size_t zeros = p->mask[p->offset[fb] + i] == 0, all = 1;
            for (int c = 0; c < C; c++) zeros += p->mask[p->offset[fw] + (size_t)i * C + c] == 0, all++;
            for (int r = 0; r < C; r++) zeros += p->mask[p->offset[mw] + (size_t)r * M + i] == 0, all++;
            assert_true(zeros == 0 || zeros == all);
            pruned += zeros == all;
        }
    }
    return pruned;
}

/* max over rows of max|a - b| / max|b| */
static double rel_err(const float *a, const float *b, int rows, int V) {
    double worst = 0;
    for (int t = 0; t < rows; t++) {
        double e = 0, mx = 1e-30;
        for (int v = 0; v < V; v++) {
            e = fmax(e, fabs((double)a[t * V + v] - b[t * V + v]));
            mx = fmax(mx, fabs((double)b[t * V + v]));
        }
        worst = fmax(worst, e / mx);
    }
    return worst;
}

/* The smaller model computes the masked model's logits; so does the model
 * file the export plan writes (the runtime, within 1e-5 relative). */
static void check_shrink(world *w, int want_heads, int want_units) {
    char err[512];
    cp_shrink sh;
    assert_int_equal(cp_shrink_find(&sh, &w->m, err, sizeof err), 0);
    assert_int_equal(sh.removed_heads, want_heads);
    assert_int_equal(sh.removed_units, want_units);
    tr_gpt small;
    assert_int_equal(cp_shrink_model(&sh, &w->m, &small, 0, err, sizeof err), 0);
    assert_int_equal(ag_params_numel(&small.params) + (size_t)want_heads * (3 * 16 * 32 + 3 * 16 + 32 * 16) +
                         (size_t)want_units * (32 + 1 + 32),
                     ag_params_numel(&w->m.params));
    int ids[16];
    for (int i = 0; i < 16; i++) ids[i] = (i * 7 + 3) % w->m.arch.vocab;
    ag_ctx *c = ag_ctx_new();
    ag_set_grad(c, false);
    ag_tensor *a = tr_gpt_forward(c, &w->m, ids, 1, 16, NULL);
    ag_tensor *b = tr_gpt_forward(c, &small, ids, 1, 16, NULL);
    assert_non_null(a);
    assert_non_null(b);
    int V = w->m.arch.vocab;
    assert_true(rel_err(b->data, a->data, 16, V) <= 1e-5);
    /* the export hook: the plan gets the smaller architecture, the file runs to the same logits */
    pm_plan plan;
    assert_int_equal(inf_plan_from_gpt(&plan, &w->m, err, sizeof err), 0);
    assert_int_equal(w->p->export(w->p, &w->m, NULL, &plan, err, sizeof err), 0);
    assert_true(pm_arch_equal(&plan.arch, &sh.arch));
    char path[256];
    snprintf(path, sizeof path, "/tmp/pare_test_sparsity_%d.pare", (int)getpid());
    if (inf_plan_write(&plan, &w->d->vocab, NULL, path, err, sizeof err)) fail_msg("%s", err);
    inf_model im;
    if (inf_model_open(&im, path, err, sizeof err)) fail_msg("%s", err);
    assert_true(pm_arch_equal(&im.file.arch, &sh.arch));
    inf_session s;
    assert_int_equal(inf_session_init(&s, &im, inf_isa_best(), 3, err, sizeof err), 0);
    float *lg = malloc(sizeof(float) * 16 * (size_t)V);
    assert_int_equal(inf_forward(&s, ids, 16, lg, true, err, sizeof err), 0);
    double e = rel_err(lg, a->data, 16, V);
    print_message("shrunk file: %d heads, %d units removed; runtime vs masked training forward %.2e\n", want_heads,
                  want_units, e);
    assert_true(e <= 1e-5);
    free(lg);
    inf_session_free(&s);
    inf_model_close(&im);
    unlink(path);
    pm_plan_free(&plan);
    ag_ctx_free(c);
    tr_gpt_free(&small);
    cp_shrink_free(&sh);
}

static void test_heads_whole_and_removed(void **state) {
    (void)state;
    int scores[2] = {CP_SCORE_NORM, CP_SCORE_LOSS};
    for (int k = 0; k < 2; k++) {
        world w;
        world_open(&w, 6, NULL);
        cp_sparsity_cfg c = defaults();
        c.prune = CP_PRUNE_HEADS;
        c.sparsity = 0.5;
        c.score = scores[k];
        c.calib_batches = 2;
        c.start = 2;
        add(&w, &c);
        for (int s = 0; s < 6; s++) {
            assert_int_equal(tr_train_step(&w.t), TR_OK);
            assert_int_equal(whole_heads(&w.m), s + 1 >= 2 ? 2 : 0); /* one of 2 in each layer, from step 2 */
        }
        assert_masked_zero(&w.m.params);
        check_shrink(&w, 2, 0);
        world_close(&w);
    }
}

static void test_neurons_whole_and_removed(void **state) {
    (void)state;
    int scores[2] = {CP_SCORE_NORM, CP_SCORE_ACTIVATION};
    for (int k = 0; k < 2; k++) {
        world w;
        world_open(&w, 8, NULL);
        cp_sparsity_cfg c = defaults();
        c.prune = CP_PRUNE_NEURONS;
        c.sparsity = 0.5;
        c.score = scores[k];
        c.scope = k ? CP_SCOPE_GLOBAL : CP_SCOPE_SITE;
        c.schedule = CP_SCHED_ITERATIVE;
        c.start = 0, c.end = 4, c.every = 2;
        c.calib_batches = 2;
        add(&w, &c);
        for (int s = 0; s < 8; s++) assert_int_equal(tr_train_step(&w.t), TR_OK);
        assert_int_equal(whole_units(&w.m), 64); /* half of 2 x 64 */
        assert_masked_zero(&w.m.params);
        check_shrink(&w, 0, 64);
        world_close(&w);
    }
}

/* ------------------------------------------------------ regularisers */

typedef struct grabber {
    float *grad;
    size_t n;
} grabber;

static int grab(tr_policy *p, tr_trainer *t) {
    grabber *g = p->user;
    memcpy(g->grad, t->model->params.grad, g->n * sizeof(float));
    return 0;
}

/* L1 by its subgradient: the gradient of every prunable weight gains
 * lambda sign(w), nothing else changes. Proximal: exact zeros appear.
 * Group lasso's block soft-threshold with a large lambda zeroes every group. */
static void test_l1_and_group_lasso(void **state) {
    (void)state;
    float *g[2];
    float *w0 = NULL;
    for (int k = 0; k < 2; k++) {
        world w;
        world_open(&w, 2, NULL);
        grabber gr = {malloc(w.m.params.n * 4), w.m.params.n};
        g[k] = gr.grad;
        cp_sparsity_cfg c = defaults();
        c.l1 = k ? 0.25 : 0.0;
        if (k) add(&w, &c);
        tr_policy probe = {.name = "grab", .user = &gr, .after_backward = grab};
        assert_int_equal(tr_trainer_add_policy(&w.t, &probe), 0);
        if (!k) {
            w0 = malloc(w.m.params.n * 4);
            memcpy(w0, w.m.params.data, w.m.params.n * 4);
        }
        assert_int_equal(tr_train_step(&w.t), TR_OK);
        if (k) {
            const ag_params *p = &w.m.params;
            for (int i = 0; i < p->count; i++)
                for (size_t j = 0; j < p->t[i].numel; j++) {
                    size_t o = p->offset[i] + j;
                    float sg = prunable(p->names[i]) ? 0.25f * (float)((w0[o] > 0) - (w0[o] < 0)) : 0.0f;
                    assert_true(g[1][o] == g[0][o] + sg);
                }
        }
        world_close(&w);
    }
    free(g[0]), free(g[1]), free(w0);
    /* proximal L1: exact zeros */
    world w;
    world_open(&w, 3, NULL);
    cp_sparsity_cfg c = defaults();
    c.l1 = 5.0;
    c.l1_proximal = true;
    add(&w, &c);
    for (int s = 0; s < 3; s++) assert_int_equal(tr_train_step(&w.t), TR_OK);
    int q = ag_params_find(&w.m.params, "h.0.mlp.fc.w");
    size_t zeros = 0;
    for (size_t j = 0; j < w.m.params.t[q].numel; j++) zeros += w.m.params.t[q].data[j] == 0.0f;
    assert_true(zeros > w.m.params.t[q].numel / 10);
    world_close(&w);
    /* proximal group lasso, lambda large: every head and unit group exactly zero */
    world_open(&w, 1, NULL);
    c = defaults();
    c.group_lasso = 1e4;
    c.l1_proximal = true;
    add(&w, &c);
    assert_int_equal(tr_train_step(&w.t), TR_OK);
    const char *names[3] = {"h.0.attn.qkv.w", "h.1.mlp.fc.b", "h.1.mlp.proj.w"};
    for (int i = 0; i < 3; i++) {
        int ti = ag_params_find(&w.m.params, names[i]);
        for (size_t j = 0; j < w.m.params.t[ti].numel; j++) assert_true(w.m.params.t[ti].data[j] == 0.0f);
    }
    world_close(&w);
}

/* ------------------------------------------------------------ errors */

static void test_bad_input(void **state) {
    (void)state;
    char err[512];
    cp_sparsity_cfg c;
    pare_keys k = {.n = 0};
    cp_sparsity_kind.keys(&k, &c);
    char *argv[] = {"x", "--sparsity", "1.5"};
    assert_int_equal(pare_opts_parse(k.row, k.n, 3, argv, NULL, 0, NULL, err, sizeof err), PARE_OPTS_ERROR);
    print_message("%s\n", err);
    assert_non_null(strstr(err, "sparsity"));
    c = defaults();
    c.prune = CP_PRUNE_MAGNITUDE;
    c.sparsity = 1.0;
    assert_null(cp_sparsity_kind.create(&c, err, sizeof err));
    assert_non_null(strstr(err, "sparsity 1: expected a fraction in [0, 1)"));
    c = defaults();
    c.prune = CP_PRUNE_NM;
    c.nm = "3:2";
    assert_null(cp_sparsity_kind.create(&c, err, sizeof err));
    print_message("%s\n", err);
    assert_non_null(strstr(err, "nm '3:2': expected 1 <= N < M"));
    c.nm = "2:4x";
    assert_null(cp_sparsity_kind.create(&c, err, sizeof err));
    assert_non_null(strstr(err, "expected N:M"));
    c = defaults();
    c.prune = CP_PRUNE_HEADS;
    c.score = CP_SCORE_ACTIVATION;
    assert_null(cp_sparsity_kind.create(&c, err, sizeof err));
    assert_non_null(strstr(err, "heads are scored by norm or loss"));
    /* found once the model is known: inputs not divisible by M, globs matching nothing, a bad schedule */
    struct {
        const char *what, *nm, *sites;
        int sched, end;
        const char *want;
    } cases[] = {{"nm", "3:5", "", CP_SCHED_ONESHOT, 0, "not a multiple of 5"},
                 {"sites", "2:4", "h.*.nothing", CP_SCHED_ONESHOT, 0, "matches no linear site"},
                 {"gradual", "2:4", "", CP_SCHED_GRADUAL, 1, "needs prune-end - prune-start"}};
    for (int i = 0; i < 3; i++) {
        world w;
        world_open(&w, 4, NULL);
        c = defaults();
        c.prune = i == 0 ? CP_PRUNE_NM : CP_PRUNE_MAGNITUDE;
        c.nm = cases[i].nm, c.sites = cases[i].sites, c.schedule = cases[i].sched, c.end = cases[i].end;
        c.every = 2;
        add(&w, &c);
        assert_int_equal(tr_trainer_prepare(&w.t), -1);
        print_message("%s: %s\n", cases[i].what, w.t.err);
        assert_non_null(strstr(w.t.err, cases[i].want));
        world_close(&w);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_magnitude),
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_masks_hold_and_resume),
        cmocka_unit_test(test_global_threshold),
        cmocka_unit_test(test_nm_groups_hold),
        cmocka_unit_test(test_rigl_and_set_regrowth),
        cmocka_unit_test(test_heads_whole_and_removed),
        cmocka_unit_test(test_neurons_whole_and_removed),
        cmocka_unit_test(test_l1_and_group_lasso),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests_name("sparsity", tests, NULL, NULL);
}
