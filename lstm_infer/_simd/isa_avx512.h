/* Primitives of the AVX-512 float32 kernels (LI_VW = 16: one zmm per vector).
 * Included by lstm_cell_impl.h inside its avx512 target region; every ISA file
 * defines the same functions (isa_generic.h documents them). */

/* max(a, x) / min(a, x) with x second: x86 max/min return the second operand when
 * either is NaN, so clamps written max(lo, x), min(hi, x) let NaN through. */
static inline __attribute__((always_inline)) VF LI_FN(vmax)(VF a, VF x)
{
    return (VF)_mm512_max_ps((__m512)a, (__m512)x);
}

static inline __attribute__((always_inline)) VF LI_FN(vmin)(VF a, VF x)
{
    return (VF)_mm512_min_ps((__m512)a, (__m512)x);
}

/* x rounded to the nearest integer (ties to even). */
static inline __attribute__((always_inline)) VF LI_FN(vround)(VF x)
{
    return (VF)_mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* p * 2^n for integral n in [-127, 128]: one vscalefps. */
static inline __attribute__((always_inline)) VF LI_FN(vldexp)(VF p, VF n)
{
    return (VF)_mm512_scalef_ps((__m512)p, (__m512)n);
}

/* 1 / d: rcp14 refined by one Newton step r += r (1 - d r), ~1 ulp. The residual
 * 1 - d r is one FMA, so it is exact and the result rounds to either side of 1/d:
 * the textbook r (2 - d r) rounds 2 - d r near 1, where floats are twice as coarse
 * above 1 as below, and came out low by ~1/2 ulp on average -- a bias that a long
 * sequence with a large cell state accumulates (DESIGN §3: unbiased gate maths). */
static inline __attribute__((always_inline)) VF LI_FN(vrcp)(VF d)
{
    const __m512 one = _mm512_set1_ps(1.0f), dd = (__m512)d;
    __m512 r = _mm512_rcp14_ps(dd);                                 /* 14 bits */
    return (VF)_mm512_fmadd_ps(r, _mm512_fnmadd_ps(dd, r, one), r); /* ~28 bits */
}

/* 16 bfloat16 weights from a column-paired panel (see isa_generic.h). */
static inline __attribute__((always_inline)) VF LI_FN(ldw_bf16)(const void *W, long i)
{
    const long blk = i & ~31L, c0 = i & 31;
    const uint16_t *p = (const uint16_t *)W + blk + 2 * (c0 & 15);
    __m512i v = _mm512_loadu_si512((const void *)p);
    return (VF)(c0 >= 16 ? _mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000))
                         : _mm512_slli_epi32(v, 16));
}

/* 16 weights of type wt (LI_WT_*) from element i of a panel, widened to float32. */
static inline __attribute__((always_inline)) VF LI_FN(ldw)(const void *W, long i, int wt)
{
    if (wt == LI_WT_F32)
        return LDV((const float *)W + i);
    if (wt == LI_WT_I8)
        return (VF)_mm512_cvtepi32_ps(
            _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)W + i))));
    if (wt == LI_WT_BF16)
        return LI_FN(ldw_bf16)(W, i);
    return (VF)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)W + i)));
}
