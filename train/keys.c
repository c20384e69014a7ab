/* keys.c - the model's, the data's and training's keys (see keys.h). */
#include "keys.h"

void tr_model_keys(pare_keys *k, tr_gpt_config *c) {
    pare_opt r[] = {
        PARE_OPT_INT("n-layer", &c->n_layer, "4", 1, 4096, "transformer blocks"),
        PARE_OPT_INT("n-head", &c->n_head, "4", 1, 1 << 20, "attention heads (must divide n-embd)"),
        PARE_OPT_INT("n-embd", &c->n_embd, "128", 1, 1 << 20, "model width"),
        PARE_OPT_INT("mlp-ratio", &c->mlp_ratio, "4", 1, 64, "MLP hidden units per unit of width"),
        PARE_OPT_INT("ctx", &c->ctx, "0", 0, 1 << 20,
                     "context length; 0 = the data's own (markov 64, tasks 17, text 64)"),
        PARE_OPT_FLAG_ON("bias", &c->bias, "biases in linears and layer norms"),
        PARE_OPT_FLAG("tied", &c->tied, "LM head shares the token embedding"),
    };
    pare_keys_add(k, r, (int)(sizeof r / sizeof r[0]));
}

void tr_data_keys(pare_keys *k, const char **spec, tr_data_opts *o) {
    _Static_assert(sizeof(tr_vocab_kind) == sizeof(int) && TR_VOCAB_BYTE == 0 && TR_VOCAB_CHAR == 1,
                   "vocab's ENUM row writes the kind as an int: byte = 0, char = 1");
    pare_opt r[] = {
        PARE_OPT_STRING("data", spec, "builtin:markov", "text file, or builtin:NAME (" TR_BUILTIN_NAMES ")"),
        PARE_OPT_ENUM("vocab", (int *)&o->vocab, "byte", "byte|char",
                      "tokens: bytes (V=256) or the corpus's characters"),
        PARE_OPT_U64("data-seed", &o->seed, "1234", "seed of a built-in dataset's generator"),
    };
    pare_keys_add(k, r, (int)(sizeof r / sizeof r[0]));
}

void tr_eval_keys(pare_keys *k, int *batch, int *eval_batches) {
    pare_opt r[] = {
        PARE_OPT_INT("batch", batch, "16", 1, 1 << 20, "sequences per batch (per training step, per validation batch)"),
        PARE_OPT_INT("eval-batches", eval_batches, "20", 1, 1000000, "fixed validation batches per evaluation"),
    };
    pare_keys_add(k, r, (int)(sizeof r / sizeof r[0]));
}

void tr_train_keys(pare_keys *k, tr_train_config *c) {
    tr_eval_keys(k, &c->batch, &c->eval_batches);
    pare_opt r[] = {
        PARE_OPT_INT("steps", &c->steps, "1000", 1, 2000000000, "optimizer steps"),
        PARE_OPT_FLOAT("lr", &c->lr, "1e-3", 1e-12, 10, "peak learning rate"),
        PARE_OPT_FLOAT("min-lr", &c->min_lr, "1e-4", 0, 10, "learning rate at the end of the cosine decay"),
        PARE_OPT_INT("warmup", &c->warmup, "100", 0, 2000000000, "linear warmup steps"),
        PARE_OPT_FLOAT("weight-decay", &c->weight_decay, "0.1", 0, 100,
                       "AdamW decoupled weight decay (matrices and embeddings)"),
        PARE_OPT_FLOAT("beta1", &c->beta1, "0.9", 0, 0.999999, "AdamW first-moment decay"),
        PARE_OPT_FLOAT("beta2", &c->beta2, "0.99", 0, 0.999999999, "AdamW second-moment decay"),
        PARE_OPT_FLOAT("eps", &c->eps, "1e-8", 1e-30, 1, "AdamW denominator guard"),
        PARE_OPT_FLOAT("grad-clip", &c->grad_clip, "1.0", 0, 1e30, "clip the global gradient norm to this (0 = off)"),
        PARE_OPT_U64("seed", &c->seed, "1", "seed of the model's initialisation and the batch order"),
        PARE_OPT_INT("eval-every", &c->eval_every, "100", 0, 2000000000, "evaluate every N steps (0 = only at the end)"),
        PARE_OPT_INT("ckpt-every", &c->ckpt_every, "0", 0, 2000000000,
                     "checkpoint every N steps (0 = after every evaluation); always at the end and on a signal"),
    };
    pare_keys_add(k, r, (int)(sizeof r / sizeof r[0]));
}
