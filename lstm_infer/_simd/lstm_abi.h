/* The Python/C contract of lstm_infer: every constant of the packed layout, every
 * code, and every type that crosses from _kernels.pyx into the C kernels is written
 * here and only here. _kernels.pxd declares this header for Cython, and the
 * extension exports the constants to Python (_kernels.GROUP, .PANEL, ...), which
 * packs the weights with them (lstm_infer/_packing.py).
 *
 * Packed layout (float32 kernels; see the Design block of _kernels.pyx):
 *   gate rows are interleaved in groups of LI_GROUP hidden units,
 *       [i(16) f(16) g(16) o(16)] [i(16) f(16) g(16) o(16)] ...   (4*Hp rows)
 *   so one group is LI_PANEL = 4 * LI_GROUP gate rows, and a weight panel holds
 *   W^T for one group: (Hp/16, K, 64). Hp = H rounded up to LI_GROUP.
 *   int8 ("int8" compute mode) panels: (Hp/16, K4, 64, 4), K4 = K padded to
 *   LI_Q8_KPAD (one AMX tile row of u8 activations) / 4.
 *   bf16 panels pair columns c and c + 16 of each 32-column half in one 32-bit word.
 *   Every packed array and workspace buffer starts on an LI_ALIGN-byte boundary.
 */
#ifndef LSTM_INFER_ABI_H
#define LSTM_INFER_ABI_H

#include <stdint.h>

#define LI_GROUP 16              /* hidden units per interleaved gate group */
#define LI_PANEL (4 * LI_GROUP)  /* gate rows per group = columns of a panel */
#define LI_Q8_KPAD 64            /* int8 mode: K padded to a multiple of this */
#define LI_ALIGN 64              /* bytes: packed arrays and workspace buffers */
#define LI_MAX_LAYERS 64         /* layers of one stack (a fixed array in the driver) */

/* activation kinds (config.Activation.code) */
#define LI_ACT_SIGMOID 0
#define LI_ACT_TANH 1
#define LI_ACT_RELU 2
#define LI_ACT_LINEAR 3
#define LI_ACT_HARD_SIGMOID 4
#define LI_NACT 5

/* weight element types of the packed panels (float32 maths); LI_WT_Q8 is the "int8"
 * compute mode (u8 activations x int8 weights, int32 accumulation), whose panels are
 * the k-quad layout above */
#define LI_WT_F32 0
#define LI_WT_I8 1
#define LI_WT_F16 2
#define LI_WT_BF16 3
#define LI_NWT 4     /* weight types of the float32 step/gemm tables */
#define LI_WT_Q8 4

/* SIMD levels of the float32 kernels, in order */
#define LI_LEVEL_GENERIC 0
#define LI_LEVEL_AVX2 1
#define LI_LEVEL_AVX512 2
#define LI_NLEVEL 3

/* Activations and clips of one layer direction. */
typedef struct {
    int kf, kg, kh;     /* activation kinds: gates (i, f, o), cell input g, output h */
    /* double so float64 models see the exact constants; float kernels round once */
    double af, bf, ag, bg, ah, bh; /* hard_sigmoid alpha/beta per activation */
    double clip;        /* gate pre-activation clip (ONNX), +inf if none */
    double cell_clip;   /* cell state clip (TF1), +inf if none */
    int cifg;           /* input_forget: f = 1 - i */
    double proj_clip;   /* projection output clip (TFLite), +inf if none; the driver applies it */
} li_acts;

/* ---------------------------------------------------------------- kernel types */
/* Recurrent step over M rows and NG gate groups: Z (M, 64 NG) row stride ldz holds the
 * step's input projection; adds H (M, K) row stride ldh times the W panels (scales sc
 * for int8 weights), then the gates: bias, peep (3, Hp), C (M, Hp) in place, Hc out. */
typedef void (*li_step_fn)(int M, int NG, int Hp, int K, float *Z, long ldz, const void *W,
                           const float *sc, const float *H, long ldh, const float *bias,
                           const float *peep, float *C, long ldc, float *Hc, long ldhc,
                           const li_acts *a, int flip);
/* Y (M, 64 NG) = X (M, K) @ panels (the input projection of a time block). */
typedef void (*li_gemm_fn)(int M, int NG, int K, const float *X, long ldx, const void *W,
                           const float *sc, float *Y, long ldy);
/* Y (M, 16 NP) = X (M, K) @ 16-wide panels (the projection W_hr at small batch). */
typedef void (*li_gemv_pan16_fn)(int M, int NP, int K, const float *W, const float *X,
                                 long ldx, float *Y, long ldy);
/* int8 mode: Y (+)= dequant(Q u8 (M, 4 K4) @ Wq) [+ the gates when gated]. */
typedef void (*li_q8_mm_fn)(int M, int NG, int K4, const uint8_t *Q, long ldq, const float *sx,
                            const int8_t *Wq, const int32_t *colsum, const float *sw, float *Y,
                            long ldy, int zero_init, int gated, const float *bias,
                            const float *peep, int Hp, float *C, long ldc, float *Hc, long ldh,
                            const li_acts *a, int flip);
/* int8 mode: quantize M rows of K floats to u8 (zero point 128) with per-row scales. */
typedef void (*li_quant_fn)(int M, int K, const float *X, long ldx, uint8_t *Q, long ldq,
                            float *scale);

/* One SIMD level's float32 kernels; step/gemm indexed by weight type LI_WT_*. */
typedef struct {
    li_step_fn step[LI_NWT];
    li_gemm_fn gemm[LI_NWT];
    li_gemv_pan16_fn gemv_pan16;
} li_kernels_f32;

#endif
