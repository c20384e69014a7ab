/* parity_prune.c - writes what tests/parity/torch_prune_parity.py checks
 * against PyTorch's torch.nn.utils.prune: the masks of pare's magnitude
 * pruning (compress/sparsity.h, cp_magnitude_prune) for
 *   t0..t6   one tensor alone at an amount (l1_unstructured), among them the
 *            round-half-to-even counts 0.25 x 10 -> 2, 0.35 x 10 -> 4,
 *            0.45 x 10 -> 4 and 0.5 x 35 -> 18 (17.5)
 *   global   all of them with one threshold (global_unstructured, amount 0.6)
 * on random weights without ties.
 *
 * Usage: parity_prune OUT_DIR (writes OUT_DIR/parity_prune.bin in the record
 * format of parity_gpt.c: "PRTY0001", then per record u32 name length, name,
 * u8 type (0 float32), u32 ndim, u32 dims[ndim], elements). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "compress/sparsity.h"

static int put(FILE *f, const char *name, int nd, const int *dims, const float *data) {
    uint32_t n = (uint32_t)strlen(name), u = (uint32_t)nd;
    uint8_t type = 0;
    size_t cnt = 1;
    if (fwrite(&n, 4, 1, f) != 1 || fwrite(name, 1, n, f) != n || fwrite(&type, 1, 1, f) != 1 || fwrite(&u, 4, 1, f) != 1)
        return -1;
    for (int i = 0; i < nd; i++) {
        uint32_t d = (uint32_t)dims[i];
        cnt *= (size_t)dims[i];
        if (fwrite(&d, 4, 1, f) != 1) return -1;
    }
    return fwrite(data, 4, cnt, f) == cnt ? 0 : -1;
}

enum { NT = 7 };

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: parity_prune OUT_DIR\n");
        return 2;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/parity_prune.bin", argv[1]);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "parity_prune: cannot create %s\n", path);
        return 1;
    }
    fwrite("PRTY0001", 1, 8, f);
    static const int shape[NT][2] = {{2, 5}, {2, 5}, {2, 5}, {12, 10}, {7, 5}, {20, 16}, {33, 17}};
    static const double amount[NT] = {0.25, 0.35, 0.45, 0.3, 0.5, 0.9, 0.77};
    float *w[NT], *mask[NT], *gmask[NT];
    size_t n[NT];
    ag_rng r;
    ag_rng_seed(&r, 2024);
    int rc = 0;
    for (int i = 0; i < NT; i++) {
        n[i] = (size_t)shape[i][0] * shape[i][1];
        w[i] = malloc(n[i] * sizeof(float));
        mask[i] = malloc(n[i] * sizeof(float));
        gmask[i] = malloc(n[i] * sizeof(float));
        for (size_t j = 0; j < n[i]; j++) {
            w[i][j] = 2.0f * ag_rng_uniform(&r) - 1.0f; /* 24 random bits: ties are all but impossible */
            mask[i][j] = gmask[i][j] = 1.0f;
        }
        const float *cw = w[i];
        if (cp_magnitude_prune(&cw, &mask[i], &n[i], 1, amount[i]) == (size_t)-1) return 1;
        char name[32];
        float a = (float)amount[i];
        snprintf(name, sizeof name, "t%d/w", i);
        rc |= put(f, name, 2, shape[i], w[i]);
        snprintf(name, sizeof name, "t%d/amount", i);
        rc |= put(f, name, 1, (int[]){1}, &a);
        snprintf(name, sizeof name, "t%d/mask", i);
        rc |= put(f, name, 2, shape[i], mask[i]);
    }
    const float *cw[NT];
    for (int i = 0; i < NT; i++) cw[i] = w[i];
    if (cp_magnitude_prune(cw, gmask, n, NT, 0.6) == (size_t)-1) return 1;
    float ga = 0.6f;
    rc |= put(f, "global/amount", 1, (int[]){1}, &ga);
    for (int i = 0; i < NT; i++) {
        char name[32];
        snprintf(name, sizeof name, "global/mask%d", i);
        rc |= put(f, name, 2, shape[i], gmask[i]);
        free(w[i]), free(mask[i]), free(gmask[i]);
    }
    if (fclose(f) != 0) rc = 1;
    return rc ? 1 : 0;
}
