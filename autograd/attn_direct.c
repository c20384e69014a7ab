/* attn_direct.c - direct products for attention heads of width D = 16, 32,
 * 48 or 64 (attention_kernels.h has the contracts).
 *
 * Why: at tiny's shapes (T = 128, D = 32) the per-head products P v, dS k,
 * dS^T q and P^T dout are 64 x 32 x 64 .. 128 x 32 x 64. Through cblas each
 * is a call with argument checks, and the transposed ones (dS^T q, P^T dout)
 * go through OpenBLAS's general path, which packs both operands; the causal
 * diagonal block needs a masked copy (lower_block) before the call. Here each
 * product is one loop over rows of C held in AVX-512 registers (R rows of D
 * floats: D / 16 registers per row), reading A and B in place, and the causal
 * mask is a per-row bound on the sum, so nothing is copied or packed.
 *
 * Order: every element of C is one sum, in increasing k (or r), of fused
 * multiply-adds starting from 0, then added to C (or stored). The scalar
 * references below do exactly that with fmaf, which is correctly rounded like
 * the vector FMA, so fast and reference give the same bits (tested). The
 * result does not depend on the thread count (one head, one thread) or on
 * how rows are grouped into registers.
 *
 * Dispatch: the kernels carry their own target attribute (no -march); they
 * run only when __builtin_cpu_supports("avx512f"). Elsewhere the attention
 * ops keep their ag_sgemm path (ag_attn_direct reports which). */
#include <stdbool.h>
#include <stddef.h>
#include <math.h>

#include "attention_kernels.h"

static bool g_direct_off; /* tests: force the ag_sgemm path */

void ag_attn_direct_set(bool enabled) { g_direct_off = !enabled; }

static bool cpu_has_avx512f(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    return __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

bool ag_attn_direct(int D) {
    return !g_direct_off && D >= 16 && D <= 64 && D % 16 == 0 && cpu_has_avx512f();
}

/* ------------------------------------------------------------ references */

static inline int lim_nn(int K, int diag, int r) {
    if (diag < 0) return K;
    return r + diag + 1 < K ? r + diag + 1 : K;
}

static inline int start_tn(int m, int diag, int j) {
    if (diag < 0) return 0;
    int s = j - diag > 0 ? j - diag : 0;
    return s < m ? s : m;
}

void ag_attn_nn_ref(int D, int m, int K, int diag, const float *A, int lda, const float *B, int ldb,
                    bool acc, float *C, int ldc) {
    for (int r = 0; r < m; r++) {
        int lim = lim_nn(K, diag, r);
        for (int d = 0; d < D; d++) {
            float s = 0.0f;
            for (int k = 0; k < lim; k++) s = fmaf(A[(size_t)r * lda + k], B[(size_t)k * ldb + d], s);
            float *c = C + (size_t)r * ldc + d;
            *c = acc ? *c + s : s;
        }
    }
}

void ag_attn_tn_ref(int D, int n, int m, int diag, const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc) {
    for (int j = 0; j < n; j++) {
        int s0 = start_tn(m, diag, j);
        for (int d = 0; d < D; d++) {
            float s = 0.0f;
            for (int r = s0; r < m; r++) s = fmaf(A[(size_t)r * lda + j], B[(size_t)r * ldb + d], s);
            C[(size_t)j * ldc + d] += s;
        }
    }
}

void ag_attn_nt_ref(int D, int m, int n, int diag, float alpha, const float *A, int lda, const float *B,
                    int ldb, bool acc, float *C, int ldc) {
    for (int r = 0; r < m; r++) {
        int lim = lim_nn(n, diag, r);
        for (int j = 0; j < lim; j++) {
            float s = 0.0f;
            for (int d = 0; d < D; d++) s = fmaf(A[(size_t)r * lda + d], B[(size_t)j * ldb + d], s);
            float v = alpha * s, *c = C + (size_t)r * ldc + j;
            *c = acc ? *c + v : v;
        }
    }
}

/* --------------------------------------------------------------- AVX-512 */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

#define T512 __attribute__((target("avx512f")))
#define INL static inline __attribute__((always_inline))

/* Rows r0 .. r0+R-1 of C = A B (nn) with NV registers per row. lim[] is
 * nondecreasing: the rows share k < lim[0], then each row finishes alone. */
INL T512 void nn_rows(const int R, const int NV, int r0, const int *lim, const float *A, int lda,
                      const float *B, int ldb, bool acc, float *C, int ldc) {
    __m512 c[8][4];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) c[i][v] = _mm512_setzero_ps();
    const float *a = A + (size_t)r0 * lda;
    for (int k = 0; k < lim[0]; k++) {
        __m512 b[4];
        const float *bk = B + (size_t)k * ldb;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) b[v] = _mm512_loadu_ps(bk + 16 * v);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            __m512 x = _mm512_set1_ps(a[(size_t)i * lda + k]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) c[i][v] = _mm512_fmadd_ps(x, b[v], c[i][v]);
        }
    }
#pragma GCC unroll 8
    for (int i = 1; i < R; i++)
        for (int k = lim[0]; k < lim[i]; k++) {
            __m512 x = _mm512_set1_ps(a[(size_t)i * lda + k]);
            const float *bk = B + (size_t)k * ldb;
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) c[i][v] = _mm512_fmadd_ps(x, _mm512_loadu_ps(bk + 16 * v), c[i][v]);
        }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        float *cr = C + (size_t)(r0 + i) * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            __m512 y = acc ? _mm512_add_ps(_mm512_loadu_ps(cr + 16 * v), c[i][v]) : c[i][v];
            _mm512_storeu_ps(cr + 16 * v, y);
        }
    }
}

/* Rows j0 .. j0+R-1 of C += A^T B (tn). s[] is nondecreasing: each row first
 * takes its own r in [s[i], s[R-1]), then all rows share r >= s[R-1]. */
INL T512 void tn_rows(const int R, const int NV, int j0, const int *s, int m, const float *A, int lda,
                      const float *B, int ldb, float *C, int ldc) {
    __m512 c[8][4];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) c[i][v] = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i + 1 < R; i++)
        for (int r = s[i]; r < s[R - 1]; r++) {
            __m512 x = _mm512_set1_ps(A[(size_t)r * lda + j0 + i]);
            const float *br = B + (size_t)r * ldb;
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) c[i][v] = _mm512_fmadd_ps(x, _mm512_loadu_ps(br + 16 * v), c[i][v]);
        }
    for (int r = s[R - 1]; r < m; r++) {
        __m512 b[4];
        const float *br = B + (size_t)r * ldb, *ar = A + (size_t)r * lda + j0;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) b[v] = _mm512_loadu_ps(br + 16 * v);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            __m512 x = _mm512_set1_ps(ar[i]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) c[i][v] = _mm512_fmadd_ps(x, b[v], c[i][v]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        float *cr = C + (size_t)(j0 + i) * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_storeu_ps(cr + 16 * v, _mm512_add_ps(_mm512_loadu_ps(cr + 16 * v), c[i][v]));
    }
}

/* nt: B is transposed a panel of NT_PANEL columns at a time into BT[D][NT_PANEL]
 * (zero-padded to whole registers), so a row of C is NC registers wide. */
#define NT_PANEL 128

/* Rows r0 .. r0+R-1, columns jc .. jc+16*NC-1 of C = alpha A B^T (+ C), bt
 * pointing at column jc of the panel; stores only columns j < lim[i]. */
INL T512 void nt_rows(const int R, const int NC, int D, int r0, int jc, const int *lim, float alpha,
                      const float *A, int lda, const float *bt, bool acc, float *C, int ldc) {
    __m512 c[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NC; v++) c[i][v] = _mm512_setzero_ps();
    const float *a = A + (size_t)r0 * lda;
    for (int d = 0; d < D; d++) {
        __m512 b[4];
#pragma GCC unroll 4
        for (int v = 0; v < NC; v++) b[v] = _mm512_loadu_ps(bt + (size_t)d * NT_PANEL + 16 * v);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m512 x = _mm512_set1_ps(a[(size_t)i * lda + d]);
#pragma GCC unroll 4
            for (int v = 0; v < NC; v++) c[i][v] = _mm512_fmadd_ps(x, b[v], c[i][v]);
        }
    }
    __m512 al = _mm512_set1_ps(alpha);
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        float *cr = C + (size_t)(r0 + i) * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NC; v++) {
            int col = jc + 16 * v, cnt = lim[i] - col;
            if (cnt <= 0) continue;
            __mmask16 k = cnt >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cnt) - 1u);
            __m512 y = _mm512_mul_ps(al, c[i][v]);
            if (acc) y = _mm512_add_ps(_mm512_maskz_loadu_ps(k, cr + col), y);
            _mm512_mask_storeu_ps(cr + col, k, y);
        }
    }
}

static T512 void nt_512(int D, int m, int n, int diag, float alpha, const float *A, int lda, const float *B,
                        int ldb, bool acc, float *C, int ldc) {
    float bt[64 * NT_PANEL]; /* [D][NT_PANEL] */
    int nmax = lim_nn(n, diag, m - 1); /* columns any row needs */
    for (int p0 = 0; p0 < nmax; p0 += NT_PANEL) {
        int w = nmax - p0 < NT_PANEL ? nmax - p0 : NT_PANEL, w16 = (w + 15) & ~15;
        /* bt[d][jj] = B[p0 + jj][d]: 16 rows of B at a time, one gather per
         * d (rows past w read as 0) */
        __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(ldb));
        for (int jj = 0; jj < w16; jj += 16) {
            int rows = w - jj < 16 ? w - jj : 16;
            __mmask16 k = rows == 16 ? (__mmask16)0xffff : (__mmask16)((1u << rows) - 1u);
            const float *b0 = B + (size_t)(p0 + jj) * ldb;
            for (int d = 0; d < D; d++)
                _mm512_storeu_ps(bt + (size_t)d * NT_PANEL + jj,
                                 _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, idx, b0 + d, 4));
        }
        int r = 0, lim[4];
        /* first row that needs a column of this panel */
        if (diag >= 0 && p0 - diag > 0) r = p0 - diag;
        for (; r < m; r += 4) {
            int R = m - r < 4 ? m - r : 4;
            for (int i = 0; i < R; i++) lim[i] = lim_nn(n, diag, r + i);
            int end = lim[R - 1] - p0; /* columns of the panel the group needs */
            if (end > w) end = w;
            int jj = 0;
            if (R == 4) {
                for (; jj + 64 <= end; jj += 64)
                    nt_rows(4, 4, D, r, p0 + jj, lim, alpha, A, lda, bt + jj, acc, C, ldc);
                for (; jj < end; jj += 16)
                    nt_rows(4, 1, D, r, p0 + jj, lim, alpha, A, lda, bt + jj, acc, C, ldc);
            } else {
                for (int i = 0; i < R; i++)
                    for (int j1 = 0; j1 < end; j1 += 16)
                        nt_rows(1, 1, D, r + i, p0 + j1, lim + i, alpha, A, lda, bt + j1, acc, C, ldc);
            }
        }
    }
}

/* Row groups: 8 rows while 8 * NV accumulators fit (NV <= 2), else 4; the
 * rest one row at a time. */
INL T512 void nn_all(const int NV, int m, int K, int diag, const float *A, int lda, const float *B, int ldb,
                     bool acc, float *C, int ldc) {
    const int R = NV <= 2 ? 8 : 4;
    int r = 0, lim[8];
    for (; r + R <= m; r += R) {
        for (int i = 0; i < R; i++) lim[i] = lim_nn(K, diag, r + i);
        nn_rows(R, NV, r, lim, A, lda, B, ldb, acc, C, ldc);
    }
    for (; r < m; r++) {
        lim[0] = lim_nn(K, diag, r);
        nn_rows(1, NV, r, lim, A, lda, B, ldb, acc, C, ldc);
    }
}

INL T512 void tn_all(const int NV, int n, int m, int diag, const float *A, int lda, const float *B, int ldb,
                     float *C, int ldc) {
    const int R = NV <= 2 ? 8 : 4;
    int j = 0, s[8];
    for (; j + R <= n; j += R) {
        for (int i = 0; i < R; i++) s[i] = start_tn(m, diag, j + i);
        tn_rows(R, NV, j, s, m, A, lda, B, ldb, C, ldc);
    }
    for (; j < n; j++) {
        s[0] = start_tn(m, diag, j);
        tn_rows(1, NV, j, s, m, A, lda, B, ldb, C, ldc);
    }
}

static T512 void nn_512(int D, int m, int K, int diag, const float *A, int lda, const float *B, int ldb,
                        bool acc, float *C, int ldc) {
    switch (D / 16) {
    case 1: nn_all(1, m, K, diag, A, lda, B, ldb, acc, C, ldc); break;
    case 2: nn_all(2, m, K, diag, A, lda, B, ldb, acc, C, ldc); break;
    case 3: nn_all(3, m, K, diag, A, lda, B, ldb, acc, C, ldc); break;
    default: nn_all(4, m, K, diag, A, lda, B, ldb, acc, C, ldc); break;
    }
}

static T512 void tn_512(int D, int n, int m, int diag, const float *A, int lda, const float *B, int ldb,
                        float *C, int ldc) {
    switch (D / 16) {
    case 1: tn_all(1, n, m, diag, A, lda, B, ldb, C, ldc); break;
    case 2: tn_all(2, n, m, diag, A, lda, B, ldb, C, ldc); break;
    case 3: tn_all(3, n, m, diag, A, lda, B, ldb, C, ldc); break;
    default: tn_all(4, n, m, diag, A, lda, B, ldb, C, ldc); break;
    }
}
#endif

/* ------------------------------------------------------------- dispatch */

void ag_attn_nn(int D, int m, int K, int diag, const float *A, int lda, const float *B, int ldb, bool acc,
                float *C, int ldc) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (D >= 16 && D <= 64 && D % 16 == 0 && cpu_has_avx512f()) {
        nn_512(D, m, K, diag, A, lda, B, ldb, acc, C, ldc);
        return;
    }
#endif
    ag_attn_nn_ref(D, m, K, diag, A, lda, B, ldb, acc, C, ldc);
}

void ag_attn_nt(int D, int m, int n, int diag, float alpha, const float *A, int lda, const float *B, int ldb,
                bool acc, float *C, int ldc) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (D >= 16 && D <= 64 && D % 16 == 0 && cpu_has_avx512f()) {
        if (m > 0 && n > 0) nt_512(D, m, n, diag, alpha, A, lda, B, ldb, acc, C, ldc);
        return;
    }
#endif
    ag_attn_nt_ref(D, m, n, diag, alpha, A, lda, B, ldb, acc, C, ldc);
}

void ag_attn_tn(int D, int n, int m, int diag, const float *A, int lda, const float *B, int ldb, float *C,
                int ldc) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (D >= 16 && D <= 64 && D % 16 == 0 && cpu_has_avx512f()) {
        tn_512(D, n, m, diag, A, lda, B, ldb, C, ldc);
        return;
    }
#endif
    ag_attn_tn_ref(D, n, m, diag, A, lda, B, ldb, C, ldc);
}
