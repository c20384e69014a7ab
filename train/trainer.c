/* trainer.c - schedule, the training step, evaluation, the run loop,
 * checkpoints of the whole training state, sampling. */
#include "trainer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "sampler.h"

tr_train_config tr_train_config_default(void) {
    tr_train_config c = {.steps = 1000, .batch = 16, .lr = 1e-3, .min_lr = 1e-4, .warmup = 100,
                         .weight_decay = 0.1, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .grad_clip = 1.0,
                         .seed = 1, .eval_every = 100, .eval_batches = 20, .ckpt_every = 0, .out = NULL};
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
    if (c->ckpt_every < 0) BAD("ckpt-every = %d: expected >= 0 (0 = only at the end)", c->ckpt_every);
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

/* The forward's weight hook: every policy's in the order they were added. */
static ag_tensor *weight_hook(void *user, ag_ctx *c, int index, ag_tensor *w) {
    tr_trainer *t = user;
    for (int i = 0; i < t->n_policy && w; i++)
        if (t->policy[i]->weight) w = t->policy[i]->weight(t->policy[i], t, c, index, w);
    return w;
}

int tr_trainer_init(tr_trainer *t, tr_gpt *m, const tr_dataset *d, const tr_train_config *cfg, char *err,
                    size_t errlen) {
    memset(t, 0, sizeof *t);
    if (tr_train_config_check(cfg, err, errlen) != 0) return -1;
    if (!m->params.grad || !m->params.m) {
        snprintf(err, errlen, "trainer: the model was built without gradients or moments");
        return -1;
    }
    if (d->vocab.size != m->cfg.vocab) {
        snprintf(err, errlen, "vocabulary mismatch: the model has %d tokens, the data %s has %d", m->cfg.vocab,
                 d->spec, d->vocab.size);
        return -1;
    }
    if (d->ctx > m->cfg.ctx) {
        snprintf(err, errlen, "the data was opened for ctx %d, the model's ctx is %d", d->ctx, m->cfg.ctx);
        return -1;
    }
    t->cfg = *cfg;
    t->model = m;
    t->data = d;
    t->ctx = ag_ctx_new();
    t->probs = calloc((size_t)m->cfg.n_layer, sizeof *t->probs);
    t->hidden = calloc((size_t)m->cfg.n_layer + 1, sizeof *t->hidden);
    if (!t->ctx || !t->probs || !t->hidden) {
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
    t->fwd.weight = weight_hook;
    t->fwd.user = t;
    t->loss = t->grad_norm = t->lr = NAN;
    return 0;
}

void tr_trainer_free(tr_trainer *t) {
    if (!t) return;
    ag_ctx_free(t->ctx);
    tr_batch_free(&t->batch);
    tr_batch_free(&t->vbatch);
    free(t->probs);
    free(t->hidden);
    memset(t, 0, sizeof *t);
}

int tr_trainer_add_policy(tr_trainer *t, tr_policy *p) {
    if (t->n_policy >= TR_MAX_POLICIES) return -1;
    t->policy[t->n_policy++] = p;
    return 0;
}

static tr_status ctx_failed(tr_trainer *t, const char *what) {
    const char *e = ag_error(t->ctx);
    tr_trainer_fail(t, "step %ld: %s: %s", t->step + 1, what, e ? e : "failed");
    return TR_ERROR;
}

/* ------------------------------------------------------------------- step */

/* One optimizer step: the whole flow of training in one place. */
tr_status tr_train_step(tr_trainer *t) {
    ag_ctx *c = t->ctx;
    ag_params *p = &t->model->params;
    tr_batch *b = &t->batch; /* x, y: [B, T] */
    t->err[0] = '\0';

    /* 1. forget the previous step's activations, draw a batch */
    if (ag_ctx_reset(c) != 0) return ctx_failed(t, "reset");
    if (tr_data_train_batch(t->data, &t->data_rng, b, t->err, sizeof t->err) != 0) return TR_ERROR;

    /* 2. forward and loss (policies may add terms) */
    t->fwd.probs = t->want_probs ? t->probs : NULL;
    t->fwd.hidden = t->want_hidden ? t->hidden : NULL;
    ag_tensor *logits = tr_gpt_forward(c, t->model, b->x, b->B, b->T, &t->fwd); /* [B,T,V] */
    ag_tensor *loss = ag_cross_entropy(c, logits, b->y, TR_IGNORE);             /* [1] */
    for (int i = 0; i < t->n_policy && loss; i++)
        if (t->policy[i]->loss) loss = t->policy[i]->loss(t->policy[i], t, c, logits, loss);
    if (!loss) return ctx_failed(t, "forward");

    /* 3. backward into freshly zeroed gradients */
    ag_params_zero_grad(p);
    if (ag_backward(c, loss) != 0) {
        tr_trainer_fail(t, "step %ld: the loss does not depend on any parameter", t->step + 1);
        return TR_ERROR;
    }
    for (int i = 0; i < t->n_policy; i++)
        if (t->policy[i]->after_backward && t->policy[i]->after_backward(t->policy[i], t) != 0) return TR_ERROR;

    /* 4. divergence check and clipping: a non-finite loss or gradient updates nothing */
    t->loss = loss->data[0];
    t->lr = tr_lr_at(&t->cfg, t->step);
    char why[256];
    if (!isfinite(t->loss)) {
        tr_trainer_fail(t, "diverged at step %ld: the loss is %g; no update was made", t->step + 1, t->loss);
        return TR_DIVERGED;
    }
    if (ag_clip_grad_norm(p, t->cfg.grad_clip, &t->grad_norm, why, sizeof why) != 0) {
        tr_trainer_fail(t, "diverged at step %ld: %s; no update was made", t->step + 1, why);
        return TR_DIVERGED;
    }

    /* 5. AdamW at the scheduled learning rate */
    t->opt.lr = (float)t->lr;
    if (ag_optim_step(&t->opt, p, t->err, sizeof t->err) != 0) return TR_ERROR;
    for (int i = 0; i < t->n_policy; i++)
        if (t->policy[i]->after_step && t->policy[i]->after_step(t->policy[i], t) != 0) return TR_ERROR;
    t->step++;
    t->tokens += (uint64_t)b->B * (uint64_t)b->T;
    return TR_OK;
}

/* --------------------------------------------------------------- evaluate */

int tr_evaluate(ag_ctx *c, tr_gpt *m, const tr_gpt_fwd *fwd, const tr_dataset *d, tr_batch *b, int n,
                tr_eval *out, char *err, size_t errlen) {
    tr_gpt_fwd plain = {0};
    if (fwd) {
        plain.weight = fwd->weight;
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
        if (d->has_accuracy) tr_batch_accuracy(b, logits->data, m->cfg.vocab, &correct, &total);
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
    if (tr_evaluate(t->ctx, t->model, &t->fwd, t->data, &t->vbatch, t->cfg.eval_batches, &ev, t->err,
                    sizeof t->err) != 0)
        return -1;
    t->last_eval = ev;
    t->evaluated = true;
    for (int i = 0; i < t->n_policy; i++)
        if (t->policy[i]->on_eval) t->policy[i]->on_eval(t->policy[i], t, &ev);
    if (out) *out = ev;
    return 0;
}

/* ---------------------------------------------------------------- the run */

static bool should_stop(const tr_trainer *t) { return t->stop && *t->stop; }

tr_status tr_train(tr_trainer *t) {
    const tr_train_config *cfg = &t->cfg;
    bool have_out = cfg->out && cfg->out[0];
    if (!t->started) {
        for (int i = 0; i < t->n_policy; i++)
            if (t->policy[i]->on_start && t->policy[i]->on_start(t->policy[i], t) != 0) return TR_ERROR;
        t->started = true;
    }
    double t0 = ag_now();
    long first = t->step;
    while (t->step < cfg->steps) {
        if (should_stop(t)) {
            if (have_out && tr_trainer_save(t, cfg->out) != 0) return TR_ERROR;
            tr_trainer_fail(t, "interrupted after step %ld of %d", t->step, cfg->steps);
            return TR_INTERRUPTED;
        }
        double s0 = ag_now();
        tr_status st = tr_train_step(t);
        t->train_seconds += ag_now() - s0;
        t->steps_this_process++;
        if (st != TR_OK) return st;

        bool last = t->step == cfg->steps;
        tr_progress pr = {.step = t->step, .steps = cfg->steps, .loss = t->loss, .lr = t->lr,
                          .grad_norm = t->grad_norm, .val_loss = NAN, .accuracy = NAN};
        if (last || (cfg->eval_every > 0 && t->step % cfg->eval_every == 0)) {
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
        for (int i = 0; i < t->n_policy; i++)
            if (t->policy[i]->on_progress) t->policy[i]->on_progress(t->policy[i], t, &pr);
        if (have_out && (last || (cfg->ckpt_every > 0 && t->step % cfg->ckpt_every == 0)))
            if (tr_trainer_save(t, cfg->out) != 0) return TR_ERROR;
    }
    if (!t->evaluated && tr_trainer_eval(t, NULL) != 0) return TR_ERROR; /* resumed at the end */
    return TR_OK;
}

/* ------------------------------------------------------------ checkpoints */

static void write_model_sections(tr_ckpt_writer *w, const tr_gpt *m, const tr_vocab *vocab) {
    const tr_gpt_config *c = &m->cfg;
    tr_ckpt_begin(w, "MODL");
    tr_wr_u32(w, (uint32_t)c->n_layer);
    tr_wr_u32(w, (uint32_t)c->n_head);
    tr_wr_u32(w, (uint32_t)c->n_embd);
    tr_wr_u32(w, (uint32_t)c->mlp_ratio);
    tr_wr_u32(w, (uint32_t)c->ctx);
    tr_wr_u32(w, (uint32_t)c->vocab);
    tr_wr_u32(w, (c->bias ? 1u : 0u) | (c->tied ? 2u : 0u));
    tr_ckpt_begin(w, "VOCB");
    uint8_t packed[TR_VOCAB_PACK_MAX];
    size_t n = tr_vocab_pack(vocab, packed);
    tr_wr_u32(w, (uint32_t)n);
    tr_wr_bytes(w, packed, n);
    tr_ckpt_begin(w, "TENS");
    const ag_params *p = &m->params;
    tr_wr_u32(w, (uint32_t)p->count);
    for (int i = 0; i < p->count; i++) {
        const ag_tensor *x = &p->t[i];
        tr_wr_str(w, p->names[i]);
        tr_wr_u32(w, (uint32_t)x->ndim);
        for (int k = 0; k < x->ndim; k++) tr_wr_u32(w, (uint32_t)x->shape[k]);
        tr_wr_f32s(w, x->data, x->numel);
    }
    tr_ckpt_end(w);
}

int tr_trainer_save(tr_trainer *t, const char *path) {
    tr_ckpt_writer w;
    tr_ckpt_writer_init(&w);
    tr_ckpt_begin(&w, "CONF");
    tr_wr_str(&w, t->config_text ? t->config_text : "");
    write_model_sections(&w, t->model, &t->data->vocab);

    const ag_params *p = &t->model->params;
    tr_ckpt_begin(&w, "OPTM");
    tr_wr_u64(&w, (uint64_t)t->opt.step);
    tr_wr_u32(&w, (uint32_t)p->count);
    for (int i = 0; i < p->count; i++) {
        tr_wr_f32s(&w, p->m + p->offset[i], p->t[i].numel);
        tr_wr_f32s(&w, p->v + p->offset[i], p->t[i].numel);
    }
    tr_ckpt_begin(&w, "TRNR");
    tr_wr_u64(&w, (uint64_t)t->step);
    tr_wr_u64(&w, t->tokens);
    for (int k = 0; k < 4; k++) tr_wr_u64(&w, t->data_rng.s[k]);
    tr_ckpt_begin(&w, "DATA");
    tr_wr_str(&w, t->data->spec);
    tr_wr_u64(&w, t->data->hash);
    tr_wr_u32(&w, (uint32_t)t->data->ctx);
    tr_ckpt_end(&w);
    for (int i = 0; i < t->n_policy; i++)
        if (t->policy[i]->save && t->policy[i]->save(t->policy[i], t, &w) != 0) {
            tr_ckpt_writer_free(&w);
            return -1;
        }
    int rc = tr_ckpt_write(&w, path, t->err, sizeof t->err);
    tr_ckpt_writer_free(&w);
    return rc;
}

int tr_ckpt_read_meta(const tr_ckpt_file *f, tr_gpt_config *cfg, tr_vocab *vocab, char **conf, char *err,
                      size_t errlen) {
    tr_rd rd;
    uint32_t v[7];
    static const char *names[7] = {"n_layer", "n_head", "n_embd", "mlp_ratio", "ctx", "vocab", "flags"};
    if (tr_rd_open(&rd, f, "MODL") == 0)
        for (int i = 0; i < 7; i++) tr_rd_u32(&rd, names[i], &v[i]);
    if (tr_rd_done(&rd) != 0) goto fail;
    for (int i = 0; i < 6; i++)
        if (v[i] > (1u << 30)) {
            tr_rd_fail(&rd, "field %s = %u is out of range", names[i], v[i]);
            goto fail;
        }
    if (v[6] > 3) {
        tr_rd_fail(&rd, "field flags = %u has unknown bits", v[6]);
        goto fail;
    }
    *cfg = (tr_gpt_config){.n_layer = (int)v[0], .n_head = (int)v[1], .n_embd = (int)v[2],
                           .mlp_ratio = (int)v[3], .ctx = (int)v[4], .vocab = (int)v[5],
                           .bias = (v[6] & 1) != 0, .tied = (v[6] & 2) != 0};
    char cerr[256];
    if (tr_gpt_config_check(cfg, cerr, sizeof cerr) != 0) {
        tr_rd_fail(&rd, "invalid model configuration: %s", cerr);
        goto fail;
    }
    uint32_t n;
    uint8_t packed[TR_VOCAB_PACK_MAX];
    if (tr_rd_open(&rd, f, "VOCB") == 0 && tr_rd_u32(&rd, "length", &n) == 0) {
        if (n > TR_VOCAB_PACK_MAX) tr_rd_fail(&rd, "field length = %u exceeds %d", n, TR_VOCAB_PACK_MAX);
        else tr_rd_bytes(&rd, "symbols", packed, n);
    }
    if (tr_rd_done(&rd) != 0) goto fail;
    if (tr_vocab_unpack(vocab, packed, n, cerr, sizeof cerr) != 0) {
        tr_rd_fail(&rd, "%s", cerr);
        goto fail;
    }
    if (vocab->size != cfg->vocab) {
        tr_rd_fail(&rd, "vocabulary of %d symbols, the model has %d outputs", vocab->size, cfg->vocab);
        goto fail;
    }
    if (conf) {
        *conf = NULL;
        if (tr_rd_open(&rd, f, "CONF") == 0) tr_rd_str(&rd, "config", 1u << 20, conf);
        if (tr_rd_done(&rd) != 0) {
            free(*conf);
            *conf = NULL;
            goto fail;
        }
    }
    return 0;
fail:
    snprintf(err, errlen, "checkpoint %s: %s", f->path, rd.err);
    return -1;
}

int tr_ckpt_read_params(const tr_ckpt_file *f, tr_gpt *m, bool with_moments, char *err, size_t errlen) {
    ag_params *p = &m->params;
    tr_rd rd;
    uint32_t count = 0;
    if (tr_rd_open(&rd, f, "TENS") == 0 && tr_rd_u32(&rd, "count", &count) == 0 && count != (uint32_t)p->count)
        tr_rd_fail(&rd, "field count = %u, the model has %d tensors", count, p->count);
    for (int i = 0; i < p->count && !rd.failed; i++) {
        char *name = NULL;
        uint32_t ndim = 0, shape[AG_MAX_DIMS] = {0};
        if (tr_rd_str(&rd, "name", 256, &name) != 0) break;
        bool ok = strcmp(name, p->names[i]) == 0;
        if (!ok) tr_rd_fail(&rd, "tensor %d is named '%s', expected '%s'", i, name, p->names[i]);
        free(name);
        char fld[320];
        snprintf(fld, sizeof fld, "%s ndim", p->names[i]);
        if (!ok || tr_rd_u32(&rd, fld, &ndim) != 0) break;
        if ((int)ndim != p->t[i].ndim) {
            tr_rd_fail(&rd, "tensor %s has %u dimensions, expected %d", p->names[i], ndim, p->t[i].ndim);
            break;
        }
        snprintf(fld, sizeof fld, "%s shape", p->names[i]);
        for (uint32_t k = 0; k < ndim; k++) tr_rd_u32(&rd, fld, &shape[k]);
        for (uint32_t k = 0; k < ndim && !rd.failed; k++)
            if ((int)shape[k] != p->t[i].shape[k])
                tr_rd_fail(&rd, "tensor %s dimension %u is %u, expected %d", p->names[i], k, shape[k],
                           p->t[i].shape[k]);
        tr_rd_f32s(&rd, p->names[i], p->t[i].data, p->t[i].numel);
    }
    if (tr_rd_done(&rd) != 0) goto fail;
    if (with_moments && p->m) {
        if (tr_rd_open(&rd, f, "OPTM") == 0) {
            uint64_t step;
            tr_rd_u64(&rd, "step", &step);
            if (tr_rd_u32(&rd, "count", &count) == 0 && count != (uint32_t)p->count)
                tr_rd_fail(&rd, "field count = %u, the model has %d tensors", count, p->count);
            for (int i = 0; i < p->count && !rd.failed; i++) {
                tr_rd_f32s(&rd, "m", p->m + p->offset[i], p->t[i].numel);
                tr_rd_f32s(&rd, "v", p->v + p->offset[i], p->t[i].numel);
            }
        }
        if (tr_rd_done(&rd) != 0) goto fail;
    }
    return 0;
fail:
    snprintf(err, errlen, "checkpoint %s: %s", f->path, rd.err);
    return -1;
}

static bool same_config(const tr_gpt_config *a, const tr_gpt_config *b) {
    return a->n_layer == b->n_layer && a->n_head == b->n_head && a->n_embd == b->n_embd &&
           a->mlp_ratio == b->mlp_ratio && a->ctx == b->ctx && a->vocab == b->vocab && a->bias == b->bias &&
           a->tied == b->tied;
}

int tr_trainer_load(tr_trainer *t, const char *path) {
    tr_ckpt_file f;
    char err[512];
    if (tr_ckpt_read(&f, path, err, sizeof err) != 0) {
        tr_trainer_fail(t, "%s", err);
        return -1;
    }
    int rc = -1;
    tr_gpt_config mc;
    tr_vocab vocab;
    if (tr_ckpt_read_meta(&f, &mc, &vocab, NULL, err, sizeof err) != 0) {
        tr_trainer_fail(t, "%s", err);
        goto out;
    }
    if (!same_config(&mc, &t->model->cfg)) {
        tr_trainer_fail(t, "checkpoint %s holds a model of %d layers, %d heads, width %d, ctx %d, vocab %d; "
                           "the run's model differs",
                        path, mc.n_layer, mc.n_head, mc.n_embd, mc.ctx, mc.vocab);
        goto out;
    }
    if (tr_vocab_compare(&vocab, "checkpoint", &t->data->vocab, "data", err, sizeof err) != 0) {
        tr_trainer_fail(t, "checkpoint %s: %s", path, err);
        goto out;
    }
    if (tr_ckpt_read_params(&f, t->model, true, err, sizeof err) != 0) {
        tr_trainer_fail(t, "%s", err);
        goto out;
    }
    tr_rd rd;
    uint64_t opt_step = 0, step = 0, tokens = 0, s[4] = {0}, hash = 0;
    uint32_t dctx = 0;
    char *spec = NULL;
    if (tr_rd_open(&rd, &f, "OPTM") == 0) tr_rd_u64(&rd, "step", &opt_step);
    if (rd.failed) goto rd_fail;
    if (tr_rd_open(&rd, &f, "TRNR") == 0) {
        tr_rd_u64(&rd, "step", &step);
        tr_rd_u64(&rd, "tokens", &tokens);
        for (int k = 0; k < 4; k++) tr_rd_u64(&rd, "data_rng", &s[k]);
    }
    if (tr_rd_done(&rd) != 0) goto rd_fail;
    if (step > (uint64_t)t->cfg.steps) {
        tr_trainer_fail(t, "checkpoint %s is at step %llu, beyond --steps %d", path, (unsigned long long)step,
                        t->cfg.steps);
        goto out;
    }
    if (tr_rd_open(&rd, &f, "DATA") == 0 && tr_rd_str(&rd, "spec", 4096, &spec) == 0) {
        tr_rd_u64(&rd, "hash", &hash);
        tr_rd_u32(&rd, "ctx", &dctx);
    }
    if (tr_rd_done(&rd) != 0) goto rd_fail;
    if (hash != t->data->hash || (int)dctx != t->data->ctx) {
        tr_trainer_fail(t, "checkpoint %s was trained on %s (hash %016llx, ctx %u), not on %s (hash %016llx, "
                           "ctx %d): resuming needs the same data",
                        path, spec, (unsigned long long)hash, dctx, t->data->spec,
                        (unsigned long long)t->data->hash, t->data->ctx);
        free(spec);
        goto out;
    }
    free(spec);
    t->opt.step = (int64_t)opt_step;
    t->step = (long)step;
    t->tokens = tokens;
    memcpy(t->data_rng.s, s, sizeof s);
    for (int i = 0; i < t->n_policy; i++)
        if (t->policy[i]->load && t->policy[i]->load(t->policy[i], t, &f) != 0) goto out;
    rc = 0;
    goto out;
rd_fail:
    tr_trainer_fail(t, "checkpoint %s: %s", path, rd.err);
out:
    tr_ckpt_close(&f);
    return rc;
}

int tr_model_load(const char *path, tr_gpt *m, int flags, tr_vocab *vocab, char **conf, char *err,
                  size_t errlen) {
    memset(m, 0, sizeof *m);
    tr_ckpt_file f;
    if (tr_ckpt_read(&f, path, err, errlen) != 0) return -1;
    tr_gpt_config mc;
    int rc = -1;
    if (tr_ckpt_read_meta(&f, &mc, vocab, conf, err, errlen) == 0 && tr_gpt_init(m, &mc, flags, err, errlen) == 0) {
        rc = tr_ckpt_read_params(&f, m, false, err, errlen);
        if (rc != 0) tr_gpt_free(m);
    }
    if (rc != 0 && conf) {
        free(*conf);
        *conf = NULL;
    }
    tr_ckpt_close(&f);
    return rc;
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
    int V = m->cfg.vocab, ctx = m->cfg.ctx;
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
