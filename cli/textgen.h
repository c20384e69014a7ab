/* textgen.h - what `pare sample` (checkpoints, cmd_sample.c) and `pare
 * generate` (model files, cmd_generate.c) share: the sampling options, the
 * prompt encoding and the output. The token choice itself is one function
 * for both engines: tr_sample_pick (train/sampler.h). */
#ifndef PARE_CLI_TEXTGEN_H
#define PARE_CLI_TEXTGEN_H

#include <stdbool.h>

#include "cli/options.h"
#include "train/data.h"
#include "train/sampler.h"

/* The sampling options are the key vocabulary's (tr_sample_keys, train/sampler.h: prompt, tokens,
 * temperature, top-k, sample-seed), the same rows as `pare train`'s samples. */
/* The token buffer of one generation: ids[n_prompt + tokens] (the prompt,
 * then what is generated) and room for its text. */
typedef struct pare_gen_text {
    int *ids;      /* [n_prompt + tokens] */
    char *text;    /* [n_prompt + tokens + 1] */
    int n_prompt;  /* tokens of the encoded prompt (>= 1) */
} pare_gen_text;

/* Allocates g for prompt plus `tokens` new tokens and encodes prompt with v
 * into g->ids (an empty prompt becomes one newline token, or token 0 when
 * the vocabulary has no newline). On failure prints "pare CMD: ..." to
 * stderr and returns PARE_EXIT_USAGE (a prompt byte outside the vocabulary)
 * or PARE_EXIT_ERROR (out of memory); g is then still safe to free. Returns
 * PARE_EXIT_OK on success. Free g with pare_gen_free. */
int pare_gen_begin(pare_gen_text *g, const char *cmd, const tr_vocab *v, const char *prompt, int tokens);

/* Prints the result of a generation of len tokens (prompt included) that
 * took secs: with json one object {"command", "prompt", "text" (the new
 * text), "tokens" (new tokens), "seconds"}; else, when streamed (the prompt
 * and the tokens were already written as they came), a newline; else the
 * whole text and a newline. */
void pare_gen_print(pare_gen_text *g, const char *cmd, const tr_vocab *v, const char *prompt, int len, double secs,
                    bool json, bool streamed);

/* Frees g's buffers; g may be zeroed or already freed. */
void pare_gen_free(pare_gen_text *g);

#endif
