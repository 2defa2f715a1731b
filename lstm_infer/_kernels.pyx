# cython: language_level=3
"""nogil LSTM kernels: BLAS wrappers, the recurrent driver, and the glue to the
C step kernels in _simd/lstm_cell.h.

Design
======
Per layer and direction, with canonical gate order i, f, g, o:

    z_t = x_t W_ih^T + h_{t-1} W_hh^T + b
    i = act_f(z_i + p_i*c), f = act_f(z_f + p_f*c) (or 1 - i), g = act_g(z_g)
    c_t = f*c + i*g ;  o = act_f(z_o + p_o*c_t) ;  h_t = o*act_h(c_t) [; h_t = h_t W_hr^T]

Schedule (ONNX Runtime / oneDNN "two GEMM" schedule):
  1. input projection for a block of Tb steps: G = X_blk W_ih^T
       - float32: li_gemm_*, our register-blocked GEMM on W_ih packed once
         (BLAS would repack W_ih on every block call: measured 2x slower here)
       - float64: BLAS ?gemm
  2. per step: z = G_t + h W_hh^T, then the gates
       - float32: li_step_*, the same GEMM kernel with the gates fused per
         tile (rows x 16 units x 4 gates): the pre-activations are gated while
         still in registers/L1; at batch 1 it is a GEMV bound by L2 bandwidth
       - float64: BLAS GEMM into G_t, then li_gates_rows_f64
  3. projection (proj_size): float32: own kernel on 16-wide W_hr panels, rows
     independent at any batch; float64: BLAS GEMM
  Layer norm (ln_* weights, TFLite's variant): step 2 in two passes -- the recurrent
  product alone into a (rows, 4Hp) scratch block (the same panel GEMM / int8 product /
  BLAS), then li_ln_gates_rows (lstm_layernorm.h), since a gate's mean and variance
  need all its units; such layers are never split across threads.
Tb is chosen so the block's workspace stays small (64 KB when the layer's
weights fit in half the L2, else 4 MB): it never grows with T.

The bf16 compute mode stores both matrices as bf16 and rounds x (on its way into the
gathered block) and h (into a per-task buffer) to bf16 before the GEMMs, then runs the
bf16-storage kernels below: every bf16 x bf16 product is exact in float32, so this is
what tdpbf16ps / vdpbf16ps compute, up to their summation order.

Weight storage modes (int8-weights, float16-, bfloat16-weights) keep float32 maths: the
same kernels read int8 / half panels and widen them in registers (li_step_i8 ...),
int8 with a per-output-row scale applied to the accumulators. bfloat16 panels pair
columns c and c + 16 of each 32-column half in one 32-bit word, so one shift (low
halves) or mask (high halves) of a single load widens a vector on every ISA.

The int8 compute mode quantizes activations too: x and h rows become u8 with zero
point 128 and a per-row scale (amax / 127) at each block / step; weights are int8
per output row in k-quad panels (Hp/16, K4, 64, 4), K padded to LI_Q8_KPAD = 64,
the layout vpdpbusd consumes and, unchanged, the AMX B-tile layout. Accumulation
is exact int32 on every path (portable C, AVX2 vpmaddubsw sign trick, AVX-512 VNNI,
AMX tiles from 8 rows): sum q w - colsum, with colsum = 128 * column sums
precomputed at pack time, then dequantized ((acc - colsum) * s_x) * s_w and gated
in float32.

Buffers (all row-major, dtype T; the layout constants live in _simd/lstm_abi.h):
  float32: w_ih_pan (Hp/16, I, 64), w_hh_pan (Hp/16, Kh, 64): per group of 16
           units, the 64 gate rows [i f g o] x 16 transposed into a panel
  int8 mode: w_*_pan (Hp/16, K4, 64, 4) int8, w_*_colsum (4Hp,) int32, w_*_scale (4Hp,)
  float64: w_ih (4Hp, I), w_hh (4Hp, Kh): the same rows, row-major, for BLAS
  Kh = Pp (projected) or Hp
  bias     (4Hp,) ; peep (3, Hp) = p_i, p_f, p_o ; w_hr (Pp, Hp) ; w_hr_pan (Pp/16, Hp, 16)
  Hp = H rounded up to 16, Pp = P rounded up to 16; padded units have zero
  weights in and out, so they never influence real units.
  Workspace of a task (WsLayout): gathered x rows | block projection G | h ping-pong |
  c | o*act(c) | int8 mode: u8 rows and their scales; bounded by the time block.

Code map: platform.h decides the ISA once (li_platform: f32 kernels per weight type,
int8 GEMM, quantizer); _plan decides the schedule (slices, time block, per layer
serial / tasks / split; LSTM.plan shows it); _run_task runs one task as ONNX
Runtime's UniDirectionalLstm does: _init_state, then per block _project_block, per
step _step and _store_rows, with its kernels chosen once (_choose_kernels).

Parallelism: a layer is split into tasks (direction x batch slice), each an
independent time loop, run on OpenMP threads; no per-step synchronisation. When
there are more threads than tasks and the one task is a small batch (< 8 rows:
batch 1 is the latency case), its gate groups are split between the threads
instead: each computes its columns of the input projection (part 0 gathers the
rows first) and its units of every step, then (projected layers) its column
groups of h = Hc W_hr^T, and the threads meet at a spin barrier after the step
(and before the projection, which reads every unit of Hc). Each unit is computed
by one thread exactly as the serial kernels would: results do not change.
Batches are sorted by length (descending) in Python, so the rows still active
at step s are a prefix of each slice (as in cuDNN packed sequences).
Reverse directions read x[len_b - 1 - s] for row b at step s: each sequence
is reversed within its own span.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport free
from libc.string cimport memcpy, memset
from libc.limits cimport INT_MAX
from libc.math cimport INFINITY
from libc.stdint cimport uint32_t, uint64_t
cimport scipy.linalg.cython_blas as blas
cimport numpy as cnp

cnp.import_array()

import os

ctypedef fused floating:
    float
    double

# ---------------------------------------------------------------- the Python/C contract
# (values from _simd/lstm_abi.h, declared in _kernels.pxd; _packing.py packs with them)
GROUP = LI_GROUP                  # hidden units per interleaved gate group
PANEL = LI_PANEL                  # gate rows per group = columns of a weight panel
Q8_KPAD = LI_Q8_KPAD              # int8 mode: K padded to a multiple of this
ALIGN = LI_ALIGN                  # bytes: alignment of packed arrays and workspaces
MAX_NUM_LAYERS = LI_MAX_LAYERS
# weight type of a float32-kernel panel; "int8" is the int8 compute mode
WEIGHT_TYPES = {"float32": LI_WT_F32, "int8-weights": LI_WT_I8, "float16-weights": LI_WT_F16,
                "bfloat16-weights": LI_WT_BF16, "int8": LI_WT_Q8}
ACTIVATION_CODES = {"sigmoid": LI_ACT_SIGMOID, "tanh": LI_ACT_TANH, "relu": LI_ACT_RELU,
                    "linear": LI_ACT_LINEAR, "hard_sigmoid": LI_ACT_HARD_SIGMOID}

# ---------------------------------------------------------------- calls in flight
# _threads' bookkeeping, here so that a small call (model._planned_call) pays a C
# increment rather than a Python lock: the counter changes only while the caller
# holds the GIL, with no Python code in between, which makes each change atomic.
cdef extern from *:
    """
    #include <sched.h>
    #include <time.h>
    #include <unistd.h>
    /* CPUs this process may run on, re-read at most every 50 ms (the syscall was a
     * tenth of a T=1 call's overhead): what os.sched_getaffinity(0) counts (Linux;
     * elsewhere, or past CPU_SETSIZE CPUs, the online CPUs). */
    static int li_cores_cached(void)
    {
        static int cores = 0;
        static double last = 0.0;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        const double t = ts.tv_sec + 1e-9 * ts.tv_nsec;
        if (cores == 0 || t - last > 0.05) {
            int n = 0;
    #ifdef __linux__
            cpu_set_t set;
            CPU_ZERO(&set);
            n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    #endif
            if (n < 1) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
            cores = n < 1 ? 1 : n;
            last = t;
        }
        return cores;
    }
    """
    int li_cores_cached() nogil

cdef int _in_flight = 0         # forward calls running now
cdef int _default_threads = 0   # li.set_num_threads' value; 0: every available core


def available_cores():
    """CPUs this process may run on (the affinity mask), cached for 50 ms."""
    return li_cores_cached()


def set_default_threads(int n):
    """The thread count of a call that does not choose one (0: every available core)."""
    global _default_threads
    _default_threads = n


def call_begin(int requested):
    """Count a call in; its thread count: `requested` if > 0, else the default shared
    among the calls in flight (at least 1)."""
    global _in_flight
    _in_flight += 1
    if requested > 0:
        return requested
    cdef int wanted = _default_threads if _default_threads > 0 else li_cores_cached()
    return max(1, wanted // _in_flight)


def call_end():
    """Count a call out."""
    global _in_flight
    _in_flight -= 1


def calls_in_flight():
    return _in_flight


# ---------------------------------------------------------------- SIMD dispatch
# platform.h probes the CPU once and fills the table; this module only keeps it
_LEVEL_NAMES = ("generic", "avx2", "avx512")
cdef li_cpu_features _cpu = li_probe_cpu()
cdef li_platform _plat
cdef bint _amx_wanted = True


def cpu_simd_level():
    """Best SIMD path this CPU supports: 'generic', 'avx2' or 'avx512'."""
    return _LEVEL_NAMES[li_best_level(&_cpu)]


def cpu_features():
    """What the CPU probe found (instruction sets the OS also enables)."""
    return {"avx2": bool(_cpu.avx2), "avx512": bool(_cpu.avx512),
            "avx512_vnni": bool(_cpu.avx512_vnni), "avx512_bf16": bool(_cpu.avx512_bf16),
            "amx_int8": bool(_cpu.amx_int8), "amx_bf16": bool(_cpu.amx_bf16)}


def set_simd_level(name):
    """Use the SIMD path `name` ('auto' = the best; capped to what the CPU supports);
    returns the one in use.

    The LSTM_INFER_SIMD environment variable sets it at import (tests force
    each path with it)."""
    global _plat
    if name == "auto":
        name = cpu_simd_level()
    if name not in _LEVEL_NAMES:
        raise ValueError(f"SIMD level must be 'auto' or one of {_LEVEL_NAMES}; got {name!r}")
    _plat = li_platform_for(&_cpu, _LEVEL_NAMES.index(name), _amx_wanted)
    return _LEVEL_NAMES[_plat.level]


def set_amx(on):
    """Use Intel AMX tiles for int8 models at >= 8 rows (default on when the CPU has
    AMX and Linux grants it); returns whether AMX will be used. Tests compare it with
    the AVX-512 VNNI path."""
    global _amx_wanted
    _amx_wanted = bool(on)
    set_simd_level(simd_level())
    return bool(_plat.amx)


def simd_level():
    """The SIMD path in use."""
    return _LEVEL_NAMES[_plat.level]


set_simd_level(os.environ.get("LSTM_INFER_SIMD", "auto").strip().lower() or "auto")

# ---------------------------------------------------------------- BLAS (row-major)
cdef inline void _gemm_nt(int M, int N, int K, floating alpha, const floating* A, int lda,
                          const floating* B, int ldb, floating beta, floating* C,
                          int ldc) noexcept nogil:
    """C := alpha*A@B.T + beta*C   with A (M, K), B (N, K), C (M, N), all row-major.

    Row-major C = A B^T is column-major C^T = B A^T: call ?gemm('T', 'N') with
    the operands swapped."""
    cdef char ta = b'T'
    cdef char tb = b'N'
    if floating is float:
        blas.sgemm(&ta, &tb, &N, &M, &K, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        blas.dgemm(&ta, &tb, &N, &M, &K, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)

# ---------------------------------------------------------------- driver
cdef enum:
    SPLIT_MIN_WEIGHTS = 131072  # W_hh elements from which a small-batch step is split across threads
    SPLIT_MAX_ROWS = 7   # a split step's rows (from 8, two batch slices of 4 feed two threads)
    MIN_SLICE_ROWS = 4   # batch slices of at least this many rows (a task's GEMM tiles fill)
    # time block of the input projection (_block_steps): its workspace budget
    WEIGHTS_FIT_L2 = 1 << 20       # a layer's weights in about half a 2 MiB L2 ...
    BLOCK_BYTES_SMALL = 1 << 16    # ... then a 64 KB block keeps everything L2/L1-resident
    BLOCK_BYTES_LARGE = 1 << 22    # else a 4 MiB block reads W_ih fewer times
    MAX_BLOCK_STEPS = 256

# what a task's block projection and step compute with
cdef enum:
    MODE_F32 = 0         # float32 maths on our panels (float32, int8 / half weight storage)
    MODE_Q8 = 1          # int8 mode: quantized activations x int8 quad panels
    MODE_F64 = 2         # float64: BLAS GEMMs + li_gates_rows_f64

# how a layer's tasks run (the plan)
cdef enum:
    SCHED_SERIAL = 0     # tasks one after another on the calling thread
    SCHED_TASKS = 1      # tasks (direction x batch slice) on OpenMP threads, no per-step sync
    SCHED_SPLIT = 2      # one small batch (< 8 rows): gate groups across threads, barriers per step
_SCHEDULES = ("serial", "tasks", "split")

cdef struct DirW:
    int wt_ih, wt_hh         # weight types of the float32 panels (LI_WT_*), LI_WT_Q8: int8 mode
    int bf16                 # bf16 compute mode: x and h rounded to bf16 before the GEMMs
    int q8_full              # int8 mode: a panel holds -128 (li_platform.q8_full runs it)
    const float* w_ih_scale  # per-row scales (int8), else NULL
    const float* w_hh_scale
    const int32_t* w_ih_colsum   # int8 mode: column sums for the zero-point correction
    const int32_t* w_hh_colsum
    const void* w_ih         # float64: row-major (4Hp, In)
    const void* w_hh         # float64: row-major (4Hp, Kh)
    const void* w_ih_pan     # float32 kernels: panels (see _packing.py)
    const void* w_hh_pan
    const void* bias
    const void* peep
    const void* ln           # layer-norm coefficients (4Hp,) interleaved, or NULL
    const void* w_hr
    const void* w_hr_pan

cdef struct Layer:
    int D, In, H, Hp, P, Pp, Kh, Hout
    int rev                  # unidirectional layer reading sequences backwards
    int out_proc             # outputs in processing order (Keras go_backwards)
    int merge                # 0 concat; 1 sum, 2 mul, 3 ave of the two directions into mout
    int schedule, nparts     # the plan: SCHED_*, threads of a split step
    int ln                   # layer-normalised (two-pass step: GEMM, then li_ln_gates_rows)
    char* mout               # merged output (T, B, Hout), strides ms_t, ms_b
    long ms_t, ms_b
    li_acts acts[2]          # per direction
    const char* x            # input (T, B, In) with element strides xs_t, xs_b
    long xs_t, xs_b
    char* out                # output (T, B, D*Hout) with element strides os_t, os_b
    long os_t, os_b
    const char* h0           # (D, B, Hout) contiguous
    const char* c0           # (D, B, H)
    char* hn
    char* cn
    DirW w[2]

cdef struct Shared:
    int T, B, nslices, block_t
    const int* lens          # (B,) sorted descending
    const int* perm          # sorted row -> original row
    li_platform plat         # the kernels of this call (a copy: set_simd_level may run meanwhile)

cdef struct Task:            # one direction x batch slice (x gate-group part) of a layer
    int d, Bs, reverse
    int g0, ng               # gate groups [g0, g0 + ng) computed by this part
    int uh0, uh1             # units of h this part writes (projected: projection columns)
    int uc0, uc1             # units of c this part writes
    int p0, npg              # projection column groups [p0, p0 + npg) it computes
    const int* lens          # the slice's rows, sorted by length, descending
    const int* perm

cdef struct Kernels:         # a task's kernels, chosen once from the platform table
    int mode
    li_step_fn step
    li_gemm_fn gemm
    li_gemm_fn gemm_hh       # layer norm: the recurrent product on its own (W_hh's type)
    int bf16                 # round x and h to bf16 first (bf16 compute mode)
    li_gemv_pan16_fn gemv_proj
    li_q8_mm_fn q8
    li_quant_fn quant

cdef struct WsLayout:        # a task's workspace: offsets in elements, each 64-byte aligned
    long xg                  # gathered input rows (Tb*Bs, In)
    long g                   # block projection G (Tb*Bs, 4Hp)
    long h0, h1              # h ping-pong (Bs, Kh) x 2
    long c                   # cell state (Bs, Hp)
    long hc                  # o * act(c) before the projection (Bs, Hp)
    long r                   # layer norm, float32 maths: the recurrent product (Bs, 4Hp)
    long hb                  # bf16 compute mode: h rounded to bf16 (Bs, Kh)
    long q                   # int8 mode: u8 activations (rows to 16, K to LI_Q8_KPAD)
    long qs                  # int8 mode: their per-row scales
    long total


cdef inline long _round16(long n) noexcept nogil:
    return (n + 15) & ~15


cdef inline long _round_up(long n, long m) noexcept nogil:
    return (n + m - 1) // m * m


cdef inline long _wsize(int wt) noexcept nogil:
    """Bytes per weight of a float32-kernel panel type (LI_WT_*)."""
    return 4 if wt == LI_WT_F32 else (1 if wt == LI_WT_I8 or wt == LI_WT_Q8 else 2)


cdef WsLayout _ws_layout(const Layer* L, long Tb, long Bs, bint q8) noexcept nogil:
    """The one workspace layout of a task (sizes rounded to 16 elements: 64 bytes)."""
    cdef WsLayout w
    cdef long rows = Tb * Bs
    cdef long ldq = _round_up(L.In if L.In > L.Kh else L.Kh, LI_Q8_KPAD)
    w.xg = 0
    w.g = w.xg + _round16(rows * L.In)
    w.h0 = w.g + _round16(rows * 4 * L.Hp)
    w.h1 = w.h0 + _round16(Bs * L.Kh)
    w.c = w.h1 + _round16(Bs * L.Kh)
    w.hc = w.c + _round16(Bs * L.Hp)
    w.r = w.hc + _round16(Bs * L.Hp)
    w.hb = w.r + (_round16(Bs * 4 * L.Hp) if L.ln else 0)
    w.q = w.hb + (_round16(Bs * L.Kh) if L.w[0].bf16 else 0)
    # the u8 rows are counted in 4-byte elements (q8 is float32 only)
    w.qs = w.q + (_round16(_round16(rows) * ldq // 4 + 1) if q8 else 0)
    w.total = w.qs + (_round16(rows) if q8 else 0)
    return w


cdef bint _task_bounds(const Layer* L, const Shared* S, int task, int part, int nparts,
                       Task* t) noexcept nogil:
    """The rows, direction and gate groups of one task; False if its slice is empty."""
    cdef int sl = task // L.D
    cdef int j0 = <int>((<long>sl * S.B) // S.nslices)
    cdef int j1 = <int>((<long>(sl + 1) * S.B) // S.nslices)
    cdef int ng_all = L.Hp // LI_GROUP, npg_all = L.Pp // LI_GROUP
    cdef int g1, p1
    t.d = task % L.D
    t.Bs = j1 - j0
    t.reverse = t.d == 1 or L.rev
    t.lens = S.lens + j0
    t.perm = S.perm + j0
    t.g0 = part * ng_all // nparts
    g1 = (part + 1) * ng_all // nparts
    t.ng = g1 - t.g0
    t.p0 = part * npg_all // nparts
    p1 = (part + 1) * npg_all // nparts
    t.npg = p1 - t.p0
    t.uc0 = 0 if nparts == 1 else t.g0 * LI_GROUP
    t.uc1 = L.H if nparts == 1 else min(g1 * LI_GROUP, L.H)
    if nparts == 1:
        t.uh0, t.uh1 = 0, L.Hout
    elif L.P > 0:  # a part's h units are its projection columns
        t.uh0 = t.p0 * LI_GROUP
        t.uh1 = max(t.uh0, min(p1 * LI_GROUP, L.P))
    else:
        t.uh0, t.uh1 = t.uc0, t.uc1
    return t.Bs > 0


cdef inline li_q8_mm_fn _q8_kernel(const li_platform* plat, const DirW* w) noexcept nogil:
    """The int8-mode GEMM for w's panels: q8_full if one holds -128 (AVX2's q8 cannot)."""
    return plat.q8_full if w.q8_full else plat.q8


cdef Kernels _choose_kernels(const Shared* S, const DirW* w, floating dummy) noexcept nogil:
    cdef Kernels k
    k.mode = MODE_F64 if floating is double else (MODE_Q8 if w.wt_hh == LI_WT_Q8 else MODE_F32)
    k.step = S.plat.f32.step[w.wt_hh] if k.mode == MODE_F32 else NULL
    k.gemm = S.plat.f32.gemm[w.wt_ih] if k.mode == MODE_F32 else NULL
    k.gemm_hh = S.plat.f32.gemm[w.wt_hh] if k.mode == MODE_F32 else NULL
    k.bf16 = w.bf16
    k.gemv_proj = S.plat.f32.gemv_pan16
    k.q8 = _q8_kernel(&S.plat, w)
    k.quant = S.plat.quant
    return k


cdef void _init_state(const Layer* L, const Shared* S, const Task* t, floating* hbuf,
                      floating* C) noexcept nogil:
    """Initial state into the workspace (sorted row order); rows of length 0 finish here."""
    cdef int b, row
    cdef long src
    cdef const floating* h0 = <const floating*>L.h0
    cdef const floating* c0 = <const floating*>L.c0
    for b in range(t.Bs):
        row = t.perm[b]
        src = <long>t.d * S.B + row
        memcpy(hbuf + <long>b * L.Kh, h0 + src * L.Hout, L.Hout * sizeof(floating))
        memcpy(C + <long>b * L.Hp, c0 + src * L.H, L.H * sizeof(floating))
        if t.lens[b] == 0:
            memcpy(<floating*>L.hn + src * L.Hout, hbuf + <long>b * L.Kh,
                   L.Hout * sizeof(floating))
            memcpy(<floating*>L.cn + src * L.H, C + <long>b * L.Hp, L.H * sizeof(floating))


cdef const floating* _block_rows(const Layer* L, const Task* t, const Kernels* k, int s0,
                                int tb, int na, floating* Xg, long* ldx,
                                bint copy) noexcept nogil:
    """The input rows of steps [s0, s0 + tb), and their stride in *ldx: one row is read
    in place (a negative stride walks a reversed sequence); several (or any, in the bf16
    compute mode) are gathered into Xg, each reversed within its own span -- unless
    `copy` is off (a split step's other parts, for which part 0 gathers)."""
    cdef const floating* x = <const floating*>L.x
    cdef int s, b, tt, kk
    cdef const floating* src
    cdef floating* dst
    if t.Bs == 1 and not k.bf16:
        tt = t.lens[0] - 1 - s0 if t.reverse else s0
        ldx[0] = -L.xs_t if t.reverse else L.xs_t
        return x + tt * L.xs_t + t.perm[0] * L.xs_b
    kk = na
    ldx[0] = L.In
    if not copy:
        return Xg
    for s in range(s0, s0 + tb):
        while kk > 0 and t.lens[kk - 1] <= s:
            kk -= 1
        for b in range(kk):
            tt = t.lens[b] - 1 - s if t.reverse else s
            src = x + tt * L.xs_t + t.perm[b] * L.xs_b
            dst = Xg + (<long>(s - s0) * t.Bs + b) * L.In
            if k.bf16:  # bf16 compute: the rows rounded to bf16 on their way in
                li_round_bf16(<const float*>src, <float*>dst, L.In)
            else:
                memcpy(dst, src, L.In * sizeof(floating))
    return Xg


cdef void _project_block(const Layer* L, const Task* t, const Kernels* k, int tb,
                         const floating* xblk, long ldx, floating* Xg, floating* G,
                         uint8_t* Qb, float* Qs, bint quantized) noexcept nogil:
    """G = X_blk W_ih^T for a block of tb steps (this part's gate groups; bias comes in
    the step), X_blk the rows _block_rows gave (int8 mode: quantized into Qb / Qs here,
    unless `quantized`: a split step's part 0 did it for every part)."""
    cdef const DirW* w = &L.w[t.d]
    cdef long ldq = _round_up(L.In, LI_Q8_KPAD)
    cdef int s, G4 = 4 * L.Hp
    if k.mode == MODE_Q8:
        if not quantized:
            k.quant(tb * t.Bs, L.In, <const float*>xblk, ldx, Qb, ldq, Qs)
        k.q8(tb * t.Bs, t.ng, <int>(ldq // 4), Qb, ldq, Qs,
             <const int8_t*>w.w_ih_pan + <long>t.g0 * (ldq // 4) * 256,
             w.w_ih_colsum + t.g0 * LI_PANEL, w.w_ih_scale + t.g0 * LI_PANEL,
             <float*>G + t.g0 * LI_PANEL, G4, 1, 0,
             NULL, NULL, 0, NULL, 0, NULL, 0, NULL, 0)
    elif k.mode == MODE_F32:
        k.gemm(tb * t.Bs, t.ng, L.In, <const float*>xblk, ldx,
               <const char*>w.w_ih_pan + <long>t.g0 * L.In * LI_PANEL * _wsize(w.wt_ih),
               w.w_ih_scale + t.g0 * LI_PANEL if w.w_ih_scale != NULL else NULL,
               <float*>G + t.g0 * LI_PANEL, G4)
    else:
        # BLAS needs lda >= K > 0 and takes lda as a C int: a reversed walk, a stride
        # below a row, or one above INT_MAX elements (a strided view of a >= 16 GiB
        # map) is gathered into contiguous rows first
        if t.Bs == 1 and (t.reverse or ldx < L.In or ldx > INT_MAX):
            for s in range(tb):
                memcpy(Xg + <long>s * L.In, xblk + s * ldx, L.In * sizeof(floating))
            xblk = Xg
            ldx = L.In
        _gemm_nt(tb * t.Bs, G4, L.In, <floating>1.0, xblk, <int>ldx,
                 <const floating*>w.w_ih, L.In, <floating>0.0, G, G4)


cdef void _prepare_h(const Layer* L, const Kernels* k, int na, const floating* hp,
                     floating* Hb, uint8_t* Qb, float* Qs) noexcept nogil:
    """What a step's GEMM reads instead of h: bf16 compute, h rounded to bf16 into Hb;
    int8 mode, h quantized into Qb / Qs. (A split step's part 0 does it for all parts.)"""
    if k.bf16:  # the state itself keeps float32
        li_round_bf16(<const float*>hp, <float*>Hb, <long>na * L.Kh)
    elif k.mode == MODE_Q8:
        k.quant(na, L.Kh, <const float*>hp, L.Kh, Qb, _round_up(L.Kh, LI_Q8_KPAD), Qs)


cdef void _step(const Layer* L, const Task* t, const Kernels* k, int s, int na,
                floating* Gs, const floating* hp, floating* hnx, floating* hcell, floating* C,
                floating* Hc, floating* R, floating* Hb, uint8_t* Qb,
                float* Qs, bint prepared) noexcept nogil:
    """One step for the `na` active rows: z = G_s + h W_hh^T, then the gates (C in place,
    o * act(c) into hcell; a projected layer then runs _project_h). A layer-norm layer
    computes h W_hh^T into R first, then gates in a second pass (lstm_layernorm.h).
    bf16 / int8: _prepare_h first, unless `prepared` (a split step's part 0 did)."""
    cdef const DirW* w = &L.w[t.d]
    cdef const li_acts* acts = &L.acts[t.d]
    cdef const floating* bias = <const floating*>w.bias
    cdef const floating* peep = <const floating*>w.peep
    cdef long ldq = _round_up(L.Kh, LI_Q8_KPAD)
    cdef int G4 = 4 * L.Hp, g0 = t.g0
    if not prepared:
        _prepare_h(L, k, na, hp, Hb, Qb, Qs)
    if k.bf16:  # bf16 compute: the GEMM reads h rounded to bf16
        hp = Hb
    if L.ln:
        if k.mode == MODE_Q8:
            k.q8(na, L.Hp // LI_GROUP, <int>(ldq // 4), Qb, ldq, Qs, <const int8_t*>w.w_hh_pan,
                 w.w_hh_colsum, w.w_hh_scale, <float*>R, G4, 1, 0, NULL, NULL, 0, NULL, 0,
                 NULL, 0, NULL, 0)
        elif k.mode == MODE_F32:
            k.gemm_hh(na, L.Hp // LI_GROUP, L.Kh, <const float*>hp, L.Kh, w.w_hh_pan,
                      w.w_hh_scale, <float*>R, G4)
        else:
            _gemm_nt(na, G4, L.Kh, <floating>1.0, hp, L.Kh, <const floating*>w.w_hh, L.Kh,
                     <floating>1.0, Gs, G4)
        if floating is float:
            li_ln_gates_rows_f32(na, L.H, L.Hp, Gs, G4, R, G4, bias, peep,
                                 <const float*>w.ln, C, L.Hp, hcell, L.Hp, acts)
        else:
            li_ln_gates_rows_f64(na, L.H, L.Hp, Gs, G4, NULL, 0, bias, peep,
                                 <const double*>w.ln, C, L.Hp, hcell, L.Hp, acts)
    elif k.mode == MODE_Q8:
        k.q8(na, t.ng, <int>(ldq // 4), Qb, ldq, Qs,
             <const int8_t*>w.w_hh_pan + <long>g0 * (ldq // 4) * 256,
             w.w_hh_colsum + g0 * LI_PANEL, w.w_hh_scale + g0 * LI_PANEL,
             <float*>Gs + g0 * LI_PANEL, G4, 0, 1, <const float*>bias + g0 * LI_PANEL,
             <const float*>peep + g0 * LI_GROUP if peep != NULL else NULL, L.Hp,
             <float*>C + g0 * LI_GROUP, L.Hp, <float*>hcell + g0 * LI_GROUP, L.Hp, acts, s & 1)
    elif k.mode == MODE_F32:
        k.step(na, t.ng, L.Hp, L.Kh, <float*>Gs + g0 * LI_PANEL, G4,
               <const char*>w.w_hh_pan + <long>g0 * L.Kh * LI_PANEL * _wsize(w.wt_hh),
               w.w_hh_scale + g0 * LI_PANEL if w.w_hh_scale != NULL else NULL,
               <const float*>hp, L.Kh, <const float*>bias + g0 * LI_PANEL,
               <const float*>peep + g0 * LI_GROUP if peep != NULL else NULL,
               <float*>C + g0 * LI_GROUP, L.Hp, <float*>hcell + g0 * LI_GROUP, L.Hp, acts, s & 1)
    else:
        _gemm_nt(na, G4, L.Kh, <floating>1.0, hp, L.Kh, <const floating*>w.w_hh, L.Kh,
                 <floating>1.0, Gs, G4)
        li_gates_rows_f64(na, L.Hp, <const double*>Gs, G4, <const double*>bias,
                          <const double*>peep, <double*>C, L.Hp, <double*>hcell, L.Hp, acts)


cdef void _project_h(const Layer* L, const Task* t, const Kernels* k, int na,
                     const floating* Hc, floating* hnx) noexcept nogil:
    """h = Hc W_hr^T for this part's projection column groups (all of them unless the
    step is split), then TFLite's proj_clip on those columns."""
    cdef const DirW* w = &L.w[t.d]
    cdef double lim = L.acts[t.d].proj_clip
    # float32: our own kernel at every batch size (its rows are independent: BLAS's
    # blocking would make a row's result depend on the batch); float64: BLAS
    if k.mode != MODE_F64:
        k.gemv_proj(na, t.npg, L.Hp,
                    <const float*>w.w_hr_pan + <long>t.p0 * L.Hp * LI_GROUP,
                    <const float*>Hc, L.Hp, <float*>hnx + t.p0 * LI_GROUP, L.Kh)
    else:
        _gemm_nt(na, L.Pp, L.Hp, <floating>1.0, Hc, L.Hp, <const floating*>w.w_hr, L.Hp,
                 <floating>0.0, hnx, L.Kh)
    if lim < INFINITY:  # TFLite's proj_clip bounds the projected h
        _clamp_rows(hnx + t.uh0, na, t.uh1 - t.uh0, L.Kh, <floating>lim)


cdef inline void _clamp_rows(floating* a, int rows, int n, long ld, floating lim) noexcept nogil:
    cdef int b, j
    cdef floating v
    for b in range(rows):
        for j in range(n):
            v = a[<long>b * ld + j]
            a[<long>b * ld + j] = -lim if v < -lim else (lim if v > lim else v)


cdef int _store_rows(const Layer* L, const Shared* S, const Task* t, int s, int na,
                     const floating* hnx, const floating* C) noexcept nogil:
    """Outputs of the active rows at step s, and the final state of the rows whose
    sequence ends there; returns the rows still active after s."""
    cdef int b, row, tt, na_next = na
    cdef long dst
    cdef long ob = <long>t.d * L.Hout
    cdef floating* out = <floating*>L.out
    for b in range(na):
        tt = t.lens[b] - 1 - s if (t.reverse and not L.out_proc) else s
        memcpy(out + tt * L.os_t + t.perm[b] * L.os_b + ob + t.uh0, hnx + <long>b * L.Kh + t.uh0,
               (t.uh1 - t.uh0) * sizeof(floating))
    while na_next > 0 and t.lens[na_next - 1] <= s + 1:
        na_next -= 1
    for b in range(na_next, na):
        row = t.perm[b]
        dst = <long>t.d * S.B + row
        memcpy(<floating*>L.hn + dst * L.Hout + t.uh0, hnx + <long>b * L.Kh + t.uh0,
               (t.uh1 - t.uh0) * sizeof(floating))
        memcpy(<floating*>L.cn + dst * L.H + t.uc0, C + <long>b * L.Hp + t.uc0,
               (t.uc1 - t.uc0) * sizeof(floating))
    return na_next


cdef int _run_task(const Layer* L, const Shared* S, int task, int part, int nparts,
                   li_barrier* bar, floating* shared_ws, floating dummy) noexcept nogil:
    """One direction x batch slice of one layer: the whole time loop (the shape of ONNX
    Runtime's UniDirectionalLstm: state init, then per time block a projection and per
    step the recurrent step and the stores). Returns 0, or -1 if the workspace could
    not be allocated.

    With nparts > 1 (one small batch split across threads), this thread computes
    the gate groups [g0, g0 + ng) of every step: its columns of the input projection,
    its units of h and c; the threads share the workspace and meet at a barrier after
    each step, since every thread reads the whole h."""
    cdef Task t
    if not _task_bounds(L, S, task, part, nparts, &t):
        return 0
    cdef Kernels k = _choose_kernels(S, &L.w[t.d], dummy)
    cdef WsLayout lay = _ws_layout(L, S.block_t, t.Bs, k.mode == MODE_Q8)
    cdef floating* ws = shared_ws
    if ws == NULL:
        ws = <floating*>li_alloc64(lay.total * sizeof(floating))
        if ws == NULL:
            return -1
        # padded state entries must be 0; Xg/G rows of finished sequences are never read
        memset(ws + lay.h0, 0, (lay.qs - lay.h0) * sizeof(floating))
    cdef floating* G = ws + lay.g
    cdef floating* C = ws + lay.c
    cdef floating* Hc = ws + lay.hc
    cdef floating* R = ws + lay.r
    cdef floating* Hb = ws + lay.hb
    cdef uint8_t* Qb = <uint8_t*>(ws + lay.q)
    cdef float* Qs = <float*>(ws + lay.qs)
    cdef floating* hp = ws + lay.h0
    cdef floating* hnx = ws + lay.h1
    cdef floating* tmp
    cdef floating* hcell
    cdef int sense = 0, na, s, s0 = 0, tb
    cdef int nsteps = t.lens[0]
    cdef const floating* xblk
    cdef long ldx
    if part == 0:
        _init_state(L, S, &t, hp, C)
    if nparts > 1:
        li_barrier_wait(bar, &sense)
    hcell = Hc if L.P > 0 else hnx
    na = t.Bs
    while na > 0 and t.lens[na - 1] <= 0:
        na -= 1
    while s0 < nsteps:
        tb = S.block_t if nsteps - s0 > S.block_t else nsteps - s0
        # a split step's rows are gathered once, by part 0, for all parts
        xblk = _block_rows(L, &t, &k, s0, tb, na, ws + lay.xg, &ldx, part == 0)
        if nparts > 1 and k.mode == MODE_Q8 and part == 0:  # the block quantized once
            k.quant(tb * t.Bs, L.In, <const float*>xblk, ldx, Qb,
                    _round_up(L.In, LI_Q8_KPAD), Qs)
        if nparts > 1 and (t.Bs > 1 or k.bf16 or k.mode == MODE_Q8):  # part 0 wrote
            li_barrier_wait(bar, &sense)
        _project_block(L, &t, &k, tb, xblk, ldx, ws + lay.xg, G, Qb, Qs, nparts > 1)
        if nparts > 1 and k.mode == MODE_Q8:  # every part has read Qb: the step reuses it
            li_barrier_wait(bar, &sense)
        for s in range(s0, s0 + tb):
            if nparts > 1 and (k.bf16 or k.mode == MODE_Q8):
                if part == 0:  # h (complete since the last barrier) rounded / quantized once
                    _prepare_h(L, &k, na, hp, Hb, Qb, Qs)
                li_barrier_wait(bar, &sense)
            _step(L, &t, &k, s, na, G + <long>(s - s0) * t.Bs * 4 * L.Hp, hp, hnx, hcell, C,
                  Hc, R, Hb, Qb, Qs, nparts > 1)
            if L.P > 0:
                if nparts > 1:  # the projection reads every part's units of Hc
                    li_barrier_wait(bar, &sense)
                _project_h(L, &t, &k, na, Hc, hnx)
            na = _store_rows(L, S, &t, s, na, hnx, C)
            if nparts > 1:  # every part reads the whole h of this step next
                li_barrier_wait(bar, &sense)
            tmp = hp
            hp = hnx
            hnx = tmp
            if L.P == 0:
                hcell = hnx
        s0 += tb
    if shared_ws == NULL:
        free(ws)
    return 0


cdef int _run_layer(const Layer* L, const Shared* S, int nthreads, floating* preset_ws,
                    floating dummy) noexcept nogil:
    """Run a layer's tasks by its plan (L.schedule). `preset_ws`: a zeroed workspace of
    _layer_ws_elems elements that the serial and split schedules reuse (a CallPlan's),
    or NULL to allocate per call."""
    cdef int ntasks = L.D * S.nslices
    cdef int task, status = 0, part
    cdef int* pstatus = &status  # written inside the parallel block (shared, not private)
    cdef li_barrier bar
    cdef floating* ws = preset_ws
    cdef long n
    if L.schedule == SCHED_SPLIT:
        if preset_ws == NULL:
            n = _ws_layout(L, S.block_t, S.B, L.w[0].wt_hh == LI_WT_Q8).total
            ws = <floating*>li_alloc64(n * sizeof(floating))
            if ws == NULL:
                return -1
            memset(ws, 0, n * sizeof(floating))
        bar.count = 0
        bar.sense = 0
        bar.n = L.nparts
        with parallel(num_threads=L.nparts):
            part = threadid()
            if li_team_size() == L.nparts:
                if _run_task(L, S, 0, part, L.nparts, &bar, ws, dummy) != 0:
                    pstatus[0] = -1
            elif part == 0:  # fewer threads than asked: run it whole
                if _run_task(L, S, 0, 0, 1, NULL, NULL, dummy) != 0:
                    pstatus[0] = -1
        if preset_ws == NULL:
            free(ws)
    elif L.schedule == SCHED_TASKS:
        for task in prange(ntasks, num_threads=nthreads, schedule="static", chunksize=1):
            if _run_task(L, S, task, 0, 1, NULL, NULL, dummy) != 0:
                status = -1
    else:  # serial: the tasks one after another, sharing a preset workspace if given
        for task in range(ntasks):
            if _run_task(L, S, task, 0, 1, NULL, preset_ws, dummy) != 0:
                status = -1
    return status


cdef long _layer_ws_elems(const Layer* L, const Shared* S) noexcept nogil:
    """Elements of the workspace one serial or split layer reuses across calls: any of
    its tasks' (they run one at a time; a split layer's parts share one)."""
    cdef int bs = (S.B + S.nslices - 1) // S.nslices
    return _ws_layout(L, S.block_t, bs, L.w[0].wt_hh == LI_WT_Q8).total


cdef void _merge(const Layer* L, const Shared* S, floating dummy) noexcept nogil:
    """mout[t, b] = merge(out[t, b, :H], out[t, b, H:]) (Keras Bidirectional merge_mode)."""
    cdef int t, b, j, H = L.Hout
    cdef const floating* o
    cdef floating* m
    for t in range(S.T):
        for b in range(S.B):
            o = <const floating*>L.out + t * L.os_t + b * L.os_b
            m = <floating*>L.mout + t * L.ms_t + b * L.ms_b
            if L.merge == 1:
                for j in range(H):
                    m[j] = o[j] + o[H + j]
            elif L.merge == 2:
                for j in range(H):
                    m[j] = o[j] * o[H + j]
            else:
                for j in range(H):
                    m[j] = (o[j] + o[H + j]) * <floating>0.5


cdef int _run_stack(Layer* layers, int nlayers, Shared* S, int nthreads, void** preset_ws,
                    floating dummy) noexcept nogil:
    cdef int k
    for k in range(nlayers):
        if _run_layer(&layers[k], S, nthreads,
                      <floating*>preset_ws[k] if preset_ws != NULL else NULL, dummy) != 0:
            return -1
        if layers[k].merge:
            _merge(&layers[k], S, dummy)
    return 0


cdef inline char* _ptr(object a):
    """Data pointer of a numpy array (or NULL for None); a TypeError for anything else."""
    if a is None:
        return NULL
    return <char*>cnp.PyArray_DATA(<cnp.ndarray?>a)


cdef class PackedDirection:
    """Kernel-ready weights of one layer direction (built by _packing.pack).

    The constructor checks every array against the layout the kernels will read --
    dtype, C order, LI_ALIGN-byte alignment and exact size, from the dimensions and
    weight types -- and keeps the pointers in a DirW struct; the arrays are kept
    (read-only) for as long as the object lives, and for _packing.canonical."""
    cdef readonly int In, H, Hp, P, Pp, Kh, wt_ih, wt_hh, itemsize  # In: I is a C macro
    cdef readonly dict arrays      # name -> read-only ndarray
    cdef readonly object quant     # quantization mode or None
    cdef readonly object stored    # quantized models: the stored (int8 / half) weights
    cdef DirW w

    def __init__(self, int In, int H, int P, int wt_ih, int wt_hh, int itemsize, dict arrays,
                 quant=None, stored=None):
        if In < 1 or H < 1 or P < 0 or P >= H or itemsize not in (4, 8):
            raise ValueError(f"bad packed dimensions I={In}, H={H}, P={P}, itemsize={itemsize}")
        for wt in (wt_ih, wt_hh):
            if not 0 <= wt <= LI_WT_Q8 or (itemsize == 8 and wt != LI_WT_F32):
                raise ValueError(f"bad weight type {wt} for itemsize {itemsize}")
        self.In, self.H, self.P = In, H, P
        self.Hp = _round_group(H)
        self.Pp = _round_group(P)
        self.Kh = self.Pp or self.Hp
        self.wt_ih, self.wt_hh, self.itemsize = wt_ih, wt_hh, itemsize
        self.arrays, self.quant, self.stored = arrays, quant, stored
        cdef long NG = self.Hp // LI_GROUP, G4 = 4 * self.Hp
        fdt = "float32" if itemsize == 4 else "float64"
        f32 = itemsize == 4
        # name -> (dtype(s), elements) the kernels will read; None: must be absent
        want = {"bias": (fdt, G4),
                "peep": (fdt, 3 * self.Hp) if "peep" in arrays else None,
                "ln": (fdt, G4) if "ln" in arrays else None,
                "w_hr": (fdt, <long>self.Pp * self.Hp) if P else None,
                "w_hr_pan": ("float32", <long>self.Pp * self.Hp) if P and f32 else None,
                "w_ih": None if f32 else (fdt, G4 * In),
                "w_hh": None if f32 else (fdt, G4 * self.Kh),
                "w_ih_pan": _panel_spec(wt_ih, NG, In) if f32 else None,
                "w_hh_pan": _panel_spec(wt_hh, NG, self.Kh) if f32 else None,
                "w_ih_scale": ("float32", G4) if wt_ih in (LI_WT_I8, LI_WT_Q8) else None,
                "w_hh_scale": ("float32", G4) if wt_hh in (LI_WT_I8, LI_WT_Q8) else None,
                "w_ih_colsum": ("int32", G4) if wt_ih == LI_WT_Q8 else None,
                "w_hh_colsum": ("int32", G4) if wt_hh == LI_WT_Q8 else None}
        unknown = set(arrays) - set(want)
        if unknown:
            raise ValueError(f"unknown packed arrays {sorted(unknown)}")
        for name, spec in want.items():
            a = arrays.get(name)
            if spec is None:
                if a is not None:
                    raise ValueError(f"packed array {name} is not used by this layout")
                continue
            if not isinstance(a, cnp.ndarray):
                raise TypeError(f"packed array {name} must be a numpy array; got {type(a).__name__}")
            dtypes, n = spec
            if a.dtype.name not in dtypes.split("|") or a.size != n:
                raise ValueError(f"packed array {name} must be {n} elements of {dtypes}; got "
                                 f"{a.size} of {a.dtype}")
            if not a.flags.c_contiguous or a.ctypes.data % LI_ALIGN:
                raise ValueError(f"packed array {name} must be C-contiguous and "
                                 f"{LI_ALIGN}-byte aligned")
        self.w.wt_ih, self.w.wt_hh = wt_ih, wt_hh
        self.w.bf16 = quant == "bf16"
        if self.w.bf16 and not wt_ih == wt_hh == LI_WT_BF16:
            raise ValueError("the bf16 compute mode needs bf16 W_ih and W_hh panels")
        self.w.w_ih = _ptr(arrays.get("w_ih"))
        self.w.w_hh = _ptr(arrays.get("w_hh"))
        self.w.w_ih_pan = _ptr(arrays.get("w_ih_pan"))
        self.w.w_hh_pan = _ptr(arrays.get("w_hh_pan"))
        self.w.w_ih_scale = <const float*>_ptr(arrays.get("w_ih_scale"))
        self.w.w_hh_scale = <const float*>_ptr(arrays.get("w_hh_scale"))
        self.w.q8_full = wt_hh == LI_WT_Q8 and any(
            bool((arrays[n] == -128).any()) for n in ("w_ih_pan", "w_hh_pan"))
        self.w.w_ih_colsum = <const int32_t*>_ptr(arrays.get("w_ih_colsum"))
        self.w.w_hh_colsum = <const int32_t*>_ptr(arrays.get("w_hh_colsum"))
        self.w.bias = _ptr(arrays["bias"])
        self.w.peep = _ptr(arrays.get("peep"))
        self.w.ln = _ptr(arrays.get("ln"))
        self.w.w_hr = _ptr(arrays.get("w_hr"))
        self.w.w_hr_pan = _ptr(arrays.get("w_hr_pan"))

    def __reduce__(self):  # models pickle through their canonical weights instead
        raise TypeError("PackedDirection does not pickle; pickle the LSTM model")


cdef long _round_group(long n):
    return (n + LI_GROUP - 1) // LI_GROUP * LI_GROUP


cdef tuple _panel_spec(int wt, long NG, long K):
    """(dtype names, elements) of a weight panel of type wt over K inputs."""
    if wt == LI_WT_Q8:
        return ("int8", NG * ((K + LI_Q8_KPAD - 1) // LI_Q8_KPAD * LI_Q8_KPAD) * LI_PANEL)
    names = {LI_WT_F32: "float32", LI_WT_I8: "int8", LI_WT_F16: "float16",
             LI_WT_BF16: "uint16"}
    return (names[wt], NG * K * LI_PANEL)


def _block_steps(int T, int B, int nslices, int G4, int In, int itemsize, long wbytes):
    """Steps per input-projection block; the workspace is bounded whatever T is.

    Measured on a 2 MiB-L2 core: when a layer's weights fit in about half the
    L2, a small block (64 KB of projections) keeps everything L2/L1-resident
    (kws: -4%); when they do not, the weights stream from L3 anyway and a
    large block reads W_ih fewer times (stream256: -5% at 1 MiB). 4 MiB rather
    than 1 (2026-12-02, AVX2, 1 thread, 2 runs each): tput512 2.02-2.12 s ->
    1.82 s (the block went from 1 step of 64 rows to 6), asr-bi 0.77-0.81 s ->
    0.74-0.75 s; 8 MiB measured the same as 4."""
    cdef int bs = (B + nslices - 1) // nslices
    cdef long row_bytes = <long>(G4 + In) * itemsize * bs
    cdef long budget = BLOCK_BYTES_SMALL if wbytes <= WEIGHTS_FIT_L2 else BLOCK_BYTES_LARGE
    # as many steps as fit (not a power of two: lat1024's 50 steps are one block, so
    # its 16 MB W_ih streams once per call instead of twice)
    cdef long tb = budget // row_bytes
    tb = MAX_BLOCK_STEPS if tb > MAX_BLOCK_STEPS else tb
    return max(1, min(tb, T))


cdef long _stride(object a, int axis, int itemsize):
    """Element stride of `axis`; a length-1 axis gets the C-contiguous one (numpy
    leaves any stride there, even a negative one, and calls the array contiguous)."""
    if a.shape[axis] == 1:
        n = 1
        for k in range(axis + 1, a.ndim):
            n *= a.shape[k]
        return n
    return a.strides[axis] // itemsize


cdef void _set_acts(li_acts* a, dict p):
    """li_acts from named fields (model._act_params): gate / cell / output activations
    (config.Activation), clip, cell_clip, proj_clip (inf: none), input_forget."""
    gate, cell, output = p["gate"], p["cell"], p["output"]
    a.kf, a.af, a.bf = gate.code, gate.alpha, gate.beta
    a.kg, a.ag, a.bg = cell.code, cell.alpha, cell.beta
    a.kh, a.ah, a.bh = output.code, output.alpha, output.beta
    a.clip = p["clip"]
    a.cell_clip = p["cell_clip"]
    a.cifg = p["input_forget"]
    a.proj_clip = p.get("proj_clip", INFINITY)


cdef int _describe(list packed, int T, int B, int itemsize, Layer* layers, Shared* S) except -1:
    """Dimensions and weight pointers of every layer, from its PackedDirections."""
    cdef int nlayers = len(packed), k, d
    cdef PackedDirection p
    if not 0 < nlayers <= LI_MAX_LAYERS:
        raise ValueError(f"a stack has 1 to {LI_MAX_LAYERS} layers; got {nlayers}")
    S.T, S.B = T, B
    for k in range(nlayers):
        dirs = packed[k]
        L = &layers[k]
        L.D = len(dirs)
        if L.D not in (1, 2):
            raise ValueError(f"layer {k}: 1 or 2 directions; got {L.D}")
        for d in range(L.D):
            p = dirs[d]  # a TypeError for anything but a PackedDirection
            if p.itemsize != itemsize:
                raise TypeError(f"layer {k}: packed for itemsize {p.itemsize}, input has "
                                f"{itemsize}")
            L.w[d] = p.w
        L.ln = L.w[0].ln != NULL
        if L.D == 2 and (L.w[1].ln != NULL) != L.ln:
            raise ValueError(f"layer {k}: layer norm in one direction only")
        L.In, L.H, L.Hp, L.P, L.Pp, L.Kh = p.In, p.H, p.Hp, p.P, p.Pp, p.Kh
        L.Hout = p.P or p.H
    return 0


cdef int _plan(Layer* layers, int nlayers, Shared* S, int nthreads, int itemsize) except -1:
    """The schedule of a call: batch slices, time block, and per layer serial / tasks /
    split. Decided here only; model.LSTM.plan shows it."""
    cdef int k, ntasks, nparts, maxG4 = 0, maxI = 0
    cdef long wbytes = 0
    cdef Layer* L
    # batch slices: enough tasks to feed the threads, slices of >= 4 rows
    cdef int want = (nthreads + layers[0].D - 1) // layers[0].D
    S.nslices = max(1, min(want, S.B // MIN_SLICE_ROWS))
    for k in range(nlayers):
        L = &layers[k]
        maxG4 = max(maxG4, 4 * L.Hp)
        maxI = max(maxI, L.In)
        wbytes = max(wbytes, <long>4 * L.Hp * (L.In + L.Kh) * itemsize)
        ntasks = L.D * S.nslices
        # One task of a small batch (< 8 rows: one slice) and spare threads: split each
        # step's gate groups (and a projection's column groups) between the threads
        # (float32, the weight-only modes, int8 and bf16 compute, whose part 0 quantizes /
        # rounds each block and step's rows once for all parts; layer norm and float64
        # run whole on one thread).
        # Only when a step streams >= 128 Ki weights: below that the per-step barrier
        # costs what the split saves (measured: kws, H=128, 0.243 -> 0.255 ms, 2 threads).
        nparts = min(nthreads, L.Hp // LI_GROUP)
        L.nparts = 1
        if (itemsize == 4 and ntasks == 1 and S.B <= SPLIT_MAX_ROWS and nparts > 1
                and not L.ln and <long>4 * L.Hp * L.Kh >= SPLIT_MIN_WEIGHTS):
            L.schedule = SCHED_SPLIT
            L.nparts = nparts
        elif nthreads <= 1 or ntasks == 1:
            L.schedule = SCHED_SERIAL
        else:
            L.schedule = SCHED_TASKS
    S.block_t = _block_steps(S.T, S.B, S.nslices, maxG4, maxI, itemsize, wbytes)
    return 0


def plan(list packed, int T, int B, int nthreads, int itemsize=4):
    """The schedule forward() would run for x of T steps and B sequences:
    {"slices", "block_steps", "layers": [{"schedule": "serial"|"tasks"|"split",
    "tasks", "threads"}]}."""
    cdef Layer layers[LI_MAX_LAYERS]
    cdef Shared S
    _describe(packed, T, B, itemsize, layers, &S)
    _plan(layers, len(packed), &S, nthreads, itemsize)
    return {"slices": S.nslices, "block_steps": S.block_t,
            "layers": [{"schedule": _SCHEDULES[layers[k].schedule],
                        "tasks": layers[k].D * S.nslices,
                        "threads": (layers[k].nparts if layers[k].schedule == SCHED_SPLIT
                                    else min(nthreads, layers[k].D * S.nslices)
                                    if layers[k].schedule == SCHED_TASKS else 1)}
                       for k in range(len(packed))]}


cdef int _bind(Layer* layers, Shared* S, list packed, list bufs, list h0s, list c0s,
               list hns, list cns, list layer_params) except -1:
    """Dimensions, weights, activations and buffer pointers of every layer (the arrays come
    from model.LSTM, which checked every shape, dtype and stride)."""
    cdef int k, d, itemsize
    cdef Layer* L
    x0 = bufs[0][0]
    itemsize = x0.itemsize
    _describe(packed, x0.shape[0], x0.shape[1], itemsize, layers, S)
    S.plat = _plat
    for k in range(len(packed)):
        xin, xout, xmerged = bufs[k]
        L = &layers[k]
        merge, L.rev, L.out_proc, dir_acts = layer_params[k]
        L.merge = merge
        for d in range(L.D):
            _set_acts(&L.acts[d], dir_acts[d])
        L.mout = _ptr(xmerged)
        if xmerged is not None:
            L.ms_t = _stride(xmerged, 0, itemsize)
            L.ms_b = _stride(xmerged, 1, itemsize)
        L.x = _ptr(xin)
        L.xs_t = _stride(xin, 0, itemsize)
        L.xs_b = _stride(xin, 1, itemsize)
        L.out = _ptr(xout)
        L.os_t = _stride(xout, 0, itemsize)
        L.os_b = _stride(xout, 1, itemsize)
        L.h0 = _ptr(h0s[k])
        L.c0 = _ptr(c0s[k])
        L.hn = _ptr(hns[k])
        L.cn = _ptr(cns[k])
    return itemsize


def forward(list packed, list bufs, list h0s, list c0s, list hns, list cns,
            int[::1] lens, int[::1] perm, list layer_params, int nthreads):
    """Run a validated stack: bind the buffers, plan, release the GIL, run. All arrays
    come from model.LSTM.forward, which checked every shape, dtype and stride."""
    cdef Layer layers[LI_MAX_LAYERS]
    cdef Shared S
    cdef int nlayers = len(packed), itemsize, status
    itemsize = _bind(layers, &S, packed, bufs, h0s, c0s, hns, cns, layer_params)
    S.lens = &lens[0]
    S.perm = &perm[0]
    _plan(layers, nlayers, &S, nthreads, itemsize)
    if itemsize == 4:
        with nogil:
            status = _run_stack(layers, nlayers, &S, nthreads, NULL, <float>0)
    else:
        with nogil:
            status = _run_stack(layers, nlayers, &S, nthreads, NULL, <double>0)
    if status != 0:
        raise MemoryError("could not allocate the LSTM workspace")


cdef class CallPlan:
    """A float32 forward pass prepared for one input shape (T, B) at full length, with
    its state carried from call to call: the layers bound, the schedule planned and the
    serial / split layers' workspaces allocated once, the state in two buffer sets used
    in turn (this call's initial state is the previous call's final one). `try_run(x,
    out)` checks x and out with a few C comparisons (dtype, shape, contiguity,
    finiteness), points the first and last layers at them and runs: nothing is
    allocated but the result (none with `out`). The fast path of lstm_infer.serving.Stream; not
    thread-safe (the Stream's lock serialises its calls)."""
    cdef Layer layers[LI_MAX_LAYERS]
    cdef Shared S
    cdef int nlayers, nthreads, In, F, cur
    cdef readonly int T, B         # the call shape it was built for
    cdef public int layout         # what try_run takes: LAYOUT_* (a Stream's chunk form)
    cdef public bint carry         # True: each call starts from the last one's final state;
                                   # False: always from states[0] (final state -> states[1])
    cdef void* ws[LI_MAX_LAYERS]
    cdef list keep                 # every array the Layers point into
    cdef readonly list states      # [(hs, cs), (hs, cs)]: per layer (D, B, H_out) / (D, B, H)
    cdef int[::1] lens, perm

    def __init__(self, list packed, list bufs, list layer_params, int nthreads, list states):
        """bufs: as forward's, per layer (input, output, merged or None); the first
        layer's input and the last layer's final output (output, or merged if merged)
        are placeholders of the call's shapes that each call replaces. states: two
        (hs, cs) pairs of lists of per-layer arrays; states[0] holds the initial state."""
        cdef int k
        cdef long n
        cdef Layer* L
        import numpy as np
        x0 = bufs[0][0]
        final = bufs[len(bufs) - 1]  # (no negative indexing: wraparound is off)
        last = final[2] if final[2] is not None else final[1]
        if x0.dtype != np.float32 or x0.ndim != 3 or last.ndim != 3:
            raise ValueError("a CallPlan runs float32 models on (T, B, I) inputs")
        self.T, self.B, self.In = x0.shape
        self.F = last.shape[2]
        self.nlayers = len(packed)
        self.nthreads = nthreads
        self.states = states
        self.cur = 0
        self.carry = True
        self.keep = [packed, bufs, layer_params]
        self.lens = np.full(self.B, self.T, dtype=np.intc)
        self.perm = np.arange(self.B, dtype=np.intc)
        (hs, cs), (hn, cn) = states
        _bind(self.layers, &self.S, packed, bufs, hs, cs, hn, cn, layer_params)
        self.S.lens = &self.lens[0]
        self.S.perm = &self.perm[0]
        _plan(self.layers, self.nlayers, &self.S, nthreads, 4)
        for k in range(self.nlayers):
            self.ws[k] = NULL
        for k in range(self.nlayers):
            L = &self.layers[k]
            if L.schedule == SCHED_TASKS:
                continue
            n = _layer_ws_elems(L, &self.S) * sizeof(float)
            self.ws[k] = li_alloc64(n)
            if self.ws[k] == NULL:
                raise MemoryError(f"could not allocate a {n}-byte LSTM workspace")
            memset(self.ws[k], 0, n)

    def __dealloc__(self):
        cdef int k
        for k in range(self.nlayers):
            free(self.ws[k])

    @property
    def state(self):
        """The state the next call starts from: (hs, cs), per-layer arrays (live buffers:
        copy them to keep them)."""
        return self.states[self.cur]

    def try_run(self, x, out=None):
        """One call on a chunk in the form `layout` says -- (T, B, I) time-major, (B, T, I)
        batch-first, or (T, I) unbatched -- returning the output in the same form; None
        (nothing run) when x is not a C-contiguous float32 array of this plan's shape, so
        that the caller takes its general path. Errors in out or x's values raise."""
        return self._try(x, out)

    cdef _try(self, x, out):
        cdef cnp.ndarray xa, oa
        cdef cnp.npy_intp dims[3]
        cdef int nd = 2 if self.layout == LAYOUT_UNBATCHED else 3
        if type(x) is not cnp.ndarray:
            return None
        xa = x
        # ISBEHAVED_RO: aligned and native byte order ('>f4' is NPY_FLOAT32 too)
        if cnp.PyArray_TYPE(xa) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(xa) != nd or \
                not cnp.PyArray_IS_C_CONTIGUOUS(xa) or not cnp.PyArray_ISBEHAVED_RO(xa) or \
                xa.shape[nd - 1] != self.In:
            return None
        if self.layout == LAYOUT_UNBATCHED:
            if xa.shape[0] != self.T:
                return None
        elif self.layout == LAYOUT_BATCH_FIRST:
            if xa.shape[0] != self.B or xa.shape[1] != self.T:
                return None
        elif xa.shape[0] != self.T or xa.shape[1] != self.B:
            return None
        if out is None:
            for k in range(nd):
                dims[k] = xa.shape[k]
            dims[nd - 1] = self.F
            oa = cnp.PyArray_EMPTY(nd, dims, cnp.NPY_FLOAT32, 0)
        else:
            if type(out) is not cnp.ndarray or cnp.PyArray_NDIM(<cnp.ndarray>out) != nd:
                raise ValueError(f"out must be a {nd}-D float32 array like the output; got "
                                 f"{type(out).__name__} {getattr(out, 'shape', '')}")
            oa = out
            for k in range(nd - 1):
                if oa.shape[k] != xa.shape[k]:
                    break
            else:
                if oa.shape[nd - 1] == self.F and cnp.PyArray_TYPE(oa) == cnp.NPY_FLOAT32 \
                        and cnp.PyArray_IS_C_CONTIGUOUS(oa) and cnp.PyArray_ISBEHAVED(oa):
                    self._run(xa, oa)
                    return oa
            raise ValueError(f"out must be a writeable C-contiguous float32 array of shape "
                             f"{tuple(x.shape[:nd - 1]) + (self.F,)}; got {out.dtype} "
                             f"{out.shape}")
        self._run(xa, oa)
        return oa

    def try_call(self, x):
        """try_run(x) from states[0] (carry False), the final state written to fresh
        arrays: (out, hs, cs) with per-layer (D, B, H_out) / (D, B, H) lists, or None as
        try_run. LSTM.forward's fast path (model._planned_call)."""
        cdef list hs = [], cs = []
        cdef cnp.npy_intp dims[3]
        cdef int k
        cdef Layer* L
        dims[1] = self.B
        for k in range(self.nlayers):
            L = &self.layers[k]
            dims[0] = L.D
            dims[2] = L.Hout
            hs.append(cnp.PyArray_EMPTY(3, dims, cnp.NPY_FLOAT32, 0))
            dims[2] = L.H
            cs.append(cnp.PyArray_EMPTY(3, dims, cnp.NPY_FLOAT32, 0))
        self.states[1] = (hs, cs)
        out = self._try(x, None)
        return None if out is None else (out, hs, cs)

    cdef _run(self, cnp.ndarray xa, cnp.ndarray oa):
        """The call on checked arrays whose memory is (T, B, I) / (T, B, F) row-major (a
        batch-first chunk has that layout when T or B is 1: try_run checks)."""
        cdef const float* px = <const float*>cnp.PyArray_DATA(xa)
        if not _all_finite_f32(px, <long>self.T * self.B * self.In):
            raise ValueError("x contains NaN or infinity")
        cdef int k, status, nxt = self.cur ^ 1
        cdef Layer* L
        cdef Layer* last = &self.layers[self.nlayers - 1]
        self.layers[0].x = <const char*>px
        self.layers[0].xs_t = <long>self.B * self.In
        self.layers[0].xs_b = self.In
        if last.merge:
            last.mout = <char*>cnp.PyArray_DATA(oa)
            last.ms_t, last.ms_b = <long>self.B * self.F, self.F
        else:
            last.out = <char*>cnp.PyArray_DATA(oa)
            last.os_t, last.os_b = <long>self.B * self.F, self.F
        hs, cs = self.states[self.cur]
        hn, cn = self.states[nxt]
        for k in range(self.nlayers):
            L = &self.layers[k]
            L.h0, L.c0 = _ptr(hs[k]), _ptr(cs[k])
            L.hn, L.cn = _ptr(hn[k]), _ptr(cn[k])
        self.S.plat = _plat
        with nogil:
            status = _run_stack(self.layers, self.nlayers, &self.S, self.nthreads, self.ws,
                                <float>0)
        if status != 0:
            raise MemoryError("could not allocate the LSTM workspace")
        if self.carry:
            self.cur = nxt

    def __reduce__(self):
        raise TypeError("CallPlan does not pickle; pickle the LSTM model")


cdef enum:  # CallPlan.layout: the form of the chunks try_run takes
    LAYOUT_TIME_MAJOR = 0   # (T, B, I)
    LAYOUT_BATCH_FIRST = 1  # (B, T, I): (T, B, I)-ordered memory only when T or B is 1
    LAYOUT_UNBATCHED = 2    # (T, I), B = 1
LAYOUTS = {"time_major": LAYOUT_TIME_MAJOR, "batch_first": LAYOUT_BATCH_FIRST,
           "unbatched": LAYOUT_UNBATCHED}


cdef bint _all_finite_f32(const float* p, long n) noexcept nogil:
    """No NaN or infinity among n floats: an OR of exponent tests (vectorisable)."""
    cdef const uint32_t* u = <const uint32_t*>p
    cdef uint32_t bad = 0
    cdef long j
    for j in range(n):
        bad |= (u[j] & 0x7f800000u) == 0x7f800000u
    return bad == 0


cdef bint _all_finite_f64(const double* p, long n) noexcept nogil:
    cdef const uint64_t* u = <const uint64_t*>p
    cdef uint64_t bad = 0
    cdef long j
    for j in range(n):
        bad |= (u[j] & 0x7ff0000000000000u) == 0x7ff0000000000000u
    return bad == 0


def all_finite_contiguous(a):
    """True / False whether a C-contiguous float32 or float64 array holds only finite
    values (read once, no temporary, no GIL); None for any other array (the caller's
    numpy path decides)."""
    if type(a) is not cnp.ndarray:
        return None
    cdef cnp.ndarray arr = a
    cdef long n = cnp.PyArray_SIZE(arr)
    cdef int t = cnp.PyArray_TYPE(arr)
    cdef bint ok
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or t not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
        return None
    cdef const void* p = cnp.PyArray_DATA(arr)
    if n < 65536:
        return _all_finite_f32(<const float*>p, n) if t == cnp.NPY_FLOAT32 else \
            _all_finite_f64(<const double*>p, n)
    with nogil:
        ok = _all_finite_f32(<const float*>p, n) if t == cnp.NPY_FLOAT32 else \
            _all_finite_f64(<const double*>p, n)
    return ok


# ---------------------------------------------------------------- kernel shims (tests)
# Thin entries to single kernels of the platform table in use, so tests can compare
# each with numpy per dtype and SIMD level (sklearn's *_memview shims). Shapes are
# checked here; the kernels see nothing else.

def _check_rows(a, name, int cols):
    if a.ndim != 2 or a.shape[1] != cols:
        raise ValueError(f"{name} must have shape (M, {cols}); got {a.shape}")


def kernel_block_projection(PackedDirection p, const float[:, ::1] X):
    """G = X W_ih^T (M, 4Hp), interleaved rows, no bias: the float32 block GEMM
    (li_gemm_* for p's W_ih type) or, for the int8 mode, quantize + li_q8_mm."""
    import numpy as np
    _check_rows(np.asarray(X), "X", p.In)
    cdef int M = X.shape[0]
    cdef long ldq = _round_up(p.In, LI_Q8_KPAD)
    G = np.zeros((M, 4 * p.Hp), np.float32)
    cdef float[:, ::1] Gv = G
    Q = np.zeros((_round16(M), ldq), np.uint8)
    Qs = np.zeros(_round16(M), np.float32)
    cdef uint8_t[:, ::1] Qv = Q
    cdef float[::1] Qsv = Qs
    if p.itemsize != 4 or M == 0:
        raise ValueError("a float32 model and M >= 1 rows are needed")
    with nogil:
        if p.w.wt_ih == LI_WT_Q8:
            _plat.quant(M, p.In, &X[0, 0], p.In, &Qv[0, 0], ldq, &Qsv[0])
            _q8_kernel(&_plat, &p.w)(
                M, p.Hp // LI_GROUP, <int>(ldq // 4), &Qv[0, 0], ldq, &Qsv[0],
                     <const int8_t*>p.w.w_ih_pan, p.w.w_ih_colsum, p.w.w_ih_scale, &Gv[0, 0],
                     4 * p.Hp, 1, 0, NULL, NULL, 0, NULL, 0, NULL, 0, NULL, 0)
        else:
            _plat.f32.gemm[p.w.wt_ih](M, p.Hp // LI_GROUP, p.In, &X[0, 0], p.In, p.w.w_ih_pan,
                                      p.w.w_ih_scale, &Gv[0, 0], 4 * p.Hp)
    return G


def kernel_step(PackedDirection p, const float[:, ::1] G, const float[:, ::1] Hprev,
                const float[:, ::1] C, dict acts, int flip=0):
    """One recurrent step of the float32 kernels: z = G + Hprev W_hh^T + bias (+ peepholes),
    the gates; returns (C', Hc') with Hc' = o * act(c') (before any projection). G is
    (M, 4Hp) interleaved, Hprev (M, Kh), C (M, Hp)."""
    import numpy as np
    _check_rows(np.asarray(G), "G", 4 * p.Hp)
    _check_rows(np.asarray(Hprev), "Hprev", p.Kh)
    _check_rows(np.asarray(C), "C", p.Hp)
    cdef int M = G.shape[0]
    if p.itemsize != 4 or M == 0 or Hprev.shape[0] != M or C.shape[0] != M:
        raise ValueError("a float32 model and G, Hprev, C of the same M >= 1 rows are needed")
    cdef li_acts a
    _set_acts(&a, acts)
    Z = np.array(G, dtype=np.float32)
    Cn = np.array(C, dtype=np.float32)
    Hc = np.zeros((M, p.Hp), np.float32)
    cdef float[:, ::1] Zv = Z
    cdef float[:, ::1] Cv = Cn
    cdef float[:, ::1] Hv = Hc
    cdef long ldq = _round_up(p.Kh, LI_Q8_KPAD)
    Q = np.zeros((_round16(M), ldq), np.uint8)
    Qs = np.zeros(_round16(M), np.float32)
    cdef uint8_t[:, ::1] Qv = Q
    cdef float[::1] Qsv = Qs
    with nogil:
        if p.w.wt_hh == LI_WT_Q8:
            _plat.quant(M, p.Kh, &Hprev[0, 0], p.Kh, &Qv[0, 0], ldq, &Qsv[0])
            _q8_kernel(&_plat, &p.w)(
                M, p.Hp // LI_GROUP, <int>(ldq // 4), &Qv[0, 0], ldq, &Qsv[0],
                     <const int8_t*>p.w.w_hh_pan, p.w.w_hh_colsum, p.w.w_hh_scale, &Zv[0, 0],
                     4 * p.Hp, 0, 1, <const float*>p.w.bias, <const float*>p.w.peep, p.Hp,
                     &Cv[0, 0], p.Hp, &Hv[0, 0], p.Hp, &a, flip)
        else:
            _plat.f32.step[p.w.wt_hh](M, p.Hp // LI_GROUP, p.Hp, p.Kh, &Zv[0, 0], 4 * p.Hp,
                                      p.w.w_hh_pan, p.w.w_hh_scale, &Hprev[0, 0], p.Kh,
                                      <const float*>p.w.bias, <const float*>p.w.peep,
                                      &Cv[0, 0], p.Hp, &Hv[0, 0], p.Hp, &a, flip)
    return Cn, Hc


def kernel_projection(PackedDirection p, const float[:, ::1] Hc):
    """h = Hc W_hr^T (M, Pp) with the small-batch GEMV (li_gemv_pan16)."""
    import numpy as np
    _check_rows(np.asarray(Hc), "Hc", p.Hp)
    if p.P == 0 or p.itemsize != 4 or Hc.shape[0] == 0:
        raise ValueError("a float32 projected model and M >= 1 rows are needed")
    cdef int M = Hc.shape[0]
    Y = np.zeros((M, p.Kh), np.float32)
    cdef float[:, ::1] Yv = Y
    with nogil:
        _plat.f32.gemv_pan16(M, p.Pp // LI_GROUP, p.Hp, <const float*>p.w.w_hr_pan,
                             &Hc[0, 0], p.Hp, &Yv[0, 0], p.Kh)
    return Y


def kernel_gates_f64(PackedDirection p, const double[:, ::1] Z, const double[:, ::1] C,
                     dict acts):
    """The float64 gate pass (li_gates_rows_f64): Z (M, 4Hp) = x W_ih^T + h W_hh^T,
    interleaved, no bias; returns (C', Hc')."""
    import numpy as np
    _check_rows(np.asarray(Z), "Z", 4 * p.Hp)
    _check_rows(np.asarray(C), "C", p.Hp)
    if p.itemsize != 8 or Z.shape[0] != C.shape[0]:
        raise ValueError("a float64 model and Z, C of the same rows are needed")
    cdef int M = Z.shape[0]
    cdef li_acts a
    _set_acts(&a, acts)
    Cn = np.array(C, dtype=np.float64)
    Hc = np.zeros((M, p.Hp), np.float64)
    cdef double[:, ::1] Cv = Cn
    cdef double[:, ::1] Hv = Hc
    if M:
        with nogil:
            li_gates_rows_f64(M, p.Hp, &Z[0, 0], 4 * p.Hp, <const double*>p.w.bias,
                              <const double*>p.w.peep, &Cv[0, 0], p.Hp, &Hv[0, 0], p.Hp, &a)
    return Cn, Hc


def kernel_gemm_nt(const double[:, ::1] A, const double[:, ::1] B):
    """C = A @ B.T through the row-major BLAS wrapper _gemm_nt (float64)."""
    import numpy as np
    if A.shape[1] != B.shape[1] or A.shape[0] == 0 or B.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"A (M, K) and B (N, K) with M, N, K >= 1; got "
                         f"({A.shape[0]}, {A.shape[1]}), ({B.shape[0]}, {B.shape[1]})")
    C = np.zeros((A.shape[0], B.shape[0]), np.float64)
    cdef double[:, ::1] Cv = C
    with nogil:
        _gemm_nt(<int>A.shape[0], <int>B.shape[0], <int>A.shape[1], 1.0, &A[0, 0],
                 <int>A.shape[1], &B[0, 0], <int>B.shape[1], 0.0, &Cv[0, 0], <int>B.shape[0])
    return C
