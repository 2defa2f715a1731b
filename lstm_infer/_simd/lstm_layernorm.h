/* Gate pass of the layer-normalised LSTM (TFLite's variant), float32 and float64.
 *
 * Design
 * ======
 * Layer norm needs every unit of a gate before any of them can be activated
 * (mean and variance over the H units), so it cannot be fused into the tiled
 * step kernels, which gate 16 units at a time while the accumulators are still
 * in registers. A layer-norm step therefore runs in two passes: the recurrent
 * GEMM into a scratch block (the float32 panel GEMM of the weight type, or the
 * int8 product, or BLAS for float64), then this pass per row:
 *
 *   a_k = Z_k + R_k (+ p_k * c for i, f)       k = i, f, g  (Z: input projection)
 *   a_k = ln_k * (a_k - mean(a_k)) / sqrt(var(a_k) + LI_LN_EPS) + b_k ; clip ; act
 *   c' = cell_clip(f * c + i * g)   (f = 1 - i with input_forget)
 *   a_o = Z_o + R_o + p_o * c' ; normalised the same way ; o = act ; Hc = o * act_h(c')
 *
 * which is lstm_eval.cc's order (peephole before the normalisation, the bias
 * after it; eps 1e-8; population variance). The mean and variance are summed
 * in double, in unit order: a row's result depends on nothing but the row
 * (DESIGN §4's determinism), and stays within float32's accuracy for any H.
 * This pass is O(4H) per row and step against the GEMM's O(4H * K): it is
 * portable C, not SIMD.
 *
 * Layout: Z, R and the bias / ln coefficients are interleaved rows (groups of
 * 16 units, [i f g o] x 16 per group: unit j of gate k at (j/16)*64 + k*16 +
 * j%16); C, Hc are (nb, Hp); units H..Hp-1 are padding (Hc gets 0 there).
 */
#ifndef LSTM_INFER_LAYERNORM_H
#define LSTM_INFER_LAYERNORM_H

#include <math.h>

#include "lstm_abi.h"

#define LI_LN_EPS 1e-8

static inline long li_ln_at(int gate, int j)
{
    return (long)(j / LI_GROUP) * LI_PANEL + gate * LI_GROUP + j % LI_GROUP;
}

#define LI_T float
#define LI_SFX f32
/* the one scalar activation (lstm_cell.h's li_act_f64), rounded once: this pass is
 * O(4H) per row and step, not worth a float copy of it */
#define LI_ACT(kind, al, be, v) ((float)li_act_f64(kind, al, be, (double)(v)))
#include "lstm_layernorm_impl.h"
#undef LI_T
#undef LI_SFX
#undef LI_ACT

#define LI_T double
#define LI_SFX f64
#define LI_ACT(kind, al, be, v) li_act_f64(kind, al, be, v)
#include "lstm_layernorm_impl.h"
#undef LI_T
#undef LI_SFX
#undef LI_ACT

#endif
