/* "int8" mode: int8 weights, activations (x, h) quantized dynamically per row
 * and step, int32 accumulation, float32 gates. Included by lstm_cell.h after the
 * float32 kernels (it reuses their gate code).
 *
 * Panels: Wq (NG, K4, 64, 4) int8 -- per gate group, for each quad of k, the 64
 * columns x 4 consecutive k's, the layout vpdpbusd consumes (K padded to a
 * multiple of 4 with zero weights). colsum (NG*64) int32 = 128 * sum_k Wq (the
 * zero-point correction, premultiplied at pack time). scale
 * (NG*64) float = per-output-row weight scale.
 *
 * Activations: u8 with zero point 128, per row: s = max|row| / 127,
 * q = round(v / s) + 128 in [1, 255]. Then
 *     sum_k v_k w_k ~= s * s_w * (sum_k q_k w_k - colsum)
 * The integer part is exact (|sum| < 2^31 for K < 2^16), so every path (VNNI or
 * portable C) gives bit-identical int32 accumulators.
 */
#ifndef LSTM_INFER_INT8_H
#define LSTM_INFER_INT8_H

/* Quantize M rows of K floats (stride ldx) to u8 (stride ldq, zero-padded to K4*4). */
static void li_quant_rows_u8(int M, int K, const float *X, long ldx, uint8_t *Q, long ldq,
                             float *scale)
{
    const int K4 = (K + 3) / 4;
    for (int m = 0; m < M; m++) {
        const float *x = X + m * ldx;
        uint8_t *q = Q + m * ldq;
        float amax = 0.0f;
        for (int k = 0; k < K; k++) {
            float a = x[k] < 0 ? -x[k] : x[k];
            amax = a > amax ? a : amax;
        }
        const float s = amax > 0.0f ? amax / 127.0f : 1.0f, inv = 1.0f / s;
        scale[m] = s;
        for (int k = 0; k < K; k++) {
            float v = x[k] * inv;
            v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
            q[k] = (uint8_t)((int)lrintf(v) + 128);
        }
        for (int k = K; k < K4 * 4; k++) q[k] = 128; /* zero after the zero point */
    }
}

/* int32 accumulators of one row x 64 columns -> floats: s_x * s_w * (acc - colsum). */
static inline void li_dequant64(const int32_t *acc, const int32_t *colsum, const float *sw,
                                float sx, float *out)
{
    /* same operation order as the SIMD path: ((acc - 128 colsum) * s_x) * s_w */
    for (int j = 0; j < 64; j++) out[j] = ((float)(acc[j] - colsum[j]) * sx) * sw[j];
}

/* ------------------------------------------------------------ portable C */
/* Y (M, 64*NG) (+)= dequant(Q (M, K4*4) u8 @ Wq); gated: then the LSTM gates of each
 * group (Y is the step's input projection, as in li_step_*). */
static void li_q8_mm_generic(int M, int NG, int K4, const uint8_t *Q, long ldq, const float *sx,
                             const int8_t *Wq, const int32_t *colsum, const float *sw, float *Y,
                             long ldy, int zero_init, int gated, const float *bias,
                             const float *peep, int Hp, float *C, long ldc, float *Hc, long ldh,
                             const li_acts *a)
{
    static const float zeros[16] = {0};
    for (int g = 0; g < NG; g++) {
        const int8_t *W = Wq + (long)g * K4 * 256;
        for (int m = 0; m < M; m++) {
            int32_t acc[64] = {0};
            const uint8_t *q = Q + m * ldq;
            for (int k4 = 0; k4 < K4; k4++)
                for (int j = 0; j < 64; j++)
                    for (int t = 0; t < 4; t++)
                        acc[j] += (int32_t)q[4 * k4 + t] * (int32_t)W[(long)k4 * 256 + j * 4 + t];
            float z[64];
            li_dequant64(acc, colsum + g * 64, sw + g * 64, sx[m], z);
            float *y = Y + m * ldy + g * 64;
            for (int j = 0; j < 64; j++) y[j] = (zero_init ? 0.0f : y[j]) + z[j];
            if (gated) {
                const float *pi = peep ? peep + g * 16 : zeros;
                const float *pf = peep ? peep + Hp + g * 16 : zeros;
                const float *po = peep ? peep + 2 * Hp + g * 16 : zeros;
                gate_group_generic(y, bias + g * 64, pi, pf, po, C + m * ldc + g * 16,
                                   Hc + m * ldh + g * 16, a);
            }
        }
    }
}

/* ------------------------------------------------------------ AVX-512 VNNI */
#ifdef LI_X86
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")

/* li_quant_rows_u8 with AVX-512: same rounding (to nearest even, as lrintf in the
 * default mode) and clamping, so both paths give the same bytes. */
static void li_quant_rows_u8_avx512(int M, int K, const float *X, long ldx, uint8_t *Q, long ldq,
                                    float *scale)
{
    const int K4 = (K + 3) / 4;
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int m = 0; m < M; m++) {
        const float *x = X + m * ldx;
        uint8_t *q = Q + m * ldq;
        __m512 vmax = _mm512_setzero_ps();
        int k = 0;
        for (; k + 16 <= K; k += 16)
            vmax = _mm512_max_ps(vmax, _mm512_andnot_ps(sign, _mm512_loadu_ps(x + k)));
        float amax = _mm512_reduce_max_ps(vmax);
        for (; k < K; k++) {
            float a = x[k] < 0 ? -x[k] : x[k];
            amax = a > amax ? a : amax;
        }
        const float s = amax > 0.0f ? amax / 127.0f : 1.0f, inv = 1.0f / s;
        scale[m] = s;
        const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f),
                     hi = _mm512_set1_ps(127.0f);
        const __m512i z = _mm512_set1_epi32(128);
        for (k = 0; k + 16 <= K; k += 16) {
            __m512 v = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_mul_ps(_mm512_loadu_ps(x + k), vinv)));
            __m512i iv = _mm512_add_epi32(_mm512_cvtps_epi32(v), z);
            _mm_storeu_si128((__m128i *)(q + k), _mm512_cvtusepi32_epi8(iv));
        }
        for (; k < K; k++) {
            float v = x[k] * inv;
            v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
            q[k] = (uint8_t)((int)lrintf(v) + 128);
        }
        for (k = K; k < K4 * 4; k++) q[k] = 128;
    }
}

/* One row: even and odd k-quads accumulate separately (8 chains hide the
 * vpdpbusd latency; a single row has no other parallelism). */
#define LI_Q8_TILE1()                                                               \
    do {                                                                            \
        __m512i e0 = _mm512_setzero_si512(), e1 = e0, e2 = e0, e3 = e0;             \
        __m512i o0 = e0, o1 = e0, o2 = e0, o3 = e0;                                 \
        const uint8_t *qr = Q + b0 * ldq;                                           \
        int k4 = 0;                                                                 \
        for (; k4 + 2 <= K4; k4 += 2) {                                             \
            const int8_t *w = W + (long)k4 * 256;                                   \
            int32_t qa, qb;                                                         \
            memcpy(&qa, qr + 4 * k4, 4);                                            \
            memcpy(&qb, qr + 4 * k4 + 4, 4);                                        \
            const __m512i xa = _mm512_set1_epi32(qa), xb = _mm512_set1_epi32(qb);   \
            e0 = _mm512_dpbusd_epi32(e0, xa, _mm512_loadu_si512(w));                \
            e1 = _mm512_dpbusd_epi32(e1, xa, _mm512_loadu_si512(w + 64));           \
            e2 = _mm512_dpbusd_epi32(e2, xa, _mm512_loadu_si512(w + 128));          \
            e3 = _mm512_dpbusd_epi32(e3, xa, _mm512_loadu_si512(w + 192));          \
            o0 = _mm512_dpbusd_epi32(o0, xb, _mm512_loadu_si512(w + 256));          \
            o1 = _mm512_dpbusd_epi32(o1, xb, _mm512_loadu_si512(w + 320));          \
            o2 = _mm512_dpbusd_epi32(o2, xb, _mm512_loadu_si512(w + 384));          \
            o3 = _mm512_dpbusd_epi32(o3, xb, _mm512_loadu_si512(w + 448));          \
        }                                                                           \
        if (k4 < K4) {                                                              \
            const int8_t *w = W + (long)k4 * 256;                                   \
            int32_t qa;                                                             \
            memcpy(&qa, qr + 4 * k4, 4);                                            \
            const __m512i xa = _mm512_set1_epi32(qa);                               \
            e0 = _mm512_dpbusd_epi32(e0, xa, _mm512_loadu_si512(w));                \
            e1 = _mm512_dpbusd_epi32(e1, xa, _mm512_loadu_si512(w + 64));           \
            e2 = _mm512_dpbusd_epi32(e2, xa, _mm512_loadu_si512(w + 128));          \
            e3 = _mm512_dpbusd_epi32(e3, xa, _mm512_loadu_si512(w + 192));          \
        }                                                                           \
        __m512i acc1[4] = {_mm512_add_epi32(e0, o0), _mm512_add_epi32(e1, o1),      \
                           _mm512_add_epi32(e2, o2), _mm512_add_epi32(e3, o3)};     \
        LI_Q8_FINISH(1, &acc1);                                                     \
    } while (0)

/* dequantize MB rows of int32 accumulators, add to Y (unless zero_init), gate */
#define LI_Q8_FINISH(MB, ACC)                                                       \
    do {                                                                            \
        for (int r = 0; r < MB; r++) {                                              \
            float *y = Y + (b0 + r) * ldy + g * 64;                                 \
            const __m512 sxv = _mm512_set1_ps(sx[b0 + r]);                          \
            for (int q = 0; q < 4; q++) {                                           \
                __m512i cs = _mm512_loadu_si512(colsum + g * 64 + q * 16);          \
                __m512 v = _mm512_cvtepi32_ps(                                      \
                    _mm512_sub_epi32((ACC)[r][q], cs));                             \
                v = _mm512_mul_ps(_mm512_mul_ps(v, sxv), _mm512_loadu_ps(sw + g * 64 + q * 16)); \
                if (!zero_init) v = _mm512_add_ps(v, _mm512_loadu_ps(y + q * 16));  \
                _mm512_storeu_ps(y + q * 16, v);                                    \
            }                                                                       \
        }                                                                           \
        if (gated)                                                                  \
            gate_rows_avx512(MB, Y + b0 * ldy + g * 64, ldy, bias + g * 64, pi, pf, po, \
                             C + b0 * ldc + g * 16, ldc, Hc + b0 * ldh + g * 16, ldh, a); \
    } while (0)

typedef int32_t li_u32a __attribute__((may_alias, aligned(1)));

/* MB rows x one group: acc[r][q] (16 int32 columns) = sum over k-quads of u8 quads
 * . int8 quads. Named accumulators, and one out-of-line function per MB: GCC 12
 * keeps an __m512i array indexed in the row loop on the stack, and inside the
 * large inlined kernel it inserts register copies around vpdpbusd (measured);
 * alone, each body is 4 loads, MB broadcasts and 4*MB vpdpbusd per k-quad. */
static inline __attribute__((always_inline)) void
li_q8_dot(const int MB, int K4, const uint8_t *Q, long ldq, const int8_t *W, __m512i acc[6][4])
{
    const __m512i z_ = _mm512_setzero_si512();
    __m512i a00 = z_, a01 = z_, a02 = z_, a03 = z_;
    __m512i a10 = z_, a11 = z_, a12 = z_, a13 = z_;
    __m512i a20 = z_, a21 = z_, a22 = z_, a23 = z_;
    __m512i a30 = z_, a31 = z_, a32 = z_, a33 = z_;
    __m512i a40 = z_, a41 = z_, a42 = z_, a43 = z_;
    __m512i a50 = z_, a51 = z_, a52 = z_, a53 = z_;
    for (int k4 = 0; k4 < K4; k4++) {
        const int8_t *w = W + (long)k4 * 256;
        const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
        const __m512i w2 = _mm512_loadu_si512(w + 128), w3 = _mm512_loadu_si512(w + 192);
        if (MB > 0) {
            const __m512i x_ = _mm512_set1_epi32(*(const li_u32a *)(Q + 0 * ldq + 4 * k4));
            a00 = _mm512_dpbusd_epi32(a00, x_, w0);
            a01 = _mm512_dpbusd_epi32(a01, x_, w1);
            a02 = _mm512_dpbusd_epi32(a02, x_, w2);
            a03 = _mm512_dpbusd_epi32(a03, x_, w3);
        }
        if (MB > 1) {
            const __m512i x_ = _mm512_set1_epi32(*(const li_u32a *)(Q + 1 * ldq + 4 * k4));
            a10 = _mm512_dpbusd_epi32(a10, x_, w0);
            a11 = _mm512_dpbusd_epi32(a11, x_, w1);
            a12 = _mm512_dpbusd_epi32(a12, x_, w2);
            a13 = _mm512_dpbusd_epi32(a13, x_, w3);
        }
        if (MB > 2) {
            const __m512i x_ = _mm512_set1_epi32(*(const li_u32a *)(Q + 2 * ldq + 4 * k4));
            a20 = _mm512_dpbusd_epi32(a20, x_, w0);
            a21 = _mm512_dpbusd_epi32(a21, x_, w1);
            a22 = _mm512_dpbusd_epi32(a22, x_, w2);
            a23 = _mm512_dpbusd_epi32(a23, x_, w3);
        }
        if (MB > 3) {
            const __m512i x_ = _mm512_set1_epi32(*(const li_u32a *)(Q + 3 * ldq + 4 * k4));
            a30 = _mm512_dpbusd_epi32(a30, x_, w0);
            a31 = _mm512_dpbusd_epi32(a31, x_, w1);
            a32 = _mm512_dpbusd_epi32(a32, x_, w2);
            a33 = _mm512_dpbusd_epi32(a33, x_, w3);
        }
        if (MB > 4) {
            const __m512i x_ = _mm512_set1_epi32(*(const li_u32a *)(Q + 4 * ldq + 4 * k4));
            a40 = _mm512_dpbusd_epi32(a40, x_, w0);
            a41 = _mm512_dpbusd_epi32(a41, x_, w1);
            a42 = _mm512_dpbusd_epi32(a42, x_, w2);
            a43 = _mm512_dpbusd_epi32(a43, x_, w3);
        }
        if (MB > 5) {
            const __m512i x_ = _mm512_set1_epi32(*(const li_u32a *)(Q + 5 * ldq + 4 * k4));
            a50 = _mm512_dpbusd_epi32(a50, x_, w0);
            a51 = _mm512_dpbusd_epi32(a51, x_, w1);
            a52 = _mm512_dpbusd_epi32(a52, x_, w2);
            a53 = _mm512_dpbusd_epi32(a53, x_, w3);
        }
    }
    if (MB > 0) { acc[0][0] = a00; acc[0][1] = a01; acc[0][2] = a02; acc[0][3] = a03; }
    if (MB > 1) { acc[1][0] = a10; acc[1][1] = a11; acc[1][2] = a12; acc[1][3] = a13; }
    if (MB > 2) { acc[2][0] = a20; acc[2][1] = a21; acc[2][2] = a22; acc[2][3] = a23; }
    if (MB > 3) { acc[3][0] = a30; acc[3][1] = a31; acc[3][2] = a32; acc[3][3] = a33; }
    if (MB > 4) { acc[4][0] = a40; acc[4][1] = a41; acc[4][2] = a42; acc[4][3] = a43; }
    if (MB > 5) { acc[5][0] = a50; acc[5][1] = a51; acc[5][2] = a52; acc[5][3] = a53; }
}

#define LI_Q8_DOT_FN(MB)                                                            \
    static __attribute__((noinline)) void li_q8_dot##MB(int K4, const uint8_t *Q, long ldq, \
                                                        const int8_t *W, __m512i acc[6][4]) \
    {                                                                               \
        li_q8_dot(MB, K4, Q, ldq, W, acc);                                          \
    }
LI_Q8_DOT_FN(2)
LI_Q8_DOT_FN(3)
LI_Q8_DOT_FN(4)
LI_Q8_DOT_FN(5)
LI_Q8_DOT_FN(6)
#undef LI_Q8_DOT_FN

#define LI_Q8_TILE(MB)                                                              \
    do {                                                                            \
        __m512i acc[6][4];                                                          \
        li_q8_dot##MB(K4, Q + b0 * ldq, ldq, W, acc);                               \
        LI_Q8_FINISH(MB, acc);                                                      \
    } while (0)

static inline __attribute__((always_inline)) void
li_q8_mm_vnni_body(int M, int NG, int K4, const uint8_t *Q, long ldq, const float *sx,
                   const int8_t *Wq, const int32_t *colsum, const float *sw, float *Y, long ldy,
                   int zero_init, int gated, const float *bias, const float *peep, int Hp,
                   float *C, long ldc, float *Hc, long ldh, const li_acts *a, int flip)
{
    static const float zeros[16] = {0};
    const int nblk = (M + 5) / 6;
    for (int gi = 0; gi < NG; gi++) {
        const int g = flip ? NG - 1 - gi : gi;
        const int8_t *W = Wq + (long)g * K4 * 256;
        const float *pi = peep ? peep + g * 16 : zeros;
        const float *pf = peep ? peep + Hp + g * 16 : zeros;
        const float *po = peep ? peep + 2 * Hp + g * 16 : zeros;
        for (int i = 0; i < nblk; i++) {
            const int b0 = (int)((long)i * M / nblk);
            switch ((int)((long)(i + 1) * M / nblk) - b0) {
            case 1: LI_Q8_TILE1(); break;
            case 2: LI_Q8_TILE(2); break;
            case 3: LI_Q8_TILE(3); break;
            case 4: LI_Q8_TILE(4); break;
            case 5: LI_Q8_TILE(5); break;
            default: LI_Q8_TILE(6); break;
            }
        }
    }
}
#undef LI_Q8_TILE
#undef LI_Q8_TILE1
#undef LI_Q8_FINISH

static void li_q8_mm_vnni(int M, int NG, int K4, const uint8_t *Q, long ldq, const float *sx,
                          const int8_t *Wq, const int32_t *colsum, const float *sw, float *Y,
                          long ldy, int zero_init, int gated, const float *bias,
                          const float *peep, int Hp, float *C, long ldc, float *Hc, long ldh,
                          const li_acts *a, int flip)
{
    /* constant zero_init/gated per call site: the inlined bodies are specialised */
    if (gated)
        li_q8_mm_vnni_body(M, NG, K4, Q, ldq, sx, Wq, colsum, sw, Y, ldy, 0, 1, bias, peep, Hp,
                           C, ldc, Hc, ldh, a, flip);
    else
        li_q8_mm_vnni_body(M, NG, K4, Q, ldq, sx, Wq, colsum, sw, Y, ldy, 1, 0, NULL, NULL, 0,
                           NULL, 0, NULL, 0, NULL, 0);
}
#pragma GCC pop_options
#endif

/* ------------------------------------------------------------ AVX2 (no VNNI) */
#ifdef LI_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
/* One row's 64 int32 sums of group g -> dequantized into y (added to it unless
 * zero_init) -> the group's gates: the tail both AVX2 int8 kernels share. */
static inline void li_q8_row_out_avx2(const int32_t *acc, const int32_t *colsum, const float *sw,
                                      float sx, float *y, int zero_init, int gated,
                                      const float *bias, const float *peep, int Hp, int g,
                                      float *c, float *hc, const li_acts *a)
{
    static const float zeros[16] = {0};
    float z[64];
    li_dequant64(acc, colsum, sw, sx, z);
    for (int j = 0; j < 64; j++) y[j] = (zero_init ? 0.0f : y[j]) + z[j];
    if (gated)
        gate_group_avx2(y, bias, peep ? peep + g * 16 : zeros, peep ? peep + Hp + g * 16 : zeros,
                        peep ? peep + 2 * Hp + g * 16 : zeros, c, hc, a);
}

/* Panels holding -128 (li_platform.q8_full; the others take li_q8_mm_avx2s below):
 * vpmaddubsw on the u8 activations themselves would saturate (255 * 127 * 2 > 32767),
 * so both operands are widened to int16 and multiplied with vpmaddwd, whose pair sums
 * cannot overflow int32: the accumulators are exactly the VNNI ones.
 * One row at a time, half a group (32 columns, 8 accumulators) per pass. */
static void li_q8_mm_avx2(int M, int NG, int K4, const uint8_t *Q, long ldq, const float *sx,
                          const int8_t *Wq, const int32_t *colsum, const float *sw, float *Y,
                          long ldy, int zero_init, int gated, const float *bias,
                          const float *peep, int Hp, float *C, long ldc, float *Hc, long ldh,
                          const li_acts *a, int flip)
{
    (void)flip;
    for (int g = 0; g < NG; g++) {
        const int8_t *W = Wq + (long)g * K4 * 256;
        for (int m = 0; m < M; m++) {
            const uint8_t *q = Q + m * ldq;
            int32_t acc32[64];
            for (int half = 0; half < 2; half++) {
                __m256i acc[8];
                for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_si256();
                for (int k4 = 0; k4 < K4; k4++) {
                    const uint64_t a4 = (uint64_t)q[4 * k4] | (uint64_t)q[4 * k4 + 1] << 16 |
                                        (uint64_t)q[4 * k4 + 2] << 32 |
                                        (uint64_t)q[4 * k4 + 3] << 48;
                    const __m256i x16 = _mm256_set1_epi64x((long long)a4);
                    const int8_t *w = W + (long)k4 * 256 + half * 128;
                    for (int c = 0; c < 4; c++) { /* 8 columns = 32 bytes of quads */
                        __m256i wb = _mm256_loadu_si256((const __m256i *)(w + c * 32));
                        __m256i lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(wb));
                        __m256i hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(wb, 1));
                        acc[2 * c] = _mm256_add_epi32(acc[2 * c], _mm256_madd_epi16(x16, lo));
                        acc[2 * c + 1] = _mm256_add_epi32(acc[2 * c + 1], _mm256_madd_epi16(x16, hi));
                    }
                }
                for (int c = 0; c < 4; c++) { /* pair sums -> columns, in order */
                    __m256i v = _mm256_hadd_epi32(acc[2 * c], acc[2 * c + 1]);
                    v = _mm256_permute4x64_epi64(v, 0xD8);
                    _mm256_storeu_si256((__m256i *)(acc32 + half * 32 + c * 8), v);
                }
            }
            li_q8_row_out_avx2(acc32, colsum + g * 64, sw + g * 64, sx[m], Y + m * ldy + g * 64,
                               zero_init, gated, bias + g * 64, peep, Hp, g,
                               C + m * ldc + g * 16, Hc + m * ldh + g * 16, a);
        }
    }
}

/* The same product with vpmaddubsw, exactly: a = q - 128 (the activation as int8, in
 * [-127, 127]) is split into |a| (u8) and its sign, moved onto the weight (vpsignb), so
 * that each pair sum |a0| w0' + |a1| w1' is at most 2 * 127 * 128 < 32767: no saturation.
 * vpmaddwd by ones then sums a column's quad into int32, so each 32-byte weight vector
 * (8 columns x 4 k) gives 8 column sums in order: sum_k (q_k - 128) w_k = acc - colsum,
 * the VNNI value. 4 ops per 32 products against 7.5 widening to int16 (li_q8_mm_avx2).
 * vpsignb cannot negate -128, so panels holding -128 (files quantized elsewhere; ours
 * clip to +-127) take li_q8_mm_avx2 (li_platform.q8_full). One row x 64 columns per
 * pass: 8 int32 accumulators. */
static void li_q8_mm_avx2s(int M, int NG, int K4, const uint8_t *Q, long ldq, const float *sx,
                           const int8_t *Wq, const int32_t *colsum, const float *sw, float *Y,
                           long ldy, int zero_init, int gated, const float *bias,
                           const float *peep, int Hp, float *C, long ldc, float *Hc, long ldh,
                           const li_acts *a, int flip)
{
    static const int32_t no_colsum[64] = {0}; /* folded in: the sums are acc - colsum */
    (void)flip;
    (void)colsum;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int g = 0; g < NG; g++) {
        const int8_t *W = Wq + (long)g * K4 * 256;
        for (int m = 0; m < M; m++) {
            const uint8_t *q = Q + m * ldq;
            __m256i acc[8];
            for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_si256();
            for (int k4 = 0; k4 < K4; k4++) {
                uint32_t u;
                memcpy(&u, q + 4 * k4, 4);
                const __m256i sa = _mm256_set1_epi32((int)(u ^ 0x80808080u)); /* q - 128 */
                const __m256i ua = _mm256_abs_epi8(sa);
                const int8_t *w = W + (long)k4 * 256;
                for (int c = 0; c < 8; c++) {
                    const __m256i wb = _mm256_loadu_si256((const __m256i *)(w + c * 32));
                    const __m256i p = _mm256_maddubs_epi16(ua, _mm256_sign_epi8(wb, sa));
                    acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(p, ones));
                }
            }
            int32_t acc32[64];
            for (int c = 0; c < 8; c++) _mm256_storeu_si256((__m256i *)(acc32 + c * 8), acc[c]);
            li_q8_row_out_avx2(acc32, no_colsum, sw + g * 64, sx[m], Y + m * ldy + g * 64,
                               zero_init, gated, bias + g * 64, peep, Hp, g,
                               C + m * ldc + g * 16, Hc + m * ldh + g * 16, a);
        }
    }
}
#pragma GCC pop_options
#endif

/* ------------------------------------------------------------ AMX (Sapphire Rapids+) */
#if defined(LI_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define LI_HAVE_AMX_BUILD 1
#define LI_AMX_MIN_ROWS 8 /* below this the VNNI tiles win (measured) */


typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} li_tilecfg;

#pragma GCC push_options
#pragma GCC target("amx-tile,amx-int8,avx512f,avx512vl,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")
/* Y (+)= dequant(Q u8 @ Wq) [+ gates] with AMX tiles: per group, 16 rows x 64
 * columns in C tiles 0-3 (16 int32 columns each), A = tile 4 (16 rows x 16
 * k-quads of Q), B = tiles 5/6 (16 k-quads x 16 columns of the panel, stride
 * 256 bytes: the VNNI panel layout is already the AMX B layout). K4 must be a
 * multiple of 16 and Q must have M rounded up to 16 rows (pad rows are computed
 * and discarded). */
static void li_q8_mm_amx(int M, int NG, int K4, const uint8_t *Q, long ldq, const float *sx,
                         const int8_t *Wq, const int32_t *colsum, const float *sw, float *Y,
                         long ldy, int zero_init, int gated, const float *bias,
                         const float *peep, int Hp, float *C, long ldc, float *Hc, long ldh,
                         const li_acts *a, int flip)
{
    static const float zeros[16] = {0};
    li_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 7; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    int32_t tmp[16 * 64] __attribute__((aligned(64)));
    for (int gi = 0; gi < NG; gi++) {
        const int g = flip ? NG - 1 - gi : gi;
        const int8_t *W = Wq + (long)g * K4 * 256;
        const float *pi = peep ? peep + g * 16 : zeros;
        const float *pf = peep ? peep + Hp + g * 16 : zeros;
        const float *po = peep ? peep + 2 * Hp + g * 16 : zeros;
        for (int b0 = 0; b0 < M; b0 += 16) {
            const int rows = M - b0 < 16 ? M - b0 : 16;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int kk = 0; kk < K4; kk += 16) {
                const int8_t *w = W + (long)kk * 256;
                _tile_loadd(4, Q + b0 * ldq + 4 * kk, ldq);
                _tile_loadd(5, w, 256);
                _tile_loadd(6, w + 64, 256);
                _tile_dpbusd(0, 4, 5);
                _tile_dpbusd(1, 4, 6);
                _tile_loadd(5, w + 128, 256);
                _tile_loadd(6, w + 192, 256);
                _tile_dpbusd(2, 4, 5);
                _tile_dpbusd(3, 4, 6);
            }
            _tile_stored(0, tmp, 256);
            _tile_stored(1, tmp + 16, 256);
            _tile_stored(2, tmp + 32, 256);
            _tile_stored(3, tmp + 48, 256);
            for (int r = 0; r < rows; r++) {
                float *y = Y + (b0 + r) * ldy + g * 64;
                const __m512 sxv = _mm512_set1_ps(sx[b0 + r]);
                for (int q = 0; q < 4; q++) {
                    __m512i acc = _mm512_load_si512(tmp + r * 64 + q * 16);
                    __m512 v = _mm512_cvtepi32_ps(
                        _mm512_sub_epi32(acc, _mm512_loadu_si512(colsum + g * 64 + q * 16)));
                    v = _mm512_mul_ps(_mm512_mul_ps(v, sxv), _mm512_loadu_ps(sw + g * 64 + q * 16));
                    if (!zero_init) v = _mm512_add_ps(v, _mm512_loadu_ps(y + q * 16));
                    _mm512_storeu_ps(y + q * 16, v);
                }
            }
            if (gated) {
                int r = 0;
                for (; r + 4 <= rows; r += 4)
                    gate_rows_avx512(4, Y + (b0 + r) * ldy + g * 64, ldy, bias + g * 64, pi, pf,
                                     po, C + (b0 + r) * ldc + g * 16, ldc,
                                     Hc + (b0 + r) * ldh + g * 16, ldh, a);
                for (; r < rows; r++)
                    gate_group_avx512(Y + (b0 + r) * ldy + g * 64, bias + g * 64, pi, pf, po,
                                      C + (b0 + r) * ldc + g * 16, Hc + (b0 + r) * ldh + g * 16,
                                      a);
            }
        }
    }
    _tile_release();
}
#pragma GCC pop_options

/* AMX for >= LI_AMX_MIN_ROWS rows, else VNNI (platform.h picks this one only when the
 * CPU has AMX, Linux granted it, and it is enabled). */
static void li_q8_mm_amx_or_vnni(int M, int NG, int K4, const uint8_t *Q, long ldq, const float *sx,
                            const int8_t *Wq, const int32_t *colsum, const float *sw, float *Y,
                            long ldy, int zero_init, int gated, const float *bias,
                            const float *peep, int Hp, float *C, long ldc, float *Hc, long ldh,
                            const li_acts *a, int flip)
{
    if (M >= LI_AMX_MIN_ROWS)
        li_q8_mm_amx(M, NG, K4, Q, ldq, sx, Wq, colsum, sw, Y, ldy, zero_init, gated, bias,
                     peep, Hp, C, ldc, Hc, ldh, a, flip);
    else
        li_q8_mm_vnni(M, NG, K4, Q, ldq, sx, Wq, colsum, sw, Y, ldy, zero_init, gated, bias,
                      peep, Hp, C, ldc, Hc, ldh, a, flip);
}
#endif

static void li_q8_mm_generic_flip(int M, int NG, int K4, const uint8_t *Q, long ldq,
                                  const float *sx, const int8_t *Wq, const int32_t *colsum,
                                  const float *sw, float *Y, long ldy, int zero_init, int gated,
                                  const float *bias, const float *peep, int Hp, float *C,
                                  long ldc, float *Hc, long ldh, const li_acts *a, int flip)
{
    (void)flip; /* group order does not change results */
    li_q8_mm_generic(M, NG, K4, Q, ldq, sx, Wq, colsum, sw, Y, ldy, zero_init, gated, bias, peep,
                     Hp, C, ldc, Hc, ldh, a);
}



#endif
