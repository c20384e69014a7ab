/* cmd_train.c - `pare train`: build or load a GPT, train it on a text file or
 * a built-in dataset, print progress, a summary and a sample; checkpoint,
 * resume, and stop cleanly on Ctrl-C. Also the helpers `pare sample` and
 * `pare eval` share (JSON output, opening a model). */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/parallel.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "train/trainer.h"
#include "cli/runlog.h"

/* ------------------------------------------------------------ shared helpers */

void pare_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p < 0x20 || *p >= 0x7f) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

void pare_json_number(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.9g", v);
    else fputs("null", f);
}

int pare_model_open(const char *path, tr_gpt *m, tr_vocab *vocab, char **conf, char *err, size_t errlen) {
    /* a pare checkpoint (magic PARECKPT) */
    return tr_model_load(path, m, 0, vocab, conf, err, errlen);
}

const char *pare_conf_get(const char *conf, const char *key, char *buf, size_t n) {
    size_t k = strlen(key);
    for (const char *p = conf; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > k && strncmp(p, key, k) == 0 && p[k] == '=') {
            size_t v = len - k - 1;
            if (v >= n) v = n - 1;
            memcpy(buf, p + k + 1, v);
            buf[v] = '\0';
            return buf;
        }
        p = nl ? nl + 1 : p + len;
    }
    return NULL;
}

int pare_threads(int requested) {
    if (requested > 0) return requested;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---------------------------------------------------------------- options */

typedef struct train_opts {
    const char *data, *vocab, *init, *resume, *out;
    const char *db, *run_name; /* the run log */
    int data_seed, n_layer, n_head, n_embd, mlp_ratio, ctx;
    bool bias, tied, json;
    int batch, steps, warmup, seed, eval_every, eval_batches, ckpt_every, threads, log_every, sample_tokens;
    double lr, min_lr, weight_decay, beta1, beta2, eps, grad_clip, temperature;
} train_opts;

#define FLAG_TRUE(k, d, h) {k, PARE_OPT_T_FLAG, d, "true", 0, 0, NULL, h, false}

static int make_opts(train_opts *o, pare_opt *t) {
    pare_opt opts[] = {
        PARE_OPT_STRING("data", &o->data, "builtin:markov", "text file, or builtin:NAME (" TR_BUILTIN_NAMES ")"),
        PARE_OPT_CHOICE("vocab", &o->vocab, "byte", "byte|char", "tokens: bytes (V=256) or the corpus's characters"),
        PARE_OPT_INT("data-seed", &o->data_seed, "1234", 0, 2147483647, "seed of a built-in dataset's generator"),
        PARE_OPT_INT("n-layer", &o->n_layer, "4", 1, 4096, "transformer blocks"),
        PARE_OPT_INT("n-head", &o->n_head, "4", 1, 1 << 20, "attention heads (must divide n-embd)"),
        PARE_OPT_INT("n-embd", &o->n_embd, "128", 1, 1 << 20, "model width"),
        PARE_OPT_INT("mlp-ratio", &o->mlp_ratio, "4", 1, 64, "MLP hidden units per unit of width"),
        PARE_OPT_INT("ctx", &o->ctx, "0", 0, 1 << 20, "context length; 0 = the built-in set's own (markov 64, tasks 17) or 64"),
        FLAG_TRUE("bias", &o->bias, "biases in linears and layer norms"),
        PARE_OPT_FLAG("tied", &o->tied, "LM head shares the token embedding"),
        PARE_OPT_INT("batch", &o->batch, "16", 1, 1 << 20, "sequences per step"),
        PARE_OPT_INT("steps", &o->steps, "1000", 1, 2000000000, "optimizer steps"),
        PARE_OPT_FLOAT("lr", &o->lr, "1e-3", 1e-12, 10, "peak learning rate"),
        PARE_OPT_FLOAT("min-lr", &o->min_lr, "1e-4", 0, 10, "learning rate at the end of the cosine decay"),
        PARE_OPT_INT("warmup", &o->warmup, "100", 0, 2000000000, "linear warmup steps"),
        PARE_OPT_FLOAT("weight-decay", &o->weight_decay, "0.1", 0, 100, "AdamW decoupled weight decay (matrices and embeddings)"),
        PARE_OPT_FLOAT("beta1", &o->beta1, "0.9", 0, 0.999999, "AdamW first-moment decay"),
        PARE_OPT_FLOAT("beta2", &o->beta2, "0.99", 0, 0.999999999, "AdamW second-moment decay"),
        PARE_OPT_FLOAT("eps", &o->eps, "1e-8", 1e-30, 1, "AdamW denominator guard"),
        PARE_OPT_FLOAT("grad-clip", &o->grad_clip, "1.0", 0, 1e30, "clip the global gradient norm to this (0 = off)"),
        PARE_OPT_INT("seed", &o->seed, "1", 0, 2147483647, "seed of the initialisation and the batch order"),
        PARE_OPT_INT("eval-every", &o->eval_every, "100", 0, 2000000000, "evaluate every N steps (0 = only at the end)"),
        PARE_OPT_INT("eval-batches", &o->eval_batches, "20", 1, 1000000, "fixed validation batches per evaluation"),
        PARE_OPT_STRING("init", &o->init, "", "start from this checkpoint's weights (new optimizer, step 0)"),
        PARE_OPT_STRING("resume", &o->resume, "", "continue this checkpoint's run exactly (its config; --steps may extend it)"),
        PARE_OPT_STRING("out", &o->out, "pare.ckpt", "checkpoint path (\"\" = none)"),
        PARE_OPT_INT("ckpt-every", &o->ckpt_every, "0", 0, 2000000000, "also checkpoint every N steps (0 = only at the end)"),
        PARE_OPT_INT("threads", &o->threads, "0", 0, 1024, "threads (0 = all cores)"),
        PARE_OPT_INT("log-every", &o->log_every, "0", 0, 2000000000, "progress line every N steps (0 = about 20 lines per run)"),
        PARE_OPT_INT("sample-tokens", &o->sample_tokens, "200", 0, 1000000, "length of the final sample (0 = none)"),
        PARE_OPT_FLOAT("temperature", &o->temperature, "0.8", 0, 100, "temperature of the final sample (0 = greedy)"),
        PARE_OPT_STRING("db", &o->db, "", "run log database (\"\" = $PARE_DB, else ./pare.db; none = do not record)"),
        PARE_OPT_STRING("name", &o->run_name, "", "a name for this run in the run log"),
        PARE_OPT_FLAG("json", &o->json, "print the result as one JSON object on stdout (progress goes to stderr)"),
    };
    int n = (int)(sizeof opts / sizeof opts[0]);
    memcpy(t, opts, sizeof opts);
    return n;
}

#define MAX_OPTS 48

/* ------------------------------------------------------- progress printer */

typedef struct printer {
    FILE *f;
    int every;
    const tr_dataset *d;
} printer;

static void fmt_time(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

static void print_progress(tr_policy *p, tr_trainer *t, const tr_progress *pr) {
    (void)t;
    printer *pp = p->user;
    bool evaluated = !isnan(pr->val_loss);
    if (!evaluated && pr->step % pp->every != 0 && pr->step != 1) return;
    char left[32], val[48] = "", acc[32] = "";
    fmt_time(left, sizeof left, pr->eta);
    if (evaluated) snprintf(val, sizeof val, " | val %.4f", pr->val_loss);
    if (evaluated && !isnan(pr->accuracy)) snprintf(acc, sizeof acc, " acc %.3f", pr->accuracy);
    fprintf(pp->f, "step %6ld/%ld | loss %.4f%s%s | lr %.2e | %.0f tok/s | left %s\n", pr->step, pr->steps,
            pr->loss, val, acc, pr->lr, pr->tokens_per_s, left);
    fflush(pp->f);
}

/* ------------------------------------------------------------------ signal */

static volatile sig_atomic_t g_stop = 0;

static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C stops at once */
}

/* --------------------------------------------------------------- the sample */

/* Generates a sample for the summary: for tasks, the answer to validation
 * example 0 (greedy, until the terminator); for text, n tokens after the
 * validation split's first characters. Writes the text into out (n bytes). */
static int final_sample(tr_trainer *t, int n_tokens, double temperature, uint64_t seed, char *prompt,
                        char *text, size_t n, char *expected) {
    char err[256];
    if (tr_dataset_prompt(t->data, 0, prompt, expected, 256) != 0) return -1;
    size_t np = strlen(prompt);
    int is_task = t->data->kind == TR_DATA_TASK;
    int n_new = is_task ? (int)strlen(expected) : n_tokens;
    if (np == 0 || (size_t)n_new + np + 1 > n) return -1;
    int *ids = malloc((np + (size_t)n_new) * sizeof *ids);
    if (!ids) return -1;
    int rc = -1;
    if (tr_vocab_encode(&t->data->vocab, (const uint8_t *)prompt, np, ids, err, sizeof err) == 0) {
        ag_rng rng;
        ag_rng_seed(&rng, seed);
        int stop = is_task && t->data->vocab.id['.'] >= 0 ? t->data->vocab.id['.'] : -1;
        int len = tr_generate(t->ctx, t->model, ids, (int)np, n_new, is_task ? 0.0 : temperature, 0, stop, &rng,
                              ids, err, sizeof err);
        if (len >= 0) {
            tr_vocab_decode(&t->data->vocab, ids + np, (size_t)len - np, text);
            rc = 0;
        }
    }
    free(ids);
    return rc;
}

/* ---------------------------------------------------------------- command */

/* Builds argv for a resumed run: the checkpoint's configuration lines as
 * --key=value (except how to start), then the user's own arguments, which
 * win because later keys override earlier ones. */
static char **resume_argv(const char *conf, int argc, char **argv, int *out_argc) {
    int lines = 0;
    for (const char *p = conf; *p; p++) lines += *p == '\n';
    char **a = calloc((size_t)(lines + argc + 2), sizeof *a);
    if (!a) return NULL;
    int n = 0;
    a[n++] = argv[0];
    for (const char *p = conf; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len && strncmp(p, "init=", 5) != 0 && strncmp(p, "resume=", 7) != 0) {
            char *s = malloc(len + 3);
            if (!s) break;
            memcpy(s, "--", 2);
            memcpy(s + 2, p, len);
            s[len + 2] = '\0';
            a[n++] = s;
        }
        p = nl ? nl + 1 : p + len;
    }
    for (int i = 1; i < argc; i++) a[n++] = argv[i];
    *out_argc = n;
    return a;
}

static void free_resume_argv(char **a, int n, int user_args) {
    if (!a) return;
    for (int i = 1; i < n - user_args; i++) free(a[i]);
    free(a);
}

/* For --init/--resume: the model keys take the checkpoint's values; one
 * given on the command line with another value is an error naming it. */
static int adopt_model(pare_opt *opts, int n, train_opts *o, const pm_arch *mc, const char *path) {
    /* a model whose layers differ (pruned heads or neurons, factorized sites)
     * has no single value of these keys: layer 0's are recorded */
    struct {
        const char *key;
        int *dst;
        int val;
    } ints[] = {{"n-layer", &o->n_layer, mc->n_layer}, {"n-head", &o->n_head, mc->n_head[0]},
                {"n-embd", &o->n_embd, mc->n_embd},    {"mlp-ratio", &o->mlp_ratio, mc->n_hidden[0] / mc->n_embd},
                {"ctx", &o->ctx, mc->ctx}};
    for (int i = 0; i < 5; i++) {
        pare_opt *p = pare_opts_find(opts, n, ints[i].key);
        if (p->set && *ints[i].dst != ints[i].val && !(i == 4 && *ints[i].dst == 0)) {
            fprintf(stderr, "pare train: --%s %d conflicts with checkpoint %s, whose model has %s %d\n", ints[i].key,
                    *ints[i].dst, path, ints[i].key, ints[i].val);
            return -1;
        }
        *ints[i].dst = ints[i].val;
    }
    pare_opt *pb = pare_opts_find(opts, n, "bias"), *pt = pare_opts_find(opts, n, "tied");
    if ((pb->set && o->bias != mc->bias) || (pt->set && o->tied != mc->tied)) {
        fprintf(stderr, "pare train: --%s conflicts with checkpoint %s\n",
                pb->set && o->bias != mc->bias ? "bias" : "tied", path);
        return -1;
    }
    o->bias = mc->bias;
    o->tied = mc->tied;
    return 0;
}

int cmd_train(int argc, char **argv) {
    static const char *usage = "pare train [--key value ...]";
    train_opts o;
    pare_opt opts[MAX_OPTS];
    int n = make_opts(&o, opts);
    int rc = pare_opts_cli("train", usage, opts, n, argc, argv, NULL, 0, NULL);
    if (rc >= 0) return rc;

    int status = PARE_EXIT_ERROR;
    char err[1024];
    char **rargv = NULL;
    int rargc = 0;
    char *conf = NULL, *ck_conf = NULL;
    tr_dataset *d = NULL;
    tr_gpt m = {0};
    tr_trainer t = {0};
    pare_runlog rl = {0};
    tr_vocab ck_vocab;
    bool have_ck = false;
    tr_gpt ck_model = {0};
    pm_arch ck_arch = {0}; /* the checkpoint's model (--resume, --init) */

    if (o.resume[0] && o.init[0]) {
        fprintf(stderr, "pare train: --init and --resume exclude each other (init starts a new run from weights, "
                        "resume continues one)\n");
        return PARE_EXIT_USAGE;
    }
    /* --resume: the checkpoint's configuration, with the user's keys on top */
    if (o.resume[0]) {
        tr_ckpt_file f;
        if (tr_ckpt_read(&f, o.resume, err, sizeof err) != 0 ||
            tr_ckpt_read_meta(&f, &ck_arch, &ck_vocab, &ck_conf, err, sizeof err) != 0) {
            tr_ckpt_close(&f);
            fprintf(stderr, "pare train: %s\n", err);
            return PARE_EXIT_ERROR;
        }
        tr_ckpt_close(&f);
        rargv = resume_argv(ck_conf, argc, argv, &rargc);
        if (!rargv) {
            fprintf(stderr, "pare train: out of memory\n");
            free(ck_conf);
            return PARE_EXIT_ERROR;
        }
        rc = pare_opts_cli("train", usage, opts, n, rargc, rargv, NULL, 0, NULL);
        if (rc >= 0) {
            status = rc;
            goto done;
        }
        have_ck = true;
        if (adopt_model(opts, n, &o, &ck_arch, o.resume) != 0) {
            status = PARE_EXIT_USAGE;
            goto done;
        }
    } else if (o.init[0]) {
        if (tr_model_load(o.init, &ck_model, 0, &ck_vocab, NULL, err, sizeof err) != 0) {
            fprintf(stderr, "pare train: %s\n", err);
            return PARE_EXIT_ERROR;
        }
        have_ck = true;
        if (pm_arch_copy(&ck_arch, &ck_model.arch) != 0) {
            fprintf(stderr, "pare train: out of memory\n");
            goto done;
        }
        if (adopt_model(opts, n, &o, &ck_arch, o.init) != 0) {
            status = PARE_EXIT_USAGE;
            goto done;
        }
    }

    ag_set_threads(pare_threads(o.threads));
    FILE *out = o.json ? stderr : stdout;

    /* data */
    tr_data_opts dopt = tr_data_opts_default();
    dopt.vocab = strcmp(o.vocab, "char") == 0 ? TR_VOCAB_CHAR : TR_VOCAB_BYTE;
    dopt.vocab_fixed = have_ck ? &ck_vocab : NULL;
    dopt.seed = (uint64_t)o.data_seed;
    if (o.ctx == 0) {
        int c = tr_data_default_ctx(o.data);
        o.ctx = c > 0 ? c : 64;
    }
    dopt.ctx = o.ctx;
    if (tr_dataset_open(&d, o.data, &dopt, err, sizeof err) != 0) {
        fprintf(stderr, "pare train: %s\n", err);
        goto done;
    }
    if (have_ck && tr_vocab_compare(&ck_vocab, "checkpoint", &d->vocab, "data", err, sizeof err) != 0) {
        fprintf(stderr, "pare train: %s\n", err);
        goto done;
    }
    if (have_ck && ck_vocab.kind != dopt.vocab) o.vocab = ck_vocab.kind == TR_VOCAB_CHAR ? "char" : "byte";

    /* model */
    tr_gpt_config mc = {.n_layer = o.n_layer, .n_head = o.n_head, .n_embd = o.n_embd, .mlp_ratio = o.mlp_ratio,
                        .ctx = o.ctx, .vocab = d->vocab.size, .bias = o.bias, .tied = o.tied};
    int built = have_ck ? tr_gpt_init_arch(&m, &ck_arch, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err)
                        : tr_gpt_init(&m, &mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err);
    if (built != 0) {
        fprintf(stderr, "pare train: %s\n", err);
        status = PARE_EXIT_USAGE;
        goto done;
    }
    if (o.init[0] && !o.resume[0])
        memcpy(m.params.data, ck_model.params.data, m.params.n * sizeof(float));
    else
        tr_gpt_init_weights(&m, (uint64_t)o.seed);

    /* trainer */
    tr_train_config tc = {.steps = o.steps, .batch = o.batch, .lr = o.lr, .min_lr = o.min_lr, .warmup = o.warmup,
                          .weight_decay = o.weight_decay, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps,
                          .grad_clip = o.grad_clip, .seed = (uint64_t)o.seed, .eval_every = o.eval_every,
                          .eval_batches = o.eval_batches, .ckpt_every = o.ckpt_every, .out = o.out};
    if (tr_trainer_init(&t, &m, d, &tc, err, sizeof err) != 0) {
        fprintf(stderr, "pare train: %s\n", err);
        status = PARE_EXIT_USAGE;
        goto done;
    }
    size_t need = pare_opts_format(opts, n, NULL, 0) + 1;
    conf = malloc(need);
    if (!conf) goto done;
    pare_opts_format(opts, n, conf, need);
    t.config_text = conf;
    if (o.resume[0] && tr_trainer_load(&t, o.resume) != 0) {
        fprintf(stderr, "pare train: %s\n", t.err);
        goto done;
    }
    printer pr = {.f = out, .every = o.log_every > 0 ? o.log_every : (o.steps >= 20 ? o.steps / 20 : 1), .d = d};
    tr_policy print_policy = {.name = "progress", .user = &pr, .on_progress = print_progress};
    tr_trainer_add_policy(&t, &print_policy);
    pare_runlog_begin(&rl, o.db, "train", o.run_name, conf, (uint64_t)o.seed, o.resume[0] ? o.resume : o.init, d);
    tr_policy log_policy = pare_runlog_policy(&rl);
    tr_trainer_add_policy(&t, &log_policy);

    char desc[512];
    fprintf(out, "data: %s\n", tr_dataset_describe(d, desc, sizeof desc));
    fprintf(out, "model: %d layers, %d heads, width %d, mlp x%d, ctx %d, vocab %d, %s, %s: %zu parameters\n",
            mc.n_layer, mc.n_head, mc.n_embd, mc.mlp_ratio, mc.ctx, mc.vocab, mc.bias ? "bias" : "no bias",
            mc.tied ? "tied head" : "untied head", ag_params_numel(&m.params));
    fprintf(out, "train: %d steps from step %ld, batch %d, lr %g -> %g, warmup %d, threads %d%s%s\n", o.steps, t.step,
            o.batch, o.lr, o.min_lr, o.warmup, ag_get_threads(), o.out[0] ? ", checkpoint " : "", o.out);
    fflush(out);

    g_stop = 0;
    signal(SIGINT, on_sigint);
    t.stop = &g_stop;
    double t0 = ag_now();
    tr_status st = tr_train(&t);
    if (t.evaluated) pare_runlog_result(&rl, "val_loss", t.last_eval.loss);
    if (t.evaluated && !isnan(t.last_eval.accuracy)) pare_runlog_result(&rl, "accuracy", t.last_eval.accuracy);
    pare_runlog_result(&rl, "params", (double)ag_params_numel(&m.params));
    pare_runlog_result(&rl, "train_loss", t.loss);
    if (st == TR_OK || st == TR_INTERRUPTED) pare_runlog_artifact(&rl, "checkpoint", o.out);
    pare_runlog_end(&rl, pare_runlog_status(st));
    double seconds = ag_now() - t0;
    signal(SIGINT, SIG_DFL);
    if (st == TR_DIVERGED) {
        fprintf(stderr, "pare train: %s\n", t.err);
        if (o.out[0] && access(o.out, F_OK) == 0)
            fprintf(stderr, "pare train: no checkpoint was written for this step; %s was not overwritten\n", o.out);
        else if (o.out[0])
            fprintf(stderr, "pare train: no checkpoint had been saved yet (--ckpt-every N saves one every N steps)\n");
        status = PARE_EXIT_DIVERGED;
        goto done;
    }
    if (st == TR_INTERRUPTED) {
        fprintf(stderr, "pare train: %s%s%s\n", t.err, o.out[0] ? "; checkpoint written to " : " (no --out: nothing saved)",
                o.out);
        status = PARE_EXIT_INTERRUPTED;
        goto done;
    }
    if (st != TR_OK) {
        fprintf(stderr, "pare train: %s\n", t.err);
        goto done;
    }

    /* summary and sample */
    double tps = t.train_seconds > 0 ? (double)t.steps_this_process * o.batch * d->ctx / t.train_seconds : 0;
    const tr_eval *ev = &t.last_eval;
    fprintf(out, "result: val loss %.4f", ev->loss);
    if (!isnan(d->floor)) fprintf(out, " (floor %.4f, gap %.4f)", d->floor, ev->loss - d->floor);
    if (!isnan(ev->accuracy)) fprintf(out, ", exact-match accuracy %.3f (%ld/%ld)", ev->accuracy, ev->correct, ev->total);
    fprintf(out, ", %.0f tok/s, %.1fs\n", tps, seconds);
    char prompt[256], expected[256], text[4096] = "";
    bool sampled = false;
    if (o.sample_tokens > 0 &&
        final_sample(&t, o.sample_tokens, o.temperature, (uint64_t)o.seed, prompt, text, sizeof text, expected) == 0) {
        sampled = true;
        if (d->kind == TR_DATA_TASK)
            fprintf(out, "sample: %s%s   (expected %s: %s)\n", prompt, text, expected,
                    strcmp(text, expected) == 0 ? "correct" : "wrong");
        else
            fprintf(out, "sample: %s|%s\n", prompt, text);
    }
    if (o.json) {
        printf("{\"command\":\"train\",\"data\":");
        pare_json_string(stdout, o.data);
        printf(",\"steps\":%ld,\"params\":%zu,\"train_loss\":", t.step, ag_params_numel(&m.params));
        pare_json_number(stdout, t.loss);
        printf(",\"val_loss\":");
        pare_json_number(stdout, ev->loss);
        printf(",\"floor\":");
        pare_json_number(stdout, d->floor);
        printf(",\"accuracy\":");
        pare_json_number(stdout, ev->accuracy);
        printf(",\"tokens_per_s\":");
        pare_json_number(stdout, tps);
        printf(",\"seconds\":");
        pare_json_number(stdout, seconds);
        printf(",\"train_seconds\":");
        pare_json_number(stdout, t.train_seconds);
        printf(",\"threads\":%d,\"checkpoint\":", ag_get_threads());
        pare_json_string(stdout, o.out);
        if (sampled) {
            printf(",\"sample_prompt\":");
            pare_json_string(stdout, prompt);
            printf(",\"sample\":");
            pare_json_string(stdout, text);
        }
        printf("}\n");
    }
    status = PARE_EXIT_OK;
done:
    pare_runlog_end(&rl, EX_FAILED); /* no-op when the run already ended */
    tr_trainer_free(&t);
    tr_gpt_free(&m);
    tr_gpt_free(&ck_model);
    pm_arch_free(&ck_arch);
    tr_dataset_free(d);
    free(conf);
    free(ck_conf);
    free_resume_argv(rargv, rargc, argc - 1);
    return status;
}
