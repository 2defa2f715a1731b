# The C side of the Python/C contract, declared once for Cython (_kernels.pyx
# cimports this file automatically). The values live in _simd/lstm_abi.h; the
# extension re-exports them to Python (GROUP, PANEL, WEIGHT_TYPES, ...).
from libc.stdint cimport int8_t, int32_t, uint8_t


cdef extern from "lstm_abi.h" nogil:
    enum:
        LI_GROUP
        LI_PANEL
        LI_Q8_KPAD
        LI_ALIGN
        LI_MAX_LAYERS
        LI_ACT_SIGMOID
        LI_ACT_TANH
        LI_ACT_RELU
        LI_ACT_LINEAR
        LI_ACT_HARD_SIGMOID
        LI_WT_F32
        LI_WT_I8
        LI_WT_F16
        LI_WT_BF16
        LI_NWT
        LI_WT_Q8
        LI_LEVEL_GENERIC
        LI_LEVEL_AVX2
        LI_LEVEL_AVX512

    ctypedef struct li_acts:
        int kf, kg, kh
        double af, bf, ag, bg, ah, bh
        double clip, cell_clip
        int cifg
        double proj_clip

    ctypedef void (*li_step_fn)(int M, int NG, int Hp, int K, float *Z, long ldz, const void *W,
                                const float *sc, const float *H, long ldh, const float *bias,
                                const float *peep, float *C, long ldc, float *Hc, long ldhc,
                                const li_acts *a, int flip) noexcept nogil
    ctypedef void (*li_gemm_fn)(int M, int NG, int K, const float *X, long ldx, const void *W,
                                const float *sc, float *Y, long ldy) noexcept nogil
    ctypedef void (*li_gemv_pan16_fn)(int M, int NP, int K, const float *W, const float *X,
                                      long ldx, float *Y, long ldy) noexcept nogil
    ctypedef void (*li_q8_mm_fn)(int M, int NG, int K4, const uint8_t *Q, long ldq,
                                 const float *sx, const int8_t *Wq, const int32_t *colsum,
                                 const float *sw, float *Y, long ldy, int zero_init, int gated,
                                 const float *bias, const float *peep, int Hp, float *C,
                                 long ldc, float *Hc, long ldh, const li_acts *a,
                                 int flip) noexcept nogil
    ctypedef void (*li_quant_fn)(int M, int K, const float *X, long ldx, uint8_t *Q, long ldq,
                                 float *scale) noexcept nogil
    ctypedef struct li_kernels_f32:
        li_step_fn step[LI_NWT]
        li_gemm_fn gemm[LI_NWT]
        li_gemv_pan16_fn gemv_pan16


cdef extern from "platform.h" nogil:
    ctypedef struct li_cpu_features:
        int avx2, avx512, avx512_vnni, avx512_bf16, amx_int8, amx_bf16
    ctypedef struct li_platform:
        int level
        int amx
        li_kernels_f32 f32
        li_q8_mm_fn q8
        li_q8_mm_fn q8_full
        li_quant_fn quant
    li_cpu_features li_probe_cpu()
    int li_best_level(const li_cpu_features *f)
    li_platform li_platform_for(const li_cpu_features *f, int level, int use_amx)

    # helpers of lstm_cell.h
    void* li_alloc64(size_t nbytes)
    void li_round_bf16(const float *src, float *dst, long n)
    ctypedef struct li_barrier:
        int count, sense, n
    void li_barrier_wait(li_barrier* b, int* local_sense)
    int li_team_size()
    void li_gates_rows_f64(int nb, int Hp, const double *Z, long ldz, const double *bias,
                           const double *peep, double *C, long ldc, double *Hc, long ldh,
                           const li_acts *a)
    # lstm_layernorm.h
    void li_ln_gates_rows_f32(int nb, int H, int Hp, float *Z, long ldz, const float *R,
                              long ldr, const float *bias, const float *peep, const float *ln,
                              float *C, long ldc, float *Hc, long ldh, const li_acts *a)
    void li_ln_gates_rows_f64(int nb, int H, int Hp, double *Z, long ldz, const double *R,
                              long ldr, const double *bias, const double *peep,
                              const double *ln, double *C, long ldc, double *Hc, long ldh,
                              const li_acts *a)
