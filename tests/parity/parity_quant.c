/* parity_quant.c - writes what tests/parity/torch_quant_parity.py checks
 * against PyTorch 1.13's quantization, bit for bit:
 *   ptq_*    ag_fake_quant (STE) per tensor: random values at an awkward scale
 *            (0.1, where x / s and x * (1 / s) round apart), values exactly at
 *            and next to half-way points (scale 0.25), asymmetric 4-bit with a
 *            zero point; the output and the straight-through gradient of a
 *            random output gradient
 *   pch_*    per channel (axis 0) with int32 zero points
 *   obs_*    the scales and zero points of pare's observers after a stream of
 *            batches: min-max and moving-average min-max (c = 0.01), per
 *            tensor (8-bit symmetric [-127, 127], 4-bit affine [0, 15]) and per
 *            channel (the weights' per-row scales)
 *   lsq_*    ag_fake_quant (LSQ): the forward, and the gradients of the paper's
 *            rule (PyTorch's learnable fake quantization differs where the
 *            rounded value is inside the grid and the unrounded one is not)
 *
 * Usage: parity_quant OUT_DIR (writes OUT_DIR/parity_quant.bin in the record
 * format of parity_gpt.c: "PRTY0001", then u32 name length, name, u8 type
 * (0 float32), u32 ndim, u32 dims[ndim], elements). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "autograd/params.h"
#include "autograd/rng.h"
#include "compress/grid.h"
#include "compress/quant.h"

static FILE *out;

static int put(const char *name, const float *data, int ndim, const int *shape) {
    uint32_t n = (uint32_t)strlen(name), nd = (uint32_t)ndim;
    uint8_t type = 0;
    size_t cnt = 1;
    if (fwrite(&n, 4, 1, out) != 1 || fwrite(name, 1, n, out) != n || fwrite(&type, 1, 1, out) != 1 ||
        fwrite(&nd, 4, 1, out) != 1)
        return -1;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = (uint32_t)shape[i];
        cnt *= (size_t)shape[i];
        if (fwrite(&d, 4, 1, out) != 1) return -1;
    }
    return fwrite(data, 4, cnt, out) == cnt ? 0 : -1;
}

static int put1(const char *name, float v) { return put(name, &v, 1, (int[]){1}); }

/* x [rows, K], one scale per row (nscale = rows) or one (nscale = 1); writes
 * NAME/x, /scale, /zero, /range (lo, hi), /g, /y, /dx. */
static int fq_case(const char *name, const float *x, int rows, int K, const float *scale, const int32_t *zero,
                   int nscale, int lo, int hi, int mode) {
    ag_params p;
    ag_params_init(&p);
    ag_params_add(&p, "x", 2, (int[]){rows, K}, 0);
    ag_params_add(&p, "s", 1, (int[]){nscale}, 0);
    if (ag_params_alloc(&p, AG_PARAMS_GRAD)) return -1;
    ag_tensor *xt = ag_param(&p, 0), *st = ag_param(&p, 1);
    memcpy(xt->data, x, sizeof(float) * (size_t)rows * K);
    memcpy(st->data, scale, sizeof(float) * (size_t)nscale);
    float *g = malloc(sizeof(float) * (size_t)rows * K), zf[64], range[2] = {(float)lo, (float)hi};
    ag_rng r;
    ag_rng_seed(&r, 99);
    for (int i = 0; i < rows * K; i++) g[i] = ag_rng_normal(&r);
    for (int i = 0; i < nscale; i++) zf[i] = zero ? (float)zero[i] : 0.0f;
    ag_ctx *c = ag_ctx_new();
    ag_fq q = {lo, hi, K, zero, mode, 1.0f / sqrtf((float)(rows * K) * (float)hi), NULL, NULL, NULL};
    ag_tensor *y = ag_fake_quant(c, xt, st, &q);
    int rc = !y || ag_backward_seed(c, y, g) != 0;
    char k[64];
#define PUT(suffix, data, nd, shape) (snprintf(k, sizeof k, "%s/%s", name, suffix), put(k, data, nd, shape))
    rc = rc || PUT("x", x, 2, ((int[]){rows, K})) || PUT("scale", scale, 1, ((int[]){nscale})) ||
         PUT("zero", zf, 1, ((int[]){nscale})) || PUT("range", range, 1, ((int[]){2})) ||
         PUT("g", g, 2, ((int[]){rows, K})) || PUT("y", y->data, 2, ((int[]){rows, K})) ||
         PUT("dx", xt->grad, 2, ((int[]){rows, K}));
    if (mode == AG_FQ_LSQ) rc = rc || PUT("ds", st->grad, 1, ((int[]){nscale}));
#undef PUT
    free(g);
    ag_ctx_free(c);
    ag_params_free(&p);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: parity_quant OUT_DIR\n");
        return 2;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/parity_quant.bin", argv[1]);
    if (!(out = fopen(path, "wb"))) {
        fprintf(stderr, "parity_quant: cannot create %s\n", path);
        return 1;
    }
    fwrite("PRTY0001", 1, 8, out);
    int rc = 0;
    ag_rng r;
    ag_rng_seed(&r, 7);
    enum { R = 8, K = 64 };
    float x[R * K];
    /* per tensor, s = 0.1: random values (and 1.55, where x / s rounds the other way) */
    for (int i = 0; i < R * K; i++) x[i] = 8.0f * ag_rng_normal(&r);
    x[0] = 1.55f, x[1] = -1.55f, x[2] = 12.75f, x[3] = -12.85f;
    float s01 = 0.1f;
    rc = rc || fq_case("ptq_s01", x, R, K, &s01, NULL, 1, -128, 127, AG_FQ_STE);
    /* halves and their neighbours at s = 0.25: x * 4 = k + 1/2 exactly */
    for (int i = 0; i < R * K; i++) {
        float h = ((float)(i / 3 - 90) + 0.5f) * 0.25f;
        x[i] = i % 3 == 0 ? h : i % 3 == 1 ? nextafterf(h, -INFINITY) : nextafterf(h, INFINITY);
    }
    float s025 = 0.25f;
    int32_t z3 = 3;
    rc = rc || fq_case("ptq_halves", x, R, K, &s025, NULL, 1, -127, 127, AG_FQ_STE);
    rc = rc || fq_case("ptq_halves_zp", x, R, K, &s025, &z3, 1, -128, 127, AG_FQ_STE);
    /* asymmetric 4-bit with a zero point */
    for (int i = 0; i < R * K; i++) x[i] = 0.3f * ag_rng_normal(&r) + 0.1f;
    float s4 = 0.05f;
    rc = rc || fq_case("ptq_asym4", x, R, K, &s4, &z3, 1, 0, 15, AG_FQ_STE);
    /* per channel, int32 zero points */
    float sc[R];
    int32_t zc[R];
    for (int i = 0; i < R; i++) sc[i] = 0.02f + 0.013f * (float)i, zc[i] = (i * 5) % 16;
    for (int i = 0; i < R * K; i++) x[i] = 0.2f * ag_rng_normal(&r);
    rc = rc || fq_case("pch_asym4", x, R, K, sc, zc, R, 0, 15, AG_FQ_STE);
    for (int i = 0; i < R; i++) zc[i] = 0;
    rc = rc || fq_case("pch_sym8", x, R, K, sc, zc, R, -127, 127, AG_FQ_STE);
    /* LSQ: the forward (PyTorch's learnable fake quantization's too) and the paper's gradients */
    float sl = 0.07f;
    for (int i = 0; i < R * K; i++) x[i] = 0.35f * ag_rng_normal(&r);
    rc = rc || fq_case("lsq_sym4", x, R, K, &sl, NULL, 1, -7, 7, AG_FQ_LSQ);
    /* observers over 5 batches of [R, K] (batch b scaled by 1 + b / 4) */
    enum { NB = 5 };
    float batches[NB][R * K];
    for (int b = 0; b < NB; b++)
        for (int i = 0; i < R * K; i++) batches[b][i] = (1.0f + 0.25f * (float)b) * ag_rng_normal(&r) + 0.05f * (float)b;
    rc = rc || put("obs/x", &batches[0][0], 3, (int[]){NB, R, K});
    const int kinds[2] = {CP_OBS_MINMAX, CP_OBS_EMA};
    const char *kname[2] = {"minmax", "ema"};
    for (int ki = 0; ki < 2; ki++) {
        cp_grid gs = cp_grid_of(8, true), ga = cp_grid_of(4, false);
        cp_obs o = {kinds[ki], false, 0, 0};
        float *scratch = malloc(sizeof(float) * 2 * 65536);
        for (int b = 0; b < NB; b++) cp_obs_update(&o, &gs, batches[b], R * K, 0.01, 99.99, scratch);
        float s, v[2];
        int z;
        char k[64];
        cp_grid_params(&gs, o.mn, o.mx, &s, &z);
        v[0] = s, v[1] = (float)z;
        snprintf(k, sizeof k, "obs_%s_sym8/qparams", kname[ki]);
        rc = rc || put(k, v, 1, (int[]){2});
        cp_grid_params(&ga, o.mn, o.mx, &s, &z);
        v[0] = s, v[1] = (float)z;
        snprintf(k, sizeof k, "obs_%s_affine4/qparams", kname[ki]);
        rc = rc || put(k, v, 1, (int[]){2});
        /* per channel (rows): one observer per row */
        float ps[R], pz[R];
        for (int row = 0; row < R; row++) {
            cp_obs orow = {kinds[ki], false, 0, 0};
            for (int b = 0; b < NB; b++) cp_obs_update(&orow, &gs, batches[b] + row * K, K, 0.01, 99.99, scratch);
            cp_grid_params(&gs, orow.mn, orow.mx, &ps[row], &z);
            pz[row] = (float)z;
        }
        snprintf(k, sizeof k, "obs_%s_perchannel8/scale", kname[ki]);
        rc = rc || put(k, ps, 1, (int[]){R});
        snprintf(k, sizeof k, "obs_%s_perchannel8/zero", kname[ki]);
        rc = rc || put(k, pz, 1, (int[]){R});
        free(scratch);
    }
    rc = rc || put1("obs/momentum", 0.01f);
    if (fclose(out) != 0) rc = 1;
    if (rc) fprintf(stderr, "parity_quant: writing %s failed\n", path);
    return rc ? 1 : 0;
}
