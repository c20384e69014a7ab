/* distill.h - knowledge distillation: a frozen teacher and a student in one
 * training step (docs/distillation.md has the formulas, papers and results).
 *
 * The teacher (any trained pare checkpoint) runs forward in inference mode
 * on the student's batch (no tape, no gradients, no optimizer memory): the
 * trainer does it when a policy needs it (TR_NEED_TEACHER*). Teacher and
 * student may differ in layers, heads, width and context; they share the
 * vocabulary, and the student's context does not exceed the teacher's.
 *
 * With CE the cross-entropy on the labels, the loss becomes
 *   alpha CE + (1 - alpha) T^2 KL(softmax(t / T) || softmax(s / T))       (Hinton et al. 2015)
 *   + attn-weight L_attn + hidden-weight L_hidden
 * The T^2 keeps the soft targets' gradient independent of T; it is not
 * optional (TextBrewer's kd_ce_loss omits it, DistilBERT's distiller keeps it;
 * pare follows the paper).
 *
 * L_attn (attn-kind):
 *   mse       TinyBERT (Jiao et al. 2020): the mean squared difference of the
 *             attention probabilities of every student layer and its teacher
 *             layer, over the positions the causal mask allows;
 *   kl        MiniLM (Wang et al. 2020): KL(P_teacher || P_student) of the last
 *             layer, averaged over heads and query positions;
 *   relation  MiniLM's loss: the kl term plus the value relation,
 *             KL(VR_teacher || VR_student) with VR = softmax(V V^T / sqrt(d))
 *             (causal), of the last layer.
 * Heads: probabilities are compared per student head; when the teacher has
 * more heads, a student head's target is the mean of a group of Ht / Hs
 * consecutive teacher heads (so Hs must divide Ht, else an error). Value
 * relations are computed, as MiniLM-v2 does, over the heads' concatenated
 * width split into Hs relation heads (both widths divisible by Hs).
 *
 * L_hidden: the mean over student layers of MSE(h_s W, h_t) between each
 * student block's output and its teacher layer's, through a learned linear
 * projection W [C_t, C_s] when the widths differ (a training-only tensor:
 * optimized, checkpointed for resuming, never exported; it starts as the
 * identity on the shared dimensions).
 *
 * Layer map: student layer i learns from teacher layer (i + 1) Lt / Ls - 1
 * (the last from the last), or from the list given in layer-map ("1,3,5": a
 * teacher layer per student layer).
 */
#ifndef PARE_CP_DISTILL_H
#define PARE_CP_DISTILL_H

#include "policy.h"

typedef enum cp_attn_kind { CP_ATTN_MSE = 0, CP_ATTN_KL = 1, CP_ATTN_RELATION = 2 } cp_attn_kind;

typedef struct cp_distill_cfg {
    const char *teacher;  /* key teacher: the teacher's checkpoint; "" = no distillation */
    double kd_temp;       /* kd-temp: T */
    double kd_alpha;      /* kd-alpha: weight of the labels' cross-entropy (1 = no logit term) */
    double attn_weight;   /* attn-weight: 0 = no attention term */
    int attn_kind;        /* attn-kind: cp_attn_kind */
    double hidden_weight; /* hidden-weight: 0 = no hidden-state term */
    const char *layer_map;/* layer-map: "" = uniform */
} cp_distill_cfg;

extern const cp_kind cp_distill_kind;

/* The teacher layer of each of ls student layers (map[ls]): the uniform
 * default (i + 1) lt / ls - 1 when spec is "" or NULL, else spec's list of
 * ls comma-separated teacher layers in [0, lt). Returns 0, or -1 with err
 * naming the entry and what was expected. */
int cp_layer_map(const char *spec, int ls, int lt, int *map, char *err, size_t errlen);

#endif
