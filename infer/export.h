/* export.h - writing a trained GPT (train/gpt.h) as a model file.
 *
 * Linear weights (attn.qkv.w, attn.proj.w, mlp.fc.w, mlp.proj.w and an untied
 * lm_head.w) are stored in the chosen storage type; embeddings stay f32 unless
 * asked (a tied head follows wte); layer norms and biases always stay f32.
 * Quantized codes come from compress/quant.h (through infer/pack.h), so they
 * are exactly what fake quantization computes in training.
 */
#ifndef PARE_INF_EXPORT_H
#define PARE_INF_EXPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "train/data.h"
#include "train/gpt.h"

typedef struct inf_export_opts {
    int dtype;                /* INF_F32, INF_Q8, INF_Q4, INF_Q4A */
    int group;                /* G; 0 = per output channel (G = K) */
    bool quantize_embeddings; /* wte and wpe in dtype too */
    const char *meta;         /* metadata text stored in the file ("key=value" lines), or NULL */
} inf_export_opts;

/* True when parameter `name` of a model is stored in o->dtype (the rest f32). */
bool inf_export_quantizes(const inf_export_opts *o, const char *name, int ndim);

/* Writes m (with vocabulary v) to path atomically. Returns 0, or -1 with err
 * naming the tensor or the file: a vocabulary whose size differs from the
 * model's, a group size the type cannot use for some tensor (its input size
 * must be a multiple of 32 and of G), non-finite weights, I/O errors. */
int inf_export_gpt(const tr_gpt *m, const tr_vocab *v, const inf_export_opts *o, const char *path, char *err,
                   size_t errlen);

#endif
