"""Hostile PyTorch files (the reliability probe's F3 for torch): crafted byte by
byte, each refused with a TorchFileError (a FormatError) that says what is wrong, in
bounded time.

The limits themselves are documented under "Limits" in lstm_infer/formats/torch_pickle.py.
Cases that hung the old loader run in a child process with a timeout, so that a regression
fails the test instead of hanging the suite.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest

import lstm_infer as li
from lstm_infer.formats import torch_pickle as tp
from lstm_infer.formats.torch_pickle import TorchFileError
from test_load_pytorch import MAGIC, _torch_zip


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
