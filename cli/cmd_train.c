/* cmd_train.c - `pare train`: build or load a GPT, train it on a text file or
 * a built-in dataset, print progress, a summary and a sample; checkpoint,
 * resume, and stop cleanly on Ctrl-C. Also the helpers `pare sample` and
 * `pare eval` share (JSON output, opening a model). */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/parallel.h"
#include "cli/commands.h"
#include "keys/options.h"
#include "train/keys.h"
#include "train/sampler.h"
#include "train/trainer.h"
#include "compress/lowrank.h"
#include "compress/policy.h"
#include "cli/runlog.h"
#include "dist/dist.h"

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

int pare_check_rewrite(const char *cmd, const char *in, const char *out) {
    char err[1024];
    if (!out[0]) {
        pare_report_error("pare %s: --out: expected the path of the checkpoint to write\n", cmd);
        return PARE_EXIT_USAGE;
    }
    if (pare_same_file(out, in)) {
        pare_report_error("pare %s: --out %s is the same file as the checkpoint %s: refusing to overwrite an input\n",
                          cmd, out, in);
        return PARE_EXIT_USAGE;
    }
    if (pare_check_out(out, err, sizeof err) != 0) {
        pare_report_error("pare %s: %s\n", cmd, err);
        return PARE_EXIT_USAGE;
    }
    return 0;
}

bool pare_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (!a || !b || !a[0] || !b[0] || stat(a, &sa) != 0 || stat(b, &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int pare_check_out(const char *path, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "--out %s is a directory: expected a file path", path);
        return -1;
    }
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && !(st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH))) {
        snprintf(err, errlen, "--out %s is read-only (mode %03o): refusing to replace it", path,
                 (unsigned)(st.st_mode & 0777));
        return -1;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "--out %s: its directory %s does not exist: expected an existing directory", path, dir);
        return -1;
    }
    if (access(dir, W_OK) != 0) {
        snprintf(err, errlen, "--out %s: cannot write into %s: %s", path, dir, strerror(errno));
        return -1;
    }
    return 0;
}

int pare_lock_out(const char *path, char *err, size_t errlen) {
    char lock[4200];
    snprintf(lock, sizeof lock, "%s.lock", path);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "--out %s: cannot create its lock file %s: %s", path, lock, strerror(errno));
        return -1;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        snprintf(err, errlen, "--out %s: another live pare (pid %s) is writing it (it holds %s): give another --out",
                 path, pid[0] ? pid : "?", lock);
        close(fd);
        return -1;
    }
    char me[32];
    int n = snprintf(me, sizeof me, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, me, (size_t)n, 0) != n) { /* the pid is for the message only */
    }
    /* no live writer: temporary files left by a writer that was killed during a save are stale */
    char pat[2][4200];
    snprintf(pat[0], sizeof pat[0], "%s.tmp", path);
    snprintf(pat[1], sizeof pat[1], "%s.*.tmp", path);
    for (int i = 0; i < 2; i++) {
        glob_t g;
        if (glob(pat[i], 0, NULL, &g) == 0)
            for (size_t k = 0; k < g.gl_pathc; k++) unlink(g.gl_pathv[k]);
        globfree(&g);
    }
    return fd;
}

void pare_unlock_out(const char *path, int fd) {
    if (fd < 0) return;
    char lock[4200];
    snprintf(lock, sizeof lock, "%s.lock", path);
    unlink(lock); /* while still holding it: a waiting writer then locks a new file */
    close(fd);
}

/* ---------------------------------------------------------------- options */

typedef struct train_opts {
    const char *data;
    tr_data_opts dopt;      /* vocab, data-seed (data.h) */
    tr_gpt_config model;    /* n-layer ... tied (gpt.h) */
    tr_train_config train;  /* steps ... ckpt-every (trainer.h) */
    tr_sample_opts sample;  /* the final sample: temperature, top-k, sample-seed (sampler.h) */
    const char *init, *resume, *out;
    const char *db, *run_name; /* the run log */
    int threads, log_every, sample_tokens;
    bool json;
    cp_set policies;        /* the compression policies' keys and, once parsed, the policies they ask for */
} train_opts;

/* The command's table: the libraries' groups, then train's own keys. */
static void make_keys(train_opts *o, pare_keys *k) {
    tr_data_keys(k, &o->data, &o->dopt);
    tr_model_keys(k, &o->model);
    tr_train_keys(k, &o->train);
    pare_opt own[] = {
        PARE_OPT_STRING("init", &o->init, "", "start from this checkpoint's weights (new optimizer, step 0)"),
        PARE_OPT_STRING("resume", &o->resume, "", "continue this checkpoint's run exactly (its config; --steps may extend it)"),
        PARE_OPT_STRING("out", &o->out, "pare.ckpt", "checkpoint path (\"\" = none)"),
        PARE_OPT_INT("log-every", &o->log_every, "0", 0, 2000000000, "progress line every N steps (0 = about 20 lines per run)"),
        PARE_OPT_INT("sample-tokens", &o->sample_tokens, "200", 0, 1000000, "length of the final sample (0 = none)"),
    };
    pare_keys_add(k, own, (int)(sizeof own / sizeof own[0]));
    tr_sample_style_keys(k, &o->sample);
    cp_set_keys(&o->policies, k);
    pare_keys_threads(k, &o->threads);
    ex_log_keys(k, &o->db, &o->run_name);
    pare_keys_json(k, &o->json, "print the result as one JSON object on stdout (progress goes to stderr)");
}

/* Test and debug aid: with PARE_DIST_STATE=DIR every rank writes its whole
 * training state (parameters, moments, masks, the policies' state such as
 * quantization observers) to DIR/rank-R.ckpt after training, so a test can
 * compare the ranks' files byte for byte. Returns 0 (also when unset), or -1
 * with the save's error in err. */
static int dump_state(tr_trainer *t, char *err, size_t errlen) {
    const char *dir = getenv("PARE_DIST_STATE");
    if (!dir || !dir[0]) return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/rank-%d.ckpt", dir, pd_rank());
    if (tr_trainer_save(t, path) != 0) {
        snprintf(err, errlen, "PARE_DIST_STATE: %s", t->err);
        return -1;
    }
    return 0;
}

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
    char extra[512] = "";
    size_t used = 0;
    for (int i = 0; i < pr->n_metrics && used < sizeof extra; i++) /* the policies' figures */
        used += (size_t)snprintf(extra + used, sizeof extra - used, " | %s %.4g", pr->metrics[i].name,
                                 pr->metrics[i].value);
    fprintf(pp->f, "step %6ld/%ld | loss %.4f%s%s%s | lr %.2e | %.0f tok/s | left %s\n", pr->step, pr->steps,
            pr->loss, val, acc, extra, pr->lr, pr->tokens_per_s, left);
    fflush(pp->f);
}

static void print_warning(tr_policy *p, tr_trainer *t, const char *msg) {
    (void)p;
    (void)t;
    fprintf(stderr, "pare train: warning: %s\n", msg);
}

/* ------------------------------------------------------------------ signal */

static volatile sig_atomic_t g_stop = 0;

/* SIGINT (Ctrl-C), SIGTERM (timeout, schedulers), SIGHUP (a closed
 * terminal): stop between steps, write the checkpoint, record the run as
 * interrupted. A second one stops at once. SIGPIPE (a closed `| head`) is
 * ignored, so a write to the closed pipe fails instead of killing the run. */
static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP};

static void on_stop_signal(int sig) {
    g_stop = sig;
    signal(sig, SIG_DFL);
}

static void catch_stop_signals(bool on) {
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
        signal(stop_signals[i], on ? on_stop_signal : SIG_DFL);
    signal(SIGPIPE, on ? SIG_IGN : SIG_DFL);
}

/* --------------------------------------------------------------- the sample */

/* Generates a sample for the summary: for tasks, the answer to validation
 * example 0 (greedy, until the terminator); for text, n tokens after the
 * validation split's first characters. Writes the text into out (n bytes). */
static int final_sample(tr_trainer *t, int n_tokens, const tr_sample_opts *so, char *prompt, char *text, size_t n,
                        char *expected) {
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
        ag_rng_seed(&rng, so->seed);
        int stop = is_task && t->data->vocab.id['.'] >= 0 ? t->data->vocab.id['.'] : -1;
        int len = tr_generate(t->ctx, t->model, ids, (int)np, n_new, is_task ? 0.0 : so->temperature, so->top_k, stop,
                              &rng, ids, err, sizeof err);
        if (len >= 0) {
            tr_vocab_decode(&t->data->vocab, ids + np, (size_t)len - np, text);
            rc = 0;
        }
    }
    free(ids);
    return rc;
}

/* ---------------------------------------------------------------- command */

/* For --init/--resume: the model keys take the checkpoint's values; one
 * given on the command line with another value is an error naming it. A
 * model whose layers differ (pruned heads or neurons, factorized sites) is
 * built from the checkpoint's architecture; its keys record layer 0's. */
static int adopt_model(pare_keys *k, train_opts *o, const pm_arch *mc, const char *path) {
    tr_gpt_config *c = &o->model;
    struct {
        const char *key;
        int *dst;
        int val;
    } ints[] = {{"n-layer", &c->n_layer, mc->n_layer}, {"n-head", &c->n_head, mc->n_head[0]},
                {"n-embd", &c->n_embd, mc->n_embd},    {"mlp-ratio", &c->mlp_ratio, mc->n_hidden[0] / mc->n_embd},
                {"ctx", &c->ctx, mc->ctx}};
    for (int i = 0; i < 5; i++) {
        pare_opt *p = pare_opts_find(k->row, k->n, ints[i].key);
        if (p->set && *ints[i].dst != ints[i].val && !(i == 4 && *ints[i].dst == 0)) {
            pare_report_error("pare train: --%s %d conflicts with checkpoint %s, whose model has %s %d\n", ints[i].key,
                    *ints[i].dst, path, ints[i].key, ints[i].val);
            return -1;
        }
        *ints[i].dst = ints[i].val;
    }
    pare_opt *pb = pare_opts_find(k->row, k->n, "bias"), *pt = pare_opts_find(k->row, k->n, "tied");
    if ((pb->set && c->bias != mc->bias) || (pt->set && c->tied != mc->tied)) {
        pare_report_error("pare train: --%s conflicts with checkpoint %s\n",
                pb->set && c->bias != mc->bias ? "bias" : "tied", path);
        return -1;
    }
    c->bias = mc->bias;
    c->tied = mc->tied;
    return 0;
}

int cmd_train(int argc, char **argv) {
    static const char *usage = "pare train [--key value ...]";
    train_opts o;
    pare_keys keys = {.n = 0};
    if (cp_set_init(&o.policies) != 0) {
        pare_report_error("pare train: out of memory\n");
        cp_set_free(&o.policies);
        return PARE_EXIT_ERROR;
    }
    make_keys(&o, &keys);
    int rc = pare_keys_cli("train", usage, &keys, argc, argv, NULL, 0, NULL);
    if (rc >= 0) {
        cp_set_free(&o.policies);
        return rc;
    }

    int status = PARE_EXIT_ERROR;
    char err[1024];
    char *conf = NULL, *ck_conf = NULL;
    tr_dataset *d = NULL;
    tr_gpt m = {0};
    tr_trainer t = {0};
    pare_runlog rl = {0};
    tr_vocab ck_vocab;
    bool have_ck = false;
    tr_gpt ck_model = {0};
    pm_arch ck_arch = {0}; /* the checkpoint's model (--resume, --init) */
    int lock_fd = -1;       /* the advisory lock on --out */
    FILE *null_out = pd_rank() != 0 ? fopen("/dev/null", "w") : NULL; /* the progress of ranks other than 0 */

    if (o.resume[0] && o.init[0]) {
        pare_report_error("pare train: --init and --resume exclude each other (init starts a new run from weights, "
                        "resume continues one)\n");
        return PARE_EXIT_USAGE;
    }
    /* --resume: the checkpoint's configuration, with the user's keys on top */
    if (o.resume[0]) {
        tr_ckpt_file f;
        if (tr_ckpt_read(&f, o.resume, err, sizeof err) != 0 ||
            tr_ckpt_read_meta(&f, &ck_arch, &ck_vocab, &ck_conf, err, sizeof err) != 0) {
            tr_ckpt_close(&f);
            pare_report_error("pare train: %s\n", err);
            return PARE_EXIT_ERROR;
        }
        tr_ckpt_close(&f);
        /* defaults, then the checkpoint's stored configuration read as data
         * of known keys (not what concerns this process: how to start, the
         * output format, threads, the run log's file), then the user's keys */
        static const char *const not_stored[] = {"init", "resume", "json", "threads", "db", "log-every", NULL};
        char where[300];
        snprintf(where, sizeof where, "checkpoint %s", o.resume);
        if (pare_opts_defaults(keys.row, keys.n, err, sizeof err) != 0 ||
            pare_opts_apply_stored(keys.row, keys.n, ck_conf, not_stored, where, err, sizeof err) != 0 ||
            pare_opts_parse_more(keys.row, keys.n, argc, argv, NULL, 0, NULL, err, sizeof err) != PARE_OPTS_OK) {
            pare_report_error("pare train: %s\n", err);
            status = PARE_EXIT_ERROR;
            goto done;
        }
        have_ck = true;
        if (adopt_model(&keys, &o, &ck_arch, o.resume) != 0) {
            status = PARE_EXIT_USAGE;
            goto done;
        }
    } else if (o.init[0]) {
        if (tr_model_load(o.init, &ck_model, 0, &ck_vocab, NULL, err, sizeof err) != 0) {
            pare_report_error("pare train: %s\n", err);
            return PARE_EXIT_ERROR;
        }
        have_ck = true;
        /* --rank / --rank-energy: fine-tune the SVD factors of the dense checkpoint */
        if (cp_lowrank_init_model(&o.policies, &ck_model, err, sizeof err) != 0) {
            pare_report_error("pare train: %s\n", err);
            status = PARE_EXIT_USAGE;
            goto done;
        }
        if (pm_arch_copy(&ck_arch, &ck_model.arch) != 0) {
            pare_report_error("pare train: out of memory\n");
            goto done;
        }
        if (adopt_model(&keys, &o, &ck_arch, o.init) != 0) {
            status = PARE_EXIT_USAGE;
            goto done;
        }
    }

    ag_set_threads(pare_threads(o.threads));
    /* data parallelism (dist/dist.h): rank 0 alone prints, writes the checkpoint and the run log; the others
     * train the same steps silently (they print only errors) */
    bool lead = pd_rank() == 0;
    FILE *out = !lead ? null_out : o.json ? stderr : stdout;
    if (!out) {
        pare_report_error("pare train: rank %d: cannot open /dev/null: %s\n", pd_rank(), strerror(errno));
        goto done;
    }

    /* the output: writable before the first step, and never one of the inputs */
    if (o.out[0] && lead) {
        if (pare_check_out(o.out, err, sizeof err) != 0) {
            pare_report_error("pare train: %s\n", err);
            status = PARE_EXIT_USAGE;
            goto done;
        }
        if ((lock_fd = pare_lock_out(o.out, err, sizeof err)) < 0) {
            pare_report_error("pare train: %s\n", err);
            status = PARE_EXIT_USAGE;
            goto done;
        }
        const char *inputs[2][2] = {{"--data", o.data}, {"--init", o.init}};
        for (int i = 0; i < 2; i++)
            if (pare_same_file(o.out, inputs[i][1])) {
                pare_report_error("pare train: --out %s is the same file as %s %s: refusing to overwrite an input\n",
                        o.out, inputs[i][0], inputs[i][1]);
                status = PARE_EXIT_USAGE;
                goto done;
            }
    }

    /* data */
    o.dopt.vocab_fixed = have_ck ? &ck_vocab : NULL;
    if (o.model.ctx == 0) {
        int c = tr_data_default_ctx(o.data);
        o.model.ctx = c > 0 ? c : 64;
    }
    o.dopt.ctx = o.model.ctx;
    if (tr_dataset_open(&d, o.data, &o.dopt, err, sizeof err) != 0) {
        pare_report_error("pare train: %s\n", err);
        goto done;
    }
    if (have_ck && tr_vocab_compare(&ck_vocab, "checkpoint", &d->vocab, "data", err, sizeof err) != 0) {
        pare_report_error("pare train: %s\n", err);
        goto done;
    }
    if (have_ck) o.dopt.vocab = ck_vocab.kind; /* the resolved configuration records the vocabulary used */

    /* model */
    o.model.vocab = d->vocab.size;
    const tr_gpt_config *mc = &o.model;
    int built = have_ck ? tr_gpt_init_arch(&m, &ck_arch, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err)
                        : tr_gpt_init(&m, mc, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err);
    if (built != 0) {
        pare_report_error("pare train: %s\n", err);
        status = strstr(err, "out of memory") ? PARE_EXIT_ERROR : PARE_EXIT_USAGE;
        goto done;
    }
    if (o.init[0] && !o.resume[0]) {
        memcpy(m.params.data, ck_model.params.data, m.params.n * sizeof(float));
        /* a pruned checkpoint's zeros stay zeros while it is fine-tuned */
        if (ck_model.params.mask && ag_params_mask_enable(&m.params) == 0)
            memcpy(m.params.mask, ck_model.params.mask, m.params.n * sizeof(float));
    } else
        tr_gpt_init_weights(&m, o.train.seed);

    if (tr_gpt_check_batch(&m.arch, o.train.batch, d->ctx, true, err, sizeof err) != 0) {
        pare_report_error("pare train: %s\n", err);
        status = PARE_EXIT_USAGE;
        goto done;
    }

    /* trainer */
    o.train.out = lead ? o.out : "";
    if (tr_trainer_init(&t, &m, d, &o.train, err, sizeof err) != 0) {
        pare_report_error("pare train: %s\n", err);
        status = PARE_EXIT_USAGE;
        goto done;
    }
    size_t need = pare_opts_format(keys.row, keys.n, NULL, 0) + 1;
    conf = malloc(need);
    if (!conf) goto done;
    pare_opts_format(keys.row, keys.n, conf, need);
    t.config_text = conf;
    printer pr = {.f = out, .every = o.log_every > 0 ? o.log_every : (o.train.steps >= 20 ? o.train.steps / 20 : 1),
                  .d = d};
    tr_policy print_policy = {.name = "progress", .user = &pr, .on_progress = print_progress,
                              .on_warning = print_warning};
    tr_trainer_add_policy(&t, &print_policy);
    pare_runlog_begin(&rl, lead ? o.db : "none", "train", o.run_name, conf, o.train.seed, o.resume[0] ? o.resume : o.init, d);
    /* if --out cannot be written at the end, the state goes next to the run database, else to the temp dir */
    static char db_dir[4096];
    snprintf(db_dir, sizeof db_dir, "%s", ex_db_path(o.db));
    char *dslash = strrchr(db_dir, '/');
    if (dslash) *dslash = '\0';
    else snprintf(db_dir, sizeof db_dir, ".");
    const char *tmpdir = getenv("TMPDIR");
    t.fallback_dir[0] = lead && strcmp(o.db, "none") ? db_dir : NULL;
    t.fallback_dir[t.fallback_dir[0] ? 1 : 0] = tmpdir && tmpdir[0] ? tmpdir : "/tmp";
    tr_policy log_policy = pare_runlog_policy(&rl);
    tr_trainer_add_policy(&t, &log_policy);
    /* the compression policies the keys ask for; all in place before a resume loads their state */
    if (cp_set_create(&o.policies, err, sizeof err) < 0) {
        pare_report_error("pare train: %s\n", err);
        status = PARE_EXIT_USAGE;
        goto done;
    }
    if (cp_set_add(&o.policies, &t) != 0 || (o.resume[0] && tr_trainer_load(&t, o.resume) != 0) ||
        tr_trainer_prepare(&t) != 0) {
        pare_report_error("pare train: %s\n", t.err);
        goto done;
    }

    char desc[512];
    fprintf(out, "data: %s\n", tr_dataset_describe(d, desc, sizeof desc));
    fprintf(out, "model: %d layers, %d heads, width %d, mlp x%d, ctx %d, vocab %d, %s, %s%s: %zu parameters\n",
            m.arch.n_layer, m.arch.n_head[0], m.arch.n_embd, m.arch.n_hidden[0] / m.arch.n_embd, m.arch.ctx,
            m.arch.vocab, m.arch.bias ? "bias" : "no bias", m.arch.tied ? "tied head" : "untied head",
            pm_arch_is_uniform(&m.arch) ? "" : " (layers differ; layer 0's shown)", ag_params_numel(&m.params));
    for (int i = 0; i < t.n_policy; i++)
        if (t.policy[i]->describe) {
            char line[1024];
            t.policy[i]->describe(t.policy[i], &t, line, sizeof line);
            fprintf(out, "%s\n", line);
        }
    fprintf(out, "train: %d steps from step %ld, batch %d, lr %g -> %g, warmup %d, threads %d%s%s\n", o.train.steps,
            t.step, o.train.batch, o.train.lr, o.train.min_lr, o.train.warmup, ag_get_threads(),
            o.out[0] ? ", checkpoint " : "", o.out);
    if (pd_size() > 1)
        fprintf(out, "ranks: %d (data-parallel: %d rows of the global batch each, gradients summed in rank order)\n",
                pd_size(), o.train.batch / pd_size());
    fflush(out);

    g_stop = 0;
    catch_stop_signals(true);
    t.stop = &g_stop;
    double t0 = ag_now();
    tr_status st = tr_train(&t);
    if (t.evaluated) pare_runlog_result(&rl, "val_loss", t.last_eval.loss);
    if (t.evaluated && !isnan(t.last_eval.accuracy)) pare_runlog_result(&rl, "accuracy", t.last_eval.accuracy);
    pare_runlog_result(&rl, "params", (double)ag_params_numel(&m.params));
    pare_runlog_result(&rl, "train_loss", t.loss);
    if (st == TR_OK || st == TR_INTERRUPTED || st == TR_SAVED_ELSEWHERE) pare_runlog_artifact(&rl, "checkpoint", t.saved_to);
    pare_runlog_end(&rl, st == TR_SAVED_ELSEWHERE ? (t.interrupted ? EX_INTERRUPTED : EX_FINISHED) : pare_runlog_status(st));
    double seconds = ag_now() - t0;
    catch_stop_signals(false);
    if (dump_state(&t, err, sizeof err) != 0) {
        pare_report_error("pare train: %s\n", err);
        goto done;
    }
    if (st == TR_DIVERGED) {
        pare_report_error("pare train: %s\n", t.err);
        if (o.out[0] && access(o.out, F_OK) == 0)
            pare_report_error("pare train: no checkpoint was written for this step; %s was not overwritten\n", o.out);
        else if (o.out[0])
            pare_report_error("pare train: no checkpoint had been saved yet (one is written after every evaluation)\n");
        status = PARE_EXIT_DIVERGED;
        goto done;
    }
    if (st == TR_SAVED_ELSEWHERE) {
        pare_report_error("pare train: %s\n", t.err);
        status = PARE_EXIT_SAVED_ELSEWHERE;
        goto done;
    }
    if (st == TR_INTERRUPTED) {
        pare_report_error("pare train: %s (%s)%s%s\n", t.err, g_stop == SIGTERM ? "SIGTERM" : g_stop == SIGHUP ? "SIGHUP" : "SIGINT",
                o.out[0] ? "; checkpoint written to " : " (no --out: nothing saved)", o.out);
        status = PARE_EXIT_INTERRUPTED;
        goto done;
    }
    if (st != TR_OK) {
        pare_report_error("pare train: %s\n", t.err);
        goto done;
    }

    /* summary and sample */
    double tps = t.train_seconds > 0 ? (double)t.steps_this_process * o.train.batch * d->ctx / t.train_seconds : 0;
    const tr_eval *ev = &t.last_eval;
    fprintf(out, "result: val loss %.4f", ev->loss);
    if (!isnan(d->floor)) fprintf(out, " (floor %.4f, gap %.4f)", d->floor, ev->loss - d->floor);
    if (!isnan(ev->accuracy)) fprintf(out, ", exact-match accuracy %.3f (%ld/%ld)", ev->accuracy, ev->correct, ev->total);
    fprintf(out, ", %.0f tok/s, %.1fs\n", tps, seconds);
    char prompt[256], expected[256], text[4096] = "";
    bool sampled = false;
    if (o.sample_tokens > 0 &&
        final_sample(&t, o.sample_tokens, &o.sample, prompt, text, sizeof text, expected) == 0) {
        sampled = true;
        if (d->kind == TR_DATA_TASK)
            fprintf(out, "sample: %s%s   (expected %s: %s)\n", prompt, text, expected,
                    strcmp(text, expected) == 0 ? "correct" : "wrong");
        else
            fprintf(out, "sample: %s|%s\n", prompt, text);
    }
    if (o.json && lead) {
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
        printf(",\"comm_seconds\":");
        pare_json_number(stdout, pd_comm_seconds());
        printf(",\"ranks\":%d,\"threads\":%d,\"checkpoint\":", pd_size(), ag_get_threads());
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
    cp_set_free(&o.policies); /* after the trainer that points to them */
    if (lock_fd >= 0) pare_unlock_out(o.out, lock_fd);
    if (null_out) fclose(null_out);
    pare_opts_free(keys.row, keys.n);
    return status;
}
