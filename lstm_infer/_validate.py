"""Checks shared by the model and the loaders.

Canonical weights (ONNX Runtime's ``ValidateCommonRnnInputs`` idea: one checker for
every source): `check_direction` checks one direction's dict of canonical weights --
shapes (4H, I), (4H, H_out), (4H,), (P, H), peepholes (H,), a real dtype, finite
values -- and `check_layer` both directions of a layer. The model runs them on what it
is given; an adapter that reads canonical-layout tensors (torch) runs them on its
tensors' shapes (``dtype=None``: nothing is converted) with ``names`` mapping each
canonical name to the source's tensor name, so the message names the tensor the user
has; an adapter's own error class comes from `lstm_infer._build.build`. `check_shape`
is the one shape message ("{name} must have shape {formula} = {shape}; got ...").

Memory: the checks must not cost any. The two failure modes they close: a check
that allocates a temporary of the input's *logical* size (a 4 KiB broadcast input
once made the NaN check allocate a 1 GiB bool array), and an allocation sized by a
hostile shape that fails deep inside numpy with a MemoryError instead of a message
naming it.
"""
from __future__ import annotations

import os
from typing import Mapping, NamedTuple, Optional

import numpy as np

from . import _kernels

# Elements per chunk of the finiteness check: its bool temporary stays <= 256 KiB.
_FINITE_CHUNK = 1 << 18

# The kernels index time, batch and feature positions with C ints.
MAX_DIM = 2 ** 31 - 1


class AllocationError(ValueError, MemoryError):
    """A request whose buffers cannot be allocated: refused before allocating.

    A ValueError (bad input, named) and a MemoryError (what it would have been)."""


def _distinct(a: np.ndarray) -> np.ndarray:
    """`a` with every zero-stride (broadcast) axis reduced to length 1: the same values,
    each distinct memory element once."""
    if a.ndim == 0 or all(s != 0 for s in a.strides):
        return a
    return a[tuple(slice(0, 1) if s == 0 and n > 1 else slice(None)
                   for s, n in zip(a.strides, a.shape))]


def all_finite(a: np.ndarray) -> bool:
    """True if no element of the float array `a` is NaN or infinite.

    Reads each distinct element once and allocates at most _FINITE_CHUNK bools,
    whatever the logical size of `a` (none for a C-contiguous float32 / float64 array:
    a C loop over its bits)."""
    fast = _kernels.all_finite_contiguous(a)
    if fast is not None:
        return fast
    if a.size <= _FINITE_CHUNK:  # the common case: one call, a small temporary
        return bool(np.isfinite(a).all())
    a = _distinct(a)
    if a.size <= _FINITE_CHUNK or a.ndim == 0:
        return bool(np.isfinite(a).all())
    per_row = max(1, a.size // a.shape[0])
    step = max(1, _FINITE_CHUNK // per_row)
    if step == 1 and per_row > _FINITE_CHUNK and a.ndim > 1:
        return all(all_finite(row) for row in a)
    return all(bool(np.isfinite(a[i:i + step]).all()) for i in range(0, a.shape[0], step))


def to_array(a) -> np.ndarray:
    """A weight as a numpy array: torch tensors detached and moved to the CPU (float16 and
    bfloat16 as float32), anything else through np.asarray."""
    if hasattr(a, "detach") and hasattr(a, "numpy"):  # a torch tensor
        a = a.detach().cpu()
        if str(a.dtype) in ("torch.bfloat16", "torch.float16"):
            a = a.float()
        return a.numpy()
    return np.asarray(a)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


_RAM = _physical_memory()  # read once: a forward call checks against it


def physical_memory() -> int:
    """Bytes of RAM of this machine (0 if unknown)."""
    return _RAM


def _address_space_limit() -> int:
    """The process's RLIMIT_AS in bytes (0: none)."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, ValueError, OSError):
        return 0
    return 0 if soft == resource.RLIM_INFINITY else soft


_SMALL_REQUEST = 64 << 20  # below this, no limit is read (a failure is still caught)


class check_allocation:
    """Refuse a request needing more bytes than the machine (or the process's address
    space limit) allows, before allocating; inside the block, an allocation that fails
    anyway (other memory in use) becomes the same clear AllocationError. (A class, not
    contextlib: it is on every forward call's path.)"""

    __slots__ = ("nbytes", "_what")

    def __init__(self, nbytes: int, what):
        """`what` names the request: a str, or a callable building it (only on error)."""
        self.nbytes, self._what = nbytes, what
        if nbytes > _SMALL_REQUEST:
            limits = [b for b in (_RAM, _address_space_limit()) if b]
            if limits and nbytes > min(limits):
                raise AllocationError(f"{self.what} needs {nbytes / 2**30:.1f} GiB, more than this "
                                      f"process can have ({min(limits) / 2**30:.1f} GiB)")

    @property
    def what(self) -> str:
        return self._what() if callable(self._what) else self._what

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if kind is not None and issubclass(kind, MemoryError) and \
                not issubclass(kind, AllocationError):
            raise AllocationError(f"{self.what} needs {self.nbytes / 2**30:.1f} GiB of buffers, "
                                  f"which could not be allocated ({e})") from None
        return False


# ---------------------------------------------------------------------------- canonical weights
PEEPHOLES = ("p_i", "p_f", "p_o")
LAYER_NORM = ("ln_i", "ln_f", "ln_g", "ln_o")  # TFLite's layer-norm LSTM
WEIGHT_NAMES = ("w_ih", "w_hh", "b", "w_hr") + PEEPHOLES + LAYER_NORM


class DirectionDims(NamedTuple):
    """The sizes one direction's weights imply."""

    input_size: int
    hidden_size: int
    proj_size: int
    peephole: bool
    layer_norm: bool = False


def as_weight(a, name: str, dtype) -> np.ndarray:
    """A weight (or state) as a finite array of `dtype`: converted only if needed, never
    stored -- the model keeps only its packed copy (so a memory-mapped file is read once)."""
    a = to_array(a)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array; got dtype {a.dtype}")
    a = np.asarray(a, dtype=dtype)
    if not all_finite(a):
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def check_shape(a, shape, name: str, formula: Optional[str] = None, why: str = "",
                error=ValueError) -> None:
    """`error` (a ValueError, or a loader's own class) unless ``a.shape == shape``:
    "{name} must have shape {formula} = {shape} {why}; got {a.shape}" (`formula` the
    shape in symbols, e.g. "(4*H, I)"; `a` anything with a ``shape``)."""
    shape = tuple(shape)
    if tuple(a.shape) != shape:
        want = f"{formula} = {shape}" if formula else f"{shape}"
        raise error(f"{name} must have shape {want}{' ' + why if why else ''}; "
                         f"got {tuple(a.shape)}")


def check_direction(w: Mapping, where: str = "", dtype=None, *, input_size: Optional[int] = None,
                    layer: Optional[int] = None, names: Optional[Mapping[str, str]] = None):
    """Check one direction's canonical weights: ``(weights, DirectionDims)``.

    w : a dict with ``w_ih`` (4H, I), ``w_hh`` (4H, H_out), and optionally ``b`` (4H,),
        ``w_hr`` (P, H) with 0 < P < H (then H_out = P), ``p_i``, ``p_f``, ``p_o`` (H,)
        (all three or none), ``ln_i``, ``ln_f``, ``ln_g``, ``ln_o`` (H,) layer-norm
        coefficients (all four or none).
    where : starts each message ("layer 0 forward"; "" when `names` say it all).
    dtype : each weight converted to it (only if needed) and checked real and finite;
        the returned dict has every weight, ``b`` zeros when absent. None: shapes only
        (anything with ``.shape``), the dict returned as given.
    input_size, layer : the I that layer `layer` must take (the previous layer's output).
    names : canonical name -> the name a message gives it (a source's tensor name).
    """
    p = f"{where}: " if where else ""

    def label(n):
        return (names or {}).get(n, n)

    if not isinstance(w, Mapping):
        raise TypeError(f"{p}expected a dict of weights; got {type(w).__name__}")
    unknown = set(w) - set(WEIGHT_NAMES)
    if unknown:
        raise ValueError(f"{p}unknown weight names {sorted(unknown)}")
    for n in ("w_ih", "w_hh"):
        if w.get(n) is None:
            raise ValueError(f"{p}missing {label(n)}")

    def get(n):
        a = w.get(n)
        if a is None or dtype is None:
            return a
        return as_weight(a, f"{p}{label(n)}", dtype)

    w_ih = get("w_ih")
    sh = tuple(w_ih.shape)
    if len(sh) != 2 or sh[0] % 4 or sh[0] == 0 or sh[1] == 0:
        raise ValueError(f"{p}{label('w_ih')} must have shape (4*H, I) with H, I >= 1; "
                         f"got {sh}")
    H, I = sh[0] // 4, sh[1]
    if input_size is not None:
        check_shape(w_ih, (4 * H, input_size), f"{p}{label('w_ih')}", "(4*H, I)",
                    f"(I = output size of layer {layer - 1})" if layer else "")
    out = {"w_ih": w_ih}
    P = 0
    w_hr = get("w_hr")
    if w_hr is not None:
        sh = tuple(w_hr.shape)
        if len(sh) != 2 or sh[1] != H or sh[0] < 1:
            raise ValueError(f"{p}{label('w_hr')} must have shape (P, H) = (P, {H}) with "
                             f"0 < P < {H}; got {sh}")
        P = sh[0]
        if P >= H:
            raise ValueError(f"{p}proj_size must be smaller than hidden_size {H} (as in "
                             f"torch); got {P} ({label('w_hr')} has shape {sh})")
        out["w_hr"] = w_hr
    w_hh = get("w_hh")
    check_shape(w_hh, (4 * H, P or H), f"{p}{label('w_hh')}", "(4*H, H_out)",
                f"(H = {H} from {label('w_ih')}{', H_out = proj_size' if P else ''})")
    out["w_hh"] = w_hh
    b = get("b")
    if b is not None:
        check_shape(b, (4 * H,), f"{p}{label('b')}", "(4*H,)")
        out["b"] = b
    elif dtype is not None:
        out["b"] = np.zeros(4 * H, dtype=dtype)
    peeps = [w.get(n) is not None for n in PEEPHOLES]
    if any(peeps) and not all(peeps):
        raise ValueError(f"{p}peephole needs all of {', '.join(map(label, PEEPHOLES))}")
    lns = [w.get(n) is not None for n in LAYER_NORM]
    if any(lns) and not all(lns):
        raise ValueError(f"{p}layer norm needs all of {', '.join(map(label, LAYER_NORM))}")
    for n in (PEEPHOLES if all(peeps) else ()) + (LAYER_NORM if all(lns) else ()):
        a = get(n)
        check_shape(a, (H,), f"{p}{label(n)}", "(H,)")
        out[n] = a
    return (out if dtype is not None else w), DirectionDims(I, H, P, all(peeps), all(lns))


def check_layer(k: int, dirs, input_size: Optional[int] = None, dtype=None, names=None):
    """`check_direction` on each direction of layer `k` (1 or 2 dicts), which must agree:
    ``(DirectionDims, [weights per direction])``. `names`: one mapping per direction."""
    dims, out = None, []
    for d, w in enumerate(dirs):
        where = f"layer {k} {'reverse' if d else 'forward'}"
        cw, this = check_direction(w, where, dtype, input_size=input_size, layer=k,
                                   names=names[d] if names else None)
        if dims is not None and this != dims:
            raise ValueError(f"{where}: both directions must have the same sizes, "
                             f"peephole and layer norm; forward is {dims}, reverse is {this}")
        dims = this
        out.append(cw)
    return dims, out
