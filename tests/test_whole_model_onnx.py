"""Whole ONNX models against onnxruntime: torch classifiers exported by torch.onnx.export
(Gather -> LSTM nodes -> Gemm / MatMul + Add -> Softmax...) on the last state, the last
step and every step, at shapes other than the export's; graphs written here with
onnx.helper (features input, layout 1, sequence_lens); graphs whose parts a whole model
does not run are refused, naming the op."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

try:
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper
except ImportError:  # each test skips on its own (the core venv has no onnx)
    onnx = ort = helper = numpy_helper = None

import lstm_infer as li  # noqa: E402
from conftest import TOL_FRAMEWORK, assert_close  # noqa: E402
from test_whole_model import damaged_copies  # noqa: E402
from lstm_infer.sequence_model import WholeModelError  # noqa: E402

TOL = TOL_FRAMEWORK["float32"]
V, E, H, C = 40, 12, 16, 5
F32 = 1  # onnx.TensorProto.FLOAT


@pytest.fixture(autouse=True)
def _need_onnx():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")


def _ort(path, **inputs):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


def _ids(B, T, seed=0):
    return np.random.default_rng(seed).integers(0, V, (B, T)).astype(np.int64)


# ----------------------------------------------------------------------------- torch exports
def _export(tmp_path, on="last", bidirectional=False, hidden_head=0, act="softmax",
            dynamic=True, embed=True):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            if embed:
                self.emb = nn.Embedding(V, E)
            self.rnn = nn.LSTM(E, H, num_layers=2, batch_first=True,
                               bidirectional=bidirectional)
            F = 2 * H if bidirectional else H
            self.head = nn.Sequential(nn.Linear(F, hidden_head), nn.ReLU(),
                                      nn.Linear(hidden_head, C)) if hidden_head \
                else nn.Linear(F, C)

        def forward(self, x):
            out, (h, _) = self.rnn(self.emb(x) if embed else x)
            z = {"last": lambda: torch.cat([h[-2], h[-1]], 1) if bidirectional else h[-1],
                 "last_step": lambda: out[:, -1], "steps": lambda: out}[on]()
            z = self.head(z)
            return {"softmax": lambda v: torch.softmax(v, -1), "sigmoid": torch.sigmoid,
                    "linear": lambda v: v}[act](z)

    torch.manual_seed(0)
    model = Model().eval()
    x = torch.from_numpy(_ids(3, 7)) if embed else torch.randn(3, 7, E)
    path = tmp_path / "model.onnx"
    kw = {"dynamic_axes": {"x": {0: "B", 1: "T"}}} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"],
                          dynamo=False, **kw)
    return path


@pytest.mark.parametrize("kw", [
    dict(), dict(bidirectional=True), dict(on="last_step"), dict(on="steps"),
    dict(bidirectional=True, on="steps"), dict(hidden_head=9), dict(act="sigmoid"),
    dict(on="steps", hidden_head=6, act="linear"),
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "classifier")
def test_torch_export_vs_onnxruntime(tmp_path, kw):
    path = _export(tmp_path, **kw)
    m = li.load_model(path)
    assert m.head_on == kw.get("on", "last") and m.config.batch_first
    assert len(m.head) == (2 if kw.get("hidden_head") else 1)
    for B, T, seed in ((4, 11, 1), (1, 2, 2), (6, 25, 3)):
        x = _ids(B, T, seed)
        assert_close(m(x), _ort(path, x=x), TOL, f"B={B} T={T}")


def test_fixed_shape_export(tmp_path):
    """An export without dynamic axes bakes its shapes into the graph: the same shapes
    agree with onnxruntime (ours also runs others)."""
    path = _export(tmp_path, dynamic=False, bidirectional=True)
    m = li.load_model(path)
    x = _ids(3, 7, 4)
    assert_close(m(x), _ort(path, x=x), TOL)
    assert m(_ids(2, 30)).shape == (2, C)


def test_features_export(tmp_path):
    path = _export(tmp_path, embed=False, on="steps")
    m = li.load_model(path)
    assert m.config.input == "features"
    x = np.random.default_rng(5).standard_normal((4, 9, E)).astype(np.float32)
    assert_close(m(x), _ort(path, x=x), TOL)


def test_cli_run_on_export(tmp_path):
    from lstm_infer.cli import main

    path = _export(tmp_path, bidirectional=True)
    x = _ids(5, 13, 6)
    np.save(tmp_path / "ids.npy", x)
    assert main(["run", str(path), "--input", str(tmp_path / "ids.npy"), "--output",
                 str(tmp_path / "y.npy")]) == 0
    assert_close(np.load(tmp_path / "y.npy"), _ort(path, x=x), TOL)


# ----------------------------------------------------------------------------- handmade graphs
def _lstm_inits(rng, I, D=1, name=""):
    k = 1 / np.sqrt(H)
    return [numpy_helper.from_array(rng.uniform(-k, k, s).astype(np.float32), n + name)
            for n, s in (("W", (D, 4 * H, I)), ("R", (D, 4 * H, H)), ("B", (D, 8 * H)))]


def _save(tmp_path, nodes, inputs, inits, rank, opset=17):
    out = helper.make_tensor_value_info("y", F32, [f"d{k}" for k in range(rank)])
    g = helper.make_graph(nodes, "g", inputs, [out], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    path = tmp_path / "g.onnx"
    onnx.save(m, str(path))
    return path


def test_features_matmul_add_sigmoid_with_sequence_lens(tmp_path):
    """Features (B, T, I) -> Transpose -> LSTM (with a sequence_lens input) -> Y (T, 1, B, H)
    -> Squeeze -> Transpose (B, T, H) -> MatMul + Add -> Sigmoid: per step.
    (onnxruntime runs layout 0 only; layout 1 is the numpy evaluator's Transpose case.)"""
    rng = np.random.default_rng(7)
    W = rng.uniform(-0.5, 0.5, (H, C)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, C).astype(np.float32)
    inits = _lstm_inits(rng, E) + [numpy_helper.from_array(W, "Wd"),
                                  numpy_helper.from_array(b, "bd"),
                                  numpy_helper.from_array(np.array([1], np.int64), "ax")]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xt", "W", "R", "B", "lens"], ["Y", "Yh"],
                              hidden_size=H),
             helper.make_node("Squeeze", ["Y", "ax"], ["Ys"]),
             helper.make_node("Transpose", ["Ys"], ["Y3"], perm=[1, 0, 2]),
             helper.make_node("MatMul", ["Y3", "Wd"], ["z"]),
             helper.make_node("Add", ["z", "bd"], ["za"]),
             helper.make_node("Sigmoid", ["za"], ["y"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", F32, ["B", "T", E]),
                                   helper.make_tensor_value_info("lens", onnx.TensorProto.INT32,
                                                                 ["B"])], inits, 3)
    m = li.load_model(path)
    assert m.head_on == "steps" and m.config.batch_first and m.config.input == "features"
    assert any("sequence_lens" in n for p in m.parts for n in p.get("notes", []))
    x = rng.standard_normal((3, 6, E)).astype(np.float32)
    lens = np.array([6, 2, 4], np.int32)
    want = _ort(path, x=x, lens=lens)
    got = m(x, lengths=lens)
    for i, n in enumerate(lens):  # past a length: onnxruntime's Y is 0 too, so sigmoid(b)
        assert_close(got[i], want[i], TOL, f"row {i} (length {n})")


def test_time_major_tokens_gemm_on_last_state(tmp_path):
    """Token ids (T, B) -> Gather -> LSTM (layout 0) -> Y_h (1, B, H) -> Squeeze -> Gemm
    (transB, alpha, beta) -> Softmax without an axis (opset 11: the last of a 2-D tensor)."""
    rng = np.random.default_rng(8)
    table = rng.uniform(-1, 1, (V, E)).astype(np.float32)
    Wg = rng.uniform(-0.5, 0.5, (C, H)).astype(np.float32)
    bg = rng.uniform(-0.5, 0.5, (1, C)).astype(np.float32)
    inits = _lstm_inits(rng, E) + [numpy_helper.from_array(table, "table"),
                                  numpy_helper.from_array(Wg, "Wg"),
                                  numpy_helper.from_array(bg, "bg")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("LSTM", ["e", "W", "R", "B"], ["Y", "Yh"], hidden_size=H),
             helper.make_node("Squeeze", ["Yh"], ["h"], axes=[0]),
             helper.make_node("Gemm", ["h", "Wg", "bg"], ["z"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Softmax", ["z"], ["y"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info(
        "ids", onnx.TensorProto.INT64, ["T", "B"])], inits, 2, opset=11)
    m = li.load_model(path)
    assert not m.config.batch_first and m.head_on == "last"
    ids = _ids(8, 3, 9)  # (T, B)
    assert_close(m(ids), _ort(path, ids=ids), TOL)
    # a declared static input of 10^10 ids: the layout is checked on a small sample
    huge = _save(tmp_path, nodes, [helper.make_tensor_value_info(
        "ids", onnx.TensorProto.INT64, [100000, 100000])], inits, 2, opset=11)
    assert li.load_model(huge).config.input == "tokens"


# ----------------------------------------------------------------------------- refusals
def _token_graph(tmp_path, before=(), after=None, softmax_axis=-1):
    rng = np.random.default_rng(10)
    table = rng.uniform(-1, 1, (V, E)).astype(np.float32)
    inits = _lstm_inits(rng, E) + [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(rng.uniform(-1, 1, (H, C)).astype(np.float32), "Wd"),
        numpy_helper.from_array(np.array([0, 0, -1], np.int64), "s"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array([1, 0, 2], np.int64), "perm")]
    e = "e"
    nodes = [helper.make_node("Gather", ["table", "ids"], [e])]
    for op in before:  # between the embedding and the LSTM
        nodes.append(helper.make_node(op, [e, "two"], [e + "1"]))
        e += "1"
    nodes += [helper.make_node("Transpose", [e], ["et"], perm=[1, 0, 2]),
              helper.make_node("LSTM", ["et", "W", "R", "B"], ["Y", "Yh"], hidden_size=H),
              helper.make_node("Squeeze", ["Y"], ["Ys"], axes=[1]),
              helper.make_node("Transpose", ["Ys"], ["Yb"], perm=[1, 0, 2])]
    src = "Yb"
    if after:
        nodes.append(helper.make_node(after, ["Yb"], ["pooled"], axes=[1], keepdims=0))
        src = "pooled"
    nodes += [helper.make_node("MatMul", [src, "Wd"], ["z"]),
              helper.make_node("Softmax", ["z"], ["y"], axis=softmax_axis)]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info(
        "ids", onnx.TensorProto.INT64, ["B", "T"])], inits, 2 if after else 3, opset=11)


def test_refused_graphs(tmp_path):
    ok = _token_graph(tmp_path)
    x = _ids(2, 5)
    assert_close(li.load_model(ok)(x), _ort(ok, ids=x), TOL)  # the baseline runs
    with pytest.raises(WholeModelError, match="not the embedding"):
        li.load_model(_token_graph(tmp_path, before=["Mul"]))
    with pytest.raises(WholeModelError, match="ReduceMean"):
        li.load_model(_token_graph(tmp_path, after="ReduceMean"))
    with pytest.raises(WholeModelError, match="axis 1"):
        li.load_model(_token_graph(tmp_path, softmax_axis=1))
    # the LSTM alone still loads
    assert isinstance(li.load(_token_graph(tmp_path, after="ReduceMean")), li.LSTM)


def test_damaged_files_raise_format_errors(tmp_path):
    """Truncated files and flipped bytes: a FormatError (or a model), never another
    exception."""
    path = _export(tmp_path, bidirectional=True, on="steps")
    data = path.read_bytes()
    bad = tmp_path / "bad.onnx"
    for damaged in damaged_copies(data, 40, 11):
        bad.write_bytes(damaged)
        try:
            li.load_model(bad)
        except li.FormatError:
            pass
