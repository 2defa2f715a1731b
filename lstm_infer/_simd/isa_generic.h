/* Primitives of the baseline float32 kernels (LI_VW = 4): SSE2 on x86-64 (every
 * x86-64 CPU has it), plain C on GCC vector types elsewhere. The reference for what
 * every ISA file defines, on VF (LI_VW floats), VI (LI_VW int32):
 *
 *   vmax(a, x), vmin(a, x)  lane-wise max/min; x is returned when either is NaN
 *   vround(x)               to the nearest integer, ties to even
 *   vldexp(p, n)            p * 2^n for integral n in [-126, 127]
 *   vrcp(d)                 1 / d within ~1 ulp, unbiased (rounds to either side)
 *   ldw(W, i, wt)           LI_VW weights of type wt (LI_WT_*) at element i, as floats
 *   ldw_bf16(W, i)          LI_VW bfloat16 weights of a column-paired panel: per 32
 *                           columns, word l = column l | column 16 + l << 16 (see
 *                           _packing.pair_bf16_columns), so one shift (low halves) or
 *                           mask (high halves) of one load widens them on any width
 */

static inline __attribute__((always_inline)) VF LI_FN(vmax)(VF a, VF x)
{
#ifdef LI_X86
    return (VF)_mm_max_ps((__m128)a, (__m128)x);
#else
    for (int l = 0; l < LI_VW; l++) x[l] = a[l] > x[l] ? a[l] : x[l];
    return x;
#endif
}

static inline __attribute__((always_inline)) VF LI_FN(vmin)(VF a, VF x)
{
#ifdef LI_X86
    return (VF)_mm_min_ps((__m128)a, (__m128)x);
#else
    for (int l = 0; l < LI_VW; l++) x[l] = a[l] < x[l] ? a[l] : x[l];
    return x;
#endif
}

/* round to nearest by adding and removing 1.5 * 2^23 (exact for |x| < 2^22) */
static inline __attribute__((always_inline)) VF LI_FN(vround)(VF x)
{
    return (x + 12582912.0f) - 12582912.0f;
}

static inline __attribute__((always_inline)) VF LI_FN(vldexp)(VF p, VF n)
{
    VI e = (__builtin_convertvector(n, VI) + 127) << 23;
    return p * (VF)e;
}

/* a correctly rounded division: no estimate instruction to refine here */
static inline __attribute__((always_inline)) VF LI_FN(vrcp)(VF d)
{
    return 1.0f / d;
}

static inline __attribute__((always_inline)) VF LI_FN(ldw_bf16)(const void *W, long i)
{
    const long blk = i & ~31L, c0 = i & 31;
    const int hi = c0 >= 16;
    const uint16_t *p = (const uint16_t *)W + blk + 2 * (c0 & 15);
#ifdef LI_X86
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    return (VF)(hi ? _mm_and_si128(v, _mm_set1_epi32((int)0xFFFF0000)) : _mm_slli_epi32(v, 16));
#else
    VF r;
    for (int l = 0; l < LI_VW; l++) {
        uint32_t u = (uint32_t)p[2 * l + hi] << 16;
        memcpy(&r[l], &u, 4);
    }
    return r;
#endif
}

static inline __attribute__((always_inline)) VF LI_FN(ldw)(const void *W, long i, int wt)
{
    if (wt == LI_WT_F32)
        return LDV((const float *)W + i);
    if (wt == LI_WT_BF16)
        return LI_FN(ldw_bf16)(W, i);
#ifdef LI_X86
    if (wt == LI_WT_I8) {
        int32_t v;
        memcpy(&v, (const int8_t *)W + i, 4);
        __m128i b = _mm_cvtsi32_si128(v);
        __m128i w = _mm_srai_epi16(_mm_unpacklo_epi8(b, b), 8);
        return (VF)_mm_cvtepi32_ps(_mm_srai_epi32(_mm_unpacklo_epi16(w, w), 16));
    }
#endif
    VF r;
    for (int l = 0; l < LI_VW; l++)
        r[l] = wt == LI_WT_I8 ? (float)((const int8_t *)W)[i + l]
                              : li_half_to_float(((const uint16_t *)W)[i + l]);
    return r;
}
