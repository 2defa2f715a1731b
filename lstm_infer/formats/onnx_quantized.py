"""onnxruntime's ``com.microsoft.DynamicQuantizeLSTM`` -> lstm_infer's int8 mode, exactly.

``onnxruntime.quantization.quantize_dynamic`` turns every ONNX ``LSTM`` node into one
(packages on PyPI ship int8 models that way). Its inputs are the LSTM's, W and R
quantized, plus their scales and zero points:

====  ================  ==========================================================
slot  input             read as
====  ================  ==========================================================
0     X                 the model input (as an LSTM node's)
1     W                 int8 (or uint8) (num_directions, input_size, 4*hidden_size):
                        the ONNX W *transposed*, gates i, o, f, c along the last axis
2     R                 int8 / uint8 (num_directions, hidden_size, 4*hidden_size)
3-7   B, sequence_lens, float bias, run-time inputs, float peepholes: as an LSTM
      initial_h/c, P    node's (`formats.onnx`)
8     W_scale           float (num_directions,) one scale per direction, or
                        (num_directions, 4*hidden_size) one per output channel
9     W_zero_point      W's dtype, the shape of W_scale
10    R_scale           as W_scale
11    R_zero_point      as W_zero_point
====  ================  ==========================================================

Attributes are the LSTM's (direction, hidden_size, clip, input_forget, activations...;
no layout: DynamicQuantizeLSTM is always time-major).

Mapping: the weight W[d] ~= (Wq[d] - zp) * scale is lstm_infer's int8 weight
``q = Wq - zp`` with one scale per output row (``w_ih_scale``, ``w_hh_scale``): a
per-direction scale is the same scale on every row, a per-channel one is the row's own.
So the model runs *exactly* the file's int8 weights and scales (``model.weights`` gives
them back bit for bit). Symmetric weights (zero point 0, what quantize_dynamic writes by
default) always fit; asymmetric ones (``WeightSymmetric=False``) are taken when
``Wq - zp`` stays inside int8's [-128, 127] and refused otherwise, naming the range: our
int8 kernels have no weight zero point. Bias and peepholes stay float32, as in
onnxruntime.

Activations: onnxruntime quantizes X and h per call (u8 with one scale and zero point
over the whole input block / batch); lstm_infer quantizes them per step and row (u8, zero
point 128, scale max|row| / 127). The two are not bit-identical; both stay within int8
error of the float model (``tests/test_load_dynquant.py`` measures it).

A stack must be all DynamicQuantizeLSTM or all float LSTM nodes (one model has one
quantization mode): load the others with ``node=``.
"""
from __future__ import annotations

import numpy as np

from .gate_orders import to_canonical

_MAX_INPUTS = 12
_INT8 = (-128, 127)


def _error():
    from .onnx import ONNXFormatError
    return ONNXFormatError


def read_node(g, node, notes, read_lstm_node):
    """`formats.onnx._read_node` for a DynamicQuantizeLSTM node: the int8 weights and
    their per-row scales in canonical order, everything else as an LSTM node's."""
    err = _error()
    where, label = g.where, g.node_label(node)
    pre = f"{where}: DynamicQuantizeLSTM node {label}"
    if node.domain != "com.microsoft":
        raise err(f"{pre}: domain {node.domain!r}; expected 'com.microsoft'")
    if len(node.input) > _MAX_INPUTS:
        raise err(f"{pre}: expected at most {_MAX_INPUTS} inputs; got {len(node.input)}")
    ins = list(node.input) + [""] * (_MAX_INPUTS - len(node.input))
    for k, n in ((1, "W"), (2, "R"), (8, "W_scale"), (10, "R_scale")):
        if not ins[k]:
            raise err(f"{pre}: required input {n} (slot {k}) is missing")

    Wq = _int_weight(g, node, ins[1], "W", "(num_directions, input_size, 4*hidden_size)", pre)
    D, I, H4 = Wq.shape
    H = H4 // 4
    Rq = _int_weight(g, node, ins[2], "R", "(num_directions, hidden_size, 4*hidden_size)", pre,
                     want=(D, H, 4 * H))
    if Rq.dtype != Wq.dtype:
        raise err(f"{pre}: W is {Wq.dtype} but R is {Rq.dtype}")
    rows = []
    for q, (s, z), n in ((Wq, (ins[8], ins[9]), "W"), (Rq, (ins[10], ins[11]), "R")):
        scale, zp = _scale_zero_point(g, node, s, z, n, q.dtype, D, H, pre)
        centred = q.astype(np.int16) - zp[:, None, :]
        lo, hi = int(centred.min()), int(centred.max())
        if lo < _INT8[0] or hi > _INT8[1]:
            raise err(
                f"{pre}: {n} is quantized asymmetrically ({n}_zero_point up to "
                f"{int(np.abs(zp).max())}): {n} - {n}_zero_point spans [{lo}, {hi}], outside "
                f"int8's [-128, 127], and lstm_infer's int8 mode has no weight zero point. "
                f"Quantize with symmetric weights (quantize_dynamic's default; "
                f"extra_options={{'WeightSymmetric': True}}), or load the float model and "
                f"call .quantize('int8')")
        qi = np.ascontiguousarray(centred.astype(np.int8).transpose(0, 2, 1))  # (D, 4H, K)
        rows.append((qi, scale))
    (wq, ws), (rq, rs) = rows
    # the float weights they stand for, exactly what the int8 model computes with
    # (quantize.dequantize's product), for the LSTM node's own checks
    W = wq.astype(np.float32) * ws[:, :, None]
    R = rq.astype(np.float32) * rs[:, :, None]
    dirs, opts, layout, D2, H2 = read_lstm_node(g, node, notes, weights=(W, R),
                                                max_inputs=_MAX_INPUTS)
    for d, w in enumerate(dirs):
        w["w_ih"], w["w_ih_scale"] = to_canonical(wq[d], "onnx"), to_canonical(ws[d], "onnx")
        w["w_hh"], w["w_hh_scale"] = to_canonical(rq[d], "onnx"), to_canonical(rs[d], "onnx")
    return dirs, opts, layout, D2, H2


def _int_weight(g, node, name, what, layout, pre, want=None):
    err = _error()
    arr = g.constant(name, what, node)
    if arr.dtype not in (np.int8, np.uint8):
        raise err(f"{pre}: {what} must be int8 or uint8 (quantized); got {arr.dtype}")
    if arr.ndim != 3 or arr.shape[2] % 4 or 0 in arr.shape or \
            (want is not None and arr.shape != want):
        shape = layout if want is None else f"{layout} = {want}"
        raise err(f"{pre}: {what} must have shape {shape}; got {arr.shape}")
    return arr


def _scale_zero_point(g, node, s_name, z_name, n, qdtype, D, H, pre):
    """(scale (D, 4H) float32, zero point (D, 4H) int16): per direction or per channel."""
    err = _error()
    scale = np.asarray(g.constant(s_name, f"{n}_scale", node))
    if scale.dtype.kind != "f":
        raise err(f"{pre}: {n}_scale must be floating point; got {scale.dtype}")
    if scale.shape not in ((D,), (D, 4 * H)):
        raise err(f"{pre}: {n}_scale must have shape (num_directions,) = ({D},) (per tensor) "
                  f"or (num_directions, 4*hidden_size) = ({D}, {4 * H}) (per channel); got "
                  f"{scale.shape}")
    scale = scale.astype(np.float32)
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise err(f"{pre}: {n}_scale must be positive and finite; got "
                  f"{scale.ravel()[:4].tolist()}...")
    if z_name:
        zp = np.asarray(g.constant(z_name, f"{n}_zero_point", node))
        if zp.dtype != qdtype:
            raise err(f"{pre}: {n}_zero_point must have {n}'s dtype {qdtype}; got {zp.dtype}")
        if zp.shape != scale.shape:
            raise err(f"{pre}: {n}_zero_point must have {n}_scale's shape {scale.shape}; got "
                      f"{zp.shape}")
    else:  # absent: 0, as for QuantizeLinear
        zp = np.zeros(scale.shape, dtype=np.int16)
    full = (D, 4 * H)
    return (np.ascontiguousarray(np.broadcast_to(scale.reshape(D, -1), full)),
            np.broadcast_to(zp.astype(np.int16).reshape(D, -1), full))


def check_stack(g, chain, quantized):
    """One model has one quantization mode: a stack of only DynamicQuantizeLSTM nodes."""
    if all(quantized):
        return
    names = [g.node_name(n) for n in chain]
    q = [n for n, k in zip(names, quantized) if k]
    f = [n for n, k in zip(names, quantized) if not k]
    raise _error()(
        f"{g.where}: the stack {names} mixes DynamicQuantizeLSTM nodes {q} with float LSTM "
        f"nodes {f}; a model has one quantization mode: load them separately with node=")
