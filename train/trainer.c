/* trainer.c - schedule, the policies' lifecycle, the training step,
 * evaluation, the run loop, sampling. The checkpoint of the whole training
 * state is in state.c. */
#include "trainer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/parallel.h"
#include "dist/dist.h"
#include "keys.h"
#include "sampler.h"

tr_train_config tr_train_config_default(void) {
    tr_train_config c = {0};
    pare_keys k = {.n = 0};
    tr_train_keys(&k, &c);
    char err[256];
    if (pare_opts_defaults(k.row, k.n, err, sizeof err) != 0) abort(); /* a bad default in keys.c is a bug */
    c.out = NULL;
    return c;
}

int tr_train_config_check(const tr_train_config *c, char *err, size_t errlen) {
#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)
    if (c->steps < 1) BAD("steps = %d: expected at least 1", c->steps);
    if (c->batch < 1) BAD("batch = %d: expected at least 1", c->batch);
    if (!(c->lr > 0 && isfinite(c->lr))) BAD("lr = %g: expected a positive number", c->lr);
    if (!(c->min_lr >= 0 && c->min_lr <= c->lr)) BAD("min-lr = %g: expected a number in [0, lr = %g]", c->min_lr, c->lr);
    if (c->warmup < 0) BAD("warmup = %d: expected 0 or more steps", c->warmup);
    if (!(c->weight_decay >= 0 && isfinite(c->weight_decay))) BAD("weight-decay = %g: expected >= 0", c->weight_decay);
    if (!(c->beta1 >= 0 && c->beta1 < 1)) BAD("beta1 = %g: expected a number in [0, 1)", c->beta1);
    if (!(c->beta2 >= 0 && c->beta2 < 1)) BAD("beta2 = %g: expected a number in [0, 1)", c->beta2);
    if (!(c->eps > 0 && isfinite(c->eps))) BAD("eps = %g: expected a positive number", c->eps);
    if (!(c->grad_clip >= 0 && isfinite(c->grad_clip))) BAD("grad-clip = %g: expected >= 0 (0 = off)", c->grad_clip);
    if (c->eval_every < 0) BAD("eval-every = %d: expected >= 0 (0 = only at the end)", c->eval_every);
    if (c->eval_batches < 1) BAD("eval-batches = %d: expected at least 1", c->eval_batches);
    if (c->ckpt_every < 0) BAD("ckpt-every = %d: expected >= 0 (0 = after every evaluation)", c->ckpt_every);
#undef BAD
    return 0;
}

/* Linear warmup, then cosine decay to min_lr (Loshchilov and Hutter 2017,
 * "SGDR"; the single-cycle form GPT-2/nanoGPT use):
 *   step < warmup:  lr * (step + 1) / warmup
 *   otherwise:      min_lr + 0.5 (lr - min_lr) (1 + cos(pi p)),
 *                   p = (step - warmup) / max(1, steps - warmup) in [0, 1]. */
double tr_lr_at(const tr_train_config *c, long step) {
    if (step < c->warmup) return c->lr * (double)(step + 1) / (double)c->warmup;
    long span = c->steps - c->warmup;
    double p = (double)(step - c->warmup) / (double)(span > 1 ? span : 1);
    if (p > 1) p = 1;
    return c->min_lr + 0.5 * (c->lr - c->min_lr) * (1.0 + cos(3.14159265358979323846 * p));
}

void tr_trainer_fail(tr_trainer *t, const char *fmt, ...) {
    if (t->err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, sizeof t->err, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ set-up */

/* The forward's linear hook: the chain of the policies' linear hooks. */
static ag_tensor *linear_hook(void *user, ag_ctx *c, const pm_site *site, pm_part part, ag_tensor *x, ag_tensor *w,
                              ag_tensor *b) {
    tr_trainer *t = user;
    tr_linear l = {t, c, site, part, ag_grad_enabled(c), 0};
    return tr_linear_next(&l, x, w, b);
}

ag_tensor *tr_linear_next(tr_linear *l, ag_tensor *x, ag_tensor *w, ag_tensor *b) {
    tr_trainer *t = l->t;
    while (l->next < t->n_policy) {
        tr_policy *p = t->policy[l->next++];
        if (p->linear) return p->linear(p, l, x, w, b);
    }
    return ag_linear(l->c, x, w, b);
}

int tr_trainer_init(tr_trainer *t, tr_gpt *m, const tr_dataset *d, const tr_train_config *cfg, char *err,
                    size_t errlen) {
    memset(t, 0, sizeof *t);
    ag_params_init(&t->extra);
    if (tr_train_config_check(cfg, err, errlen) != 0) return -1;
    if (!m->params.grad || !m->params.m) {
        snprintf(err, errlen, "trainer: the model was built without gradients or moments");
        return -1;
    }
    if (d->vocab.size != m->arch.vocab) {
        snprintf(err, errlen, "vocabulary mismatch: the model has %d tokens, the data %s has %d", m->arch.vocab,
                 d->spec, d->vocab.size);
        return -1;
    }
    if (d->ctx > m->arch.ctx) {
        snprintf(err, errlen, "the data was opened for ctx %d, the model's ctx is %d", d->ctx, m->arch.ctx);
        return -1;
    }
    if (cfg->batch < pd_size()) {
        snprintf(err, errlen, "batch = %d over %d ranks: expected a global batch of at least one row per rank",
                 cfg->batch, pd_size());
        return -1;
    }
    t->cfg = *cfg;
    t->model = m;
    t->data = d;
    t->ctx = ag_ctx_new();
    t->probs = calloc((size_t)m->arch.n_layer, sizeof *t->probs);
    t->hidden = calloc((size_t)m->arch.n_layer + 1, sizeof *t->hidden);
    t->qkv = calloc((size_t)m->arch.n_layer, sizeof *t->qkv);
    if (!t->ctx || !t->probs || !t->hidden || !t->qkv) {
        snprintf(err, errlen, "trainer: out of memory");
        return -1;
    }
    if (tr_batch_init(&t->batch, cfg->batch, d->ctx, err, errlen) != 0 ||
        tr_batch_init(&t->vbatch, cfg->batch, d->ctx, err, errlen) != 0)
        return -1;
    ag_optim_adamw(&t->opt, (float)cfg->lr, (float)cfg->beta1, (float)cfg->beta2, (float)cfg->eps,
                   (float)cfg->weight_decay);
    ag_optim_set_group(&t->opt, TR_GROUP_DECAY, (float)cfg->weight_decay, 1.0f);
    ag_optim_set_group(&t->opt, TR_GROUP_NO_DECAY, 0.0f, 1.0f);
    /* the data order has its own stream, so it does not shift when the model's init changes */
    ag_rng_seed(&t->data_rng, cfg->seed ^ 0x6a09e667f3bcc909ull);
    t->declaring = -1;
    t->fwd.linear = linear_hook;
    t->fwd.user = t;
    t->loss = t->grad_norm = t->lr = NAN;
    return 0;
}

void tr_trainer_free(tr_trainer *t) {
    if (!t) return;
    ag_ctx_free(t->ctx);
    tr_batch_free(&t->batch);
    tr_batch_free(&t->vbatch);
    ag_params_free(&t->extra);
    free(t->extra_owner);
    free(t->probs);
    free(t->hidden);
    free(t->qkv);
    free(t->teacher_probs);
    free(t->teacher_hidden);
    free(t->teacher_qkv);
    memset(t, 0, sizeof *t);
}

int tr_trainer_add_policy(tr_trainer *t, tr_policy *p) {
    if (t->prepared) {
        tr_trainer_fail(t, "policy %s: added after the run was prepared (add policies before a resume and the first "
                        "step)", p->name ? p->name : "?");
        return -1;
    }
    if (t->n_policy >= TR_MAX_POLICIES) {
        tr_trainer_fail(t, "policy %s: at most %d policies", p->name ? p->name : "?", TR_MAX_POLICIES);
        return -1;
    }
    t->policy[t->n_policy++] = p;
    return 0;
}

int tr_declare(tr_trainer *t, tr_policy *p, const char *name, int ndim, const int *shape, int group) {
    int owner = -1;
    for (int i = 0; i < t->n_policy; i++)
        if (t->policy[i] == p) owner = i;
    if (t->prepared || owner < 0 || owner != t->declaring) {
        tr_trainer_fail(t, "policy %s: tensor %s declared outside its declare hook", p->name, name);
        return -1;
    }
    char full[128];
    snprintf(full, sizeof full, "%s.%s", p->name, name);
    if (ag_params_find(&t->extra, full) >= 0) {
        tr_trainer_fail(t, "policy %s: tensor %s declared twice", p->name, full);
        return -1;
    }
    if (ndim < 1 || ndim > AG_MAX_DIMS || (group != TR_GROUP_DECAY && group != TR_GROUP_NO_DECAY)) {
        tr_trainer_fail(t, "policy %s: tensor %s: ndim %d and group %d: expected 1..%d and a trainer group", p->name,
                        full, ndim, group, AG_MAX_DIMS);
        return -1;
    }
    int i = ag_params_add(&t->extra, full, ndim, shape, group);
    int *own = i >= 0 ? realloc(t->extra_owner, (size_t)(i + 1) * sizeof *own) : NULL;
    if (!own) {
        tr_trainer_fail(t, "policy %s: out of memory declaring %s", p->name, full);
        return -1;
    }
    own[i] = owner;
    t->extra_owner = own;
    return i;
}

ag_tensor *tr_extra(tr_trainer *t, int handle) { return ag_param(&t->extra, handle); }

int tr_trainer_enable_masks(tr_trainer *t) {
    if (ag_params_mask_enable(&t->model->params) != 0) {
        tr_trainer_fail(t, "out of memory: a mask of %zu floats", t->model->params.n);
        return -1;
    }
    return 0;
}

static ag_tensor **alloc_tensors(int n) { return calloc((size_t)n, sizeof(ag_tensor *)); }

int tr_trainer_set_teacher(tr_trainer *t, tr_gpt *teacher) {
    if (teacher->arch.vocab != t->model->arch.vocab) {
        tr_trainer_fail(t, "the teacher has a vocabulary of %d tokens, the student %d: distillation needs the same "
                        "vocabulary", teacher->arch.vocab, t->model->arch.vocab);
        return -1;
    }
    if (teacher->arch.ctx < t->data->ctx) {
        tr_trainer_fail(t, "the teacher's context is %d, the student trains on %d positions: the student's context "
                        "must not exceed the teacher's", teacher->arch.ctx, t->data->ctx);
        return -1;
    }
    free(t->teacher_probs);
    free(t->teacher_hidden);
    free(t->teacher_qkv);
    t->teacher_probs = alloc_tensors(teacher->arch.n_layer);
    t->teacher_hidden = alloc_tensors(teacher->arch.n_layer + 1);
    t->teacher_qkv = alloc_tensors(teacher->arch.n_layer);
    if (!t->teacher_probs || !t->teacher_hidden || !t->teacher_qkv) {
        tr_trainer_fail(t, "out of memory");
        return -1;
    }
    t->teacher = teacher;
    return 0;
}

int tr_trainer_set_teacher_logits(tr_trainer *t, tr_teacher_logits_fn fn, void *user, int vocab, int ctx) {
    if (vocab != t->model->arch.vocab) {
        tr_trainer_fail(t, "the teacher has a vocabulary of %d tokens, the student %d: distillation needs the same "
                        "vocabulary", vocab, t->model->arch.vocab);
        return -1;
    }
    if (ctx < t->data->ctx) {
        tr_trainer_fail(t, "the teacher's context is %d, the student trains on %d positions: the student's context "
                        "must not exceed the teacher's", ctx, t->data->ctx);
        return -1;
    }
    t->teacher_fn = fn;
    t->teacher_user = user;
    t->teacher_vocab = vocab;
    return 0;
}

int tr_trainer_prepare(tr_trainer *t) {
    if (t->prepared) return 0;
    tr_policy *p;
    t->needs = 0;
    for (int i = 0; i < t->n_policy; i++) {
        p = t->policy[i];
        t->needs |= p->needs;
        if (!p->declare) continue;
        t->declaring = i;
        int rc = p->declare(p, t);
        t->declaring = -1;
        if (rc != 0) {
            tr_trainer_fail(t, "policy %s: declare failed", p->name);
            return -1;
        }
    }
    if ((t->needs & TR_NEED_ANY_TEACHER) && !t->teacher && !t->teacher_fn) {
        tr_trainer_fail(t, "a policy needs a teacher, and none was given (tr_trainer_set_teacher)");
        return -1;
    }
    if ((t->needs & (TR_NEED_ANY_TEACHER & ~TR_NEED_TEACHER)) && !t->teacher) {
        tr_trainer_fail(t, "the teacher is known only by its logits (a model file): distilling its attention, hidden "
                        "states or projections needs the teacher's checkpoint");
        return -1;
    }
    if (t->extra.count && ag_params_alloc(&t->extra, AG_PARAMS_GRAD | AG_PARAMS_MOMENTS) != 0) {
        tr_trainer_fail(t, "out of memory: %zu floats of policy tensors", t->extra.n);
        return -1;
    }
    t->prepared = true;
    return 0;
}

/* Prepares the run and runs on_start once. */
static int start(tr_trainer *t) {
    if (t->started) return 0;
    if (tr_trainer_prepare(t) != 0) return -1;
    tr_policy *p;
    TR_FOR_POLICIES(t, p, on_start) if (p->on_start(p, t) != 0) return -1;
    t->started = true;
    return 0;
}

void tr_metric_set(tr_trainer *t, const char *name, double value) {
    for (int i = 0; i < t->n_metrics; i++)
        if (strcmp(t->metric[i].name, name) == 0) {
            t->metric[i].value = value;
            return;
        }
    if (t->n_metrics >= TR_MAX_METRICS) return;
    tr_metric *m = &t->metric[t->n_metrics++];
    snprintf(m->name, sizeof m->name, "%s", name);
    m->value = value;
}

static tr_status ctx_failed(tr_trainer *t, const char *what) {
    const char *e = ag_error(t->ctx);
    tr_trainer_fail(t, "step %ld: %s: %s", t->step + 1, what, e ? e : "failed");
    return TR_ERROR;
}

/* ------------------------------------------------------------------- step */

/* The teacher's forward on this batch (grad mode off), for the policies that
 * need it: its logits, and its attention probabilities and hidden states when
 * asked. Returns 0, or -1 with the error in the context. */
static int teacher_forward(tr_trainer *t, const tr_batch *b) {
    if (t->teacher_fn) { /* a logits-only teacher: its logits as a constant of the step */
        int shape[3] = {b->B, b->T, t->teacher_vocab};
        bool prev = ag_set_grad(t->ctx, false);
        t->teacher_logits = ag_new(t->ctx, 3, shape, "teacher_logits"); /* [B,T,V] */
        ag_set_grad(t->ctx, prev);
        if (!t->teacher_logits) return -1;
        char err[512];
        if (t->teacher_fn(t->teacher_user, b->x, b->B, b->T, t->teacher_logits->data, err, sizeof err) != 0) {
            ag_fail(t->ctx, "teacher: %s", err);
            return -1;
        }
        return 0;
    }
    tr_gpt_fwd tf = {0};
    if (t->needs & TR_NEED_TEACHER_PROBS) tf.probs = t->teacher_probs;
    if (t->needs & TR_NEED_TEACHER_HIDDEN) tf.hidden = t->teacher_hidden;
    if (t->needs & TR_NEED_TEACHER_QKV) tf.qkv = t->teacher_qkv;
    bool prev = ag_set_grad(t->ctx, false);
    t->teacher_logits = tr_gpt_forward(t->ctx, t->teacher, b->x, b->B, b->T, &tf); /* [B,T,V] */
    ag_set_grad(t->ctx, prev);
    return t->teacher_logits ? 0 : -1;
}

/* Data parallelism (dist/dist.h): every rank draws the same global batch from
 * the same stream and trains on its own rows of it, [r B / N, (r+1) B / N).
 * Its loss is the mean over its shard's scored tokens, so the gradient of the
 * global mean is sum_r (n_r / n) g_r, n_r its scored tokens; every rank knows
 * every n_r from the global batch. Returns rank r's weight n_r / n (1 at one
 * rank) and sets shard to a view of r's rows. */
static double shard_of(const tr_batch *b, tr_batch *shard) {
    int N = pd_size(), r = pd_rank();
    int r0 = (int)((long)b->B * r / N), r1 = (int)((long)b->B * (r + 1) / N);
    *shard = (tr_batch){.B = r1 - r0, .T = b->T, .x = b->x + (size_t)r0 * b->T, .y = b->y + (size_t)r0 * b->T};
    if (N == 1) return 1.0;
    long all = 0, mine = 0;
    for (int i = 0; i < b->B * b->T; i++) {
        bool scored = b->y[i] != TR_IGNORE;
        all += scored;
        mine += scored && i >= r0 * b->T && i < r1 * b->T;
    }
    return all ? (double)mine / (double)all : 0.0;
}

/* The fixed-order sum over ranks of w * each gradient and of w * loss: every
 * rank then holds the same gradient and loss bits. A no-op at one rank. */
static int reduce_grads(tr_trainer *t, double w, float *loss) {
    if (pd_size() == 1) return 0;
    ag_params *sets[2] = {&t->model->params, &t->extra};
    float fw = (float)w;
    for (int s = 0; s < 2; s++) {
        ag_params *p = sets[s];
        if (!p->grad || !p->n) continue;
        for (size_t i = 0; i < p->n; i++) p->grad[i] *= fw;
        if (pd_sum_floats(p->grad, p->n, t->err, sizeof t->err) != 0) return -1;
    }
    double l = w * (double)*loss;
    if (pd_sum_doubles(&l, 1, t->err, sizeof t->err) != 0) return -1;
    *loss = (float)l;
    return 0;
}

/* Test-only: PARE_TEST_FAIL="RANK:STEP" makes that rank fail at that step
 * (the tests of a rank that dies mid-run). */
static bool test_fail_here(const tr_trainer *t) {
    const char *e = getenv("PARE_TEST_FAIL");
    int r, k;
    return e && sscanf(e, "%d:%d", &r, &k) == 2 && r == pd_rank() && k == t->step + 1;
}

/* One optimizer step: the whole flow of training in one place. */
tr_status tr_train_step(tr_trainer *t) {
    ag_ctx *c = t->ctx;
    ag_params *p = &t->model->params;
    ag_params *sets[2] = {p, &t->extra};
    tr_batch *b = &t->batch; /* x, y: [B, T] */
    tr_policy *pol;
    t->err[0] = '\0';
    t->n_metrics = 0;
    if (start(t) != 0) return TR_ERROR;

    /* 1. forget the previous step's activations, draw a batch */
    if (ag_ctx_reset(c) != 0) return ctx_failed(t, "reset");
    if (tr_data_train_batch(t->data, &t->data_rng, b, t->err, sizeof t->err) != 0) return TR_ERROR;
    if (test_fail_here(t)) {
        tr_trainer_fail(t, "step %ld: failing on purpose (PARE_TEST_FAIL)", t->step + 1);
        return TR_ERROR;
    }
    tr_batch sb; /* this rank's rows of the global batch (all of it at one rank) */
    double weight = shard_of(b, &sb);
    if ((t->teacher || t->teacher_fn) && (t->needs & TR_NEED_ANY_TEACHER) && teacher_forward(t, &sb) != 0)
        return ctx_failed(t, "teacher forward");

    /* 2. forward (every linear site through the policies' hooks) and loss (policies may add terms) */
    t->fwd.probs = t->needs & TR_NEED_PROBS ? t->probs : NULL;
    t->fwd.hidden = t->needs & TR_NEED_HIDDEN ? t->hidden : NULL;
    t->fwd.qkv = t->needs & TR_NEED_QKV ? t->qkv : NULL;
    ag_tensor *logits = tr_gpt_forward(c, t->model, sb.x, sb.B, sb.T, &t->fwd); /* [B,T,V] */
    ag_tensor *loss = t->ce = ag_cross_entropy(c, logits, sb.y, TR_IGNORE);     /* [1] */
    TR_FOR_POLICIES(t, pol, loss) if (loss) loss = pol->loss(pol, t, c, logits, loss);
    if (!loss) return ctx_failed(t, "forward");

    /* 3. backward into freshly zeroed gradients; masked entries get none */
    ag_params_zero_grad(p);
    ag_params_zero_grad(&t->extra);
    if (ag_backward(c, loss) != 0) {
        tr_trainer_fail(t, "step %ld: the loss does not depend on any parameter", t->step + 1);
        return TR_ERROR;
    }
    /* 3b. across ranks: the global batch's gradient and loss, the same bits on every rank, before any policy
     * reads them (RigL's regrowth, clipping and the divergence check then agree everywhere) */
    float step_loss = loss->data[0];
    if (reduce_grads(t, weight, &step_loss) != 0) return TR_ERROR;
    TR_FOR_POLICIES(t, pol, after_backward) if (pol->after_backward(pol, t) != 0) return TR_ERROR;
    ag_params_mask_grads(p);

    /* 4. divergence check and clipping: a non-finite loss or gradient updates nothing */
    t->loss = step_loss;
    t->lr = tr_lr_at(&t->cfg, t->step);
    char why[256];
    if (!isfinite(t->loss)) {
        tr_trainer_fail(t, "diverged at step %ld: the loss is %g; no update was made", t->step + 1, t->loss);
        return TR_DIVERGED;
    }
    if (ag_clip_grad_norm_sets(sets, 2, t->cfg.grad_clip, &t->grad_norm, why, sizeof why) != 0) {
        tr_trainer_fail(t, "diverged at step %ld: %s; no update was made", t->step + 1, why);
        return TR_DIVERGED;
    }

    /* 5. AdamW at the scheduled learning rate (masked entries stay zero) */
    t->opt.lr = (float)t->lr;
    if (ag_optim_step_sets(&t->opt, sets, 2, t->err, sizeof t->err) != 0) return TR_ERROR;
    TR_FOR_POLICIES(t, pol, after_step) if (pol->after_step(pol, t) != 0) return TR_ERROR;
    t->step++;
    t->tokens += (uint64_t)b->B * (uint64_t)b->T;
    return TR_OK;
}

/* --------------------------------------------------------------- evaluate */

int tr_evaluate(ag_ctx *c, tr_gpt *m, const tr_gpt_fwd *fwd, const tr_dataset *d, tr_batch *b, int n,
                tr_eval *out, char *err, size_t errlen) {
    tr_gpt_fwd plain = {0};
    if (fwd) {
        plain.linear = fwd->linear;
        plain.user = fwd->user;
    }
    bool prev = ag_set_grad(c, false);
    double sum = 0;
    long tokens = 0, correct = 0, total = 0;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (ag_ctx_reset(c) != 0 || tr_data_val_batch(d, i, b, err, errlen) != 0) {
            if (ag_error(c)) snprintf(err, errlen, "evaluation: %s", ag_error(c));
            rc = -1;
            break;
        }
        ag_tensor *logits = tr_gpt_forward(c, m, b->x, b->B, b->T, &plain); /* [B,T,V] */
        ag_tensor *loss = ag_cross_entropy(c, logits, b->y, TR_IGNORE);
        if (!loss) {
            snprintf(err, errlen, "evaluation batch %d: %s", i, ag_error(c) ? ag_error(c) : "forward failed");
            rc = -1;
            break;
        }
        long scored = 0;
        for (int j = 0; j < b->B * b->T; j++) scored += b->y[j] != TR_IGNORE;
        sum += (double)loss->data[0] * (double)scored;
        tokens += scored;
        if (d->has_accuracy) tr_batch_accuracy(b, logits->data, m->arch.vocab, &correct, &total);
    }
    ag_set_grad(c, prev);
    if (rc != 0) return -1;
    out->loss = tokens ? sum / (double)tokens : NAN;
    out->tokens = tokens;
    out->correct = correct;
    out->total = total;
    out->accuracy = d->has_accuracy && total ? (double)correct / (double)total : NAN;
    return 0;
}

int tr_trainer_eval(tr_trainer *t, tr_eval *out) {
    tr_eval ev;
    if (start(t) != 0) return -1;
    if (tr_evaluate(t->ctx, t->model, &t->fwd, t->data, &t->vbatch, t->cfg.eval_batches, &ev, t->err,
                    sizeof t->err) != 0)
        return -1;
    t->last_eval = ev;
    t->evaluated = true;
    tr_policy *p;
    TR_FOR_POLICIES(t, p, on_eval) p->on_eval(p, t, &ev);
    if (out) *out = ev;
    return 0;
}

/* ---------------------------------------------------------------- the run */

static bool should_stop(const tr_trainer *t) { return t->stop && *t->stop; }

static void warn(tr_trainer *t, const char *msg) {
    tr_policy *p;
    TR_FOR_POLICIES(t, p, on_warning) p->on_warning(p, t, msg);
}

/* A periodic save: a failure is a warning, the previous checkpoint stays. */
static void save_periodic(tr_trainer *t) {
    if (tr_trainer_save(t, t->cfg.out) == 0) {
        snprintf(t->saved_to, sizeof t->saved_to, "%s", t->cfg.out);
        return;
    }
    char msg[768];
    snprintf(msg, sizeof msg, "step %ld: %s; the previous checkpoint stays, training goes on and the next save "
             "point tries again", t->step, t->err);
    t->err[0] = '\0';
    warn(t, msg);
}

/* The final save: cfg.out, else a fallback directory. */
static tr_status save_final(tr_trainer *t, tr_status ok) {
    if (tr_trainer_save(t, t->cfg.out) == 0) {
        snprintf(t->saved_to, sizeof t->saved_to, "%s", t->cfg.out);
        return ok;
    }
    char first[600];
    snprintf(first, sizeof first, "%s", t->err);
    const char *base = strrchr(t->cfg.out, '/');
    base = base ? base + 1 : t->cfg.out;
    for (int i = 0; i < 3 && t->fallback_dir[i]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.rescued-%ld", t->fallback_dir[i], base[0] ? base : "pare.ckpt",
                 (long)getpid());
        t->err[0] = '\0';
        if (tr_trainer_save(t, path) == 0) {
            snprintf(t->saved_to, sizeof t->saved_to, "%s", path);
            tr_trainer_fail(t, "%s; the training state was saved to %s instead", first, path);
            return TR_SAVED_ELSEWHERE;
        }
    }
    t->err[0] = '\0';
    tr_trainer_fail(t, "%s; no fallback directory took the training state either: nothing was saved", first);
    return TR_ERROR;
}

/* The run of tr_train without on_end. */
static tr_status run(tr_trainer *t) {
    const tr_train_config *cfg = &t->cfg;
    bool have_out = cfg->out && cfg->out[0];
    if (start(t) != 0) return TR_ERROR;
    double t0 = ag_now();
    long first = t->step;
    tr_policy *p;
    while (t->step < cfg->steps) {
        if (should_stop(t)) {
            t->interrupted = true;
            tr_status st = have_out ? save_final(t, TR_INTERRUPTED) : TR_INTERRUPTED;
            if (st == TR_INTERRUPTED) tr_trainer_fail(t, "interrupted after step %ld of %d", t->step, cfg->steps);
            return st;
        }
        double s0 = ag_now();
        tr_status st = tr_train_step(t);
        t->train_seconds += ag_now() - s0;
        t->steps_this_process++;
        if (st != TR_OK) return st;

        bool last = t->step == cfg->steps;
        bool eval = last || (cfg->eval_every > 0 && t->step % cfg->eval_every == 0);
        tr_progress pr = {.step = t->step, .steps = cfg->steps, .loss = t->loss, .lr = t->lr,
                          .grad_norm = t->grad_norm, .val_loss = NAN, .accuracy = NAN,
                          .metrics = t->metric, .n_metrics = t->n_metrics};
        if (eval) {
            if (tr_trainer_eval(t, NULL) != 0) return TR_ERROR;
            pr.val_loss = t->last_eval.loss;
            pr.accuracy = t->last_eval.accuracy;
        }
        double now = ag_now();
        pr.elapsed = now - t0;
        pr.tokens_per_s = t->train_seconds > 0
                              ? (double)t->steps_this_process * cfg->batch * t->data->ctx / t->train_seconds
                              : 0;
        pr.eta = pr.elapsed / (double)(t->step - first) * (double)(cfg->steps - t->step);
        TR_FOR_POLICIES(t, p, on_progress) p->on_progress(p, t, &pr);
        bool periodic = cfg->ckpt_every > 0 ? t->step % cfg->ckpt_every == 0 : eval;
        if (have_out && last) return save_final(t, TR_OK);
        if (have_out && periodic) save_periodic(t);
    }
    if (!t->evaluated && tr_trainer_eval(t, NULL) != 0) return TR_ERROR; /* resumed at the end */
    return TR_OK;
}

tr_status tr_train(tr_trainer *t) {
    tr_status st = run(t);
    tr_policy *p;
    TR_FOR_POLICIES(t, p, on_end) p->on_end(p, t, st);
    return st;
}

/* --------------------------------------------------------------- sampling */

/* Picks a token from logits[V] with the one sampler (train/sampler.h). */
static int pick(const float *logits, int V, double temperature, int top_k, ag_rng *rng, double *probs) {
    return tr_sample_pick(logits, V, temperature, top_k, rng, probs);
}

int tr_generate(ag_ctx *c, tr_gpt *m, const int *ids, int n_prompt, int n_new, double temperature, int top_k,
                int stop_id, ag_rng *rng, int *out, char *err, size_t errlen) {
    if (n_prompt < 1 || n_new < 0) {
        snprintf(err, errlen, "generate: expected a prompt of at least one token and n >= 0");
        return -1;
    }
    int V = m->arch.vocab, ctx = m->arch.ctx;
    double *probs = malloc((size_t)V * sizeof *probs);
    if (!probs) {
        snprintf(err, errlen, "generate: out of memory");
        return -1;
    }
    memmove(out, ids, (size_t)n_prompt * sizeof *out);
    bool prev = ag_set_grad(c, false);
    int len = n_prompt, rc = 0;
    for (int k = 0; k < n_new; k++) {
        int T = len < ctx ? len : ctx;
        const int *win = out + (len - T);
        if (ag_ctx_reset(c) != 0) {
            rc = -1;
            break;
        }
        ag_tensor *logits = tr_gpt_forward(c, m, win, 1, T, NULL); /* [1,T,V] */
        if (!logits) {
            rc = -1;
            break;
        }
        int id = pick(logits->data + (size_t)(T - 1) * V, V, temperature, top_k, rng, probs);
        out[len++] = id;
        if (id == stop_id) break;
    }
    if (rc != 0) snprintf(err, errlen, "generate: %s", ag_error(c) ? ag_error(c) : "failed");
    ag_set_grad(c, prev);
    free(probs);
    return rc == 0 ? len : -1;
}
