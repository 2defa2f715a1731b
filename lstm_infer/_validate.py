"""Checks shared by the model and the loaders that must not cost memory.

The two failure modes they close: a check that allocates a temporary of the
input's *logical* size (a 4 KiB broadcast input once made the NaN check
allocate a 1 GiB bool array), and an allocation sized by a hostile shape that
fails deep inside numpy with a MemoryError instead of a message naming it.
"""
from __future__ import annotations

import os

import numpy as np

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
    whatever the logical size of `a`."""
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


def physical_memory() -> int:
    """Bytes of RAM of this machine (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_allocation(nbytes: int, what: str) -> None:
    """Refuse a request needing more bytes than the machine has, before allocating."""
    ram = physical_memory()
    if ram and nbytes > ram:
        raise AllocationError(f"{what} needs {nbytes / 2**30:.1f} GiB, more than this "
                              f"machine's {ram / 2**30:.1f} GiB of memory")
