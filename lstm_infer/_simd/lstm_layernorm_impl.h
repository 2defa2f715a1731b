/* One instantiation of the layer-norm gate pass (lstm_layernorm.h) for LI_T. */
#define LI_LN_CAT2(a, b) a##_##b
#define LI_LN_CAT(a, b) LI_LN_CAT2(a, b)
#define LI_LN_FN(name) LI_LN_CAT(name, LI_SFX)

/* Normalise the H units of `gate` in a (row of Z, interleaved), scale by ln, add the
 * bias, clip and activate, in place. */
static inline void LI_LN_FN(li_ln_gate)(LI_T *a, int gate, int H, const LI_T *bias,
                                        const LI_T *ln, LI_T clip, int kind, double al,
                                        double be)
{
    double sum = 0.0, sq = 0.0;
    for (int j = 0; j < H; j++) sum += (double)a[li_ln_at(gate, j)];
    const double mean = sum / H;
    for (int j = 0; j < H; j++) {
        const double d = (double)a[li_ln_at(gate, j)] - mean;
        sq += d * d;
    }
    const LI_T m = (LI_T)mean, inv = (LI_T)(1.0 / sqrt(sq / H + LI_LN_EPS));
    for (int j = 0; j < H; j++) {
        const long at = li_ln_at(gate, j);
        LI_T v = ln[at] * ((a[at] - m) * inv) + bias[at];
        v = v < -clip ? -clip : (v > clip ? clip : v);
        a[at] = LI_ACT(kind, al, be, v);
    }
}

/* nb rows: Z (nb, 4Hp) stride ldz holds the input projection (overwritten: scratch);
 * R (nb, 4Hp) stride ldr the recurrent product, or NULL when Z already holds it; C
 * (nb, Hp) is updated in place, Hc (nb, Hp) receives o * act_h(c'). */
static void LI_LN_FN(li_ln_gates_rows)(int nb, int H, int Hp, LI_T *Z, long ldz,
                                       const LI_T *R, long ldr, const LI_T *bias,
                                       const LI_T *peep, const LI_T *ln, LI_T *C, long ldc,
                                       LI_T *Hc, long ldh, const li_acts *ac)
{
    const LI_T clip = (LI_T)ac->clip, cclip = (LI_T)ac->cell_clip;
    for (int b = 0; b < nb; b++) {
        LI_T *z = Z + b * ldz, *c = C + b * ldc, *hc = Hc + b * ldh;
        const LI_T *r = R ? R + b * ldr : NULL;
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < H; j++) {
                const long at = li_ln_at(k, j);
                LI_T v = z[at] + (r ? r[at] : (LI_T)0);
                if (peep && k < 2) v += peep[k * Hp + j] * c[j];
                z[at] = v;
            }
        LI_LN_FN(li_ln_gate)(z, 0, H, bias, ln, clip, ac->kf, ac->af, ac->bf);
        if (!ac->cifg) LI_LN_FN(li_ln_gate)(z, 1, H, bias, ln, clip, ac->kf, ac->af, ac->bf);
        LI_LN_FN(li_ln_gate)(z, 2, H, bias, ln, clip, ac->kg, ac->ag, ac->bg);
        for (int j = 0; j < H; j++) {
            const LI_T i = z[li_ln_at(0, j)], g = z[li_ln_at(2, j)];
            const LI_T f = ac->cifg ? (LI_T)1 - i : z[li_ln_at(1, j)];
            LI_T cn = f * c[j] + i * g;
            c[j] = cn < -cclip ? -cclip : (cn > cclip ? cclip : cn);
            if (peep) z[li_ln_at(3, j)] += peep[2 * Hp + j] * c[j];
        }
        LI_LN_FN(li_ln_gate)(z, 3, H, bias, ln, clip, ac->kf, ac->af, ac->bf);
        for (int j = 0; j < H; j++)
            hc[j] = z[li_ln_at(3, j)] * LI_ACT(ac->kh, ac->ah, ac->bh, c[j]);
        for (int j = H; j < Hp; j++) hc[j] = (LI_T)0;
    }
}

#undef LI_LN_FN
#undef LI_LN_CAT
#undef LI_LN_CAT2
