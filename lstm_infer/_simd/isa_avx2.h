/* Primitives of the AVX2 + FMA float32 kernels (LI_VW = 8: one ymm per vector).
 * Included by lstm_cell_impl.h inside its avx2 target region; every ISA file
 * defines the same functions (isa_generic.h documents them). */

/* max/min with x second: the NaN rule of isa_avx512.h */
static inline __attribute__((always_inline)) VF LI_FN(vmax)(VF a, VF x)
{
    return (VF)_mm256_max_ps((__m256)a, (__m256)x);
}

static inline __attribute__((always_inline)) VF LI_FN(vmin)(VF a, VF x)
{
    return (VF)_mm256_min_ps((__m256)a, (__m256)x);
}

static inline __attribute__((always_inline)) VF LI_FN(vround)(VF x)
{
    return (VF)_mm256_round_ps((__m256)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* p * 2^n for integral n in [-126, 127]: n + 127 into the exponent field. */
static inline __attribute__((always_inline)) VF LI_FN(vldexp)(VF p, VF n)
{
    VI e = (__builtin_convertvector(n, VI) + 127) << 23;
    return p * (VF)e;
}

/* 1 / d: rcp (12 bits) refined by two exact-residual Newton steps (see isa_avx512.h);
 * the textbook form r (2 - d r) here drifted a long sequence's cell state 6x further
 * from float64 than a float32 numpy LSTM (tests/test_unbiased_gates.py). */
static inline __attribute__((always_inline)) VF LI_FN(vrcp)(VF d)
{
    const __m256 one = _mm256_set1_ps(1.0f), dd = (__m256)d;
    __m256 r = _mm256_rcp_ps(dd);
    r = _mm256_fmadd_ps(r, _mm256_fnmadd_ps(dd, r, one), r);        /* ~23 bits */
    return (VF)_mm256_fmadd_ps(r, _mm256_fnmadd_ps(dd, r, one), r);
}

static inline __attribute__((always_inline)) VF LI_FN(ldw_bf16)(const void *W, long i)
{
    const long blk = i & ~31L, c0 = i & 31;
    const uint16_t *p = (const uint16_t *)W + blk + 2 * (c0 & 15);
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    return (VF)(c0 >= 16 ? _mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000))
                         : _mm256_slli_epi32(v, 16));
}

static inline __attribute__((always_inline)) VF LI_FN(ldw)(const void *W, long i, int wt)
{
    if (wt == LI_WT_F32)
        return LDV((const float *)W + i);
    if (wt == LI_WT_I8)
        return (VF)_mm256_cvtepi32_ps(
            _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)W + i))));
    if (wt == LI_WT_BF16)
        return LI_FN(ldw_bf16)(W, i);
    return (VF)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)W + i)));
}
