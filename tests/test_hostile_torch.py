"""Hostile PyTorch files (the reliability probe's F3, F6 and F8 for torch): crafted byte by
byte, each refused with a TorchFileError (a FormatError) that says what is wrong, in
bounded time and without allocating what the file only pretends to hold.

The limits themselves are documented under "Limits" in lstm_infer/formats/torch_pickle.py.
Cases that hung the old loader run in a child process with a timeout, so that a regression
fails the test instead of hanging the suite.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer.formats import pytorch as pt
from lstm_infer.formats import torch_pickle as tp
from lstm_infer.formats.errors import FormatError
from lstm_infer.formats.pytorch import load_torch_file
from lstm_infer.formats.torch_pickle import TorchFileError
from test_load_pytorch import (DATA, FIXTURES, MAGIC, _lstm_sd, _state_dict_pickle, _strides,
                               _T, _torch_zip)

MiB = 1 << 20


def _dag(depth):
    """Pickle opcodes leaving memo[k + 1] = (memo[k], memo[k]) for k < depth, memo[0] = ():
    a tuple of 2^depth leaves in 6 bytes a level (nothing is left on the stack)."""
    pk = b")q\x000"
    for k in range(depth):
        pk += b"h" + bytes([k]) + b"h" + bytes([k]) + b"\x86q" + bytes([k + 1]) + b"0"
    return pk


def _get(k):
    return b"h" + bytes([k])


def _legacy(data_pkl):
    """A legacy (non-zip) torch.save file around one data pickle (and no storages)."""
    return (pickle.dumps(MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
            + pickle.dumps({}, protocol=2) + data_pkl + pickle.dumps([], protocol=2))


def _peak_mib(fn):
    """(what fn raised, the peak of Python + numpy allocations during fn, in MiB)."""
    tracemalloc.start()
    try:
        fn()
        err = None
    except Exception as e:  # noqa: BLE001 - returned for the caller to check
        err = e
    finally:
        peak = tracemalloc.get_traced_memory()[1] / MiB
        tracemalloc.stop()
    return err, peak


def _causes(e):
    while e is not None:
        yield e
        e = e.__cause__


def _lstm_entries(sd):
    return {k: _T(str(i), "FloatStorage", v.size, 0, v.shape, _strides(v.shape))
            for i, (k, v) in enumerate(sd.items())}


# ============================================================================ F3: hashing
T40 = _get(40)
_DAG_CASES = {  # name -> (file bytes built around _dag(40), what the error must say)
    "dict-key": (b"}" + T40 + b"Ns", "expands to"),                      # SETITEM
    "dict-setitems": (b"}(K\x01N" + T40 + b"Nu", "expands to"),          # SETITEMS
    "dict-opcode": (b"(" + T40 + b"Nd", "expands to"),                   # DICT
    "set-additems": (b"\x8f(" + T40 + b"\x90", "expands to"),            # EMPTY_SET + ADDITEMS
    "frozenset": (b"(" + T40 + b"\x91", "expands to"),                   # FROZENSET
    "reduce-set": (b"cbuiltins\nset\n]" + T40 + b"a\x85R", "expands to"),
    "reduce-frozenset": (b"cbuiltins\nfrozenset\n]" + T40 + b"a\x85R", "expands to"),
    "reduce-ordereddict": (b"ccollections\nOrderedDict\n]" + T40 + b"N\x86a\x85R",
                           "expands to"),
    "rebuild-from-type-set": (b"ctorch._tensor\n_rebuild_from_type_v2\n(cbuiltins\nset\n"
                              b"ctorch\nTensor\n]" + T40 + b"a\x85}tR",
                              "expects a rebuild function"),
}


def _dag_files(tmp_path):
    """name -> (path, the error's fragment, or None: must load)."""
    files = {}
    for name, (body, match) in _DAG_CASES.items():
        path = tmp_path / f"dag-{name}.pt"
        _torch_zip(path, b"\x80\x02" + _dag(40) + body + b".")
        files[name] = (str(path), match)
    # legacy format: a tuple DAG as a storage key (hashed to find the storage)
    path = tmp_path / "dag-legacy-key.pt"
    path.write_bytes(_legacy(b"\x80\x02" + _dag(40) + b"(X\x07\x00\x00\x00storagectorch\n"
                             b"FloatStorage\n" + T40 + b"X\x03\x00\x00\x00cpuK\x01NtQ."))
    files["legacy-storage-key"] = (str(path), "storage key must be a string")
    # never hashed, only kept: harmless, and walked once per node by torch_pickle.load;
    # a key of 65535 elements (T15) is accepted
    path = tmp_path / "dag-value.pt"
    _torch_zip(path, b"\x80\x02" + _dag(40) + b"}(X\x01\x00\x00\x00v" + T40
               + _get(15) + b"K\x01u.")
    files["value"] = (str(path), None)
    return files


_DAG_CHILD = """
import json, sys, lstm_infer as li
from lstm_infer.formats import torch_pickle as tp
for name, path in json.loads(sys.argv[1]).items():
    try:
        if name == "value":
            d = tp.load(path)
            (key,) = (k for k in d if k != "v")
            r = ["loaded", repr((d["v"][0] is d["v"][1], len(key), d[key]))]
        else:
            li.load(path)
            r = ["loaded", ""]
    except Exception as e:
        r = [type(e).__name__, str(e)]
    print(json.dumps([name, r]), flush=True)
"""


def test_tuple_dag_as_key_is_refused_quickly(tmp_path):
    """F3: a 462-byte file whose dict key / set member is a tuple DAG of 2^40 leaves made
    hash() run for ever. Every place that hashes is covered; run in a child process with a
    timeout so that a regression fails here rather than hanging the suite."""
    files = _dag_files(tmp_path)
    arg = json.dumps({k: p for k, (p, _) in files.items()})
    try:
        out = subprocess.run([sys.executable, "-c", _DAG_CHILD, arg], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"loading a tuple-DAG file hangs; finished before: {e.stdout!r}")
    got = dict(json.loads(line) for line in out.splitlines())
    assert set(got) == set(files)
    for name, (path, match) in files.items():
        cls, msg = got[name]
        if match is None:
            assert (cls, msg) == ("loaded", "(True, 2, 1)"), (name, cls, msg)
        else:
            assert cls == "TorchFileError" and match in msg and path in msg, (name, cls, msg)
    assert os.path.getsize(files["dict-key"][0]) < 1000


def test_hash_work_is_bounded_in_total(tmp_path):
    """One 65535-element key inserted 300 times: each hash is allowed, the sum is not
    (about 20 million steps; a few thousand such entries would take hours)."""
    path = tmp_path / "again.pt"
    _torch_zip(path, b"\x80\x02" + _dag(15) + b"(" + (_get(15) + b"N") * 300 + b"d.")
    with pytest.raises(TorchFileError, match="in all are hashed"):
        li.from_torch(path)


def test_hash_collisions_are_bounded(tmp_path):
    """Ints k + i * (2^61 - 1) all hash alike: a dict of n of them takes n^2 / 2
    comparisons (60,000 keys in an 800 KB file: about a minute)."""
    P = sys.hash_info.modulus
    keys = b"".join(b"\x8a\x0b" + (1 + i * P).to_bytes(11, "little") + b"N"
                    for i in range(3000))
    for body in (b"}(" + keys + b"u", b"(" + keys + b"d"):
        path = tmp_path / "collide.pt"
        _torch_zip(path, b"\x80\x02" + body + b".")
        with pytest.raises(TorchFileError, match="have the same hash"):
            li.from_torch(path)
    # a few colliding keys are fine (-1 and -2 collide in CPython, 1 and 1 + P too)
    path = tmp_path / "few.pt"
    _torch_zip(path, b"\x80\x02}(J\xff\xff\xff\xffNJ\xfe\xff\xff\xffNK\x01N\x8a\x09"
               + (1 + P).to_bytes(9, "little") + b"Nu.")
    assert set(tp.load(path)) == {-1, -2, 1, 1 + P}


def test_memo_index_out_of_range(tmp_path):
    path = tmp_path / "memo.pt"
    _torch_zip(path, b"\x80\x02Np99999999999999999999999\n.")
    with pytest.raises(TorchFileError, match="memo index 99999999999999999999999 out of range"):
        li.from_torch(path)


# ============================================================================ F6: memory
def test_expanded_view_is_refused_before_allocating(tmp_path):
    """F6: torch.zeros(1).expand(16384, 4096) saved as is: a 700-byte file asked for two
    256 MiB weights (2 GiB of RSS with the model)."""
    view = _T("0", "FloatStorage", 1, 0, (16384, 4096), (0, 0))
    path = tmp_path / "expand.pt"
    _torch_zip(path, _state_dict_pickle({"weight_ih_l0": view, "weight_hh_l0": view,
                                         "bias_ih_l0": _T("0", "FloatStorage", 1, 0, (16384,),
                                                          (0,))}), {"0": b"\x00" * 4})
    assert os.path.getsize(path) < 2000
    err, peak = _peak_mib(lambda: li.load(path))
    assert isinstance(err, TorchFileError), repr(err)
    for part in ("expanded view", "(16384, 4096), stride (0, 0)", "archive/data/0",
                 "t.contiguous()", str(path)):
        assert part in str(err)
    assert peak < 32, f"{peak:.0f} MiB allocated"


def test_huge_stride0_tensor_is_refused_not_memoryerror(tmp_path):
    """(2^31 - 1, 8) with stride (0, 0) over one float: was a MemoryError (F8) from the
    dense copy of a 64 GiB tensor."""
    path = tmp_path / "huge.pt"
    _torch_zip(path, _state_dict_pickle(
        {"weight_ih_l0": _T("0", "FloatStorage", 1, 0, (2 ** 31 - 1, 8), (0, 0))}),
        {"0": b"\x00" * 4})
    for load in (li.load, li.from_torch, load_torch_file, tp.load):
        with pytest.raises(TorchFileError, match=r"\(2147483647, 8\), stride \(0, 0\) is an "
                                                 r"expanded view \(17179869176 elements"):
            load(path)


def test_small_expanded_view_is_materialised(tmp_path):
    """Within the budget an expanded view loads as its dense copy (what torch gives)."""
    sd = _lstm_sd(3, 4)
    entries = _lstm_entries(sd)
    entries["bias_hh_l0"] = _T("9", "FloatStorage", 1, 0, (16,), (0,))  # expand(16)
    path = tmp_path / "bias.pt"
    _torch_zip(path, _state_dict_pickle(entries),
               {**{str(i): v.tobytes() for i, v in enumerate(sd.values())},
                "9": np.float32(0.25).tobytes()})
    m = li.from_torch(path)
    np.testing.assert_allclose(m.weights[0][0]["b"], sd["bias_ih_l0"] + 0.25, rtol=1e-6)


def test_many_views_of_one_storage_are_bounded(tmp_path):
    """300 tensors, each the whole of one 256 KiB storage: 75 MiB of arrays from a
    300 KB file; shared objects (a tensor saved under two names) count once."""
    t = _T("0", "FloatStorage", 65536, 0, (256, 256), (256, 1))
    path = tmp_path / "views.pt"
    _torch_zip(path, _state_dict_pickle(
        {f"t{i}": _T("0", "FloatStorage", 65536, 0, (256, 256), (256, 1)) for i in range(300)}),
        {"0": b"\x00" * (4 * 65536)})
    with pytest.raises(TorchFileError, match="tensors read from this .* add up to"):
        tp.load(path)
    _torch_zip(path, _state_dict_pickle({f"t{i}": t for i in range(300)}),
               {"0": b"\x00" * (4 * 65536)})
    got = tp.load(path)
    assert got["t0"] is got["t299"]


def _deflated_pkl_bomb(path, zeros_mib):
    """A torch zip whose deflated data.pkl is a real state dict followed, after its STOP,
    by `zeros_mib` MiB of zeros (which deflate to ~1 KB per MiB)."""
    sd = _lstm_sd(3, 4)
    zeros = b"\x00" * MiB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as w:
            w.write(_state_dict_pickle(_lstm_entries(sd)))
            for _ in range(zeros_mib):
                w.write(zeros)
        for i, v in enumerate(sd.values()):
            z.writestr(f"archive/data/{i}", v.tobytes(), zipfile.ZIP_STORED)


@pytest.mark.parametrize("zeros_mib", [70, 4], ids=["above-cap", "beyond-archive"])
def test_deflated_data_pkl_bomb(tmp_path, zeros_mib):
    """F6: data.pkl was read whole, whatever it declared (a 2.1 MB file took 4 GiB). Now
    its declared size is capped (64 MiB), and a deflated one (torch never compresses it)
    at 2x the file's size + 1 MiB."""
    path = tmp_path / "bomb.pt"
    _deflated_pkl_bomb(path, zeros_mib)
    assert os.path.getsize(path) < 200_000
    err, peak = _peak_mib(lambda: li.load(path))
    assert isinstance(err, TorchFileError), repr(err)
    assert "data.pkl' declares" in str(err) and str(path) in str(err)
    assert peak < 8, f"{peak:.0f} MiB allocated"


def test_deflated_storage_inflating_far_beyond_the_archive(tmp_path):
    """F6: storages deflated by some tool (torch never does) inflated without bound: a
    66 KB file took 396 MB. Storage buffers are now bounded by 2x the file + 16 MiB."""
    H, I = 1024, 2048
    entries = {"weight_ih_l0": _T("0", "FloatStorage", 4 * H * I, 0, (4 * H, I), (I, 1)),
               "weight_hh_l0": _T("1", "FloatStorage", 4 * H * H, 0, (4 * H, H), (H, 1))}
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("archive/data.pkl", _state_dict_pickle(entries), zipfile.ZIP_STORED)
        z.writestr("archive/data/0", bytes(16 * H * I))
        z.writestr("archive/data/1", bytes(16 * H * H))
    assert os.path.getsize(path) < 300_000
    err, peak = _peak_mib(lambda: li.from_torch(path))
    assert isinstance(err, TorchFileError), repr(err)
    for part in ("archive/data/0", "deflate-compressed", "weight_ih_l0", str(path)):
        assert part in str(err)
    assert peak < 16, f"{peak:.0f} MiB allocated"


def test_stored_record_running_past_the_file_is_refused_before_allocating(tmp_path):
    """A central directory may claim a stored record larger than the file: checked before
    the buffer is allocated (it was np.empty(declared) first)."""
    n = 1 << 20  # 4 MiB of floats, declared; 16 bytes stored
    path = tmp_path / "short.pt"
    _torch_zip(path, _state_dict_pickle({"weight_ih_l0": _T("0", "FloatStorage", n, 0,
                                                            (4 * 256, 1024), (1024, 1))}),
               {"0": b"\x00" * 16})
    raw = bytearray(path.read_bytes())
    cd = raw.index(b"PK\x01\x02")
    while True:  # the central-directory entry of archive/data/0: its uncompressed size
        n_name = struct.unpack("<H", raw[cd + 28:cd + 30])[0]
        if raw[cd + 46:cd + 46 + n_name] == b"archive/data/0":
            raw[cd + 24:cd + 28] = struct.pack("<I", 4 * n)
            break
        cd = raw.index(b"PK\x01\x02", cd + 4)
    path.write_bytes(bytes(raw))
    err, peak = _peak_mib(lambda: li.from_torch(path))
    assert isinstance(err, TorchFileError) and "run past the end" in str(err), repr(err)
    assert peak < 2, f"{peak:.1f} MiB allocated"


def test_pickle_containers_are_bounded(tmp_path, monkeypatch):
    """One byte of EMPTY_SET is a 216-byte set: a 10 MB data.pkl was 2 GB. The pickle's
    containers may take 64x its size + a slack (64 MiB; 1 MiB here, to keep this fast)."""
    monkeypatch.setattr(tp, "_PICKLE_MEMORY", (64, MiB))
    path = tmp_path / "sets.pt"
    _torch_zip(path, b"\x80\x04" + b"\x8f" * 50_000 + b".")
    with pytest.raises(TorchFileError, match="builds more than 4 MiB of containers"):
        li.from_torch(path)
    for fname, prefix, _, _ in FIXTURES.values():  # real files stay far below
        li.from_torch(os.path.join(DATA, fname), prefix=prefix)


# ============================================================================ deep structures
@pytest.mark.parametrize("body,load,match", [
    (b"(" * 20_000 + b"l" * 20_000, tp.load, "nested too deeply"),
    (b"(" * 20_000 + b"l" * 20_000, li.from_torch, "a list, not a state dict"),
    (b"}" + b"X\x01\x00\x00\x00a}" * 20_000 + b"s" * 20_000, li.from_torch,
     "expected exactly one LSTM"),
    (b"K\x01" + b"\x85" * 101, li.load, "nested deeper than 100"),
    (b"(" * 101 + b"\x91" * 101, li.load, "nested deeper than 100"),
], ids=["lists-materialised", "lists", "dicts", "tuples", "frozensets"])
def test_deep_nesting(tmp_path, body, load, match):
    path = tmp_path / "deep.pt"
    _torch_zip(path, b"\x80\x04" + body + b".")
    with pytest.raises(TorchFileError, match=match):
        load(path)


# ============================================================================ F8: one class
def test_zip_version_needed_255(tmp_path):
    """'version needed to extract' = 255: zipfile raises NotImplementedError."""
    raw = bytearray(open(os.path.join(DATA, "lstm_bidir_proj.pt"), "rb").read())
    cd = raw.index(b"PK\x01\x02")
    raw[cd + 6:cd + 8] = struct.pack("<H", 255)
    path = tmp_path / "v255.pt"
    path.write_bytes(bytes(raw))
    for load in (li.from_torch, load_torch_file, tp.load):
        with pytest.raises(TorchFileError, match="version 25.5"):
            load(path)
    with pytest.raises(FormatError):
        li.load(path)


_UNEXPECTED = [MemoryError(), NotImplementedError("x"), OverflowError("x"), KeyError("x"),
               AttributeError("x"), RecursionError(), IndexError("x"), RuntimeError("x")]


@pytest.mark.parametrize("exc", _UNEXPECTED, ids=[type(e).__name__ for e in _UNEXPECTED])
@pytest.mark.parametrize("where", ["parse-zip", "parse-legacy", "parse-safetensors", "read",
                                   "build"])
def test_unexpected_exceptions_become_torch_file_errors(tmp_path, monkeypatch, exc, where):
    """F8: whatever a parser or reader meets that nobody wrote a check for, the caller
    gets the loader's own error naming the file and the original exception."""
    files = {"parse-zip": "lstm_bidir_proj.pt", "parse-legacy": "legacy_f64.pt",
             "parse-safetensors": "torch_names.safetensors", "read": "lstm_bidir_proj.pt",
             "build": "lstm_bidir_proj.pt"}
    path = os.path.join(DATA, files[where])

    def boom(*args, **kwargs):
        raise exc

    target = {"parse-zip": (tp.TorchFile, "_load_zip"),
              "parse-legacy": (tp.TorchFile, "_load_legacy"),
              "parse-safetensors": (tp.safetensors_io, "read_entries"),
              "read": (tp._Storage, "typed"), "build": (pt, "LSTM")}[where]
    monkeypatch.setattr(*target, boom)
    for load in (li.load, li.from_torch, load_torch_file):
        with pytest.raises(TorchFileError) as e:
            load(path)
        assert path in str(e.value) and exc in _causes(e.value)
        if not isinstance(exc, (MemoryError, RecursionError)):
            assert type(exc).__name__ in str(e.value)


def test_torch_file_errors_are_format_errors():
    assert issubclass(TorchFileError, FormatError) and issubclass(TorchFileError, ValueError)
    assert issubclass(tp.UnsafePickleError, TorchFileError)
    assert issubclass(tp.PickledModuleError, tp.UnsafePickleError)


def test_path_errors_pass_through(tmp_path):
    with pytest.raises(TorchFileError, match="cannot open"):
        li.from_torch(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError):
        li.load(tmp_path / "missing.pt")


def test_bytesio_sources_are_guarded_too():
    data = open(os.path.join(DATA, "lstm_bidir_proj.pt"), "rb").read()
    bad = bytearray(data)
    bad[bad.index(b"PK\x01\x02") + 6] = 255
    with pytest.raises(TorchFileError, match="version 25.5"):
        li.from_torch(io.BytesIO(bytes(bad)))
