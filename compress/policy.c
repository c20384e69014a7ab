/* policy.c - the registry of compression policies and the per-command set
 * (see policy.h). */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill.h"
#include "lowrank.h"
#include "quant.h"
#include "sparsity.h"

/* The registry: one line per compression method. */
const cp_kind *const cp_kinds[] = {
    &cp_distill_kind,
    &cp_sparsity_kind,
    &cp_lowrank_kind,
    &cp_quant_kind, /* last: an A8 site's integer product ends the chain of linear hooks */
    NULL,
};

int cp_set_init(cp_set *s) {
    memset(s, 0, sizeof *s);
    for (int i = 0; cp_kinds[i] && i < CP_MAX_KINDS; i++) {
        s->cfg[i] = calloc(1, cp_kinds[i]->cfg_size);
        if (!s->cfg[i]) return -1;
        s->n_kinds = i + 1;
    }
    return 0;
}

void cp_set_keys(cp_set *s, pare_keys *k) {
    for (int i = 0; i < s->n_kinds; i++) cp_kinds[i]->keys(k, s->cfg[i]);
}

int cp_set_create(cp_set *s, char *err, size_t errlen) {
    int made = 0;
    for (int i = 0; i < s->n_kinds; i++) {
        if (s->policy[i] || !cp_kinds[i]->wanted(s->cfg[i])) continue;
        char why[512];
        s->policy[i] = cp_kinds[i]->create(s->cfg[i], why, sizeof why);
        if (!s->policy[i]) {
            snprintf(err, errlen, "%s: %s", cp_kinds[i]->name, why);
            return -1;
        }
        made++;
    }
    return made;
}

int cp_set_add(cp_set *s, tr_trainer *t) {
    for (int i = 0; i < s->n_kinds; i++)
        if (s->policy[i] && tr_trainer_add_policy(t, s->policy[i]) != 0) return -1;
    return 0;
}

int cp_set_export(cp_set *s, const tr_gpt *m, const tr_ckpt_file *f, pm_plan *plan, char *err, size_t errlen) {
    for (int i = 0; i < s->n_kinds; i++) {
        tr_policy *p = s->policy[i];
        if (!p || !p->export) continue;
        char why[512];
        if (p->export(p, m, f, plan, why, sizeof why) != 0) {
            snprintf(err, errlen, "%s: %s", cp_kinds[i]->name, why);
            return -1;
        }
    }
    return 0;
}

void cp_set_free(cp_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n_kinds; i++) {
        if (s->policy[i]) cp_kinds[i]->destroy(s->policy[i]);
        free(s->cfg[i]);
    }
    memset(s, 0, sizeof *s);
}
