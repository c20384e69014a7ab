/* fuzz_ckpt.c - libFuzzer target for the checkpoint loaders.
 *
 * Each input is written to one per-process file (under /dev/shm, else
 * $TMPDIR, else /tmp) and loaded twice: as given (so the header and checksum
 * checks run), and with its header's payload length (bytes 16..23) and
 * checksum (bytes 24..31) recomputed, so mutations get past the container
 * into the section and field checks. Each time both real loading paths run:
 *
 *   - model-only use (pare eval, sample, export): tr_model_load, the
 *     compression policies of the checkpoint's stored configuration (CONF),
 *     a short forward (the quantization-aware one when the configuration asks
 *     for quantization, which reads its QUNT section) and the export plan with
 *     every policy's export hook;
 *   - the full training-state restore, as `pare train --resume` does: the
 *     checkpoint's architecture and stored configuration give the data, the
 *     model, the trainer and its policies; tr_trainer_load restores them, and
 *     a small restored state takes one training step.
 *
 * What the stored configuration may name outside the input is neutralised: a
 * data spec other than builtin:NAME becomes builtin:markov (the resume then
 * fails on the data's hash, as it would for a different file), a teacher
 * becomes the input itself (self-distillation), a sparsity plan read from
 * @FILE is dropped. No architecture is skipped here: a model larger than the
 * input must be refused by the loaders themselves (the TENS section's size
 * against the parameter count) before they allocate it.
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DPARE_FUZZ=ON -DCMAKE_BUILD_TYPE=Sanitize
 *        cmake --build build-fuzz --target fuzz_ckpt make_ckpt_corpus
 * Run:   ./build-fuzz/fuzz/make_ckpt_corpus CORPUS && ./build-fuzz/fuzz/fuzz_ckpt CORPUS
 * (docs/errors.md, "Fuzzing"). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/hash.h"
#include "autograd/parallel.h"
#include "compress/policy.h"
#include "compress/quant.h"
#include "infer/export.h"
#include "keys/options.h"
#include "train/keys.h"
#include "train/trainer.h"

/* The harness's own bounds on work it does after a load (not on what the
 * loaders accept): activations of the step or forward it runs. */
#define STEP_BYTES_MAX (16.0 * 1024 * 1024)
#define BATCH_BYTES_MAX (64.0 * 1024 * 1024)

static char g_path[512];

/* Removes the per-process input file at exit. */
static void remove_input(void) {
    if (g_path[0]) unlink(g_path);
}

/* Picks the per-process input file: /dev/shm when it is a writable
 * directory, else $TMPDIR, else /tmp. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ag_set_threads(1);
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!dir || !dir[0]) dir = "/tmp";
    snprintf(g_path, sizeof g_path, "%s/pare_fuzz_ckpt_%d.ckpt", dir, (int)getpid());
    atexit(remove_input);
    return 0;
}

/* Writes buf[0, len) to g_path (truncating it). Returns 0, or -1. */
static int write_input(const uint8_t *buf, size_t len) {
    int fd = open(g_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return -1;
    while (len > 0) {
        ssize_t k = write(fd, buf, len);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            close(fd);
            return -1;
        }
        buf += k;
        len -= (size_t)k;
    }
    return close(fd);
}

/* ------------------------------------------------ the stored configuration */

/* The keys a checkpoint's CONF section is read into: data, model, training
 * and every compression policy's (the rows of `pare train`'s table that
 * decide how a resume is built). */
typedef struct stored_keys {
    pare_keys k;
    const char *spec;
    tr_data_opts dopt;
    tr_gpt_config model;
    tr_train_config train;
    cp_set set;
} stored_keys;

/* Fills s from conf (defaults, then conf's lines as data, skipping what
 * concerns only a process, as `pare train --resume` does) and neutralises
 * what would reach outside the input (see the top of the file). Returns 0, or
 * -1 (a bad stored value, out of memory); free s with stored_keys_free
 * either way. */
static int stored_keys_read(stored_keys *s, const char *conf) {
    static const char *const not_stored[] = {"init", "resume", "json", "threads", "db", "log-every", NULL};
    char err[1024];
    memset(s, 0, sizeof *s);
    if (cp_set_init(&s->set) != 0) return -1;
    tr_data_keys(&s->k, &s->spec, &s->dopt);
    tr_model_keys(&s->k, &s->model);
    tr_train_keys(&s->k, &s->train);
    cp_set_keys(&s->set, &s->k);
    if (s->k.overflow || pare_opts_defaults(s->k.row, s->k.n, err, sizeof err) != 0 ||
        pare_opts_apply_stored(s->k.row, s->k.n, conf ? conf : "", not_stored, "checkpoint", err, sizeof err) != 0)
        return -1;
    if (strncmp(s->spec, "builtin:", 8) != 0) s->spec = "builtin:markov";
    pare_opt *teacher = pare_opts_find(s->k.row, s->k.n, "teacher");
    if (teacher && *(const char **)teacher->dst && (*(const char **)teacher->dst)[0])
        *(const char **)teacher->dst = g_path;
    pare_opt *plan = pare_opts_find(s->k.row, s->k.n, "sparsity-plan");
    if (plan && *(const char **)plan->dst && (*(const char **)plan->dst)[0] == '@') *(const char **)plan->dst = "";
    return 0;
}

/* Frees what stored_keys_read made; s may be zeroed. */
static void stored_keys_free(stored_keys *s) {
    cp_set_free(&s->set);
    pare_opts_free(s->k.row, s->k.n);
}

/* ------------------------------------------------------ dataset cache */

/* Built-in datasets are generated (markov: 500k tokens), which would cost
 * more than the loads: a few are kept, keyed by everything that opens one. */
#define N_CACHED 4

typedef struct cached_data {
    char spec[64];
    tr_data_opts o;
    tr_vocab fixed;
    tr_dataset *d;
} cached_data;

static cached_data g_cache[N_CACHED];
static int g_cache_next;

/* The dataset spec/o opens (o->vocab_fixed set), from the cache or opened
 * now (borrowed; valid until N_CACHED other datasets are opened). Returns it,
 * or NULL when it does not open. */
static const tr_dataset *dataset_get(const char *spec, const tr_data_opts *o) {
    for (int i = 0; i < N_CACHED; i++) {
        cached_data *c = &g_cache[i];
        if (c->d && !strcmp(c->spec, spec) && c->o.ctx == o->ctx && c->o.seed == o->seed && c->o.vocab == o->vocab &&
            !memcmp(&c->fixed, o->vocab_fixed, sizeof c->fixed))
            return c->d;
    }
    if (strlen(spec) >= sizeof g_cache[0].spec) return NULL;
    char err[512];
    tr_dataset *d = NULL;
    if (tr_dataset_open(&d, spec, o, err, sizeof err) != 0) return NULL;
    cached_data *c = &g_cache[g_cache_next];
    g_cache_next = (g_cache_next + 1) % N_CACHED;
    tr_dataset_free(c->d);
    snprintf(c->spec, sizeof c->spec, "%s", spec);
    c->o = *o;
    c->fixed = *o->vocab_fixed;
    c->o.vocab_fixed = NULL;
    c->d = d;
    return d;
}

/* ------------------------------------------------------ model-only use */

/* What `pare eval`, `pare sample` and `pare export` do with a checkpoint:
 * load the model, make the policies of its stored configuration, run a
 * short forward (quantization-aware when asked) and plan its export with the
 * policies' hooks. Errors are the expected outcome of most inputs. */
static void model_only(void) {
    char err[1024];
    tr_gpt m;
    tr_vocab v;
    char *conf = NULL;
    if (tr_model_load(g_path, &m, 0, &v, &conf, err, sizeof err) != 0) return;
    stored_keys s;
    memset(&s, 0, sizeof s);
    tr_ckpt_file f = {0};
    ag_ctx *c = ag_ctx_new();
    pm_plan plan = {0};
    if (!c || stored_keys_read(&s, conf) != 0 || cp_set_create(&s.set, err, sizeof err) < 0 ||
        tr_ckpt_read(&f, g_path, err, sizeof err) != 0)
        goto out;
    tr_gpt_fwd fwd = {0};
    tr_policy *q = cp_quant_of(&s.set);
    bool fwd_ok = !q || cp_quant_forward(q, &m, &f, &fwd, err, sizeof err) == 0;
    int T = m.arch.ctx < 3 ? m.arch.ctx : 3;
    if (fwd_ok && tr_gpt_step_bytes(&m.arch, 1, T, false) < STEP_BYTES_MAX) {
        int ids[3] = {0, m.arch.vocab - 1, m.arch.vocab / 2};
        ag_ctx_reset(c);
        bool prev = ag_set_grad(c, false);
        tr_gpt_forward(c, &m, ids, 1, T, q ? &fwd : NULL);
        ag_set_grad(c, prev);
        if (!q) {
            int out[4];
            ag_rng rng;
            ag_rng_seed(&rng, 1);
            tr_generate(c, &m, ids, 1, 2, 0.0, 0, -1, &rng, out, err, sizeof err);
        }
    }
    inf_export_opts eo = {0, 0, false, NULL, false};
    if (inf_plan_from_gpt(&plan, &m, err, sizeof err) == 0 && inf_plan_apply(&plan, &eo, err, sizeof err) == 0)
        cp_set_export(&s.set, &m, &f, &plan, err, sizeof err);
out:
    pm_plan_free(&plan);
    ag_ctx_free(c);
    tr_ckpt_close(&f);
    stored_keys_free(&s);
    free(conf);
    tr_gpt_free(&m);
}

/* ------------------------------------------------ the training state */

/* `pare train --resume` without the command: the checkpoint's architecture
 * and stored configuration build the data, model, trainer and policies;
 * tr_trainer_load restores the state; a small restored state takes a step. */
static void resume(void) {
    char err[1024];
    tr_ckpt_file f;
    pm_arch arch = {0};
    tr_vocab vocab;
    char *conf = NULL;
    if (tr_ckpt_read(&f, g_path, err, sizeof err) != 0) return;
    int rc = tr_ckpt_read_meta(&f, &arch, &vocab, &conf, err, sizeof err);
    tr_ckpt_close(&f);
    if (rc != 0) return;
    stored_keys s;
    memset(&s, 0, sizeof s);
    tr_gpt m = {0};
    tr_trainer t = {0};
    bool trainer = false;
    if (stored_keys_read(&s, conf) != 0) goto out;
    s.dopt.vocab_fixed = &vocab;
    s.dopt.ctx = arch.ctx;
    const tr_dataset *d = dataset_get(s.spec, &s.dopt);
    if (!d || tr_vocab_compare(&vocab, "checkpoint", &d->vocab, "data", err, sizeof err) != 0) goto out;
    if (tr_gpt_init_arch(&m, &arch, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS, err, sizeof err) != 0) goto out;
    tr_gpt_init_weights(&m, s.train.seed);
    /* pare train refuses a batch beyond the machine's memory; the harness
     * keeps well inside its own RSS limit */
    if (tr_gpt_check_batch(&m.arch, s.train.batch, d->ctx, true, err, sizeof err) != 0 ||
        4.0 * 4.0 * s.train.batch * d->ctx > BATCH_BYTES_MAX)
        goto out;
    s.train.out = "";
    trainer = true;
    if (tr_trainer_init(&t, &m, d, &s.train, err, sizeof err) != 0) goto out;
    if (cp_set_create(&s.set, err, sizeof err) < 0 || cp_set_add(&s.set, &t) != 0 || tr_trainer_load(&t, g_path) != 0 ||
        tr_trainer_prepare(&t) != 0)
        goto out;
    if (t.step < t.cfg.steps && tr_gpt_step_bytes(&m.arch, s.train.batch, d->ctx, true) < STEP_BYTES_MAX)
        tr_train_step(&t);
out:
    if (trainer) tr_trainer_free(&t);
    stored_keys_free(&s);
    tr_gpt_free(&m);
    pm_arch_free(&arch);
    free(conf);
}

/* ------------------------------------------------------------ the target */

static void run_both(const uint8_t *buf, size_t len) {
    if (write_input(buf, len) != 0) return;
    model_only();
    resume();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *a = malloc(size ? size : 1);
    if (!a) return 0;
    memcpy(a, data, size);
    run_both(a, size);
    if (size >= TR_CKPT_HEADER) { /* the same input behind a valid header: length and checksum */
        uint64_t payload = (uint64_t)(size - TR_CKPT_HEADER), h = ag_fnv1a(AG_FNV_INIT, a + TR_CKPT_HEADER, size - TR_CKPT_HEADER);
        for (int i = 0; i < 8; i++) a[16 + i] = (uint8_t)(payload >> (8 * i)), a[24 + i] = (uint8_t)(h >> (8 * i));
        run_both(a, size);
    }
    free(a);
    return 0;
}
