/* policy.h - the registry of compression policies (library pare_compress,
 * above train/ and infer/).
 *
 * A compression method is one file (compress/distill.c, ...) that defines a
 * cp_kind: its keys (rows of the one key vocabulary, filling its own
 * configuration struct), whether a configuration asks for it, and how to make
 * its tr_policy. The registry (policy.c) is a list with one line per kind, so
 * adding a method is its file, that line and its key rows. Commands use a
 * cp_set: `pare train` declares every kind's keys, makes the policies the
 * keys ask for and adds them to the trainer (before a resume loads their
 * state); `pare export` reads a checkpoint's stored configuration into the
 * same keys, makes the same policies and lets each adjust the export plan.
 */
#ifndef PARE_CP_POLICY_H
#define PARE_CP_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "keys/options.h"
#include "model/plan.h"
#include "train/trainer.h"

typedef struct cp_kind {
    const char *name;    /* "distill" */
    const char *summary; /* one line for --help and docs */
    size_t cfg_size;     /* bytes of its configuration struct */
    /* its key rows, pointing into cfg */
    void (*keys)(pare_keys *k, void *cfg);
    /* true when the (parsed) configuration asks for the policy */
    bool (*wanted)(const void *cfg);
    /* a new policy for cfg (which outlives it), or NULL with err set (a bad
     * combination of keys); freed with destroy */
    tr_policy *(*create)(const void *cfg, char *err, size_t errlen);
    void (*destroy)(tr_policy *p);
} cp_kind;

/* Every kind, NULL-terminated (policy.c: one line per kind). */
extern const cp_kind *const cp_kinds[];

#define CP_MAX_KINDS 16

/* One command's policies: each kind's configuration, and the policies made
 * from them. */
typedef struct cp_set {
    void *cfg[CP_MAX_KINDS];
    tr_policy *policy[CP_MAX_KINDS]; /* NULL where the kind was not wanted */
    int n_kinds;
} cp_set;

/* Allocates every kind's (zeroed) configuration. Returns 0, or -1 (out of
 * memory; free s with cp_set_free). */
int cp_set_init(cp_set *s);

/* Adds every kind's key rows to k (after the command's own groups). */
void cp_set_keys(cp_set *s, pare_keys *k);

/* Makes the policies the parsed configurations ask for. Returns how many, or
 * -1 with err naming the kind and the problem. */
int cp_set_create(cp_set *s, char *err, size_t errlen);

/* Adds the made policies to t, in registry order. Returns 0, or -1 with t->err. */
int cp_set_add(cp_set *s, tr_trainer *t);

/* Lets every made policy with an export hook adjust plan for model m from
 * checkpoint f. Returns 0, or -1 with err naming the policy. */
int cp_set_export(cp_set *s, const tr_gpt *m, const tr_ckpt_file *f, pm_plan *plan, char *err, size_t errlen);

/* Frees the policies and configurations; s may be zeroed. */
void cp_set_free(cp_set *s);

#endif
