/* The one place that decides which kernels run (MLAS's MLAS_PLATFORM pattern).
 *
 * li_probe_cpu() reads the CPU once: cpuid for the instruction sets, XCR0 (xgetbv)
 * for the register state the OS saves (an AVX-512 CPU under an OS or hypervisor
 * that does not save zmm state must not run AVX-512 code), and, for AMX, Linux's
 * permission for the tile state (arch_prctl ARCH_REQ_XCOMP_PERM). li_platform_for()
 * then fills one dispatch table -- float32 kernels per weight type, the int8 GEMM,
 * the activation quantizer -- for a level at most the CPU's. Nothing else in the
 * tree tests a CPU feature; kernels are called only through this table.
 *
 * Adding an ISA (e.g. ARM NEON):
 *   1. isa_neon.h: the primitives (VF type for 4 floats, LDV/STV, vmax, vmin, vexp,
 *      vrcp, the widening loads), following isa_generic.h;
 *   2. lstm_cell.h: include lstm_cell_impl.h once more with LI_SFX neon, LI_VW 4 and
 *      LI_ISA "isa_neon.h" (inside #ifdef __aarch64__);
 *   3. here: a LI_LEVEL_NEON, its probe (getauxval(AT_HWCAP) & HWCAP_ASIMD), and one
 *      branch in li_platform_for() (the int8 mode takes the portable kernels until it
 *      has its own).
 */
#ifndef LSTM_INFER_PLATFORM_H
#define LSTM_INFER_PLATFORM_H

#include "lstm_cell.h"

#ifdef LI_X86
#include <cpuid.h>
#endif
#if defined(LI_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define LI_ARCH_REQ_XCOMP_PERM 0x1023 /* arch_prctl: ask for an extended state */
#define LI_XFEATURE_XTILEDATA 18      /* ... the AMX tile data */
#endif

typedef struct {
    int avx2;        /* AVX2 + FMA + F16C, with ymm state saved by the OS */
    int avx512;      /* AVX-512 F, VL, BW, DQ, with zmm and opmask state saved */
    int avx512_vnni; /* vpdpbusd (the int8 mode's AVX-512 kernel and its quantizer) */
    int avx512_bf16; /* vdpbf16ps */
    int amx_int8;    /* AMX tiles with int8, tile state saved and granted by Linux */
    int amx_bf16;
} li_cpu_features;

#ifdef LI_X86
static unsigned long long li_xcr0(void)
{
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

static li_cpu_features li_probe_cpu(void)
{
    li_cpu_features f = {0, 0, 0, 0, 0, 0};
#ifdef LI_X86
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave) return f;
    const unsigned long long xcr0 = li_xcr0();
    const int ymm_saved = (xcr0 & 0x6) == 0x6;          /* SSE + AVX state */
    const int zmm_saved = (xcr0 & 0xe6) == 0xe6;        /* + opmask, zmm hi256, hi16 zmm */
    const int tiles_saved = (xcr0 & 0x60000) == 0x60000; /* XTILECFG + XTILEDATA */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    const unsigned int b7 = b, c7 = c, d7 = d;
    unsigned int a71 = 0;
    if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) a71 = a;
    f.avx2 = ymm_saved && fma && f16c && ((b7 >> 5) & 1);
    f.avx512 = f.avx2 && zmm_saved && ((b7 >> 16) & 1) /* F */ && ((b7 >> 17) & 1) /* DQ */ &&
               ((b7 >> 30) & 1) /* BW */ && ((b7 >> 31) & 1) /* VL */;
    f.avx512_vnni = f.avx512 && ((c7 >> 11) & 1);
    f.avx512_bf16 = f.avx512 && ((a71 >> 5) & 1);
    const int amx_tile = (d7 >> 24) & 1;
#ifdef __linux__
    /* Linux hands out the tile state on request, once per process */
    const int granted = amx_tile && tiles_saved && f.avx512_vnni &&
                        syscall(SYS_arch_prctl, LI_ARCH_REQ_XCOMP_PERM,
                                LI_XFEATURE_XTILEDATA) == 0;
#else
    const int granted = 0;
#endif
    f.amx_int8 = granted && ((d7 >> 25) & 1);
    f.amx_bf16 = granted && ((d7 >> 22) & 1);
#endif
    return f;
}

/* The best float32 level this CPU runs. */
static int li_best_level(const li_cpu_features *f)
{
    return f->avx512 ? LI_LEVEL_AVX512 : f->avx2 ? LI_LEVEL_AVX2 : LI_LEVEL_GENERIC;
}

typedef struct {
    int level;           /* LI_LEVEL_* of the float32 kernels */
    int amx;             /* the int8 mode uses AMX tiles (from LI_AMX_MIN_ROWS rows) */
    li_kernels_f32 f32;  /* float32 maths: step and block GEMM per weight type */
    li_q8_mm_fn q8;      /* int8 mode: u8 x int8 GEMM (+ gates) */
    li_q8_mm_fn q8_full; /* the same for panels holding -128 (AVX2: q8 cannot take them) */
    li_quant_fn quant;   /* int8 mode: activation quantizer (same bytes on every path) */
} li_platform;

#define LI_TABLE(SFX)                                                                 \
    do {                                                                              \
        p.f32.step[LI_WT_F32] = li_step_f32_##SFX; p.f32.step[LI_WT_I8] = li_step_i8_##SFX; \
        p.f32.step[LI_WT_F16] = li_step_f16_##SFX;                                    \
        p.f32.step[LI_WT_BF16] = li_step_bf16_##SFX;                                  \
        p.f32.gemm[LI_WT_F32] = li_gemm_f32_##SFX; p.f32.gemm[LI_WT_I8] = li_gemm_i8_##SFX; \
        p.f32.gemm[LI_WT_F16] = li_gemm_f16_##SFX;                                    \
        p.f32.gemm[LI_WT_BF16] = li_gemm_bf16_##SFX;                                  \
        p.f32.gemv_pan16 = li_gemv_pan16_f32_##SFX;                                   \
    } while (0)

/* The kernels for `level` (capped at what `f` supports); AMX only if `use_amx`. */
static li_platform li_platform_for(const li_cpu_features *f, int level, int use_amx)
{
    li_platform p;
    const int best = li_best_level(f);
    p.level = level < best ? level : best;
    p.amx = 0;
    LI_TABLE(generic);
    p.q8 = p.q8_full = li_q8_mm_generic_flip;
    p.quant = li_quant_rows_u8;
#ifdef LI_X86
    if (p.level >= LI_LEVEL_AVX2) {
        LI_TABLE(avx2);
        p.q8 = li_q8_mm_avx2s;
        p.q8_full = li_q8_mm_avx2;
    }
    if (p.level >= LI_LEVEL_AVX512) {
        LI_TABLE(avx512);
        if (f->avx512_vnni) { /* both int8 kernels are compiled for avx512vnni */
            p.q8 = p.q8_full = li_q8_mm_vnni;
            p.quant = li_quant_rows_u8_avx512;
        }
#ifdef LI_HAVE_AMX_BUILD
        if (use_amx && f->amx_int8) {
            p.q8 = p.q8_full = li_q8_mm_amx_or_vnni;
            p.amx = 1;
        }
#endif
    }
#endif
    (void)use_amx;
    return p;
}
#undef LI_TABLE

#endif
