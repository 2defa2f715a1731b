"""Fuzz every loader with mutated and hand-crafted model files (`li.load(path)`, then a
forward call on what loads).

    python bench/fuzz_loaders.py --cases 100000 --seconds 3600 --workers 2 \\
        --out /tmp/fuzz_loaders.json
    python bench/fuzz_loaders.py --replay /tmp/lstm_fuzz_loaders/failures/unclean/xyz.pt

Seeds: files of every format, written with the frameworks when they are installed
(torch.save zip and legacy, a checkpoint dict, projection, LSTMCell, bf16, torch-named
safetensors; Keras 3 .keras and .h5 on the torch backend; a torch.onnx export), the
committed fixtures of tests/data, and native files of every quantization written
with lstm_infer itself. ``--no-frameworks`` uses the fixtures and native files only
(what the test suite does).

Each case is a seed put through a mutator -- raw bytes (bit flips, interesting bytes,
int32/int64 boundary values, truncation, chunk delete/duplicate/insert) or the
format's structure (torch pickle opcodes re-zipped with valid CRCs, legacy pickles and
storage counts, safetensors header fields, Keras config.json / model.weights.h5
re-zipped, HDF5 attributes and datasets, ONNX protobuf fields) -- or one of the
crafted hostile files (`crafted_files`): absurd declared sizes, overlapping offsets,
deep and self-referencing pickles, memo-shared tuple DAGs used as dict keys, zip
bombs, HDF5 external storage / links / virtual datasets pointing at a canary file,
ONNX external data outside the model's folder, and code-execution pickles whose
payload would touch a marker file.

Outcomes (see fuzz_common for the harness): ``clean_error`` (a FormatError),
``clean_nonformat`` (another ValueError / TypeError: a finding), ``loaded`` (outputs
finite) / ``loaded_nonfinite``, ``forward_refused`` (loads, but forward refuses it: a
finding), ``unclean``, ``hang``, ``crash``, ``code_exec``, ``outside_read``; and a
memory flag when the peak RSS growth of a case exceeds 2 x the file's bytes + 64 MiB
(the file's size bounds its tensor bytes). Failing files are saved under
``<work>/failures/<outcome>/`` with a JSON note; ``--replay FILE`` runs one again.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import os
import pickle
import pickletools
import random
import shutil
import struct
import sys
import threading
import time
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import fuzz_common as fc  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "data")
FORMAT_FAMILIES = ("torch_zip", "torch_legacy", "safetensors_torch", "native", "keras",
                   "keras_h5", "onnx")
# Loader outcomes that are findings, on top of fuzz_common.FAILURES.
LOADER_FAILURES = {"clean_nonformat", "forward_refused"}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# ============================================================================ pickle writer
class Pickle:
    """A small pickle assembler: enough to write torch state dicts and hostile streams
    opcode by opcode, without torch (and without pickling any real object)."""

    def __init__(self, proto=2):
        self.b = bytearray(b"\x80" + bytes([proto]) if proto >= 2 else b"")

    def raw(self, b):
        self.b += b
        return self

    def int(self, v):
        if 0 <= v < 256:
            self.b += b"K" + bytes([v])
        elif 0 <= v < 65536:
            self.b += b"M" + struct.pack("<H", v)
        elif -2**31 <= v < 2**31:
            self.b += b"J" + struct.pack("<i", v)
        else:
            enc = pickle.encode_long(v)
            self.b += (b"\x8a" + bytes([len(enc)]) if len(enc) < 256 else
                       b"\x8b" + struct.pack("<i", len(enc))) + enc
        return self

    def str(self, s):
        e = s.encode("utf-8", "surrogatepass")
        self.b += b"X" + struct.pack("<I", len(e)) + e
        return self

    def bytes(self, v):
        self.b += (b"C" + bytes([len(v)]) if len(v) < 256 else b"B" + struct.pack("<I", len(v)))
        self.b += v
        return self

    def float(self, v):
        self.b += b"G" + struct.pack(">d", v)
        return self

    def none(self):
        self.b += b"N"
        return self

    def bool(self, v):
        self.b += b"\x88" if v else b"\x89"
        return self

    def glob(self, module, name):
        self.b += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        return self

    def op(self, code):  # one opcode without argument: ( t ) ] } R b s u e a 0 2 . Q ...
        self.b += code
        return self

    def put(self, i):
        self.b += b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i)
        return self

    def get(self, i):
        self.b += b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)
        return self

    def obj(self, v):
        """Plain data: dict / list / tuple / str / bytes / int / float / bool / None, or a
        callable f(self) that writes itself (a tensor, a global...)."""
        if callable(v):
            v(self)
        elif v is None:
            self.none()
        elif isinstance(v, bool):
            self.bool(v)
        elif isinstance(v, int):
            self.int(v)
        elif isinstance(v, float):
            self.float(v)
        elif isinstance(v, str):
            self.str(v)
        elif isinstance(v, (bytes, bytearray)):
            self.bytes(bytes(v))
        elif isinstance(v, tuple):
            if not v:
                self.op(b")")
            elif len(v) <= 3:
                for x in v:
                    self.obj(x)
                self.op({1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(v)])
            else:
                self.op(b"(")
                for x in v:
                    self.obj(x)
                self.op(b"t")
        elif isinstance(v, list):
            self.op(b"]")
            if v:
                self.op(b"(")
                for x in v:
                    self.obj(x)
                self.op(b"e")
        elif isinstance(v, dict):
            self.op(b"}")
            if v:
                self.op(b"(")
                for k, x in v.items():
                    self.obj(k)
                    self.obj(x)
                self.op(b"u")
        else:
            raise TypeError(type(v))
        return self

    def ordered_dict(self, items):
        self.glob("collections", "OrderedDict").op(b")").op(b"R")
        if items:
            self.op(b"(")
            for k, x in items.items():
                self.obj(k)
                self.obj(x)
            self.op(b"u")
        return self

    def stop(self) -> bytes:
        return bytes(self.b + b".")


def tensor_ref(key, numel, size, stride=None, offset=0, storage="FloatStorage", legacy=False):
    """A callable writing torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
    False, OrderedDict()) with a persistent storage id (zip: 5 fields; legacy: 6)."""
    if stride is None:
        stride, acc = [], 1
        for d in reversed(size):
            stride.insert(0, acc)
            acc *= max(d, 1)

    def write(p):
        p.glob("torch._utils", "_rebuild_tensor_v2")
        p.op(b"(")
        p.op(b"(").str("storage").glob("torch", storage).str(str(key)).str("cpu").int(numel)
        if legacy:
            p.none()
        p.op(b"t").op(b"Q")
        p.int(offset).obj(tuple(size)).obj(tuple(stride)).bool(False)
        p.glob("collections", "OrderedDict").op(b")").op(b"R")
        p.op(b"t").op(b"R")
    return write


def torch_zip(pkl: bytes, storages: dict, prefix="archive", compress=None,
              byteorder=b"little") -> bytes:
    """A torch.save-style zip: <prefix>/data.pkl, <prefix>/data/<key>, byteorder, version."""
    members = [(f"{prefix}/data.pkl", pkl)]
    if byteorder is not None:
        members.append((f"{prefix}/byteorder", byteorder))
    members += [(f"{prefix}/data/{k}", v) for k, v in storages.items()]
    members.append((f"{prefix}/version", b"3\n"))
    return make_zip(members, compress or {})


def torch_legacy(obj_pickle: bytes, storages: dict, sys_info=None, numel=None) -> bytes:
    """A legacy (non-zip) torch.save stream: magic, protocol, sys_info, the object, the
    storage keys, then each storage as int64 numel + bytes (float32 here)."""
    magic = Pickle().int(0x1950A86A20F9469CFC6C).stop()
    proto = Pickle().int(1001).stop()
    info = Pickle().obj(sys_info if sys_info is not None else {
        "protocol_version": 1001, "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4}}).stop()
    keys = Pickle().obj([str(k) for k in storages]).stop()
    out = bytearray(magic + proto + info + obj_pickle + keys)
    for v in storages.values():
        out += struct.pack("<q", len(v) // 4 if numel is None else numel) + v
    return bytes(out)


def make_zip(members, compress=None, comment=b"") -> bytes:
    """A zip of (name, bytes) with fixed dates; `compress` maps names to a zipfile method."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members:
            zi = zipfile.ZipInfo(name, _ZIP_DATE)
            zi.compress_type = (compress or {}).get(name, zipfile.ZIP_STORED)
            # level 1: bombs of zeros build 10x faster, still ~1000:1
            z.writestr(zi, data, compresslevel=1 if len(data) > fc.MiB else None)
        z.comment = comment
    return buf.getvalue()


def read_zip(data: bytes):
    """[(name, bytes, compress_type)] of a zip (raises on a broken one)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i), i.compress_type) for i in z.infolist()]


def lstm_state_dict_pickle(I, H, legacy=False, names=("weight_ih_l0", "weight_hh_l0",
                                                      "bias_ih_l0", "bias_hh_l0")):
    """(pickle, storages) of a valid 1-layer nn.LSTM(I, H) state dict, built by hand."""
    shapes = {"weight_ih_l0": (4 * H, I), "weight_hh_l0": (4 * H, H),
              "bias_ih_l0": (4 * H,), "bias_hh_l0": (4 * H,)}
    items, storages = {}, {}
    for k, n in enumerate(names):
        shape = shapes[n]
        numel = 1
        for d in shape:
            numel *= d
        items[n] = tensor_ref(k, numel, shape, legacy=legacy)
        storages[str(k)] = struct.pack(f"<{numel}f", *[((i * 37) % 19 - 9) / 40.0
                                                       for i in range(numel)])
    p = Pickle().ordered_dict(items)
    return p.stop(), storages


# ============================================================================ seeds
def _seed(path, family, name=None):
    return {"name": name or os.path.basename(path), "family": family, "path": path,
            "suffix": os.path.splitext(path)[1] or ".bin"}


def _family_of(path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK"):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        return "keras" if "config.json" in names else "torch_zip"
    if head.startswith(b"\x89HDF"):
        return "keras_h5"
    if path.endswith(".safetensors"):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        return "native" if (header.get("__metadata__") or {}).get("format") == "lstm_infer" \
            else "safetensors_torch"
    if path.endswith(".onnx"):
        return "onnx"
    return "torch_legacy"


def fixture_seeds():
    """The committed files of tests/data (no framework needed)."""
    out = []
    for sub in ("torch", "keras", "onnx"):
        d = os.path.join(FIXTURES, sub)
        for root, _dirs, files in sorted(os.walk(d)):
            for fn in sorted(files):
                if fn.endswith((".npz", ".pb")):
                    continue
                p = os.path.join(root, fn)
                rel = os.path.relpath(p, FIXTURES).replace(os.sep, "_")
                out.append(_seed(p, _family_of(p), "fixture_" + rel))
    return out


def native_seeds(d):
    """Native files of every kind, written by lstm_infer."""
    import lstm_infer as li
    os.makedirs(d, exist_ok=True)
    specs = [
        ("native_f32", dict(input_size=3, hidden_size=8, num_layers=2, bidirectional=True), None, False),
        ("native_f64", dict(input_size=3, hidden_size=5, dtype="float64"), None, False),
        ("native_proj", dict(input_size=4, hidden_size=8, proj_size=3), None, False),
        ("native_peephole", dict(input_size=3, hidden_size=6, peephole=True, clip=3.0), None, False),
        ("native_int8", dict(input_size=5, hidden_size=8, bidirectional=True), "int8", False),
        ("native_int8w", dict(input_size=5, hidden_size=8), "int8-weights", False),
        ("native_int8w_in", dict(input_size=5, hidden_size=8), "int8-weights", True),
        ("native_f16", dict(input_size=5, hidden_size=8, num_layers=2), "float16", False),
        ("native_bf16", dict(input_size=5, hidden_size=8), "bfloat16", True),
    ]
    out = []
    for name, kw, q, inw in specs:
        m = li.LSTM.random(**kw)
        if q:
            m = m.quantize(q, input_weights=inw)
        p = os.path.join(d, name + ".safetensors")
        m.save(p)
        out.append(_seed(p, "native", name))
    return out


def framework_seeds(d, log=print):
    """Seeds written by torch / keras / torch.onnx, where installed."""
    os.makedirs(d, exist_ok=True)
    out = []
    try:
        import torch
        torch.manual_seed(0)

        def save(obj, name, **kw):
            p = os.path.join(d, name)
            torch.save(obj, p, **kw)
            out.append(_seed(p, "torch_legacy" if kw else "torch_zip", name))

        lstm = torch.nn.LSTM(3, 8, num_layers=2)
        save(lstm.state_dict(), "t_zip.pt")
        save(lstm.state_dict(), "t_legacy.pt", _use_new_zipfile_serialization=False)
        bi = torch.nn.LSTM(4, 6, bidirectional=True, proj_size=3, batch_first=True)
        save({"model": bi.state_dict(), "epoch": 3, "optimizer": {"lr": 0.1, "step": [1, 2]},
              "name": "ckpt"}, "t_checkpoint.pth")
        save(bi.state_dict(), "t_proj_legacy.pt", _use_new_zipfile_serialization=False)
        save(torch.nn.LSTMCell(5, 7).state_dict(), "t_cell.pt")
        save({k: v.to(torch.bfloat16) for k, v in torch.nn.LSTM(3, 4).state_dict().items()},
             "t_bf16.pt")
        save({k: v.double() for k, v in torch.nn.LSTM(2, 3).state_dict().items()}, "t_f64.bin")
        try:
            from safetensors.torch import save_file
            p = os.path.join(d, "t_names.safetensors")
            save_file({k: v.contiguous() for k, v in bi.state_dict().items()}, p)
            out.append(_seed(p, "safetensors_torch", "t_names.safetensors"))
        except ImportError:
            log("  (no safetensors package: torch-named safetensors from tests/data only)")
        try:
            p = os.path.join(d, "t_export.onnx")
            torch.onnx.export(torch.nn.LSTM(3, 5, bidirectional=True), (torch.zeros(4, 2, 3),),
                              p, dynamo=False, opset_version=14)
            out.append(_seed(p, "onnx", "t_export.onnx"))
        except Exception as e:  # noqa: BLE001 - the exporter needs extras on some installs
            log(f"  (torch.onnx.export failed: {type(e).__name__}: {e}; ONNX from tests/data)")
    except ImportError:
        log("  (no torch: torch seeds from tests/data only)")
    try:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras
        keras.utils.set_random_seed(0)
        seq = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(8, return_sequences=True),
                                keras.layers.Bidirectional(keras.layers.LSTM(4))])
        inp = keras.Input((None, 2))
        fn = keras.Model(inp, keras.layers.LSTM(3, go_backwards=True,
                                                return_sequences=True)(inp))
        for m, name in ((seq, "k3_seq"), (fn, "k3_fn")):
            for ext, fam in ((".keras", "keras"), (".h5", "keras_h5")):
                p = os.path.join(d, name + ext)
                m.save(p)
                out.append(_seed(p, fam, name + ext))
    except Exception as e:  # noqa: BLE001 - keras missing or its backend broken
        log(f"  (keras seeds skipped: {type(e).__name__}: {e}; Keras from tests/data only)")
    return out


def build_seeds(work, frameworks=True, log=print):
    d = os.path.join(work, "seeds")
    if os.path.isdir(d):
        shutil.rmtree(d)
    seeds = fixture_seeds() + native_seeds(os.path.join(d, "native"))
    if frameworks:
        seeds += framework_seeds(os.path.join(d, "frameworks"), log)
    for s in seeds:
        with open(s["path"], "rb") as f:
            s["size"] = len(f.read())
    return seeds


# ============================================================================ raw mutators
INTS = [0, 1, 2, 3, 4, 7, 8, 16, 64, 127, 128, 255, 256, 1000, 2**15 - 1, 2**15, 2**16 - 1,
        2**16, 2**24, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**53, 2**62, 2**63 - 1,
        2**63, 2**64 - 1, -1, -2, -128, -2**15, -2**31, -2**63]
FLOAT_SPECIALS = [float("nan"), float("inf"), -float("inf"), 3.4e38, -3.4e38, 1e-45, -0.0,
                  1e30, 65504.0, 2.0**-149]


def _wrap(v, bits, signed):
    v &= (1 << bits) - 1
    if signed and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


def m_bitflip(b, rng):
    for _ in range(rng.choice((1, 1, 1, 2, 4, 8, 32))):
        i = rng.randrange(len(b) * 8)
        b[i >> 3] ^= 1 << (i & 7)


def m_interesting_byte(b, rng):
    for _ in range(rng.choice((1, 1, 2, 4))):
        b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0xFE, 0x20, 0x0A))


def m_int_overwrite(b, rng):
    width = rng.choice((4, 8, 2))
    if len(b) < width:
        return m_interesting_byte(b, rng)
    v = rng.choice(INTS)
    if rng.random() < 0.2:
        v += rng.choice((-1, 1))
    pos = rng.randrange(len(b) - width + 1)
    if rng.random() < 0.5:
        pos -= pos % width
    fmt = {2: "H", 4: "I", 8: "Q"}[width]
    b[pos:pos + width] = struct.pack(rng.choice("<>") + fmt, _wrap(v, 8 * width, False))


def m_float_overwrite(b, rng):
    if len(b) < 4:
        return m_interesting_byte(b, rng)
    pos = rng.randrange(len(b) - 3)
    pos -= pos % 4
    b[pos:pos + 4] = struct.pack("<f", rng.choice(FLOAT_SPECIALS))


def m_truncate(b, rng):
    n = len(b)
    keep = rng.choice((0, 1, 7, 8, 16, rng.randrange(n), n - 1, n - rng.randrange(1, 64)))
    del b[max(0, min(n - 1, keep)):]


def m_delete_chunk(b, rng):
    i = rng.randrange(len(b))
    del b[i:i + rng.choice((1, 2, 4, 8, 64, 512))]


def m_duplicate_chunk(b, rng):
    i = rng.randrange(len(b))
    chunk = b[i:i + rng.choice((1, 4, 8, 64, 512))]
    j = rng.randrange(len(b) + 1)
    b[j:j] = chunk * rng.choice((1, 1, 2, 16))


def m_insert_chunk(b, rng):
    j = rng.randrange(len(b) + 1)
    n = rng.choice((1, 4, 8, 100))
    b[j:j] = (bytes(rng.randrange(256) for _ in range(n)) if rng.random() < 0.5
              else bytes([rng.choice((0, 0xFF, 0x41))]) * n * rng.choice((1, 10, 1000)))


RAW_MUTATORS = {f.__name__[2:]: f for f in (
    m_bitflip, m_interesting_byte, m_int_overwrite, m_float_overwrite, m_truncate,
    m_delete_chunk, m_duplicate_chunk, m_insert_chunk)}


def raw_mutate(data: bytes, rng, name=None) -> tuple:
    b = bytearray(data)
    if not b:
        return b"\x00", "insert_chunk"
    name = name or rng.choice(sorted(RAW_MUTATORS))
    RAW_MUTATORS[name](b, rng)
    if rng.random() < 0.2 and b:  # stack a second raw mutation now and then
        second = rng.choice(sorted(RAW_MUTATORS))
        RAW_MUTATORS[second](b, rng)
        name += "+" + second
    return bytes(b), name


# ============================================================================ JSON mutators
_HOSTILE_JSON = [None, True, False, 0, 1, -1, 2, 3, 64, 65, 2**31 - 1, 2**31, 2**63, 2**64,
                 -2**63, 1e308, -1e308, 0.5, 1.9, float("nan"), float("inf"), "", "x", "lstm",
                 "LSTM", "Bidirectional", "InputLayer", "sigmoid", "hard_sigmoid", "linear",
                 "relu", "softmax", "tanh", "concat", "sum", "reverse", "bidirectional",
                 "float64", "int8", "bfloat16", [], {}, [None], [[]], {"": None},
                 {"class_name": "LSTM", "config": {}}, "__BIG__", "__LONGSTR__", "__DEEP__"]


def _json_paths(obj, path=(), out=None, limit=5000):
    if out is None:
        out = []
    if len(out) >= limit:
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(path + (k,))
            _json_paths(v, path + (k,), out, limit)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append(path + (i,))
            _json_paths(v, path + (i,), out, limit)
    return out


def _at(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def mutate_json_obj(obj, rng):
    """One structural change somewhere in a JSON tree (a new tree; name of the change)."""
    obj = copy.deepcopy(obj)
    paths = _json_paths(obj)
    if not paths:
        return rng.choice(_HOSTILE_JSON), "replace_root"
    path = rng.choice(paths)
    parent, key = _at(obj, path[:-1]), path[-1]
    op = rng.choice(("replace", "replace", "replace", "delete", "duplicate", "type_swap",
                     "wrap", "rename", "swap_sibling", "numeric"))
    val = parent[key]
    if op == "replace":
        parent[key] = copy.deepcopy(rng.choice(_HOSTILE_JSON))
    elif op == "delete":
        del parent[key]
    elif op == "duplicate":
        if isinstance(parent, list):
            parent.insert(key, copy.deepcopy(val))
        else:
            parent[f"{key}_"] = copy.deepcopy(val)
    elif op == "type_swap":
        parent[key] = (list(val.values()) if isinstance(val, dict) else
                       {str(i): v for i, v in enumerate(val)} if isinstance(val, list) else
                       str(val) if not isinstance(val, str) else
                       (int(val) if val.isdigit() else [val]))
    elif op == "wrap":
        parent[key] = [val] if rng.random() < 0.5 else {"config": val}
    elif op == "rename" and isinstance(parent, dict):
        parent[rng.choice(("name", "class_name", "config", "units", "layers", "inbound_nodes",
                           "x", "")) + ("" if rng.random() < 0.7 else "2")] = parent.pop(key)
    elif op == "swap_sibling" and len(parent) > 1:
        keys = list(parent.keys()) if isinstance(parent, dict) else list(range(len(parent)))
        other = rng.choice(keys)
        parent[key], parent[other] = parent[other], parent[key]
    elif op == "numeric" and isinstance(val, (int, float)) and not isinstance(val, bool):
        parent[key] = rng.choice((0, -1, val + 1, val * 2, val * 1000, -val, 2**31, 0.5,
                                  float("nan")))
    else:
        parent[key] = copy.deepcopy(rng.choice(_HOSTILE_JSON))
        op = "replace"
    return obj, f"json_{op}"


def dump_json(obj) -> str:
    s = json.dumps(obj, allow_nan=True)
    return (s.replace('"__BIG__"', "1e400").replace('"__LONGSTR__"', '"' + "A" * 100000 + '"')
            .replace('"__DEEP__"', "[" * 200 + "]" * 200))


# ============================================================================ torch mutators
_PICKLE_STRINGS = ["", "0", "1", "7", "cpu", "cuda:0", "meta", "storage", "module",
                   "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                   "weight_ih_l0_reverse", "weight_hr_l0", "weight_ih_l1", "weight_ih",
                   "weight_hh", "bias_ih", "lstm.weight_ih_l0", "state_dict", "model",
                   "_metadata", "version", "../../../etc/passwd", "A" * 3000, "\x00", "é",
                   "torch", "FloatStorage", "HalfStorage", "BFloat16Storage"]
_PICKLE_GLOBALS = [("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"),
                   ("torch._utils", "_rebuild_parameter"), ("collections", "OrderedDict"),
                   ("torch", "FloatStorage"), ("torch", "DoubleStorage"),
                   ("torch", "HalfStorage"), ("torch", "BFloat16Storage"),
                   ("torch", "LongStorage"), ("torch", "float32"), ("torch", "bfloat16"),
                   ("torch", "Size"), ("builtins", "set"), ("builtins", "frozenset"),
                   ("builtins", "bytearray"), ("_codecs", "encode"), ("torch", "device"),
                   ("torch._tensor", "_rebuild_from_type_v2"),
                   ("torch._utils", "_rebuild_qtensor"), ("torch.nn.modules.rnn", "LSTM"),
                   ("os", "system"), ("builtins", "eval"), ("builtins", "getattr"),
                   ("posix", "system"), ("subprocess", "Popen"), ("numpy", "ndarray")]
_PLAIN_OPS = [b"(", b")", b"]", b"}", b"N", b"\x88", b"0", b"2", b"t", b"\x85", b"\x86",
              b"\x87", b"R", b"b", b"s", b"u", b"a", b"e", b"Q", b"1", b"\x94", b"l", b"d",
              b"\x8f", b"\x90", b"\x91", b"\x93", b"."]


def pickle_ops(data: bytes):
    """[(name, arg, raw bytes)] of one pickle stream, and the bytes after its STOP."""
    ops, last = [], 0
    items = list(pickletools.genops(data))
    for k, (op, arg, pos) in enumerate(items):
        end = items[k + 1][2] if k + 1 < len(items) else pos + 1
        ops.append((op.name, arg, data[pos:end]))
        last = end
    return ops, data[last:]


def _encode_int(v):
    return bytes(Pickle(0).int(v).b)


def _encode_str(s):
    return bytes(Pickle(0).str(s).b)


def mutate_pickle(data: bytes, rng, extra_strings=()) -> tuple:
    """One opcode-level change: an int, a string, a float or a global replaced; an opcode
    deleted, duplicated, inserted or swapped; the protocol changed."""
    ops, tail = pickle_ops(data)
    ops = [o for o in ops if o[0] != "FRAME"]  # frames would no longer match
    kinds = ["int", "int", "string", "string", "delete", "duplicate", "insert", "insert",
             "global", "swap", "float", "memo", "proto"]
    kind = rng.choice(kinds)
    idx = lambda pred: [i for i, o in enumerate(ops) if pred(o)]  # noqa: E731
    if kind == "int":
        cand = idx(lambda o: o[0] in ("BININT", "BININT1", "BININT2", "LONG1", "LONG4",
                                      "INT", "LONG") and not isinstance(o[1], bool))
        if cand:
            i = rng.choice(cand)
            old = ops[i][1] if isinstance(ops[i][1], int) else 0
            v = rng.choice(INTS + [old + 1, old - 1, old * 2, old * 1024, -old, old + 2**32])
            ops[i] = ("INT*", v, _encode_int(v))
        else:
            kind = "insert"
    if kind == "string":
        cand = idx(lambda o: o[0] in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
                                      "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"))
        if cand:
            i = rng.choice(cand)
            pool = _PICKLE_STRINGS + [o[1] for o in ops if isinstance(o[1], str)] + \
                list(extra_strings)
            s = rng.choice(pool)
            if rng.random() < 0.2 and isinstance(ops[i][1], str):
                s = ops[i][1] + rng.choice(("_reverse", "x", "0", " "))
            ops[i] = ("STR*", s, _encode_str(s) if rng.random() < 0.9 else
                      bytes(Pickle(0).bytes(s.encode("utf-8", "surrogatepass")).b))
        else:
            kind = "insert"
    if kind == "float":
        cand = idx(lambda o: o[0] in ("BINFLOAT", "FLOAT"))
        if cand:
            i = rng.choice(cand)
            ops[i] = ("FLOAT*", None, bytes(Pickle(0).float(rng.choice(FLOAT_SPECIALS)).b))
        else:
            kind = "delete"
    if kind == "global":
        cand = idx(lambda o: o[0] in ("GLOBAL", "STACK_GLOBAL"))
        mod, name = rng.choice(_PICKLE_GLOBALS)
        g = ("GLOBAL*", None, bytes(Pickle(0).glob(mod, name).b))
        if cand and rng.random() < 0.7:
            ops[rng.choice(cand)] = g
        else:
            ops.insert(rng.randrange(len(ops)), g)
    if kind == "memo":
        cand = idx(lambda o: o[0] in ("BINGET", "LONG_BINGET", "GET", "BINPUT", "LONG_BINPUT",
                                      "PUT"))
        v = rng.choice((0, 1, 2, 255, 256, 2**31 - 1, 2**32 - 1))
        enc = bytes(Pickle(0).get(v).b) if rng.random() < 0.6 else bytes(Pickle(0).put(v).b)
        if cand:
            ops[rng.choice(cand)] = ("MEMO*", v, enc)
        else:
            ops.insert(rng.randrange(len(ops)), ("MEMO*", v, enc))
    if kind == "proto":
        if ops and ops[0][0] == "PROTO":
            if rng.random() < 0.5:
                ops.pop(0)
            else:
                ops[0] = ("PROTO*", None, b"\x80" + bytes([rng.choice((0, 1, 3, 4, 5, 6, 255))]))
        else:
            kind = "delete"
    if kind == "delete" and len(ops) > 1:
        del ops[rng.randrange(len(ops) - 1)]
    elif kind == "duplicate" and ops:
        i = rng.randrange(len(ops))
        ops[i:i] = [ops[i]] * rng.choice((1, 1, 2, 100))
    elif kind == "insert":
        raw = rng.choice(_PLAIN_OPS + [bytes(Pickle(0).glob(*rng.choice(_PICKLE_GLOBALS)).b),
                                       _encode_int(rng.choice(INTS)),
                                       _encode_str(rng.choice(_PICKLE_STRINGS))])
        ops.insert(rng.randrange(len(ops) + 1), ("RAW*", None, raw))
    elif kind == "swap" and len(ops) > 2:
        i = rng.randrange(len(ops) - 2)
        ops[i], ops[i + 1] = ops[i + 1], ops[i]
    return b"".join(o[2] for o in ops) + tail, f"pickle_{kind}"


def _floats_mutation(data: bytes, rng) -> bytes:
    b = bytearray(data)
    if len(b) < 4:
        return bytes(b) + b"\x00"
    for _ in range(rng.choice((1, 1, 3))):
        m_float_overwrite(b, rng)
    return bytes(b)


def mutate_torch_zip(data: bytes, rng) -> tuple:
    members = read_zip(data)
    names = [m[0] for m in members]
    pkl_i = next((i for i, n in enumerate(names) if n.endswith("data.pkl")), None)
    kind = rng.choice(("pickle",) * 6 + ("storage", "storage", "byteorder", "drop", "rename",
                                         "deflate", "constants", "version", "duplicate",
                                         "prefix", "storage_size"))
    compress = {n: c for n, _, c in members}
    if kind == "pickle" and pkl_i is not None:
        name, pkl, _ = members[pkl_i]
        extra = [n.rsplit("/", 1)[-1] for n in names]
        new, sub = mutate_pickle(pkl, rng, extra)
        members[pkl_i] = (name, new, compress[name])
        kind = sub
    elif kind in ("storage", "storage_size"):
        st = [i for i, n in enumerate(names) if "/data/" in n]
        if not st:
            return raw_mutate(data, rng)
        i = rng.choice(st)
        n, v, c = members[i]
        if kind == "storage":
            v = _floats_mutation(v, rng)
        else:
            v = v[:rng.randrange(len(v) + 1)] if rng.random() < 0.5 else v + v[:64] * 3
        members[i] = (n, v, c)
    elif kind == "byteorder":
        bo = [i for i, n in enumerate(names) if n.endswith("byteorder")]
        val = rng.choice((b"big", b"middle", b"", b"little\n", b"LITTLE", b"\xff" * 4))
        if bo:
            if rng.random() < 0.3:
                del members[bo[0]]
            else:
                members[bo[0]] = (names[bo[0]], val, zipfile.ZIP_STORED)
        else:
            prefix = names[pkl_i].rsplit("/", 1)[0] if pkl_i is not None else "archive"
            members.append((prefix + "/byteorder", val, zipfile.ZIP_STORED))
    elif kind == "drop" and len(members) > 1:
        del members[rng.randrange(len(members))]
    elif kind == "rename":
        i = rng.randrange(len(members))
        n, v, c = members[i]
        members[i] = (rng.choice((n.replace("data/", "data/1"), n + "x", n.upper(),
                                  n.replace("archive", "a/b"), "data.pkl", "../" + n)), v, c)
    elif kind == "deflate":
        for n, _, _ in members:
            if rng.random() < 0.7:
                compress[n] = rng.choice((zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                          zipfile.ZIP_LZMA))
    elif kind == "constants":
        prefix = names[0].split("/")[0]
        members.append((prefix + rng.choice(("/constants.pkl", "/code/x.py", "/.data/version",
                                             "/data.pkl")),
                        Pickle().obj({"a": 1}).stop(), zipfile.ZIP_STORED))
    elif kind == "version":
        vi = [i for i, n in enumerate(names) if n.endswith("/version")]
        val = rng.choice((b"", b"999\n", b"-1", b"x", b"3" * 100))
        if vi:
            members[vi[0]] = (names[vi[0]], val, zipfile.ZIP_STORED)
    elif kind == "duplicate":
        i = rng.randrange(len(members))
        members.insert(rng.randrange(len(members) + 1), members[i])
    elif kind == "prefix":
        new = rng.choice(("", "x/", "archive/archive/"))
        members = [((new + n.split("/", 1)[1]) if "/" in n else n, v, c) for n, v, c in members]
    else:
        return raw_mutate(data, rng)
    for k, (n, _, c) in enumerate(members):
        compress.setdefault(n, c)
    return _rezip(members, compress), f"zip_{kind}"


def _rezip(members, compress) -> bytes:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point
        return make_zip([(n, v) for n, v, _ in members], compress)


def _legacy_parts(data: bytes):
    """The five pickles of a legacy torch file and the storage section after them."""
    parts, pos = [], 0
    for _ in range(5):
        items = list(pickletools.genops(data[pos:]))
        end = pos + items[-1][2] + 1
        parts.append(data[pos:end])
        pos = end
    return parts, data[pos:]


def mutate_torch_legacy(data: bytes, rng) -> tuple:
    try:
        parts, rest = _legacy_parts(data)
    except Exception:  # noqa: BLE001 - a fixture that is not a clean legacy file
        return raw_mutate(data, rng)
    kind = rng.choice(("obj", "obj", "obj", "header", "keys", "numel", "storage", "order"))
    if kind in ("obj", "header", "keys"):
        i = {"obj": 3, "keys": 4}.get(kind, rng.randrange(3))
        parts[i], sub = mutate_pickle(parts[i], rng)
        kind += "_" + sub
    elif kind == "numel":
        b = bytearray(rest)
        if len(b) >= 8:
            b[0:8] = struct.pack("<q", _wrap(rng.choice(INTS), 64, True))
        rest = bytes(b)
    elif kind == "storage":
        rest = rest[:8] + _floats_mutation(rest[8:], rng)
    else:  # the object pickle moved: sys_info and the object swapped
        parts[2], parts[3] = parts[3], parts[2]
    return b"".join(parts) + rest, f"legacy_{kind}"


# ============================================================================ safetensors
def st_split(data: bytes):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def st_join(header, body: bytes, raw_header=None) -> bytes:
    h = (raw_header if raw_header is not None else dump_json(header)).encode()
    return struct.pack("<Q", len(h)) + h + body


_ST_DTYPES = ["F32", "F64", "F16", "BF16", "I8", "U8", "I32", "I64", "BOOL", "C64", "F8_E4M3",
              "U64", "X", "", "f32", 5, None, ["F32"]]


def mutate_safetensors(data: bytes, rng) -> tuple:
    try:
        header, body = st_split(data)
    except Exception:  # noqa: BLE001
        return raw_mutate(data, rng)
    names = [k for k in header if k != "__metadata__"]
    kind = rng.choice(("dtype", "shape", "shape", "offsets", "offsets", "overlap", "delete",
                       "duplicate", "rename", "metadata", "metadata", "config", "config",
                       "config", "header_len", "body", "json"))
    if not names and kind in ("dtype", "shape", "offsets", "overlap", "delete", "duplicate",
                              "rename"):
        kind = "json"
    if kind == "dtype":
        header[rng.choice(names)]["dtype"] = rng.choice(_ST_DTYPES)
    elif kind == "shape":
        e = header[rng.choice(names)]
        sh = list(e.get("shape", []))
        op = rng.randrange(6)
        if op == 0 and sh:
            sh[rng.randrange(len(sh))] = rng.choice(INTS + [1.9, "1", None, "__BIG__"])
        elif op == 1:
            sh.append(rng.choice((1, 0, 2)))
        elif op == 2 and sh:
            sh.pop()
        elif op == 3:
            sh = sh[::-1]
        elif op == 4:
            sh = rng.choice(([], [[1]], None, "x", [2**32, 2**32], [0, 2**62]))
        else:
            sh = [d * 2 if isinstance(d, int) else d for d in sh]
        e["shape"] = sh
    elif kind == "offsets":
        e = header[rng.choice(names)]
        a, b = (list(e.get("data_offsets", [0, 0])) + [0, 0])[:2]
        e["data_offsets"] = rng.choice(([b, a], [a, b + 4], [a - 4, b - 4], [a, 2**63],
                                        [-1, b], [a, len(body) + 1], [0], [a, b, b], [a, "x"],
                                        [a + 0.5, b], [a, "__BIG__"], None, [0, 0]))
    elif kind == "overlap" and len(names) > 1:
        x, y = rng.sample(names, 2)
        header[x]["data_offsets"] = list(header[y]["data_offsets"])
        if header[x].get("shape") != header[y].get("shape"):
            header[x]["shape"], header[x]["dtype"] = header[y]["shape"], header[y]["dtype"]
    elif kind == "delete":
        del header[rng.choice(names)]
    elif kind == "duplicate":
        n = rng.choice(names)
        header[rng.choice((n + "_", n.replace("0", "1"), n.replace("forward", "reverse"),
                           "layers.5.forward.w_ih", "extra"))] = copy.deepcopy(header[n])
    elif kind == "rename":
        n = rng.choice(names)
        header[rng.choice((n.replace("w_ih", "w_hh"), n.replace("ih", "hh"), n + "x",
                           n.replace(".0.", ".1."), n.upper()))] = header.pop(n)
    elif kind == "metadata":
        meta = header.get("__metadata__")
        header["__metadata__"] = rng.choice((None, [], "x", {"format": "lstm_infer"},
                                             {"format": "lstm_infer", "format_version": "2",
                                              "config": "{}"}, {"a": {"b": 1}}, 5,
                                             dict(meta or {}, format_version=rng.choice(
                                                 ("0", "1 ", 1, None, "")))))
    elif kind == "config":
        meta = header.get("__metadata__") or {}
        try:
            cfg = json.loads(meta.get("config", "{}"))
            new, sub = mutate_json_obj(cfg, rng)
            meta["config"] = dump_json(new) if rng.random() < 0.9 else new
            kind = "config_" + sub
        except Exception:  # noqa: BLE001 - not a native file: mutate the header instead
            new, sub = mutate_json_obj(header, rng)
            header, kind = new, "header_" + sub
        if isinstance(header, dict):
            header["__metadata__"] = meta
    elif kind == "header_len":
        h = dump_json(header).encode()
        v = rng.choice((0, 1, 2, 7, len(h) - 1, len(h) + 1, len(h) + len(body), 2**32, 2**63,
                        2**64 - 1, 100 * 2**20 + 1))
        return struct.pack("<Q", v) + h + body, "st_header_len"
    elif kind == "body":
        return st_join(header, _floats_mutation(body, rng)), "st_body_nan"
    else:
        new, sub = mutate_json_obj(header, rng)
        return st_join(new, body, dump_json(new)), "st_json_" + sub
    return st_join(header, body), f"st_{kind}"


# ============================================================================ HDF5 / Keras
def _h5py():
    import h5py
    return h5py


def _h5_objects(f):
    h5py = _h5py()
    groups, datasets = [f], []

    def visit(name, obj):
        (datasets if isinstance(obj, h5py.Dataset) else groups).append(obj)
    f.visititems(visit)
    return groups, datasets


def mutate_h5_structure(data: bytes, rng) -> tuple:
    """An attribute or a dataset changed through h5py (the file stays valid HDF5)."""
    import numpy as np
    h5py = _h5py()
    buf = io.BytesIO(data)
    kind = rng.choice(("attr", "attr", "config", "config", "dataset_shape", "dataset_dtype",
                       "dataset_values", "dataset_delete", "dataset_group", "weight_names"))
    with h5py.File(buf, "r+") as f:
        groups, datasets = _h5_objects(f)
        if kind == "config" and "model_config" not in f.attrs:
            kind = "attr"
        if kind == "config":
            raw = f.attrs["model_config"]
            cfg = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
            new, sub = mutate_json_obj(cfg, rng)
            f.attrs["model_config"] = dump_json(new)
            kind = "config_" + sub
        elif kind in ("attr", "weight_names"):
            cands = [(g, k) for g in groups + datasets for k in g.attrs.keys()]
            if kind == "weight_names":
                cands = [c for c in cands if c[1] in ("weight_names", "layer_names")] or cands
            if not cands:
                return raw_mutate(data, rng)
            g, k = rng.choice(cands)
            v = g.attrs[k]
            op = rng.randrange(5)
            if op == 0:
                del g.attrs[k]
            elif op == 1 and isinstance(v, np.ndarray) and v.size > 1:
                g.attrs[k] = v[::-1] if rng.random() < 0.5 else v[:-1]
            elif op == 2 and isinstance(v, np.ndarray) and v.size:
                lst = list(v)
                lst[rng.randrange(len(lst))] = rng.choice(
                    (b"", b"nonexistent:0", b"model_weights", b"/", b"..", b"\xff\xfe",
                     lst[0]))
                g.attrs[k] = np.array(lst)
            else:
                g.attrs[k] = rng.choice(("1.2.3", "3.0", "", "x" * 5000, b"\xff", 7, 1.5,
                                         np.arange(3), np.array([b"a", b"b"])))
        elif not datasets:
            return raw_mutate(data, rng)
        else:
            ds = rng.choice(datasets)
            name, arr, parent = ds.name, ds[()], ds.parent
            del f[name]
            if kind == "dataset_shape":
                a = np.asarray(arr)
                a = rng.choice((a.T, a.reshape(-1), a[..., :0] if a.ndim else a,
                                np.zeros(a.shape + (1,), a.dtype), np.float32(1.0),
                                np.concatenate([a, a]) if a.ndim else a,
                                a[:-1] if a.ndim and len(a) else a))
                f.create_dataset(name, data=a)
            elif kind == "dataset_dtype":
                dt = rng.choice(("<i4", "<f2", "<f8", "|b1", "<c8", "S8", "|u1", ">f4"))
                f.create_dataset(name, data=np.asarray(arr).astype(dt))
            elif kind == "dataset_values":
                a = np.array(arr, dtype=np.float32, copy=True)
                if a.size:
                    a.flat[rng.randrange(a.size)] = rng.choice(FLOAT_SPECIALS)
                f.create_dataset(name, data=a)
            elif kind == "dataset_delete":
                pass
            else:
                parent.create_group(name.rsplit("/", 1)[-1])
    return buf.getvalue(), f"h5_{kind}"


def mutate_h5(data: bytes, rng) -> tuple:
    if rng.random() < 0.45:
        return raw_mutate(data, rng)
    try:
        return mutate_h5_structure(data, rng)
    except Exception:  # noqa: BLE001 - h5py could not write this one: raw bytes instead
        return raw_mutate(data, rng)


def mutate_keras(data: bytes, rng) -> tuple:
    members = read_zip(data)
    names = [m[0] for m in members]
    kind = rng.choice(("config",) * 5 + ("metadata", "weights_raw", "weights_raw",
                                         "weights_h5", "weights_h5", "drop", "rename",
                                         "deflate", "duplicate"))
    compress = {n: c for n, _, c in members}
    if kind in ("config", "metadata"):
        target = "config.json" if kind == "config" else "metadata.json"
        if target not in names:
            return raw_mutate(data, rng)
        i = names.index(target)
        try:
            obj = json.loads(members[i][1])
            new, sub = mutate_json_obj(obj, rng)
            members[i] = (target, dump_json(new).encode(), members[i][2])
            kind += "_" + sub
        except Exception:  # noqa: BLE001
            members[i] = (target, raw_mutate(members[i][1], rng)[0], members[i][2])
    elif kind in ("weights_raw", "weights_h5"):
        wi = [i for i, n in enumerate(names) if n.endswith(".h5")]
        if not wi:
            return raw_mutate(data, rng)
        i = wi[0]
        n, v, c = members[i]
        new, sub = (raw_mutate(v, rng) if kind == "weights_raw" else mutate_h5(v, rng))
        members[i] = (n, new, c)
        kind += "_" + sub
    elif kind == "drop":
        del members[rng.randrange(len(members))]
    elif kind == "rename":
        i = rng.randrange(len(members))
        n, v, c = members[i]
        members[i] = (rng.choice((n + "x", "weights.h5", "model.weights.h5", "config.json",
                                  "x/" + n)), v, c)
    elif kind == "deflate":
        for n in compress:
            compress[n] = zipfile.ZIP_DEFLATED
    else:
        i = rng.randrange(len(members))
        members.append(members[i])
    return _rezip(members, compress), f"keras_{kind}"


# ============================================================================ ONNX
def mutate_onnx(data: bytes, rng) -> tuple:
    if rng.random() < 0.35:
        return raw_mutate(data, rng)
    import onnx
    from onnx import helper, TensorProto
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception:  # noqa: BLE001
        return raw_mutate(data, rng)
    g = m.graph
    lstms = [n for n in g.node if n.op_type == "LSTM"]
    kind = rng.choice(("init_dims", "init_dtype", "init_data", "init_external", "init_rename",
                       "attr", "attr", "attr", "attr_type", "attr_delete", "inputs",
                       "inputs", "outputs", "node_order", "node_delete", "node_dup",
                       "op_type", "opset", "graph_input"))
    inits = list(g.initializer)
    if kind.startswith("init") and not inits:
        kind = "attr"
    if kind.startswith("attr") and not lstms:
        kind = "inputs"
    if kind == "init_dims":
        t = rng.choice(inits)
        dims = list(t.dims)
        op = rng.randrange(4)
        if op == 0 and dims:
            dims[rng.randrange(len(dims))] = rng.choice((0, -1, 1, 2**31, 2**40, 2**62))
        elif op == 1:
            dims.append(rng.choice((1, 2, 0)))
        elif op == 2 and dims:
            dims.pop()
        else:
            dims = dims[::-1]
        del t.dims[:]
        t.dims.extend(dims)
    elif kind == "init_dtype":
        rng.choice(inits).data_type = rng.choice((0, 1, 2, 3, 6, 7, 9, 10, 11, 16, 17, 23,
                                                  99))
    elif kind == "init_data":
        t = rng.choice(inits)
        if t.raw_data and rng.random() < 0.6:
            rd = bytearray(t.raw_data)
            op = rng.randrange(3)
            if op == 0:
                del rd[rng.randrange(len(rd)):]
            elif op == 1:
                rd += rd[:8]
            else:
                m_float_overwrite(rd, rng)
            t.raw_data = bytes(rd)
        else:
            t.ClearField("raw_data")
            t.float_data.extend([rng.choice(FLOAT_SPECIALS)] * rng.choice((0, 1, 3)))
    elif kind == "init_external":
        t = rng.choice(inits)
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", rng.choice(("missing.bin", "", "case.onnx",
                                             "nonexistent/x.bin"))),
                     ("offset", str(rng.choice((0, 8, 2**40, -1)))),
                     ("length", str(rng.choice((4, 2**40, 0))))):
            e = t.external_data.add()
            e.key, e.value = k, v
    elif kind == "init_rename":
        rng.choice(inits).name = rng.choice(("", "X", "W", "R", "B", "x", "y"))
    elif kind in ("attr", "attr_type"):
        n = rng.choice(lstms)
        name = rng.choice(("hidden_size", "direction", "layout", "activations",
                           "activation_alpha", "activation_beta", "clip", "input_forget",
                           "unknown"))
        value = {
            "hidden_size": rng.choice((0, -1, 1, 3, 2**31 - 1, 2**31, 2**62)),
            "direction": rng.choice(("forward", "reverse", "bidirectional", "", "x", "Forward")),
            "layout": rng.choice((0, 1, 2, -1)),
            "activations": rng.choice((["Sigmoid", "Tanh", "Tanh"], ["Relu"] * 3,
                                       ["HardSigmoid", "Tanh", "Tanh"], ["X", "Y", "Z"], [],
                                       ["Sigmoid"] * 7, ["Sigmoid", "Tanh", "Tanh"] * 2,
                                       ["Affine", "LeakyRelu", "ThresholdedRelu"])),
            "activation_alpha": rng.choice(([float("nan")], [1e39], [-1.0], [], [0.2] * 9)),
            "activation_beta": rng.choice(([float("inf")], [0.5], [1e39, 1e39, 1e39])),
            "clip": rng.choice((0.0, -1.0, float("nan"), float("inf"), 1e-30, 1e39)),
            "input_forget": rng.choice((0, 1, 2, -1)),
            "unknown": 1,
        }[name]
        if kind == "attr_type":
            value = rng.choice((1.5, "x", [1, 2], [b"a"]))
        keep = [a for a in n.attribute if a.name != name]
        del n.attribute[:]
        n.attribute.extend(keep)
        n.attribute.append(helper.make_attribute(name, value))
    elif kind == "attr_delete":
        n = rng.choice(lstms)
        if n.attribute:
            del n.attribute[rng.randrange(len(n.attribute))]
    elif kind in ("inputs", "outputs"):
        nodes = list(g.node)
        if not nodes:
            return raw_mutate(data, rng)
        n = rng.choice(lstms or nodes)
        seq = n.input if kind == "inputs" else n.output
        vals = list(seq)
        op = rng.randrange(5)
        if op == 0 and vals:
            vals[rng.randrange(len(vals))] = ""
        elif op == 1 and len(vals) > 1:
            i, j = rng.sample(range(len(vals)), 2)
            vals[i], vals[j] = vals[j], vals[i]
        elif op == 2 and vals:
            vals[rng.randrange(len(vals))] = rng.choice(("nonexistent", vals[0],
                                                         n.output[0] if n.output else "y"))
        elif op == 3:
            vals.append(rng.choice(("", vals[0] if vals else "x")))
        elif vals:
            vals.pop()
        del seq[:]
        seq.extend(vals)
    elif kind == "node_order":
        nodes = list(g.node)[::-1]
        del g.node[:]
        g.node.extend(nodes)
    elif kind == "node_delete" and len(g.node) > 0:
        del g.node[rng.randrange(len(g.node))]
    elif kind == "node_dup" and len(g.node) > 0:
        g.node.append(copy.deepcopy(rng.choice(list(g.node))))
    elif kind == "op_type" and lstms:
        n = rng.choice(lstms)
        if rng.random() < 0.5:
            n.op_type = rng.choice(("GRU", "RNN", "Lstm", "LSTM2", "Identity"))
        else:
            n.domain = rng.choice(("com.microsoft", "x", "ai.onnx"))
    elif kind == "opset":
        for o in m.opset_import:
            o.version = rng.choice((0, 1, 6, 7, 14, 22, 99, -1))
    elif kind == "graph_input" and g.input:
        vi = rng.choice(list(g.input))
        dims = vi.type.tensor_type.shape.dim
        if dims:
            d = dims[rng.randrange(len(dims))]
            d.dim_value = rng.choice((0, 1, 2**31, 7))
    else:
        return raw_mutate(data, rng)
    return m.SerializeToString(), f"onnx_{kind}"


STRUCTURED = {
    "torch_zip": mutate_torch_zip,
    "torch_legacy": mutate_torch_legacy,
    "safetensors_torch": mutate_safetensors,
    "native": mutate_safetensors,
    "keras": mutate_keras,
    "keras_h5": mutate_h5,
    "onnx": mutate_onnx,
}


def mutate(data: bytes, family: str, rng) -> tuple:
    """(new bytes, mutator name): raw bytes 35% of the time, the format's structure else;
    a structure-aware mutator that fails on its input falls back to raw bytes."""
    if rng.random() < 0.35:
        return raw_mutate(data, rng)
    try:
        return STRUCTURED[family](data, rng)
    except Exception as e:  # noqa: BLE001 - e.g. a zip that zipfile cannot read
        new, name = raw_mutate(data, rng)
        return new, f"{name} (structured failed: {type(e).__name__})"


# ============================================================================ crafted files
CODE_EXEC_GLOBALS = [
    ("os", "system"), ("posix", "system"), ("nt", "system"), ("os", "popen"),
    ("subprocess", "Popen"), ("subprocess", "run"), ("subprocess", "call"),
    ("subprocess", "check_output"), ("builtins", "eval"), ("builtins", "exec"),
    ("__builtin__", "eval"), ("builtins", "__import__"), ("importlib", "import_module"),
    ("pty", "spawn"), ("timeit", "timeit"), ("pickle", "loads"), ("_pickle", "loads"),
    ("runpy", "run_path"), ("torch", "load"), ("torch.storage", "_load_from_bytes"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy", "load"), ("code", "interact"),
    ("webbrowser", "open"), ("shutil", "rmtree"), ("sys", "exit"),
]


def _touch_cmd(marker):
    return f"touch {marker}"


def _payload_pickles(marker_dir):
    """(name, pickle bytes) of code-execution attempts; each would `touch` a marker."""
    out = []

    def mk(name):
        return os.path.join(marker_dir, name)

    def add(name, build):
        out.append((name, build(mk(name))))

    # a global called with the shell command / code
    for mod, fn in CODE_EXEC_GLOBALS:
        def build(m, mod=mod, fn=fn):
            arg = (f"__import__('os').system('{_touch_cmd(m)}')" if fn in ("eval", "exec")
                   else ["touch", m] if mod == "subprocess" else
                   f"import os; os.system('{_touch_cmd(m)}')" if fn in ("timeit", "run_path")
                   else _touch_cmd(m))
            return Pickle().glob(mod, fn).obj((arg,)).op(b"R").stop()
        add(f"reduce_{mod}.{fn}", build)
    # STACK_GLOBAL (protocol 4)
    add("stack_global_os.system", lambda m: bytes(
        Pickle(4).str("os").str("system").op(b"\x93").obj((_touch_cmd(m),)).op(b"R").stop()))
    # INST and OBJ
    add("inst_os.system", lambda m: b"(S'" + _touch_cmd(m).encode() + b"'\nios\nsystem\n.")
    add("obj_os.system", lambda m: Pickle().op(b"(").glob("os", "system")
        .str(_touch_cmd(m)).op(b"o").stop())
    add("newobj_subprocess.Popen", lambda m: Pickle().glob("subprocess", "Popen")
        .obj((["touch", m],)).op(b"\x81").stop())
    add("newobj_ex_subprocess.Popen", lambda m: Pickle(4).glob("subprocess", "Popen")
        .obj((["touch", m],)).obj({}).op(b"\x92").stop())
    # getattr(__import__('os'), 'system')(cmd)
    add("getattr_import", lambda m: Pickle().glob("builtins", "getattr")
        .glob("builtins", "__import__").obj(("os",)).op(b"R").str("system").op(b"\x86")
        .op(b"R").obj((_touch_cmd(m),)).op(b"R").stop())
    # copyreg._reconstructor(Popen, Popen, args) runs Popen.__init__
    add("copyreg_reconstructor", lambda m: Pickle().glob("copyreg", "_reconstructor")
        .op(b"(").glob("subprocess", "Popen").glob("subprocess", "Popen").obj(["touch", m])
        .op(b"t").op(b"R").stop())
    add("copy_reg_reconstructor", lambda m: Pickle().glob("copy_reg", "_reconstructor")
        .op(b"(").glob("subprocess", "Popen").glob("subprocess", "Popen").obj(["touch", m])
        .op(b"t").op(b"R").stop())
    # functools.partial(os.system, cmd)()
    add("functools_partial", lambda m: Pickle().glob("functools", "partial")
        .glob("os", "system").str(_touch_cmd(m)).op(b"\x86").op(b"R").op(b")").op(b"R").stop())
    # partial.__setstate__ through BUILD, then a call
    add("build_setstate_partial", lambda m: Pickle().glob("functools", "partial")
        .glob("builtins", "print").op(b"\x85").op(b"\x81")
        .op(b"(").glob("os", "system").obj((_touch_cmd(m),)).none().none().op(b"t")
        .op(b"b").op(b")").op(b"R").stop())
    add("operator_methodcaller", lambda m: Pickle().glob("operator", "methodcaller")
        .str("system").str(_touch_cmd(m)).op(b"\x86").op(b"R")
        .glob("builtins", "__import__").obj(("os",)).op(b"R").op(b"\x85").op(b"R").stop())
    add("operator_attrgetter", lambda m: Pickle().glob("operator", "attrgetter")
        .obj(("system",)).op(b"R").glob("builtins", "__import__").obj(("os",)).op(b"R")
        .op(b"\x85").op(b"R").obj((_touch_cmd(m),)).op(b"R").stop())
    # an allowed global driving a refused one
    add("rebuild_from_type_v2_os.system", lambda m: Pickle()
        .glob("torch._tensor", "_rebuild_from_type_v2").op(b"(").glob("os", "system")
        .glob("torch", "Tensor").obj((_touch_cmd(m),)).obj({}).op(b"t").op(b"R").stop())
    add("rebuild_tensor_v2_callable_arg", lambda m: Pickle()
        .glob("torch._utils", "_rebuild_tensor_v2").op(b"(").glob("os", "system")
        .str(_touch_cmd(m)).op(b"\x85").op(b"R").int(0).obj((1,)).obj((1,)).bool(False)
        .op(b"}").op(b"t").op(b"R").stop())
    # torch.storage._load_from_bytes(a standard pickle that calls os.system)
    add("load_from_bytes_nested", lambda m: Pickle().glob("torch.storage", "_load_from_bytes")
        .obj((pickle.dumps(_Reduce(m)),)).op(b"R").stop())
    add("pickle_loads_nested", lambda m: Pickle().glob("pickle", "loads")
        .obj((pickle.dumps(_Reduce(m)),)).op(b"R").stop())
    # EXT1 / EXT2 / EXT4 (copyreg's extension registry)
    add("ext1", lambda m: Pickle().raw(b"\x82\x01").obj((_touch_cmd(m),)).op(b"R").stop())
    add("ext4", lambda m: Pickle().raw(b"\x84" + struct.pack("<i", 2**31 - 1))
        .obj((_touch_cmd(m),)).op(b"R").stop())
    # a pickled nn.Module (class global + BUILD)
    add("nn_module", lambda m: Pickle().glob("torch.nn.modules.rnn", "LSTM").op(b")")
        .op(b"\x81").obj({"_modules": {}, "cmd": _touch_cmd(m)}).op(b"b").stop())
    # the payload as a value inside a real state dict, and as its _metadata via BUILD
    sd_pkl, _ = lstm_state_dict_pickle(2, 1)
    body = sd_pkl[2:-1]  # the OrderedDict ops without PROTO and STOP
    add("inside_state_dict", lambda m: Pickle().raw(body).str("junk").glob("os", "system")
        .obj((_touch_cmd(m),)).op(b"R").op(b"s").stop())
    add("state_dict_build_metadata", lambda m: Pickle().raw(body).op(b"}").str("_metadata")
        .glob("os", "system").obj((_touch_cmd(m),)).op(b"R").op(b"s").op(b"b").stop())
    add("persistent_id_payload", lambda m: Pickle().glob("os", "system")
        .obj((_touch_cmd(m),)).op(b"R").op(b"Q").stop())
    return out


class _Reduce:
    """Only pickled (by the standard pickler, into bytes): never unpickled here."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (_touch_cmd(self.marker),))


def _tuple_dag(depth: int, container: str) -> bytes:
    """memo[k+1] = (memo[k], memo[k]): hashing memo[depth] takes 2^depth steps."""
    pk = b"\x80\x02" + (b"}" if container == "dict" else b"") + b")q\x000"
    for k in range(depth):
        pk += Pickle(0).get(k).b + Pickle(0).get(k).b + b"\x86" + Pickle(0).put(k + 1).b + b"0"
    last = bytes(Pickle(0).get(depth).b)
    if container == "dict":
        return pk + last + b"Ns."
    if container == "frozenset":
        return (pk + b"cbuiltins\nfrozenset\n" + b"(" + last + b"l" + b"\x85R.")
    if container == "set_additems":
        return pk[:2] + b"\x8f" + pk[2:] + b"(" + last + b"\x90."
    return (pk + b"ccollections\nOrderedDict\n)R(" + last + b"Nu.")  # OrderedDict SETITEMS


def crafted_torch(marker_dir, small):
    """Hostile torch files (zip and legacy): payloads, absurd sizes, deep / DAG pickles."""
    out = []

    def add(name, data, family="crafted_torch", suffix=".pt"):
        out.append((name, family, suffix, data))

    for name, pk in _payload_pickles(marker_dir):
        add(f"exec_zip_{name}", torch_zip(pk, {}), "crafted_code_exec")
        add(f"exec_legacy_{name}", torch_legacy(pk, {}), "crafted_code_exec")
    # legacy: the payload in the magic-number and sys_info positions
    pk = Pickle().glob("os", "system").obj((_touch_cmd(os.path.join(marker_dir, "legacy_magic"))
                                            ,)).op(b"R").stop()
    add("exec_legacy_in_magic", pk + Pickle().int(1001).stop(), "crafted_code_exec")
    good_sd, good_st = lstm_state_dict_pickle(2, 2)
    magic = Pickle().int(0x1950A86A20F9469CFC6C).stop()
    proto = Pickle().int(1001).stop()
    add("exec_legacy_in_sys_info", magic + proto + Pickle().glob("os", "system").obj(
        (_touch_cmd(os.path.join(marker_dir, "legacy_sysinfo")),)).op(b"R").stop(),
        "crafted_code_exec")

    # absurd tensors (weight_ih of an LSTM(2, 2) replaced)
    def sd_with(wih, storage_bytes=b"\x00" * 64, legacy=False):
        items = {"weight_ih_l0": wih,
                 "weight_hh_l0": tensor_ref("1", 16, (8, 2), legacy=legacy),
                 "bias_ih_l0": tensor_ref("2", 8, (8,), legacy=legacy)}
        st = {"0": storage_bytes, "1": b"\x00" * 64, "2": b"\x00" * 32}
        return Pickle().ordered_dict(items).stop(), st

    absurd = {
        "numel_2^61": dict(numel=2**61, size=(8, 2)),
        "size_2^40x2^40_stride0": dict(numel=1, size=(2**40, 2**40), stride=(0, 0)),
        "size_2^31x2^31_1elem": dict(numel=1, size=(2**31, 2**31), stride=(2**31, 1)),
        "shape_0x2^62": dict(numel=16, size=(0, 2**62)),
        "offset_2^62": dict(numel=16, size=(8, 2), offset=2**62),
        "negative_size": dict(numel=16, size=(-8, 2)),
        "negative_stride": dict(numel=16, size=(8, 2), stride=(-2, 1)),
        "stride_past_storage": dict(numel=16, size=(8, 2), stride=(1000, 1)),
        "numel_negative": dict(numel=-16, size=(8, 2)),
        "size_2^31-1x8_stride0": dict(numel=1, size=(2**31 - 1, 8), stride=(0, 0)),
        "size_1d_for_2d": dict(numel=16, size=(16,)),
        "expand_stride0_16384x4096": dict(numel=1, size=(16384, 4096), stride=(0, 0)),
    }
    for name, kw in absurd.items():
        for legacy in (False, True):
            wih = tensor_ref("0", kw["numel"], kw["size"], kw.get("stride"), kw.get("offset", 0),
                             legacy=legacy)
            pk, st = sd_with(wih, legacy=legacy)
            add(f"absurd_{'legacy' if legacy else 'zip'}_{name}",
                torch_legacy(pk, st) if legacy else torch_zip(pk, st))
    # an expanded (stride-0) 4096x4096 model from 1-element storages (F6)
    H, I = 4096, 4096
    items = {"weight_ih_l0": tensor_ref("0", 1, (4 * H, I), (0, 0)),
             "weight_hh_l0": tensor_ref("1", 1, (4 * H, H), (0, 0)),
             "bias_ih_l0": tensor_ref("2", 1, (4 * H,), (0,))}
    add("expand_stride0_model_4096", torch_zip(Pickle().ordered_dict(items).stop(),
                                                {"0": b"\0" * 4, "1": b"\0" * 4, "2": b"\0" * 4}))
    # deflated storages of zeros (torch never writes them): 66 KB -> 100s of MB if read
    H = I = 1024 if small else 2048
    items = {"weight_ih_l0": tensor_ref("0", 4 * H * I, (4 * H, I)),
             "weight_hh_l0": tensor_ref("1", 4 * H * H, (4 * H, H))}
    zeros = b"\0" * (16 * H * I)
    add(f"deflated_storages_{H}", torch_zip(Pickle().ordered_dict(items).stop(),
                                            {"0": zeros, "1": zeros},
                                            compress={"archive/data/0": zipfile.ZIP_DEFLATED,
                                                      "archive/data/1": zipfile.ZIP_DEFLATED}))
    del zeros
    # zip bombs: data.pkl with a long deflated tail after STOP; a lying declared size
    bomb = (65 if small else 1024) * fc.MiB  # the metadata cap is 64 MiB
    pkl = good_sd + b"\0" * bomb
    add(f"pkl_bomb_{bomb >> 20}MiB", torch_zip(pkl, good_st,
                                               compress={"archive/data.pkl": zipfile.ZIP_DEFLATED}))
    del pkl
    z = bytearray(torch_zip(good_sd, good_st))
    first = z.find(b"PK\x01\x02")  # data.pkl's central-directory entry: size 2^32-1
    z[first + 24:first + 28] = struct.pack("<I", 0xFFFFFFFF)
    add("zip_declared_size_lie", bytes(z))
    z = bytearray(torch_zip(good_sd, good_st))
    z[first + 6:first + 8] = struct.pack("<H", 255)  # version needed to extract: 25.5
    add("zip_version_needed_255", bytes(z))
    # deep and odd pickle structures
    n_deep = 2 * 10**4 if small else 10**5
    n_big = 10**5 if small else 10**6
    for name, data in {
        "tuple_dag_dict_key_40": _tuple_dag(40, "dict"),
        "tuple_dag_ordereddict_key_60": _tuple_dag(60, "ordereddict"),
        "tuple_dag_frozenset_40": _tuple_dag(40, "frozenset"),
        "tuple_dag_set_additems_40": _tuple_dag(40, "set_additems"),
        "tuple_dag_no_hash_30": b"\x80\x02)q\x000" + b"".join(
            Pickle(0).get(k).b + Pickle(0).get(k).b + b"\x86" + Pickle(0).put(k + 1).b + b"0"
            for k in range(30)) + bytes(Pickle(0).get(30).b) + b".",
        "deep_mark_lists": b"\x80\x02" + b"(" * n_deep + b"l" * n_deep + b".",
        "deep_lists_append": b"\x80\x02" + b"]" * n_deep + b"a" * (n_deep - 1) + b".",
        "deep_dicts": b"\x80\x02" + b"}X\x01\x00\x00\x00k" * n_deep + b"s" * n_deep + b".",
        "deep_tuples": b"\x80\x02)" + b"\x85" * n_deep + b".",
        "deep_marks": b"\x80\x02" + b"(" * n_big + b")" + b".",
        "self_ref_dict": b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.",
        "self_ref_list": b"\x80\x02]q\x00h\x00a.",
        "self_ref_ordereddict": b"\x80\x02ccollections\nOrderedDict\n)Rq\x00X\x01\x00\x00\x00ah\x00s.",
        "binbytes8_2^63": b"\x80\x04\x8e" + struct.pack("<Q", 2**63) + b"abc.",
        "binunicode8_2^64-1": b"\x80\x04\x8d" + struct.pack("<Q", 2**64 - 1) + b"abc.",
        "long4_huge": b"\x80\x02\x8b" + struct.pack("<i", (2 if small else 20) * fc.MiB) +
        b"\x7f" * ((2 if small else 20) * fc.MiB) + b".",
        "memo_many": b"\x80\x02N" + b"".join(b"r" + struct.pack("<I", i) for i in range(n_big))
        + b".",
        "long_binget_2^32-1": b"\x80\x02j\xff\xff\xff\xff.",
        "empty_stack_stop": b"\x80\x02.",
        "pop_empty": b"\x80\x020N.",
        "reduce_non_callable": b"\x80\x02K\x01)R.",
        "build_on_list": b"\x80\x02]}b.",
        "setitem_on_list": b"\x80\x02]K\x01K\x02s.",
        "persid_string": b"\x80\x02X\x03\x00\x00\x00abcQ.",
        "persid_huge_numel": Pickle().op(b"(").str("storage").glob("torch", "FloatStorage")
        .str("0").str("cpu").int(2**63).op(b"t").op(b"Q").stop(),
        "dup_on_empty": b"\x80\x022.",
        "frame_lie": b"\x80\x04\x95" + struct.pack("<Q", 2**62) + b"N.",
        "no_stop": b"\x80\x02}",
    }.items():
        add(f"pickle_zip_{name}", torch_zip(data, {}))
        if name in ("tuple_dag_dict_key_40", "deep_lists_append", "self_ref_dict",
                    "memo_many", "binbytes8_2^63"):
            add(f"pickle_legacy_{name}", torch_legacy(data, {}))
    # a deeply nested list as one more value of a real state dict
    sd_body = good_sd[2:-1]  # the OrderedDict's opcodes without PROTO and STOP
    add("deep_list_in_state_dict", torch_zip(
        b"\x80\x02" + sd_body + bytes(Pickle(0).str("junk").b) + b"]" * n_deep +
        b"a" * (n_deep - 1) + b"s.", good_st))
    add("torchscript_archive", make_zip([("archive/data.pkl", good_sd),
                                         ("archive/constants.pkl", Pickle().obj(()).stop()),
                                         ("archive/code/__torch__.py", b"import os\n")]))
    tar = bytearray(512)
    tar[0:7] = b"storages"[:7]
    tar[257:262] = b"ustar"
    add("tar_format", bytes(tar) * 3)
    add("legacy_bad_magic", Pickle().int(12345).stop() + b"\0" * 64)
    add("legacy_storage_count_lie", torch_legacy(*lstm_state_dict_pickle(2, 2, legacy=True),
                                                 numel=2**62))
    return out


def crafted_safetensors(tmp, small):
    import numpy as np
    import lstm_infer as li
    out = []
    m = li.LSTM.random(3, 4)
    buf = os.path.join(tmp, "tmp_native.safetensors")
    m.save(buf)
    with open(buf, "rb") as f:
        native = f.read()
    os.remove(buf)
    header, body = st_split(native)
    names = [k for k in header if k != "__metadata__"]

    def add(name, data, family="crafted_safetensors"):
        out.append((name, family, ".safetensors", data))

    def with_header(h, raw=None, b=body):
        return st_join(h, b, raw)

    for v in (2**63, 2**64 - 1, 0, 1, 7, 100 * fc.MiB + 1):
        add(f"header_len_{v}", struct.pack("<Q", v) + native[8:])
    add("header_deep_50k", with_header(None, '{"a":' + "[" * 50000 + "]" * 50000 + "}"))
    add("header_non_dict_entry", with_header({"a": 1, "__metadata__": header["__metadata__"]}))
    add("header_list", with_header(None, "[1,2,3]"))
    for field, val in (("shape", "__BIG__"), ("data_offsets", "__BIG__"), ("shape", 1.9),
                       ("shape", "1"), ("dtype", ["F32"]), ("dtype", "F32 "), ("shape", -1),
                       ("data_offsets", [2**63, 2**63 + 4]), ("shape", 2**62)):
        h = copy.deepcopy(header)
        e = h[names[0]]
        if field == "shape":
            e["shape"] = [val] + list(e["shape"][1:])
        elif field == "data_offsets":
            e["data_offsets"] = [e["data_offsets"][0], val] if not isinstance(val, list) else val
        else:
            e["dtype"] = val
        add(f"entry_{field}_{str(val)[:12]}", with_header(h))
    h = copy.deepcopy(header)
    h[names[1]]["data_offsets"] = list(h[names[0]]["data_offsets"])
    h[names[1]]["shape"], h[names[1]]["dtype"] = h[names[0]]["shape"], h[names[0]]["dtype"]
    add("overlapping_offsets", with_header(h))
    h = copy.deepcopy(header)
    for k in range(10**5 if not small else 10**4):
        h[f"extra.{k}"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    add("many_entries", with_header(h))
    h = copy.deepcopy(header)
    h[names[0]]["shape"] = [2**32, 2**32]
    add("shape_product_2^64", with_header(h))
    # native metadata
    meta = header["__metadata__"]
    cfg = json.loads(meta["config"])
    for name, new_meta in {
        "config_list": dict(meta, config="[]"), "config_int": dict(meta, config="3"),
        "config_null": dict(meta, config="null"), "config_object": dict(meta, config=cfg),
        "config_deep": dict(meta, config="[" * 100000 + "]" * 100000),
        "config_1e6_layers": dict(meta, config=json.dumps(dict(
            cfg, layer_options=[{}] * (10**6 if not small else 10**5)))),
        "config_bad_activation": dict(meta, config=json.dumps(dict(
            cfg, layer_options=[dict(cfg["layer_options"][0],
                                     activations=[["hard_sigmoid", 1e39, 0.5], "tanh",
                                                  "tanh"])]))),
        "format_version_2": dict(meta, format_version="2"),
        "no_config": {k: v for k, v in meta.items() if k != "config"},
    }.items():
        h = copy.deepcopy(header)
        h["__metadata__"] = new_meta
        add(f"native_{name}", with_header(h))
    # quantized natives with a hostile tensor
    base = li.LSTM.random(3, 4)
    for q in ("int8", "int8-weights", "float16", "bfloat16"):
        p = os.path.join(tmp, "tmp_q.safetensors")
        base.quantize(q).save(p)
        with open(p, "rb") as f:
            data = f.read()
        os.remove(p)
        h, b = st_split(data)
        for victim in ("layers.0.forward.w_hh", "layers.0.forward.w_ih",
                       "layers.0.forward.w_hh_scale"):
            if victim in h:
                h2 = copy.deepcopy(h)
                del h2[victim]
                add(f"native_{q}_missing_{victim.rsplit('.', 1)[1]}", with_header(h2, b=b))
        if "layers.0.forward.w_hh_scale" in h:
            a, e = h["layers.0.forward.w_hh_scale"]["data_offsets"]
            for val in (float("nan"), 0.0, 3e38, -1.0):
                bb = bytearray(b)
                bb[a:e] = np.full((e - a) // 4, val, "<f4").tobytes()
                add(f"native_{q}_scale_{val}", with_header(h, b=bytes(bb)))
        if q in ("float16", "bfloat16"):
            a, e = h["layers.0.forward.w_hh"]["data_offsets"]
            bb = bytearray(b)
            bb[a:a + 2] = b"\x00\x7c" if q == "float16" else b"\xc0\x7f"  # +inf / NaN
            add(f"native_{q}_nonfinite_w_hh", with_header(h, b=bytes(bb)))
    # 65 layers of a tiny model (the layer limit must be checked at load, not forward)
    layers = [[{"w_ih": np.zeros((4, 1), np.float32), "w_hh": np.zeros((4, 1), np.float32)}]
              for _ in range(65)]
    tensors = {f"layers.{k}.forward.{n}": a for k, l in enumerate(layers) for n, a in
               l[0].items()}
    cfg65 = dict(cfg, layer_options=[cfg["layer_options"][0]] * 65)
    from lstm_infer.formats import safetensors_io
    p = os.path.join(tmp, "tmp_65.safetensors")
    safetensors_io.save(p, tensors, {"format": "lstm_infer", "format_version": "1",
                                     "config": json.dumps(cfg65)})
    with open(p, "rb") as f:
        add("native_65_layers", f.read())
    os.remove(p)
    # torch-named safetensors with hostile entries
    sd = {"weight_ih_l0": np.zeros((8, 2), np.float32), "weight_hh_l0": np.zeros((8, 2),
                                                                                np.float32)}
    p = os.path.join(tmp, "tmp_t.safetensors")
    safetensors_io.save(p, sd)
    with open(p, "rb") as f:
        tdata = f.read()
    os.remove(p)
    th, tb = st_split(tdata)
    for name, mod in {"dtype_F8": ("dtype", "F8_E4M3"), "dtype_C64": ("dtype", "C64"),
                      "dtype_BOOL": ("dtype", "BOOL"), "shape_3d": ("shape", [2, 2, 4])}.items():
        h = copy.deepcopy(th)
        h["weight_ih_l0"][mod[0]] = mod[1]
        if mod[0] == "dtype" and mod[1] in ("F8_E4M3", "BOOL"):
            h["weight_ih_l0"]["shape"] = [8, 8]
        add(f"torchnames_{name}", with_header(h, b=tb))
    return out


def crafted_h5(marker_dir, canaries, small):
    """HDF5 / Keras files: external storage, external links and virtual datasets pointing
    at the canary, unallocated and gzip-bomb datasets, wrong dtypes, the global-heap hang."""
    import numpy as np
    h5py = _h5py()
    out = []
    src_h5 = os.path.join(FIXTURES, "keras", "tf_keras2_seq.h5")
    src_keras = os.path.join(FIXTURES, "keras", "stack_v3.keras")
    with open(src_h5, "rb") as f:
        h5_bytes = f.read()
    with open(src_keras, "rb") as f:
        keras_bytes = f.read()

    def kernels(f):  # the 2-D float datasets: kernel:0 (Keras 2), vars/0 (Keras 3)
        _g, ds = _h5_objects(f)
        return [d for d in ds if d.ndim == 2 and d.dtype.kind == "f"]

    def edit_h5(data, fn):
        buf = io.BytesIO(data)
        with h5py.File(buf, "r+") as f:
            fn(f, kernels(f)[0])
        return buf.getvalue()

    def replace(f, ds, **kw):
        name, shape, dtype = ds.name, ds.shape, ds.dtype
        del f[name]
        f.create_dataset(name, shape=kw.pop("shape", shape), dtype=kw.pop("dtype", dtype), **kw)

    def edit_keras(fn):
        members = read_zip(keras_bytes)
        out_m = []
        for n, v, c in members:
            if n.endswith(".h5"):
                v = edit_h5(v, fn)
            out_m.append((n, v))
        return make_zip(out_m)

    def add(name, fn):
        out.append((f"h5_{name}", "crafted_h5", ".h5", edit_h5(h5_bytes, fn)))
        out.append((f"keras_{name}", "crafted_keras", ".keras", edit_keras(fn)))

    nbytes = lambda ds: int(np.prod(ds.shape)) * 4  # noqa: E731
    for label, target in (("abs", canaries["abs_bin"]), ("rel", "canary.bin"),
                          ("dotdot", "../canary.bin")):
        add(f"external_storage_{label}", lambda f, ds, t=target: replace(
            f, ds, dtype="<f4", external=[(t, 0, nbytes(ds))]))
    for label, target in (("abs", canaries["abs_h5"]), ("rel", "canary.h5")):
        def link(f, ds, t=target):
            name = ds.name
            del f[name]
            f[name] = h5py.ExternalLink(t, "/w")
        add(f"external_link_{label}", link)

    def vds(f, ds):
        name, shape = ds.name, ds.shape
        del f[name]
        layout = h5py.VirtualLayout(shape=shape, dtype="<f4")
        layout[...] = h5py.VirtualSource(canaries["abs_h5"], "/w", shape=shape)
        f.create_virtual_dataset(name, layout)
    try:
        add("virtual_dataset", vds)
    except Exception:  # noqa: BLE001 - a libhdf5 without VDS
        pass

    def soft_loop(f, ds):
        name = ds.name
        del f[name]
        f[name] = h5py.SoftLink(name)
    add("soft_link_loop", soft_loop)
    side = 20000 if small else 30000
    add(f"unallocated_{side}x{side}", lambda f, ds: replace(f, ds, shape=(side, side),
                                                           chunks=(1000, 1000)))
    gz = 6000 if small else 20000

    def gzip_bomb(f, ds):
        name = ds.name
        del f[name]
        d = f.create_dataset(name, shape=(gz, gz), dtype="<f4", chunks=(1000, 1000),
                             compression="gzip", compression_opts=9)
        chunk = zlib.compress(bytes(4 * 1000 * 1000), 9)  # every chunk written, all zeros
        for i in range(0, gz, 1000):
            for j in range(0, gz, 1000):
                d.id.write_direct_chunk((i, j), chunk)
    add(f"gzip_bomb_{gz}", gzip_bomb)
    for dt in ("<i4", "S8", "<c8", "|b1", "|u1", "<f2", "<f8", [("a", "<f4"), ("b", "<f4")]):
        label = dt if isinstance(dt, str) else "compound"
        add(f"dtype_{label.strip('<|')}", lambda f, ds, dt=dt: replace(f, ds, dtype=dt))
    add("kernel_scalar", lambda f, ds: replace(f, ds, shape=()))
    add("kernel_huge_declared", lambda f, ds: replace(f, ds, shape=(2**31, 2**31),
                                                      chunks=(1, 1)))

    def nan_kernel(f, ds):
        a = np.array(ds[()], dtype=np.float32)
        a.flat[0] = np.nan
        ds[...] = a
    add("nan_kernel", nan_kernel)

    def weight_names_group(f, ds):
        parent = ds.parent
        if "weight_names" in parent.attrs:
            parent.attrs["weight_names"] = np.array([b"lstm_cell", b"nope"])
        else:
            for g in _h5_objects(f)[0]:
                if "weight_names" in g.attrs:
                    g.attrs["weight_names"] = np.array([b"/", b"model_weights"])
    out.append(("h5_weight_names_group", "crafted_h5", ".h5", edit_h5(h5_bytes,
                                                                        weight_names_group)))
    # the one-byte libhdf5 endless loop (a global-heap object's size 6 -> 0)
    b = bytearray(h5_bytes)
    b[4520] = 0
    out.append(("h5_global_heap_size0", "crafted_h5", ".h5", bytes(b)))
    # model_config attribute: deep, and a Lambda layer with marshalled code
    import base64
    import marshal
    code = compile(f"__import__('os').system('touch {marker_dir}/keras_lambda')", "<lambda>",
                   "eval")
    lam = {"class_name": "Lambda", "config": {"name": "lam", "function": {
        "class_name": "__lambda__", "config": {"code": base64.b64encode(
            marshal.dumps(code)).decode(), "defaults": None, "closure": None}},
        "function_type": "lambda"}}

    def cfg_edit(f, _ds, how):
        cfg = json.loads(f.attrs["model_config"])
        if how == "deep":
            f.attrs["model_config"] = ("[" * 100000 + "]" * 100000)
        else:
            cfg["config"]["layers"].insert(1, lam)
            f.attrs["model_config"] = json.dumps(cfg)
    out.append(("h5_model_config_deep", "crafted_h5", ".h5",
                edit_h5(h5_bytes, lambda f, ds: cfg_edit(f, ds, "deep"))))
    out.append(("h5_lambda_marshal", "crafted_code_exec", ".h5",
                edit_h5(h5_bytes, lambda f, ds: cfg_edit(f, ds, "lambda"))))
    # .keras: config.json bombs and hostile structures
    members = read_zip(keras_bytes)
    cfg = json.loads(dict((n, v) for n, v, _ in members)["config.json"])

    def keras_with(config_bytes, compress=None, weights=None):
        new = []
        for n, v, _ in members:
            if n == "config.json":
                v = config_bytes
            elif n.endswith(".h5") and weights is not None:
                v = weights
            new.append((n, v))
        return make_zip(new, compress)

    bomb = (65 if small else 1024) * fc.MiB
    add_k = lambda name, data, fam="crafted_keras": out.append(  # noqa: E731
        (f"keras_{name}", fam, ".keras", data))
    add_k(f"config_bomb_{bomb >> 20}MiB", keras_with(
        json.dumps(cfg).encode() + b" " * bomb, {"config.json": zipfile.ZIP_DEFLATED}))
    add_k("config_deep", keras_with(b"[" * 100000 + b"]" * 100000))
    lam_cfg = copy.deepcopy(cfg)
    try:
        lam_cfg["config"]["layers"].insert(1, lam)
    except (KeyError, TypeError, AttributeError):
        lam_cfg["lambda"] = lam
    add_k("lambda_marshal", keras_with(json.dumps(lam_cfg).encode()), "crafted_code_exec")
    for name, edit in {"keras_tensor_config_str": ("config", "x"),
                       "layers_dict": ("layers", {"a": 1})}.items():
        c = copy.deepcopy(cfg)
        try:
            if name == "layers_dict":
                c["config"]["layers"] = edit[1]
            else:
                for layer in c["config"]["layers"]:
                    for node in layer.get("inbound_nodes", []):
                        for arg in node.get("args", []):
                            if isinstance(arg, dict):
                                arg["config"] = "x"
        except (KeyError, TypeError, AttributeError):
            pass
        add_k(name, keras_with(json.dumps(c).encode()))
    wi = [v for n, v, _ in members if n.endswith(".h5")][0]
    wb = bytearray(wi)
    wb[48:56] = struct.pack("<Q", 2**63 + 16)
    add_k("superblock_eof_2^63", keras_with(json.dumps(cfg).encode(), weights=bytes(wb)))
    wbomb = (65 if small else 1024) * fc.MiB
    add_k(f"weights_member_bomb_{wbomb >> 20}MiB", keras_with(
        json.dumps(cfg).encode(), {"model.weights.h5": zipfile.ZIP_DEFLATED},
        weights=wi + b"\0" * wbomb))
    return out


def crafted_onnx(canaries, small):
    """ONNX: external data outside the model's folder, huge constant evaluations."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper, TensorProto
    out = []
    with open(os.path.join(FIXTURES, "onnx", "torch_lstm_2layer.onnx"), "rb") as f:
        base = onnx.load_from_string(f.read())

    def add(name, m):
        out.append((f"onnx_{name}", "crafted_onnx", ".onnx", m.SerializeToString()))

    for label, loc in (("abs", canaries["abs_bin"]), ("dotdot", "../canary.bin"),
                       ("dotdot_deep", "../../../../../../.." + canaries["abs_bin"]),
                       ("symlink", "link_canary.bin")):
        m = copy.deepcopy(base)
        for t in m.graph.initializer:
            if t.raw_data and len(t.raw_data) <= 4096:
                n = len(t.raw_data)
                t.ClearField("raw_data")
                t.data_location = TensorProto.EXTERNAL
                for k, v in (("location", loc), ("offset", "0"), ("length", str(n))):
                    e = t.external_data.add()
                    e.key, e.value = k, v
        add(f"external_{label}", m)
    # a weight computed by ConstantOfShape / Expand of a huge shape (F6)
    lstm = next(n for n in base.graph.node if n.op_type == "LSTM")
    big = [1, 40000, 16000] if not small else [1, 20000, 16000]
    for op in ("ConstantOfShape", "Expand"):
        m = copy.deepcopy(base)
        lstm_m = next(n for n in m.graph.node if n.op_type == "LSTM")
        w_name = lstm_m.input[1]
        keep = [t for t in m.graph.initializer if t.name != w_name]
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
        m.graph.initializer.append(numpy_helper.from_array(np.array(big, np.int64), "bigshape"))
        if op == "ConstantOfShape":
            node = helper.make_node("ConstantOfShape", ["bigshape"], [w_name],
                                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
        else:
            m.graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "one"))
            node = helper.make_node("Expand", ["one", "bigshape"], [w_name])
        m.graph.node.insert(0, node)
        add(f"{op}_{big[1]}x{big[2]}", m)
    m = copy.deepcopy(base)
    for a in next(n for n in m.graph.node if n.op_type == "LSTM").attribute:
        if a.name == "hidden_size":
            a.i = 2**31
    add("hidden_size_2^31", m)
    m = copy.deepcopy(base)
    t = m.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([2**40, 2**40])
    t.ClearField("raw_data")
    add("dims_2^40_no_data", m)
    m = copy.deepcopy(base)
    w = lstm.input[1]
    m.graph.node.insert(0, helper.make_node("Identity", ["cyc_b"], ["cyc_a"]))
    m.graph.node.insert(0, helper.make_node("Identity", ["cyc_a"], ["cyc_b"]))
    lstm_m = next(n for n in m.graph.node if n.op_type == "LSTM")
    lstm_m.input[1] = "cyc_a"
    add("identity_cycle", m)
    m = copy.deepcopy(base)
    n_chain = 10**5 if not small else 10**4
    lstm_m = next(n for n in m.graph.node if n.op_type == "LSTM")
    prev = lstm_m.input[1]
    nodes = []
    for k in range(n_chain):
        nodes.append(helper.make_node("Identity", [prev], [f"id{k}"]))
        prev = f"id{k}"
    lstm_m.input[1] = prev
    m.graph.node.extend(nodes)
    add(f"identity_chain_{n_chain}", m)
    m = copy.deepcopy(base)
    m.graph.node.insert(0, helper.make_node("Constant", [], [w + "_c"]))
    m.graph.node[0].attribute.append(helper.make_attribute("value", 1.5))
    next(n for n in m.graph.node if n.op_type == "LSTM").input[1] = w + "_c"
    add("constant_value_float", m)
    return out


def build_crafted(work, marker_dir, canaries, small=False, log=print):
    """Write the crafted files under <work>/crafted; returns their descriptions."""
    d = os.path.join(work, "crafted")
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    items = crafted_torch(marker_dir, small) + crafted_safetensors(d, small)
    for name, builder in (("h5py", lambda: crafted_h5(marker_dir, canaries, small)),
                          ("onnx", lambda: crafted_onnx(canaries, small))):
        try:
            items += builder()
        except ImportError as e:
            log(f"  (crafted {name} files skipped: {e})")
    out = []
    for name, family, suffix, data in items:
        safe = "".join(c if c.isalnum() or c in "._-^" else "_" for c in name)
        p = os.path.join(d, safe + suffix)
        with open(p, "wb") as f:
            f.write(data)
        out.append({"name": name, "family": family, "suffix": suffix, "path": p,
                    "size": len(data)})
    return out


# ============================================================================ the corpus
def setup_work(work, frameworks=True, small=False, log=print):
    """Seeds, crafted files, canaries and the marker folder under `work`."""
    os.makedirs(work, exist_ok=True)
    marker_dir = os.path.join(work, "markers")
    os.makedirs(marker_dir, exist_ok=True)
    for fn in os.listdir(marker_dir):
        os.remove(os.path.join(marker_dir, fn))
    canaries = write_canaries(work)
    seeds = build_seeds(work, frameworks, log)
    crafted = build_crafted(work, marker_dir, canaries, small, log)
    return {"work": work, "marker_dir": marker_dir, "canaries": canaries, "seeds": seeds,
            "crafted": crafted}


def write_canaries(work):
    """The shared canary files (absolute paths in crafted files point here); each worker
    also gets its own copies (see prepare_worker_dir)."""
    data = fc.canary_bytes()
    # the templates are never read once workers watch the canaries (a read of a watched
    # file by the fuzzer itself would count as a case's read outside its file)
    tmpl = os.path.join(work, "canary_templates")
    out = {"abs_bin": os.path.join(work, "canary.bin"),
           "abs_h5": os.path.join(work, "canary.h5"),
           "cases_bin": os.path.join(work, "cases", "canary.bin"),
           "template_bin": os.path.join(tmpl, "canary.bin"),
           "template_h5": os.path.join(tmpl, "canary.h5")}
    os.makedirs(os.path.join(work, "cases"), exist_ok=True)
    os.makedirs(tmpl, exist_ok=True)
    for p in (out["abs_bin"], out["cases_bin"], out["template_bin"]):
        with open(p, "wb") as f:
            f.write(data)
    try:
        import numpy as np
        h5py = _h5py()
        with h5py.File(out["template_h5"], "w") as f:
            f.create_dataset("w", data=fc.canary_values().astype(np.float32)[:1024].reshape(
                16, 64))
        shutil.copyfile(out["template_h5"], out["abs_h5"])
    except ImportError:
        pass
    return out


def prepare_worker_dir(corpus, wdir):
    """<wdir> (the worker's cwd) holds its own canary.bin / canary.h5; <wdir>/case/ (where
    case files are written) holds a symlink that leaves it, to the shared canary."""
    os.makedirs(os.path.join(wdir, "case"), exist_ok=True)
    c = corpus["canaries"]
    paths = [c["abs_bin"], c["cases_bin"]]
    for src, name in ((c["template_bin"], "canary.bin"), (c["template_h5"], "canary.h5")):
        if os.path.exists(src):
            dst = os.path.join(wdir, name)
            shutil.copyfile(src, dst)
            paths.append(dst)
    if os.path.exists(c["abs_h5"]):
        paths.append(c["abs_h5"])
    link = os.path.join(wdir, "case", "link_canary.bin")
    if not os.path.lexists(link):
        os.symlink(c["abs_bin"], link)
    return {"canary_paths": paths, "allowed_dirs": [os.path.join(wdir, "case")]}


# ============================================================================ plan / cases
def plan_case(corpus, seed, index):
    """(family, case, info) of case `index`: the crafted files first, then mutations of the
    seeds, the formats in turn."""
    crafted = corpus["crafted"]
    if index < len(crafted):
        c = crafted[index]
        return c["family"], {"kind": "crafted", "name": c["name"], "path": c["path"],
                             "suffix": c["suffix"]}, {"index": index, "name": c["name"]}
    k = index - len(crafted)
    families = [f for f in FORMAT_FAMILIES if any(s["family"] == f for s in corpus["seeds"])]
    family = families[k % len(families)]
    rng = random.Random(seed * 1_000_003 + index)
    pool = [s for s in corpus["seeds"] if s["family"] == family]
    s = pool[rng.randrange(len(pool))]
    rseed = rng.getrandbits(64)
    return family, {"kind": "mutated", "seed_path": s["path"], "seed_name": s["name"],
                    "family": family, "suffix": s["suffix"], "rng": rseed}, \
        {"index": index, "seed": s["name"]}


_SEED_CACHE = {}


def _read(path):
    b = _SEED_CACHE.get(path)
    if b is None:
        with open(path, "rb") as f:
            b = _SEED_CACHE[path] = f.read()
    return b


def case_bytes(case) -> tuple:
    """(bytes, mutator) of a case, deterministic: the parent regenerates a failing case's
    file from its description."""
    if case["kind"] == "crafted":
        return _read(case["path"]), "crafted"
    if case["kind"] == "file":
        with open(case["path"], "rb") as f:
            return f.read(), "replay"
    rng = random.Random(case["rng"])
    return mutate(_read(case["seed_path"]), case["family"], rng)


# ============================================================================ worker task
def worker_init(config):
    """Import every loader's libraries and load each seed once (warm caches, lazy imports,
    BLAS / OpenMP buffers), so that a case's RSS growth is its own."""
    import numpy as np
    import lstm_infer as li
    from lstm_infer.formats import keras as _k, onnx as _o, pytorch as _p, native as _n  # noqa
    for mod in ("h5py", "onnx", "onnx.numpy_helper", "google.protobuf"):
        try:
            __import__(mod)
        except ImportError:
            pass
    for s in config.get("warm_paths", []):
        try:
            m = li.load(s)
            m(np.zeros((3, 9, m.config.input_size), np.float32))
            m(np.zeros((3, 1, m.config.input_size), np.float32))
        except Exception:  # noqa: BLE001 - a seed that does not load (a pickled module)
            pass
    for kw in (dict(dtype="float64"), dict(proj_size=3), dict(bidirectional=True)):
        m = li.LSTM.random(4, 8, **kw)
        m(np.zeros((5, 16, 4)))
    return {"li": li, "np": np, "casedir": os.path.join(config["workdir"], "case")}


def _model_arrays(m):
    for layer in m.weights:
        for w in layer:
            yield from w.values()


def run_case(state, case, ctx):
    li, np = state["li"], state["np"]
    ctx.allow(*[case[k] for k in ("path", "seed_path") if k in case])  # the fuzzer's reads
    data, mutator = case_bytes(case)
    path = os.path.join(state["casedir"], "case" + case.get("suffix", ".bin"))
    if case["kind"] == "file":
        path = os.path.abspath(case["path"])
    else:
        with open(path, "wb") as f:
            f.write(data)
    ctx.allow(path)
    size = len(data)
    res = {"mutator": mutator, "file_bytes": size, "tensor_bytes": size,
           "mem_budget": 2 * size + 64 * fc.MiB}
    try:
        if case.get("isolated_timeout"):  # li.load's watchdog: a child process
            m = li.load(path, timeout=case["isolated_timeout"])
        else:
            m = li.load(path)
    except BaseException as e:  # noqa: BLE001 - classified in the parent
        res["phase"], res["exc"] = "load", fc.describe_exception(e)
        return res
    try:
        res["model"] = repr(m)[:200]
        res["canary_in_weights"] = fc.contains_canary(_model_arrays(m))
        I = m.config.input_size
        shape = (3, 2, I) if I <= 10**6 else (1, 1, I)
        if m.config.batch_first:
            shape = (shape[1], shape[0], I)
        x = np.random.default_rng(case.get("rng", 0) & 0xFFFF).uniform(-2, 2, shape)
        out, (h, c) = m(x.astype(np.float32))
        arrs = [out] + (list(h) + list(c) if isinstance(h, list) else [h, c])
        res["finite"] = all(np.isfinite(a).all() for a in arrs)
        res["phase"] = "done"
    except BaseException as e:  # noqa: BLE001
        res["phase"], res["exc"] = "forward", fc.describe_exception(e)
    return res


def classify(res) -> str:
    exc = res.get("exc")
    if res.get("phase") == "load":
        if exc["format_error"]:
            return "clean_error"
        return "clean_nonformat" if exc["value_or_type_error"] else fc.UNCLEAN
    if res.get("phase") == "forward":
        return "forward_refused" if exc["value_or_type_error"] else fc.UNCLEAN
    return "loaded" if res.get("finite") else "loaded_nonfinite"


# ============================================================================ parent
def save_failure(corpus, case, outcome, record, out_dir):
    """Write the failing file (regenerated from its description) and a JSON note."""
    data, mutator = case_bytes(case)
    d = os.path.join(out_dir, outcome)
    os.makedirs(d, exist_ok=True)
    stem = case.get("name") or f"{case.get('family')}-{case.get('seed_name')}-{case['rng']:x}"
    stem = "".join(c if c.isalnum() or c in "._-^" else "_" for c in stem)[:120]
    path = os.path.join(d, stem + case.get("suffix", ".bin"))
    with open(path, "wb") as f:
        f.write(data)
    note = {"case": case, "mutator": mutator, "outcome": outcome,
            "status": record.get("status")}
    note.update({k: v for k, v in (record.get("result") or {}).items()
                 if k in ("exc", "phase", "rss_growth", "mem_budget", "opens", "spawns",
                          "canary_events", "markers", "seconds", "model")})
    for k in ("stderr", "returncode", "signal"):
        if record.get(k) is not None:
            note[k] = record[k]
    fc.write_json(path + ".json", note)
    return {"saved": path, "mutator": mutator}


def single_harness(config, name, timeout, warm=False):
    """One worker of a campaign's config, in its own folder (replay, watchdog rerun)."""
    cfg = dict(config)
    cfg["workdir"] = os.path.join(config["workdir"], name)
    cfg.update(cfg.pop("prepare_workdir")(cfg["workdir"]))
    if not warm:
        cfg["warm_paths"] = []
    return fc.Harness(os.path.abspath(__file__), cfg, timeout=timeout)


def rerun_isolated(corpus, config, case, timeout):
    """A case that hung, loaded again through li.load(path, timeout=...) (the loader's
    own watchdog, a child process): does the watchdog bound it?"""
    iso = max(1.0, timeout / 2)
    h = single_harness(config, f"rerun-{threading.get_ident()}", iso + 60)
    try:
        rec = h.run(dict(case, isolated_timeout=iso))
    finally:
        h.close()
    if rec["status"] != "ok":
        return {"isolated_outcome": rec["status"]}
    res = rec["result"]
    if res.get("markers"):
        return {"isolated_outcome": fc.CODE_EXEC, "markers": res["markers"]}
    exc = res.get("exc") or {}
    return {"isolated_outcome": classify(res), "isolated_exc": exc.get("type"),
            "isolated_seconds": round(res.get("seconds", 0.0), 2)}


def make_campaign(corpus, *, workers=1, timeout=10.0, rlimit=fc.DEFAULT_RLIMIT_AS,
                  out_dir=None, progress=True):
    work = corpus["work"]
    warm = [s["path"] for s in corpus["seeds"]]
    config = {"workdir": os.path.join(work, "cases"), "rlimit_as": rlimit,
              "marker_dir": corpus["marker_dir"], "warm_paths": warm,
              "prepare_workdir": lambda wdir: prepare_worker_dir(corpus, wdir),
              "sys_path": [HERE]}
    def on_failure(i, case, outcome, record):
        info = {}
        if outcome == fc.HANG:
            info.update(rerun_isolated(corpus, config, case, timeout))
        if out_dir:
            info.update(save_failure(corpus, case, outcome, record, out_dir))
        return info
    return fc.Campaign(os.path.abspath(__file__), config, classify=classify,
                       failure_outcomes=LOADER_FAILURES, workers=workers, timeout=timeout,
                       marker_dir=corpus["marker_dir"], on_failure=on_failure,
                       progress=progress)


def run(corpus, cases, *, seed=0, seconds=None, workers=1, timeout=10.0,
        rlimit=fc.DEFAULT_RLIMIT_AS, out_dir=None, progress=True):
    """Run `cases` cases (the crafted files first); returns (Results, Campaign)."""
    camp = make_campaign(corpus, workers=workers, timeout=timeout, rlimit=rlimit,
                         out_dir=out_dir, progress=progress)
    res = camp.run(lambda i: plan_case(corpus, seed, i), cases, seconds)
    return res, camp


def replay(path, args):
    """Load one file in a worker (or in this process) and print what happened."""
    if path.endswith(".json"):
        path = path[:-5]
    case = {"kind": "file", "path": os.path.abspath(path),
            "suffix": os.path.splitext(path)[1]}
    if args.in_process:
        state = worker_init({"workdir": os.getcwd()})
        res = run_case(state, case, _NullCtx())
        print(json.dumps(res, indent=1, default=str))
        print("outcome:", classify(res))
        return
    work = args.work or "/tmp/lstm_fuzz_replay"
    os.makedirs(work, exist_ok=True)
    corpus = {"work": work, "marker_dir": os.path.join(work, "markers"),
              "canaries": write_canaries(work), "seeds": [], "crafted": []}
    os.makedirs(corpus["marker_dir"], exist_ok=True)
    camp = make_campaign(corpus, timeout=args.timeout, rlimit=int(args.rlimit_gb * fc.GiB),
                         progress=False)
    h = single_harness(camp.config, "w0", args.timeout)
    t0 = time.monotonic()
    rec = h.run(case)
    h.close()
    out = fc.verdict(rec, classify, corpus["marker_dir"])
    print(json.dumps(rec, indent=1, default=str))
    print(f"outcome: {out}  ({time.monotonic() - t0:.2f} s)")


class _NullCtx:
    def allow(self, *paths):
        pass


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    fc.add_common_args(p, cases=5000, seconds=600, timeout=20.0)
    p.add_argument("--no-frameworks", action="store_true",
                   help="seeds from tests/data and lstm_infer only (no torch / keras)")
    p.add_argument("--small", action="store_true",
                   help="smaller bombs and deep structures (what the test suite uses)")
    p.add_argument("--no-crafted", action="store_true", help="mutated files only")
    args = p.parse_args(argv)
    if args.replay:
        return replay(args.replay, args)
    work = args.work or "/tmp/lstm_fuzz_loaders"
    t0 = time.monotonic()
    print(f"building seeds and crafted files in {work} ...", flush=True)
    corpus = setup_work(work, frameworks=not args.no_frameworks, small=args.small)
    if args.no_crafted:
        corpus["crafted"] = []
    fams = {}
    for s in corpus["seeds"]:
        fams[s["family"]] = fams.get(s["family"], 0) + 1
    print(f"  {len(corpus['seeds'])} seeds {fams}, {len(corpus['crafted'])} crafted files "
          f"({time.monotonic() - t0:.1f} s)", flush=True)
    out_dir = os.path.join(work, "failures")
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    t1 = time.monotonic()
    res, camp = run(corpus, args.cases, seed=args.seed, seconds=args.seconds,
                    workers=args.workers, timeout=args.timeout,
                    rlimit=int(args.rlimit_gb * fc.GiB), out_dir=out_dir)
    hangs = {}
    for f in res.failures:
        if f["outcome"] == fc.HANG:
            k = f.get("isolated_outcome", "?")
            hangs[k] = hangs.get(k, 0) + 1
    return fc.finish(
        res, camp, args, time.monotonic() - t1, tool="fuzz_loaders", unit="cases", work=work,
        describe_worst=lambda w: (f"{w['growth_bytes'] / fc.MiB:.1f} MiB growth, "
                                  f"{w['ratio_to_budget']:.3f} of its budget (2 x "
                                  f"{w['tensor_bytes']} B + 64 MiB) -- "
                                  f"{w.get('name') or w.get('seed')} #{w['index']}"),
        setup_seconds=round(t1 - t0, 1), seeds=[s["name"] for s in corpus["seeds"]],
        n_crafted=len(corpus["crafted"]), hangs_rerun_with_watchdog=hangs)

if __name__ == "__main__":
    sys.exit(main())
