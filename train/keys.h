/* keys.h - the keys of the model, the data and training, declared once
 * (keys/options.h), each row pointing into the struct it fills:
 *
 *   model      n-layer n-head n-embd mlp-ratio ctx bias tied     -> tr_gpt_config
 *   data       data vocab data-seed                              -> a spec and tr_data_opts
 *   training   steps batch lr min-lr warmup weight-decay beta1 beta2 eps grad-clip
 *              seed eval-every eval-batches ckpt-every           -> tr_train_config
 *
 * The library's defaults (tr_gpt_config_default, tr_data_opts_default,
 * tr_train_config_default) are these rows' defaults. Sampling's keys are
 * train/sampler.h's; the run log's experiments/db.h's; threads and json are
 * keys/options.h's. */
#ifndef PARE_TR_KEYS_H
#define PARE_TR_KEYS_H

#include "keys/options.h"
#include "train/data.h"
#include "train/gpt.h"
#include "train/trainer.h"

/* ctx 0 means "the data's own context" (markov 64, tasks 17, text 64): the
 * command resolves it (tr_data_default_ctx) before building the model. */
void tr_model_keys(pare_keys *k, tr_gpt_config *c);

/* data: a text file or builtin:NAME (default builtin:markov); vocab byte or
 * char; data-seed, the seed of a built-in dataset's generator. */
void tr_data_keys(pare_keys *k, const char **spec, tr_data_opts *o);

/* Everything tr_train_config holds but its output path (each command that
 * writes a file declares its own --out); batch and eval-batches are
 * tr_eval_keys'. */
void tr_train_keys(pare_keys *k, tr_train_config *c);

/* batch (sequences per batch) and eval-batches (fixed validation batches per
 * evaluation): what training's evaluations and `pare eval` share. */
void tr_eval_keys(pare_keys *k, int *batch, int *eval_batches);

#endif
