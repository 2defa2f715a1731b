"""Hostile Keras files (RELIABILITY.md F4, F6, F8) and detect_format's zip sniffing.

- F4: HDF5 external storage, external links (on a dataset or a group), soft links and
  virtual datasets would read another local file into the weights: refused, in a
  legacy .h5 and in a .keras archive's model.weights.h5, naming the dataset;
- F6: a config.json or model.weights.h5 zip bomb, an unallocated or gzip-bomb dataset:
  refused from declared sizes, before anything big is allocated (tracemalloc peaks);
- F8: malformed configs, deep nesting, corrupt superblocks, a weight name that names a
  group: always KerasFileError (a FormatError), never another exception.
"""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import tracemalloc
import zipfile

import numpy as np
import pytest

try:  # crafting and reading HDF5 files needs h5py (the keras extra); tests that do skip
    import h5py
except ImportError:
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="could not import 'h5py'")

import lstm_infer as li
from lstm_infer.formats import detect
from lstm_infer.formats import keras as keras_format
from lstm_infer.formats.detect import UnknownFormatError, detect_format
from lstm_infer.formats.errors import MAX_METADATA_BYTES, FormatError
from lstm_infer.formats.keras import KerasFileError, from_keras, keras_layers_summary

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "keras")
H5 = os.path.join(DATA, "tf_keras2_seq.h5")        # legacy: lstm (3 -> 4) first
KERAS = os.path.join(DATA, "stack_v3.keras")       # Keras 3: lstm "enc" (3 -> 8) first
FUNCTIONAL = os.path.join(DATA, "embed_v3.keras")  # Keras 3 functional (inbound_nodes)
H5_KERNEL = "model_weights/lstm/lstm/lstm_cell/kernel:0"   # (3, 16)
H5_GROUP = "model_weights/lstm"
KERAS_KERNEL = "layers/lstm/cell/vars/0"                  # (3, 32)
KERAS_GROUP = "layers/lstm"
CANARY = np.arange(1000.0, 1096.0, dtype="<f4")  # known values that no fixture holds


# ============================================================================ helpers
def _members(src):
    with zipfile.ZipFile(src) as z:
        return {n: z.read(n) for n in z.namelist()}


def _write_zip(dst, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(dst, "w", compression, compresslevel=1 if compression else None) as z:
        for n, data in members.items():
            z.writestr(n, data)
    return dst


def _edit_h5(dst, edit):
    """A copy of the legacy fixture, edited in place with h5py."""
    shutil.copy(H5, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _edit_keras(dst, edit=None, config=None, members=None):
    """A copy of the .keras fixture with its model.weights.h5 edited / config replaced."""
    m = _members(KERAS)
    if edit is not None:  # h5py edits the bytes in memory
        buf = io.BytesIO(m["model.weights.h5"])
        with h5py.File(buf, "r+") as f:
            edit(f)
        m["model.weights.h5"] = buf.getvalue()
    if config is not None:
        m["config.json"] = config if isinstance(config, bytes) else json.dumps(config).encode()
    m.update(members or {})
    return _write_zip(dst, m)


def _config(path=KERAS):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))


def _peak_bytes(fn):
    """(exception or None, peak traced bytes) of fn(): numpy and Python allocations."""
    tracemalloc.start()
    try:
        try:
            fn()
            err = None
        except Exception as e:  # noqa: BLE001
            err = e
        return err, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ============================================================================ F4: no reads outside the file
@pytest.fixture
def canary(tmp_path):
    """A raw float file and an HDF5 file holding the canary values (as /w and a group copy)."""
    raw = tmp_path / "canary.bin"
    CANARY.tofile(raw)
    h5 = tmp_path / "canary.h5"
    with h5py.File(h5, "w") as f:
        f["w"] = CANARY[:48].reshape(3, 16)
        f["w32"] = CANARY[:96].reshape(3, 32)
        with h5py.File(H5) as src:  # a whole layer group, kernel replaced by the canary
            src.copy(src[H5_GROUP], f, "h5_layer")
        del f["h5_layer/lstm/lstm_cell/kernel:0"]
        f["h5_layer/lstm/lstm_cell/kernel:0"] = CANARY[:48].reshape(3, 16)
        with zipfile.ZipFile(KERAS) as z:
            tmp = tmp_path / "w.h5"
            tmp.write_bytes(z.read("model.weights.h5"))
        with h5py.File(tmp) as src:
            src.copy(src[KERAS_GROUP], f, "keras_layer")
        del f["keras_layer/cell/vars/0"]
        f["keras_layer/cell/vars/0"] = CANARY[:96].reshape(3, 32)
    return {"raw": str(raw), "h5": str(h5)}


def _external_storage(kernel, shape):
    def edit(f, canary):
        del f[kernel]
        nbytes = int(np.prod(shape)) * 4
        f.create_dataset(kernel, shape=shape, dtype="<f4", external=[(canary["raw"], 0, nbytes)])
    return edit


def _external_link(kernel, target):
    def edit(f, canary):
        del f[kernel]
        f[kernel] = h5py.ExternalLink(canary["h5"], target)
    return edit


def _group_link(group, target):
    def edit(f, canary):
        del f[group]
        f[group] = h5py.ExternalLink(canary["h5"], target)
    return edit


def _soft_to_external(kernel, target):
    def edit(f, canary):
        f["elsewhere"] = h5py.ExternalLink(canary["h5"], target)
        del f[kernel]
        f[kernel] = h5py.SoftLink("/elsewhere")
    return edit


def _virtual(kernel, shape, target):
    def edit(f, canary):
        layout = h5py.VirtualLayout(shape=shape, dtype="<f4")
        layout[:] = h5py.VirtualSource(canary["h5"], target, shape=shape)
        del f[kernel]
        f.create_virtual_dataset(kernel, layout)
    return edit


_LEAKS = {  # name: (h5 edit, .keras edit, what the message says)
    "external-storage": (_external_storage(H5_KERNEL, (3, 16)),
                         _external_storage(KERAS_KERNEL, (3, 32)), "external file"),
    "external-link": (_external_link(H5_KERNEL, "/w"), _external_link(KERAS_KERNEL, "/w32"),
                      "external link"),
    "group-external-link": (_group_link(H5_GROUP, "/h5_layer"),
                            _group_link(KERAS_GROUP, "/keras_layer"), "external link"),
    "soft-link-to-external": (_soft_to_external(H5_KERNEL, "/w"),
                              _soft_to_external(KERAS_KERNEL, "/w32"), "soft link"),
    "virtual-dataset": (_virtual(H5_KERNEL, (3, 16), "/w"),
                        _virtual(KERAS_KERNEL, (3, 32), "/w32"), "virtual dataset"),
}


@needs_h5py
@pytest.mark.parametrize("container", ["h5", "keras"])
@pytest.mark.parametrize("leak", sorted(_LEAKS))
def test_links_and_storage_out_of_the_file_are_refused(tmp_path, canary, leak, container):
    h5_edit, keras_edit, says = _LEAKS[leak]
    if container == "h5":
        p = _edit_h5(tmp_path / "leak.h5", lambda f: h5_edit(f, canary))
        name = H5_GROUP if leak.startswith("group") else H5_KERNEL
    else:
        p = _edit_keras(tmp_path / "leak.keras", lambda f: keras_edit(f, canary))
        name = KERAS_GROUP if leak.startswith("group") else KERAS_KERNEL
    for load in (from_keras, li.load):
        with pytest.raises(KerasFileError) as e:
            load(p)
        assert says in str(e.value) and f"/{name}" in str(e.value) and str(p) in str(e.value)


@needs_h5py
def test_canary_is_read_without_the_check(tmp_path, canary):
    """The files above really leak: h5py follows external storage when asked to."""
    p = _edit_h5(tmp_path / "leak.h5", lambda f: _LEAKS["external-storage"][0](f, canary))
    with h5py.File(p) as f:
        np.testing.assert_array_equal(f[H5_KERNEL][()].ravel(), CANARY[:48])


# ============================================================================ F6: sizes before reading
def test_config_json_zip_bomb_is_refused_unread(tmp_path):
    """2 bytes of JSON + 80 MiB of spaces, deflated to ~0.4 MB: the declared size is
    refused before anything is inflated."""
    assert keras_format._MAX_CONFIG_BYTES == MAX_METADATA_BYTES < 80 << 20
    p = tmp_path / "bomb.keras"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("config.json", "w") as f:
            f.write(b"{}")
            for _ in range(80):
                f.write(b" " * (1 << 20))
        for n, data in _members(KERAS).items():
            if n != "config.json":
                z.writestr(n, data)
    for load in (from_keras, keras_layers_summary):
        err, peak = _peak_bytes(lambda: load(p))
        assert isinstance(err, KerasFileError) and "'config.json' declares" in str(err), err
        assert peak < 8 << 20, peak


def test_weights_member_zip_bomb_is_refused(tmp_path):
    """A model.weights.h5 padded with 80 MiB of zeros (HDF5 ignores bytes after its end),
    deflated 250:1: refused from its declared size, not extracted."""
    p = tmp_path / "bomb.keras"
    m = _members(KERAS)
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for n in ("metadata.json", "config.json"):
            z.writestr(n, m[n])
        with z.open("model.weights.h5", "w") as f:
            f.write(m["model.weights.h5"])
            for _ in range(80):
                f.write(bytes(1 << 20))
    err, peak = _peak_bytes(lambda: from_keras(p))
    assert isinstance(err, KerasFileError) and "'model.weights.h5' declares" in str(err), err
    assert peak < 8 << 20, peak


@needs_h5py
def test_weights_member_is_extracted_not_read_into_memory(tmp_path):
    """A legitimate (stored) weights member is copied to a temporary file in 1 MiB steps."""
    err, peak = _peak_bytes(lambda: from_keras(KERAS))
    assert err is None and peak < 4 << 20, (err, peak)


def _units_config(h5_file, units):
    """Set the first LSTM's units in a legacy file's model_config."""
    cfg = json.loads(h5_file.attrs["model_config"])
    cfg["config"]["layers"][2]["config"]["units"] = units
    h5_file.attrs["model_config"] = json.dumps(cfg)


def _replace(f, name, shape, **kw):
    del f[name]
    return f.create_dataset(name, shape=shape, dtype="<f4", **kw)


@needs_h5py
@pytest.mark.parametrize("how", ["unallocated", "gzip-bomb"])
def test_dataset_declaring_more_than_it_stores_is_refused_unread(tmp_path, how):
    """units=1100: recurrent_kernel (1100, 4400) f4 = 19 MB, matching the config, but
    unallocated (never written: 0 bytes stored) or a gzip bomb (~20 KB stored)."""
    H = 1100

    def edit(f):
        _units_config(f, H)
        base = "model_weights/lstm/lstm/lstm_cell/"
        _replace(f, base + "kernel:0", (3, 4 * H))[...] = 0.0
        _replace(f, base + "bias:0", (4 * H,))[...] = 0.0
        if how == "unallocated":
            _replace(f, base + "recurrent_kernel:0", (H, 4 * H), chunks=(100, 400))
        else:
            del f[base + "recurrent_kernel:0"]
            f.create_dataset(base + "recurrent_kernel:0", data=np.zeros((H, 4 * H), "<f4"),
                             chunks=(100, 400), compression="gzip")
    p = _edit_h5(tmp_path / f"{how}.h5", edit)
    err, peak = _peak_bytes(lambda: from_keras(p, layer="lstm"))
    assert isinstance(err, KerasFileError), err
    assert "recurrent_kernel:0: declares 19360000 bytes of data but stores" in str(err), err
    assert peak < 8 << 20, peak


@needs_h5py
def test_huge_unallocated_dataset_is_refused_from_its_shape(tmp_path):
    """An unallocated chunked (30000, 30000) kernel (3.4 GB declared, 24 KB file): the shape
    disagrees with the config, which is checked before any read."""
    p = _edit_h5(tmp_path / "huge.h5", lambda f: _replace(f, H5_KERNEL, (30000, 30000),
                                                         chunks=(1000, 1000)))
    err, peak = _peak_bytes(lambda: from_keras(p))
    assert isinstance(err, KerasFileError) and "got (30000, 30000)" in str(err), err
    assert peak < 4 << 20, peak


@needs_h5py
def test_a_small_compressed_file_still_loads(tmp_path):
    """Compression within the inflation budget is accepted (h5repack'd files)."""
    def edit(f):
        for name in ("kernel:0", "recurrent_kernel:0", "bias:0"):
            full = f"model_weights/lstm/lstm/lstm_cell/{name}"
            data = f[full][()]
            _replace(f, full, data.shape, compression="gzip")[...] = data
    p = _edit_h5(tmp_path / "gz.h5", edit)
    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(from_keras(p, layer="lstm")(x)[0],
                                  from_keras(H5, layer="lstm")(x)[0])


@needs_h5py
def test_dataset_beyond_the_end_of_the_file_is_refused(tmp_path):
    p = tmp_path / "cut.h5"
    data = open(H5, "rb").read()
    with h5py.File(H5) as f:
        end = f[H5_KERNEL].id.get_offset() + 8  # cut inside the first kernel's data
    p.write_bytes(data[:end])
    with pytest.raises(KerasFileError):
        from_keras(p)


# ============================================================================ F8: only KerasFileError
_NODE = ("config", "layers", 3, "inbound_nodes", 0)   # embed_v3: the first LSTM's call
_BI = ("config", "layers", 2, "config")                # stack_v3: the Bidirectional
_DEEP = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
_MALFORMED = {  # name: (fixture, where in config.json (() = all of it), value, message or None)
    "keras-tensor-config-str": (FUNCTIONAL, _NODE + ("args", 0, "config"), "x", None),
    "args-dict": (FUNCTIONAL, _NODE + ("args",), {"a": 1}, "'args' must be a list"),
    "inbound-nodes-int": (FUNCTIONAL, ("config", "layers", 3, "inbound_nodes"), 5,
                          "'inbound_nodes' must be a list"),
    "history-of-lists": (FUNCTIONAL, _NODE + ("args", 0, "config", "keras_history"),
                         [["a"], [0], {}], None),
    "deep-node": (FUNCTIONAL, _NODE + ("args",), _DEEP, "nested more than"),
    "class-name-list": (KERAS, ("config", "layers", 1, "class_name"), ["LSTM"],
                        "without a 'class_name' string"),
    "layer-str": (KERAS, ("config", "layers", 1), "LSTM", "without a 'class_name' string"),
    "layers-dict": (KERAS, ("config", "layers"), {"a": 1}, "without a 'layers' list"),
    "bidirectional-layer-str": (KERAS, _BI + ("layer",), "x", None),
    "bidirectional-inner-config-str": (KERAS, _BI + ("layer", "config"), "x", None),
    "backward-config-str": (KERAS, _BI + ("backward_layer", "config"), "x", None),
    "build-config-str": (KERAS, ("config", "layers", 1, "build_config"), "x", None),
    "input-shape-str": (KERAS, ("config", "layers", 1, "build_config", "input_shape"), "x",
                        None),
    "activation-module-int": (KERAS, ("config", "layers", 1, "config", "activation"),
                              {"module": 5, "class_name": "function", "config": "tanh"},
                              "custom activation"),
    "units-str": (KERAS, ("config", "layers", 1, "config", "units"), "8",
                  "'units' must be a positive integer"),
    "units-huge": (KERAS, ("config", "layers", 1, "config", "units"), 10 ** 30,
                   "kernel must have shape"),
    "merge-mode-list": (KERAS, _BI + ("merge_mode",), ["sum"], "unsupported merge_mode"),
    "model-config-str": (KERAS, ("config",), "x", "without a 'layers' list"),
    "config-list": (KERAS, (), [1, 2], "not a Keras model"),
    "config-null": (KERAS, (), None, "not a Keras model"),
}


@needs_h5py
@pytest.mark.parametrize("name", sorted(_MALFORMED))
def test_malformed_config_raises_keras_file_error(tmp_path, name):
    src, where, value, says = _MALFORMED[name]
    cfg = _config(src)
    if where:
        node = cfg
        for k in where[:-1]:
            node = node[k]
        node[where[-1]] = value
    else:
        cfg = value
    p = _write_zip(tmp_path / "bad.keras", dict(_members(src), **{
        "config.json": json.dumps(cfg).encode()}))
    try:
        from_keras(p)
    except KerasFileError as e:
        assert str(p) in str(e)
        assert says is None or says in str(e), e
    else:
        assert says is None, "loaded"


@needs_h5py
@pytest.mark.parametrize("meta", [b"[]", b"3", b"null", b'{"keras_version": [3]}'])
def test_malformed_metadata(tmp_path, meta):
    p = _edit_keras(tmp_path / "meta.keras", members={"metadata.json": meta})
    with pytest.raises(KerasFileError, match="keras_version"):  # hard_sigmoid needs it
        from_keras(p)


@needs_h5py
def test_deeply_nested_config_json(tmp_path):
    deep = b"[" * 100_000 + b"]" * 100_000
    p = _edit_keras(tmp_path / "deep.keras", config=deep)
    for load in (from_keras, keras_layers_summary):
        with pytest.raises(KerasFileError, match="config.json is nested too deeply"):
            load(p)
    h5 = _edit_h5(tmp_path / "deep.h5", lambda f: f.attrs.__setitem__(
        "model_config", deep.decode()))
    with pytest.raises(KerasFileError, match="model_config is nested too deeply"):
        from_keras(h5)


@needs_h5py
def test_corrupt_superblock_in_archive(tmp_path):
    """h5py's file-object driver raised OverflowError for an absurd end-of-file address."""
    w = bytearray(_members(KERAS)["model.weights.h5"])
    w[48:56] = (2 ** 63 + 16).to_bytes(8, "little")
    p = _edit_keras(tmp_path / "sb.keras", members={"model.weights.h5": bytes(w)})
    with pytest.raises(KerasFileError, match="model.weights.h5 is not a readable HDF5 file"):
        from_keras(p)


@needs_h5py
def test_weight_name_naming_a_group(tmp_path):
    def edit(f):
        f["model_weights/lstm"].attrs["weight_names"] = np.array(
            [b"lstm/lstm_cell", b"lstm/lstm_cell/recurrent_kernel:0", b"lstm/lstm_cell/bias:0"])
    p = _edit_h5(tmp_path / "group.h5", edit)
    with pytest.raises(KerasFileError, match="lstm/lstm_cell is a group; expected a dataset"):
        from_keras(p)


@needs_h5py
def test_weight_name_through_a_dataset(tmp_path):
    def edit(f):
        f["model_weights/lstm"].attrs["weight_names"] = np.array(
            [b"lstm/lstm_cell/bias:0/x", b"lstm/lstm_cell/recurrent_kernel:0",
             b"lstm/lstm_cell/bias:0"])
    p = _edit_h5(tmp_path / "through.h5", edit)
    with pytest.raises(KerasFileError, match="bias:0 is a dataset, not a group"):
        from_keras(p)


@needs_h5py
@pytest.mark.parametrize("dtype", ["<i4", "S8", "<c8", "?"])
def test_non_float_weight(tmp_path, dtype):
    def edit(f):
        del f[H5_KERNEL]
        f.create_dataset(H5_KERNEL, shape=(3, 16), dtype=dtype)
    with pytest.raises(KerasFileError, match="expected floating point"):
        from_keras(_edit_h5(tmp_path / "dt.h5", edit))


@needs_h5py
def test_oversized_attribute_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(keras_format, "_MAX_CONFIG_BYTES", 1000)
    with pytest.raises(KerasFileError, match="attribute .model_config. of / holds"):
        from_keras(H5)


@needs_h5py
def test_unexpected_exception_becomes_keras_file_error(monkeypatch):
    """guard() is the net: a bug nobody wrote a check for still names the file."""
    def boom(*a):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(keras_format, "_snake_case", boom)
    with pytest.raises(KerasFileError, match="ZeroDivisionError: a bug") as e:
        from_keras(KERAS)
    assert KERAS in str(e.value) and isinstance(e.value.__cause__, ZeroDivisionError)


def _mutate(obj, rng, values):
    """obj with one randomly chosen node (dict value or list item) replaced."""
    nodes = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                nodes.append((o, k))
                walk(v)
        elif isinstance(o, list):
            for i, v in enumerate(o):
                nodes.append((o, i))
                walk(v)
    walk(obj)
    parent, key = rng.choice(nodes)
    parent[key] = rng.choice(values)
    return obj


@needs_h5py
@pytest.mark.parametrize("src", [KERAS, FUNCTIONAL], ids=["sequential", "functional"])
def test_random_config_mutations_raise_only_keras_file_error(tmp_path, src):
    """40 configs, one node replaced by a value of another JSON type each."""
    rng = random.Random(7)
    values = ["x", "", 0, -1, 2 ** 70, 1e308, True, None, [], [1, "a"], {}, {"a": []},
              {"class_name": "__keras_tensor__", "config": "x"}, [[["a", 0]]]]
    members = _members(src)
    base = json.loads(members["config.json"])
    p = tmp_path / "m.keras"
    for _ in range(40):
        cfg = _mutate(json.loads(json.dumps(base)), rng, values)
        _write_zip(p, dict(members, **{"config.json": json.dumps(cfg).encode()}))
        try:
            from_keras(p)
        except KerasFileError as e:
            assert str(p) in str(e)


# ============================================================================ detect_format
def _zip_version_255(dst):
    """A torch-like zip whose central directory says "version needed to extract" 25.5."""
    _write_zip(dst, {"archive/data.pkl": b"\x80\x02}q\x00."})
    b = bytearray(open(dst, "rb").read())
    cd = b.index(b"PK\x01\x02")
    b[cd + 6:cd + 8] = (255).to_bytes(2, "little")
    open(dst, "wb").write(bytes(b))
    return dst


def test_zip_version_needed_255(tmp_path):
    p = _zip_version_255(tmp_path / "v255.pt")
    for call in (detect_format, li.load):
        with pytest.raises(UnknownFormatError, match=r"NotImplementedError: zip file version"):
            call(p)
    k = _zip_version_255(tmp_path / "v255.keras")
    with pytest.raises(KerasFileError, match="NotImplementedError"):
        from_keras(k)


def test_detect_format_guards_its_sniffers(tmp_path, monkeypatch):
    def boom(path):
        raise RecursionError("deep")
    monkeypatch.setattr(detect.st, "is_safetensors", boom)
    with pytest.raises(UnknownFormatError, match="nested too deeply") as e:
        detect_format(KERAS)
    assert isinstance(e.value, FormatError) and KERAS in str(e.value)
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "missing.h5")
