"""ONNX whole models: Gather (embedding) -> LSTM node(s) -> MatMul / Gemm (+ Add,
activations) head, as ``torch.onnx.export`` writes them.

Reuses the ONNX reader (`lstm_infer.formats.onnx`): the LSTM stack is its `_read` (the
same nodes, checks and warnings as ``li.from_onnx``), the graph its `_Graph` (name
lookups and the numpy evaluator of constant subgraphs). This module reads the rest.

How the parts are found
-----------------------
* The input: the one graph input the first LSTM node's X depends on. Integer input:
  token ids, and exactly one ``Gather`` on the way from it to X has a constant 2-D
  float table as its data: the embedding. Float input: features.
* Layout: X is *evaluated* (by the graph's own ops, numpy) on a sample input and must
  equal ``table[ids]`` (or the features) as they are or with the first two axes swapped
  (torch's exporter inserts ``Transpose(perm=[1, 0, 2])`` for ``batch_first``): which of
  the two decides the whole model's ``batch_first``. Anything else between the input
  and X (a scaled embedding, a positional encoding...) is refused.
* The head: walking back from the graph's first output, a run of ``MatMul`` (constant
  right operand), ``Gemm`` (constant B and C, ``transA=0``), ``Add`` (a constant bias),
  ``Softmax`` / ``LogSoftmax`` (last axis), ``Sigmoid``, ``Relu``, ``Tanh``,
  ``Identity`` / ``Dropout`` (each activation after a dense layer). Where the run
  stops, the value must be computed from the LSTM nodes' outputs by ops that only move
  data; it is evaluated on outputs whose every element holds its own index and must be
  exactly one of: the output sequence (``steps``), the last node's ``Y_h`` as
  ``(B, D*H)`` (``last``: torch's ``h_n[-1]`` exports as ``Gather(Concat(Y_h...), -1)``)
  or the output at step T - 1 (``last_step``, torch's ``out[:, -1]``).
* ``initial_h`` / ``initial_c`` must evaluate to zeros (torch exports zeros built from
  the input's shape). ``sequence_lens`` may be a graph input: pass ``lengths=``.
Anything else raises `WholeModelError` (an ONNXFormatError) naming the node.
"""
from __future__ import annotations

import os

import numpy as np

from . import onnx as O
from .errors import FormatError, guard
from .onnx import ONNXFormatError
from .whole_common import WholeModelData, WholeModelError

__all__ = ["read", "ONNXFormatError"]

_ACTS = {"Softmax": "softmax", "LogSoftmax": "log_softmax", "Sigmoid": "sigmoid",
         "Relu": "relu", "Tanh": "tanh"}
_PASS = ("Identity", "Dropout")
_SAMPLE = (2, 3)  # (dim 0, dim 1) of the sample input when the graph does not fix them
# Elements of the sample input's features and of the tagged LSTM outputs: a graph that
# declares larger static dims is checked with _SAMPLE instead (a declared (1e9, 1e9)
# input must not allocate)
_MAX_SAMPLE = 1 << 22


class _Error(WholeModelError, ONNXFormatError):
    """An ONNX graph whose parts around the LSTM nodes cannot be read as a whole model."""


def read(obj) -> WholeModelData:
    """The whole model of an ONNX graph (path, bytes or ModelProto), as data."""
    notes = []
    lstm = O._read(obj, None, None, notes)
    onnx, helper, numpy_helper = O._import_onnx()
    with guard(ONNXFormatError, O._where(obj)):
        graph, base, where = O._load_model(obj, onnx)
        g = O._Graph(graph, base, where, onnx, helper, numpy_helper)
        return _parts(g, obj, lstm, notes, onnx)


def _walk(g, name, through_lstm=True):
    """(name, producer node or None) of every value `name` is computed from, each once;
    without `through_lstm`, LSTM nodes' inputs are not followed."""
    seen, stack = set(), [name]
    while stack:
        n = stack.pop()
        if not n or n in seen:
            continue
        seen.add(n)
        node = None if n in g.init else g.producer.get(n)
        yield n, node
        if node is not None and (through_lstm or node.op_type != "LSTM"):
            stack.extend(node.input)


def _graph_inputs(g, name) -> set:
    """The graph inputs (not initializers) `name` is computed from."""
    return {n for n, node in _walk(g, name) if node is None and n in g.inputs
            and n not in g.init}


def _ancestors(g, name):
    """Nodes `name` is computed from (not looking through LSTM nodes)."""
    nodes = {id(node): node for _, node in _walk(g, name, False) if node is not None}
    return list(nodes.values())


def _evaluate(g, name, env, what):
    try:
        return g.value(name, env)
    except O._Unsupported as e:
        raise _Error(f"{g.where}: {what} goes through a {e.args[0]} node ({e.args[1]}), which "
                     f"a whole model does not run") from None
    except O._NotConstant as e:
        raise _Error(f"{g.where}: {what} depends on graph input {e.args[0]!r}") from None
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - an op given inputs it cannot take
        raise _Error(f"{g.where}: {what} cannot be followed ({type(e).__name__}: {e})") from None


def _parts(g, obj, lstm, notes, onnx) -> WholeModelData:
    where = g.where
    lstms, _ = O._find_nodes(g, None)
    chain = lstms if len(lstms) == 1 else O._chain_order(g, lstms)
    first, last = chain[0], chain[-1]
    layouts = {O._attrs(n, g.helper, where).get("layout", 0) for n in chain}
    layout = layouts.pop()

    # ---- the input, and the embedding on its way to the first X
    x0 = first.input[0]
    srcs = _graph_inputs(g, x0)
    if len(srcs) != 1:
        raise _Error(f"{where}: the first LSTM node's X depends on graph inputs "
                     f"{sorted(srcs)}; a whole model has one input")
    xin = srcs.pop()
    vi = g.inputs[xin]
    elem = vi.type.tensor_type.elem_type
    try:
        in_dtype = np.dtype(g.helper.tensor_dtype_to_np_dtype(elem))
    except Exception:  # noqa: BLE001 - an undefined element type
        raise _Error(f"{where}: graph input {xin!r} has element type {elem}, which is not a "
                     f"numeric type") from None
    tokens = in_dtype.kind in "iu"
    gathers = [n for n in _ancestors(g, x0) if n.op_type == "Gather" and len(n.input) > 1
               and not _graph_inputs(g, n.input[0]) and _graph_inputs(g, n.input[1])]
    table = None
    if tokens:
        if len(gathers) != 1:
            raise _Error(f"{where}: token ids {xin!r} reach the first LSTM node through "
                         f"{len(gathers)} Gather nodes with a constant table; a whole model "
                         f"has one (the embedding)")
        gat = gathers[0]
        table = O._float(_evaluate(g, gat.input[0], None, "the embedding table"))
        if table.ndim != 2 or table.dtype.kind != "f" or \
                O._attrs(gat, g.helper, where).get("axis", 0) != 0:
            raise _Error(f"{where}: Gather node {g.node_label(gat)} reads a {table.dtype} "
                         f"table of shape {table.shape}; an embedding is a 2-D float table "
                         f"gathered on axis 0")
    elif in_dtype.kind != "f":
        raise _Error(f"{where}: graph input {xin!r} is {in_dtype}; expected token ids "
                     f"(integers) or features (floats)")
    static = g.static_shape(xin) or []
    I = lstm.layers[0][0]["w_ih"].shape[1]
    dims = [d if d else s for d, s in zip(static[:2] + [None, None], _SAMPLE)]
    widest = max([I] + [len(layer) * layer[0]["w_hh"].shape[1] for layer in lstm.layers])
    if dims[0] * dims[1] * widest * (1 + 2 * len(lstm.layers)) > _MAX_SAMPLE:
        dims = list(_SAMPLE)
    rng = np.random.default_rng(0)
    if tokens:
        sample = rng.integers(0, table.shape[0], dims).astype(in_dtype)
        want = np.take(table, sample.astype(np.int64), axis=0)
    else:
        sample = rng.standard_normal(dims + [I]).astype(in_dtype)
        want = sample
    got = _evaluate(g, x0, {xin: sample}, "the first LSTM node's X")
    if got.shape == want.shape and np.array_equal(got, want):
        batch_first = layout == 1
    elif got.shape == want.transpose(1, 0, 2).shape and \
            np.array_equal(got, want.transpose(1, 0, 2)):
        batch_first = layout == 0
    else:
        raise _Error(f"{where}: the first LSTM node's X is not "
                     f"{'the embedding of the token ids' if tokens else 'the graph input'} "
                     f"(possibly with its first two axes swapped); a whole model does not run "
                     f"other ops there")
    B, T = (dims[0], dims[1]) if batch_first else (dims[1], dims[0])
    env, candidates = _tagged_outputs(chain, lstm, layout, T, B)
    env[xin] = sample

    # ---- run-time inputs of the LSTM nodes
    lens_inputs = set()
    for n in chain:
        ins = list(n.input) + [""] * 8
        if ins[4]:
            if ins[4] not in g.inputs or ins[4] in g.init:
                raise _Error(f"{where}: LSTM node {g.node_label(n)}: sequence_lens "
                             f"{ins[4]!r} is computed in the graph; a whole model takes it "
                             f"as lengths= (a graph input) or not at all")
            lens_inputs.add(ins[4])
        for k, what in ((5, "initial_h"), (6, "initial_c")):
            if ins[k]:
                v = _evaluate(g, ins[k], env, f"LSTM node {g.node_label(n)}'s {what}")
                if np.any(v):
                    raise _Error(f"{where}: LSTM node {g.node_label(n)}: {what} is not zero; a "
                                 f"whole model starts from the zero state")
    if lens_inputs:
        notes.append(f"sequence_lens is the graph input {sorted(lens_inputs)}: pass "
                     f"lengths= (default: every step valid)")

    # ---- the head, walking back from the output
    outputs = [o.name for o in g.g.output]
    if len(outputs) > 1:
        notes.append(f"the graph has {len(outputs)} outputs {outputs}; the whole model "
                     f"computes the first")
    ops, name = [], outputs[0]
    chain_ids = {id(n) for n in chain}
    while True:
        node = g.producer.get(name)
        if node is None or id(node) in chain_ids:
            break
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            break
        if op in _PASS:
            name = node.input[0]
        elif op in _ACTS:
            ops.append((op, node, None))
            name = node.input[0]
        elif op in ("MatMul", "Gemm", "Add"):
            live = [i for i in node.input[:2] if i and _graph_inputs(g, i)]
            if len(live) != 1:
                break
            if op != "Add" and live[0] != node.input[0]:
                raise _Error(f"{where}: {op} node {g.node_label(node)} multiplies a constant "
                             f"by the activations from the left; a dense layer is x @ W")
            const = [i for i in node.input if i and i not in live]
            ops.append((op, node, [_evaluate(g, c, None, f"{op} node {g.node_label(node)}'s "
                                             f"weights") for c in const]))
            name = live[0]
        else:
            break
    head = _fold(g, list(reversed(ops)))

    # ---- where the head reads the LSTM: evaluated on tagged LSTM outputs
    head_on = _selection(g, name, env, candidates, batch_first)
    rank = 3 if head_on == "steps" else 2
    for op, node, _ in ops:
        if op in ("Softmax", "LogSoftmax"):
            _check_axis(g, obj, node, rank, onnx)
    data = lstm
    data.options = dict(data.options, batch_first=batch_first)
    names = {"lstm": ", ".join(g.node_name(n) for n in chain)}
    embedding = None
    if tokens:
        embedding = {"table": table, "pad_id": None, "name": g.node_name(gathers[0])}
        names["embedding"] = embedding["name"]
    if head:
        names["head"] = ", ".join(d["name"] for d in head)
    return WholeModelData(data, embedding=embedding, head=head, head_on=head_on,
                          source=where, names=names, notes=notes)


def _fold(g, ops) -> list:
    """Forward-order head ops -> dense layers ``{weight (in, out), bias, activation}``."""
    head = []
    for op, node, consts in ops:
        label = g.node_label(node)
        if op == "MatMul":
            w = O._float(consts[0])
            if w.ndim != 2 or w.dtype.kind != "f":
                raise _Error(f"{g.where}: MatMul node {label} has a {w.dtype} right operand of "
                             f"shape {w.shape}; a dense layer's is a 2-D float matrix")
            head.append({"weight": w, "bias": None, "activation": "linear",
                         "name": g.node_name(node)})
        elif op == "Gemm":
            a = O._attrs(node, g.helper, g.where)
            if a.get("transA", 0):
                raise _Error(f"{g.where}: Gemm node {label} has transA=1; not a dense layer")
            w = O._float(consts[0])
            if w.ndim != 2 or w.dtype.kind != "f":
                raise _Error(f"{g.where}: Gemm node {label}: B of shape {w.shape}")
            w = (w.T if a.get("transB", 0) else w) * np.float32(a.get("alpha", 1.0))
            d = {"weight": w, "bias": None, "activation": "linear", "name": g.node_name(node)}
            if len(consts) > 1:
                d["bias"] = _bias(g, consts[1] * np.float32(a.get("beta", 1.0)), w.shape[1],
                                  label)
            head.append(d)
        elif op == "Add":
            if not head or head[-1]["activation"] != "linear":
                raise _Error(f"{g.where}: Add node {label} is not the bias of a dense layer "
                             f"(it follows {'an activation' if head else 'the LSTM'})")
            d = head[-1]
            b = _bias(g, consts[0], d["weight"].shape[1], label)
            d["bias"] = b if d["bias"] is None else d["bias"] + b
        else:
            if not head or head[-1]["activation"] != "linear":
                raise _Error(f"{g.where}: {op} node {label} does not follow a dense layer; a "
                             f"whole model applies one activation after each dense layer")
            head[-1]["activation"] = _ACTS[op]
    return head


def _bias(g, c, n, label) -> np.ndarray:
    c = O._float(np.asarray(c))
    if c.dtype.kind != "f" or c.size not in (1, n) or (c.size == n and c.shape[-1] != n):
        raise _Error(f"{g.where}: node {label}: a bias of shape {c.shape} for {n} outputs")
    return np.broadcast_to(c.reshape(-1), (n,)).astype(np.result_type(c, np.float32))


def _tagged_outputs(chain, lstm, layout, T, B):
    """Every LSTM node's outputs with each element its own index (env for the evaluator),
    and what the last node's outputs are in our terms: candidates for the head's input."""
    env, code = {}, 0
    for k, n in enumerate(chain):
        D, H = len(lstm.layers[k]), lstm.layers[k][0]["w_hh"].shape[1]
        y_shape = (T, D, B, H) if layout == 0 else (B, T, D, H)
        h_shape = (D, B, H) if layout == 0 else (B, D, H)
        vals = []
        for j, shape in enumerate((y_shape, h_shape, h_shape)):
            size = int(np.prod(shape))
            v = np.arange(code, code + size, dtype=np.float64).reshape(shape)
            code += size
            if j < len(n.output) and n.output[j]:
                env[n.output[j]] = v
            vals.append(v)
    Y, Yh, _ = vals  # the last node's (D, H too)
    if layout == 1:
        Y, Yh = Y.transpose(1, 2, 0, 3), Yh.transpose(1, 0, 2)   # to (T, D, B, H), (D, B, H)
    out = Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    return env, {"steps": out, "last": Yh.transpose(1, 0, 2).reshape(B, D * H),
                 "last_step": out[-1]}


def _selection(g, name, env, candidates, batch_first) -> str:
    """What `name` is, in terms of the LSTM outputs: "steps", "last" or "last_step"."""
    candidates = dict(candidates)
    if batch_first:
        candidates["steps"] = candidates["steps"].transpose(1, 0, 2)
    if not _graph_inputs(g, name) and name not in env:
        raise _Error(f"{g.where}: the graph's output does not depend on its input")
    got = _evaluate(g, name, env, "the head's input")
    for k, want in candidates.items():
        if got.shape == want.shape and np.array_equal(got, want):
            return k
    node = g.producer.get(name)
    raise _Error(f"{g.where}: the head reads {name!r} (from a "
                 f"{node.op_type if node is not None else 'graph input'} node), which is none "
                 f"of the last LSTM node's output sequence, its final state (B, D*H) or its "
                 f"last step; a whole model's head reads one of these")


def _check_axis(g, obj, node, rank, onnx):
    a = O._attrs(node, g.helper, g.where)
    axis = a.get("axis")
    if axis is None:
        if rank == 2:
            return  # both defaults (1 before opset 13, -1 since) are the last axis
        axis = -1 if _opset(obj, onnx) >= 13 else 1
    if axis % rank != rank - 1:
        raise _Error(f"{g.where}: {node.op_type} node {g.node_label(node)} over axis {axis} of "
                     f"a rank-{rank} tensor; only the last axis is supported")


def _opset(obj, onnx) -> int:
    if isinstance(obj, (str, os.PathLike)):
        obj = onnx.load_model(os.fspath(obj), load_external_data=False)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        obj = onnx.load_model_from_string(bytes(obj))
    for o in getattr(obj, "opset_import", ()):
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1
