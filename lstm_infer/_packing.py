"""Packing: canonical weights -> the layouts the kernels read, and back.

The layout constants come from the extension (_kernels.GROUP, PANEL, Q8_KPAD,
ALIGN, WEIGHT_TYPES), which takes them from _simd/lstm_abi.h: nothing here
restates them. The result of `pack` is a `_kernels.PackedDirection`, which
checks every array's dtype, contiguity, alignment and size against the layout
before any pointer reaches the kernels.

Layouts (see also the Design block of _kernels.pyx):
  rows:    gate rows interleaved in groups of GROUP units, [i f g o] x GROUP per
           group (4 Hp rows, Hp = H rounded up to GROUP, zero padding rows)
  panels:  per group, W^T: (Hp/GROUP, K, PANEL), so a kernel streams one group's
           weights row by row (float32, int8-weights, float16 / bfloat16 storage)
  quads:   int8 mode, (Hp/GROUP, K4, PANEL, 4) with K padded to Q8_KPAD: the
           vpdpbusd / AMX B layout; plus colsum = 128 * column sums (zero point)
  bf16:    panels with columns c, c + 16 of each 32-column half paired per word
  float64: row-major (4 Hp, K) matrices for BLAS
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _kernels
from . import quantize as quantize_mod
from ._validate import LAYER_NORM

GROUP, PANEL, Q8_KPAD, ALIGN = _kernels.GROUP, _kernels.PANEL, _kernels.Q8_KPAD, _kernels.ALIGN
WT = _kernels.WEIGHT_TYPES


def weight_type(mode: str) -> int:
    """The panel weight type (WEIGHT_TYPES) a quantization mode stores: the bf16 compute
    mode reads the bfloat16 panels of the weight-only mode."""
    return WT["bfloat16-weights" if mode == "bf16" else mode]


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def aligned(a: np.ndarray, align: int = ALIGN) -> np.ndarray:
    """A read-only C-contiguous copy of `a` whose data starts on an `align`-byte boundary.

    numpy only guarantees 16 bytes; a 64-byte vector load that straddles two
    cache lines makes the batch-1 GEMV ~3x slower (measured). Arrays that are
    already aligned (large ones usually are: page-aligned) are kept, not copied."""
    if not (a.flags.c_contiguous and a.ctypes.data % align == 0):
        out = aligned_empty(a.shape, a.dtype, align)
        out[...] = a
        a = out
    a.setflags(write=False)
    return a


def aligned_empty(shape, dtype, align: int = ALIGN) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an `align`-byte boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(n + align, dtype=np.uint8)
    off = (-buf.ctypes.data) % align
    return buf[off:off + n].view(dtype).reshape(shape)


def interleave_rows(w4: np.ndarray, H: int, Hp: int, out: Optional[np.ndarray] = None):
    """(4H, ...) in gate order i,f,g,o -> (4Hp, ...) grouped as
    [group 0: i(16) f(16) g(16) o(16)][group 1: ...], zero rows for padding.

    Written in one pass into `out` (new if None), so packing a large matrix costs one
    copy, not three (a loaded model's peak memory is the file plus the model)."""
    rest = w4.shape[1:]
    if out is None:
        out = np.empty((4 * Hp,) + rest, dtype=w4.dtype)
    dst = out.reshape((Hp // GROUP, 4, GROUP) + rest)
    src = w4.reshape((4, H) + rest)
    nf = H // GROUP  # full groups
    dst[:nf] = np.moveaxis(src[:, :nf * GROUP].reshape((4, nf, GROUP) + rest), 0, 1)
    if nf * GROUP < H or nf < Hp // GROUP:
        dst[nf:] = 0
        dst[nf, :, :H - nf * GROUP] = src[:, nf * GROUP:]
    return out


def deinterleave_rows(wi: np.ndarray, H: int) -> np.ndarray:
    """Inverse of interleave_rows: (4Hp, ...) grouped -> (4H, ...) in gate order i,f,g,o."""
    rest = wi.shape[1:]
    Hp = wi.shape[0] // 4
    g = np.moveaxis(wi.reshape((Hp // GROUP, 4, GROUP) + rest), 1, 0)
    return np.ascontiguousarray(g.reshape((4, Hp) + rest)[:, :H].reshape((4 * H,) + rest))


def panels(w: np.ndarray, width: int) -> np.ndarray:
    """(N, K) row-major -> (N/width, K, width): W^T cut into column panels."""
    N, K = w.shape
    return np.ascontiguousarray(w.reshape(N // width, width, K).transpose(0, 2, 1))


def gate_panels(w4: np.ndarray, H: int, Hp: int, K: Optional[int] = None) -> np.ndarray:
    """panels(interleave_rows(w4 zero-padded to K columns), PANEL) in one pass into an
    aligned array: (Hp/GROUP, K, PANEL) with out[g, k, gate*GROUP + u] =
    w4[gate*H + g*GROUP + u, k] (zero for padding units and columns)."""
    K0 = w4.shape[1]
    K = K0 if K is None else K
    out = aligned_empty((Hp // GROUP, K, 4, GROUP), w4.dtype)
    src = w4.reshape(4, H, K0)
    nf = H // GROUP
    out[:nf, :K0] = src[:, :nf * GROUP].reshape(4, nf, GROUP, K0).transpose(1, 3, 0, 2)
    if K0 < K:
        out[:, K0:] = 0
    if nf < Hp // GROUP:
        out[nf:] = 0
        out[nf, :K0, :, :H - nf * GROUP] = src[:, nf * GROUP:].transpose(2, 0, 1)
    return out.reshape(Hp // GROUP, K, PANEL)


def unpanel(p: np.ndarray) -> np.ndarray:
    """Inverse of panels."""
    n, K, width = p.shape
    return p.transpose(0, 2, 1).reshape(n * width, K)


def quad_panels(w: np.ndarray):
    """(N, K) int8 -> ((N/PANEL, K4, PANEL, 4) panels for vpdpbusd / AMX tiles, (N,) int32
    zero-point corrections 128 * column sum); K is zero-padded to a multiple of Q8_KPAD
    (one AMX tile row of activations)."""
    N, K = w.shape
    K4 = round_up(K, Q8_KPAD) // 4
    padded = np.zeros((N, K4 * 4), dtype=np.int8)
    padded[:, :K] = w
    pan = padded.reshape(N // PANEL, PANEL, K4, 4).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(pan), 128 * padded.sum(axis=1, dtype=np.int32)


def pair_bf16_columns(pan: np.ndarray) -> np.ndarray:
    """bf16 panels (..., 64): per 32 columns, order [c0, c16, c1, c17, ..., c15, c31], so
    one 32-bit word holds columns l (low half) and 16 + l (high half)."""
    half = PANEL // 2
    order = np.concatenate([np.stack([np.arange(GROUP), GROUP + np.arange(GROUP)], 1).ravel()
                            + base for base in range(0, PANEL, half)])
    return np.ascontiguousarray(pan[..., order])


def pack(w: dict, H: int, P: int, quant: Optional[str] = None,
         stored: Optional[dict] = None) -> "_kernels.PackedDirection":
    """Pack one layer direction's canonical weights (validated, of the model's dtype).

    float32 keeps only the panel layouts of our own kernels; float64 (BLAS path)
    keeps only row-major matrices, so no weight is stored twice. Quantized models
    pack their stored (int8 / half) weights; `stored` keeps them for `canonical`."""
    dtype = w["w_ih"].dtype
    I = w["w_ih"].shape[1]
    Hp = round_up(H, GROUP)
    Pp = round_up(P, GROUP) if P else 0
    Kh = Pp or Hp
    Hout = P or H
    arrays = {}
    wt_ih = wt_hh = WT["float32"]
    keep = None
    if quant is not None:
        keep = {k: aligned(np.array(stored[k], copy=True))
                for k in ("w_ih", "w_hh", "w_ih_scale", "w_hh_scale") if k in stored}
        q_ih = stored["w_ih"] if quantize_mod.is_stored(stored["w_ih"], quant) else w["w_ih"]
        if quantize_mod.is_stored(q_ih, quant):
            wt_ih = weight_type(quant)
        wt_hh = weight_type(quant)
        q_hh = np.zeros((4 * H, Kh), dtype=stored["w_hh"].dtype)
        q_hh[:, :Hout] = stored["w_hh"]
        if quant == "int8":  # k-quad panels and column sums
            arrays["w_ih_pan"], arrays["w_ih_colsum"] = quad_panels(interleave_rows(q_ih, H, Hp))
            arrays["w_hh_pan"], arrays["w_hh_colsum"] = quad_panels(interleave_rows(q_hh, H, Hp))
        else:
            arrays["w_ih_pan"] = panels(interleave_rows(q_ih, H, Hp), PANEL)
            arrays["w_hh_pan"] = panels(interleave_rows(q_hh, H, Hp), PANEL)
            if quant in ("bfloat16-weights", "bf16"):
                if wt_ih == wt_hh:
                    arrays["w_ih_pan"] = pair_bf16_columns(arrays["w_ih_pan"])
                arrays["w_hh_pan"] = pair_bf16_columns(arrays["w_hh_pan"])
        if quant in ("int8", "int8-weights"):
            if wt_ih != WT["float32"]:
                arrays["w_ih_scale"] = interleave_rows(stored["w_ih_scale"], H, Hp)
            arrays["w_hh_scale"] = interleave_rows(stored["w_hh_scale"], H, Hp)
    elif dtype == np.float32:
        arrays["w_ih_pan"] = gate_panels(w["w_ih"], H, Hp)
        arrays["w_hh_pan"] = gate_panels(w["w_hh"], H, Hp, Kh)
    else:
        w_hh = np.zeros((4 * H, Kh), dtype=dtype)
        w_hh[:, :Hout] = w["w_hh"]
        arrays["w_ih"] = interleave_rows(w["w_ih"], H, Hp, aligned_empty((4 * Hp, I), dtype))
        arrays["w_hh"] = interleave_rows(w_hh, H, Hp, aligned_empty((4 * Hp, Kh), dtype))
    arrays["bias"] = interleave_rows(w["b"], H, Hp)
    if "p_i" in w:
        peep = np.zeros((3, Hp), dtype=dtype)
        peep[0, :H], peep[1, :H], peep[2, :H] = w["p_i"], w["p_f"], w["p_o"]
        arrays["peep"] = peep
    if "ln_i" in w:  # layer-norm coefficients, interleaved like the bias
        arrays["ln"] = interleave_rows(np.concatenate([w[n] for n in LAYER_NORM]), H, Hp)
    if P:
        w_hr = np.zeros((Pp, Hp), dtype=dtype)
        w_hr[:P, :H] = w["w_hr"]
        arrays["w_hr"] = w_hr  # BLAS GEMM for large batches (both dtypes)
        if dtype == np.float32:
            arrays["w_hr_pan"] = panels(w_hr, GROUP)  # (Pp/16, Hp, 16) GEMV for small batches
    arrays = {n: aligned(a) for n, a in arrays.items()}
    return _kernels.PackedDirection(I, H, P, wt_ih, wt_hh, np.dtype(dtype).itemsize, arrays,
                                    quant, keep)


def canonical(p: "_kernels.PackedDirection") -> dict:
    """The canonical weights back from the packed layout (exact: a permutation)."""
    H, P = p.H, p.P
    Hout = P or H
    a = p.arrays
    if p.quant is not None:
        w = dict(p.stored)
    else:
        w_ih = a["w_ih"] if "w_ih" in a else unpanel(a["w_ih_pan"])
        w_hh = a["w_hh"] if "w_hh" in a else unpanel(a["w_hh_pan"])
        w = {"w_ih": deinterleave_rows(w_ih, H),
             "w_hh": np.ascontiguousarray(deinterleave_rows(w_hh, H)[:, :Hout])}
    w["b"] = deinterleave_rows(a["bias"], H)
    if P:
        w["w_hr"] = np.ascontiguousarray(a["w_hr"][:P, :H])
    if "peep" in a:
        w["p_i"], w["p_f"], w["p_o"] = (np.ascontiguousarray(a["peep"][j, :H]) for j in range(3))
    if "ln" in a:
        ln = deinterleave_rows(a["ln"], H)
        for j, n in enumerate(LAYER_NORM):
            w[n] = np.ascontiguousarray(ln[j * H:(j + 1) * H])
    for v in w.values():
        v.setflags(write=False)
    return w
