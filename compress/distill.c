/* distill.c - knowledge distillation as a training policy (see distill.h). */
#include "distill.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer/model_vocab.h"
#include "infer/runtime.h"

typedef struct distill {
    tr_policy p;
    cp_distill_cfg cfg;
    tr_gpt teacher;  /* loaded by declare (a checkpoint teacher) */
    bool loaded;
    inf_model file;  /* or a model-file teacher: its logits through the inference runtime */
    inf_session session;
    bool file_open, session_open;
    int *map;        /* [Ls] teacher layer of each student layer */
    int *proj;       /* [Ls] handle of the hidden-state projection, -1 when the widths agree */
    int ls;
} distill;

/* ------------------------------------------------------------ the keys */

static void distill_keys(pare_keys *k, void *cfgp) {
    cp_distill_cfg *c = cfgp;
    pare_opt r[] = {
        PARE_OPT_STRING("teacher", &c->teacher, "",
                        "distill from this trained checkpoint, or a model file (logits only) (\"\" = no distillation)"),
        PARE_OPT_FLOAT("kd-temp", &c->kd_temp, "2", 1e-3, 1e3, "distillation temperature T (the logit term is T^2 KL)"),
        PARE_OPT_FLOAT("kd-alpha", &c->kd_alpha, "0.5", 0, 1,
                       "weight of the labels' cross-entropy; 1 - alpha weighs the teacher's soft targets"),
        PARE_OPT_FLOAT("attn-weight", &c->attn_weight, "0", 0, 1e6, "weight of the attention term (0 = off)"),
        PARE_OPT_ENUM("attn-kind", &c->attn_kind, "mse", "mse|kl|relation",
                      "attention term: TinyBERT's MSE of every layer, MiniLM's KL of the last, or KL + value relation"),
        PARE_OPT_FLOAT("hidden-weight", &c->hidden_weight, "0", 0, 1e6,
                       "weight of the hidden-state MSE through learned projections (0 = off)"),
        PARE_OPT_STRING("layer-map", &c->layer_map, "",
                        "teacher layer of each student layer, \"1,3,5\" (\"\" = (i + 1) Lt / Ls - 1)"),
    };
    pare_keys_add(k, r, (int)(sizeof r / sizeof r[0]));
}

static bool distill_wanted(const void *cfgp) {
    const cp_distill_cfg *c = cfgp;
    return c->teacher && c->teacher[0];
}

int cp_layer_map(const char *spec, int ls, int lt, int *map, char *err, size_t errlen) {
    if (!spec || !spec[0]) {
        for (int i = 0; i < ls; i++) map[i] = (int)(((long)(i + 1) * lt) / ls) - 1;
        return 0;
    }
    const char *p = spec;
    for (int i = 0; i < ls; i++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= lt) {
            snprintf(err, errlen, "layer-map '%s': entry %d: expected a teacher layer in [0, %d)", spec, i, lt);
            return -1;
        }
        map[i] = (int)v;
        p = end;
        if (i + 1 < ls) {
            if (*p != ',') {
                snprintf(err, errlen, "layer-map '%s': %d entries: expected one teacher layer per student layer (%d)",
                         spec, i + 1, ls);
                return -1;
            }
            p++;
        }
    }
    if (*p) {
        snprintf(err, errlen, "layer-map '%s': more than %d entries: expected one per student layer", spec, ls);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------- the policy */

static bool wants_attn(const distill *d) { return d->cfg.attn_weight > 0; }
static bool wants_hidden(const distill *d) { return d->cfg.hidden_weight > 0; }

/* The model-file teacher's logits on the rows x[B, T]: each row from an
 * empty KV cache, every position's logits (float-exact activations). */
static int file_logits(void *user, const int *x, int B, int T, float *logits, char *err, size_t errlen) {
    distill *d = user;
    size_t V = (size_t)d->file.V;
    for (int b = 0; b < B; b++) {
        inf_session_reset(&d->session);
        if (inf_forward(&d->session, x + (size_t)b * T, T, logits + (size_t)b * T * V, true, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* A model file as the teacher: only its logits exist (no attention or hidden
 * states), so only the logit term may be asked for. */
static int declare_file_teacher(distill *d, tr_trainer *t) {
    char err[768];
    tr_vocab tv;
    if (wants_attn(d) || wants_hidden(d)) {
        tr_trainer_fail(t, "distill: teacher %s is a model file, which gives logits only: attention (attn-weight %g) "
                        "and hidden-state (hidden-weight %g) distillation need the teacher's checkpoint",
                        d->cfg.teacher, d->cfg.attn_weight, d->cfg.hidden_weight);
        return -1;
    }
    if (inf_model_open(&d->file, d->cfg.teacher, err, sizeof err) != 0) {
        tr_trainer_fail(t, "distill: teacher: %s", err);
        return -1;
    }
    d->file_open = true;
    if (inf_model_vocab(&d->file, &tv, err, sizeof err) != 0) {
        tr_trainer_fail(t, "distill: teacher %s: %s", d->cfg.teacher, err);
        return -1;
    }
    if (tr_vocab_compare(&tv, "teacher", &t->data->vocab, "student's data", err, sizeof err) != 0) {
        tr_trainer_fail(t, "distill: teacher %s and the student do not share a vocabulary: %s", d->cfg.teacher, err);
        return -1;
    }
    if (inf_session_init(&d->session, &d->file, inf_isa_best(), 3, err, sizeof err) != 0) {
        tr_trainer_fail(t, "distill: teacher %s: %s", d->cfg.teacher, err);
        return -1;
    }
    d->session_open = true;
    if (tr_trainer_set_teacher_logits(t, file_logits, d, d->file.V, d->file.ctx) != 0) return -1;
    d->ls = t->model->arch.n_layer;
    d->map = calloc((size_t)d->ls, sizeof *d->map);
    d->proj = malloc((size_t)d->ls * sizeof *d->proj);
    if (!d->map || !d->proj) {
        tr_trainer_fail(t, "distill: out of memory");
        return -1;
    }
    for (int i = 0; i < d->ls; i++) d->proj[i] = -1;
    return 0;
}

/* Loads the teacher, checks it against the student and the data, makes the
 * layer map and declares the projections. */
static int distill_declare(tr_policy *pp, tr_trainer *t) {
    distill *d = pp->user;
    char err[768];
    tr_vocab tv;
    if (inf_is_model_file(d->cfg.teacher)) return declare_file_teacher(d, t);
    if (tr_model_load(d->cfg.teacher, &d->teacher, 0, &tv, NULL, err, sizeof err) != 0) {
        tr_trainer_fail(t, "distill: teacher: %s", err);
        return -1;
    }
    d->loaded = true;
    if (tr_vocab_compare(&tv, "teacher", &t->data->vocab, "student's data", err, sizeof err) != 0) {
        tr_trainer_fail(t, "distill: teacher %s and the student do not share a vocabulary: %s", d->cfg.teacher, err);
        return -1;
    }
    if (tr_trainer_set_teacher(t, &d->teacher) != 0) return -1;
    const pm_arch *s = &t->model->arch, *te = &d->teacher.arch;
    d->ls = s->n_layer;
    d->map = calloc((size_t)s->n_layer, sizeof *d->map);
    d->proj = calloc((size_t)s->n_layer, sizeof *d->proj);
    if (!d->map || !d->proj) {
        tr_trainer_fail(t, "distill: out of memory");
        return -1;
    }
    if (cp_layer_map(d->cfg.layer_map, s->n_layer, te->n_layer, d->map, err, sizeof err) != 0) {
        tr_trainer_fail(t, "distill: %s", err);
        return -1;
    }
    if (wants_attn(d))
        for (int i = 0; i < s->n_layer; i++) {
            if (d->cfg.attn_kind != CP_ATTN_MSE && i != s->n_layer - 1) continue; /* kl, relation: the last layer */
            int hs = s->n_head[i], ht = te->n_head[d->map[i]];
            if (ht % hs != 0) {
                tr_trainer_fail(t, "distill: student layer %d has %d heads, its teacher layer %d has %d: the student's "
                                "head count must divide the teacher's (teacher heads are averaged in groups)",
                                i, hs, d->map[i], ht);
                return -1;
            }
            int as = hs * s->head_dim, at = ht * te->head_dim;
            if (d->cfg.attn_kind == CP_ATTN_RELATION && (as % hs || at % hs)) {
                tr_trainer_fail(t, "distill: value relations of layer %d: widths %d and %d are not divisible into %d "
                                "relation heads", i, as, at, hs);
                return -1;
            }
        }
    for (int i = 0; i < s->n_layer; i++) {
        d->proj[i] = -1;
        if (!wants_hidden(d) || s->n_embd == te->n_embd) continue;
        char name[32];
        snprintf(name, sizeof name, "proj.%d", i);
        int shape[2] = {te->n_embd, s->n_embd};
        if ((d->proj[i] = tr_declare(t, pp, name, 2, shape, TR_GROUP_DECAY)) < 0) return -1;
    }
    return 0;
}

/* A fresh run's projections start as the identity on the shared dimensions
 * (a resumed run has its trained ones back). */
static int distill_start(tr_policy *pp, tr_trainer *t) {
    distill *d = pp->user;
    if (t->step > 0) return 0;
    for (int i = 0; i < d->ls; i++) {
        if (d->proj[i] < 0) continue;
        ag_tensor *w = tr_extra(t, d->proj[i]); /* [Ct, Cs] */
        memset(w->data, 0, w->numel * sizeof(float));
        for (int r = 0; r < w->shape[0] && r < w->shape[1]; r++) w->data[(size_t)r * w->shape[1] + r] = 1.0f;
    }
    return 0;
}

/* The teacher's probabilities averaged over groups of Ht / Hs heads: a
 * constant [B, Hs, T, T] for a student with Hs heads. */
static ag_tensor *group_heads(ag_ctx *c, ag_tensor *pt, int hs) {
    int B = pt->shape[0], ht = pt->shape[1], T = pt->shape[2];
    if (ht == hs) return pt;
    int shape[4] = {B, hs, T, T}, g = ht / hs;
    ag_tensor *out = ag_new(c, 4, shape, "teacher_heads");
    if (!out) return NULL;
    size_t tt = (size_t)T * T;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < hs; h++) {
            float *o = out->data + ((size_t)b * hs + h) * tt;
            for (size_t j = 0; j < tt; j++) {
                double acc = 0;
                for (int k = 0; k < g; k++) acc += pt->data[((size_t)b * ht + (size_t)h * g + k) * tt + j];
                o[j] = (float)(acc / g);
            }
        }
    return out;
}

/* MSE of probabilities over the positions the causal mask allows: ag_mse
 * averages over all T^2 entries of a row block, the masked half of which is 0
 * in both, so it is rescaled to the T (T + 1) / 2 real ones. */
static ag_tensor *attn_mse(ag_ctx *c, ag_tensor *ps, ag_tensor *pt) {
    double T = ps->shape[2];
    return ag_scale(c, ag_mse(c, ps, pt), (float)(T * T / (T * (T + 1) / 2)));
}

/* softmax(V V^T / sqrt(d)) (causal) of a layer's qkv [B, T, 3A], over r
 * relation heads of its concatenated width. */
static ag_tensor *value_relation(ag_ctx *c, ag_tensor *qkv, int r) {
    ag_tensor *v = ag_split_heads(c, qkv, r, 2, 3); /* [B, r, T, A / r] */
    return ag_attn_probs(c, v, v);
}

static ag_tensor *distill_loss(tr_policy *pp, tr_trainer *t, ag_ctx *c, ag_tensor *logits, ag_tensor *loss) {
    distill *d = pp->user;
    const cp_distill_cfg *k = &d->cfg;
    const pm_arch *s = &t->model->arch;
    /* alpha CE + (1 - alpha) T^2 KL: the trainer's loss already holds CE once */
    if (k->kd_alpha < 1) {
        ag_tensor *kd = ag_kl_div(c, logits, t->teacher_logits, (float)k->kd_temp);
        if (!kd) return NULL;
        tr_metric_set(t, "kd.logit", kd->data[0]);
        loss = ag_add(c, loss, ag_scale(c, t->ce, (float)(k->kd_alpha - 1.0)));
        loss = ag_add(c, loss, ag_scale(c, kd, (float)(1.0 - k->kd_alpha)));
    }
    if (wants_attn(d)) {
        ag_tensor *attn = NULL;
        int n = 0;
        for (int i = 0; i < s->n_layer; i++) {
            bool last = i == s->n_layer - 1;
            if (k->attn_kind != CP_ATTN_MSE && !last) continue;
            bool prev = ag_set_grad(c, false);
            ag_tensor *pt = group_heads(c, t->teacher_probs[d->map[i]], s->n_head[i]);
            ag_tensor *vrt = k->attn_kind == CP_ATTN_RELATION ? value_relation(c, t->teacher_qkv[d->map[i]], s->n_head[i])
                                                              : NULL;
            ag_set_grad(c, prev);
            ag_tensor *term = k->attn_kind == CP_ATTN_MSE ? attn_mse(c, t->probs[i], pt) : ag_prob_kl(c, t->probs[i], pt);
            if (k->attn_kind == CP_ATTN_RELATION)
                term = ag_add(c, term, ag_prob_kl(c, value_relation(c, t->qkv[i], s->n_head[i]), vrt));
            attn = attn ? ag_add(c, attn, term) : term;
            n++;
        }
        attn = ag_scale(c, attn, (float)(1.0 / n));
        if (!attn) return NULL;
        tr_metric_set(t, "kd.attn", attn->data[0]);
        loss = ag_add(c, loss, ag_scale(c, attn, (float)k->attn_weight));
    }
    if (wants_hidden(d)) {
        ag_tensor *hid = NULL;
        for (int i = 0; i < s->n_layer; i++) {
            ag_tensor *hs = t->hidden[i + 1]; /* [B, T, Cs] */
            if (d->proj[i] >= 0) hs = ag_linear(c, hs, tr_extra(t, d->proj[i]), NULL); /* [B, T, Ct] */
            ag_tensor *term = ag_mse(c, hs, t->teacher_hidden[d->map[i] + 1]);
            hid = hid ? ag_add(c, hid, term) : term;
        }
        hid = ag_scale(c, hid, (float)(1.0 / s->n_layer));
        if (!hid) return NULL;
        tr_metric_set(t, "kd.hidden", hid->data[0]);
        loss = ag_add(c, loss, ag_scale(c, hid, (float)k->hidden_weight));
    }
    return loss;
}

static void distill_describe(tr_policy *pp, tr_trainer *t, char *buf, size_t n) {
    distill *d = pp->user;
    const cp_distill_cfg *k = &d->cfg;
    if (d->file_open) {
        snprintf(buf, n, "distill: teacher %s (model file, %s, %d layers, width %d: logits only); loss = %g CE + %g "
                 "T^2 KL at T = %g", k->teacher, inf_model_storage(&d->file), d->file.n_layer, d->file.C, k->kd_alpha,
                 1 - k->kd_alpha, k->kd_temp);
        return;
    }
    const pm_arch *te = &d->teacher.arch, *s = &t->model->arch;
    static const char *const kinds[3] = {"mse (TinyBERT, every layer)", "kl (MiniLM, the last layer)",
                                         "kl + value relation (MiniLM, the last layer)"};
    size_t u = (size_t)snprintf(buf, n, "distill: teacher %s (%d layers, width %d, %d heads in layer 0); loss = %g CE",
                                k->teacher, te->n_layer, te->n_embd, te->n_head[0], k->kd_alpha);
    if (k->kd_alpha < 1 && u < n) u += (size_t)snprintf(buf + u, n - u, " + %g T^2 KL at T = %g", 1 - k->kd_alpha, k->kd_temp);
    if (wants_attn(d) && u < n)
        u += (size_t)snprintf(buf + u, n - u, " + %g attention %s", k->attn_weight, kinds[k->attn_kind]);
    if (wants_hidden(d) && u < n)
        u += (size_t)snprintf(buf + u, n - u, " + %g hidden MSE%s", k->hidden_weight,
                              s->n_embd != te->n_embd ? " through projections" : "");
    if (u < n) u += (size_t)snprintf(buf + u, n - u, "; student layer <- teacher layer:");
    for (int i = 0; i < d->ls && u < n; i++) u += (size_t)snprintf(buf + u, n - u, " %d<-%d", i, d->map[i]);
}

static tr_policy *distill_create(const void *cfgp, char *err, size_t errlen) {
    const cp_distill_cfg *c = cfgp;
    if (c->attn_kind < CP_ATTN_MSE || c->attn_kind > CP_ATTN_RELATION) {
        snprintf(err, errlen, "attn-kind %d: expected mse, kl or relation", c->attn_kind);
        return NULL;
    }
    distill *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->cfg = *c;
    unsigned needs = TR_NEED_TEACHER;
    if (c->attn_weight > 0) {
        needs |= TR_NEED_PROBS | TR_NEED_TEACHER_PROBS;
        if (c->attn_kind == CP_ATTN_RELATION) needs |= TR_NEED_QKV | TR_NEED_TEACHER_QKV;
    }
    if (c->hidden_weight > 0) needs |= TR_NEED_HIDDEN | TR_NEED_TEACHER_HIDDEN;
    d->p = (tr_policy){.name = "distill", .user = d, .needs = needs, .declare = distill_declare,
                       .on_start = distill_start, .loss = distill_loss, .describe = distill_describe};
    return &d->p;
}

static void distill_destroy(tr_policy *pp) {
    distill *d = pp->user;
    if (d->loaded) tr_gpt_free(&d->teacher);
    if (d->session_open) inf_session_free(&d->session);
    if (d->file_open) inf_model_close(&d->file);
    free(d->map);
    free(d->proj);
    free(d);
}

const cp_kind cp_distill_kind = {
    .name = "distill",
    .summary = "knowledge distillation from a frozen teacher: logits, attention, hidden states",
    .cfg_size = sizeof(cp_distill_cfg),
    .keys = distill_keys,
    .wanted = distill_wanted,
    .create = distill_create,
    .destroy = distill_destroy,
};
