/* model_vocab.h - a model file's vocabulary as the trainer's tr_vocab, and
 * whether a path is a model file at all: the bridge train/ code (pare eval,
 * pare sample, a model-file teacher in compress/distill.c) uses to read
 * what the exporter wrote. Part of pare_infer_export (it needs train/). */
#ifndef PARE_INF_MODEL_VOCAB_H
#define PARE_INF_MODEL_VOCAB_H

#include <stdbool.h>
#include <stddef.h>

#include "infer/runtime.h"
#include "train/data.h"

/* True when the file at path starts with the model-file magic (INF_MAGIC);
 * false when it does not, or cannot be read. Reads 8 bytes. */
bool inf_is_model_file(const char *path);

/* The vocabulary of an open model file as a tr_vocab (byte-level, single-byte
 * entries, at most 256). Returns 0, or -1 with err saying what the file's
 * vocabulary has that the trainer cannot represent. */
int inf_model_vocab(const inf_model *m, tr_vocab *v, char *err, size_t errlen);

#endif
