/* parity_distill.c - writes what tests/parity/torch_distill_parity.py checks
 * against PyTorch: the distillation losses of compress/distill.c, each value
 * and its gradient with respect to the student's input:
 *   kd_T       ag_kl_div(s, t, T) (T^2 included) at T = 1, 2, 4, on logits [N, V]
 *   attn_kl    ag_prob_kl(P_s, P_t) on causal attention probabilities [B, H, T, T]
 *   vr         MiniLM's value relation on fused qkv tensors [B, T, 3A] (2 relation heads)
 *
 * Usage: parity_distill OUT_DIR   (writes OUT_DIR/parity_distill.bin, the
 * record format of parity_gpt.c: "PRTY0001", then u32 name length, name, u8
 * type (0 float32), u32 ndim, u32 dims[ndim], elements). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "autograd/params.h"
#include "autograd/gradcheck.h"
#include "autograd/rng.h"

static int put(FILE *f, const char *name, const ag_tensor *t, const float *data) {
    uint32_t n = (uint32_t)strlen(name), nd = (uint32_t)t->ndim;
    uint8_t type = 0;
    if (fwrite(&n, 4, 1, f) != 1 || fwrite(name, 1, n, f) != n || fwrite(&type, 1, 1, f) != 1 ||
        fwrite(&nd, 4, 1, f) != 1)
        return -1;
    for (int i = 0; i < t->ndim; i++) {
        uint32_t d = (uint32_t)t->shape[i];
        if (fwrite(&d, 4, 1, f) != 1) return -1;
    }
    return fwrite(data, 4, t->numel, f) == t->numel ? 0 : -1;
}

/* out = the op's value; the student input's gradient is in p->grad. */
static int run(FILE *f, ag_ctx *c, ag_params *p, const char *name, ag_tensor *loss) {
    if (!loss || ag_backward(c, loss) != 0) {
        fprintf(stderr, "parity_distill: %s failed: %s\n", name, ag_error(c) ? ag_error(c) : "");
        return -1;
    }
    char key[64];
    snprintf(key, sizeof key, "%s/value", name);
    if (put(f, key, loss, loss->data)) return -1;
    snprintf(key, sizeof key, "%s/grad", name);
    return put(f, key, ag_param(p, 0), ag_param(p, 0)->grad);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: parity_distill OUT_DIR\n");
        return 2;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/parity_distill.bin", argv[1]);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "parity_distill: cannot create %s\n", path);
        return 1;
    }
    fwrite("PRTY0001", 1, 8, f);
    enum { N = 24, V = 11, B = 2, H = 2, T = 5, A = 8 };
    ag_params p;
    ag_params_init(&p);
    ag_params_add(&p, "s", 2, (int[]){N, V}, 0);
    ag_params_add(&p, "t", 2, (int[]){N, V}, 0);
    if (ag_params_alloc(&p, AG_PARAMS_GRAD)) return 1;
    ag_fill_uniform(p.data, p.n, -3.0f, 3.0f, 5);
    ag_ctx *c = ag_ctx_new();
    int rc = put(f, "kd/s", ag_param(&p, 0), ag_param(&p, 0)->data) || put(f, "kd/t", ag_param(&p, 1), ag_param(&p, 1)->data);
    const float temps[3] = {1, 2, 4};
    for (int i = 0; i < 3 && !rc; i++) {
        char name[16];
        snprintf(name, sizeof name, "kd_%g", (double)temps[i]);
        ag_ctx_reset(c);
        ag_params_zero_grad(&p);
        rc = run(f, c, &p, name, ag_kl_div(c, ag_param(&p, 0), ag_param(&p, 1), temps[i]));
    }
    /* attention KL: probabilities of causal scores */
    ag_params q;
    ag_params_init(&q);
    ag_params_add(&q, "ps", 4, (int[]){B, H, T, T}, 0);
    ag_params_add(&q, "pt", 4, (int[]){B, H, T, T}, 0);
    if (ag_params_alloc(&q, AG_PARAMS_GRAD)) return 1;
    ag_fill_uniform(q.data, q.n, 0.05f, 1.0f, 6);
    for (int k = 0; k < 2; k++) { /* rows normalised over j <= i, zero above */
        float *x = ag_param(&q, k)->data;
        for (int r = 0; r < B * H * T; r++) {
            int i = r % T;
            double z = 0;
            for (int j = 0; j <= i; j++) z += x[r * T + j];
            for (int j = 0; j < T; j++) x[r * T + j] = j <= i ? (float)(x[r * T + j] / z) : 0.0f;
        }
    }
    if (!rc) rc = put(f, "attn/ps", ag_param(&q, 0), ag_param(&q, 0)->data) ||
                  put(f, "attn/pt", ag_param(&q, 1), ag_param(&q, 1)->data);
    ag_ctx_reset(c);
    if (!rc) rc = run(f, c, &q, "attn_kl", ag_prob_kl(c, ag_param(&q, 0), ag_param(&q, 1)));
    /* value relation */
    ag_params v;
    ag_params_init(&v);
    ag_params_add(&v, "qkv_s", 3, (int[]){B, T, 3 * A}, 0);
    ag_params_add(&v, "qkv_t", 3, (int[]){B, T, 3 * A}, 0);
    if (ag_params_alloc(&v, AG_PARAMS_GRAD)) return 1;
    ag_fill_uniform(v.data, v.n, -1.5f, 1.5f, 7);
    if (!rc) rc = put(f, "vr/qkv_s", ag_param(&v, 0), ag_param(&v, 0)->data) ||
                  put(f, "vr/qkv_t", ag_param(&v, 1), ag_param(&v, 1)->data);
    ag_ctx_reset(c);
    ag_tensor *vs = ag_split_heads(c, ag_param(&v, 0), 2, 2, 3), *vt = ag_split_heads(c, ag_param(&v, 1), 2, 2, 3);
    if (!rc) rc = run(f, c, &v, "vr", ag_prob_kl(c, ag_attn_probs(c, vs, vs), ag_attn_probs(c, vt, vt)));
    fclose(f);
    ag_ctx_free(c);
    ag_params_free(&p);
    ag_params_free(&q);
    ag_params_free(&v);
    return rc ? 1 : 0;
}
