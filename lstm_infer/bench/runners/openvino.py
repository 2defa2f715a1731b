"""OpenVINO's CPU plugin on our model's ONNX graph (`formats.onnx.to_onnx`).

The graph is read by OpenVINO's ONNX frontend, reshaped to the workload's static
input shape (what an OpenVINO deployment of a fixed-shape model does) and compiled
for "CPU" with ``INFERENCE_PRECISION_HINT`` f32 (``build_f32``) or bf16
(``build_bf16``), ``NUM_STREAMS`` 1 and ``INFERENCE_NUM_THREADS`` = threads; one
infer request, called synchronously (inputs shared, outputs copied, as the other
peers return fresh arrays).

The precision reported is the one OpenVINO ran, not the one asked for: the runtime
precision of the compiled graph's RNN nodes (``runtimePrecision`` in the runtime
model), else the compiled model's ``INFERENCE_PRECISION_HINT``. A CPU without bf16
arithmetic (no AVX512-BF16 / AMX: the plugin's OPTIMIZATION_CAPABILITIES lack
"BF16") compiles the bf16 hint as f32; ``build_bf16`` then raises PeerUnavailable
saying so (the row is skipped, not an f32 run labelled bf16).

Peepholes are refused (PeerUnavailable): OpenVINO's ONNX frontend (2026.4) drops the
LSTM node's P input without a word (its output equals our model's with the peephole
weights zeroed, off by ~0.02-0.08 from onnxruntime's and ours).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from ...formats.onnx import to_onnx
from . import PeerUnavailable, Runner, exported, import_peer

# OpenVINO element type names -> our precision names
_PRECISION = {"f32": "float32", "bf16": "bf16", "f16": "float16", "i8": "int8", "u8": "int8"}
_RNN_LAYERS = ("RNNSeq", "RNNCell")


def _type_name(value) -> str:
    """An OpenVINO element type (or OVAny / string) as its short name ("f32", "bf16")."""
    for attr in ("get_type_name", "astype"):
        fn = getattr(value, attr, None)
        if fn is not None:
            try:
                return str(fn() if attr == "get_type_name" else fn(str))
            except Exception:
                pass
    return str(value)


def _rnn_nodes(compiled) -> list:
    """(runtimePrecision, primitiveType) of the compiled graph's RNN nodes (empty if
    the runtime model cannot be read)."""
    found = []
    try:
        ops = compiled.get_runtime_model().get_ordered_ops()
    except Exception:
        return found
    for op in ops:
        info = op.get_rt_info()
        try:
            if "layerType" in info and _type_name(info["layerType"]) in _RNN_LAYERS:
                prim = _type_name(info["primitiveType"]) if "primitiveType" in info else None
                found.append((_type_name(info["runtimePrecision"]), prim))
        except Exception:
            continue
    return found


def _version(ov) -> str:
    v = getattr(ov, "__version__", None) or ov.get_version()
    return str(v).split("-")[0]


def _build(model, x, threads: int, hint: str, name: str) -> Runner:
    if model.config.peephole:
        raise PeerUnavailable("OpenVINO's ONNX frontend ignores LSTM peepholes (the P "
                              "input): its results would be another model's")
    ov = import_peer("openvino")
    proto = exported(to_onnx, model, "onnx")
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as f:
            f.write(proto.SerializeToString())
        net = core.read_model(path)
    x = np.ascontiguousarray(x, dtype=np.float32)
    net.reshape({"X": list(x.shape)})
    compiled = core.compile_model(net, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                               "NUM_STREAMS": 1,
                                               "INFERENCE_NUM_THREADS": threads})
    hint_ran = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    nodes = _rnn_nodes(compiled)
    rnn = [p for p, _ in nodes]
    ran = rnn[0] if rnn and len(set(rnn)) == 1 else hint_ran
    try:
        caps = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:
        caps = None
    info = {"precision_hint": hint, "compiled_precision_hint": hint_ran,
            "rnn_runtime_precisions": rnn,
            "rnn_primitives": sorted({q for _, q in nodes if q}), "cpu_capabilities": caps,
            "num_streams": _type_name(compiled.get_property("NUM_STREAMS")),
            "inference_num_threads": compiled.get_property("INFERENCE_NUM_THREADS")}
    precision = _PRECISION.get(ran, ran)
    if _PRECISION.get(hint, hint) != precision:
        raise PeerUnavailable(
            f"OpenVINO ran {ran} for INFERENCE_PRECISION_HINT {hint} (RNN nodes: "
            f"{', '.join(rnn) or 'not reported'}; CPU capabilities: "
            f"{', '.join(caps) if caps else 'unknown'}): not timed as {hint}")
    request = compiled.create_infer_request()
    outputs = [compiled.output(n) for n in ("Y", "Y_h", "Y_c")]
    feed = {"X": x}

    def fn():
        res = request.infer(feed, share_inputs=True)
        return tuple(np.asarray(res[o]) for o in outputs)
    return Runner(name, _version(ov), fn, precision=precision, info=info)


def build_f32(model, x, threads: int) -> Runner:
    return _build(model, x, threads, "f32", "openvino-f32")


def build_bf16(model, x, threads: int) -> Runner:
    return _build(model, x, threads, "bf16", "openvino-bf16")
