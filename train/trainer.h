/* trainer.h - the one training loop: schedule, step, evaluation, checkpoints,
 * and the policy hooks compression methods and the run log attach to.
 *
 * The flow of one step (tr_train_step, a short function worth reading):
 *   reset the arena -> draw a batch -> forward -> loss (+ policy loss terms)
 *   -> zero grads, backward -> policies after backward -> grad norm; NaN/Inf
 *   means stop here, nothing updated -> clip -> AdamW at the scheduled lr
 *   -> policies after the step.
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
 * reductions run in a fixed order; the same seed and thread count give the
 * same bits, and a run resumed from a checkpoint continues bit-identically.
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
    int ckpt_every;       /* write the checkpoint every N steps; 0 = only at the end */
    const char *out;      /* checkpoint path, or NULL/"" for none */
} tr_train_config;

/* Defaults: 1000 steps, batch 16, lr 1e-3 to 1e-4, warmup 100, weight decay
 * 0.1, betas (0.9, 0.99), eps 1e-8, clip 1.0, seed 1, eval every 100 on 20
 * batches, no periodic checkpoint, no output path. */
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

/* What a progress callback sees after each step. */
typedef struct tr_progress {
    long step, steps;     /* steps done (this one included) and in total */
    double loss;          /* this step's training loss (the total, policy terms included) */
    double lr, grad_norm; /* this step's (pre-clip norm) */
    double val_loss;      /* validation loss if this step ended with an evaluation, else NAN */
    double accuracy;      /* its accuracy (tasks), else NAN */
    double tokens_per_s;  /* training throughput so far in this process (evaluation excluded) */
    double elapsed, eta;  /* seconds since start of this process, estimated seconds left */
} tr_progress;

/* An evaluation's result. */
typedef struct tr_eval {
    double loss;          /* mean cross-entropy per scored token over the batches */
    double accuracy;      /* exact-match accuracy (tasks), else NAN */
    long correct, total;  /* rows */
    long tokens;          /* scored tokens */
} tr_eval;

/* A policy: optional callbacks (NULL = not interested). Each gets the policy
 * itself (with its user pointer) and the trainer. Callbacks that return int
 * return 0 to continue or -1 to stop the run with an error (they write the
 * message into t->err with tr_trainer_fail). */
typedef struct tr_policy tr_policy;
struct tr_policy {
    const char *name;
    void *user;
    /* once, before the first step (after a resume has loaded its state) */
    int (*on_start)(tr_policy *p, tr_trainer *t);
    /* in the forward: wrap parameter `index` before use (see tr_gpt_fwd.weight) */
    ag_tensor *(*weight)(tr_policy *p, tr_trainer *t, ag_ctx *c, int index, ag_tensor *w);
    /* loss terms: return the new loss (e.g. loss + lambda * extra), or NULL on error.
     * logits [B,T,V]; probs [n_layer] of P[B,H,T,T] and hidden [n_layer+1] of
     * [B,T,C] are filled when the trainer was told some policy needs them. */
    ag_tensor *(*loss)(tr_policy *p, tr_trainer *t, ag_ctx *c, ag_tensor *logits, ag_tensor *loss);
    /* after backward, before the grad norm: touch gradients (e.g. mask them) */
    int (*after_backward)(tr_policy *p, tr_trainer *t);
    /* after the optimizer step: prune, regrow, re-apply masks, update observers */
    int (*after_step)(tr_policy *p, tr_trainer *t);
    /* observers */
    void (*on_progress)(tr_policy *p, tr_trainer *t, const tr_progress *pr);
    void (*on_eval)(tr_policy *p, tr_trainer *t, const tr_eval *ev);
    /* checkpoints: add sections / read them back (on resume) */
    int (*save)(tr_policy *p, tr_trainer *t, tr_ckpt_writer *w);
    int (*load)(tr_policy *p, tr_trainer *t, const tr_ckpt_file *f);
};

#define TR_MAX_POLICIES 16

/* Outcome of tr_train and tr_train_step. */
typedef enum tr_status {
    TR_OK = 0,          /* the step ran / the run finished all its steps */
    TR_ERROR = -1,      /* an error; message in t->err */
    TR_DIVERGED = 1,    /* NaN or Inf loss or grad norm: no update was made */
    TR_INTERRUPTED = 2, /* *stop was set: stopped between steps (checkpoint written) */
} tr_status;

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
    bool want_probs, want_hidden; /* a policy reads attention probabilities / hidden states */
    ag_tensor **probs, **hidden;  /* [n_layer], [n_layer + 1] (owned), filled by the forward */
    tr_gpt_fwd fwd;               /* the forward's extras (policies' weight hooks, probs, hidden) */
    bool started;                 /* on_start has run */
    /* results of the latest step and evaluation */
    double loss, grad_norm, lr;
    tr_eval last_eval;
    bool evaluated;
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

/* Appends a policy (not owned). Returns 0, or -1 when TR_MAX_POLICIES are set. */
int tr_trainer_add_policy(tr_trainer *t, tr_policy *p);

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
 * writing the checkpoint to cfg.out every cfg.ckpt_every steps, at the end
 * and when *t->stop is set. On divergence returns TR_DIVERGED without writing
 * any checkpoint (the last good one on disk stays). */
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

/* Reads the model configuration (MODL), vocabulary (VOCB) and, if conf is not
 * NULL, the resolved configuration text (CONF; malloc'd, caller frees) from an
 * open checkpoint. Returns 0, or -1 with err naming the field. */
int tr_ckpt_read_meta(const tr_ckpt_file *f, tr_gpt_config *cfg, tr_vocab *vocab, char **conf, char *err,
                      size_t errlen);

/* Loads parameters (TENS) into m, whose configuration must be the
 * checkpoint's: every name and shape is checked. Moments are loaded too when
 * m has them and with_moments is set. Returns 0, or -1 with err. */
int tr_ckpt_read_params(const tr_ckpt_file *f, tr_gpt *m, bool with_moments, char *err, size_t errlen);

/* Opens path, builds the model it holds (flags as tr_gpt_init) with its
 * weights, and returns its vocabulary and (if conf != NULL) config text.
 * Returns 0, or -1 with err; on error m is freed. */
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
