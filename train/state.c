/* state.c - the checkpoint of a whole training state (tr_trainer_save /
 * tr_trainer_load) and the model-only readers (tr_ckpt_read_meta,
 * tr_ckpt_read_params, tr_model_load). The container (sections, checksum,
 * atomic write) is checkpoint.c's; docs/training.md lists the sections.
 *
 * Every reader checks the lengths a section's header implies against the
 * section's bytes before allocating anything: a model's parameters are
 * allocated only once the TENS section has been found to hold exactly the
 * floats the architecture needs (and OPTM the moments), so a small crafted
 * file cannot make pare allocate for a model it does not contain. */
#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ the model */

#define ARCH_VERSION 1u

static void write_arch(tr_ckpt_writer *w, const pm_arch *a) {
    tr_ckpt_begin(w, "ARCH");
    tr_wr_u32(w, ARCH_VERSION);
    tr_wr_u32(w, (uint32_t)a->n_layer);
    tr_wr_u32(w, (uint32_t)a->n_embd);
    tr_wr_u32(w, (uint32_t)a->head_dim);
    tr_wr_u32(w, (uint32_t)a->ctx);
    tr_wr_u32(w, (uint32_t)a->vocab);
    tr_wr_u32(w, (a->bias ? 1u : 0u) | (a->tied ? 2u : 0u));
    for (int l = 0; l < a->n_layer; l++) {
        tr_wr_u32(w, (uint32_t)a->n_head[l]);
        tr_wr_u32(w, (uint32_t)a->n_hidden[l]);
    }
    for (int i = 0; i < a->n_layer * PM_LINEARS_PER_LAYER + 1; i++) tr_wr_u32(w, (uint32_t)a->rank[i]);
}

static void write_model_sections(tr_ckpt_writer *w, const tr_gpt *m, const tr_vocab *vocab) {
    write_arch(w, &m->arch);
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
    if (p->mask) { /* one bit per entry, 1 = kept, tensor by tensor */
        tr_ckpt_begin(w, "MASK");
        tr_wr_u32(w, (uint32_t)p->count);
        for (int i = 0; i < p->count; i++) {
            size_t nb = (p->t[i].numel + 7) / 8;
            uint8_t *bits = calloc(nb ? nb : 1, 1);
            if (!bits) {
                w->oom = true;
                return;
            }
            const float *mk = p->mask + p->offset[i];
            for (size_t j = 0; j < p->t[i].numel; j++)
                if (mk[j] != 0.0f) bits[j / 8] |= (uint8_t)(1u << (j % 8));
            tr_wr_bytes(w, bits, nb);
            free(bits);
        }
    }
    tr_ckpt_end(w);
}

/* A checkpoint written before ARCH: MODL, the uniform configuration. */
static int read_modl(const tr_ckpt_file *f, pm_arch *a, tr_rd *rd) {
    uint32_t v[7];
    static const char *names[7] = {"n_layer", "n_head", "n_embd", "mlp_ratio", "ctx", "vocab", "flags"};
    if (tr_rd_open(rd, f, "MODL") == 0)
        for (int i = 0; i < 7; i++) tr_rd_u32(rd, names[i], &v[i]);
    if (tr_rd_done(rd) != 0) return -1;
    for (int i = 0; i < 6; i++)
        if (v[i] < 1 || v[i] > (1u << 24)) {
            tr_rd_fail(rd, "field %s = %u is out of range", names[i], v[i]);
            return -1;
        }
    if (v[6] > 3) {
        tr_rd_fail(rd, "field flags = %u has unknown bits", v[6]);
        return -1;
    }
    if (v[0] > 4096 || v[2] % v[1] != 0 || (uint64_t)v[3] * v[2] > (1u << 20)) {
        tr_rd_fail(rd, "invalid model configuration: %u layers, %u heads of width %u, MLP ratio %u", v[0], v[1], v[2],
                   v[3]);
        return -1;
    }
    if (pm_arch_uniform(a, (int)v[0], (int)v[1], (int)v[2], (int)(v[3] * v[2]), (int)v[4], (int)v[5], v[6] & 1,
                        (v[6] & 2) != 0) != 0) {
        tr_rd_fail(rd, "out of memory");
        return -1;
    }
    return 0;
}

/* ARCH: its length is checked against what n_layer implies before the
 * per-layer arrays are allocated. */
static int read_arch(const tr_ckpt_file *f, pm_arch *a, tr_rd *rd) {
    memset(a, 0, sizeof *a);
    if (!tr_ckpt_find(f, "ARCH")) return read_modl(f, a, rd);
    uint32_t ver = 0, v[6] = {0};
    static const char *names[6] = {"n_layer", "n_embd", "head_dim", "ctx", "vocab", "flags"};
    tr_rd_open(rd, f, "ARCH");
    tr_rd_u32(rd, "version", &ver);
    for (int i = 0; i < 6; i++) tr_rd_u32(rd, names[i], &v[i]);
    if (rd->failed) return -1;
    if (ver != ARCH_VERSION) {
        tr_rd_fail(rd, "field version = %u: this pare reads version %u", ver, ARCH_VERSION);
        return -1;
    }
    if (v[0] < 1 || v[0] > 4096) {
        tr_rd_fail(rd, "field n_layer = %u: expected 1..4096", v[0]);
        return -1;
    }
    if (v[5] > 3) {
        tr_rd_fail(rd, "field flags = %u has unknown bits", v[5]);
        return -1;
    }
    uint64_t want = (uint64_t)v[0] * 8 + ((uint64_t)v[0] * PM_LINEARS_PER_LAYER + 1) * 4;
    if (rd->left != want) {
        tr_rd_fail(rd, "%llu bytes of per-layer shapes follow; %u layers need %llu", (unsigned long long)rd->left,
                   v[0], (unsigned long long)want);
        return -1;
    }
    a->n_layer = (int)v[0];
    if (pm_arch_alloc(a) != 0) {
        tr_rd_fail(rd, "out of memory");
        return -1;
    }
    for (int i = 1; i < 5; i++)
        if (v[i] > (1u << 24)) {
            tr_rd_fail(rd, "field %s = %u is out of range", names[i], v[i]);
            pm_arch_free(a);
            return -1;
        }
    a->n_embd = (int)v[1], a->head_dim = (int)v[2], a->ctx = (int)v[3], a->vocab = (int)v[4];
    a->bias = (v[5] & 1) != 0, a->tied = (v[5] & 2) != 0;
    uint32_t x;
    for (int l = 0; l < a->n_layer; l++) {
        tr_rd_u32(rd, "n_head", &x), a->n_head[l] = x > (1u << 24) ? -1 : (int)x;
        tr_rd_u32(rd, "n_hidden", &x), a->n_hidden[l] = x > (1u << 24) ? -1 : (int)x;
    }
    for (int i = 0; i < a->n_layer * PM_LINEARS_PER_LAYER + 1; i++) tr_rd_u32(rd, "rank", &x), a->rank[i] = x > (1u << 24) ? -1 : (int)x;
    if (tr_rd_done(rd) != 0) {
        pm_arch_free(a);
        return -1;
    }
    return 0;
}

/* Bytes the TENS section of a model with table tb holds (names, shapes and
 * floats), or 0 when it would not fit 64 bits. */
static uint64_t tens_bytes(const pm_table *tb) {
    uint64_t n = 4;
    for (int i = 0; i < tb->n_tensor; i++) {
        const pm_tensor *t = &tb->tensor[i];
        uint64_t numel = (uint64_t)t->shape[0] * (uint64_t)(t->ndim > 1 ? t->shape[1] : 1);
        n += 4 + strlen(t->name) + 4 + 4 * (uint64_t)t->ndim + 4 * numel;
    }
    return n;
}

static uint64_t table_numel(const pm_table *tb) {
    uint64_t n = 0;
    for (int i = 0; i < tb->n_tensor; i++)
        n += (uint64_t)tb->tensor[i].shape[0] * (uint64_t)(tb->tensor[i].ndim > 1 ? tb->tensor[i].shape[1] : 1);
    return n;
}

/* The TENS and (if present) OPTM sections must hold exactly the tensors the
 * architecture implies: checked before anyone allocates a model for it. */
static int check_sizes(const tr_ckpt_file *f, const pm_arch *a, tr_rd *rd) {
    pm_table tb;
    char err[256];
    if (pm_table_build(&tb, a, err, sizeof err) != 0) {
        pm_table_free(&tb);
        tr_rd_fail(rd, "invalid model architecture: %s", err);
        return -1;
    }
    const tr_ckpt_section *s = tr_ckpt_find(f, "TENS"), *o = tr_ckpt_find(f, "OPTM");
    uint64_t want = tens_bytes(&tb), numel = table_numel(&tb);
    pm_table_free(&tb);
    if (!s) {
        tr_rd_open(rd, f, "TENS"); /* records "no TENS section" */
        return -1;
    }
    if (s->len != want) {
        tr_rd_open(rd, f, "TENS");
        tr_rd_fail(rd, "%llu bytes, the model (%d layers, width %d, vocab %d: %llu parameters) needs %llu",
                   (unsigned long long)s->len, a->n_layer, a->n_embd, a->vocab, (unsigned long long)numel,
                   (unsigned long long)want);
        return -1;
    }
    if (o && o->len != 12 + 8 * numel) {
        tr_rd_open(rd, f, "OPTM");
        tr_rd_fail(rd, "%llu bytes, the model's moments need %llu", (unsigned long long)o->len,
                   (unsigned long long)(12 + 8 * numel));
        return -1;
    }
    return 0;
}

int tr_ckpt_read_meta(const tr_ckpt_file *f, pm_arch *arch, tr_vocab *vocab, char **conf, char *err,
                      size_t errlen) {
    tr_rd rd = {0};
    memset(arch, 0, sizeof *arch);
    if (conf) *conf = NULL;
    if (read_arch(f, arch, &rd) != 0) goto fail;
    char cerr[256];
    if (pm_arch_check(arch, cerr, sizeof cerr) != 0) {
        tr_rd_fail(&rd, "invalid model architecture: %s", cerr);
        goto fail;
    }
    if (check_sizes(f, arch, &rd) != 0) goto fail;
    uint32_t n = 0;
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
    if (vocab->size != arch->vocab) {
        tr_rd_fail(&rd, "vocabulary of %d symbols, the model has %d outputs", vocab->size, arch->vocab);
        goto fail;
    }
    if (conf) {
        if (tr_rd_open(&rd, f, "CONF") == 0) tr_rd_str(&rd, "config", 1u << 20, conf);
        if (tr_rd_done(&rd) != 0) goto fail;
    }
    return 0;
fail:
    if (conf) {
        free(*conf);
        *conf = NULL;
    }
    pm_arch_free(arch);
    snprintf(err, errlen, "checkpoint %s: %s", f->path, rd.err);
    return -1;
}

/* MASK: one bit per entry of every tensor. */
static int read_masks(const tr_ckpt_file *f, ag_params *p, tr_rd *rd) {
    if (!tr_ckpt_find(f, "MASK")) return 0;
    uint32_t count = 0;
    if (tr_rd_open(rd, f, "MASK") == 0 && tr_rd_u32(rd, "count", &count) == 0 && count != (uint32_t)p->count)
        tr_rd_fail(rd, "field count = %u, the model has %d tensors", count, p->count);
    uint64_t want = 0;
    for (int i = 0; i < p->count; i++) want += (p->t[i].numel + 7) / 8;
    if (!rd->failed && rd->left != want)
        tr_rd_fail(rd, "%llu bytes of mask bits, the model needs %llu", (unsigned long long)rd->left,
                   (unsigned long long)want);
    if (rd->failed) return -1;
    if (ag_params_mask_enable(p) != 0) {
        tr_rd_fail(rd, "out of memory for the masks");
        return -1;
    }
    for (int i = 0; i < p->count && !rd->failed; i++) {
        size_t nb = (p->t[i].numel + 7) / 8;
        uint8_t *bits = malloc(nb ? nb : 1);
        if (!bits) {
            tr_rd_fail(rd, "out of memory for the masks");
            break;
        }
        if (tr_rd_bytes(rd, p->names[i], bits, nb) == 0) {
            float *mk = p->mask + p->offset[i];
            for (size_t j = 0; j < p->t[i].numel; j++) mk[j] = (bits[j / 8] >> (j % 8)) & 1 ? 1.0f : 0.0f;
        }
        free(bits);
    }
    if (tr_rd_done(rd) != 0) return -1;
    ag_params_mask_apply(p);
    return 0;
}

/* count, then per tensor: name, ndim, shape, floats (and, in OPTM, the
 * moments) against the set's declared tensors. */
static int read_tensors(tr_rd *rd, ag_params *p) {
    uint32_t count = 0;
    if (tr_rd_u32(rd, "count", &count) == 0 && count != (uint32_t)p->count)
        tr_rd_fail(rd, "field count = %u, expected %d tensors", count, p->count);
    for (int i = 0; i < p->count && !rd->failed; i++) {
        char *name = NULL;
        uint32_t ndim = 0, shape[AG_MAX_DIMS] = {0};
        if (tr_rd_str(rd, "name", 256, &name) != 0) break;
        bool ok = strcmp(name, p->names[i]) == 0;
        if (!ok) tr_rd_fail(rd, "tensor %d is named '%s', expected '%s'", i, name, p->names[i]);
        free(name);
        char fld[320];
        snprintf(fld, sizeof fld, "%s ndim", p->names[i]);
        if (!ok || tr_rd_u32(rd, fld, &ndim) != 0) break;
        if ((int)ndim != p->t[i].ndim) {
            tr_rd_fail(rd, "tensor %s has %u dimensions, expected %d", p->names[i], ndim, p->t[i].ndim);
            break;
        }
        snprintf(fld, sizeof fld, "%s shape", p->names[i]);
        for (uint32_t k = 0; k < ndim; k++) tr_rd_u32(rd, fld, &shape[k]);
        for (uint32_t k = 0; k < ndim && !rd->failed; k++)
            if ((int)shape[k] != p->t[i].shape[k])
                tr_rd_fail(rd, "tensor %s dimension %u is %u, expected %d", p->names[i], k, shape[k],
                           p->t[i].shape[k]);
        tr_rd_f32s(rd, p->names[i], p->t[i].data, p->t[i].numel);
    }
    return rd->failed ? -1 : 0;
}

/* A trained model never holds a NaN or an infinity (the trainer refuses the
 * step that would make one): such a checkpoint is corrupt, and evaluating it
 * would only report "loss nan". Names the first offending value. */
static int check_finite(tr_rd *rd, const ag_params *p, const float *buf, const char *what) {
    bool nonneg = strstr(what, "second") != NULL; /* AdamW's v is a running mean of squares */
    for (int i = 0; i < p->count; i++) {
        const float *x = buf + p->offset[i];
        for (size_t j = 0; j < p->t[i].numel; j++)
            if (!isfinite(x[j]) || (nonneg && x[j] < 0)) {
                tr_rd_fail(rd, "%s of tensor %s, element %zu, is %g: expected finite values%s", what, p->names[i], j,
                           (double)x[j], nonneg ? " >= 0" : "");
                return -1;
            }
    }
    return 0;
}

int tr_ckpt_read_params(const tr_ckpt_file *f, tr_gpt *m, bool with_moments, char *err, size_t errlen) {
    ag_params *p = &m->params;
    tr_rd rd;
    if (tr_rd_open(&rd, f, "TENS") == 0 && read_tensors(&rd, p) == 0) check_finite(&rd, p, p->data, "a weight");
    if (tr_rd_done(&rd) != 0) goto fail;
    if (with_moments && p->m) {
        uint32_t count = 0;
        if (tr_rd_open(&rd, f, "OPTM") == 0) {
            uint64_t step;
            tr_rd_u64(&rd, "step", &step);
            if (tr_rd_u32(&rd, "count", &count) == 0 && count != (uint32_t)p->count)
                tr_rd_fail(&rd, "field count = %u, the model has %d tensors", count, p->count);
            for (int i = 0; i < p->count && !rd.failed; i++) {
                tr_rd_f32s(&rd, "m", p->m + p->offset[i], p->t[i].numel);
                tr_rd_f32s(&rd, "v", p->v + p->offset[i], p->t[i].numel);
            }
            if (!rd.failed && check_finite(&rd, p, p->m, "a first moment") == 0)
                check_finite(&rd, p, p->v, "a second moment");
        }
        if (tr_rd_done(&rd) != 0) goto fail;
    }
    if (read_masks(f, p, &rd) != 0) goto fail;
    return 0;
fail:
    snprintf(err, errlen, "checkpoint %s: %s", f->path, rd.err);
    return -1;
}

int tr_model_load(const char *path, tr_gpt *m, int flags, tr_vocab *vocab, char **conf, char *err,
                  size_t errlen) {
    memset(m, 0, sizeof *m);
    tr_ckpt_file f;
    if (tr_ckpt_read(&f, path, err, errlen) != 0) return -1;
    pm_arch a;
    int rc = -1;
    if (tr_ckpt_read_meta(&f, &a, vocab, conf, err, errlen) == 0) {
        if (tr_gpt_init_arch(m, &a, flags, err, errlen) == 0) {
            rc = tr_ckpt_read_params(&f, m, false, err, errlen);
            if (rc != 0) tr_gpt_free(m);
        }
        pm_arch_free(&a);
    }
    if (rc != 0 && conf) {
        free(*conf);
        *conf = NULL;
    }
    tr_ckpt_close(&f);
    return rc;
}

/* -------------------------------------------------- the training state */

/* PTEN: the policies' tensors with their moments. */
static void write_extras(tr_ckpt_writer *w, const ag_params *x) {
    tr_ckpt_begin(w, "PTEN");
    tr_wr_u32(w, (uint32_t)x->count);
    for (int i = 0; i < x->count; i++) {
        const ag_tensor *t = &x->t[i];
        tr_wr_str(w, x->names[i]);
        tr_wr_u32(w, (uint32_t)t->ndim);
        for (int k = 0; k < t->ndim; k++) tr_wr_u32(w, (uint32_t)t->shape[k]);
        tr_wr_f32s(w, t->data, t->numel);
        tr_wr_f32s(w, x->m + x->offset[i], t->numel);
        tr_wr_f32s(w, x->v + x->offset[i], t->numel);
    }
    tr_ckpt_end(w);
}

static int read_extras(const tr_ckpt_file *f, ag_params *x, tr_rd *rd) {
    if (!x->count && !tr_ckpt_find(f, "PTEN")) return 0;
    uint32_t count = 0;
    if (!tr_ckpt_find(f, "PTEN")) {
        *rd = (tr_rd){.tag = "PTEN"};
        tr_rd_fail(rd, "the run's policies declare %d tensors (%s, ...) and the checkpoint has no PTEN section with "
                   "them", x->count, x->names[0]);
        return -1;
    }
    tr_rd_open(rd, f, "PTEN");
    if (tr_rd_u32(rd, "count", &count) == 0 && count != (uint32_t)x->count)
        tr_rd_fail(rd, "field count = %u, the run's policies declare %d tensors", count, x->count);
    for (int i = 0; i < x->count && !rd->failed; i++) {
        char *name = NULL;
        uint32_t ndim = 0, d;
        if (tr_rd_str(rd, "name", 256, &name) != 0) break;
        if (strcmp(name, x->names[i]) != 0) tr_rd_fail(rd, "tensor %d is '%s', the run declares '%s'", i, name, x->names[i]);
        free(name);
        if (tr_rd_u32(rd, "ndim", &ndim) == 0 && (int)ndim != x->t[i].ndim)
            tr_rd_fail(rd, "tensor %s has %u dimensions, expected %d", x->names[i], ndim, x->t[i].ndim);
        for (int k = 0; k < x->t[i].ndim && !rd->failed; k++)
            if (tr_rd_u32(rd, "shape", &d) == 0 && (int)d != x->t[i].shape[k])
                tr_rd_fail(rd, "tensor %s dimension %d is %u, expected %d", x->names[i], k, d, x->t[i].shape[k]);
        tr_rd_f32s(rd, x->names[i], x->t[i].data, x->t[i].numel);
        tr_rd_f32s(rd, "m", x->m + x->offset[i], x->t[i].numel);
        tr_rd_f32s(rd, "v", x->v + x->offset[i], x->t[i].numel);
    }
    if (!rd->failed && check_finite(rd, x, x->data, "a value") == 0 && check_finite(rd, x, x->m, "a first moment") == 0)
        check_finite(rd, x, x->v, "a second moment");
    return tr_rd_done(rd);
}

int tr_trainer_save(tr_trainer *t, const char *path) {
    if (tr_trainer_prepare(t) != 0) return -1;
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
    if (t->extra.count) write_extras(&w, &t->extra);
    tr_ckpt_end(&w);
    tr_policy *pol;
    TR_FOR_POLICIES(t, pol, save) if (pol->save(pol, t, &w) != 0) {
        tr_ckpt_writer_free(&w);
        return -1;
    }
    int rc = tr_ckpt_write(&w, path, t->err, sizeof t->err);
    tr_ckpt_writer_free(&w);
    return rc;
}

int tr_trainer_load(tr_trainer *t, const char *path) {
    if (tr_trainer_prepare(t) != 0) return -1;
    tr_ckpt_file f;
    char err[512];
    if (tr_ckpt_read(&f, path, err, sizeof err) != 0) {
        tr_trainer_fail(t, "%s", err);
        return -1;
    }
    int rc = -1;
    pm_arch arch = {0};
    tr_vocab vocab;
    char *spec = NULL;
    if (tr_ckpt_read_meta(&f, &arch, &vocab, NULL, err, sizeof err) != 0) {
        tr_trainer_fail(t, "%s", err);
        goto out;
    }
    if (!pm_arch_equal(&arch, &t->model->arch)) {
        tr_trainer_fail(t, "checkpoint %s holds a model of %d layers, width %d, ctx %d, vocab %d; the run's model "
                           "differs", path, arch.n_layer, arch.n_embd, arch.ctx, arch.vocab);
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
    if (tr_rd_open(&rd, &f, "OPTM") == 0) tr_rd_u64(&rd, "step", &opt_step);
    if (rd.failed) goto rd_fail;
    if (tr_rd_open(&rd, &f, "TRNR") == 0) {
        tr_rd_u64(&rd, "step", &step);
        tr_rd_u64(&rd, "tokens", &tokens);
        for (int k = 0; k < 4; k++) tr_rd_u64(&rd, "data_rng", &s[k]);
    }
    if (tr_rd_done(&rd) != 0) goto rd_fail;
    /* fields a correct checksum does not make right: the optimizer's step is
     * the trainer's (every good step counts once in both), and the data
     * generator's state is one xoshiro can have (not all zero) */
    if (opt_step != step) {
        tr_trainer_fail(t, "checkpoint %s: section OPTM: the optimizer is at step %llu, section TRNR at step %llu: "
                           "expected the same step", path, (unsigned long long)opt_step, (unsigned long long)step);
        goto out;
    }
    if ((s[0] | s[1] | s[2] | s[3]) == 0) {
        tr_trainer_fail(t, "checkpoint %s: section TRNR: the data generator's state is all zero (no generator "
                           "reaches it): expected a state saved by pare", path);
        goto out;
    }
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
        goto out;
    }
    if (read_extras(&f, &t->extra, &rd) != 0) goto rd_fail;
    t->opt.step = (int64_t)opt_step;
    t->step = (long)step;
    t->tokens = tokens;
    memcpy(t->data_rng.s, s, sizeof s);
    tr_policy *p;
    TR_FOR_POLICIES(t, p, load) if (p->load(p, t, &f) != 0) goto out;
    rc = 0;
    goto out;
rd_fail:
    tr_trainer_fail(t, "checkpoint %s: %s", path, rd.err);
out:
    free(spec);
    pm_arch_free(&arch);
    tr_ckpt_close(&f);
    return rc;
}
