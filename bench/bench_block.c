/* bench_block.c - forward+backward of one pre-norm Transformer block.
 *
 *   x[B,T,C] -> ln1 -> linear qkv [B,T,3C] -> split heads -> causal attention
 *   -> merge heads -> linear proj -> + x -> ln2 -> linear fc [B,T,4C] -> gelu
 *   -> linear proj [B,T,C] -> + residual -> mean (a scalar, so backward runs)
 *
 * at B=8, T=256, C=384, 6 heads by default, at 1 and 2 threads. For each
 * thread count it prints:
 *   - the median wall time of one fwd+bwd step over --reps steps (after
 *     --warmup steps);
 *   - the share of that time spent in sgemm. Calls made outside parallel
 *     regions are timed directly; the per-head products of attention run
 *     inside an `omp parallel for`, and their summed per-thread time is
 *     divided by the thread count (see ag_sgemm_wall_seconds in parallel.h);
 *   - the block's matmul flops: counted dense, 3 * (24 N C^2 + 4 B T^2 C)
 *     with N = B*T (forward linears 24 N C^2, q k^T and P v 4 B T^2 C, the
 *     backward twice the forward), and as executed by sgemm (the causal
 *     kernels skip most of the masked upper triangle);
 *   - the reference: every sgemm call of one step (shapes, transposes,
 *     strides, recorded by ag_sgemm_trace) replayed standalone through
 *     cblas_sgemm with OpenBLAS at the same thread count, one call after the
 *     other on warm buffers, alternating with the block's steps. "ratio" =
 *     (executed flops / block time) / (the same flops / replay time) =
 *     replay time / block time, the median over the step/replay pairs: 1.0
 *     would mean the block costs no more than its matrix products alone;
 *   - a probe: one 512^3 sgemm called by thread 0 inside a parallel region,
 *     against the same call outside at 1 and at N threads. With the OpenMP
 *     build of OpenBLAS the call inside runs on one thread.
 *
 *   - with --breakdown, the mean forward and backward time of each op.
 *
 * Usage: bench_block [--threads 1,2] [--reps 10] [--warmup 2] [--B 8] [--T 256]
 *                    [--C 384] [--heads 6] [--breakdown]
 * Timings on a shared machine are noisy; compare medians of several runs.
 */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"
#include "autograd/params.h"

typedef struct config {
    int B, T, C, H;
    int reps, warmup;
    bool breakdown;
    int threads[8];
    int n_threads;
} config;

enum { LN1W, LN1B, WQKV, BQKV, WPROJ, BPROJ, LN2W, LN2B, WFC, BFC, WFC2, BFC2, XIN, NPARAM };

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int init_params(ag_params *p, const config *cf) {
    int C = cf->C;
    ag_params_init(p);
    struct {
        const char *name;
        int ndim, s0, s1, s2;
    } decl[NPARAM] = {
        {"ln1.w", 1, C, 1, 1},      {"ln1.b", 1, C, 1, 1},        {"attn.qkv.w", 2, 3 * C, C, 1},
        {"attn.qkv.b", 1, 3 * C, 1, 1}, {"attn.proj.w", 2, C, C, 1}, {"attn.proj.b", 1, C, 1, 1},
        {"ln2.w", 1, C, 1, 1},      {"ln2.b", 1, C, 1, 1},        {"mlp.fc.w", 2, 4 * C, C, 1},
        {"mlp.fc.b", 1, 4 * C, 1, 1}, {"mlp.proj.w", 2, C, 4 * C, 1}, {"mlp.proj.b", 1, C, 1, 1},
        {"x", 3, cf->B, cf->T, C},
    };
    for (int i = 0; i < NPARAM; i++) {
        int shape[3] = {decl[i].s0, decl[i].s1, decl[i].s2};
        if (ag_params_add(p, decl[i].name, decl[i].ndim, shape, 0) != i) return -1;
    }
    if (ag_params_alloc(p, AG_PARAMS_GRAD) != 0) return -1;
    for (int i = 0; i < NPARAM; i++) {
        ag_tensor *t = ag_param(p, i);
        float a = i == XIN ? 1.0f : 0.035f; /* about N(0, 0.02) in spread */
        ag_fill_uniform(t->data, t->numel, -a, a, 1000 + (uint64_t)i);
    }
    for (size_t j = 0; j < (size_t)C; j++) ag_param(p, LN1W)->data[j] = ag_param(p, LN2W)->data[j] = 1.0f;
    return 0;
}

/* Per-op timing for --breakdown: tick() charges the time since the previous
 * tick to the op whose result it receives (arguments are evaluated first). */
typedef struct op_time {
    const char *op;
    double fwd, bwd;
    int count;
} op_time;

static op_time g_tab[32];
static int g_nt;
static bool g_timing;
static double g_mark;

static op_time *op_slot(const char *op) {
    for (int i = 0; i < g_nt; i++)
        if (!strcmp(g_tab[i].op, op)) return &g_tab[i];
    if (g_nt == (int)(sizeof g_tab / sizeof g_tab[0])) return &g_tab[g_nt - 1];
    g_tab[g_nt] = (op_time){op, 0.0, 0.0, 0};
    return &g_tab[g_nt++];
}

static ag_tensor *tick(const char *op, ag_tensor *t) {
    if (g_timing) {
        double now = ag_now();
        op_slot(op)->fwd += now - g_mark;
        g_mark = now;
    }
    return t;
}

static ag_tensor *block_forward(ag_ctx *c, ag_params *p, int H) {
    g_mark = ag_now();
    ag_tensor *x = ag_param(p, XIN);
    ag_tensor *h = tick("layernorm", ag_layernorm(c, x, ag_param(p, LN1W), ag_param(p, LN1B), 1e-5f)); /* [B,T,C] */
    ag_tensor *qkv = tick("linear", ag_linear(c, h, ag_param(p, WQKV), ag_param(p, BQKV)));   /* [B,T,3C] */
    ag_tensor *q = tick("split_heads", ag_split_heads(c, qkv, H, 0, 3));                      /* [B,H,T,D] */
    ag_tensor *k = tick("split_heads", ag_split_heads(c, qkv, H, 1, 3));
    ag_tensor *v = tick("split_heads", ag_split_heads(c, qkv, H, 2, 3));
    ag_tensor *P = tick("attn_probs", ag_attn_probs(c, q, k));                                /* [B,H,T,T] */
    ag_tensor *a = tick("attn_apply", ag_attn_apply(c, P, v));                                /* [B,H,T,D] */
    ag_tensor *y = tick("merge_heads", ag_merge_heads(c, a));                                 /* [B,T,C] */
    ag_tensor *o = tick("linear", ag_linear(c, y, ag_param(p, WPROJ), ag_param(p, BPROJ)));
    ag_tensor *x2 = tick("add", ag_add(c, x, o));
    ag_tensor *h2 = tick("layernorm", ag_layernorm(c, x2, ag_param(p, LN2W), ag_param(p, LN2B), 1e-5f));
    ag_tensor *f = tick("linear", ag_linear(c, h2, ag_param(p, WFC), ag_param(p, BFC)));      /* [B,T,4C] */
    ag_tensor *g = tick("gelu", ag_gelu(c, f));
    ag_tensor *m = tick("linear", ag_linear(c, g, ag_param(p, WFC2), ag_param(p, BFC2)));     /* [B,T,C] */
    ag_tensor *x3 = tick("add", ag_add(c, x2, m));
    return tick("mean", ag_mean(c, x3));
}

/* Runs `reps` steps with the backward done node by node (as ag_backward
 * does it) and prints the mean time of each op, forward and backward. */
static void breakdown(ag_ctx *c, ag_params *p, int H, int reps) {
    g_nt = 0;
    double total = 0.0;
    for (int r = 0; r < reps; r++) {
        double t0 = ag_now();
        ag_ctx_reset(c);
        ag_params_zero_grad(p);
        g_timing = true;
        ag_tensor *loss = block_forward(c, p, H);
        g_timing = false;
        if (!loss || !loss->grad) return;
        for (size_t i = 0; i < c->n_nodes; i++)
            memset(c->tape[i].out->grad, 0, c->tape[i].out->numel * sizeof(float));
        loss->grad[0] = 1.0f;
        for (size_t i = c->n_nodes; i-- > 0;) {
            double b0 = ag_now();
            c->tape[i].backward(&c->tape[i]);
            op_slot(c->tape[i].op)->bwd += ag_now() - b0;
        }
        total += ag_now() - t0;
    }
    for (size_t i = 0; i < c->n_nodes; i++) op_slot(c->tape[i].op)->count++;
    printf("  per op (mean of %d steps, %.2f ms/step):\n", reps, 1e3 * total / reps);
    for (int i = 0; i < g_nt; i++)
        printf("    %-12s x%-2d fwd %8.2f ms  bwd %8.2f ms\n", g_tab[i].op, g_tab[i].count,
               1e3 * g_tab[i].fwd / reps, 1e3 * g_tab[i].bwd / reps);
}

/* One fwd+bwd step; returns its wall time, or a negative value on error. */
static double step(ag_ctx *c, ag_params *p, int H) {
    double t0 = ag_now();
    if (ag_ctx_reset(c) != 0) return -1.0;
    ag_params_zero_grad(p);
    ag_tensor *loss = block_forward(c, p, H);
    if (!loss || ag_backward(c, loss) != 0) return -1.0;
    return ag_now() - t0;
}

/* Floats each operand of call s spans. */
static size_t span_a(const ag_sgemm_call *s) { return (size_t)(s->ta ? s->K : s->M) * s->lda; }
static size_t span_b(const ag_sgemm_call *s) { return (size_t)(s->tb ? s->N : s->K) * s->ldb; }
static size_t span_c(const ag_sgemm_call *s) { return (size_t)s->M * s->ldc; }

static void replay(const ag_sgemm_call *calls, size_t n, const float *A, const float *B, float *C) {
    for (size_t i = 0; i < n; i++) {
        const ag_sgemm_call *s = &calls[i];
        cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans,
                    s->M, s->N, s->K, s->alpha, A, s->lda, B, s->ldb, s->beta, C, s->ldc);
    }
}

/* Operand buffers large enough for every call of a trace. */
typedef struct replay_buf {
    float *A, *B, *C;
} replay_buf;

static int replay_buf_init(replay_buf *rb, const ag_sgemm_call *calls, size_t n) {
    size_t na = 1, nb = 1, nc = 1;
    for (size_t i = 0; i < n; i++) {
        na = span_a(&calls[i]) > na ? span_a(&calls[i]) : na;
        nb = span_b(&calls[i]) > nb ? span_b(&calls[i]) : nb;
        nc = span_c(&calls[i]) > nc ? span_c(&calls[i]) : nc;
    }
    rb->A = malloc(na * sizeof(float));
    rb->B = malloc(nb * sizeof(float));
    rb->C = calloc(nc, sizeof(float));
    if (!rb->A || !rb->B || !rb->C) return -1;
    ag_fill_uniform(rb->A, na, -1.0f, 1.0f, 1);
    ag_fill_uniform(rb->B, nb, -1.0f, 1.0f, 2);
    return 0;
}

static void replay_buf_free(replay_buf *rb) {
    free(rb->A);
    free(rb->B);
    free(rb->C);
}

/* GFLOP/s of an n^3 sgemm: outside any region at `threads`, or called by
 * thread 0 of a parallel region of `threads` threads (inside = true). */
static double probe_rate(int n, int threads, bool inside, const float *A, const float *B, float *C) {
    ag_set_threads(threads);
    int reps = 5;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double dt = 0.0;
        if (inside) {
#pragma omp parallel num_threads(threads)
            if (omp_get_thread_num() == 0) {
                double t0 = ag_now();
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
                dt = ag_now() - t0;
            }
        } else {
            double t0 = ag_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
            dt = ag_now() - t0;
        }
        best = dt < best ? dt : best;
    }
    return 2.0 * n * n * (double)n / best * 1e-9;
}



static int run(const config *cf, int threads, ag_params *p, ag_ctx *c) {
    ag_set_threads(threads);
    int H = cf->H;
    double N = (double)cf->B * cf->T, C = cf->C;
    double dense = 3.0 * (24.0 * N * C * C + 4.0 * cf->B * (double)cf->T * cf->T * C);

    /* warmup; the first step also records every sgemm call of a step */
    size_t cap = 1 << 16;
    ag_sgemm_call *calls = malloc(cap * sizeof *calls);
    size_t nr = (size_t)cf->reps;
    double *times = malloc(nr * sizeof(double)), *fracs = malloc(nr * sizeof(double));
    double *rtimes = malloc(nr * sizeof(double)), *ratios = malloc(nr * sizeof(double));
    if (!calls || !times || !fracs || !rtimes || !ratios) {
        fprintf(stderr, "bench_block: out of memory\n");
        return -1;
    }
    ag_sgemm_profile(true);
    ag_sgemm_trace(calls, cap);
    ag_sgemm_stats_reset();
    if (step(c, p, H) < 0) {
        fprintf(stderr, "bench_block: the block failed: %s\n", ag_error(c) ? ag_error(c) : "no gradient");
        return -1;
    }
    ag_sgemm_stats one = ag_sgemm_stats_get();
    size_t ncalls = ag_sgemm_trace_count();
    ag_sgemm_trace(NULL, 0);
    if (ncalls > cap) ncalls = cap;
    for (int w = 1; w < cf->warmup; w++) step(c, p, H);

    /* Block steps and standalone replays of the same sgemm calls alternate,
     * so that both see the same load on a shared machine; the ratio is the
     * median of the per-pair ratios. */
    replay_buf rb;
    if (replay_buf_init(&rb, calls, ncalls) != 0) {
        fprintf(stderr, "bench_block: out of memory for the replay buffers\n");
        return -1;
    }
    replay(calls, ncalls, rb.A, rb.B, rb.C); /* warm up */
    for (int r = 0; r < cf->reps; r++) {
        ag_sgemm_stats_reset();
        times[r] = step(c, p, H);
        ag_sgemm_stats st = ag_sgemm_stats_get();
        fracs[r] = ag_sgemm_wall_seconds(&st, threads) / times[r];
        double t0 = ag_now();
        replay(calls, ncalls, rb.A, rb.B, rb.C);
        rtimes[r] = ag_now() - t0;
        ratios[r] = rtimes[r] / times[r];
    }
    ag_sgemm_profile(false);
    replay_buf_free(&rb);
    double t = median(times, cf->reps), frac = median(fracs, cf->reps);
    double tref = median(rtimes, cf->reps), ratio = median(ratios, cf->reps);

    printf("threads %d\n", threads);
    printf("  fwd+bwd median          %9.2f ms  (%d reps after %d warmup)\n", 1e3 * t, cf->reps, cf->warmup);
    printf("  time in sgemm           %9.1f %%   (%llu calls/step, %llu inside parallel regions)\n",
           100.0 * frac, (unsigned long long)one.calls, (unsigned long long)one.inner_calls);
    printf("  matmul flops/step        %8.3f GFLOP dense count, %.3f GFLOP executed by sgemm\n",
           dense * 1e-9, one.flops * 1e-9);
    printf("  block rate              %9.1f GFLOP/s executed (%.1f GFLOP/s dense-equivalent)\n",
           one.flops / t * 1e-9, dense / t * 1e-9);
    printf("  cblas_sgemm same calls  %9.1f GFLOP/s (replayed standalone: %.2f ms)\n",
           one.flops / tref * 1e-9, 1e3 * tref);
    printf("  ratio block/cblas        %8.2f  (median over pairs of replay time / block time)\n", ratio);
    printf("  tokens/s                %9.0f\n", N / t);
    if (cf->breakdown) breakdown(c, p, H, cf->reps);
    free(calls);
    free(times);
    free(fracs);
    free(rtimes);
    free(ratios);
    return 0;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int usage(const char *bad) {
    if (bad) fprintf(stderr, "bench_block: bad option or value: %s\n", bad);
    fprintf(stderr, "usage: bench_block [--threads 1,2] [--reps 10] [--warmup 2] [--B 8] [--T 256] "
                    "[--C 384] [--heads 6] [--breakdown]\n");
    return 2;
}

int main(int argc, char **argv) {
    config cf = {.B = 8, .T = 256, .C = 384, .H = 6, .reps = 10, .warmup = 2,
                 .threads = {1, 2}, .n_threads = 2};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--help") || !strcmp(k, "-h")) return usage(NULL), 0;
        if (!strcmp(k, "--breakdown")) {
            cf.breakdown = true;
            continue;
        }
        if (!v) return usage(k);
        i++;
        int rc = 0;
        if (!strcmp(k, "--threads")) {
            cf.n_threads = 0;
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *tok = strtok(buf, ","); tok && rc == 0; tok = strtok(NULL, ",")) {
                if (cf.n_threads == 8) rc = -1;
                else rc = parse_int(tok, 1, 256, &cf.threads[cf.n_threads++]);
            }
            if (cf.n_threads == 0) rc = -1;
        } else if (!strcmp(k, "--reps")) rc = parse_int(v, 1, 1000, &cf.reps);
        else if (!strcmp(k, "--warmup")) rc = parse_int(v, 1, 1000, &cf.warmup);
        else if (!strcmp(k, "--B")) rc = parse_int(v, 1, 4096, &cf.B);
        else if (!strcmp(k, "--T")) rc = parse_int(v, 1, 8192, &cf.T);
        else if (!strcmp(k, "--C")) rc = parse_int(v, 1, 16384, &cf.C);
        else if (!strcmp(k, "--heads")) rc = parse_int(v, 1, 1024, &cf.H);
        else rc = -1;
        if (rc) return usage(k);
    }
    if (cf.C % cf.H != 0) {
        fprintf(stderr, "bench_block: --C %d is not a multiple of --heads %d\n", cf.C, cf.H);
        return 2;
    }
    const char *wait = getenv("OMP_WAIT_POLICY");
    int par = openblas_get_parallel();
    printf("bench_block: one pre-norm Transformer block, fwd+bwd, B=%d T=%d C=%d heads=%d\n", cf.B, cf.T,
           cf.C, cf.H);
    printf("BLAS: %s; threading %s; OMP_WAIT_POLICY=%s\n", ag_blas_info(),
           par == 2 ? "OpenMP" : par == 1 ? "pthreads" : "sequential", wait ? wait : "(unset)");

    ag_params p;
    ag_ctx *c = ag_ctx_new();
    if (!c || init_params(&p, &cf) != 0) {
        fprintf(stderr, "bench_block: out of memory for the parameters\n");
        return 1;
    }
    int status = 0;
    for (int i = 0; i < cf.n_threads && status == 0; i++) status = run(&cf, cf.threads[i], &p, c);

    /* Does a call from inside a parallel region use more than one thread? */
    int n = 512;
    float *A = malloc((size_t)n * n * sizeof(float)), *B = malloc((size_t)n * n * sizeof(float));
    float *Cm = malloc((size_t)n * n * sizeof(float));
    if (status == 0 && A && B && Cm) {
        ag_fill_uniform(A, (size_t)n * n, -1.0f, 1.0f, 5);
        ag_fill_uniform(B, (size_t)n * n, -1.0f, 1.0f, 6);
        for (int i = 0; i < cf.n_threads; i++) {
            int th = cf.threads[i];
            if (th < 2) continue;
            double r1 = probe_rate(n, 1, false, A, B, Cm), rn = probe_rate(n, th, false, A, B, Cm);
            double rin = probe_rate(n, th, true, A, B, Cm);
            printf("probe: sgemm %d^3 called inside a parallel region of %d threads: %.1f GFLOP/s "
                   "(outside: %.1f at 1 thread, %.1f at %d threads)\n", n, th, rin, r1, rn, th);
        }
    }
    free(A);
    free(B);
    free(Cm);
    ag_params_free(&p);
    ag_ctx_free(c);
    return status ? 1 : 0;
}
