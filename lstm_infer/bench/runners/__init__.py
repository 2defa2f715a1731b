"""One module per engine; each has ``build(model, x, threads) -> Runner``.

A runner is built from *our* model's weights and the input array, holds
whatever the engine needs (a session, a loaded module, converted input), and
gives a ``fn()`` that does one forward call, ready to be checked and timed.
Engines are imported only when their runner is built; one that is missing, or
cannot express the model, raises `PeerUnavailable` (reported as skipped).

To add a peer: write ``runners/<peer>.py`` with ``build``, add its line to
`_REGISTRY` (module, builder, short name for table headers, package, precision),
and add it to `PEERS` to make it selectable with ``--peers``. Our own modes are
``ours`` (float32) and ``ours-<mode>`` for each quantization mode (`ours.build_mode`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional


class PeerUnavailable(Exception):
    """A peer cannot run here (not installed, or the model uses a feature it lacks)."""


@dataclass
class Runner:
    """A ready-to-time forward call. ``fn()`` returns (out, h_n, c_n) as numpy
    arrays in our layout; h_n/c_n may be None when the peer does not give them.
    ``precision`` is the arithmetic the engine actually ran ("float32", "int8",
    "bf16"; an engine asked for bf16 that fell back to float32 says "float32"),
    ``info`` what else the report should say about it (settings, requested hints)."""

    name: str
    version: str
    fn: Callable[[], tuple]
    close: Callable[[], None] = lambda: None
    precision: str = "float32"
    info: Dict[str, object] = field(default_factory=dict)


class Spec(NamedTuple):
    module: str      # module in this package
    builder: str     # its function: builder(model, x, threads) -> Runner
    short: str       # name in table headers
    package: str     # the import whose version the report gives
    precision: str   # what it is meant to compute in: its results are checked by it


_REGISTRY: Dict[str, Spec] = {
    "ours": Spec("ours", "build", "ours", "lstm_infer", "float32"),
    "torch": Spec("torch", "build", "torch", "torch", "float32"),
    "onnxruntime": Spec("onnxruntime", "build", "ort", "onnxruntime", "float32"),
    "onnxruntime-int8": Spec("onnxruntime", "build_int8", "ort-int8", "onnxruntime", "int8"),
    "openvino-f32": Spec("openvino", "build_f32", "ov-f32", "openvino", "float32"),
    "openvino-bf16": Spec("openvino", "build_bf16", "ov-bf16", "openvino", "bf16"),
    "tensorflow": Spec("tensorflow", "build", "tf", "tensorflow", "float32"),
}
# selectable with --peers; every one is optional (skipped when it cannot run here)
PEERS = ("torch", "onnxruntime", "onnxruntime-int8", "openvino-f32", "openvino-bf16",
         "tensorflow")
DEFAULT_PEERS = PEERS


def build_runner(name: str, model, x, threads: int) -> Runner:
    """Build runner `name` ("ours", "ours-<mode>" for a quantization mode, or a peer)
    on `model`'s weights; raises PeerUnavailable."""
    if name.startswith("ours-"):
        from .ours import build_mode
        return build_mode(model, x, threads, name[len("ours-"):])
    if name not in _REGISTRY:
        raise ValueError(f"unknown runner {name!r}; choose from {sorted(_REGISTRY)}")
    spec = _REGISTRY[name]
    return getattr(importlib.import_module(f".{spec.module}", __name__), spec.builder)(
        model, x, threads)


def short_name(name: str) -> str:
    """The runner's name in table headers ("ort" for onnxruntime...)."""
    return _REGISTRY[name].short if name in _REGISTRY else name


def package_of(name: str) -> Optional[str]:
    """The package whose version stands for runner `name` (None if unknown)."""
    return "lstm_infer" if name.startswith("ours") else (
        _REGISTRY[name].package if name in _REGISTRY else None)


def intended_precision(name: str) -> str:
    """What runner `name` is meant to compute in ("float32", "int8", "bf16")."""
    if name.startswith("ours-"):
        from .ours import compute_precision
        return compute_precision(name[len("ours-"):])
    return _REGISTRY[name].precision if name in _REGISTRY else "float32"


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
