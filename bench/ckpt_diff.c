/* ckpt_diff.c - how far apart the weights of two checkpoints of the same
 * model are: per tensor, the number of floats whose bits differ, the largest
 * absolute difference and the largest relative one (|a - b| / max|a|, over
 * the tensor). bench/blas_kernels.sh uses it to show that runs at 1, 2 and 3
 * threads give identical weights on each OpenBLAS kernel, and by how much
 * kernels (AVX2 against AVX against SSE) differ.
 *
 * Usage: ckpt_diff A.ckpt B.ckpt [--tensors]
 * Prints one summary line, "differing=N of M max_abs=X max_rel=Y", preceded
 * by one line per tensor with --tensors. Exit status 0 when the weights are
 * identical, 1 when they differ, 2 on an error (files that cannot be read, or
 * models of different shapes). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "train/trainer.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: ckpt_diff A.ckpt B.ckpt [--tensors]\n");
        return 2;
    }
    bool per_tensor = argc > 3 && strcmp(argv[3], "--tensors") == 0;
    char err[1024];
    tr_gpt a, b;
    tr_vocab va, vb;
    if (tr_model_load(argv[1], &a, 0, &va, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "ckpt_diff: %s\n", err);
        return 2;
    }
    if (tr_model_load(argv[2], &b, 0, &vb, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "ckpt_diff: %s\n", err);
        tr_gpt_free(&a);
        return 2;
    }
    if (a.params.count != b.params.count || a.params.n != b.params.n) {
        fprintf(stderr, "ckpt_diff: %s and %s hold models of different shapes\n", argv[1], argv[2]);
        tr_gpt_free(&a);
        tr_gpt_free(&b);
        return 2;
    }
    size_t differing = 0, total = 0;
    double max_abs = 0, max_rel = 0;
    for (int i = 0; i < a.params.count; i++) {
        const ag_tensor *x = ag_param(&a.params, i), *y = ag_param(&b.params, i);
        size_t nd = 0;
        double mabs = 0, scale = 0;
        for (size_t j = 0; j < x->numel; j++) {
            double d = fabs((double)x->data[j] - (double)y->data[j]);
            nd += memcmp(&x->data[j], &y->data[j], sizeof(float)) != 0;
            if (d > mabs) mabs = d;
            if (fabs(x->data[j]) > scale) scale = fabs(x->data[j]);
        }
        double rel = scale > 0 ? mabs / scale : mabs;
        if (per_tensor)
            printf("%-24s differing=%zu of %zu max_abs=%.3g max_rel=%.3g\n", a.params.names[i], nd, x->numel, mabs,
                   rel);
        differing += nd;
        total += x->numel;
        if (mabs > max_abs) max_abs = mabs;
        if (rel > max_rel) max_rel = rel;
    }
    printf("differing=%zu of %zu max_abs=%.3g max_rel=%.3g\n", differing, total, max_abs, max_rel);
    tr_gpt_free(&a);
    tr_gpt_free(&b);
    return differing ? 1 : 0;
}
