/* Float32 step kernels, compiled once per instruction set.
 *
 * lstm_cell.h includes this file several times, each time inside a
 * `#pragma GCC target(...)` region and with LI_SFX set (generic, avx2,
 * avx512), so one source gives a baseline x86-64 build plus AVX2/AVX-512
 * versions picked at run time. Never include it directly.
 *
 * Layouts (see the Design block in _kernels.pyx):
 *   gate rows are interleaved in groups of 16 hidden units:
 *       [i(16) f(16) g(16) o(16)] [i(16) f(16) g(16) o(16)] ...   (4*Hp values)
 *   w_hh_pan: (Hp/16, Kh, 64): per group, W_hh^T, so a GEMV reads it sequentially.
 *   w_hr_pan: (Pp/16, Hp, 16): per 16 outputs, W_hr^T.
 */
#define LI_CAT2(a, b) a##_##b
#define LI_CAT(a, b) LI_CAT2(a, b)
#define LI_FN(name) LI_CAT(name, LI_SFX)

/* 64-byte vector of floats; GCC lowers it to 1 zmm, 2 ymm or 4 xmm registers
 * depending on the target region, and keeps locals of this type in registers. */
typedef float LI_FN(v16) __attribute__((vector_size(64)));
typedef float LI_FN(v16u) __attribute__((vector_size(64), aligned(4), may_alias));
#define V16 LI_FN(v16)
#define LDV(p) (*(const LI_FN(v16u) *)(p))
#define STV(p, v) (*(LI_FN(v16u) *)(p) = (v))

/* exp(x) for float32, ~1 ulp on [-87, 88] (Cephes expf polynomial); vectorises. */
static inline __attribute__((always_inline)) float LI_FN(expf)(float x)
{
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    float t = x * 1.44269504088896341f;
    float n = (t + 12582912.0f) - 12582912.0f; /* round to nearest, |t| < 2^22 */
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

/* Apply an activation to 16 values in place (switch is outside the loops). */
static inline __attribute__((always_inline)) void
LI_FN(act16)(int kind, float alpha, float beta, float *v)
{
    int u;
    switch (kind) {
    case LI_ACT_SIGMOID:
        for (u = 0; u < 16; u++) v[u] = 1.0f / (1.0f + LI_FN(expf)(-v[u]));
        break;
    case LI_ACT_TANH: /* 2*sigmoid(2x) - 1: absolute error ~2e-7 */
        for (u = 0; u < 16; u++) v[u] = 2.0f / (1.0f + LI_FN(expf)(-2.0f * v[u])) - 1.0f;
        break;
    case LI_ACT_RELU:
        for (u = 0; u < 16; u++) v[u] = v[u] > 0.0f ? v[u] : 0.0f;
        break;
    case LI_ACT_HARD_SIGMOID:
        for (u = 0; u < 16; u++) {
            float t = alpha * v[u] + beta;
            t = t < 0.0f ? 0.0f : t;
            v[u] = t > 1.0f ? 1.0f : t;
        }
        break;
    default: /* LI_ACT_LINEAR */
        break;
    }
}

/* Gates of one group of 16 hidden units, one batch row.
 * z: 64 pre-activations (input projection + recurrent part, no bias yet);
 * c: cell state, updated in place; h: o * act_h(c) written. */
static inline __attribute__((always_inline)) void
LI_FN(gate_group)(const float *z, const float *bias, const float *pi, const float *pf,
                  const float *po, float *c, float *h, const li_acts *a)
{
    float gi[16], gf[16], gg[16], go[16], tc[16];
    const float lo = -a->clip, hi = a->clip, clo = -a->cell_clip, chi = a->cell_clip;
    int u;
    for (u = 0; u < 16; u++) {
        float cu = c[u];
        float vi = z[u] + bias[u] + pi[u] * cu;
        float vf = z[16 + u] + bias[16 + u] + pf[u] * cu;
        float vg = z[32 + u] + bias[32 + u];
        /* written as compares so NaN passes through instead of being clipped away */
        vi = vi < lo ? lo : vi; vi = vi > hi ? hi : vi;
        vf = vf < lo ? lo : vf; vf = vf > hi ? hi : vf;
        vg = vg < lo ? lo : vg; vg = vg > hi ? hi : vg;
        gi[u] = vi; gf[u] = vf; gg[u] = vg;
    }
    LI_FN(act16)(a->kf, a->af, a->bf, gi);
    LI_FN(act16)(a->kf, a->af, a->bf, gf);
    LI_FN(act16)(a->kg, a->ag, a->bg, gg);
    for (u = 0; u < 16; u++) {
        float f = a->cifg ? 1.0f - gi[u] : gf[u];
        float cn = f * c[u] + gi[u] * gg[u];
        cn = cn < clo ? clo : cn; cn = cn > chi ? chi : cn;
        c[u] = cn;
        tc[u] = cn;
        float vo = z[48 + u] + bias[48 + u] + po[u] * cn;
        vo = vo < lo ? lo : vo; vo = vo > hi ? hi : vo;
        go[u] = vo;
    }
    LI_FN(act16)(a->kf, a->af, a->bf, go);
    LI_FN(act16)(a->kh, a->ah, a->bh, tc);
    for (u = 0; u < 16; u++) h[u] = go[u] * tc[u];
}

/* Gate pass over nb rows: Z (nb, 4Hp) row stride ldz holds x W_ih^T + h W_hh^T.
 * C (nb, Hp) is updated in place, Hc (nb, Hp) receives o*act(c). */
static void LI_FN(li_gates_rows_f32)(int nb, int Hp, const float *Z, long ldz, const float *bias,
                                     const float *peep, float *C, long ldc, float *Hc, long ldh,
                                     const li_acts *a)
{
    static const float zeros[16] = {0};
    for (int b = 0; b < nb; b++)
        for (int g = 0; g < Hp / 16; g++) {
            const float *pi = peep ? peep + g * 16 : zeros;
            const float *pf = peep ? peep + Hp + g * 16 : zeros;
            const float *po = peep ? peep + 2 * Hp + g * 16 : zeros;
            LI_FN(gate_group)(Z + b * ldz + g * 64, bias + g * 64, pi, pf, po,
                              C + b * ldc + g * 16, Hc + b * ldh + g * 16, a);
        }
}

/* acc[r] (64 values = 4 vectors) += sum_k h[r][k] * W[k][0:64] for MB rows. */
#define LI_GEMV_ROWS(MB)                                                            \
    do {                                                                            \
        V16 acc[MB][4];                                                             \
        for (int r = 0; r < MB; r++)                                                \
            for (int q = 0; q < 4; q++) acc[r][q] = LDV(G + (b0 + r) * ldg + g * 64 + q * 16); \
        for (int k = 0; k < Kh; k++) {                                              \
            const float *w = W + (long)k * 64;                                      \
            V16 w0 = LDV(w), w1 = LDV(w + 16), w2 = LDV(w + 32), w3 = LDV(w + 48);  \
            for (int r = 0; r < MB; r++) {                                          \
                float hv = hprev[(b0 + r) * ldhp + k];                              \
                acc[r][0] += hv * w0; acc[r][1] += hv * w1;                         \
                acc[r][2] += hv * w2; acc[r][3] += hv * w3;                         \
            }                                                                       \
        }                                                                           \
        for (int r = 0; r < MB; r++) {                                              \
            float z[64];                                                            \
            for (int q = 0; q < 4; q++) STV(z + q * 16, acc[r][q]);                 \
            LI_FN(gate_group)(z, bias + g * 64, pi, pf, po, C + (b0 + r) * ldc + g * 16, \
                              Hc + (b0 + r) * ldh + g * 16, a);                     \
        }                                                                           \
    } while (0)

/* One recurrent step for a small batch, GEMV and gates fused per group of 16
 * units so the 64 pre-activations never leave registers/L1:
 *   z = G[b] + hprev[b] @ W_hh^T ;  gates ;  C[b], Hc[b] updated.
 * G (nb, 4Hp) stride ldg; hprev (nb, Kh) stride ldhp; Wpan (Hp/16, Kh, 64). */
static void LI_FN(li_step_fused_f32)(int nb, int Hp, int Kh, const float *G, long ldg,
                                     const float *Wpan, const float *hprev, long ldhp,
                                     const float *bias, const float *peep, float *C, long ldc,
                                     float *Hc, long ldh, const li_acts *a)
{
    static const float zeros[16] = {0};
    for (int b0 = 0; b0 < nb; b0 += LI_MB) {
        int mb = nb - b0 < LI_MB ? nb - b0 : LI_MB;
        for (int g = 0; g < Hp / 16; g++) {
            const float *W = Wpan + (long)g * Kh * 64;
            const float *pi = peep ? peep + g * 16 : zeros;
            const float *pf = peep ? peep + Hp + g * 16 : zeros;
            const float *po = peep ? peep + 2 * Hp + g * 16 : zeros;
            switch (mb) {
            case 1: LI_GEMV_ROWS(1); break;
#if LI_MB >= 2
            case 2: LI_GEMV_ROWS(2); break;
#endif
#if LI_MB >= 3
            case 3: LI_GEMV_ROWS(3); break;
#endif
#if LI_MB >= 4
            default: LI_GEMV_ROWS(4); break;
#endif
            }
        }
    }
}

/* y[b][p*16 + j] = sum_k x[b][k] * Wpan[p][k][j]  (projection for small batches).
 * Wpan (N16, K, 16); x (nb, K) stride ldx; y (nb, 16*N16) stride ldy. */
static void LI_FN(li_gemv_pan16_f32)(int nb, int N16, int K, const float *Wpan, const float *x,
                                     long ldx, float *y, long ldy)
{
    for (int b = 0; b < nb; b++) {
        const float *xb = x + b * ldx;
        int p = 0;
        for (; p + 4 <= N16; p += 4) { /* 4 panels at once: 4 independent FMA chains */
            const float *w0 = Wpan + (long)p * K * 16;
            V16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int k = 0; k < K; k++) {
                float xv = xb[k];
                a0 += xv * LDV(w0 + k * 16);
                a1 += xv * LDV(w0 + (long)K * 16 + k * 16);
                a2 += xv * LDV(w0 + (long)2 * K * 16 + k * 16);
                a3 += xv * LDV(w0 + (long)3 * K * 16 + k * 16);
            }
            STV(y + b * ldy + p * 16, a0); STV(y + b * ldy + p * 16 + 16, a1);
            STV(y + b * ldy + p * 16 + 32, a2); STV(y + b * ldy + p * 16 + 48, a3);
        }
        for (; p < N16; p++) {
            const float *w = Wpan + (long)p * K * 16;
            V16 acc = {0};
            for (int k = 0; k < K; k++) acc += xb[k] * LDV(w + k * 16);
            STV(y + b * ldy + p * 16, acc);
        }
    }
}

#undef V16
#undef LDV
#undef STV
#undef LI_GEMV_ROWS
