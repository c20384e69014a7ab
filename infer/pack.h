/* pack.h - turning float matrices into a storage type's layout (export side):
 * the buffer and the checks around its row's pack function (types.h). */
#ifndef PARE_INF_PACK_H
#define PARE_INF_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"

/* The compress/grid.h scheme behind a quantized storage type (CP_INT8_SYM
 * for q8, CP_INT4_SYM for q4, CP_INT4_ASYM for q4a), or -1 for f32. */
int inf_dtype_scheme(int dtype);

/* Packs w[N, K] (row-major, PyTorch's [out, in]) as storage type dtype with
 * group size `group` (0 = one group per row, G = K; ignored for f32). scale
 * and zero are NULL (the codes and scales are the grid's own: cp_quantize of
 * compress/grid.h, exactly the integers fake quantization simulates) or
 * FIXED parameters [N, K / G] (a quantization-aware checkpoint's), validated
 * (scales finite and >= 0, zero points in the type's range; q4a needs both)
 * and used as given. The codes are then laid out in row blocks (format.h).
 * *out receives a malloc'd buffer (caller frees) of *bytes bytes and
 * *group_out the effective G (0 for f32). Returns 0, or -1 with err: a group
 * size the type cannot use (quantized types need G a multiple of 32 dividing
 * K), a non-finite weight, a bad fixed scale or zero point, or out of
 * memory. */
int inf_pack_matrix_fixed(int dtype, const float *w, int N, int K, int group, const float *scale,
                          const int32_t *zero, uint8_t **out, uint64_t *bytes, uint32_t *group_out, char *err,
                          size_t errlen);

/* inf_pack_matrix_fixed with the grid's own scales and zero points. */
int inf_pack_matrix(int dtype, const float *w, int N, int K, int group, uint8_t **out, uint64_t *bytes,
                    uint32_t *group_out, char *err, size_t errlen);

/* A sparse storage type's layout (q8s) of the dense q8 layout q8 of [N, K]
 * with group G (inf_pack_matrix's bytes): the same codes and scales, so the
 * product is the same bits. *out is allocated (the caller frees it), *bytes
 * its size. Returns 0, or -1 with err (not a sparse type, out of memory). */
int inf_pack_from_q8(int dtype, const uint8_t *q8, int N, int K, int G, uint8_t **out, uint64_t *bytes, char *err,
                     size_t errlen);

#endif
