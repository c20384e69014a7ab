/* cmd_generate.c - `pare generate FILE`: text from a model file with the
 * inference runtime (KV cache, streaming), and the model-file branches of
 * `pare sample` and `pare eval`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/textgen.h"
#include "infer/model_vocab.h"
#include "infer/runtime.h"
#include "train/data.h"
#include "cli/runlog.h"

bool pare_is_model_file(const char *path) { return inf_is_model_file(path); }

int pare_model_file_open(const char *path, inf_model *m, tr_vocab *v, char *err, size_t errlen) {
    if (inf_model_open(m, path, err, errlen) != 0 || inf_model_vocab(m, v, err, errlen) != 0) {
        inf_model_close(m);
        return -1;
    }
    return 0;
}

typedef struct stream {
    const tr_vocab *v;
} stream;

static void put_token(void *user, int id) {
    const stream *s = user;
    char c[2];
    tr_vocab_decode(s->v, &id, 1, c);
    fputc(c[0], stdout);
    fflush(stdout);
}

/* Generation shared by `generate` and `sample FILE`. */
static int run_generate(const char *cmd, const char *path, const tr_sample_opts *g, int limbs, bool json,
                        bool stream_out) {
    char err[1024];
    inf_model m;
    tr_vocab v;
    if (pare_model_file_open(path, &m, &v, err, sizeof err) != 0) {
        pare_report_error("pare %s: %s\n", cmd, err);
        return PARE_EXIT_ERROR;
    }
    pare_gen_text gt;
    inf_session s;
    memset(&s, 0, sizeof s);
    int status = pare_gen_begin(&gt, cmd, &v, g->prompt, g->tokens);
    if (status != PARE_EXIT_OK) goto done;
    status = PARE_EXIT_ERROR;
    if (inf_session_init(&s, &m, inf_isa_best(), limbs, err, sizeof err) != 0) {
        pare_report_error("pare %s: %s\n", cmd, err);
        goto done;
    }
    ag_rng rng;
    ag_rng_seed(&rng, g->seed);
    stream st = {&v};
    bool live = stream_out && !json;
    if (live && g->prompt[0]) fputs(g->prompt, stdout);
    double t0 = ag_now();
    int len = inf_generate(&s, gt.ids, gt.n_prompt, g->tokens, g->temperature, g->top_k, -1, &rng, gt.ids,
                           live ? put_token : NULL, &st, err, sizeof err);
    double secs = ag_now() - t0;
    if (len < 0) {
        fprintf(stderr, "\npare %s: %s\n", cmd, err);
        goto done;
    }
    pare_gen_print(&gt, cmd, &v, g->prompt, len, secs, json, live);
    status = PARE_EXIT_OK;
done:
    inf_session_free(&s);
    inf_model_close(&m);
    pare_gen_free(&gt);
    return status;
}

int pare_sample_model_file(const char *path, const tr_sample_opts *so, bool json) {
    return run_generate("sample", path, so, 3, json, false);
}

int cmd_generate(int argc, char **argv) {
    static const char *usage = "pare generate MODEL_FILE [--key value ...]";
    tr_sample_opts g;
    int limbs, threads;
    bool json;
    pare_keys keys = {.n = 0};
    tr_sample_keys(&keys, &g);
    pare_opt own[] = {
        PARE_OPT_INT("limbs", &limbs, "3", 1, 3,
                     "int8 limbs per activation for int8/int4 weights (3 = float-exact, 1 = fastest)"),
    };
    pare_keys_add(&keys, own, 1);
    pare_keys_threads(&keys, &threads);
    pare_keys_json(&keys, &json, "print {\"prompt\", \"text\", \"tokens\", \"seconds\"} as one JSON object");
    int pos[1], n_pos = 0;
    int rc = pare_keys_cli("generate", usage, &keys, argc, argv, pos, 1, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos != 1) {
        pare_report_error("pare generate: expected one model file (made by pare export)\nsee: pare generate --help\n");
        pare_opts_free(keys.row, keys.n);
        return PARE_EXIT_USAGE;
    }
    ag_set_threads(pare_threads(threads));
    rc = run_generate("generate", argv[pos[0]], &g, limbs, json, true);
    pare_opts_free(keys.row, keys.n);
    return rc;
}

int pare_eval_model_file(const char *path, const char *data, int data_seed, bool data_seed_set, int batches,
                         int batch, bool json, const char *db, const char *name, const char *config) {
    char err[1024], buf[1024], seedbuf[32];
    inf_model m;
    tr_vocab v;
    if (pare_model_file_open(path, &m, &v, err, sizeof err) != 0) {
        pare_report_error("pare eval: %s\n", err);
        return PARE_EXIT_ERROR;
    }
    int status = PARE_EXIT_ERROR;
    tr_dataset *d = NULL;
    tr_batch b = {0};
    inf_session s;
    memset(&s, 0, sizeof s);
    float *logits = NULL;
    if (!data[0]) {
        data = inf_file_meta(&m.file, "data", buf, sizeof buf);
        if (!data || !data[0]) {
            pare_report_error("pare eval: %s does not record its data; give --data\n", path);
            status = PARE_EXIT_USAGE;
            goto done;
        }
        if (!data_seed_set && inf_file_meta(&m.file, "data-seed", seedbuf, sizeof seedbuf)) data_seed = atoi(seedbuf);
    }
    tr_data_opts dopt = tr_data_opts_default();
    dopt.vocab_fixed = &v;
    dopt.ctx = m.ctx;
    dopt.seed = (uint64_t)data_seed;
    if (tr_dataset_open(&d, data, &dopt, err, sizeof err) != 0 ||
        tr_vocab_compare(&v, "model", &d->vocab, "data", err, sizeof err) != 0 ||
        tr_batch_init(&b, batch, d->ctx, err, sizeof err) != 0 ||
        inf_session_init(&s, &m, inf_isa_best(), 3, err, sizeof err) != 0) {
        pare_report_error("pare eval: %s\n", err);
        goto done;
    }
    int T = d->ctx, V = m.V;
    logits = malloc((size_t)batch * T * V * sizeof(float));
    if (!logits) {
        pare_report_error("pare eval: out of memory\n");
        goto done;
    }
    double sum = 0, t0 = ag_now();
    long tokens = 0, correct = 0, total = 0;
    for (int i = 0; i < batches; i++) {
        if (tr_data_val_batch(d, i, &b, err, sizeof err) != 0) {
            pare_report_error("pare eval: %s\n", err);
            goto done;
        }
        for (int r = 0; r < batch; r++) {
            inf_session_reset(&s);
            float *lg = logits + (size_t)r * T * V; /* [T, V] */
            if (inf_forward(&s, b.x + (size_t)r * T, T, lg, true, err, sizeof err) != 0) {
                pare_report_error("pare eval: %s\n", err);
                goto done;
            }
            for (int t = 0; t < T; t++) {
                int y = b.y[(size_t)r * T + t];
                if (y == TR_IGNORE) continue;
                const float *row = lg + (size_t)t * V;
                float mx = row[0];
                for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
                double z = 0;
                for (int j = 0; j < V; j++) z += exp((double)row[j] - mx);
                sum += log(z) + mx - row[y];
                tokens++;
            }
        }
        tr_batch_accuracy(&b, logits, V, &correct, &total);
    }
    double secs = ag_now() - t0, loss = tokens ? sum / (double)tokens : NAN;
    double acc = d->has_accuracy && total ? (double)correct / (double)total : NAN;
    if (!isfinite(loss)) { /* a model that computes NaN or Inf is broken, not evaluated */
        pare_report_error("pare eval: %s on %s: the loss is %g: the model computes a non-finite value (exit status 3)\n",
                          path, data, loss);
        status = PARE_EXIT_DIVERGED;
        goto done;
    }
    if (json) {
        printf("{\"command\":\"eval\",\"file\":");
        pare_json_string(stdout, path);
        printf(",\"data\":");
        pare_json_string(stdout, data);
        printf(",\"val_loss\":");
        pare_json_number(stdout, loss);
        printf(",\"floor\":");
        pare_json_number(stdout, d->floor);
        printf(",\"accuracy\":");
        pare_json_number(stdout, acc);
        printf(",\"tokens\":%ld,\"batches\":%d,\"seconds\":", tokens, batches);
        pare_json_number(stdout, secs);
        printf("}\n");
    } else {
        printf("%s on %s: loss %.4f", path, data, loss);
        if (!isnan(d->floor)) printf(" (floor %.4f, gap %.4f)", d->floor, loss - d->floor);
        if (!isnan(acc)) printf(", exact-match accuracy %.3f (%ld/%ld)", acc, correct, total);
        printf(" over %ld scored tokens in %d batches (model file, inference runtime)\n", tokens, batches);
    }
    {   /* the run log: this evaluation of exactly these model bytes (parent: the export that wrote them) */
        static const char *const names[3] = {"val_loss", "accuracy", "tokens"};
        double vals[3] = {loss, acc, (double)tokens};
        pare_runlog_once(db, "eval", name, config, (uint64_t)data_seed, path, d, names, vals, 3, EX_FINISHED);
    }
    status = PARE_EXIT_OK;
done:
    free(logits);
    inf_session_free(&s);
    tr_batch_free(&b);
    tr_dataset_free(d);
    inf_model_close(&m);
    return status;
}
