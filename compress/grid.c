/* grid.c - the integer grids (formulas in grid.h). */
#include "grid.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int cp_grid_init(cp_grid *g, int bits, bool symmetric, char *err, size_t errlen) {
    if (bits < CP_BITS_MIN || bits > CP_BITS_MAX) {
        snprintf(err, errlen, "%d bits: expected %d to %d", bits, CP_BITS_MIN, CP_BITS_MAX);
        return -1;
    }
    *g = cp_grid_of(bits, symmetric);
    return 0;
}

void cp_grid_params(const cp_grid *g, float mn, float mx, float *scale, int *zero) {
    float lo = mn < 0.0f ? mn : 0.0f, hi = mx > 0.0f ? mx : 0.0f;
    if (g->symmetric) {
        float amax = -lo > hi ? -lo : hi;
        float s = amax / ((float)(g->hi - g->lo) / 2.0f);
        *scale = s > CP_SCALE_EPS ? s : CP_SCALE_EPS;
        if (zero) *zero = 0;
        return;
    }
    float s = (hi - lo) / (float)(g->hi - g->lo);
    s = s > CP_SCALE_EPS ? s : CP_SCALE_EPS;
    *scale = s;
    int z = g->lo - (int)cp_rne(lo / s);
    if (zero) *zero = z < g->lo ? g->lo : z > g->hi ? g->hi : z;
}

void cp_grid_minmax(const cp_grid *g, const float *w, int n, float *scale, int *zero) {
    float mn = w[0], mx = w[0];
    for (int i = 1; i < n; i++) {
        if (w[i] < mn) mn = w[i];
        if (w[i] > mx) mx = w[i];
    }
    cp_grid_params(g, mn, mx, scale, zero);
}

void cp_qmatmul_ref(const int8_t *a, const float *sa, int T, const int8_t *q, const float *s, const int32_t *z,
                    int N, int K, int G, float *out) {
    int NG = K / G;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < N; r++) {
            float y = 0.0f;
            for (int g = 0; g < NG; g++) {
                int32_t zg = z ? z[(size_t)r * NG + g] : 0, I = 0;
                for (int k = g * G; k < (g + 1) * G; k++) I += (q[(size_t)r * K + k] - zg) * a[(size_t)t * K + k];
                y = cp_qacc(y, s[(size_t)r * NG + g], I);
            }
            out[(size_t)t * N + r] = y * sa[t];
        }
}

const char *cp_qscheme_name(cp_qscheme s) {
    switch (s) {
    case CP_INT8_SYM: return "int8";
    case CP_INT4_SYM: return "int4";
    case CP_INT4_ASYM: return "int4-asym";
    }
    return "?";
}

void cp_group_params(cp_qscheme s, const float *w, int n, float *scale, int *zero) {
    cp_grid g = cp_scheme_grid(s);
    cp_grid_minmax(&g, w, n, scale, zero);
}

int cp_group_size(int N, int K, int group, char *err, size_t errlen) {
    if (N < 1 || K < 1) {
        snprintf(err, errlen, "quantize: matrix shape [%d, %d]: expected both sizes >= 1", N, K);
        return -1;
    }
    if (group == 0) return K;
    if (group < 0 || group > K || K % group != 0) {
        snprintf(err, errlen, "quantize: group size %d: expected 0 (per output channel) or a divisor of the "
                 "input size %d", group, K);
        return -1;
    }
    return group;
}

static int check_scheme(cp_qscheme s, char *err, size_t errlen) {
    if (s != CP_INT8_SYM && s != CP_INT4_SYM && s != CP_INT4_ASYM) {
        snprintf(err, errlen, "quantize: scheme %d: expected int8, int4 or int4-asym", (int)s);
        return -1;
    }
    return 0;
}

static int check_finite(const float *w, int N, int K, char *err, size_t errlen) {
    for (int r = 0; r < N; r++)
        for (int k = 0; k < K; k++)
            if (!isfinite(w[(size_t)r * K + k])) {
                snprintf(err, errlen, "quantize: weight [%d, %d] is %g: expected a finite value", r, k,
                         (double)w[(size_t)r * K + k]);
                return -1;
            }
    return 0;
}

int cp_quantize(cp_qscheme s, const float *w, int N, int K, int group, int8_t *q, float *scale,
                uint8_t *zero, char *err, size_t errlen) {
    if (check_scheme(s, err, errlen)) return -1;
    int G = cp_group_size(N, K, group, err, errlen);
    if (G < 0) return -1;
    if (s == CP_INT4_ASYM && !zero) {
        snprintf(err, errlen, "quantize: int4-asym needs a zero-point buffer");
        return -1;
    }
    if (check_finite(w, N, K, err, errlen)) return -1;
    int NG = K / G;
    for (int r = 0; r < N; r++)
        for (int g = 0; g < NG; g++) {
            const float *wg = w + (size_t)r * K + (size_t)g * G;
            int8_t *qg = q + (size_t)r * K + (size_t)g * G;
            float sc;
            int z = 0;
            cp_group_params(s, wg, G, &sc, &z);
            scale[(size_t)r * NG + g] = sc;
            if (s == CP_INT4_ASYM) zero[(size_t)r * NG + g] = (uint8_t)z;
            for (int i = 0; i < G; i++) qg[i] = (int8_t)cp_quantize_value(s, wg[i], sc, z);
        }
    return 0;
}

int cp_quantize_fixed(cp_qscheme s, const float *w, int N, int K, int group, const float *scale,
                      const int32_t *zero, int8_t *q, char *err, size_t errlen) {
    if (check_scheme(s, err, errlen)) return -1;
    int G = cp_group_size(N, K, group, err, errlen);
    if (G < 0) return -1;
    if (!scale) {
        snprintf(err, errlen, "quantize: fixed parameters without scales");
        return -1;
    }
    if (s == CP_INT4_ASYM && !zero) {
        snprintf(err, errlen, "quantize: fixed int4-asym scales need their zero points");
        return -1;
    }
    if (check_finite(w, N, K, err, errlen)) return -1;
    int NG = K / G, lo, hi;
    cp_code_range(s, &lo, &hi);
    if (s != CP_INT4_ASYM) lo = hi = 0; /* symmetric grids: zero points, if given, are 0 */
    for (int r = 0; r < N; r++)
        for (int g = 0; g < NG; g++) {
            size_t i = (size_t)r * NG + (size_t)g;
            if (!isfinite(scale[i]) || scale[i] < 0.0f) {
                snprintf(err, errlen, "quantize: fixed scale of row %d, group %d is %g: expected finite and >= 0", r,
                         g, (double)scale[i]);
                return -1;
            }
            if (zero && (zero[i] < lo || zero[i] > hi)) {
                snprintf(err, errlen, "quantize: fixed zero point of row %d, group %d is %ld: expected %d..%d for %s",
                         r, g, (long)zero[i], lo, hi, cp_qscheme_name(s));
                return -1;
            }
        }
    for (int r = 0; r < N; r++)
        for (int g = 0; g < NG; g++) {
            size_t i = (size_t)r * NG + (size_t)g;
            int z = zero ? (int)zero[i] : 0;
            for (int k = g * G; k < (g + 1) * G; k++)
                q[(size_t)r * K + k] = (int8_t)cp_quantize_value(s, w[(size_t)r * K + k], scale[i], z);
        }
    return 0;
}

int cp_dequantize(cp_qscheme s, const int8_t *q, const float *scale, const uint8_t *zero, int N, int K,
                  int group, float *out, char *err, size_t errlen) {
    if (check_scheme(s, err, errlen)) return -1;
    int G = cp_group_size(N, K, group, err, errlen);
    if (G < 0) return -1;
    int NG = K / G;
    for (int r = 0; r < N; r++)
        for (int k = 0; k < K; k++) {
            size_t gi = (size_t)r * NG + (size_t)(k / G);
            int z = s == CP_INT4_ASYM ? zero[gi] : 0;
            out[(size_t)r * K + k] = cp_dequantize_value(s, q[(size_t)r * K + k], scale[gi], z);
        }
    return 0;
}

int cp_fake_quant(cp_qscheme s, const float *w, int N, int K, int group, float *out, char *err,
                  size_t errlen) {
    if (check_scheme(s, err, errlen)) return -1;
    int G = cp_group_size(N, K, group, err, errlen);
    if (G < 0) return -1;
    for (size_t i = 0; i < (size_t)N * K; i++)
        if (!isfinite(w[i])) {
            snprintf(err, errlen, "quantize: weight [%zu, %zu] is %g: expected a finite value", i / (size_t)K,
                     i % (size_t)K, (double)w[i]);
            return -1;
        }
    for (size_t r = 0; r < (size_t)N; r++)
        for (int g = 0; g < K / G; g++) {
            const float *wg = w + r * K + (size_t)g * G;
            float *og = out + r * K + (size_t)g * G;
            float sc;
            int z = 0;
            cp_group_params(s, wg, G, &sc, &z); /* before og overwrites wg when out == w */
            for (int i = 0; i < G; i++) og[i] = cp_dequantize_value(s, cp_quantize_value(s, wg[i], sc, z), sc, z);
        }
    return 0;
}
