"""onnxruntime CPU sessions on our model's ONNX graph (`formats.onnx.to_onnx`).

``build``: the float32 graph, all graph optimisations on. ``build_int8``: the same
graph through ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, dynamic
u8 activations: DynamicQuantizeLSTM nodes). Both sessions: ``intra_op_num_threads``
= threads, ``inter_op_num_threads`` = 1, sequential execution.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from ...formats.onnx import to_onnx
from . import PeerUnavailable, Runner, exported, import_peer


def _session(ort, proto, threads: int):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _runner(name: str, sess, x, version: str) -> Runner:
    feed = {"X": np.ascontiguousarray(x, dtype=np.float32)}

    def fn():
        y, h, c = sess.run(["Y", "Y_h", "Y_c"], feed)
        return y, h, c
    return Runner(name, version, fn)


def build(model, x, threads: int) -> Runner:
    ort = import_peer("onnxruntime")
    proto = exported(to_onnx, model, "onnx")
    return _runner("onnxruntime", _session(ort, proto, threads), x, ort.__version__)


def build_int8(model, x, threads: int) -> Runner:
    onnx = import_peer("onnx", "onnxruntime quantization")
    ort = import_peer("onnxruntime", "onnxruntime quantization")
    quantization = import_peer("onnxruntime.quantization", "onnxruntime quantization")
    proto = exported(to_onnx, model, "onnx")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "f32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(proto, src)
        quantization.quantize_dynamic(src, dst, weight_type=quantization.QuantType.QInt8)
        qproto = onnx.load(dst)
    if not any(n.op_type == "DynamicQuantizeLSTM" for n in qproto.graph.node):
        raise PeerUnavailable("onnxruntime did not produce DynamicQuantizeLSTM nodes")
    return _runner("onnxruntime-int8", _session(ort, qproto, threads), x, ort.__version__)
