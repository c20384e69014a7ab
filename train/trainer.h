/* trainer.h - the one training loop: schedule, step, evaluation, checkpoints,
 * and the policy hooks compression methods and the run log attach to.
 *
 * The flow of one step (tr_train_step, a short function worth reading):
 *   reset the arena -> draw a batch -> (the teacher's forward, when a policy
 *   needs it) -> forward, every linear site through the policies' linear
 *   hooks -> loss (+ policy loss terms) -> zero grads, backward -> policies
 *   after backward -> masked gradients zeroed -> grad norm; NaN/Inf means
 *   stop here, nothing updated -> clip -> AdamW at the scheduled lr (the
 *   model's parameters and the policies' tensors, masks respected) ->
 *   policies after the step.
 * After the first step a step allocates nothing: the arena keeps its high-water
 * block, the tape keeps its array, the batch buffers are reused.
 *
 * Policies (tr_policy) are plain structs of optional callbacks called at fixed
 * points, in the order they were added. Compression methods (fake quant,
 * masks, distillation, pruning) and observers (the progress printer, the run
 * log) are all policies; several compose in one run.
 *
 * Determinism: the model is initialised from cfg.seed, the data stream from
 * its own generator (seeded from cfg.seed, state saved in checkpoints),
 * reductions run in a fixed order; the same seed gives the same bits at any
 * thread count, and a run resumed from a checkpoint continues bit-identically
 * (the policies' tensors, masks and sections included).
 */
#ifndef PARE_TR_TRAINER_H
#define PARE_TR_TRAINER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/optim.h"
#include "autograd/rng.h"
#include "autograd/tape.h"
#include "checkpoint.h"
#include "data.h"
#include "gpt.h"
#include "model/plan.h"

/* Everything about a run except the model's shape and the data. */
typedef struct tr_train_config {
    int steps;            /* optimizer steps in the whole run */
    int batch;            /* B; T is the data's/model's ctx */
    double lr, min_lr;    /* peak and final learning rate */
    int warmup;           /* linear warmup steps (from lr/warmup up to lr) */
    double weight_decay;  /* AdamW decoupled decay on TR_GROUP_DECAY tensors */
    double beta1, beta2, eps;
    double grad_clip;     /* clip the global grad L2 norm to this; 0 = off */
    uint64_t seed;        /* model init and data order */
    int eval_every;       /* evaluate every N steps (and after the last); 0 = only at the end */
    int eval_batches;     /* fixed validation batches per evaluation */
    int ckpt_every;       /* write the checkpoint every N steps; 0 = after every evaluation (and at the end) */
    const char *out;      /* checkpoint path, or NULL/"" for none */
} tr_train_config;

/* Defaults: 1000 steps, batch 16, lr 1e-3 to 1e-4, warmup 100, weight decay
 * 0.1, betas (0.9, 0.99), eps 1e-8, clip 1.0, seed 1, eval every 100 on 20
 * batches, a checkpoint after every evaluation, no output path. */
tr_train_config tr_train_config_default(void);

/* Checks ranges (steps >= 1, batch >= 1, lr > 0, 0 <= min_lr <= lr, warmup
 * >= 0, betas in [0, 1), eps > 0, clip >= 0, decay >= 0, eval_batches >= 1).
 * Returns 0, or -1 with err naming the key as the command line spells it. */
int tr_train_config_check(const tr_train_config *cfg, char *err, size_t errlen);

/* The learning rate of step `step` (0-based): linear warmup
 * lr * (step + 1) / warmup for step < warmup, then cosine decay from lr to
 * min_lr over the remaining steps: min_lr + 0.5 (lr - min_lr)(1 + cos(pi p)),
 * p = (step - warmup) / max(1, steps - warmup) clamped to [0, 1]. */
double tr_lr_at(const tr_train_config *cfg, long step);

typedef struct tr_trainer tr_trainer;

/* A named figure a policy reports during a step (each loss term, clip rates,
 * sparsity): shown in the progress line and recorded in the run log. */
typedef struct tr_metric {
    char name[32];
    double value;
} tr_metric;

#define TR_MAX_METRICS 32

/* What a progress callback sees after each step. */
typedef struct tr_progress {
    long step, steps;     /* steps done (this one included) and in total */
    double loss;          /* this step's training loss (the total, policy terms included) */
    double lr, grad_norm; /* this step's (pre-clip norm) */
    double val_loss;      /* validation loss if this step ended with an evaluation, else NAN */
    double accuracy;      /* its accuracy (tasks), else NAN */
    double tokens_per_s;  /* training throughput so far in this process (evaluation excluded) */
    double elapsed, eta;  /* seconds since start of this process, estimated seconds left */
    const tr_metric *metrics; /* [n_metrics] the policies' figures of this step */
    int n_metrics;
} tr_progress;

/* An evaluation's result. */
typedef struct tr_eval {
    double loss;          /* mean cross-entropy per scored token over the batches */
    double accuracy;      /* exact-match accuracy (tasks), else NAN */
    long correct, total;  /* rows */
    long tokens;          /* scored tokens */
} tr_eval;

/* Outcome of tr_train and tr_train_step. */
typedef enum tr_status {
    TR_OK = 0,          /* the step ran / the run finished all its steps */
    TR_ERROR = -1,      /* an error; message in t->err */
    TR_DIVERGED = 1,    /* NaN or Inf loss or grad norm: no update was made */
    TR_INTERRUPTED = 2, /* *stop was set: stopped between steps (checkpoint written) */
    TR_SAVED_ELSEWHERE = 3, /* the run ended (finished or interrupted), but its final checkpoint could not be
                               written to cfg.out: it went to t->saved_to instead (t->err says why) */
} tr_status;

/* A teacher known only by its logits (a model file run by the inference
 * runtime, compress/distill.c): writes its logits on the rows x[B, T] into
 * logits[B, T, V]. Returns 0, or -1 with err. */
typedef int (*tr_teacher_logits_fn)(void *user, const int *x, int B, int T, float *logits, char *err, size_t errlen);

/* What a policy needs the trainer to compute for it in each step. */
enum {
    TR_NEED_PROBS = 1,          /* the student's attention probabilities (t->probs) */
    TR_NEED_HIDDEN = 2,         /* its hidden states (t->hidden) */
    TR_NEED_TEACHER = 4,        /* the teacher's logits on the batch (t->teacher_logits) */
    TR_NEED_TEACHER_PROBS = 8,  /* and its attention probabilities (t->teacher_probs) */
    TR_NEED_TEACHER_HIDDEN = 16, /* and its hidden states (t->teacher_hidden) */
    TR_NEED_QKV = 32,           /* the student's qkv projections (t->qkv) */
    TR_NEED_TEACHER_QKV = 64,   /* the teacher's (t->teacher_qkv) */
};
#define TR_NEED_ANY_TEACHER (TR_NEED_TEACHER | TR_NEED_TEACHER_PROBS | TR_NEED_TEACHER_HIDDEN | TR_NEED_TEACHER_QKV)

/* One matrix product of a linear site in the forward, as the policies' linear
 * hooks see it (tr_linear_next passes it down the chain). */
typedef struct tr_linear {
    tr_trainer *t;
    ag_ctx *c;
    const pm_site *site; /* the site: name ("h.3.mlp.fc"), layer, role, shape */
    pm_part part;        /* PM_W (dense), PM_V then PM_U (a factorized site) */
    bool training;       /* false during evaluation (observers should not update then) */
    int next;            /* the next policy in the chain (internal) */
} tr_linear;

/* Computes the product with the policies after the calling one in the chain,
 * and finally ag_linear(c, x, w, b). A linear hook wraps its inputs and
 * calls this (return tr_linear_next(l, fake_quant(x), fake_quant(w), b)), or
 * computes the product itself. */
ag_tensor *tr_linear_next(tr_linear *l, ag_tensor *x, ag_tensor *w, ag_tensor *b);

/* A policy: optional callbacks (NULL = not interested) at fixed points of the
 * run, in the order policies were added. Each gets the policy itself (with
 * its user pointer) and the trainer. Callbacks that return int return 0 to
 * continue or -1 to stop the run with an error (they write the message into
 * t->err with tr_trainer_fail).
 *
 * Lifecycle: tr_trainer_add_policy; declare (once, when the trainer is
 * prepared: by tr_trainer_load, or before the first step); on a resume, load
 * (the policy's own sections; its declared tensors and the masks are restored
 * by the trainer); on_start (once, before the first step, also for callers
 * of tr_train_step); then per step linear (in the forward), loss,
 * after_backward, after_step, on_progress; on_eval after evaluations; save
 * with every checkpoint; on_end when tr_train returns. export is called by
 * `pare export` on a checkpoint the policy trained, without a trainer. */
typedef struct tr_policy tr_policy;
struct tr_policy {
    const char *name;  /* names its tensors ("NAME.tensor") and messages */
    void *user;
    unsigned needs;    /* TR_NEED_* */
    /* declare extra trainable tensors (tr_declare) and masks (tr_trainer_enable_masks) */
    int (*declare)(tr_policy *p, tr_trainer *t);
    /* once, before the first step (after a resume has loaded its state) */
    int (*on_start)(tr_policy *p, tr_trainer *t);
    /* in the forward: every matrix product of a linear site (see tr_linear) */
    ag_tensor *(*linear)(tr_policy *p, tr_linear *l, ag_tensor *x, ag_tensor *w, ag_tensor *b);
    /* loss terms: return the new loss (e.g. loss + lambda * extra), or NULL on error.
     * logits [B,T,V]; t->probs, t->hidden and the teacher's outputs are filled when a policy needs them */
    ag_tensor *(*loss)(tr_policy *p, tr_trainer *t, ag_ctx *c, ag_tensor *logits, ag_tensor *loss);
    /* after backward, before the masks, the grad norm and clipping: gradients are still dense here */
    int (*after_backward)(tr_policy *p, tr_trainer *t);
    /* after the optimizer step: prune, regrow, re-apply masks, update observers */
    int (*after_step)(tr_policy *p, tr_trainer *t);
    /* observers */
    void (*on_progress)(tr_policy *p, tr_trainer *t, const tr_progress *pr);
    void (*on_eval)(tr_policy *p, tr_trainer *t, const tr_eval *ev);
    void (*on_end)(tr_policy *p, tr_trainer *t, tr_status st);
    /* something the user should know that does not stop the run (a periodic checkpoint that could not be
     * written: the previous one stays and the next save point tries again) */
    void (*on_warning)(tr_policy *p, tr_trainer *t, const char *msg);
    /* what the policy will do, in a line or a few (the command prints it before the first step, for
     * example which student layer learns from which teacher layer); after prepare */
    void (*describe)(tr_policy *p, tr_trainer *t, char *buf, size_t n);
    /* checkpoints: add sections / read them back (on resume) */
    int (*save)(tr_policy *p, tr_trainer *t, tr_ckpt_writer *w);
    int (*load)(tr_policy *p, tr_trainer *t, const tr_ckpt_file *f);
    /* export: adjust the plan of model m from the policy's sections in checkpoint f
     * (storage types, scales, masks, shapes); err has errlen bytes */
    int (*export)(tr_policy *p, const tr_gpt *m, const tr_ckpt_file *f, pm_plan *plan, char *err, size_t errlen);
};

/* Runs a statement for every policy of t that has `hook`, in order:
 *     TR_FOR_POLICIES(t, p, after_step) if (p->after_step(p, t) != 0) return TR_ERROR; */
#define TR_FOR_POLICIES(t, p, hook)                                                    \
    for (int tr_i_ = 0; tr_i_ < (t)->n_policy; tr_i_++)                                \
        if (((p) = (t)->policy[tr_i_])->hook)

#define TR_MAX_POLICIES 16

struct tr_trainer {
    tr_train_config cfg;
    tr_gpt *model;            /* borrowed; needs AG_PARAMS_GRAD | AG_PARAMS_MOMENTS */
    const tr_dataset *data;   /* borrowed */
    ag_ctx *ctx;              /* the step's arena and tape (owned) */
    ag_optim opt;             /* AdamW settings and its step count (= step after a good step) */
    tr_batch batch, vbatch;   /* training and validation buffers (owned) */
    ag_rng data_rng;          /* draws training batches: the data position */
    long step;                /* optimizer steps done */
    uint64_t tokens;          /* training tokens consumed */
    const char *config_text;  /* resolved configuration stored in checkpoints (borrowed) */
    volatile sig_atomic_t *stop; /* set (by a signal handler) to stop between steps; may be NULL */
    tr_policy *policy[TR_MAX_POLICIES];
    int n_policy;
    /* the policies' declared tensors: optimized, clipped and checkpointed with the model */
    ag_params extra;
    int *extra_owner;         /* [extra.count] index of the policy that declared each */
    unsigned needs;           /* union of the policies' needs */
    bool prepared;            /* declare has run and the extras are allocated */
    int declaring;            /* the policy whose declare hook runs, else -1 */
    bool started;             /* on_start has run */
    ag_tensor **probs, **hidden, **qkv; /* [n_layer], [n_layer + 1], [n_layer] (owned), filled by the forward */
    ag_tensor *ce;                /* this step's cross-entropy (the loss before the policies' terms) */
    tr_gpt_fwd fwd;               /* the forward's extras (the linear chain, probs, hidden) */
    /* the teacher (tr_trainer_set_teacher; borrowed), or one known only by its logits
     * (tr_trainer_set_teacher_logits), and its outputs of this step */
    tr_gpt *teacher;
    tr_teacher_logits_fn teacher_fn;
    void *teacher_user;
    int teacher_vocab;
    ag_tensor *teacher_logits;              /* [B,T,V] */
    ag_tensor **teacher_probs, **teacher_hidden, **teacher_qkv; /* [teacher layers], [+ 1], [layers] (owned arrays) */
    /* the policies' figures of this step (tr_metric_set) */
    tr_metric metric[TR_MAX_METRICS];
    int n_metrics;
    /* results of the latest step and evaluation */
    double loss, grad_norm, lr;
    tr_eval last_eval;
    bool evaluated;
    /* where the final checkpoint goes when cfg.out cannot be written: the first of these directories
     * that takes it (set by the caller, for example the run database's and the temporary directory;
     * NULL entries end the list) */
    const char *fallback_dir[3];
    char saved_to[4096];      /* the path the last checkpoint was written to */
    bool interrupted;         /* the run stopped on *stop (with TR_SAVED_ELSEWHERE too) */
    double train_seconds;     /* spent in steps in this process */
    long steps_this_process;
    char err[512];
};

/* Prepares a trainer for model m (freshly initialised, or loaded) and data d:
 * checks cfg, allocates the context, batch buffers [cfg.batch, d->ctx], seeds
 * the data generator from cfg.seed and sets step 0. d->ctx must be <= the
 * model's ctx and the vocabularies must match in size. Returns 0, or -1 with
 * err set; the caller frees t with tr_trainer_free either way. */
int tr_trainer_init(tr_trainer *t, tr_gpt *m, const tr_dataset *d, const tr_train_config *cfg, char *err,
                    size_t errlen);
void tr_trainer_free(tr_trainer *t); /* t may be NULL */

/* Appends a policy (not owned). Returns 0, or -1 with t->err set when
 * TR_MAX_POLICIES are set or the trainer is already prepared (policies are
 * added before a resume loads their state and before the first step). */
int tr_trainer_add_policy(tr_trainer *t, tr_policy *p);

/* Prepares the run once: runs every policy's declare hook, allocates their
 * tensors (zero, with gradients and moments) and the forward's buffers for
 * what the policies need. Called by tr_trainer_load and before the first step;
 * idempotent. Returns 0, or -1 with t->err set. */
int tr_trainer_prepare(tr_trainer *t);

/* Declares a trainable tensor of policy p (from its declare hook only),
 * named "<p->name>.<name>", of ndim (1..4) and shape, in optimizer group
 * `group` (TR_GROUP_DECAY or TR_GROUP_NO_DECAY): optimized and clipped with
 * the model, saved in checkpoints (section PTEN) and restored on resume,
 * never exported. Returns its handle (>= 0; tr_extra gives the tensor once
 * prepared), or -1 with t->err set (called outside declare, a duplicate name,
 * out of memory). */
int tr_declare(tr_trainer *t, tr_policy *p, const char *name, int ndim, const int *shape, int group);

/* The tensor of a handle from tr_declare (valid after tr_trainer_prepare). */
ag_tensor *tr_extra(tr_trainer *t, int handle);

/* Gives the model's parameters a mask (ag_params_mask_enable: every entry
 * kept): the forward then sees masked weights, and after every backward the
 * gradients of masked entries are zeroed before clipping, so a masked weight
 * stays exactly zero with both optimizer moments; masks are saved in
 * checkpoints (section MASK) and restored on resume. Returns 0, or -1 (out of
 * memory, t->err set). */
int tr_trainer_enable_masks(tr_trainer *t);

/* Sets the teacher whose forward runs (grad mode off) on every batch when a
 * policy needs it (TR_NEED_TEACHER*). teacher is borrowed, built without
 * gradients; it must have the student's vocabulary size and a context at
 * least the data's. Returns 0, or -1 with t->err naming both sides. */
int tr_trainer_set_teacher(tr_trainer *t, tr_gpt *teacher);

/* Sets a teacher known only by its logits: fn(user, ...) runs on every batch
 * when a policy needs the teacher's logits (TR_NEED_TEACHER); a policy that
 * needs its attention, hidden states or projections makes prepare fail. vocab
 * and ctx are the teacher's (checked as for tr_trainer_set_teacher). Returns
 * 0, or -1 with t->err. */
int tr_trainer_set_teacher_logits(tr_trainer *t, tr_teacher_logits_fn fn, void *user, int vocab, int ctx);

/* Reports this step's figure `name` (copied; at most 31 bytes): shown in the
 * progress line and recorded in the run log. A second report of a name in
 * the same step replaces the first; past TR_MAX_METRICS names it is dropped.
 * Metrics are cleared at the start of every step. */
void tr_metric_set(tr_trainer *t, const char *name, double value);

/* Records an error message on t (printf-style) unless one is set. */
void tr_trainer_fail(tr_trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One optimizer step (see the top of this file). On TR_DIVERGED nothing was
 * updated and t->err names the step and what was not finite. */
tr_status tr_train_step(tr_trainer *t);

/* Evaluates on cfg.eval_batches fixed validation batches (grad mode off);
 * stores the result in t->last_eval and *out (may be NULL). Returns 0 or -1. */
int tr_trainer_eval(tr_trainer *t, tr_eval *out);

/* Runs steps until cfg.steps (from t->step, so a resumed trainer continues),
 * evaluating every cfg.eval_every steps and at the end, calling observers,
 * writing the checkpoint to cfg.out after every evaluation (or every
 * cfg.ckpt_every steps when that is set), at the end and when *t->stop is
 * set. A periodic save that fails is a warning (on_warning): the previous
 * checkpoint stays and training goes on. A final save (the end, or a stop)
 * that fails tries "<dir>/<name of out>.rescued-<pid>" in each of
 * t->fallback_dir and returns TR_SAVED_ELSEWHERE with the path in t->saved_to
 * (TR_ERROR when none took it). On divergence returns TR_DIVERGED without
 * writing any checkpoint (the last good one on disk stays). Calls every
 * policy's on_end with the outcome. */
tr_status tr_train(tr_trainer *t);

/* Writes the full training state to path atomically (see checkpoint.h and
 * docs/training.md for the sections). Returns 0, or -1 with t->err set. */
int tr_trainer_save(tr_trainer *t, const char *path);

/* Restores a training state written by tr_trainer_save into an initialised
 * trainer whose model has the checkpoint's configuration: parameters,
 * moments, optimizer step, step, tokens, data generator, and each policy's
 * sections. Returns 0, or -1 with t->err naming the file, section and field. */
int tr_trainer_load(tr_trainer *t, const char *path);

/* ------------------------------------------------ model-only checkpoint use */

/* Reads the model's architecture (ARCH, or MODL in checkpoints written
 * before per-layer shapes; owned arrays, pm_arch_free), vocabulary (VOCB)
 * and, if conf is not NULL, the resolved configuration text (CONF; malloc'd,
 * caller frees) from an open checkpoint. Returns 0, or -1 with err naming the
 * field (nothing is left allocated). */
int tr_ckpt_read_meta(const tr_ckpt_file *f, pm_arch *arch, tr_vocab *vocab, char **conf, char *err,
                      size_t errlen);

/* Loads parameters (TENS) into m, whose configuration must be the
 * checkpoint's: every name and shape is checked. Moments are loaded too when
 * m has them and with_moments is set. Returns 0, or -1 with err. */
int tr_ckpt_read_params(const tr_ckpt_file *f, tr_gpt *m, bool with_moments, char *err, size_t errlen);

/* Opens path, builds the model it holds (flags as tr_gpt_init) with its
 * weights (and its masks, applied, when the checkpoint has them), and returns
 * its vocabulary and (if conf != NULL) config text. Returns 0, or -1 with
 * err; on error m is freed. */
int tr_model_load(const char *path, tr_gpt *m, int flags, tr_vocab *vocab, char **conf, char *err,
                  size_t errlen);

/* Evaluates m on validation batches 0 .. n-1 of d (b->B rows of b->T
 * positions each, b allocated by the caller) with grad mode off, using
 * context c and the forward extras fwd (NULL = plain). Returns 0, or -1 with
 * err (a batch could not be made, the forward failed). */
int tr_evaluate(ag_ctx *c, tr_gpt *m, const tr_gpt_fwd *fwd, const tr_dataset *d, tr_batch *b, int n,
                tr_eval *out, char *err, size_t errlen);

/* Generates up to n_new tokens after prompt ids[0, n_prompt) (n_prompt >= 1)
 * with temperature (0 = greedy argmax) and top-k (0 = all) sampling from rng,
 * writing prompt + new tokens into out[n_prompt + n_new]. The window slides
 * when the sequence outgrows ctx. If stop_id >= 0, generation ends after that
 * token. Returns the total length, or -1 with err. */
int tr_generate(ag_ctx *c, tr_gpt *m, const int *ids, int n_prompt, int n_new, double temperature, int top_k,
                int stop_id, ag_rng *rng, int *out, char *err, size_t errlen);

#endif
