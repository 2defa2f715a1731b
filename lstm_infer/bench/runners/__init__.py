"""One module per engine; each has ``build(model, x, threads) -> Runner``.

A runner is built from *our* model's weights and the input array, holds
whatever the engine needs (a session, a loaded module, converted input), and
gives a ``fn()`` that does one forward call, ready to be checked and timed.
Engines are imported only when their runner is built; one that is missing, or
cannot express the model, raises `PeerUnavailable` (reported as skipped).

To add a peer: write ``runners/<peer>.py`` with ``build``, add its line to
`_REGISTRY` (module, builder, short name for table headers), and add it to
`PEERS` to make it selectable with ``--peers``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional


class PeerUnavailable(Exception):
    """A peer cannot run here (not installed, or the model uses a feature it lacks)."""


@dataclass
class Runner:
    """A ready-to-time forward call. ``fn()`` returns (out, h_n, c_n) as numpy
    arrays in our layout; h_n/c_n may be None when the peer does not give them."""

    name: str
    version: str
    fn: Callable[[], tuple]
    close: Callable[[], None] = lambda: None


# runner name -> (module in this package, builder function, short name)
_REGISTRY = {
    "ours": ("ours", "build", "ours"),
    "torch": ("torch", "build", "torch"),
    "onnxruntime": ("onnxruntime", "build", "ort"),
    "onnxruntime-int8": ("onnxruntime", "build_int8", "ort-int8"),
    "tensorflow": ("tensorflow", "build", "tf"),
}
PEERS = ("torch", "onnxruntime", "tensorflow")   # selectable with --peers
DEFAULT_PEERS = ("torch", "onnxruntime")


def build_runner(name: str, model, x, threads: int) -> Runner:
    """Build runner `name` ("ours" or a peer) on `model`'s weights; raises PeerUnavailable."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown runner {name!r}; choose from {sorted(_REGISTRY)}")
    module, builder, _ = _REGISTRY[name]
    return getattr(importlib.import_module(f".{module}", __name__), builder)(model, x, threads)


def short_name(name: str) -> str:
    """The runner's name in table headers ("ort" for onnxruntime...)."""
    return _REGISTRY[name][2] if name in _REGISTRY else name


def select_peers(peers: Optional[Iterable[str]] = None) -> List[str]:
    """Peers to run: `peers` checked and deduplicated (None: the default peers).
    ValueError names the unknown ones."""
    peers = list(DEFAULT_PEERS if peers is None else peers)
    bad = [p for p in peers if p not in PEERS]
    if bad:
        raise ValueError(f"unknown peer(s) {', '.join(bad)}; choose from {', '.join(PEERS)}")
    return list(dict.fromkeys(peers))


def import_peer(module: str, what: Optional[str] = None):
    """``import module``, or PeerUnavailable saying that `what` (default: the module)
    is not importable and why."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise PeerUnavailable(f"{what or module} not importable ({e})") from None


def exported(export, model, what: str):
    """``export(model)``, with the exporter's ValueError (a feature it cannot express)
    and ImportError (its framework missing) turned into PeerUnavailable."""
    try:
        return export(model)
    except ImportError as e:
        raise PeerUnavailable(f"{what} not importable ({e})") from None
    except ValueError as e:
        raise PeerUnavailable(str(e)) from None
