"""Hostile native / safetensors / ONNX files (reliability probe F6, F8): every crafted
file is refused with the loader's own error class (a FormatError) whose message names
the tensor, field or node and the problem, before anything large is allocated.

The safetensors and native files are built by hand (struct + json); the ONNX graphs
with onnx.helper, and only those tests need onnx."""
from __future__ import annotations

import json
import re
import struct

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


@pytest.mark.parametrize("mode", ["float16", "bfloat16", "int8", "int8-weights"])
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
