"""Our model in the form other engines load: an ONNX graph, Keras weights.

The inverses of the ONNX and Keras loaders, kept here until they move to
`formats/onnx.py` (``to_onnx``) and `formats/keras.py` (``to_keras_weights``),
next to the loaders they invert (the torch one already lives there:
`formats.pytorch.to_state_dict`). Each raises ValueError listing what it cannot
express, and ImportError when its framework is missing (onnx for `to_onnx`;
`to_keras_weights` needs none).

They cover what the benchmark's models use: stacked, bidirectional (concat)
layers of one size with the default activations; `to_onnx` also peepholes.
"""
from __future__ import annotations

from typing import List

import numpy as np

from ..config import DEFAULT_ACTIVATIONS
from ..formats.gate_orders import from_canonical


def _refuse(model, target: str, *, peephole: bool, batch_first: bool = True) -> None:
    """ValueError if `model` uses what `target`, as built here, does not express."""
    cfg = model.config
    problems = [] if cfg.uniform else ["layers of different sizes or directions"]
    if cfg.batch_first and not batch_first:
        problems.append("batch_first (its input is (T, B, I))")
    for k, spec in enumerate(cfg.layers):
        found = [what for what, used in (
            ("a projection (proj_size)", spec.proj_size),
            ("peephole connections", spec.peephole and not peephole),
            ("clip", spec.clip is not None), ("cell_clip", spec.cell_clip is not None),
            ("input_forget (CIFG)", spec.input_forget),
            ("non-default activations",
             any(tuple(t) != tuple(DEFAULT_ACTIVATIONS) for t in spec.activations)),
            ("a reverse-only direction", spec.reverse),
            (f"merge={spec.merge!r}", spec.merge != "concat")) if used]
        problems += [f"layer {k}: {what}" for what in found]
    if problems:
        raise ValueError(f"{target} cannot express this model: " + "; ".join(problems))


def to_onnx(model, opset: int = 17):
    """An ONNX graph of `model`: one LSTM node per layer (weights as initializers,
    gates reordered to i,o,f,c, fused bias in Wb and zeros in Rb), Y (T, D, B, H)
    transposed and reshaped to (T, B, D*H) between layers. Input X (T, B, I);
    outputs Y, Y_h, Y_c with our shapes ((T, B, D*H), (D*L, B, H), (D*L, B, H))."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    _refuse(model, "the ONNX graph built here", peephole=True, batch_first=False)
    cfg = model.config
    H = cfg.hidden_size
    D = 2 if cfg.bidirectional else 1
    nodes, inits = [], []
    cur = "X"
    hs, cs = [], []
    for k, layer in enumerate(model.weights):
        W = np.stack([from_canonical(w["w_ih"], "onnx") for w in layer]).astype(np.float32)
        R = np.stack([from_canonical(w["w_hh"], "onnx") for w in layer]).astype(np.float32)
        Bw = np.stack([np.concatenate([from_canonical(w["b"], "onnx"), np.zeros(4 * H)])
                       for w in layer]).astype(np.float32)
        names = [f"W{k}", f"R{k}", f"B{k}"]
        inits += [numpy_helper.from_array(a, n) for a, n in zip((W, R, Bw), names)]
        inputs = [cur] + names
        if cfg.peephole:  # ONNX P = [p_i, p_o, p_f]
            P = np.stack([np.concatenate([w["p_i"], w["p_o"], w["p_f"]]) for w in layer])
            inits.append(numpy_helper.from_array(P.astype(np.float32), f"P{k}"))
            inputs += ["", "", "", f"P{k}"]  # sequence_lens, initial_h, initial_c unset
        nodes.append(helper.make_node(
            "LSTM", inputs, [f"Y{k}", f"Yh{k}", f"Yc{k}"], name=f"lstm{k}", hidden_size=H,
            direction="bidirectional" if D == 2 else "forward"))
        nodes.append(helper.make_node("Transpose", [f"Y{k}"], [f"Yt{k}"], perm=[0, 2, 1, 3]))
        last = k == cfg.num_layers - 1
        nxt = "Y" if last else f"X{k + 1}"
        nodes.append(helper.make_node("Reshape", [f"Yt{k}", "shape_TB_"], [nxt]))
        hs.append(f"Yh{k}")
        cs.append(f"Yc{k}")
        cur = nxt
    inits.append(numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), "shape_TB_"))
    nodes.append(helper.make_node("Concat", hs, ["Y_h"], axis=0))
    nodes.append(helper.make_node("Concat", cs, ["Y_c"], axis=0))
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "lstm_infer_bench",
        [helper.make_tensor_value_info("X", f32, ["T", "B", cfg.input_size])],
        [helper.make_tensor_value_info("Y", f32, ["T", "B", D * H]),
         helper.make_tensor_value_info("Y_h", f32, [D * cfg.num_layers, "B", H]),
         helper.make_tensor_value_info("Y_c", f32, [D * cfg.num_layers, "B", H])],
        initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="lstm_infer.bench")
    m.ir_version = 8  # opset 17's IR; accepted by every onnxruntime >= 1.13
    onnx.checker.check_model(m)
    return m


def to_keras_weights(model) -> List[List[np.ndarray]]:
    """Per layer, the list that Keras ``LSTM.set_weights`` (or, bidirectional,
    ``Bidirectional(LSTM).set_weights``) takes: kernel (I, 4H), recurrent_kernel
    (H, 4H), bias (4H,) for each direction, forward first. Keras's gate order i, f, c, o
    is canonical; our fused bias is Keras's single bias. float32 copies."""
    _refuse(model, "a Keras LSTM stack", peephole=False)
    out = []
    for layer in model.weights:
        ws = []
        for w in layer:
            ws += [np.array(np.asarray(w["w_ih"]).T, dtype=np.float32),
                   np.array(np.asarray(w["w_hh"]).T, dtype=np.float32),
                   np.array(w["b"], dtype=np.float32)]
        out.append(ws)
    return out
