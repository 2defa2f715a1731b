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
  3. projection (proj_size): own GEMV (<= SMALL_BATCH rows) or BLAS GEMM
Tb is chosen so the block's workspace stays small (64 KB when the layer's
weights fit in half the L2, else 1 MB): it never grows with T.

Quantized models (int8-weights, float16, bfloat16) keep float32 maths: the same
kernels read int8 / half panels and widen them in registers (li_step_i8 ...),
int8 with a per-output-row scale applied to the accumulators.

Buffers (all row-major, dtype T):
  float32: w_ih_pan (Hp/16, I, 64), w_hh_pan (Hp/16, Kh, 64): per group of 16
           units, the 64 gate rows [i f g o] x 16 transposed into a panel
  float64: w_ih (4Hp, I), w_hh (4Hp, Kh): the same rows, row-major, for BLAS
  Kh = Pp (projected) or Hp
  bias     (4Hp,) ; peep (3, Hp) = p_i, p_f, p_o ; w_hr (Pp, Hp) ; w_hr_pan (Pp/16, Hp, 16)
  Hp = H rounded up to 16, Pp = P rounded up to 16; padded units have zero
  weights in and out, so they never influence real units.

Parallelism: a layer is split into tasks (direction x batch slice), each an
independent time loop, run on OpenMP threads; no per-step synchronisation. When
there are more threads than tasks and a task is one sequence (batch 1, the
latency case), its gate groups are split between the threads instead: each
computes its columns of the input projection and its units of every step, and
the threads meet at a spin barrier once per step (every one reads the whole h).
Batches are sorted by length (descending) in Python, so the rows still active
at step s are a prefix of each slice (as in cuDNN packed sequences).
Reverse directions read x[len_b - 1 - s] for row b at step s: each sequence
is reversed within its own span.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport free
from libc.string cimport memcpy, memset
from libc.limits cimport INT_MAX
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
WEIGHT_TYPES = {"float32": LI_WT_F32, "int8-weights": LI_WT_I8, "float16": LI_WT_F16,
                "bfloat16": LI_WT_BF16, "int8": LI_WT_Q8}
ACTIVATION_CODES = {"sigmoid": LI_ACT_SIGMOID, "tanh": LI_ACT_TANH, "relu": LI_ACT_RELU,
                    "linear": LI_ACT_LINEAR, "hard_sigmoid": LI_ACT_HARD_SIGMOID}

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
    SMALL_BATCH = 8      # float32: own GEMV for the projection up to this many rows
    SPLIT_MIN_WEIGHTS = 131072  # W_hh elements from which a batch-1 step is split across threads

cdef struct DirW:
    int wt_ih, wt_hh         # weight types of the float32 panels (LI_WT_*: f32, i8, f16, bf16)
    const float* w_ih_scale  # per-column scales (int8), else NULL
    const float* w_hh_scale
    const int32_t* w_ih_colsum   # int8 mode: column sums for the zero-point correction
    const int32_t* w_hh_colsum
    const void* w_ih
    const void* w_hh
    const void* w_ih_pan
    const void* w_hh_pan
    const void* bias
    const void* peep
    const void* w_hr
    const void* w_hr_pan

cdef struct Layer:
    int D, In, H, Hp, P, Pp, Kh, Hout
    int rev                  # unidirectional layer reading sequences backwards
    int out_proc             # outputs in processing order (Keras go_backwards)
    int merge                # 0 concat; 1 sum, 2 mul, 3 ave of the two directions into mout
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


cdef inline long _round16(long n) noexcept nogil:
    return (n + 15) & ~15


cdef inline long _wsize(int wt) noexcept nogil:
    """Bytes per weight of a float32-kernel panel type (LI_WT_*)."""
    return 4 if wt == 0 else (1 if wt == 1 or wt == LI_WT_Q8 else 2)


cdef int _run_task(const Layer* L, const Shared* S, int task, int part, int nparts,
                   li_barrier* bar, floating* shared_ws, floating dummy) noexcept nogil:
    """One direction x batch slice of one layer: the whole time loop. Returns 0, or -1
    if the workspace could not be allocated.

    With nparts > 1 (one batch-1 sequence split across threads), this thread computes
    the gate groups [g0, g1) of every step: its columns of the input projection, its
    units of h and c; the threads share the workspace and meet at a barrier after each
    step, since every thread reads the whole h."""
    cdef int d = task % L.D
    cdef int sl = task // L.D
    cdef int B = S.B
    cdef int j0 = <int>((<long>sl * B) // S.nslices)
    cdef int j1 = <int>((<long>(sl + 1) * B) // S.nslices)
    cdef int Bs = j1 - j0
    if Bs <= 0:
        return 0
    cdef const int* lens = S.lens + j0
    cdef const int* perm = S.perm + j0
    cdef int In = L.In, H = L.H, Hp = L.Hp, Kh = L.Kh, Hout = L.Hout, Pp = L.Pp
    cdef int G4 = 4 * Hp
    cdef bint reverse = d == 1 or L.rev
    cdef const li_acts* acts = &L.acts[d]
    cdef bint proj = L.P > 0
    cdef DirW w = L.w[d]
    cdef const floating* w_ih = <const floating*>w.w_ih
    cdef const floating* w_hh = <const floating*>w.w_hh
    cdef const floating* bias = <const floating*>w.bias
    cdef const floating* peep = <const floating*>w.peep
    cdef const floating* w_hr = <const floating*>w.w_hr
    cdef const floating* x = <const floating*>L.x
    cdef floating* out = <floating*>L.out
    cdef const floating* h0 = <const floating*>L.h0
    cdef const floating* c0 = <const floating*>L.c0
    cdef floating* hn = <floating*>L.hn
    cdef floating* cn = <floating*>L.cn
    cdef int Tb = S.block_t
    cdef int nsteps = lens[0]
    # this part's gate groups and hidden units (all of them when nparts == 1)
    cdef int g0 = part * (Hp // 16) // nparts
    cdef int g1 = (part + 1) * (Hp // 16) // nparts
    cdef int ng = g1 - g0
    cdef int uh0 = 0 if nparts == 1 else g0 * 16
    cdef int uh1 = Hout if nparts == 1 else min(g1 * 16, Hout)
    cdef int uc1 = H if nparts == 1 else min(g1 * 16, H)
    cdef int sense = 0
    cdef const char* w_ih_pan = <const char*>w.w_ih_pan + <long>g0 * In * 64 * _wsize(w.wt_ih)
    cdef const char* w_hh_pan = <const char*>w.w_hh_pan + <long>g0 * Kh * 64 * _wsize(w.wt_hh)
    cdef const float* sc_ih = w.w_ih_scale + g0 * 64 if w.w_ih_scale != NULL else NULL
    cdef const float* sc_hh = w.w_hh_scale + g0 * 64 if w.w_hh_scale != NULL else NULL
    cdef const floating* peep_g = peep + g0 * 16 if peep != NULL else NULL

    # workspace: Xg (Tb*Bs, In) | G (Tb*Bs, 4Hp) | h ping-pong 2 x (Bs, Kh) | C (Bs, Hp) | Hc (Bs, Hp)
    # every sub-buffer starts on a 64-byte boundary (sizes rounded up to 16 elements)
    cdef long n_xg = _round16(<long>Tb * Bs * In)
    cdef long n_g = _round16(<long>Tb * Bs * G4)
    cdef long n_h = _round16(<long>Bs * Kh)
    cdef long n_c = _round16(<long>Bs * Hp)
    # int8 mode: u8 activations (rows rounded up to 16 and K to 64 for AMX tiles; the pad
    # is zero-point filled by the quantizer, pad rows are computed and discarded) + scales
    cdef bint q8 = w.wt_hh == LI_WT_Q8
    cdef long ldq_x = ((In + 63) // 64) * 64
    cdef long ldq_h = ((Kh + 63) // 64) * 64
    cdef long n_q = _round16(_round16(<long>Tb * Bs) * (ldq_x if ldq_x > ldq_h else ldq_h) // 4 + 1) if q8 else 0
    cdef long n_qs = _round16(<long>Tb * Bs) if q8 else 0
    cdef size_t nbytes = (n_xg + n_g + 2 * n_h + 2 * n_c + n_q + n_qs) * sizeof(floating)
    cdef floating* ws = shared_ws
    if ws == NULL:
        ws = <floating*>li_alloc64(nbytes)
        if ws == NULL:
            return -1
        # padded state entries must be 0; Xg/G rows of finished sequences are never read
        memset(ws + n_xg + n_g, 0, (2 * n_h + 2 * n_c + n_q) * sizeof(floating))
    cdef floating* Xg = ws
    cdef floating* G = Xg + n_xg
    cdef floating* hbuf0 = G + n_g
    cdef floating* hbuf1 = hbuf0 + n_h
    cdef floating* C = hbuf1 + n_h
    cdef floating* Hc = C + n_c
    cdef uint8_t* Qb = <uint8_t*>(Hc + n_c)
    cdef float* Qs = <float*>(Hc + n_c + n_q)
    cdef floating* hp
    cdef floating* hnx
    cdef floating* tmp
    cdef floating* hcell
    cdef const floating* Gs
    cdef const floating* xblk
    cdef long ldx
    cdef int b, s, s0, tb, na, na_next, t, row, k
    cdef long ob = d * Hout

    # initial state (sorted row order); rows of length 0 finish right here
    if part == 0:
        for b in range(Bs):
            row = perm[b]
            memcpy(hbuf0 + <long>b * Kh, h0 + (<long>d * B + row) * Hout, Hout * sizeof(floating))
            memcpy(C + <long>b * Hp, c0 + (<long>d * B + row) * H, H * sizeof(floating))
            if lens[b] == 0:
                memcpy(hn + (<long>d * B + row) * Hout, hbuf0 + <long>b * Kh,
                       Hout * sizeof(floating))
                memcpy(cn + (<long>d * B + row) * H, C + <long>b * Hp, H * sizeof(floating))
    if nparts > 1:
        li_barrier_wait(bar, &sense)
    hp = hbuf0
    hnx = hbuf1
    hcell = Hc if proj else hnx

    na = Bs
    while na > 0 and lens[na - 1] <= 0:
        na -= 1
    s0 = 0
    while s0 < nsteps:
        tb = Tb if nsteps - s0 > Tb else nsteps - s0
        # the block's input rows: one row is read in place (a negative stride walks a
        # reversed sequence); several are gathered (reverse: each within its own span)
        if Bs == 1:
            t = lens[0] - 1 - s0 if reverse else s0
            xblk = x + t * L.xs_t + perm[0] * L.xs_b
            ldx = -L.xs_t if reverse else L.xs_t
        else:
            k = na
            for s in range(s0, s0 + tb):
                while k > 0 and lens[k - 1] <= s:
                    k -= 1
                for b in range(k):
                    t = lens[b] - 1 - s if reverse else s
                    memcpy(Xg + (<long>(s - s0) * Bs + b) * In,
                           x + t * L.xs_t + perm[b] * L.xs_b, In * sizeof(floating))
            xblk = Xg
            ldx = In
        if floating is float:
            if q8:
                _plat.quant(tb * Bs, In, xblk, ldx, Qb, ldq_x, Qs)
                _plat.q8(tb * Bs, Hp // 16, <int>(ldq_x // 4), Qb, ldq_x, Qs,
                    <const int8_t*>w.w_ih_pan, w.w_ih_colsum, w.w_ih_scale, G, G4, 1, 0,
                    NULL, NULL, 0, NULL, 0, NULL, 0, NULL, 0)
            else:
                _plat.f32.gemm[w.wt_ih](tb * Bs, ng, In, xblk, ldx, w_ih_pan, sc_ih, G + g0 * 64, G4)
        else:
            # BLAS needs lda >= K > 0 and takes lda as a C int: a reversed walk, a stride
            # below a row, or one above INT_MAX elements (a strided view of a >= 16 GiB
            # map) is gathered into contiguous rows first
            if Bs == 1 and (reverse or ldx < In or ldx > INT_MAX):
                for s in range(tb):
                    memcpy(Xg + <long>s * In, xblk + s * ldx, In * sizeof(floating))
                xblk = Xg
                ldx = In
            _gemm_nt(tb * Bs, G4, In, <floating>1.0, xblk, <int>ldx, w_ih, In, <floating>0.0,
                     G, G4)

        for s in range(s0, s0 + tb):
            Gs = G + <long>(s - s0) * Bs * G4
            if floating is float:
                if q8:
                    _plat.quant(na, Kh, hp, Kh, Qb, ldq_h, Qs)
                    _plat.q8(na, Hp // 16, <int>(ldq_h // 4), Qb, ldq_h, Qs,
                        <const int8_t*>w.w_hh_pan, w.w_hh_colsum, w.w_hh_scale, <float*>Gs,
                        G4, 0, 1, bias, peep, Hp, C, Hp, hcell, Hp, acts, s & 1)
                else:
                    _plat.f32.step[w.wt_hh](na, ng, Hp, Kh, <float*>Gs + g0 * 64, G4, w_hh_pan, sc_hh,
                                       hp, Kh, bias + g0 * 64, peep_g, C + g0 * 16, Hp,
                                       hcell + g0 * 16, Hp, acts, s & 1)
                if proj:
                    if na <= SMALL_BATCH:
                        _plat.f32.gemv_pan16(na, Pp // 16, Hp, <const float*>w.w_hr_pan, Hc, Hp,
                                        hnx, Kh)
                    else:
                        _gemm_nt(na, Pp, Hp, <floating>1.0, Hc, Hp, w_hr, Hp, <floating>0.0,
                                 hnx, Kh)
            else:
                _gemm_nt(na, G4, Kh, <floating>1.0, hp, Kh, w_hh, Kh, <floating>1.0,
                         <floating*>Gs, G4)
                li_gates_rows_f64(na, Hp, Gs, G4, bias, peep, C, Hp, hcell, Hp, acts)
                if proj:
                    _gemm_nt(na, Pp, Hp, <floating>1.0, Hc, Hp, w_hr, Hp, <floating>0.0,
                             hnx, Kh)
            # outputs of the active rows
            for b in range(na):
                t = lens[b] - 1 - s if (reverse and not L.out_proc) else s
                memcpy(out + t * L.os_t + perm[b] * L.os_b + ob + uh0, hnx + <long>b * Kh + uh0,
                       (uh1 - uh0) * sizeof(floating))
            # rows whose sequence ends at this step: final state
            na_next = na
            while na_next > 0 and lens[na_next - 1] <= s + 1:
                na_next -= 1
            for b in range(na_next, na):
                row = perm[b]
                memcpy(hn + (<long>d * B + row) * Hout + uh0, hnx + <long>b * Kh + uh0,
                       (uh1 - uh0) * sizeof(floating))
                memcpy(cn + (<long>d * B + row) * H + uh0, C + <long>b * Hp + uh0,
                       (uc1 - uh0) * sizeof(floating))
            na = na_next
            if nparts > 1:  # every part reads the whole h of this step next
                li_barrier_wait(bar, &sense)
            tmp = hp
            hp = hnx
            hnx = tmp
            if not proj:
                hcell = hnx
        s0 += tb
    if shared_ws == NULL:
        free(ws)
    return 0


cdef long _task_ws_elems(const Layer* L, const Shared* S) noexcept nogil:
    """Workspace elements of one task of a batch-1 layer (as _run_task lays it out)."""
    cdef long Tb = S.block_t
    return (_round16(Tb * L.In) + _round16(Tb * 4 * L.Hp) + 2 * _round16(L.Kh)
            + 2 * _round16(L.Hp))


cdef int _run_layer(const Layer* L, const Shared* S, int nthreads, floating dummy) noexcept nogil:
    cdef int ntasks = L.D * S.nslices
    cdef int task, status = 0, part, nparts
    cdef int* pstatus = &status  # written inside the parallel block (shared, not private)
    cdef li_barrier bar
    cdef floating* ws
    cdef long n
    # One batch-1 sequence and spare threads: split each step's gate groups between
    # the threads (float32, no projection; int8 and float64 run whole on one thread).
    # Only when a step streams >= 128 Ki weights: below that the per-step barrier costs
    # what the split saves (measured: kws, H=128, 0.243 -> 0.255 ms with 2 threads).
    nparts = min(nthreads, L.Hp // 16)
    if (floating is float and ntasks == 1 and S.B == 1 and nparts > 1 and L.P == 0
            and L.w[0].wt_hh != LI_WT_Q8 and <long>4 * L.Hp * L.Kh >= SPLIT_MIN_WEIGHTS):
        n = _task_ws_elems(L, S)
        ws = <floating*>li_alloc64(n * sizeof(floating))
        if ws == NULL:
            return -1
        memset(ws, 0, n * sizeof(floating))
        bar.count = 0
        bar.sense = 0
        bar.n = nparts
        with parallel(num_threads=nparts):
            part = threadid()
            if li_team_size() == nparts:
                if _run_task(L, S, 0, part, nparts, &bar, ws, dummy) != 0:
                    pstatus[0] = -1
            elif part == 0:  # fewer threads than asked: run it whole
                if _run_task(L, S, 0, 0, 1, NULL, NULL, dummy) != 0:
                    pstatus[0] = -1
        free(ws)
        return status
    if nthreads <= 1 or ntasks == 1:
        for task in range(ntasks):
            if _run_task(L, S, task, 0, 1, NULL, NULL, dummy) != 0:
                status = -1
    else:
        for task in prange(ntasks, num_threads=nthreads, schedule="static", chunksize=1):
            if _run_task(L, S, task, 0, 1, NULL, NULL, dummy) != 0:
                status = -1
    return status


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


cdef int _run_stack(Layer* layers, int nlayers, Shared* S, int nthreads,
                    floating dummy) noexcept nogil:
    cdef int k
    for k in range(nlayers):
        if _run_layer(&layers[k], S, nthreads, dummy) != 0:
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
        self.w.w_ih = _ptr(arrays.get("w_ih"))
        self.w.w_hh = _ptr(arrays.get("w_hh"))
        self.w.w_ih_pan = _ptr(arrays.get("w_ih_pan"))
        self.w.w_hh_pan = _ptr(arrays.get("w_hh_pan"))
        self.w.w_ih_scale = <const float*>_ptr(arrays.get("w_ih_scale"))
        self.w.w_hh_scale = <const float*>_ptr(arrays.get("w_hh_scale"))
        self.w.w_ih_colsum = <const int32_t*>_ptr(arrays.get("w_ih_colsum"))
        self.w.w_hh_colsum = <const int32_t*>_ptr(arrays.get("w_hh_colsum"))
        self.w.bias = _ptr(arrays["bias"])
        self.w.peep = _ptr(arrays.get("peep"))
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
    large block (1 MiB) reads W_ih fewer times (stream256: -5%)."""
    cdef int bs = (B + nslices - 1) // nslices
    cdef long row_bytes = <long>(G4 + In) * itemsize * bs
    cdef long budget = (1 << 16) if wbytes <= (1 << 20) else (1 << 20)
    # as many steps as fit (not a power of two: lat1024's 50 steps are one block, so
    # its 16 MB W_ih streams once per call instead of twice)
    cdef long tb = budget // row_bytes
    tb = 256 if tb > 256 else tb
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


cdef void _set_acts(li_acts* a, tuple p):
    (a.kf, a.af, a.bf, a.kg, a.ag, a.bg, a.kh, a.ah, a.bh, a.clip, a.cell_clip, a.cifg) = p


def forward(list packed, list bufs, list h0s, list c0s, list hns, list cns,
            int[::1] lens, int[::1] perm, list layer_params, int nthreads):
    """Run a validated stack. All arrays come from model.LSTM.forward, which
    checked every shape, dtype and stride; nothing is checked here."""
    cdef int nlayers = len(packed)
    if nlayers > LI_MAX_LAYERS:
        raise ValueError(f"at most {LI_MAX_LAYERS} layers are supported; got {nlayers}")
    cdef Layer layers[LI_MAX_LAYERS]
    cdef Shared S
    cdef int k, d, itemsize, status
    cdef Layer* L
    cdef PackedDirection p, pd
    x0 = bufs[0][0]
    itemsize = x0.itemsize
    S.T = x0.shape[0]
    S.B = x0.shape[1]
    S.lens = &lens[0]
    S.perm = &perm[0]
    # batch slices: enough tasks to feed the threads, slices of >= 4 rows
    cdef int D0 = len(packed[0])
    cdef int want = (nthreads + D0 - 1) // D0
    S.nslices = max(1, min(want, S.B // 4))
    cdef int maxG4 = 0, maxI = 0
    cdef long wbytes = 0
    for k in range(nlayers):
        dirs = packed[k]
        xin, xout, xmerged = bufs[k]
        L = &layers[k]
        L.D = len(dirs)
        merge, L.rev, L.out_proc, dir_acts = layer_params[k]
        L.merge = merge
        for d in range(L.D):
            _set_acts(&L.acts[d], dir_acts[d])
        L.mout = _ptr(xmerged)
        if xmerged is not None:
            L.ms_t = _stride(xmerged, 0, itemsize)
            L.ms_b = _stride(xmerged, 1, itemsize)
        p = dirs[0]
        if p.itemsize != itemsize:
            raise TypeError(f"layer {k}: packed for itemsize {p.itemsize}, input has {itemsize}")
        L.In, L.H, L.Hp, L.P, L.Pp, L.Kh = p.In, p.H, p.Hp, p.P, p.Pp, p.Kh
        L.Hout = p.P or p.H
        maxG4 = max(maxG4, 4 * p.Hp)
        maxI = max(maxI, p.In)
        wbytes = max(wbytes, <long>4 * p.Hp * (p.In + p.Kh) * itemsize)
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
        for d in range(L.D):
            pd = dirs[d]
            L.w[d] = pd.w
    S.block_t = _block_steps(S.T, S.B, S.nslices, maxG4, maxI, itemsize, wbytes)
    if itemsize == 4:
        with nogil:
            status = _run_stack(layers, nlayers, &S, nthreads, <float>0)
    else:
        with nogil:
            status = _run_stack(layers, nlayers, &S, nthreads, <double>0)
    if status != 0:
        raise MemoryError("could not allocate the LSTM workspace")
