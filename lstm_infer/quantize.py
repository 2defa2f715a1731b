"""Weight quantization (DESIGN §5).

Modes (``model.quantize(mode, input_weights=False)``):
  int8          int8 weights (W_ih and W_hh, per output row) AND activations: x and h
                are quantized dynamically per step and row (u8, zero point 128,
                scale max|row| / 127), int32 accumulation: Intel AMX tiles for >= 8 rows
                where the CPU has them and Linux grants them, AVX-512 VNNI vpdpbusd; on
                AVX2, vpmaddubsw on |q - 128| and the weight signed by q - 128
                (pair sums <= 2*127*128: no saturation), or int16-widened vpmaddwd
                for panels holding -128; portable C otherwise. All paths produce
                identical int32 accumulators, dequantized and gated in
                float32. What onnxruntime's DynamicQuantizeLSTM and PyTorch's dynamic
                quantized LSTM do, with per-row instead of per-tensor activation scales.
  bf16          bfloat16 compute: W_ih and W_hh stored as bfloat16 (round to nearest
                even) AND the activations x and h rounded to bfloat16 before each GEMM;
                float32 accumulation, gates, state and projection -- the numerics of
                Intel AMX tdpbf16ps / AVX512-BF16 vdpbf16ps, OpenVINO's default on AMX
                CPUs (every bf16 x bf16 product is exact in float32). Today it runs on
                the bf16-storage kernels after a rounding pass (every ISA); AMX /
                AVX512-BF16 kernels are not written yet (no such CPU to test them on).
  int8-weights  weights as int8, symmetric per output row (each of the 4H rows has
                its own float32 scale = max|row| / 127); activations stay float32.
  float16-weights   weights stored as IEEE half; maths in float32.
  bfloat16-weights  weights stored as bfloat16 (round to nearest even); maths in float32.

The weight-only modes were called "float16" and "bfloat16" before bf16 compute existed:
those names are still accepted (and files saved under them load), and mean the
weight-only modes.

Which weights: by default only the recurrent W_hh, the matrix every time step
streams (the batch-1 cost) -- except "int8" and "bf16", which always quantize both. W_ih feeds a compute-bound GEMM read once per block
of steps, so quantizing it buys memory, not speed, and it dominates the error:
measured on lat1024 (I = H = 1024, |x| <= 3) vs float64, int8 max abs error
1.45e-3 with W_hh only and 9.9e-3 with both (bfloat16: 4.3e-4 vs 3.2e-3).
``input_weights=True`` quantizes W_ih too, for the memory.
Maths is float32 in every mode: the kernels widen the weights in registers. The
bias, peepholes and the projection W_hr stay float32 (small; their precision
dominates nothing).

A quantized model's ``weights`` hold the stored forms: ``w_ih`` int8 plus
``w_ih_scale`` (int8-weights), float16 arrays, or uint16 bfloat16 bit patterns.
``LSTM(m.weights, **m.options)`` and the native format rebuild it bit-exactly.
"""
from __future__ import annotations

import numpy as np

MODES = ("int8", "bf16", "int8-weights", "float16-weights", "bfloat16-weights")
# the weight-only modes' names before the bf16 compute mode: accepted, and in old files
ALIASES = {"float16": "float16-weights", "bfloat16": "bfloat16-weights"}
# compute modes: both matrices are always quantized (their activations are too)
COMPUTE_MODES = ("int8", "bf16")
_NAMES = ("w_ih", "w_hh")
_STORED_DTYPE = {"int8": np.int8, "int8-weights": np.int8, "float16-weights": np.float16,
                 "bfloat16-weights": np.uint16, "bf16": np.uint16}


def check_mode(mode):
    """The mode's name (an old alias gives its current name); a ValueError otherwise."""
    mode = ALIASES.get(mode, mode) if isinstance(mode, str) else mode
    if mode not in MODES:
        raise ValueError(f"quantization mode must be one of {MODES} (or the old names "
                         f"{sorted(ALIASES)}); got {mode!r}")
    return mode


def int8_rows(w: np.ndarray):
    """Symmetric per-row int8: (q int8, scale float32) with w ~= q * scale[:, None]."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def to_bf16_bits(w: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32)
    rounded = u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def stored_form(w: dict, mode: str, where: str, input_weights: bool = False) -> dict:
    """A direction dict with W_hh (and W_ih if input_weights) in `mode`'s stored form.
    Float weights are quantized; weights already in a stored form are checked and
    kept as they are."""
    out = dict(w)
    mode = check_mode(mode)
    for name in (_NAMES if input_weights or mode in COMPUTE_MODES else ("w_hh",)):
        a = np.asarray(w[name])
        scale_key = name + "_scale"
        if mode in ("int8", "int8-weights"):
            if a.dtype == np.int8:
                if w.get(scale_key) is None:
                    raise ValueError(f"{where}: int8 {name} needs {scale_key} (one float32 "
                                     f"scale per row, shape ({a.shape[0]},))")
                s = np.asarray(w[scale_key], dtype=np.float32)
                if s.shape != (a.shape[0],) or not np.isfinite(s).all():
                    raise ValueError(f"{where}: {scale_key} must be {a.shape[0]} finite values; "
                                     f"got shape {s.shape}")
                out[name], out[scale_key] = a, s
            else:
                out[name], out[scale_key] = int8_rows(_float(a, where, name))
        elif mode == "float16-weights":
            out[name] = a if a.dtype == np.float16 else _float(a, where, name).astype(np.float16)
        else:
            out[name] = a if a.dtype == np.uint16 else to_bf16_bits(_float(a, where, name))
    return out


def is_stored(a, mode: str) -> bool:
    """Is `a` in `mode`'s stored (quantized) dtype rather than float32?"""
    return np.asarray(a).dtype == _STORED_DTYPE[check_mode(mode)]


def dequantize(w: dict, mode: str) -> dict:
    """The float32 weights a quantized direction dict stands for (exactly what runs)."""
    out = {k: v for k, v in w.items() if not k.endswith("_scale")}
    mode = check_mode(mode)
    for name in _NAMES:
        a = np.asarray(w[name])
        if not is_stored(a, mode):
            continue
        if mode in ("int8", "int8-weights"):
            out[name] = a.astype(np.float32) * np.asarray(w[name + "_scale"], np.float32)[:, None]
        elif mode == "float16-weights":
            out[name] = a.astype(np.float32)
        else:
            out[name] = bf16_bits_to_f32(a)
    return out


def _float(a, where, name):
    if a.dtype.kind != "f":
        raise TypeError(f"{where}: {name} must be float weights to quantize (or the stored "
                        f"form); got dtype {a.dtype}")
    return a.astype(np.float32)
