/* export.h - writing a trained GPT (train/gpt.h) as a model file, through an
 * export plan (model/plan.h): one entry per tensor of the file's table, each
 * with its values and how it is stored.
 *
 *   inf_plan_from_gpt   every table tensor as f32, its data the model's
 *                       parameter (parameter i is table tensor i);
 *   inf_plan_apply      the command's storage rules (--format, --group-size,
 *                       --quantize-embeddings): the linear sites' weights
 *                       (a dense site's .w, a factorized site's .u and .v, an
 *                       untied lm_head) in the chosen type, wte and wpe only
 *                       when asked (a tied head follows wte), layer norms and
 *                       biases always f32;
 *   inf_plan_write      each entry packed through its storage type's row
 *                       (types.h), with the entry's fixed scales and zero
 *                       points when it has them; the file's architecture is
 *                       the plan's, so a plan whose architecture is smaller
 *                       (pm_plan_set_arch) writes the smaller model.
 *
 * A policy's export hook (a quantization-aware or pruned run) edits the plan
 * between the second and third step. inf_export_gpt does all three.
 *
 * Sparse rule: every weight packed as q8 (by --format q8 or a policy)
 * without static activations is written in the smallest of q8, q8s (only
 * its nonzero codes) and q8nm (2 codes of every 4 inputs, when no 4
 * consecutive inputs of a row hold more than 2 nonzero codes), by bytes,
 * q8 on a tie (docs/format.md). The codes and scales are the same, so the
 * file computes the same bits. A pruned model's masked weights are 0 codes,
 * so its pruned matrices come out sparse; a dense model's stay q8 (q8s
 * needs more than about half of the codes 0). pm_plan.q8_dense (pare
 * export --dense) keeps every one q8.
 *
 * Width rule: a quantized storage type needs every matrix's input width
 * (its last dimension) to be a multiple of 32 and of the group size; an
 * entry that breaks it is an error naming the tensor, its shape and the
 * rule (nothing falls back to f32 silently): give the layer a width that is
 * a multiple of 32, or export as f32.
 */
#ifndef PARE_INF_EXPORT_H
#define PARE_INF_EXPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "model/plan.h"
#include "train/data.h"
#include "train/gpt.h"

typedef struct inf_export_opts {
    int dtype;                /* INF_F32, INF_Q8, INF_Q4, INF_Q4A */
    int group;                /* G; 0 = per output channel (G = K) */
    bool quantize_embeddings; /* wte and wpe in dtype too */
    const char *meta;         /* metadata text stored in the file ("key=value" lines), or NULL */
    bool dense;               /* int8 weights always dense q8 (pm_plan.q8_dense; else the sparse rule below) */
} inf_export_opts;

/* True when table tensor i of t is stored in o->dtype under the command's
 * rules above (the rest stays f32). */
bool inf_export_quantizes(const inf_export_opts *o, const pm_table *t, int i);

/* (a) Fills p (freed by the caller with pm_plan_free either way) with m's
 * architecture and every table tensor as an f32 entry whose data is m's
 * parameter (borrowed: m must outlive p). Returns 0, or -1 with err. */
int inf_plan_from_gpt(pm_plan *p, const tr_gpt *m, char *err, size_t errlen);

/* (b) Applies o's storage rules to p's entries (type, group, by =
 * "--format"); entries already set by something else than "default" are
 * left alone. Returns 0, or -1 with err (an unknown storage type). */
int inf_plan_apply(pm_plan *p, const inf_export_opts *o, char *err, size_t errlen);

/* (c) Writes p as a model file of p's architecture to path atomically, with
 * vocabulary v (v->size must equal the plan's vocab) and metadata meta (or
 * NULL). Each entry is packed by its storage type: fixed scales [rows,
 * cols / G] and zero points when the entry has them (validated, used as
 * given), else the grid's own; an entry's mask (1 = kept) stores 0 at every
 * masked weight in the dense types. Returns 0, or -1 with err naming the
 * tensor or the file: an entry without data, an unknown storage type, a
 * width or group size the type cannot use, non-finite weights, bad fixed
 * scales, I/O errors. */
int inf_plan_write(const pm_plan *p, const tr_vocab *v, const char *meta, const char *path, char *err,
                   size_t errlen);

/* (a) + (b) + (c): writes m (with vocabulary v) to path as o says. Returns
 * 0, or -1 with err as above. */
int inf_export_gpt(const tr_gpt *m, const tr_vocab *v, const inf_export_opts *o, const char *path, char *err,
                   size_t errlen);

#endif
