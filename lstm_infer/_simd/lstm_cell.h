/* Step kernels for _kernels.pyx: gate maths and small-batch GEMV, with a
 * float32 SIMD path picked at run time.
 *
 * Why C and not Cython: run-time ISA dispatch needs per-function target
 * attributes (#pragma GCC target), which Cython cannot express. The build
 * itself uses no -march flag, so the extension loads on any x86-64; the
 * AVX2 and AVX-512 versions only run when the CPU reports them.
 *
 * Float64 has no SIMD path: it is the accuracy reference (libm exp/tanh,
 * ~1e-15), not a speed target.
 */
#ifndef LSTM_INFER_CELL_H
#define LSTM_INFER_CELL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lstm_abi.h" /* layout constants, codes, li_acts, kernel types */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LI_X86 1
#include <immintrin.h> /* intrinsics are usable inside the target regions below */
#endif

/* IEEE half -> float for the baseline path (no F16C): exact, incl. subnormals. */
static inline float li_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f)
        u = sign | 0x7f800000 | (man << 13); /* inf / nan */
    else if (exp)
        u = sign | ((exp + 112) << 23) | (man << 13);
    else if (man) { /* subnormal: normalise */
        int e = 113;
        while (!(man & 0x400)) { man <<= 1; e--; }
        u = sign | ((uint32_t)e << 23) | ((man & 0x3ff) << 13);
    } else
        u = sign;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Threads in the current parallel region (1 when built without OpenMP). */
#ifdef _OPENMP
#include <omp.h>
static inline int li_team_size(void) { return omp_get_num_threads(); }
#else
static inline int li_team_size(void) { return 1; }
#endif

/* A spin barrier for the threads that split one sequence's steps (sense
 * reversing). A waiter spins with `pause` (which also yields the core to a
 * hyperthread sibling) for LI_SPIN_BEFORE_YIELD rounds, about a step of a small
 * layer, then calls sched_yield, so an oversubscribed machine still moves. */
#include <sched.h>
#define LI_SPIN_BEFORE_YIELD 20000
typedef struct {
    int count, sense, n;
} li_barrier;

static inline void li_barrier_wait(li_barrier *b, int *local_sense)
{
    const int s = !*local_sense;
    *local_sense = s;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, s, __ATOMIC_RELEASE);
        return;
    }
    for (long spin = 0; __atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != s; spin++) {
#ifdef LI_X86
        __builtin_ia32_pause();
#endif
        if (spin > LI_SPIN_BEFORE_YIELD) sched_yield();
    }
}

/* bf16 compute mode: dst = src rounded to bfloat16 (nearest even), kept in float32
 * (the value a bf16 GEMM would consume; NaN stays NaN). Portable integer code. */
static inline void li_round_bf16(const float *src, float *dst, long n)
{
    for (long j = 0; j < n; j++) {
        uint32_t u;
        memcpy(&u, src + j, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u)
            u |= 0x00400000u; /* quiet NaN: its payload may be in the low half */
        else
            u += 0x7fffu + ((u >> 16) & 1u);
        u &= 0xffff0000u;
        memcpy(dst + j, &u, 4);
    }
}

/* 64-byte aligned workspace (so vector loads never straddle cache lines). */
static inline void *li_alloc64(size_t nbytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, nbytes ? nbytes : 64) != 0) return NULL;
    return p;
}

/* ------------------------------------------------------------ float32, per ISA */

#define LI_SFX generic
#define LI_MB 1
#define LI_VW 4
#define LI_ISA "isa_generic.h"
#include "lstm_cell_impl.h"
#undef LI_SFX
#undef LI_MB
#undef LI_VW
#undef LI_ISA

#ifdef LI_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define LI_SFX avx2
#define LI_MB 1
#define LI_VW 8
#define LI_NARROW 1 /* multi-row GEMM tiles are 6 rows x 16 columns (panel_mm_narrow) */
#define LI_ISA "isa_avx2.h"
#include "lstm_cell_impl.h"
#undef LI_NARROW
#undef LI_SFX
#undef LI_MB
#undef LI_VW
#undef LI_ISA
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")
#define LI_SFX avx512
#define LI_MB 6
#define LI_VW 16
#define LI_ISA "isa_avx512.h"
#include "lstm_cell_impl.h"
#undef LI_SFX
#undef LI_MB
#undef LI_VW
#undef LI_ISA
#pragma GCC pop_options
#endif


#include "lstm_int8.h"

/* ------------------------------------------------------------ float64 (reference accuracy) */
static inline double li_act_f64(int kind, double alpha, double beta, double v)
{
    switch (kind) {
    case LI_ACT_SIGMOID: return 1.0 / (1.0 + exp(-v));
    case LI_ACT_TANH: return tanh(v);
    case LI_ACT_RELU: return v > 0.0 ? v : 0.0;
    case LI_ACT_HARD_SIGMOID: {
        double t = alpha * v + beta;
        t = t < 0.0 ? 0.0 : t;
        return t > 1.0 ? 1.0 : t;
    }
    default: return v;
    }
}

static inline double li_clamp_f64(double v, double lim)
{
    v = v < -lim ? -lim : v;
    return v > lim ? lim : v;
}

/* Gate pass over nb rows (float64 path): Z (nb, 4Hp) row stride ldz holds
 * x W_ih^T + h W_hh^T in interleaved groups of 16 units; C (nb, Hp) is updated
 * in place, Hc (nb, Hp) receives o * act_h(c). */
static void li_gates_rows_f64(int nb, int Hp, const double *Z, long ldz, const double *bias,
                              const double *peep, double *C, long ldc, double *Hc, long ldh,
                              const li_acts *a)
{
    const double clip = a->clip, cclip = a->cell_clip;
    for (int b = 0; b < nb; b++)
        for (int j = 0; j < Hp; j++) {
            const long zg = (j / LI_GROUP) * LI_PANEL + (j % LI_GROUP);
            const double *z = Z + b * ldz;
            double *c = C + b * ldc + j;
            double pi = peep ? peep[j] : 0.0, pf = peep ? peep[Hp + j] : 0.0;
            double po = peep ? peep[2 * Hp + j] : 0.0;
            double i = li_act_f64(a->kf, a->af, a->bf, li_clamp_f64(z[zg] + bias[zg] + pi * *c, clip));
            double f = a->cifg ? 1.0 - i
                               : li_act_f64(a->kf, a->af, a->bf,
                                            li_clamp_f64(z[zg + 16] + bias[zg + 16] + pf * *c, clip));
            double g = li_act_f64(a->kg, a->ag, a->bg, li_clamp_f64(z[zg + 32] + bias[zg + 32], clip));
            double cn = li_clamp_f64(f * *c + i * g, cclip);
            *c = cn;
            double o = li_act_f64(a->kf, a->af, a->bf,
                                  li_clamp_f64(z[zg + 48] + bias[zg + 48] + po * cn, clip));
            Hc[b * ldh + j] = o * li_act_f64(a->kh, a->ah, a->bh, cn);
        }
}

#include "lstm_layernorm.h" /* the layer-norm gate pass (float32, float64) */

#endif
