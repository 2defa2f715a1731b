"""Hostile native / safetensors / ONNX files (reliability probe F6, F8): every crafted
file is refused with the loader's own error class (a FormatError) whose message names
the tensor, field or node and the problem, before anything large is allocated.

The safetensors and native files are built by hand (struct + json); the ONNX graphs
with onnx.helper, and only those tests need onnx."""
from __future__ import annotations

import json
import os
import re
import struct
import tracemalloc

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer.formats import native
from lstm_infer.formats import safetensors_io as st
from lstm_infer.formats.errors import FormatError
from lstm_infer.formats.native import NativeFormatError
from lstm_infer.formats.safetensors_io import SafetensorsError

MiB = 1 << 20


def raises(exc, *fragments):
    """pytest.raises of `exc` (and so of FormatError, checked after) whose message holds
    every fragment (literal text)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def _checked(excinfo, cls):
    assert isinstance(excinfo.value, FormatError) and isinstance(excinfo.value, cls)
    return str(excinfo.value)


# ----------------------------------------------------------------------------- safetensors
def _st_file(path, header, data=b"", length=None):
    """A safetensors file from a header (a dict, or JSON text for what json.dumps cannot
    write) and raw data; `length` overrides the header-length field."""
    raw = header if isinstance(header, bytes) else (
        header.encode() if isinstance(header, str) else json.dumps(header).encode())
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def _load_both(path, *fragments):
    """st.load raises SafetensorsError; li.load a FormatError; both name the problem
    (li.load: when the file is recognised as safetensors)."""
    with raises(SafetensorsError, *fragments) as e:
        st.load(path)
    _checked(e, SafetensorsError)
    with raises(FormatError, *(fragments if st.is_safetensors(path) else ())):
        li.load(path)


@pytest.mark.parametrize("field,text,msg", [
    ("shape", "[1e400]", "shape must be a list of integers"),
    ("shape", "[1.9]", "shape must be a list of integers"),       # was truncated to 1
    ("shape", "[2.0]", "shape must be a list of integers"),
    ("shape", "[true, 2]", "shape must be a list of integers"),
    ("shape", "2", "shape must be a list of integers"),
    ("data_offsets", "[0, 1e400]", "data_offsets must be two integers"),
    ("data_offsets", "[0.0, 8]", "data_offsets must be two integers"),
    ("data_offsets", "[0, 8, 9]", "data_offsets must be two integers"),
    ("dtype", '["F32"]', "dtype must be a string"),                 # was: unhashable type
    ("dtype", "null", "dtype must be a string"),
])
def test_safetensors_entry_field_types(tmp_path, field, text, msg):
    e = _entry()
    e[field] = "@@"
    header = json.dumps({"w": e}).replace('"@@"', text)
    _load_both(_st_file(tmp_path / "x.safetensors", header, bytes(8)), "tensor 'w'", msg)


@pytest.mark.parametrize("entry,msg", [
    ({"dtype": "F32", "shape": [2]}, "has no data_offsets"),
    ([1, 2], "header entry must be an object"),
    (_entry(shape=[-2]), "negative dimension"),
    (_entry(shape=[1] * 33), "more than 32 dimensions"),
    (_entry(shape=[0, 2 ** 62], offsets=[0, 0]), "more than 2^62 elements"),
    (_entry(offsets=[-8, 0]), "needs 8 bytes at [-8, 0)"),
    (_entry(shape=[3]), "needs 12 bytes at [0, 8)"),
])
def test_safetensors_entry_values(tmp_path, entry, msg):
    _load_both(_st_file(tmp_path / "x.safetensors", {"w": entry}, bytes(8)), "tensor 'w'", msg)


def test_safetensors_overlap_gap_and_trailing_bytes(tmp_path):
    """Tensors must tile the data section, as the official package requires."""
    p = tmp_path / "x.safetensors"
    _st_file(p, {"a": _entry(), "b": _entry(offsets=(4, 12))}, bytes(12))
    _load_both(p, "tensor 'b' at [4, 12) overlaps tensor 'a'")
    _st_file(p, {"a": _entry(shape=[1], offsets=(0, 4)),
                 "b": _entry(shape=[1], offsets=(8, 12))}, bytes(12))
    _load_both(p, "tensor 'b' at [8, 12) leaves 4 unused bytes after tensor 'a'")
    _st_file(p, {"a": _entry(shape=[1], offsets=(4, 8))}, bytes(8))
    _load_both(p, "tensor 'a'", "leaves 4 unused bytes at the start")
    _st_file(p, {"a": _entry(shape=[1], offsets=(0, 4))}, bytes(8))
    _load_both(p, "4 trailing bytes")
    # zero-size tensors anywhere on the tiling are fine (as in the official package)
    _st_file(p, {"a": _entry(shape=[1], offsets=(0, 4)), "z": _entry(shape=[0], offsets=(4, 4)),
                 "b": _entry(shape=[1], offsets=(4, 8))}, bytes(8))
    assert sorted(st.load(p)[0]) == ["a", "b", "z"]


def test_safetensors_agrees_with_the_official_package(tmp_path):
    """What the official reader refuses (overlap, gap, trailing bytes, float / bool
    shapes), ours refuses; what it accepts, ours accepts."""
    st_np = pytest.importorskip("safetensors.numpy")
    cases = {
        "ok": ({"a": _entry(), "b": _entry(shape=[0], offsets=(8, 8))}, 8),
        "overlap": ({"a": _entry(), "b": _entry(shape=[1], offsets=(4, 8))}, 8),
        "gap": ({"a": _entry(shape=[1], offsets=(0, 4)), "b": _entry(shape=[1], offsets=(8, 12))},
                12),
        "trailing": ({"a": _entry(shape=[1], offsets=(0, 4))}, 8),
        "float-shape": ('{"a": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}}', 4),
        "bool-shape": ('{"a": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}}', 4),
    }
    for name, (header, n) in cases.items():
        p = _st_file(tmp_path / f"{name}.safetensors", header, bytes(n))
        try:
            st_np.load(p.read_bytes())
            theirs = True
        except Exception:  # noqa: BLE001 - their error class
            theirs = False
        try:
            st.load(p)
            ours = True
        except SafetensorsError:
            ours = False
        assert ours == theirs, name


@pytest.mark.parametrize("length,msg", [
    (0, "header length 0 is too small"),
    (1, "header length 1 is too small"),
    (7, "corrupted safetensors header"),
    (10 ** 6, "does not fit"),
    (2 ** 63, "does not fit"),
    (2 ** 64 - 1, "does not fit"),
])
def test_safetensors_header_length_field(tmp_path, length, msg):
    p = _st_file(tmp_path / "x.safetensors", {"w": _entry()}, bytes(8), length=length)
    with raises(SafetensorsError, msg) as e:
        st.load(p)
    _checked(e, SafetensorsError)
    with pytest.raises(FormatError):
        li.load(p)


def test_safetensors_header_too_large_to_parse(tmp_path):
    """A header the official package would still read (< 100 MB) but whose parsed JSON
    would cost ~10x its size is refused before parsing (a valid {} + 4 MiB of spaces)."""
    p = _st_file(tmp_path / "x.safetensors", b"{}" + b" " * (4 * MiB))
    with raises(SafetensorsError, f"header of {4 * MiB + 2} bytes", "at most 4194304"):
        st.load(p)
    with raises(FormatError, "at most"):
        li.load(p)


def test_safetensors_deeply_nested_header(tmp_path):
    """50k nested lists: a RecursionError from json.loads on the old reader."""
    depth = 50_000
    p = _st_file(tmp_path / "x.safetensors", '{"a":' + "[" * depth + "]" * depth + "}")
    _load_both(p, "nested too deeply")


@pytest.mark.parametrize("header,msg", [
    ("[1, 2]", "not a JSON object (got a JSON list)"),
    ({"__metadata__": [1]}, "__metadata__ must be a JSON object"),
    ('{"a": ' + "1" * 5000 + "}", "corrupted safetensors header"),  # int too long to convert
    (b'{"a": "\xff"}', "corrupted safetensors header"),
])
def test_safetensors_header_json(tmp_path, header, msg):
    _load_both(_st_file(tmp_path / "x.safetensors", header), msg)


def test_safetensors_net_turns_any_escape_into_safetensors_error(tmp_path, monkeypatch):
    p = _st_file(tmp_path / "x.safetensors", {"w": _entry()}, bytes(8))
    monkeypatch.setattr(st, "_check_entry", lambda *a: {}["boom"])
    with raises(SafetensorsError, "cannot be loaded", "KeyError") as e:
        st.load(p)
    _checked(e, SafetensorsError)


# ----------------------------------------------------------------------------- native
def _native(tmp_path, edit=None, model=None):
    """A native file of `model` (default: 1 layer, I=3, H=4) with its header edited by
    edit(header), tensor data unchanged."""
    p = tmp_path / "m.safetensors"
    (model or li.LSTM.random(3, 4)).save(p)
    if edit is not None:
        data = p.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        edit(header)
        raw = json.dumps(header).encode()
        p.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    return p


def _native_error(p, *fragments):
    with raises(NativeFormatError, *fragments) as e:
        li.load(p)
    return _checked(e, NativeFormatError)


def _set_meta(key, value):
    return lambda h: h["__metadata__"].__setitem__(key, value)


@pytest.mark.parametrize("config,msg", [
    ("[]", "must hold a JSON object of constructor options; got a JSON list"),
    ("3", "got a JSON int"),
    ("null", "got a JSON NoneType"),
    ('"text"', "got a JSON str"),
    ("{not json", "metadata field 'config' is not valid JSON"),
    ('{"layer_options": 5}', "config field 'layer_options' must be a list"),
    ('{"layer_options": [3]}', "config field 'layer_options' must be a list"),
    ('{"layer_options": [{"direction": 1}]}', "layer_options[0].direction must be a string"),
    ('{"layer_options": [{}], "quantization": 8}', "'quantization' must be a string"),
    ('{"layer_options": [{}], "frobnicate": 1}', "frobnicate"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_native_config_types(tmp_path, config, msg):
    """config "[]" / "3" / "null" raised AttributeError at options.get on the old loader."""
    _native_error(_native(tmp_path, _set_meta("config", config)), msg)


def test_native_metadata_field_types(tmp_path):
    cfg = json.dumps(li.LSTM.random(3, 4).options)
    # a config that is a JSON object instead of a string: a TypeError from json.loads before
    _native_error(_native(tmp_path, _set_meta("config", json.loads(cfg))),
                  "metadata field 'config' must be a string; got a JSON dict")
    _native_error(_native(tmp_path, _set_meta("format_version", 1)),
                  "metadata field 'format_version' must be a string; got a JSON int")
    _native_error(_native(tmp_path, lambda h: h["__metadata__"].pop("config")),
                  "metadata has no 'config'")


@pytest.mark.parametrize("mode", ["float16-weights", "bfloat16-weights", "bf16", "int8", "int8-weights"])
@pytest.mark.parametrize("missing", ["w_hh", "w_ih"])
def test_quantized_native_file_missing_a_tensor(tmp_path, mode, missing):
    """A KeyError 'w_hh' from quantize.stored_form / dequantize on the old loader: now
    every tensor the config requires is checked before the model is built."""
    m = li.LSTM.random(3, 4).quantize(mode)
    p = _native(tmp_path, lambda h: h.pop(f"layers.0.forward.{missing}"), m)
    _native_error(p, f"layer 0 forward: missing {missing}", f"layers.0.forward.{missing}")


def test_int8_weight_without_its_scale(tmp_path):
    """int8 W_ih without w_ih_scale: a KeyError from quantize.dequantize on the old loader
    (when the config says only W_hh is quantized)."""
    m = li.LSTM.random(3, 4).quantize("int8-weights", input_weights=True)

    def edit(h):
        h.pop("layers.0.forward.w_ih_scale")
        cfg = json.loads(h["__metadata__"]["config"])
        cfg["quantize_input_weights"] = False
        h["__metadata__"]["config"] = json.dumps(cfg)
    _native_error(_native(tmp_path, edit, m), "layer 0 forward: int8 w_ih needs w_ih_scale")


def test_native_directions_follow_the_config(tmp_path):
    bi = li.LSTM.random(3, 4, bidirectional=True)
    _native_error(_native(tmp_path, lambda h: [h.pop(k) for k in list(h) if ".reverse." in k], bi),
                  "layer 0 reverse: missing w_ih")

    def forward_to_reverse(h):  # tensors under "forward", config says "reverse"
        cfg = json.loads(h["__metadata__"]["config"])
        cfg["layer_options"][0]["direction"] = "reverse"
        h["__metadata__"]["config"] = json.dumps(cfg)
    _native_error(_native(tmp_path, forward_to_reverse), "layer 0 reverse: missing w_ih")


def test_native_layer_count_bounded_by_the_tensors(tmp_path):
    """10^5 layer_options over 3 tensors: refused from the count, before any layer."""
    def edit(h):
        cfg = json.loads(h["__metadata__"]["config"])
        cfg["layer_options"] = [{}] * 100_000
        h["__metadata__"]["config"] = json.dumps(cfg)
    _native_error(_native(tmp_path, edit), "declares 100000 layers", "holds 3 tensors")


@pytest.mark.parametrize("n,msg", [(50_000, "unexpected tensors"), (100_000, "at most")])
def test_native_many_extra_entries(tmp_path, n, msg):
    """5*10^4 extra (zero-size) entries: named, refused before any array is made; 10^5 of
    them make a header (6 MB) beyond what the reader parses."""
    p = _native(tmp_path)
    data = p.read_bytes()
    (h,) = struct.unpack("<Q", data[:8])
    end = len(data) - 8 - h
    extra = "".join(f',"x{i}":{{"dtype":"F32","shape":[0],"data_offsets":[{end},{end}]}}'
                    for i in range(n))
    raw = data[8:8 + h].rstrip()[:-1] + extra.encode() + b"}"
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + h:])
    with raises(FormatError, msg) as e:
        native.load(p)  # (li.load parses the header once more, to detect the format)
    if n == 50_000:
        _checked(e, NativeFormatError)
        assert "'x0'" in str(e.value) and "(50000 in all)" in str(e.value)
    else:
        _checked(e, SafetensorsError)
    assert len(str(e.value)) < 400


def test_native_file_with_bad_safetensors_header(tmp_path):
    """A file whose metadata says native is read by the native loader, whose header checks
    name the tensor (SafetensorsError is a FormatError too)."""
    def overlap(h):  # the last tensor, one float longer at its start
        e = h["layers.0.forward.w_ih"]
        assert e["data_offsets"][1] == max(v["data_offsets"][1] for k, v in h.items()
                                           if k != "__metadata__")
        e["data_offsets"][0] -= 4 * e["shape"][1]
        e["shape"][0] += 1
    p = _native(tmp_path, overlap)
    assert li.detect_format(p) == "native"
    with raises(SafetensorsError, "tensor 'layers.0.forward.w_ih'", "overlaps tensor") as e:
        li.load(p)
    _checked(e, SafetensorsError)

    def float_shape(h):
        h["layers.0.forward.b"]["shape"] = [16.0]
    with raises(SafetensorsError, "tensor 'layers.0.forward.b'", "list of integers"):
        li.load(_native(tmp_path, float_shape))


def test_native_net_turns_any_escape_into_native_error(tmp_path, monkeypatch):
    p = _native(tmp_path)
    monkeypatch.setattr(st, "arrays", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    _native_error(p, str(p), "more data than can be allocated")
    monkeypatch.setattr(st, "arrays", lambda *a, **k: (_ for _ in ()).throw(AttributeError("x")))
    _native_error(p, "AttributeError: x")
    with pytest.raises(FileNotFoundError):  # a problem with the path passes as it is
        native.load(tmp_path / "nope.safetensors")


def test_native_round_trip_still_loads(tmp_path):
    for m in (li.LSTM.random(3, 4, num_layers=2, bidirectional=True, proj_size=2),
              li.LSTM.random(3, 4).quantize("int8-weights", input_weights=True)):
        back = li.load(_native(tmp_path, model=m))
        x = np.random.default_rng(0).uniform(-1, 1, (5, 2, 3)).astype(np.float32)
        np.testing.assert_array_equal(back(x)[0], m(x)[0])


# ----------------------------------------------------------------------------- ONNX
def _onnx():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    return onnx, TensorProto, helper, numpy_helper


def _lstm_graph(nodes, inits, *, H=4, I=None, lstm_inputs=("X", "W", "R"), **attrs):
    """A model whose LSTM node reads W / R from `nodes` + `inits`."""
    onnx, TP, oh, nh = _onnx()
    if H is not None:
        attrs["hidden_size"] = H
    lstm = oh.make_node("LSTM", list(lstm_inputs), ["Y"], name="lstm", **attrs)
    g = oh.make_graph(list(nodes) + [lstm], "g",
                      [oh.make_tensor_value_info("X", TP.FLOAT, [None, None, I])],
                      [oh.make_tensor_value_info("Y", TP.FLOAT, None)], list(inits))
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", 14)])


def _R(H=4):
    _, _, _, nh = _onnx()
    return nh.from_array(np.zeros((1, 4 * H, H), np.float32), "R")


def _onnx_error(model, *fragments):
    from lstm_infer.formats.onnx import ONNXFormatError, from_onnx
    with raises(ONNXFormatError, *fragments) as e:
        from_onnx(model)
    return _checked(e, ONNXFormatError)


def _traced_peak(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_onnx_constant_of_shape_bomb_peak_memory(tmp_path):
    """A small .onnx whose W is ConstantOfShape([1, 4000, 16000]) (256 MB of float32;
    the probe's 40000 made 2.45 GiB): refused before the fill. The peak of everything
    numpy and Python allocate during li.load (tracemalloc) stays below the file's tensor
    bytes (R: 16 MB) x 2 + a few MB, the issue's bound being 2x + 64 MB."""
    onnx, TP, oh, nh = _onnx()
    shp = nh.from_array(np.array([1, 4000, 16000], np.int64), "shp")
    cos = oh.make_node("ConstantOfShape", ["shp"], ["W"], name="cos",
                       value=oh.make_tensor("v", TP.FLOAT, [1], [0.5]))
    R = nh.from_array(np.zeros((1, 4000, 1000), np.float32), "R")
    p = tmp_path / "cos.onnx"
    p.write_bytes(_lstm_graph([cos], [shp, R], H=None).SerializeToString())
    tensor_bytes = 4000 * 1000 * 4
    assert tensor_bytes < os.path.getsize(p) < tensor_bytes + 2000
    peak = _traced_peak(lambda: _onnx_error(
        str(p), "W ('W') is refused", "ConstantOfShape node 'cos'", "(1, 4000, 16000)"))
    assert peak < 2 * tensor_bytes + 8 * MiB, peak


def test_onnx_expand_bomb(tmp_path):
    onnx, TP, oh, nh = _onnx()
    shp = nh.from_array(np.array([1, 40000, 16000], np.int64), "shp")
    one = nh.from_array(np.zeros((1, 1, 1), np.float32), "one")
    model = _lstm_graph([oh.make_node("Expand", ["one", "shp"], ["W"], name="ex")],
                        [shp, one, _R()], H=None)
    peak = _traced_peak(lambda: _onnx_error(model, "W ('W') is refused", "Expand node 'ex'",
                                            "(1, 40000, 16000)", "2560000000 bytes"))
    assert peak < 16 * MiB


def test_onnx_weight_shape_compared_first(tmp_path):
    """hidden_size=4: a ConstantOfShape W of any other shape is refused from its shape,
    before the fill (and before the budget)."""
    onnx, TP, oh, nh = _onnx()
    shp = nh.from_array(np.array([1, 40000, 16000], np.int64), "shp")
    model = _lstm_graph([oh.make_node("ConstantOfShape", ["shp"], ["W"])], [shp, _R()], I=3)
    _onnx_error(model, "W (num_directions, 4*hidden_size, input_size) must have shape "
                       "(1, 16, 3)", "would produce (1, 40000, 16000)")
    # R too: W is fine, R from an Expand of the wrong shape
    W = nh.from_array(np.zeros((1, 16, 3), np.float32), "W")
    rs = nh.from_array(np.array([1, 16, 5000], np.int64), "rs")
    one = nh.from_array(np.zeros((1, 1, 1), np.float32), "one")
    model = _lstm_graph([oh.make_node("Expand", ["one", "rs"], ["R"])], [W, rs, one])
    _onnx_error(model, "R (num_directions, 4*hidden_size, hidden_size) must have shape "
                       "(1, 16, 4)", "would produce (1, 16, 5000)")


@pytest.mark.parametrize("case", ["add", "concat", "gather", "cast"])
def test_onnx_other_amplifying_ops(case):
    """Broadcasting Add, Concat of one input many times, Gather with many indices, Cast
    to a wider type: each output is bounded before it is allocated."""
    onnx, TP, oh, nh = _onnx()
    big = nh.from_array(np.zeros((1, 1024, 1024), np.float32), "big")  # 4 MB in the file
    if case == "add":
        inits = [nh.from_array(np.zeros((1, 100_000, 1), np.float32), "a"),
                 nh.from_array(np.zeros((1, 1, 100_000), np.float32), "b")]
        nodes = [oh.make_node("Add", ["a", "b"], ["W"], name="op")]
    elif case == "concat":
        inits = [big]
        nodes = [oh.make_node("Concat", ["big"] * 100, ["W"], name="op", axis=1)]
    elif case == "gather":
        inits = [big, nh.from_array(np.array([100_000], np.int64), "n")]
        nodes = [oh.make_node("ConstantOfShape", ["n"], ["idx"],
                              value=oh.make_tensor("v", TP.INT64, [1], [0])),
                 oh.make_node("Gather", ["big", "idx"], ["W"], name="op", axis=1)]
    else:
        inits = [nh.from_array(np.zeros((1, 4 * 1024, 4 * 1024), np.int8), "i8")]  # 16 MB
        nodes = [oh.make_node("Cast", ["i8"], ["W"], name="op", to=TP.DOUBLE)]   # 128 MB
    model = _lstm_graph(nodes, inits + [_R()], H=None)
    peak = _traced_peak(lambda: _onnx_error(model, "W ('W') is refused", "node 'op'"))
    assert peak < 48 * MiB


def test_onnx_constant_value_not_a_tensor():
    """value=1.5 (a FLOAT attribute): an AttributeError from onnx's to_array before."""
    onnx, TP, oh, nh = _onnx()
    model = _lstm_graph([oh.make_node("Constant", [], ["W"], name="c", value=1.5)], [_R()])
    _onnx_error(model, "Constant node 'c': value must be a tensor; got float")
    model = _lstm_graph([oh.make_node("ConstantOfShape", ["s"], ["W"], name="c", value=2)],
                        [nh.from_array(np.array([1, 16, 3], np.int64), "s"), _R()])
    _onnx_error(model, "ConstantOfShape node 'c': value must be a tensor; got int")


def test_onnx_initializer_dims_checked_against_data():
    onnx, TP, oh, nh = _onnx()
    W = nh.from_array(np.zeros((1, 16, 3), np.float32), "W")
    W.raw_data = bytes(32)
    _onnx_error(_lstm_graph([], [W, _R()]), "initializer 'W' declares dims [1, 16, 3] of "
                                            "float32 (192 bytes of data) but holds 32 bytes")
    W = oh.make_tensor("W", TP.FLOAT, [1, 16, 3], vals=[0.0] * 48)
    del W.float_data[5:]
    _onnx_error(_lstm_graph([], [W, _R()]), "initializer 'W' declares dims [1, 16, 3]",
                "holds 5 values in float_data")
    W = nh.from_array(np.zeros((1, 0, 0), np.float32), "W")
    W.dims[:] = [1, 2 ** 20, 2 ** 20]  # and no data
    peak = _traced_peak(lambda: _onnx_error(_lstm_graph([], [W, _R()]), "4398046511104 bytes",
                                            "holds 0 bytes"))
    assert peak < 4 * MiB
    W = oh.make_tensor("W", TP.FLOAT, [1, 16, 3], vals=[0.0] * 48)
    W.dims[1] = -16
    _onnx_error(_lstm_graph([], [W, _R()]), "initializer 'W' has dims [1, -16, 3]",
                "negative dimension")
    W = nh.from_array(np.zeros((1, 16, 3), np.float32), "W")
    W.data_type = 999
    _onnx_error(_lstm_graph([], [W, _R()]), "initializer 'W' has data_type 999")


def test_onnx_external_data_checked_before_reading(tmp_path):
    onnx, TP, oh, nh = _onnx()
    from lstm_infer.formats.onnx import from_onnx
    W = nh.from_array(np.zeros((1, 16, 3), np.float32), "W")
    model = _lstm_graph([], [W, _R()])
    p = tmp_path / "ext.onnx"
    onnx.save_model(model, str(p), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    from_onnx(p)  # loads
    m = onnx.load(str(p), load_external_data=False)
    info = {e.key: e for e in m.graph.initializer[0].external_data}
    info["length"].value = str(10 ** 12)
    p.write_bytes(m.SerializeToString())
    _onnx_error(p, "initializer 'W' declares dims [1, 16, 3]", "external data holds "
                   "1000000000000 bytes")
    # a ModelProto with external data has no directory to read it from: not the cwd
    _onnx_error(m, "initializer 'W'", "not read from a path")


def test_onnx_attribute_types():
    """hidden_size "4" / 4.0 / [4] and the like: a raw ValueError or TypeError (or a
    silent int(4.7)) before."""
    onnx, TP, oh, nh = _onnx()
    W = nh.from_array(np.zeros((1, 16, 3), np.float32), "W")
    for attr, value, msg in (("hidden_size", "4", "'hidden_size' must be an int"),
                             ("hidden_size", 4.7, "'hidden_size' must be an int"),
                             ("layout", [0], "'layout' must be an int"),
                             ("clip", "big", "'clip' must be a float"),
                             ("activations", 3, "'activations' must be a list of strs"),
                             ("activation_alpha", ["a"], "'activation_alpha' must be a list")):
        model = _lstm_graph([], [W, _R()], H=None, **{attr: value})
        _onnx_error(model, "LSTM node 'lstm'", msg)


def test_onnx_evaluator_errors_are_format_errors():
    onnx, TP, oh, nh = _onnx()
    s = nh.from_array(np.array([1.5, np.inf, 3.0]), "s")  # a float "shape"
    model = _lstm_graph([oh.make_node("ConstantOfShape", ["s"], ["W"])], [s, _R()])
    _onnx_error(model, "W ('W')", "ConstantOfShape's shape must be a 1-D integer tensor")
    big = nh.from_array(np.zeros(40, np.int64), "s")  # 40 dims
    model = _lstm_graph([oh.make_node("Reshape", ["W0", "s"], ["W"])],
                        [nh.from_array(np.zeros((1, 16, 3), np.float32), "W0"), big, _R()])
    _onnx_error(model, "W ('W')", "Reshape's shape must be")
    model = _lstm_graph([oh.make_node("Split", ["W0"], ["W", "rest"], axis=1, split=[9, 9])],
                        [nh.from_array(np.zeros((1, 16, 3), np.float32), "W0"), _R()])
    _onnx_error(model, "W ('W')", "Split sizes [9, 9] do not divide")


def test_onnx_net_turns_any_escape_into_onnx_error(monkeypatch):
    onnx, TP, oh, nh = _onnx()
    from lstm_infer.formats import onnx as onnx_format
    model = _lstm_graph([], [nh.from_array(np.zeros((1, 16, 3), np.float32), "W"), _R()])
    onnx_format.from_onnx(model)
    monkeypatch.setattr(onnx_format, "_activations", lambda *a: {}["boom"])
    _onnx_error(model, "the ONNX model: cannot be loaded", "KeyError")
    # the caller's own mistakes stay TypeErrors
    with pytest.raises(TypeError, match="node must be"):
        onnx_format.from_onnx(model, node=3)


def test_onnx_stack_link_check_is_bounded():
    """Two stacked LSTM nodes under an X declared (4096, 1024, 3): the link check tagged
    every element of a (T, D, B, H) Y and filled a (T, B, I) NaN input (~400 MB); now
    it checks with a small T, B."""
    onnx, TP, oh, nh = _onnx()
    H = 4
    z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    inits = [nh.from_array(z(1, 4 * H, 3), "W0"), nh.from_array(z(1, 4 * H, H), "R0"),
             nh.from_array(z(1, 4 * H, H), "W1"), nh.from_array(z(1, 4 * H, H), "R1"),
             nh.from_array(np.array([1], np.int64), "ax")]
    nodes = [oh.make_node("LSTM", ["X", "W0", "R0"], ["Y0"], name="a", hidden_size=H),
             oh.make_node("Squeeze", ["Y0", "ax"], ["X1"]),
             oh.make_node("LSTM", ["X1", "W1", "R1"], ["Y1"], name="b", hidden_size=H)]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("X", TP.FLOAT, [4096, 1024, 3])],
                      [oh.make_tensor_value_info("Y1", TP.FLOAT, None)], inits)
    model = oh.make_model(g, opset_imports=[oh.make_opsetid("", 14)])
    from lstm_infer.formats.onnx import from_onnx
    out = {}
    peak = _traced_peak(lambda: out.setdefault("m", from_onnx(model)))
    assert out["m"].config.num_layers == 2
    assert peak < 16 * MiB
