/* quant.c - round-to-nearest quantization (formulas in quant.h). */
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

const char *cp_qscheme_name(cp_qscheme s) {
    switch (s) {
    case CP_INT8_SYM: return "int8";
    case CP_INT4_SYM: return "int4";
    case CP_INT4_ASYM: return "int4-asym";
    }
    return "?";
}

int cp_round(float v) { return (int)roundf(v); }

/* Code range of a scheme. */
static void q_range(cp_qscheme s, int *lo, int *hi) {
    switch (s) {
    case CP_INT8_SYM: *lo = -127, *hi = 127; return;
    case CP_INT4_SYM: *lo = -7, *hi = 7; return;
    case CP_INT4_ASYM: *lo = 0, *hi = 15; return;
    }
    *lo = *hi = 0;
}

/* round(v) clamped to [lo, hi], clamping in float first so that no
 * conversion can overflow. */
static int round_clamp(float v, int lo, int hi) {
    float r = roundf(v);
    if (!(r >= (float)lo)) return lo; /* also catches NaN */
    if (r > (float)hi) return hi;
    return (int)r;
}

void cp_group_params(cp_qscheme s, const float *w, int n, float *scale, int *zero) {
    if (s == CP_INT4_ASYM) {
        float lo = 0.0f, hi = 0.0f;
        for (int i = 0; i < n; i++) {
            if (w[i] < lo) lo = w[i];
            if (w[i] > hi) hi = w[i];
        }
        float sc = (hi - lo) / 15.0f;
        *scale = sc;
        if (zero) *zero = sc > 0.0f ? round_clamp(-lo / sc, 0, 15) : 0;
        return;
    }
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(w[i]);
        if (a > amax) amax = a;
    }
    *scale = amax / (s == CP_INT8_SYM ? 127.0f : 7.0f);
    if (zero) *zero = 0;
}

int cp_quantize_value(cp_qscheme s, float w, float scale, int zero) {
    int lo, hi;
    q_range(s, &lo, &hi);
    if (s == CP_INT4_ASYM) {
        if (!(scale > 0.0f)) return zero;
        /* round(w / s) + z, clamped: computed on the rounded integer so the
         * addition is exact */
        float r = roundf(w / scale);
        if (r < -32.0f) r = -32.0f;
        if (r > 32.0f) r = 32.0f;
        int q = (int)r + zero;
        return q < lo ? lo : q > hi ? hi : q;
    }
    if (!(scale > 0.0f)) return 0;
    return round_clamp(w / scale, lo, hi);
}

float cp_dequantize_value(cp_qscheme s, int q, float scale, int zero) {
    if (s == CP_INT4_ASYM) return scale * (float)(q - zero);
    return scale * (float)q;
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

int cp_quantize(cp_qscheme s, const float *w, int N, int K, int group, int8_t *q, float *scale,
                uint8_t *zero, char *err, size_t errlen) {
    if (check_scheme(s, err, errlen)) return -1;
    int G = cp_group_size(N, K, group, err, errlen);
    if (G < 0) return -1;
    if (s == CP_INT4_ASYM && !zero) {
        snprintf(err, errlen, "quantize: int4-asym needs a zero-point buffer");
        return -1;
    }
    for (int r = 0; r < N; r++)
        for (int k = 0; k < K; k++)
            if (!isfinite(w[(size_t)r * K + k])) {
                snprintf(err, errlen, "quantize: weight [%d, %d] is %g: expected a finite value", r, k,
                         (double)w[(size_t)r * K + k]);
                return -1;
            }
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
