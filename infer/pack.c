/* pack.c - float matrices to storage-type layouts through the types' rows
 * (see pack.h, types.h). */
#include "pack.h"

#include <stdio.h>
#include <stdlib.h>

#include "types.h"

int inf_dtype_scheme(int dtype) {
    const inf_type_traits *tr = inf_type(dtype);
    return tr ? tr->scheme : -1;
}

int inf_pack_matrix_fixed(int dtype, const float *w, int N, int K, int group, const float *scale,
                          const int32_t *zero, uint8_t **out, uint64_t *bytes, uint32_t *group_out, char *err,
                          size_t errlen) {
    *out = NULL;
    const inf_type_traits *tr = inf_type(dtype);
    if (!tr) {
        snprintf(err, errlen, "storage type %d: expected 0..%d", dtype, INF_DTYPE_COUNT - 1);
        return -1;
    }
    if (N < 1 || K < 1 || group < 0) {
        snprintf(err, errlen, "matrix [%d, %d] with group size %d: expected positive sizes and a group >= 0", N, K,
                 group);
        return -1;
    }
    if (tr->from_q8) { /* the dense q8 layout of the same codes and scales, then this type's */
        uint8_t *q8;
        uint64_t q8_bytes;
        if (inf_pack_matrix_fixed(INF_Q8, w, N, K, group, scale, zero, &q8, &q8_bytes, group_out, err, errlen))
            return -1;
        int rc = inf_pack_from_q8(dtype, q8, N, K, (int)*group_out, out, bytes, err, errlen);
        free(q8);
        return rc;
    }
    uint32_t shape[2] = {(uint32_t)N, (uint32_t)K};
    uint32_t G = tr->group_multiple ? (uint32_t)(group ? group : K) : 0;
    if (inf_tensor_bytes(dtype, 2, shape, G, bytes, err, errlen)) return -1;
    uint8_t *buf = calloc(1, (size_t)*bytes);
    if (!buf) {
        snprintf(err, errlen, "out of memory for %llu bytes", (unsigned long long)*bytes);
        return -1;
    }
    if (tr->pack(w, N, K, G ? (int)G : K, scale, zero, buf, err, errlen)) {
        free(buf);
        return -1;
    }
    *group_out = G;
    *out = buf;
    return 0;
}

int inf_pack_matrix(int dtype, const float *w, int N, int K, int group, uint8_t **out, uint64_t *bytes,
                    uint32_t *group_out, char *err, size_t errlen) {
    return inf_pack_matrix_fixed(dtype, w, N, K, group, NULL, NULL, out, bytes, group_out, err, errlen);
}

int inf_pack_from_q8(int dtype, const uint8_t *q8, int N, int K, int G, uint8_t **out, uint64_t *bytes, char *err,
                     size_t errlen) {
    *out = NULL;
    const inf_type_traits *tr = inf_type(dtype);
    if (!tr || !tr->from_q8) {
        snprintf(err, errlen, "storage type %s is not made from q8's layout", inf_type_name(dtype));
        return -1;
    }
    if (tr->from_q8(q8, N, K, G, NULL, bytes) != 0) {
        snprintf(err, errlen, "the codes do not fit %s's layout%s", tr->name,
                 dtype == INF_Q8NM ? " (more than 2 nonzero codes in a group of 4 consecutive inputs)" : "");
        return -1;
    }
    uint8_t *buf = calloc(1, (size_t)*bytes);
    if (!buf) {
        snprintf(err, errlen, "out of memory for %llu bytes", (unsigned long long)*bytes);
        return -1;
    }
    uint64_t again;
    tr->from_q8(q8, N, K, G, buf, &again);
    *out = buf;
    return 0;
}
