/* pack.c - float matrices to storage-type layouts (see format.h). */
#include "pack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/quant.h"

int inf_dtype_scheme(int dtype) {
    switch (dtype) {
    case INF_Q8: return CP_INT8_SYM;
    case INF_Q4: return CP_INT4_SYM;
    case INF_Q4A: return CP_INT4_ASYM;
    default: return -1;
    }
}

int inf_pack_matrix(int dtype, const float *w, int N, int K, int group, uint8_t **out, uint64_t *bytes,
                    uint32_t *group_out, char *err, size_t errlen) {
    *out = NULL;
    const inf_type_traits *tr = inf_type(dtype);
    if (!tr) {
        snprintf(err, errlen, "storage type %d: expected 0..%d", dtype, INF_DTYPE_COUNT - 1);
        return -1;
    }
    uint32_t shape[2] = {(uint32_t)N, (uint32_t)K};
    uint32_t G = dtype == INF_F32 ? 0 : (uint32_t)(group ? group : K);
    if (inf_tensor_bytes(dtype, 2, shape, G, bytes, err, errlen)) return -1;
    uint8_t *buf = calloc(1, (size_t)*bytes);
    if (!buf) {
        snprintf(err, errlen, "out of memory for %llu bytes", (unsigned long long)*bytes);
        return -1;
    }
    *group_out = G;
    if (dtype == INF_F32) {
        memcpy(buf, w, (size_t)N * K * sizeof(float));
        *out = buf;
        return 0;
    }
    cp_qscheme s = (cp_qscheme)inf_dtype_scheme(dtype);
    size_t NG = (size_t)K / G, NB = ((size_t)N + INF_ROWS - 1) / INF_ROWS;
    int8_t *q = malloc((size_t)N * K);
    float *sc = malloc((size_t)N * NG * sizeof(float));
    uint8_t *z = malloc((size_t)N * NG);
    if (!q || !sc || !z) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (cp_quantize(s, w, N, K, (int)G, q, sc, z, err, errlen)) goto fail;
    size_t codes = NB * (size_t)(K / tr->cols_per_block) * (size_t)tr->block_bytes;
    float *scales = (float *)(void *)(buf + codes);
    uint8_t *zeros = buf + codes + NB * NG * INF_ROWS * sizeof(float);
    for (size_t rb = 0; rb < NB; rb++)
        for (int i = 0; i < INF_ROWS; i++) {
            size_t r = rb * INF_ROWS + (size_t)i;
            bool real = r < (size_t)N;
            for (size_t g = 0; g < NG; g++) {
                scales[(rb * NG + g) * INF_ROWS + (size_t)i] = real ? sc[r * NG + g] : 0.0f;
                if (tr->has_zero) zeros[(rb * NG + g) * INF_ROWS + (size_t)i] = real ? z[r * NG + g] : 0;
            }
            if (dtype == INF_Q8) {
                inf_blk_q8 *b = (inf_blk_q8 *)(void *)buf + rb * (size_t)(K / 4);
                for (int k = 0; k < K; k++) b[k / 4].q[i][k % 4] = real ? q[r * K + (size_t)k] : 0;
            } else {
                inf_blk_q4 *b = (inf_blk_q4 *)(void *)buf + rb * (size_t)(K / 8);
                int off = dtype == INF_Q4 ? 8 : 0; /* symmetric codes are stored as q + 8 */
                for (int k = 0; k < K; k++) {
                    int nib = real ? q[r * K + (size_t)k] + off : off;
                    int j = k % 8;
                    uint8_t *byte = &b[k / 8].q[i][j % 4];
                    *byte = j < 4 ? (uint8_t)((*byte & 0xF0) | nib) : (uint8_t)((*byte & 0x0F) | (nib << 4));
                }
            }
        }
    free(q), free(sc), free(z);
    *out = buf;
    return 0;
fail:
    free(q), free(sc), free(z), free(buf);
    return -1;
}
