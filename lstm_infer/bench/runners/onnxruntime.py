"""onnxruntime CPU sessions on our model's ONNX graph (`formats.onnx.to_onnx`).

``build``: the float32 graph, all graph optimisations on. ``build_int8``: the same
graph through ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, dynamic
u8 activations: DynamicQuantizeLSTM nodes). Both sessions: ``intra_op_num_threads``
= threads, ``inter_op_num_threads`` = 1, sequential execution.

On a CPU without VNNI (no avx512_vnni / avx_vnni / amx_int8 flag) the int8 weights
are quantized with ``reduce_range=True`` (7 bits), as onnxruntime's documentation
advises for such machines: its AVX2 u8 x s8 kernel adds pairs of products in int16
(vpmaddubsw), which saturates with full-range weights (measured here: max abs error
vs float64 0.07-0.12 on kws / stream256 / text, 2e-3 - 4e-3 with reduce_range). The
runner's ``info`` says which was used.
"""
from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

from ...formats.onnx import to_onnx
from ..machine import cpu_flags
from . import PeerUnavailable, Runner, exported, import_peer

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _session(ort, proto, threads: int):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _runner(name: str, sess, x, version: str, precision: str = "float32",
            info=None) -> Runner:
    feed = {"X": np.ascontiguousarray(x, dtype=np.float32)}

    def fn():
        y, h, c = sess.run(["Y", "Y_h", "Y_c"], feed)
        return y, h, c
    return Runner(name, version, fn, precision=precision, info=info or {})


def build(model, x, threads: int) -> Runner:
    ort = import_peer("onnxruntime")
    proto = exported(to_onnx, model, "onnx")
    return _runner("onnxruntime", _session(ort, proto, threads), x, ort.__version__)


def build_int8(model, x, threads: int) -> Runner:
    onnx = import_peer("onnx", "onnxruntime quantization")
    ort = import_peer("onnxruntime", "onnxruntime quantization")
    quantization = import_peer("onnxruntime.quantization", "onnxruntime quantization")
    proto = exported(to_onnx, model, "onnx")
    vnni = sorted(set(VNNI_FLAGS) & cpu_flags())
    reduce_range = not vnni
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "f32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(proto, src)
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.ERROR)   # its "consider pre-processing" advice, every call
        try:
            quantization.quantize_dynamic(src, dst, weight_type=quantization.QuantType.QInt8,
                                          reduce_range=reduce_range)
        finally:
            root.setLevel(level)
        qproto = onnx.load(dst)
    if not any(n.op_type == "DynamicQuantizeLSTM" for n in qproto.graph.node):
        raise PeerUnavailable("onnxruntime did not produce DynamicQuantizeLSTM nodes")
    info = {"reduce_range": reduce_range, "vnni_flags": vnni}
    return _runner("onnxruntime-int8", _session(ort, qproto, threads), x, ort.__version__,
                   "int8", info)
