/* cmd_bench.c - `pare bench FILE`: speed and size of a model file with the
 * inference runtime: batch-1 decode tokens/s (KV cache), prompt tokens/s
 * (batched forward), peak RSS, bytes on disk. Each figure is the best of
 * --repeat runs (the least disturbed one on a shared machine). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "autograd/parallel.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "infer/runtime.h"
#include "train/sampler.h"
#include "cli/runlog.h"

/* Decodes n tokens one at a time (greedy; when the context is full the cache
 * restarts from the last token, so any n can be timed). Returns seconds spent
 * in the decode steps, or -1. */
static double time_decode(inf_session *s, int n, float *logits, char *err, size_t errlen) {
    const inf_model *m = s->m;
    int id = 0;
    double secs = 0;
    inf_session_reset(s);
    for (int i = 0; i < n; i++) {
        if (s->pos == m->ctx) inf_session_reset(s);
        double t0 = ag_now();
        if (inf_forward(s, &id, 1, logits, false, err, errlen) != 0) return -1;
        secs += ag_now() - t0;
        id = tr_sample_pick(logits, m->V, 0.0, 0, NULL, s->probs);
    }
    return secs;
}

int cmd_bench(int argc, char **argv) {
    static const char *usage = "pare bench MODEL_FILE [--key value ...]";
    int tokens, prompt_tokens, threads, limbs, repeat;
    bool json;
    const char *db, *run_name;
    pare_opt opts[] = {
        PARE_OPT_INT("tokens", &tokens, "128", 1, 1000000, "tokens to decode one at a time (batch 1)"),
        PARE_OPT_INT("prompt-tokens", &prompt_tokens, "0", 0, 1 << 20,
                     "tokens of the timed prompt (batched forward; 0 = the model's context)"),
        PARE_OPT_INT("threads", &threads, "1", 0, 1024, "threads (0 = all cores)"),
        PARE_OPT_INT("limbs", &limbs, "3", 1, 3,
                     "int8 limbs per activation for int8/int4 weights (3 = float-exact, 1 = fastest)"),
        PARE_OPT_INT("repeat", &repeat, "3", 1, 1000, "runs of each measurement; the best is reported"),
        PARE_OPT_STRING("db", &db, "", "run log database (\"\" = $PARE_DB, else ./pare.db; none = do not record)"),
        PARE_OPT_STRING("name", &run_name, "", "a label for this run in the run log"),
        PARE_OPT_FLAG("json", &json, "print the result as one JSON object"),
    };
    int n = (int)(sizeof opts / sizeof opts[0]), pos[1], n_pos = 0;
    int rc = pare_opts_cli("bench", usage, opts, n, argc, argv, pos, 1, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos != 1) {
        pare_report_error("pare bench: expected one model file (made by pare export)\nsee: pare bench --help\n");
        return PARE_EXIT_USAGE;
    }
    const char *path = argv[pos[0]];
    int nthreads = pare_threads(threads);
    ag_set_threads(nthreads);
    char err[1024];
    inf_model m;
    if (inf_model_open(&m, path, err, sizeof err) != 0) {
        pare_report_error("pare bench: %s\n", err);
        inf_model_close(&m);
        return PARE_EXIT_ERROR;
    }
    int status = PARE_EXIT_ERROR;
    inf_session s;
    float *logits = NULL;
    int *ids = NULL;
    if (inf_session_init(&s, &m, inf_isa_best(), limbs, err, sizeof err) != 0) {
        pare_report_error("pare bench: %s\n", err);
        inf_model_close(&m);
        return PARE_EXIT_ERROR;
    }
    int T = prompt_tokens > 0 && prompt_tokens < m.ctx ? prompt_tokens : m.ctx;
    logits = malloc((size_t)m.V * sizeof(float));
    ids = malloc((size_t)T * sizeof(int));
    if (!logits || !ids) {
        pare_report_error("pare bench: out of memory\n");
        goto done;
    }
    for (int i = 0; i < T; i++) ids[i] = (i * 31 + 7) % m.V;
    if (time_decode(&s, tokens < 8 ? tokens : 8, logits, err, sizeof err) < 0) { /* warm-up */
        pare_report_error("pare bench: %s\n", err);
        goto done;
    }
    double best_dec = 1e300, best_pre = 1e300;
    for (int r = 0; r < repeat; r++) {
        double d = time_decode(&s, tokens, logits, err, sizeof err);
        inf_session_reset(&s);
        double t0 = ag_now();
        int prc = inf_forward(&s, ids, T, logits, false, err, sizeof err);
        double p = ag_now() - t0;
        if (d < 0 || prc != 0) {
            pare_report_error("pare bench: %s\n", err);
            goto done;
        }
        if (d < best_dec) best_dec = d;
        if (p < best_pre) best_pre = p;
    }
    struct stat st;
    long long bytes = stat(path, &st) == 0 ? (long long)st.st_size : -1;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long long rss = (long long)ru.ru_maxrss * 1024;
    const char *fmt = inf_model_storage(&m);
    double dec_tps = tokens / best_dec, pre_tps = T / best_pre;
    if (json) {
        printf("{\"command\":\"bench\",\"file\":");
        pare_json_string(stdout, path);
        printf(",\"format\":\"%s\",\"isa\":\"%s\",\"threads\":%d,\"limbs\":%d,\"decode_tokens\":%d,"
               "\"decode_tokens_per_s\":",
               fmt, inf_isa_name(s.k.isa), nthreads, s.k.limbs, tokens);
        pare_json_number(stdout, dec_tps);
        printf(",\"prompt_tokens\":%d,\"prompt_tokens_per_s\":", T);
        pare_json_number(stdout, pre_tps);
        printf(",\"bytes\":%lld,\"peak_rss_bytes\":%lld}\n", bytes, rss);
    } else {
        printf("%s: %s weights, %s kernels, %d thread%s, %d limb%s\n", path, fmt, inf_isa_name(s.k.isa), nthreads,
               nthreads == 1 ? "" : "s", s.k.limbs, s.k.limbs == 1 ? "" : "s");
        printf("  decode (batch 1, KV cache): %d tokens, %.1f tokens/s (%.3f ms/token)\n", tokens, dec_tps,
               1e3 * best_dec / tokens);
        printf("  prompt (batched forward):   %d tokens, %.1f tokens/s\n", T, pre_tps);
        printf("  bytes on disk: %lld, peak RSS: %.1f MiB\n", bytes, rss / 1048576.0);
    }
    {   /* the run log: figures of exactly these model bytes (parent: the export that wrote them) */
        char extra[1400];
        snprintf(extra, sizeof extra, "model=%.1000s\nformat=%s\nisa=%s\nthreads-used=%d\nlimbs-used=%d\n", path, fmt,
                 inf_isa_name(s.k.isa), nthreads, s.k.limbs);
        char *cfg = pare_runlog_config(opts, n, extra);
        static const char *const names[6] = {"decode_tokens_per_s", "prompt_tokens_per_s", "ms_per_token",
                                             "peak_rss_bytes", "bytes", "prompt_tokens"};
        double vals[6] = {dec_tps, pre_tps, 1e3 * best_dec / tokens, (double)rss, (double)bytes, (double)T};
        pare_runlog_once(db, "bench", run_name, cfg, 0, path, NULL, names, vals, 6, EX_FINISHED);
        free(cfg);
    }
    status = PARE_EXIT_OK;
done:
    free(logits);
    free(ids);
    inf_session_free(&s);
    inf_model_close(&m);
    return status;
}
