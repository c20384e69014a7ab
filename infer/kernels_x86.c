/* kernels_x86.c - AVX2 and AVX-512 (VNNI) kernels. Compiled without
 * -march: each function carries its own target attribute and kernels.c calls
 * it only when __builtin_cpu_supports says the CPU has the instructions. Every
 * kernel computes exactly what its scalar reference in kernels.c computes
 * (same integers, same float operations in the same order). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "compress/grid.h"
#include "kernels_internal.h"

#define T_AVX2 __attribute__((target("avx2,fma")))
#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

static inline int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* The f32 matrix-vector kernels stream the weight from memory (the small
 * model's 44 MB do not fit in L3); one core's hardware prefetchers keep too
 * few lines in flight for the four row streams, so the kernels also ask for
 * the same columns INF_PF_ROWS rows ahead, into L2 (prefetcht1). Measured on
 * the small model, 1 thread: about 300 -> 460 tokens/s; prefetching into L1
 * (prefetcht0) gained nothing, 4 to 32 rows ahead were alike. Prefetches
 * change no result (and never fault, past the end of the matrix either). */
#define INF_PF_ROWS 8

/* Prefetches column k of the 4 rows starting INF_PF_ROWS rows after w0 (an
 * address computed as an integer: it may lie past the matrix). */
INLINE void prefetch4(const float *w0, int K, int k) {
    uintptr_t p = (uintptr_t)w0 + sizeof(float) * ((size_t)INF_PF_ROWS * K + (size_t)k), row = sizeof(float) * (size_t)K;
    _mm_prefetch((const char *)p, _MM_HINT_T1);
    _mm_prefetch((const char *)(p + row), _MM_HINT_T1);
    _mm_prefetch((const char *)(p + 2 * row), _MM_HINT_T1);
    _mm_prefetch((const char *)(p + 3 * row), _MM_HINT_T1);
}

/* ================================================================== AVX2 */

/* Lanes (j, j+8) of a 16-lane sum held as lo = lanes 0..7, hi = 8..15, then
 * (j, j+4), (j, j+2), (j, j+1): the order of inf_dot_f32_ref. */
INLINE T_AVX2 float hsum_8x2(__m256 lo, __m256 hi) {
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

T_AVX2 void inf_f32_avx2(const float *w, const float *x, int K, float *out, int r0, int r1) {
    int K16 = K & ~15;
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const float *w0 = w + (size_t)r * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
        for (int k = 0; k < K16; k += 16) {
            prefetch4(w0, K, k);
            __m256 xl = _mm256_loadu_ps(x + k), xh = _mm256_loadu_ps(x + k + 8);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xl, a0);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k + 8), xh, b0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xl, a1);
            b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k + 8), xh, b1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xl, a2);
            b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k + 8), xh, b2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xl, a3);
            b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k + 8), xh, b3);
        }
        float s[4] = {hsum_8x2(a0, b0), hsum_8x2(a1, b1), hsum_8x2(a2, b2), hsum_8x2(a3, b3)};
        const float *wr[4] = {w0, w1, w2, w3};
        for (int i = 0; i < 4; i++) {
            for (int k = K16; k < K; k++) s[i] = fmaf(x[k], wr[i][k], s[i]);
            out[r + i] = s[i];
        }
    }
    for (; r < r1; r++) {
        const float *wr = w + (size_t)r * K;
        __m256 a = _mm256_setzero_ps(), b = a;
        for (int k = 0; k < K16; k += 16) {
            a = _mm256_fmadd_ps(_mm256_loadu_ps(wr + k), _mm256_loadu_ps(x + k), a);
            b = _mm256_fmadd_ps(_mm256_loadu_ps(wr + k + 8), _mm256_loadu_ps(x + k + 8), b);
        }
        float s = hsum_8x2(a, b);
        for (int k = K16; k < K; k++) s = fmaf(x[k], wr[k], s);
        out[r] = s;
    }
}

/* inf_finish on 8 lanes. */
INLINE T_AVX2 __m256 finish8(int L, const __m256 *y) {
    __m256 inv = _mm256_set1_ps(INF_LIMB_INV);
    if (L == 1) return y[0];
    if (L == 2) return _mm256_add_ps(y[0], _mm256_mul_ps(y[1], inv));
    return _mm256_add_ps(y[0], _mm256_mul_ps(_mm256_add_ps(y[1], _mm256_mul_ps(y[2], inv)), inv));
}

/* Stores lanes of v for rows r .. r+7 that are < N. */
INLINE T_AVX2 void store_rows8(float *out, int r, int N, __m256 v) {
    if (r + 8 <= N) {
        _mm256_storeu_ps(out + r, v);
    } else {
        float tmp[8];
        _mm256_storeu_ps(tmp, v);
        for (int i = 0; r + i < N; i++) out[r + i] = tmp[i];
    }
}

T_AVX2 void inf_q8_avx2(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG, L = k->L, N = w->N;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int rb = rb0; rb < rb1; rb++) {
        const uint8_t *blk = w->codes + (size_t)rb * (K / 4) * 64;
        for (int t = 0; t < T; t++) {
            const int8_t *a[3] = {inf_limb(k, K, t, 0), L > 1 ? inf_limb(k, K, t, 1) : NULL,
                                  L > 2 ? inf_limb(k, K, t, 2) : NULL};
            __m256 ylo[3], yhi[3];
            for (int l = 0; l < 3; l++) ylo[l] = yhi[l] = _mm256_setzero_ps();
            for (int g = 0; g < NG; g++) {
                __m256i lo[3] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
                __m256i hi[3] = {lo[0], lo[0], lo[0]};
                for (int kc = g * G / 4; kc < (g + 1) * G / 4; kc++) {
                    __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + (size_t)kc * 64));
                    __m256i w1 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + (size_t)kc * 64 + 32));
                    __m256i aw0 = _mm256_abs_epi8(w0), aw1 = _mm256_abs_epi8(w1);
                    for (int l = 0; l < L; l++) {
                        __m256i av = _mm256_set1_epi32(load_i32(a[l] + 4 * kc));
                        __m256i p0 = _mm256_maddubs_epi16(aw0, _mm256_sign_epi8(av, w0));
                        __m256i p1 = _mm256_maddubs_epi16(aw1, _mm256_sign_epi8(av, w1));
                        lo[l] = _mm256_add_epi32(lo[l], _mm256_madd_epi16(p0, ones));
                        hi[l] = _mm256_add_epi32(hi[l], _mm256_madd_epi16(p1, ones));
                    }
                }
                const float *s = w->scales + ((size_t)rb * NG + g) * INF_ROWS;
                __m256 sl = _mm256_loadu_ps(s), sh = _mm256_loadu_ps(s + 8);
                for (int l = 0; l < L; l++) {
                    ylo[l] = _mm256_fmadd_ps(sl, _mm256_cvtepi32_ps(lo[l]), ylo[l]);
                    yhi[l] = _mm256_fmadd_ps(sh, _mm256_cvtepi32_ps(hi[l]), yhi[l]);
                }
            }
            __m256 sx = _mm256_set1_ps(k->sx[t]);
            store_rows8(out + (size_t)t * N, rb * INF_ROWS, N, _mm256_mul_ps(finish8(L, ylo), sx));
            store_rows8(out + (size_t)t * N, rb * INF_ROWS + 8, N, _mm256_mul_ps(finish8(L, yhi), sx));
        }
    }
}

/* q8s: 8 rows per gather. Entry e of each row of a quad is byte e of the
 * row's 32-bit word of idx and q; its column's packed limbs (inf_kctx.apk:
 * a0 in bits 0-15, a1 and a2 in the top two bytes) are gathered, and
 * vpmaddwd with the code in the low half of a lane and 0 in the high half
 * multiplies exactly the lane's low 16 bits: a0 directly, a1 and a2 after a
 * shift. The integer sums are the scalar reference's, the epilogue q8's. */
INLINE T_AVX2 void q8s_quads(const inf_blk_q8s *qd, uint64_t n, const uint32_t *ap, int L, __m256i *lo, __m256i *hi) {
    const __m256i m8 = _mm256_set1_epi32(0xFF), m16 = _mm256_set1_epi32(0xFFFF);
    for (uint64_t j = 0; j < n; j++) {
        __m256i i0 = _mm256_loadu_si256((const __m256i *)(const void *)qd[j].idx[0]);
        __m256i i1 = _mm256_loadu_si256((const __m256i *)(const void *)qd[j].idx[8]);
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(const void *)qd[j].q[0]);
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(const void *)qd[j].q[8]);
#pragma GCC unroll 4
        for (int e = 0; e < 4; e++) {
            __m256i c0 = _mm256_and_si256(_mm256_srli_epi32(i0, 8 * e), m8);
            __m256i c1 = _mm256_and_si256(_mm256_srli_epi32(i1, 8 * e), m8);
            __m256i q0 = _mm256_and_si256(_mm256_srai_epi32(_mm256_slli_epi32(v0, 24 - 8 * e), 24), m16);
            __m256i q1 = _mm256_and_si256(_mm256_srai_epi32(_mm256_slli_epi32(v1, 24 - 8 * e), 24), m16);
            __m256i x0 = _mm256_i32gather_epi32((const int *)(const void *)ap, c0, 4);
            __m256i x1 = _mm256_i32gather_epi32((const int *)(const void *)ap, c1, 4);
            lo[0] = _mm256_add_epi32(lo[0], _mm256_madd_epi16(x0, q0));
            hi[0] = _mm256_add_epi32(hi[0], _mm256_madd_epi16(x1, q1));
            if (L > 1) {
                lo[1] = _mm256_add_epi32(lo[1], _mm256_madd_epi16(_mm256_srai_epi32(_mm256_slli_epi32(x0, 8), 24), q0));
                hi[1] = _mm256_add_epi32(hi[1], _mm256_madd_epi16(_mm256_srai_epi32(_mm256_slli_epi32(x1, 8), 24), q1));
            }
            if (L > 2) {
                lo[2] = _mm256_add_epi32(lo[2], _mm256_madd_epi16(_mm256_srai_epi32(x0, 24), q0));
                hi[2] = _mm256_add_epi32(hi[2], _mm256_madd_epi16(_mm256_srai_epi32(x1, 24), q1));
            }
        }
    }
}

INLINE T_AVX2 void q8s_rows(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1, int L) {
    int K = w->K, G = w->G, NG = w->NG, NC = w->NC, N = w->N;
    const inf_blk_q8s *qd = (const inf_blk_q8s *)(const void *)w->slots;
    for (int rb = rb0; rb < rb1; rb++)
        for (int t = 0; t < T; t++) {
            const uint32_t *ap = k->apk + (size_t)t * K;
            __m256 ylo[3], yhi[3];
            for (int l = 0; l < 3; l++) ylo[l] = yhi[l] = _mm256_setzero_ps();
            for (int g = 0; g < NG; g++) {
                __m256i lo[3] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
                __m256i hi[3] = {lo[0], lo[0], lo[0]};
                for (int c = 0; c < NC; c++) {
                    size_t u = ((size_t)rb * NG + g) * NC + c;
                    q8s_quads(qd + w->soff[u], w->soff[u + 1] - w->soff[u],
                              ap + (size_t)g * G + (size_t)c * INF_Q8S_CHUNK, L, lo, hi);
                }
                const float *s = w->scales + ((size_t)rb * NG + g) * INF_ROWS;
                __m256 sl8 = _mm256_loadu_ps(s), sh8 = _mm256_loadu_ps(s + 8);
                for (int l = 0; l < L; l++) {
                    ylo[l] = _mm256_fmadd_ps(sl8, _mm256_cvtepi32_ps(lo[l]), ylo[l]);
                    yhi[l] = _mm256_fmadd_ps(sh8, _mm256_cvtepi32_ps(hi[l]), yhi[l]);
                }
            }
            __m256 sx = _mm256_set1_ps(k->sx[t]);
            store_rows8(out + (size_t)t * N, rb * INF_ROWS, N, _mm256_mul_ps(finish8(L, ylo), sx));
            store_rows8(out + (size_t)t * N, rb * INF_ROWS + 8, N, _mm256_mul_ps(finish8(L, yhi), sx));
        }
}

T_AVX2 void inf_q8s_avx2(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    switch (k->L) { /* one copy per limb count: no test in the quad loop */
    case 1: q8s_rows(k, w, T, out, rb0, rb1, 1); break;
    case 2: q8s_rows(k, w, T, out, rb0, rb1, 2); break;
    default: q8s_rows(k, w, T, out, rb0, rb1, 3); break;
    }
}

/* q8nm: per 8 rows, the 4 entries' columns (0..7 within the block) from
 * the positions bytes, the activations of the block's 8 columns broadcast
 * and picked with vpshufb, then q8's sign trick (|q| x sign(a, q)) and
 * vpmaddwd: each row's 4 products summed exactly into its lane. */
INLINE T_AVX2 __m256i nm_idx8(const uint8_t *pos) {
    __m256i p = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)pos));
    __m256i t = _mm256_or_si256(_mm256_or_si256(p, _mm256_slli_epi32(p, 6)),
                                _mm256_or_si256(_mm256_slli_epi32(p, 12), _mm256_slli_epi32(p, 18)));
    return _mm256_or_si256(_mm256_and_si256(t, _mm256_set1_epi32(0x03030303)), _mm256_set1_epi32(0x04040000));
}

INLINE T_AVX2 void q8nm_rows(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1, int L) {
    int K = w->K, G = w->G, NG = w->NG, N = w->N;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int rb = rb0; rb < rb1; rb++) {
        const inf_blk_q8nm *blk = (const inf_blk_q8nm *)(const void *)w->codes + (size_t)rb * (K / 8);
        for (int t = 0; t < T; t++) {
            const int8_t *a[3] = {inf_limb(k, K, t, 0), L > 1 ? inf_limb(k, K, t, 1) : NULL,
                                  L > 2 ? inf_limb(k, K, t, 2) : NULL};
            __m256 ylo[3], yhi[3];
            for (int l = 0; l < 3; l++) ylo[l] = yhi[l] = _mm256_setzero_ps();
            for (int g = 0; g < NG; g++) {
                __m256i lo[3] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
                __m256i hi[3] = {lo[0], lo[0], lo[0]};
                for (int kb = g * G / 8; kb < (g + 1) * G / 8; kb++) {
                    __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)blk[kb].q[0]);
                    __m256i w1 = _mm256_loadu_si256((const __m256i *)(const void *)blk[kb].q[8]);
                    __m256i x0 = nm_idx8(blk[kb].pos), x1 = nm_idx8(blk[kb].pos + 8);
                    __m256i aw0 = _mm256_abs_epi8(w0), aw1 = _mm256_abs_epi8(w1);
#pragma GCC unroll 3
                    for (int l = 0; l < L; l++) {
                        long long v;
                        memcpy(&v, a[l] + 8 * kb, 8);
                        __m256i av = _mm256_set1_epi64x(v);
                        __m256i s0 = _mm256_shuffle_epi8(av, x0), s1 = _mm256_shuffle_epi8(av, x1);
                        __m256i p0 = _mm256_maddubs_epi16(aw0, _mm256_sign_epi8(s0, w0));
                        __m256i p1 = _mm256_maddubs_epi16(aw1, _mm256_sign_epi8(s1, w1));
                        lo[l] = _mm256_add_epi32(lo[l], _mm256_madd_epi16(p0, ones));
                        hi[l] = _mm256_add_epi32(hi[l], _mm256_madd_epi16(p1, ones));
                    }
                }
                const float *s = w->scales + ((size_t)rb * NG + g) * INF_ROWS;
                __m256 sl = _mm256_loadu_ps(s), sh = _mm256_loadu_ps(s + 8);
                for (int l = 0; l < L; l++) {
                    ylo[l] = _mm256_fmadd_ps(sl, _mm256_cvtepi32_ps(lo[l]), ylo[l]);
                    yhi[l] = _mm256_fmadd_ps(sh, _mm256_cvtepi32_ps(hi[l]), yhi[l]);
                }
            }
            __m256 sx = _mm256_set1_ps(k->sx[t]);
            store_rows8(out + (size_t)t * N, rb * INF_ROWS, N, _mm256_mul_ps(finish8(L, ylo), sx));
            store_rows8(out + (size_t)t * N, rb * INF_ROWS + 8, N, _mm256_mul_ps(finish8(L, yhi), sx));
        }
    }
}

T_AVX2 void inf_q8nm_avx2(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    switch (k->L) {
    case 1: q8nm_rows(k, w, T, out, rb0, rb1, 1); break;
    case 2: q8nm_rows(k, w, T, out, rb0, rb1, 2); break;
    default: q8nm_rows(k, w, T, out, rb0, rb1, 3); break;
    }
}

T_AVX2 void inf_q4_avx2(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG, L = k->L, N = w->N;
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(0x0F);
    for (int rb = rb0; rb < rb1; rb++) {
        const uint8_t *blk = w->codes + (size_t)rb * (K / 8) * 64;
        for (int t = 0; t < T; t++) {
            const int8_t *a[3] = {inf_limb(k, K, t, 0), L > 1 ? inf_limb(k, K, t, 1) : NULL,
                                  L > 2 ? inf_limb(k, K, t, 2) : NULL};
            __m256 ylo[3], yhi[3];
            for (int l = 0; l < 3; l++) ylo[l] = yhi[l] = _mm256_setzero_ps();
            for (int g = 0; g < NG; g++) {
                __m256i lo[3] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
                __m256i hi[3] = {lo[0], lo[0], lo[0]};
                for (int kc = g * G / 8; kc < (g + 1) * G / 8; kc++) {
                    __m256i v0 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + (size_t)kc * 64));
                    __m256i v1 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + (size_t)kc * 64 + 32));
                    __m256i l0 = _mm256_and_si256(v0, m4), h0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m4);
                    __m256i l1 = _mm256_and_si256(v1, m4), h1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m4);
                    for (int l = 0; l < L; l++) {
                        __m256i al = _mm256_set1_epi32(load_i32(a[l] + 8 * kc));
                        __m256i ah = _mm256_set1_epi32(load_i32(a[l] + 8 * kc + 4));
                        __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(l0, al), _mm256_maddubs_epi16(h0, ah));
                        __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(l1, al), _mm256_maddubs_epi16(h1, ah));
                        lo[l] = _mm256_add_epi32(lo[l], _mm256_madd_epi16(p0, ones));
                        hi[l] = _mm256_add_epi32(hi[l], _mm256_madd_epi16(p1, ones));
                    }
                }
                const int32_t *z = w->corr + ((size_t)rb * NG + g) * INF_ROWS;
                __m256i zl = _mm256_loadu_si256((const __m256i *)(const void *)z);
                __m256i zh = _mm256_loadu_si256((const __m256i *)(const void *)(z + 8));
                for (int l = 0; l < L; l++) {
                    __m256i as = _mm256_set1_epi32(inf_limb_sum(k, NG, t, l)[g]);
                    lo[l] = _mm256_sub_epi32(lo[l], _mm256_mullo_epi32(zl, as));
                    hi[l] = _mm256_sub_epi32(hi[l], _mm256_mullo_epi32(zh, as));
                }
                const float *s = w->scales + ((size_t)rb * NG + g) * INF_ROWS;
                __m256 sl = _mm256_loadu_ps(s), sh = _mm256_loadu_ps(s + 8);
                for (int l = 0; l < L; l++) {
                    ylo[l] = _mm256_fmadd_ps(sl, _mm256_cvtepi32_ps(lo[l]), ylo[l]);
                    yhi[l] = _mm256_fmadd_ps(sh, _mm256_cvtepi32_ps(hi[l]), yhi[l]);
                }
            }
            __m256 sx = _mm256_set1_ps(k->sx[t]);
            store_rows8(out + (size_t)t * N, rb * INF_ROWS, N, _mm256_mul_ps(finish8(L, ylo), sx));
            store_rows8(out + (size_t)t * N, rb * INF_ROWS + 8, N, _mm256_mul_ps(finish8(L, yhi), sx));
        }
    }
}

T_AVX2 void inf_qacc_rows_avx2(float *y, const float *I, const float *s, int R, int N, bool first, float sa,
                               const float *b) {
    bool last = sa > 0.0f;
    __m256 vsa = _mm256_set1_ps(sa);
    for (int r = 0; r < R; r++) {
        float *yr = y + (size_t)r * N;
        const float *ir = I + (size_t)r * N;
        int n = 0;
        for (; n + 8 <= N; n += 8) {
            __m256 acc = first ? _mm256_setzero_ps() : _mm256_loadu_ps(yr + n);
            __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(s + n), _mm256_loadu_ps(ir + n), acc);
            if (last) {
                v = _mm256_mul_ps(v, vsa);
                if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + n));
            }
            _mm256_storeu_ps(yr + n, v);
        }
        for (; n < N; n++) {
            float v = fmaf(s[n], ir[n], first ? 0.0f : yr[n]);
            if (last) {
                v = v * sa;
                if (b) v = v + b[n];
            }
            yr[n] = v;
        }
    }
}

/* kernels.c's codes_to_float for int8 codes: row block rb's codes as floats,
 * transposed (column k of the 16 rows at out[k * ldo + rb * 16]); the same
 * values (exact conversions). */
T_AVX2 void inf_codes_f32_q8_avx2(const inf_weight *w, float *out, int ldo, int rb0, int rb1) {
    int K = w->K;
    for (int rb = rb0; rb < rb1; rb++) {
        const uint8_t *blk = w->codes + (size_t)rb * (K / 4) * 64;
        float *o = out + (size_t)rb * INF_ROWS;
        for (int kc = 0; kc < K / 4; kc++) {
            __m256i v0 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + (size_t)kc * 64));
            __m256i v1 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + (size_t)kc * 64 + 32));
#define COL(j)                                                                                                  \
    do {                                                                                                        \
        float *oc = o + (size_t)(4 * kc + (j)) * ldo;                                                           \
        _mm256_storeu_ps(oc, _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(v0, 24 - 8 * (j)), 24)));     \
        _mm256_storeu_ps(oc + 8, _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(v1, 24 - 8 * (j)), 24))); \
    } while (0)
            COL(0);
            COL(1);
            COL(2);
            COL(3);
#undef COL
        }
    }
}

/* The static codes of x[n] as floats (cp_act_code: nearbyint(x * inv)
 * clamped to [-hi, hi], NaN -> -hi): the same values as the scalar loop. */
T_AVX2 void inf_act_codes_f32_avx2(const float *x, size_t n, float inv, int hi, float *out) {
    __m256 vi = _mm256_set1_ps(inv), vh = _mm256_set1_ps((float)hi), vl = _mm256_set1_ps((float)-hi);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 ok = _mm256_cmp_ps(r, vl, _CMP_GE_OQ); /* false for NaN */
        r = _mm256_blendv_ps(vl, r, ok);
        _mm256_storeu_ps(out + i, _mm256_min_ps(r, vh));
    }
    for (; i < n; i++) out[i] = (float)cp_act_code(x[i], inv, hi);
}

/* ================================================================ AVX-512 */

INLINE T_512 float hsum16(__m512 v) {
    __m256 lo = _mm512_castps512_ps256(v);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

T_512 void inf_f32_avx512(const float *w, const float *x, int K, float *out, int r0, int r1) {
    int K16 = K & ~15;
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const float *w0 = w + (size_t)r * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int k = 0; k < K16; k += 16) {
            prefetch4(w0, K, k);
            __m512 xv = _mm512_loadu_ps(x + k);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), xv, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), xv, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), xv, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), xv, a3);
        }
        float s[4] = {hsum16(a0), hsum16(a1), hsum16(a2), hsum16(a3)};
        const float *wr[4] = {w0, w1, w2, w3};
        for (int i = 0; i < 4; i++) {
            for (int k = K16; k < K; k++) s[i] = fmaf(x[k], wr[i][k], s[i]);
            out[r + i] = s[i];
        }
    }
    for (; r < r1; r++) {
        const float *wr = w + (size_t)r * K;
        __m512 a = _mm512_setzero_ps();
        for (int k = 0; k < K16; k += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(wr + k), _mm512_loadu_ps(x + k), a);
        float s = hsum16(a);
        for (int k = K16; k < K; k++) s = fmaf(x[k], wr[k], s);
        out[r] = s;
    }
}

T_512 void inf_wsum_avx512(float *y, const float *c, float scale, const float *v, int m, int n, int ldv) {
    for (int i0 = 0; i0 < n; i0 += 64) { /* up to 64 columns (4 registers) per pass over the rows */
        int w = n - i0 < 64 ? n - i0 : 64;
        __mmask16 mk[4];
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) {
            int left = w - 16 * q;
            mk[q] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1u) : 0;
        }
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int j = 0; j < m; j++) {
            __m512 a = _mm512_set1_ps(c[j] * scale);
            const float *vj = v + (size_t)j * ldv + i0;
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++)
                acc[q] = _mm512_add_ps(acc[q], _mm512_mul_ps(a, _mm512_maskz_loadu_ps(mk[q], vj + 16 * q)));
        }
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) _mm512_mask_storeu_ps(y + i0 + 16 * q, mk[q], acc[q]);
    }
}

INLINE T_512 __m512 finish16(int L, const __m512 *y) {
    __m512 inv = _mm512_set1_ps(INF_LIMB_INV);
    if (L == 1) return y[0];
    if (L == 2) return _mm512_add_ps(y[0], _mm512_mul_ps(y[1], inv));
    return _mm512_add_ps(y[0], _mm512_mul_ps(_mm512_add_ps(y[1], _mm512_mul_ps(y[2], inv)), inv));
}

INLINE T_512 void store_rows16(float *out, int r, int N, __m512 v) {
    int n = N - r < 16 ? N - r : 16;
    _mm512_mask_storeu_ps(out + r, (__mmask16)((1u << n) - 1u), v);
}

/* One row block, tokens t0 .. t0+NT-1, L limbs: NT and L are constants at
 * every call site, so the accumulators live in registers. */
INLINE T_512 void q8_tile512(const inf_kctx *k, const inf_weight *w, float *out, int rb, int t0, const int NT,
                             const int L) {
    int K = w->K, G = w->G, NG = w->NG, N = w->N;
    const uint8_t *blk = w->codes + (size_t)rb * (K / 4) * 64;
    const uint8_t *au[4][3];
    for (int tt = 0; tt < NT; tt++)
        for (int l = 0; l < L; l++) au[tt][l] = inf_limb_u(k, K, t0 + tt, l);
    __m512 y[4][3];
    for (int tt = 0; tt < NT; tt++)
        for (int l = 0; l < 3; l++) y[tt][l] = _mm512_setzero_ps();
    /* PA partial accumulators per (token, limb) over consecutive blocks hide
     * vpdpbusd's latency; integer sums, so the split changes nothing */
    const int PA = NT == 1 ? 4 : NT == 2 ? 2 : 1;
    for (int g = 0; g < NG; g++) {
        __m512i acc[4][3][4];
#pragma GCC unroll 4
        for (int tt = 0; tt < NT; tt++)
#pragma GCC unroll 3
            for (int l = 0; l < L; l++)
#pragma GCC unroll 4
                for (int pa = 0; pa < PA; pa++) acc[tt][l][pa] = _mm512_setzero_si512();
        for (int kc = g * G / 4; kc < (g + 1) * G / 4; kc += PA) {
#pragma GCC unroll 4
            for (int pa = 0; pa < PA; pa++) {
                __m512i wv = _mm512_loadu_si512((const void *)(blk + (size_t)(kc + pa) * 64));
#pragma GCC unroll 4
                for (int tt = 0; tt < NT; tt++)
#pragma GCC unroll 3
                    for (int l = 0; l < L; l++)
                        acc[tt][l][pa] = _mm512_dpbusd_epi32(
                            acc[tt][l][pa], _mm512_set1_epi32(load_i32(au[tt][l] + 4 * (kc + pa))), wv);
            }
        }
#pragma GCC unroll 4
        for (int tt = 0; tt < NT; tt++)
#pragma GCC unroll 3
            for (int l = 0; l < L; l++)
#pragma GCC unroll 4
                for (int pa = 1; pa < PA; pa++) acc[tt][l][0] = _mm512_add_epi32(acc[tt][l][0], acc[tt][l][pa]);
        __m512i corr = _mm512_loadu_si512((const void *)(w->corr + ((size_t)rb * NG + g) * INF_ROWS));
        __m512 s = _mm512_loadu_ps(w->scales + ((size_t)rb * NG + g) * INF_ROWS);
#pragma GCC unroll 4
        for (int tt = 0; tt < NT; tt++) {
#pragma GCC unroll 3
            for (int l = 0; l < L; l++)
                y[tt][l] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[tt][l][0], corr)), y[tt][l]);
        }
    }
    for (int tt = 0; tt < NT; tt++)
        store_rows16(out + (size_t)(t0 + tt) * N, rb * INF_ROWS, N, _mm512_mul_ps(finish16(L, y[tt]), _mm512_set1_ps(k->sx[t0 + tt])));
}

INLINE T_512 void q4_tile512(const inf_kctx *k, const inf_weight *w, float *out, int rb, int t0, const int NT,
                             const int L) {
    int K = w->K, G = w->G, NG = w->NG, N = w->N;
    const uint8_t *blk = w->codes + (size_t)rb * (K / 8) * 64;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const int8_t *a[4][3];
    for (int tt = 0; tt < NT; tt++)
        for (int l = 0; l < L; l++) a[tt][l] = inf_limb(k, K, t0 + tt, l);
    __m512 y[4][3];
    for (int tt = 0; tt < NT; tt++)
        for (int l = 0; l < 3; l++) y[tt][l] = _mm512_setzero_ps();
    /* partial accumulators, as in q8_tile512; a group of G >= 32 columns is a
     * multiple of 4 blocks here, so at most 2 */
    const int PA = NT == 1 ? 2 : 1;
    const bool sym = w->dtype == INF_Q4;          /* zero point 8 everywhere: no multiply */
    for (int g = 0; g < NG; g++) {
        __m512i acc[4][3][4];
#pragma GCC unroll 4
        for (int tt = 0; tt < NT; tt++)
#pragma GCC unroll 3
            for (int l = 0; l < L; l++)
#pragma GCC unroll 4
                for (int pa = 0; pa < PA; pa++) acc[tt][l][pa] = _mm512_setzero_si512();
        for (int kc = g * G / 8; kc < (g + 1) * G / 8; kc += PA) {
#pragma GCC unroll 4
            for (int pa = 0; pa < PA; pa++) {
                __m512i v = _mm512_loadu_si512((const void *)(blk + (size_t)(kc + pa) * 64));
                __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
#pragma GCC unroll 4
                for (int tt = 0; tt < NT; tt++)
#pragma GCC unroll 3
                    for (int l = 0; l < L; l++) {
                        __m512i al = _mm512_set1_epi32(load_i32(a[tt][l] + 8 * (kc + pa)));
                        __m512i ah = _mm512_set1_epi32(load_i32(a[tt][l] + 8 * (kc + pa) + 4));
                        acc[tt][l][pa] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(acc[tt][l][pa], lo, al), hi, ah);
                    }
            }
        }
#pragma GCC unroll 4
        for (int tt = 0; tt < NT; tt++)
#pragma GCC unroll 3
            for (int l = 0; l < L; l++)
#pragma GCC unroll 4
                for (int pa = 1; pa < PA; pa++) acc[tt][l][0] = _mm512_add_epi32(acc[tt][l][0], acc[tt][l][pa]);
        __m512i z = _mm512_loadu_si512((const void *)(w->corr + ((size_t)rb * NG + g) * INF_ROWS));
        __m512 s = _mm512_loadu_ps(w->scales + ((size_t)rb * NG + g) * INF_ROWS);
#pragma GCC unroll 4
        for (int tt = 0; tt < NT; tt++) {
            __m512i I[3];
            for (int l = 0; l < L; l++) {
                int32_t as = inf_limb_sum(k, NG, t0 + tt, l)[g];
                I[l] = _mm512_sub_epi32(acc[tt][l][0], sym ? _mm512_set1_epi32(8 * as)
                                                           : _mm512_mullo_epi32(z, _mm512_set1_epi32(as)));
            }
#pragma GCC unroll 3
            for (int l = 0; l < L; l++) y[tt][l] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(I[l]), y[tt][l]);
        }
    }
    for (int tt = 0; tt < NT; tt++)
        store_rows16(out + (size_t)(t0 + tt) * N, rb * INF_ROWS, N, _mm512_mul_ps(finish16(L, y[tt]), _mm512_set1_ps(k->sx[t0 + tt])));
}

/* Batch-1 decode of int4 weights (q4_tile512 with one token), written out
 * for the per-group work: the zero-point term -z * sum(a) starts each limb's
 * accumulator instead of being subtracted afterwards (for q4 it is the
 * constant -8 sum(a): no multiply), two accumulators per limb hide
 * vpdpbusd's latency, and each group ends in one add, one conversion and one
 * FMA per limb. R = 2 row blocks share each activation broadcast. The
 * integers and the float operations are the reference's. */
INLINE T_512 void q4_dec512(const inf_kctx *k, const inf_weight *w, float *out, int rb, const int R, const int L) {
    int K = w->K, G = w->G, NG = w->NG;
    const uint8_t *blk[2];
    const float *sc[2];
    const int32_t *zp[2];
    for (int r = 0; r < R; r++) {
        blk[r] = w->codes + (size_t)(rb + r) * (K / 8) * 64;
        sc[r] = w->scales + (size_t)(rb + r) * NG * INF_ROWS;
        zp[r] = w->corr + (size_t)(rb + r) * NG * INF_ROWS;
    }
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const int8_t *a[3];
    const int32_t *as[3];
    for (int l = 0; l < L; l++) a[l] = inf_limb(k, K, 0, l), as[l] = inf_limb_sum(k, NG, 0, l);
    const bool sym = w->dtype == INF_Q4;
    __m512 y[2][3];
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 3
        for (int l = 0; l < 3; l++) y[r][l] = _mm512_setzero_ps();
    for (int g = 0; g < NG; g++) {
        __m512i c[2][3], d[2][3];
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) {
            __m512i z = sym ? _mm512_setzero_si512() : _mm512_loadu_si512((const void *)(zp[r] + (size_t)g * INF_ROWS));
#pragma GCC unroll 3
            for (int l = 0; l < L; l++) {
                c[r][l] = sym ? _mm512_set1_epi32(-8 * as[l][g]) : _mm512_mullo_epi32(z, _mm512_set1_epi32(-as[l][g]));
                d[r][l] = _mm512_setzero_si512();
            }
        }
        for (int kc = g * G / 8; kc < (g + 1) * G / 8; kc += 2) {
            __m512i vl[2], vh[2], ul[2], uh[2];
#pragma GCC unroll 2
            for (int r = 0; r < R; r++) {
                const uint8_t *p = blk[r] + (size_t)kc * 64;
                __m512i v = _mm512_loadu_si512((const void *)p), u = _mm512_loadu_si512((const void *)(p + 64));
                vl[r] = _mm512_and_si512(v, m4), vh[r] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                ul[r] = _mm512_and_si512(u, m4), uh[r] = _mm512_and_si512(_mm512_srli_epi16(u, 4), m4);
            }
#pragma GCC unroll 3
            for (int l = 0; l < L; l++) {
                const int8_t *p = a[l] + 8 * kc;
                __m512i b0 = _mm512_set1_epi32(load_i32(p)), b1 = _mm512_set1_epi32(load_i32(p + 4));
                __m512i b2 = _mm512_set1_epi32(load_i32(p + 8)), b3 = _mm512_set1_epi32(load_i32(p + 12));
#pragma GCC unroll 2
                for (int r = 0; r < R; r++) {
                    c[r][l] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(c[r][l], vl[r], b0), vh[r], b1);
                    d[r][l] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(d[r][l], ul[r], b2), uh[r], b3);
                }
            }
        }
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) {
            __m512 s = _mm512_loadu_ps(sc[r] + (size_t)g * INF_ROWS);
#pragma GCC unroll 3
            for (int l = 0; l < L; l++)
                y[r][l] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(_mm512_add_epi32(c[r][l], d[r][l])), y[r][l]);
        }
    }
    __m512 sx = _mm512_set1_ps(k->sx[0]);
    for (int r = 0; r < R; r++) store_rows16(out, (rb + r) * INF_ROWS, w->N, _mm512_mul_ps(finish16(L, y[r]), sx));
}

/* Group sums of int8 limbs: bytes + 128 (a sign flip) summed by vpsadbw, then
 * 128 per byte taken off again; exact integers. */
T_512 void inf_group_sums_avx512(const int8_t *a, int K, int G, int32_t *out) {
    const __m256i flip = _mm256_set1_epi8((char)0x80), zero = _mm256_setzero_si256();
    for (int g = 0; g < K / G; g++) {
        __m256i acc = zero;
        for (int i = g * G; i < (g + 1) * G; i += 32) {
            __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)(a + i)), flip);
            acc = _mm256_add_epi64(acc, _mm256_sad_epu8(v, zero));
        }
        __m128i s = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s = _mm_add_epi64(s, _mm_unpackhi_epi64(s, s));
        out[g] = (int32_t)(_mm_cvtsi128_si64(s) - 128 * (int64_t)G);
    }
}

/* nearbyint(v) clamped to [-hi, hi] (NaN -> -hi), as compress/grid.h's
 * cp_code with zero point 0: vrndscaleps rounds half to even like nearbyint
 * (the grid's clamp to +-2^22 before rounding changes nothing here). */
INLINE T_512 __m512 round_clamp(__m512 v, __m512 hi) {
    __m512 r = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 lo = _mm512_sub_ps(_mm512_setzero_ps(), hi);
    __mmask16 ok = _mm512_cmp_ps_mask(r, lo, _CMP_GE_OQ); /* false for NaN */
    r = _mm512_mask_blend_ps(ok, lo, r);
    return _mm512_min_ps(r, hi);
}

T_512 void inf_act_static_avx512(const float *x, int K, float inv, int hi, int8_t *a, uint8_t *au) {
    int K16 = K & ~15;
    __m512 vi = _mm512_set1_ps(inv), vh = _mm512_set1_ps((float)hi);
    const __m128i flip = _mm_set1_epi8((char)0x80);
    for (int i = 0; i < K16; i += 16) {
        __m512 q = round_clamp(_mm512_mul_ps(_mm512_loadu_ps(x + i), vi), vh);
        __m128i b = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(q));
        _mm_storeu_si128((__m128i *)(void *)(a + i), b);
        if (au) _mm_storeu_si128((__m128i *)(void *)(au + i), _mm_xor_si128(b, flip)); /* + 128 */
    }
    if (K16 < K) inf_act_static_scalar(x + K16, K - K16, inv, hi, a + K16, au ? au + K16 : NULL);
}

T_512 void inf_act_token_avx512(const float *x, int K, int L, float *sx_out, int8_t *a, uint8_t *au) {
    int K16 = K & ~15;
    __m512 m = _mm512_setzero_ps();
    for (int i = 0; i < K16; i += 16) m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), m);
    float amax = _mm512_reduce_max_ps(m);
    for (int i = K16; i < K; i++) {
        float v = fabsf(x[i]);
        if (v > amax) amax = v;
    }
    if (!(amax / 127.0f > 0.0f) || K16 != K) { /* all zero (or a tail): the scalar reference */
        inf_act_token_scalar(x, K, L, sx_out, a);
        if (au)
            for (size_t i = 0; i < (size_t)L * K; i++) au[i] = (uint8_t)(a[i] + 128);
        return;
    }
    float sx = amax / 127.0f;
    *sx_out = sx;
    __m512 vs = _mm512_set1_ps(cp_act_inv(sx)), k254 = _mm512_set1_ps(254.0f), h127 = _mm512_set1_ps(127.0f);
    const __m128i flip = _mm_set1_epi8((char)0x80);
    for (int i = 0; i < K; i += 16) {
        __m512 u = _mm512_mul_ps(_mm512_loadu_ps(x + i), vs);
        __m512 q = round_clamp(u, h127);
        __m128i b = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(q));
        _mm_storeu_si128((__m128i *)(void *)(a + i), b);
        if (au) _mm_storeu_si128((__m128i *)(void *)(au + i), _mm_xor_si128(b, flip)); /* + 128 */
        __m512 r = _mm512_sub_ps(u, q);
        for (int l = 1; l < L; l++) {
            __m512 v = _mm512_mul_ps(r, k254);
            __m512 ql = round_clamp(v, h127);
            b = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(ql));
            _mm_storeu_si128((__m128i *)(void *)(a + (size_t)l * K + i), b);
            if (au) _mm_storeu_si128((__m128i *)(void *)(au + (size_t)l * K + i), _mm_xor_si128(b, flip));
            r = _mm512_sub_ps(v, ql);
        }
    }
}

/* In-lane shuffle: in each 128-bit lane (rows 4L..4L+3, 4 bytes each) put the
 * bytes column-major (byte j*4 + r = row r, column j); then a dword permute
 * gathers column j of all 16 rows into lane j. */
INLINE T_512 __m512i transpose16x4(__m512i v) {
    const __m512i sh = _mm512_set4_epi32(0x0f0b0703, 0x0e0a0602, 0x0d090501, 0x0c080400);
    const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_epi32(perm, _mm512_shuffle_epi8(v, sh));
}

T_512 void inf_deq_q8_avx512(const inf_weight *w, float *out, int ldo, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG;
    for (int rb = rb0; rb < rb1; rb++) {
        const uint8_t *blk = w->codes + (size_t)rb * (K / 4) * 64;
        for (int kc = 0; kc < K / 4; kc++) {
            __m512 s = _mm512_loadu_ps(w->scales + ((size_t)rb * NG + (4 * kc) / G) * INF_ROWS);
            __m512i t = transpose16x4(_mm512_loadu_si512((const void *)(blk + (size_t)kc * 64)));
            __m128i c[4] = {_mm512_extracti32x4_epi32(t, 0), _mm512_extracti32x4_epi32(t, 1),
                            _mm512_extracti32x4_epi32(t, 2), _mm512_extracti32x4_epi32(t, 3)};
            for (int j = 0; j < 4; j++)
                _mm512_storeu_ps(out + (size_t)(4 * kc + j) * ldo + rb * INF_ROWS,
                                 _mm512_mul_ps(s, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c[j]))));
        }
    }
}

T_512 void inf_deq_q4_avx512(const inf_weight *w, float *out, int ldo, int rb0, int rb1) {
    int K = w->K, G = w->G, NG = w->NG;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int rb = rb0; rb < rb1; rb++) {
        const uint8_t *blk = w->codes + (size_t)rb * (K / 8) * 64;
        for (int kc = 0; kc < K / 8; kc++) {
            size_t gi = ((size_t)rb * NG + (8 * kc) / G) * INF_ROWS;
            __m512 s = _mm512_loadu_ps(w->scales + gi);
            __m512i z = _mm512_loadu_si512((const void *)(w->corr + gi));
            __m512i t = transpose16x4(_mm512_loadu_si512((const void *)(blk + (size_t)kc * 64)));
            __m512i lo = _mm512_and_si512(t, m4), hi = _mm512_and_si512(_mm512_srli_epi16(t, 4), m4);
            for (int j = 0; j < 4; j++) {
                __m128i cl = _mm512_extracti32x4_epi32(lo, 0), ch = _mm512_extracti32x4_epi32(hi, 0);
                if (j == 1) cl = _mm512_extracti32x4_epi32(lo, 1), ch = _mm512_extracti32x4_epi32(hi, 1);
                if (j == 2) cl = _mm512_extracti32x4_epi32(lo, 2), ch = _mm512_extracti32x4_epi32(hi, 2);
                if (j == 3) cl = _mm512_extracti32x4_epi32(lo, 3), ch = _mm512_extracti32x4_epi32(hi, 3);
                __m512i vl = _mm512_sub_epi32(_mm512_cvtepu8_epi32(cl), z);
                __m512i vh = _mm512_sub_epi32(_mm512_cvtepu8_epi32(ch), z);
                _mm512_storeu_ps(out + (size_t)(8 * kc + j) * ldo + rb * INF_ROWS, _mm512_mul_ps(s, _mm512_cvtepi32_ps(vl)));
                _mm512_storeu_ps(out + (size_t)(8 * kc + 4 + j) * ldo + rb * INF_ROWS,
                                 _mm512_mul_ps(s, _mm512_cvtepi32_ps(vh)));
            }
        }
    }
}

#define TILE_SWITCH(fn)                                                                                       \
    for (int rb = rb0; rb < rb1; rb++)                                                                        \
        for (int t0 = 0; t0 < T; t0 += 4) {                                                                   \
            int nt = T - t0 < 4 ? T - t0 : 4;                                                                 \
            switch (nt * 4 + k->L) {                                                                      \
            case 5: fn(k, w, out, rb, t0, 1, 1); break;                                                       \
            case 6: fn(k, w, out, rb, t0, 1, 2); break;                                                       \
            case 7: fn(k, w, out, rb, t0, 1, 3); break;                                                       \
            case 9: fn(k, w, out, rb, t0, 2, 1); break;                                                       \
            case 10: fn(k, w, out, rb, t0, 2, 2); break;                                                      \
            case 11: fn(k, w, out, rb, t0, 2, 3); break;                                                      \
            case 13: fn(k, w, out, rb, t0, 3, 1); break;                                                      \
            case 14: fn(k, w, out, rb, t0, 3, 2); break;                                                      \
            case 15: fn(k, w, out, rb, t0, 3, 3); break;                                                      \
            case 17: fn(k, w, out, rb, t0, 4, 1); break;                                                      \
            case 18: fn(k, w, out, rb, t0, 4, 2); break;                                                      \
            default: fn(k, w, out, rb, t0, 4, 3); break;                                                      \
            }                                                                                                 \
        }

/* q8s with AVX-512 VBMI: a chunk's (up to 256) columns of a limb's +128
 * form sit in four registers, and one quad's 64 column bytes (16 rows x 4
 * entries, row i's entries in lane i) select their activations with two
 * vpermi2b (columns 0-127 and 128-255) and a blend on bit 7; vpdpbusd then
 * adds each row's four products q x (a + 128) into its lane; the +128 is
 * taken off with corr (128 x the group's code sum) as q8's kernel does. The
 * integers are the scalar reference's, the epilogue q8's. */
#define T_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma")))

INLINE T_VBMI void q8s_vbmi_rows(const inf_kctx *k, const inf_weight *w, float *out, int rb, int t, const int L) {
    int K = w->K, G = w->G, NG = w->NG, NC = w->NC, N = w->N;
    const inf_blk_q8s *qd = (const inf_blk_q8s *)(const void *)w->slots;
    const uint8_t *au[3];
    for (int l = 0; l < L; l++) au[l] = inf_limb_u(k, K, t, l);
    __m512 y[3];
    for (int l = 0; l < 3; l++) y[l] = _mm512_setzero_ps();
    for (int g = 0; g < NG; g++) {
        __m512i acc[3];
#pragma GCC unroll 3
        for (int l = 0; l < L; l++) acc[l] = _mm512_setzero_si512();
        for (int c = 0; c < NC; c++) {
            size_t u = ((size_t)rb * NG + g) * NC + c, c0 = (size_t)g * G + (size_t)c * INF_Q8S_CHUNK;
            size_t width = (size_t)G - (size_t)c * INF_Q8S_CHUNK;
            width = width < INF_Q8S_CHUNK ? width : INF_Q8S_CHUNK;
            __m512i tb[3][4];
#pragma GCC unroll 3
            for (int l = 0; l < L; l++)
#pragma GCC unroll 4
                for (int p = 0; p < 4; p++) { /* only the chunk's own bytes are read */
                    size_t have = width > (size_t)p * 64 ? width - (size_t)p * 64 : 0;
                    __mmask64 m = have >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << have) - 1);
                    tb[l][p] = _mm512_maskz_loadu_epi8(m, au[l] + c0 + (size_t)p * 64);
                }
            uint64_t j0 = w->soff[u], j1 = w->soff[u + 1];
            if (width <= 128) {
                for (uint64_t j = j0; j < j1; j++) {
                    __m512i idx = _mm512_loadu_si512((const void *)qd[j].idx);
                    __m512i q = _mm512_loadu_si512((const void *)qd[j].q);
#pragma GCC unroll 3
                    for (int l = 0; l < L; l++)
                        acc[l] = _mm512_dpbusd_epi32(acc[l], _mm512_permutex2var_epi8(tb[l][0], idx, tb[l][1]), q);
                }
            } else {
                for (uint64_t j = j0; j < j1; j++) {
                    __m512i idx = _mm512_loadu_si512((const void *)qd[j].idx);
                    __m512i q = _mm512_loadu_si512((const void *)qd[j].q);
                    __mmask64 upper = _mm512_movepi8_mask(idx);
#pragma GCC unroll 3
                    for (int l = 0; l < L; l++) {
                        __m512i lo = _mm512_permutex2var_epi8(tb[l][0], idx, tb[l][1]);
                        __m512i hi = _mm512_permutex2var_epi8(tb[l][2], idx, tb[l][3]);
                        acc[l] = _mm512_dpbusd_epi32(acc[l], _mm512_mask_blend_epi8(upper, lo, hi), q);
                    }
                }
            }
        }
        __m512i corr = _mm512_loadu_si512((const void *)(w->corr + ((size_t)rb * NG + g) * INF_ROWS));
        __m512 s = _mm512_loadu_ps(w->scales + ((size_t)rb * NG + g) * INF_ROWS);
#pragma GCC unroll 3
        for (int l = 0; l < L; l++) y[l] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[l], corr)), y[l]);
    }
    store_rows16(out + (size_t)t * N, rb * INF_ROWS, N, _mm512_mul_ps(finish16(L, y), _mm512_set1_ps(k->sx[t])));
}

T_VBMI static void q8s_vbmi(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    for (int rb = rb0; rb < rb1; rb++)
        for (int t = 0; t < T; t++) {
            if (k->L == 1) q8s_vbmi_rows(k, w, out, rb, t, 1);
            else if (k->L == 2) q8s_vbmi_rows(k, w, out, rb, t, 2);
            else q8s_vbmi_rows(k, w, out, rb, t, 3);
        }
}

/* Without VBMI (AVX-512 VNNI CPUs before Ice Lake) the AVX2 kernel. */
T_512 void inf_q8s_avx512(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    static int vbmi = -1;
    if (vbmi < 0) vbmi = __builtin_cpu_supports("avx512vbmi") ? 1 : 0;
    if (vbmi) q8s_vbmi(k, w, T, out, rb0, rb1);
    else inf_q8s_avx2(k, w, T, out, rb0, rb1);
}

/* q8nm with AVX-512 VNNI: all 16 rows of a block at once: the columns from
 * the positions (shifts and vpternlogd), the +128 activations of the
 * block's 8 columns broadcast and picked with vpshufb, vpdpbusd adding
 * each row's 4 products; corr (128 x the codes' sum) as q8's. Two
 * accumulators per limb over alternate blocks hide vpdpbusd's latency
 * (integers: the split changes nothing). */
/* The positions byte of each row to the low 2 bits of its 4 entries' bytes
 * (byte e of row i's lane: pos[i] >> 2e): with shifts, or with VBMI's
 * vpmultishiftqb (qword m holds rows 2m, 2m + 1; byte 4r + e takes the 8
 * bits from bit 8r + 2e). */
INLINE T_512 __m512i nm_bits_512(const uint8_t *pos) {
    __m512i p = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)pos));
    __m512i tt = _mm512_ternarylogic_epi32(p, _mm512_slli_epi32(p, 6), _mm512_slli_epi32(p, 12), 0xFE);
    return _mm512_or_si512(tt, _mm512_slli_epi32(p, 18));
}
INLINE T_VBMI __m512i nm_bits_vbmi(const uint8_t *pos) {
    __m512i p = _mm512_cvtepu16_epi64(_mm_loadu_si128((const __m128i *)(const void *)pos));
    return _mm512_multishift_epi64_epi8(_mm512_set1_epi64(0x0E0C0A0806040200ll), p);
}

#define Q8NM_ROWS512(NAME, ATTR, IDX) \
INLINE ATTR void NAME(const inf_kctx *k, const inf_weight *w, float *out, int rb, int t, const int L) { \
    int K = w->K, G = w->G, NG = w->NG, N = w->N; \
    const inf_blk_q8nm *blk = (const inf_blk_q8nm *)(const void *)w->codes + (size_t)rb * (K / 8); \
    const uint8_t *au[3]; \
    for (int l = 0; l < L; l++) au[l] = inf_limb_u(k, K, t, l); \
    const __m512i m3 = _mm512_set1_epi32(0x03030303), hi4 = _mm512_set1_epi32(0x04040000); \
    __m512 y[3]; \
    for (int l = 0; l < 3; l++) y[l] = _mm512_setzero_ps(); \
    for (int g = 0; g < NG; g++) { \
        __m512i acc[3][2]; \
_Pragma("GCC unroll 3") \
        for (int l = 0; l < L; l++) acc[l][0] = acc[l][1] = _mm512_setzero_si512(); \
        for (int kb = g * G / 8; kb < (g + 1) * G / 8; kb += 2) { /* G is a multiple of 32: an even count */ \
_Pragma("GCC unroll 2") \
            for (int h = 0; h < 2; h++) { \
                const inf_blk_q8nm *b = &blk[kb + h]; \
                __m512i q = _mm512_loadu_si512((const void *)b->q); \
                __m512i tt = IDX(b->pos); \
                __m512i idx = _mm512_ternarylogic_epi32(tt, m3, hi4, 0xEA); /* (tt & m3) | hi4 */ \
_Pragma("GCC unroll 3") \
                for (int l = 0; l < L; l++) { \
                    long long v; \
                    memcpy(&v, au[l] + 8 * (kb + h), 8); \
                    __m512i sel = _mm512_shuffle_epi8(_mm512_set1_epi64(v), idx); \
                    acc[l][h] = _mm512_dpbusd_epi32(acc[l][h], sel, q); \
                } \
            } \
        } \
        __m512i corr = _mm512_loadu_si512((const void *)(w->corr + ((size_t)rb * NG + g) * INF_ROWS)); \
        __m512 s = _mm512_loadu_ps(w->scales + ((size_t)rb * NG + g) * INF_ROWS); \
_Pragma("GCC unroll 3") \
        for (int l = 0; l < L; l++) { \
            __m512i I = _mm512_sub_epi32(_mm512_add_epi32(acc[l][0], acc[l][1]), corr); \
            y[l] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(I), y[l]); \
        } \
    } \
    store_rows16(out + (size_t)t * N, rb * INF_ROWS, N, _mm512_mul_ps(finish16(L, y), _mm512_set1_ps(k->sx[t]))); \
}
Q8NM_ROWS512(q8nm_rows512, T_512, nm_bits_512)
Q8NM_ROWS512(q8nm_rows_vbmi, T_VBMI, nm_bits_vbmi)

T_VBMI static void q8nm_vbmi(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    for (int rb = rb0; rb < rb1; rb++)
        for (int t = 0; t < T; t++) {
            if (k->L == 1) q8nm_rows_vbmi(k, w, out, rb, t, 1);
            else if (k->L == 2) q8nm_rows_vbmi(k, w, out, rb, t, 2);
            else q8nm_rows_vbmi(k, w, out, rb, t, 3);
        }
}

/* The positions' columns with vpmultishiftqb where the CPU has VBMI, else with shifts. */
T_512 void inf_q8nm_avx512(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    static int vbmi = -1;
    if (vbmi < 0) vbmi = __builtin_cpu_supports("avx512vbmi") ? 1 : 0;
    if (vbmi) q8nm_vbmi(k, w, T, out, rb0, rb1);
    else inf_q8nm_avx512_shifts(k, w, T, out, rb0, rb1);
}

T_512 void inf_q8nm_avx512_shifts(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    for (int rb = rb0; rb < rb1; rb++)
        for (int t = 0; t < T; t++) {
            if (k->L == 1) q8nm_rows512(k, w, out, rb, t, 1);
            else if (k->L == 2) q8nm_rows512(k, w, out, rb, t, 2);
            else q8nm_rows512(k, w, out, rb, t, 3);
        }
}

T_512 void inf_q8_avx512(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    TILE_SWITCH(q8_tile512)
}

T_512 void inf_q4_avx512(const inf_kctx *k, const inf_weight *w, int T, float *out, int rb0, int rb1) {
    if (T == 1) { /* decode */
        int rb = rb0;
        for (; rb + 2 <= rb1; rb += 2) {
            if (k->L == 3) q4_dec512(k, w, out, rb, 2, 3);
            else if (k->L == 2) q4_dec512(k, w, out, rb, 2, 2);
            else q4_dec512(k, w, out, rb, 2, 1);
        }
        if (rb < rb1) {
            if (k->L == 3) q4_dec512(k, w, out, rb, 1, 3);
            else if (k->L == 2) q4_dec512(k, w, out, rb, 1, 2);
            else q4_dec512(k, w, out, rb, 1, 1);
        }
        return;
    }
    TILE_SWITCH(q4_tile512)
}

#endif
