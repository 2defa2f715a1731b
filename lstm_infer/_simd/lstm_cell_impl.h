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

/* Native-width float vector of the target region: LI_VW floats (16 zmm, 8 ymm,
 * 4 xmm). A group's 64 pre-activations are NQ = 64 / LI_VW vectors. Wider-than-
 * native GCC vectors are lowered through the stack (measured 10x slower), so
 * the width must match the region. */
#define NQ (64 / LI_VW)
#ifndef LI_KC
#define LI_KC 128 /* K chunk: a 32 KB slice of a weight panel, L1-resident */
#endif
typedef float LI_FN(vf) __attribute__((vector_size(LI_VW * 4)));
typedef float LI_FN(vfu) __attribute__((vector_size(LI_VW * 4), aligned(4), may_alias));
#define VF LI_FN(vf)
#define LDV(p) ((VF)(*(const LI_FN(vfu) *)(p)))
#define STV(p, v) (*(LI_FN(vfu) *)(p) = (v))

typedef int32_t LI_FN(vi) __attribute__((vector_size(LI_VW * 4)));
#define VI LI_FN(vi)

#include LI_ISA /* the primitives of this ISA: vmax, vmin, vround, vldexp, vrcp, ldw */

/* exp(x), ~1 ulp on [-87, 88] (Cephes expf polynomial), all lanes at once; written
 * once on the ISA primitives (vround: to nearest; vldexp: p * 2^n). */
static inline __attribute__((always_inline)) VF LI_FN(vexp)(VF x)
{
    const VF zero = {0};
    x = LI_FN(vmin)(zero + 88.3f, LI_FN(vmax)(zero - 87.3f, x));
    VF n = LI_FN(vround)(x * 1.44269504088896341f);
    VF r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    VF p = r * 1.9875691500E-4f + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    return LI_FN(vldexp)(p, n);
}

/* Apply an activation to 16 values in place (switch is outside the loops). */
static inline __attribute__((always_inline)) void
LI_FN(act16)(int kind, double alpha_d, double beta_d, float *v)
{
    const float alpha = (float)alpha_d, beta = (float)beta_d;
    for (int q = 0; q < 16 / LI_VW; q++) {
        const VF zero = {0};
        VF x = LDV(v + q * LI_VW);
        switch (kind) {
        case LI_ACT_SIGMOID:
            x = LI_FN(vrcp)(1.0f + LI_FN(vexp)(-x));
            break;
        case LI_ACT_TANH: /* 2*sigmoid(2x) - 1: absolute error ~2e-7 */
            x = 2.0f * LI_FN(vrcp)(1.0f + LI_FN(vexp)(-2.0f * x)) - 1.0f;
            break;
        case LI_ACT_RELU:
            x = LI_FN(vmax)(zero, x);
            break;
        case LI_ACT_HARD_SIGMOID:
            x = LI_FN(vmin)(zero + 1.0f, LI_FN(vmax)(zero, alpha * x + beta));
            break;
        default: /* LI_ACT_LINEAR */
            break;
        }
        STV(v + q * LI_VW, x);
    }
}

/* Gates of one group of 16 hidden units, one batch row.
 * z: 64 pre-activations (input projection + recurrent part, no bias yet);
 * c: cell state, updated in place; h: o * act_h(c) written. */
static inline __attribute__((always_inline)) void
LI_FN(gate_group_any)(const float *z, const float *bias, const float *pi, const float *pf,
                      const float *po, float *c, float *h, const li_acts *a)
{
    float gi[16], gf[16], gg[16], go[16], tc[16];
    const float lo = -(float)a->clip, hi = (float)a->clip;
    const float clo = -(float)a->cell_clip, chi = (float)a->cell_clip;
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

static inline __attribute__((always_inline)) VF LI_FN(vsigmoid)(VF x)
{
    return LI_FN(vrcp)(1.0f + LI_FN(vexp)(-x));
}

static inline __attribute__((always_inline)) VF LI_FN(vtanh)(VF x)
{
    return 2.0f * LI_FN(vrcp)(1.0f + LI_FN(vexp)(-2.0f * x)) - 1.0f;
}

/* The common case (sigmoid gates, tanh cell and output) as straight-line vector
 * code: the i, f, g activations (and then o, tanh(c)) are independent ~60-cycle
 * dependency chains that the CPU overlaps only when no branch separates them. */
static inline __attribute__((always_inline)) void
LI_FN(gate_group_std)(const float *z, const float *bias, const float *pi, const float *pf,
                      const float *po, float *c, float *h, const li_acts *a)
{
    const VF zero = {0};
    const VF lo = zero - (float)a->clip, hi = zero + (float)a->clip;
    const VF clo = zero - (float)a->cell_clip, chi = zero + (float)a->cell_clip;
    for (int q = 0; q < 16 / LI_VW; q++) {
        const int u = q * LI_VW;
        VF cv = LDV(c + u);
#define LI_CLIP(v) LI_FN(vmin)(hi, LI_FN(vmax)(lo, (v)))
        VF i = LI_FN(vsigmoid)(LI_CLIP(LDV(z + u) + LDV(bias + u) + LDV(pi + u) * cv));
        VF g = LI_FN(vtanh)(LI_CLIP(LDV(z + 32 + u) + LDV(bias + 32 + u)));
        VF f = a->cifg ? 1.0f - i
                       : LI_FN(vsigmoid)(LI_CLIP(LDV(z + 16 + u) + LDV(bias + 16 + u) +
                                                 LDV(pf + u) * cv));
        VF cn = LI_FN(vmin)(chi, LI_FN(vmax)(clo, f * cv + i * g));
        VF o = LI_FN(vsigmoid)(LI_CLIP(LDV(z + 48 + u) + LDV(bias + 48 + u) + LDV(po + u) * cn));
#undef LI_CLIP
        STV(c + u, cn);
        STV(h + u, o * LI_FN(vtanh)(cn));
    }
}

static inline __attribute__((always_inline)) void
LI_FN(gate_group)(const float *z, const float *bias, const float *pi, const float *pf,
                  const float *po, float *c, float *h, const li_acts *a)
{
    if (a->kf == LI_ACT_SIGMOID && a->kg == LI_ACT_TANH && a->kh == LI_ACT_TANH)
        LI_FN(gate_group_std)(z, bias, pi, pf, po, c, h, a);
    else
        LI_FN(gate_group_any)(z, bias, pi, pf, po, c, h, a);
}

/* The gates of NR rows of one group (NR a compile-time constant <= 6), stage by
 * stage across the rows: one row's gates are a chain of dependent ~20-instruction
 * activations (latency-bound, measured ~250 cycles per row-group); NR independent
 * chains side by side keep the vector units busy. Z rows stride ldz. */
static inline __attribute__((always_inline)) void
LI_FN(gate_rows)(const int NR, const float *Z, long ldz, const float *bias, const float *pi,
                 const float *pf, const float *po, float *C, long ldc, float *Hh, long ldh,
                 const li_acts *a)
{
    if (NR == 1 || !(a->kf == LI_ACT_SIGMOID && a->kg == LI_ACT_TANH && a->kh == LI_ACT_TANH)) {
        for (int r = 0; r < NR; r++)
            LI_FN(gate_group)(Z + r * ldz, bias, pi, pf, po, C + r * ldc, Hh + r * ldh, a);
        return;
    }
    const VF zero = {0};
    const VF lo = zero - (float)a->clip, hi = zero + (float)a->clip;
    const VF clo = zero - (float)a->cell_clip, chi = zero + (float)a->cell_clip;
#define LI_CLIP(v) LI_FN(vmin)(hi, LI_FN(vmax)(lo, (v)))
    for (int q = 0; q < 16 / LI_VW; q++) {
        const int u = q * LI_VW;
        VF cv[6], gi[6], gf[6], gg[6], go[6];
        _Pragma("GCC unroll 6") for (int r = 0; r < NR; r++) {
            const float *z = Z + r * ldz;
            cv[r] = LDV(C + r * ldc + u);
            gi[r] = LI_CLIP(LDV(z + u) + LDV(bias + u) + LDV(pi + u) * cv[r]);
            gf[r] = LI_CLIP(LDV(z + 16 + u) + LDV(bias + 16 + u) + LDV(pf + u) * cv[r]);
            gg[r] = LI_CLIP(LDV(z + 32 + u) + LDV(bias + 32 + u));
        }
        _Pragma("GCC unroll 6") for (int r = 0; r < NR; r++) gi[r] = LI_FN(vsigmoid)(gi[r]);
        _Pragma("GCC unroll 6") for (int r = 0; r < NR; r++) gg[r] = LI_FN(vtanh)(gg[r]);
        _Pragma("GCC unroll 6") for (int r = 0; r < NR; r++)
            gf[r] = a->cifg ? 1.0f - gi[r] : LI_FN(vsigmoid)(gf[r]);
        _Pragma("GCC unroll 6") for (int r = 0; r < NR; r++) {
            cv[r] = LI_FN(vmin)(chi, LI_FN(vmax)(clo, gf[r] * cv[r] + gi[r] * gg[r]));
            STV(C + r * ldc + u, cv[r]);
            go[r] = LI_CLIP(LDV(Z + r * ldz + 48 + u) + LDV(bias + 48 + u) + LDV(po + u) * cv[r]);
        }
        _Pragma("GCC unroll 6") for (int r = 0; r < NR; r++)
            STV(Hh + r * ldh + u, LI_FN(vsigmoid)(go[r]) * LI_FN(vtanh)(cv[r]));
    }
#undef LI_CLIP
}

/* Weight element types of the panels (LI_WT_*), widened to float32 in registers:
 * int8 (per-column scale applied to the accumulators), float16, bfloat16.
 * Intrinsics per ISA: GCC's generic vector conversions from narrow types
 * compile to near-scalar code here (measured 5-30x slower). */
/* (ldw and ldw_bf16, the widening loads, are primitives of the ISA file) */

/* Tile of MB rows x one group (64 columns), k in [k0, k1).
 * float32 / half weights: acc starts from Y (or 0 on the first chunk when
 * zero_init) and is stored back. int8 weights: acc starts at 0 and Y gets
 * base + scale * acc, so stored values are never divided by a scale.
 * On the last K chunk of a gated call, the group's gates are applied.
 * acc stays in registers (MB * NQ vectors). */
#define LI_TILE(MB)                                                                 \
    do {                                                                            \
        VF acc[MB][NQ];                                                             \
        for (int r = 0; r < MB; r++)                                                \
            for (int q = 0; q < NQ; q++)                                            \
                acc[r][q] = (scaled || (zero_init && k0 == 0))                      \
                    ? vzero : LDV(Y + (b0 + r) * ldy + g * 64 + q * LI_VW);         \
        for (int k = k0; k < k1; k++) {                                             \
            const long wk = (long)k * 64;                                           \
            for (int r = 0; r < MB; r++) {                                          \
                float hv = X[(b0 + r) * ldx + k];                                   \
                for (int q = 0; q < NQ; q++)                                        \
                    acc[r][q] += hv * LI_FN(ldw)(W, wk + q * LI_VW, wt);            \
            }                                                                       \
        }                                                                           \
        for (int r = 0; r < MB; r++) {                                              \
            float *zr = Y + (b0 + r) * ldy + g * 64;                                \
            for (int q = 0; q < NQ; q++) {                                          \
                VF v = acc[r][q];                                                   \
                if (scaled)                                                         \
                    v = ((zero_init && k0 == 0) ? vzero : LDV(zr + q * LI_VW)) +    \
                        LDV(sc + q * LI_VW) * v;                                    \
                STV(zr + q * LI_VW, v);                                             \
            }                                                                       \
        }                                                                           \
        if (gated && last)                                                          \
            LI_FN(gate_rows)(MB, Y + b0 * ldy + g * 64, ldy, bias + g * 64, pi, pf, po, \
                             C + b0 * ldc + g * 16, ldc, Hc + b0 * ldh + g * 16, ldh, a); \
    } while (0)

/* One row, few vectors per group (AVX-512: NQ = 4): even and odd k accumulate
 * separately so 2*NQ FMA chains hide the FMA latency. */
#define LI_TILE1_SPLIT()                                                            \
    do {                                                                            \
        const float *hv = X + b0 * ldx;                                             \
        float *zr = Y + b0 * ldy + g * 64;                                          \
        VF acc[NQ], e[NQ];                                                          \
        for (int q = 0; q < NQ; q++) {                                              \
            e[q] = vzero;                                                           \
            acc[q] = (scaled || (zero_init && k0 == 0)) ? vzero : LDV(zr + q * LI_VW); \
        }                                                                           \
        int k = k0;                                                                 \
        for (; k + 2 <= k1; k += 2) {                                               \
            const long wk = (long)k * 64;                                           \
            float h0 = hv[k], h1 = hv[k + 1];                                       \
            for (int q = 0; q < NQ; q++) {                                          \
                acc[q] += h0 * LI_FN(ldw)(W, wk + q * LI_VW, wt);                   \
                e[q] += h1 * LI_FN(ldw)(W, wk + 64 + q * LI_VW, wt);                \
            }                                                                       \
        }                                                                           \
        if (k < k1)                                                                 \
            for (int q = 0; q < NQ; q++)                                            \
                acc[q] += hv[k] * LI_FN(ldw)(W, (long)k * 64 + q * LI_VW, wt);      \
        for (int q = 0; q < NQ; q++) {                                              \
            VF v = acc[q] + e[q];                                                   \
            if (scaled)                                                             \
                v = ((zero_init && k0 == 0) ? vzero : LDV(zr + q * LI_VW)) +        \
                    LDV(sc + q * LI_VW) * v;                                        \
            STV(zr + q * LI_VW, v);                                                 \
        }                                                                           \
        if (gated && last)                                                          \
            LI_FN(gate_group)(zr, bias + g * 64, pi, pf, po, C + b0 * ldc + g * 16, \
                              Hc + b0 * ldh + g * 16, a);                           \
    } while (0)

#ifdef LI_NARROW
/* Tile of MB rows x 16 columns (column block c of group g), k in [k0, k1): the
 * narrow tile of ISAs whose registers cannot hold several rows of a 64-wide group
 * (AVX2: 16 ymm; LI_MB = 1 would load every weight vector for one FMA). 2*MB
 * accumulators + 2 weight vectors + a broadcast fit 16 registers at MB = 6, and
 * each weight vector feeds MB FMAs. Every output element is still one FMA chain
 * over k in order, started from Y (or 0): the same bits as LI_TILE(1). */
#define LI_NTILE(MB)                                                                \
    do {                                                                            \
        VF acc[MB][2];                                                              \
        for (int r = 0; r < MB; r++)                                                \
            for (int q = 0; q < 2; q++)                                             \
                acc[r][q] = (scaled || (zero_init && k0 == 0))                      \
                    ? vzero : LDV(Y + (b0 + r) * ldy + g * 64 + c * 16 + q * LI_VW); \
        for (int k = k0; k < k1; k++) {                                             \
            const long wk = (long)k * 64 + c * 16;                                  \
            const VF w0 = LI_FN(ldw)(W, wk, wt), w1 = LI_FN(ldw)(W, wk + LI_VW, wt); \
            for (int r = 0; r < MB; r++) {                                          \
                const float hv = X[(b0 + r) * ldx + k];                             \
                acc[r][0] += hv * w0;                                               \
                acc[r][1] += hv * w1;                                               \
            }                                                                       \
        }                                                                           \
        for (int r = 0; r < MB; r++) {                                              \
            float *zr = Y + (b0 + r) * ldy + g * 64 + c * 16;                       \
            for (int q = 0; q < 2; q++) {                                           \
                VF v = acc[r][q];                                                   \
                if (scaled)                                                         \
                    v = ((zero_init && k0 == 0) ? vzero : LDV(zr + q * LI_VW)) +    \
                        LDV(sc + c * 16 + q * LI_VW) * v;                           \
                STV(zr + q * LI_VW, v);                                             \
            }                                                                       \
        }                                                                           \
    } while (0)

/* panel_mm for M >= 2 rows on a narrow-tile ISA. Loop order g -> K chunk -> row
 * block -> column block: a row block's KC x 6 slice of X (6 KB) stays in L1 for
 * the group's four column blocks, while the panel slice streams from L2 in order
 * (holding a 16-column slice in L1 instead was 10 % slower at M = 64: its lines lie
 * 256 B apart, so they compete for a quarter of L1's sets). The gates of a group run
 * once its 64 columns are complete, row blocks of up to 6 at a time.
 * Measured (standalone, AVX2, 1 thread): step M=64 K=H=512 28.6 -> 30.5 GFLOP/s,
 * M=16 H=320 27.4 -> 31.0, M=8 H=256 26.1 -> 30.4; OpenBLAS sgemm 35.5 that day. */
#ifndef LI_NKC
#define LI_NKC 256
#endif
static inline __attribute__((always_inline)) void
LI_FN(panel_mm_narrow)(int M, int NG, int K, const float *X, long ldx, const void *Wpan, int wt,
                       const float *scale, float *Y, long ldy, int zero_init, int gated,
                       const float *bias, const float *peep, int Hp, float *C, long ldc,
                       float *Hc, long ldh, const li_acts *a, int flip)
{
    static const float zeros[16] = {0};
    const VF vzero = {0};
    const int scaled = wt == LI_WT_I8;
    const int wsize = wt == LI_WT_F32 ? 4 : (wt == LI_WT_I8 ? 1 : 2);
    const int KC = scaled ? LI_KC : LI_NKC; /* int8: the chunks of every other tile */
    const int nblk = (M + 5) / 6;
    for (int gi = 0; gi < NG; gi++) {
        const int g = flip ? NG - 1 - gi : gi;
        const void *W = (const char *)Wpan + (long)g * K * 64 * wsize;
        const float *sc = scaled ? scale + g * 64 : NULL;
        for (int k0 = 0; k0 < K; k0 += KC) {
            const int k1 = k0 + KC < K ? k0 + KC : K;
            for (int i = 0; i < nblk; i++)
                for (int c = 0; c < 4; c++) {
                    const int b0 = (int)((long)i * M / nblk);
                    const int mb = (int)((long)(i + 1) * M / nblk) - b0;
                    switch (mb) {
                    case 1: LI_NTILE(1); break;
                    case 2: LI_NTILE(2); break;
                    case 3: LI_NTILE(3); break;
                    case 4: LI_NTILE(4); break;
                    case 5: LI_NTILE(5); break;
                    default: LI_NTILE(6); break;
                    }
                }
        }
        if (!gated) continue;
        const float *pi = peep ? peep + g * 16 : zeros;
        const float *pf = peep ? peep + Hp + g * 16 : zeros;
        const float *po = peep ? peep + 2 * Hp + g * 16 : zeros;
        for (int i = 0; i < nblk; i++) {
            const int b0 = (int)((long)i * M / nblk);
            const int mb = (int)((long)(i + 1) * M / nblk) - b0;
#define LI_NGATES(NR) LI_FN(gate_rows)(NR, Y + b0 * ldy + g * 64, ldy, bias + g * 64, pi, pf, \
                                       po, C + b0 * ldc + g * 16, ldc, Hc + b0 * ldh + g * 16, \
                                       ldh, a)
            switch (mb) {
            case 1: LI_NGATES(1); break;
            case 2: LI_NGATES(2); break;
            case 3: LI_NGATES(3); break;
            case 4: LI_NGATES(4); break;
            case 5: LI_NGATES(5); break;
            default: LI_NGATES(6); break;
            }
#undef LI_NGATES
        }
    }
}
#undef LI_NTILE
#endif /* LI_NARROW */

/* Y (M, 64*NG) (+)= X (M, K) @ Wpan, Wpan (NG, K, 64) of weight type wt (with
 * per-column scales for int8): our register-blocked GEMM on weights packed once
 * at load, optionally with the LSTM gates fused per tile.
 *   - Loop order g -> K chunk -> row block: a KC x 64 slice of the group's panel
 *     (32 KB of float32) stays in L1 while every row block uses it (BLIS-style).
 *   - Rows split into equal blocks of <= LI_MB (8 rows -> 4 + 4, not 6 + 1 + 1).
 *   - flip walks the groups backwards: alternating it every step (serpentine)
 *     starts each step on the panels still in L1 from the previous one.
 * Always inlined with constant zero_init/gated/wt, so each use compiles to its
 * own specialised loop nest. */
static inline __attribute__((always_inline)) void
LI_FN(panel_mm)(int M, int NG, int K, const float *X, long ldx, const void *Wpan, int wt,
                const float *scale, float *Y, long ldy, int zero_init, int gated,
                const float *bias, const float *peep, int Hp, float *C, long ldc, float *Hc,
                long ldh, const li_acts *a, int flip)
{
#ifdef LI_NARROW
    if (M >= 2) {
        LI_FN(panel_mm_narrow)(M, NG, K, X, ldx, Wpan, wt, scale, Y, ldy, zero_init, gated, bias,
                               peep, Hp, C, ldc, Hc, ldh, a, flip);
        return;
    }
#endif
    static const float zeros[16] = {0};
    const VF vzero = {0};
    const int scaled = wt == LI_WT_I8;
    const int wsize = wt == LI_WT_F32 ? 4 : (wt == LI_WT_I8 ? 1 : 2);
    /* one chunk when the rows fit one tile (a GEMV: no partial sums stored), except
     * int8, whose chunk partial sums are scaled and added: a fixed chunk keeps a
     * row's bits independent of the batch it shares */
    const int KC = M <= LI_MB && !scaled ? K : LI_KC;
    const int nblk = (M + LI_MB - 1) / LI_MB;
    for (int gi = 0; gi < NG; gi++) {
        const int g = flip ? NG - 1 - gi : gi;
        const void *W = (const char *)Wpan + (long)g * K * 64 * wsize;
        const float *sc = scaled ? scale + g * 64 : NULL;
        const float *pi = peep ? peep + g * 16 : zeros;
        const float *pf = peep ? peep + Hp + g * 16 : zeros;
        const float *po = peep ? peep + 2 * Hp + g * 16 : zeros;
        for (int k0 = 0; k0 < K; k0 += KC) {
            const int k1 = k0 + KC < K ? k0 + KC : K;
            const int last = k1 == K;
            for (int i = 0; i < nblk; i++) {
                const int b0 = (int)((long)i * M / nblk);
                const int mb = (int)((long)(i + 1) * M / nblk) - b0;
                switch (mb) {
                case 1:
                    if (NQ <= 4) LI_TILE1_SPLIT(); else LI_TILE(1);
                    break;
#if LI_MB >= 2
                case 2: LI_TILE(2); break;
#endif
#if LI_MB >= 3
                case 3: LI_TILE(3); break;
#endif
#if LI_MB >= 4
                case 4: LI_TILE(4); break;
#endif
#if LI_MB >= 5
                case 5: LI_TILE(5); break;
#endif
#if LI_MB >= 6
                default: LI_TILE(6); break;
#endif
                }
            }
        }
    }
}

/* One recurrent step, GEMM and gates fused per tile (rows x 16 units x 4 gates):
 *   z = G[b] + hprev[b] @ W_hh^T ;  gates ;  C[b], Hc[b] updated.
 * G (nb, 4Hp) stride ldg is the step's input projection and is overwritten.
 * hprev (nb, Kh) stride ldhp; Wpan (NG, Kh, 64) of weight type wt: NG groups of 16
 * units (a thread's share when one sequence's step is split; Hp / 16 otherwise),
 * the peephole rows being Hp apart. */
#define LI_DEFINE_STEP(WT, NAME)                                                    \
    static void LI_FN(NAME)(int nb, int NG, int Hp, int Kh, float *G, long ldg,      \
                            const void *Wpan, const float *scale, const float *hprev, \
                            long ldhp, const float *bias, const float *peep, float *C, \
                            long ldc, float *Hc, long ldh, const li_acts *a, int flip) \
    {                                                                               \
        LI_FN(panel_mm)(nb, NG, Kh, hprev, ldhp, Wpan, WT, scale, G, ldg, 0, 1, bias, peep, \
                        Hp, C, ldc, Hc, ldh, a, flip);                              \
    }

/* Input projection: Y (M, 64*NG) = X (M, K) @ Wpan, Wpan (NG, K, 64) of type wt. */
#define LI_DEFINE_GEMM(WT, NAME)                                                    \
    static void LI_FN(NAME)(int M, int NG, int K, const float *X, long ldx, const void *Wpan, \
                            const float *scale, float *Y, long ldy)                 \
    {                                                                               \
        LI_FN(panel_mm)(M, NG, K, X, ldx, Wpan, WT, scale, Y, ldy, 1, 0, NULL, NULL, 0, NULL, \
                        0, NULL, 0, NULL, 0);                                       \
    }

LI_DEFINE_STEP(LI_WT_F32, li_step_f32)
LI_DEFINE_STEP(LI_WT_I8, li_step_i8)
LI_DEFINE_STEP(LI_WT_F16, li_step_f16)
LI_DEFINE_STEP(LI_WT_BF16, li_step_bf16)
LI_DEFINE_GEMM(LI_WT_F32, li_gemm_f32)
LI_DEFINE_GEMM(LI_WT_I8, li_gemm_i8)
LI_DEFINE_GEMM(LI_WT_F16, li_gemm_f16)
LI_DEFINE_GEMM(LI_WT_BF16, li_gemm_bf16)
#undef LI_DEFINE_STEP
#undef LI_DEFINE_GEMM

/* y[b][p*16 + j] = sum_k x[b][k] * Wpan[p][k][j]  (projection).
 * Wpan (N16, K, 16); x (nb, K) stride ldx; y (nb, 16*N16) stride ldy. */
/* Rows of the projection h = Hc W_hr^T against one 16-wide panel (K x 16), R rows per
 * pass so each weight vector loaded serves R rows. Every row's arithmetic is the
 * same whatever R or its position (two chains, even and odd k, summed at the end):
 * a row's result never depends on the batch it shares a call with. */
#ifndef LI_PROJ_ROWS
#define LI_PROJ_ROWS (LI_VW == 4 ? 1 : (LI_VW == 8 ? 3 : 6)) /* accumulators fit the registers */
#endif
static inline __attribute__((always_inline)) void
LI_FN(pan16_rows)(const int R, int K, const float *w, const float *x, long ldx, float *y,
                  long ldy)
{
    enum { NV = 16 / LI_VW };
    VF acc[LI_PROJ_ROWS][NV], e[LI_PROJ_ROWS][NV];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < NV; q++) { acc[r][q] = (VF){0}; e[r][q] = acc[r][q]; }
    int k = 0;
    for (; k + 2 <= K; k += 2)
        for (int q = 0; q < NV; q++) {
            const VF w0 = LDV(w + k * 16 + q * LI_VW), w1 = LDV(w + (k + 1) * 16 + q * LI_VW);
            for (int r = 0; r < R; r++) {
                acc[r][q] += x[r * ldx + k] * w0;
                e[r][q] += x[r * ldx + k + 1] * w1;
            }
        }
    for (; k < K; k++)
        for (int q = 0; q < NV; q++) {
            const VF w0 = LDV(w + k * 16 + q * LI_VW);
            for (int r = 0; r < R; r++) acc[r][q] += x[r * ldx + k] * w0;
        }
    for (int r = 0; r < R; r++)
        for (int q = 0; q < NV; q++) STV(y + r * ldy + q * LI_VW, acc[r][q] + e[r][q]);
}

/* Y (nb, 16 N16) = X (nb, K) @ the 16-wide panels of W_hr (the projection, any batch). */
static void LI_FN(li_gemv_pan16_f32)(int nb, int N16, int K, const float *Wpan, const float *x,
                                     long ldx, float *y, long ldy)
{
    for (int p = 0; p < N16; p++) {
        const float *w = Wpan + (long)p * K * 16;
        int b = 0;
        for (; b + LI_PROJ_ROWS <= nb; b += LI_PROJ_ROWS)
            LI_FN(pan16_rows)(LI_PROJ_ROWS, K, w, x + b * ldx, ldx, y + b * ldy + p * 16, ldy);
        for (; b < nb; b++) /* the remainder, one row at a time: the same arithmetic */
            LI_FN(pan16_rows)(1, K, w, x + b * ldx, ldx, y + b * ldy + p * 16, ldy);
    }
}

#undef VF
#undef VI
#undef NQ
#undef LDV
#undef STV
#undef LI_TILE
#undef LI_TILE1_SPLIT
