"""SequenceModel (embedding -> LSTM -> head) against a float64 numpy oracle: the LSTM of
tests/reference.py, the embedding as indexing and the head as plain numpy maths, written
here independently of lstm_infer.sequence_model. Also: lengths from padding / masks,
validation, quantize, pickling, the native format, threads. Needs no framework (the
parity tests against torch / Keras / onnxruntime are in test_whole_model_{torch,keras,
onnx}.py)."""
from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL, assert_close
from lstm_infer.sequence_model import Dense, Embedding, SequenceModel
from reference import lstm_reference, random_weights

V, E, H, C = 13, 5, 6, 4


# ----------------------------------------------------------------------------- the oracle
def _act(name, z):
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name in ("softmax", "log_softmax"):
        e = np.exp(z - z.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
        return p if name == "softmax" else np.log(p)
    return z


def oracle(weights, layer_options, table, head, head_on, x, lengths, batch_first,
           masked="zero"):
    """y in float64: table[x] -> reference LSTM (time-major) -> pooling -> dense layers."""
    feats = table[x] if table is not None else np.asarray(x, np.float64)
    x_tb = feats.transpose(1, 0, 2) if batch_first else feats
    out, h_n, _ = lstm_reference(weights, x_tb, lengths=lengths, layer_options=layer_options)
    T, B = out.shape[:2]
    merge = (layer_options or [{}])[-1].get("merge", "concat")
    if head_on == "steps":
        z = out.copy()
        if masked == "repeat_last" and lengths is not None:
            for b, n in enumerate(lengths):
                if n:
                    z[n:, b] = out[n - 1, b]
        z = z.transpose(1, 0, 2) if batch_first else z
    elif head_on == "last_step":
        z = out[-1]
    else:
        last = h_n[-1]
        z = last[0] if len(last) == 1 else {
            "concat": lambda a, b: np.concatenate([a, b], -1), "sum": np.add,
            "mul": np.multiply, "ave": lambda a, b: (a + b) / 2}[merge](last[0], last[1])
    for w, b, act in head:
        z = _act(act, z @ w + b)
    return z


def _head(rng, sizes, acts):
    return [(rng.uniform(-0.5, 0.5, (i, o)), rng.uniform(-0.5, 0.5, o), a)
            for (i, o), a in zip(zip(sizes, sizes[1:]), acts)]


def _model(weights, table, head, head_on, batch_first, layer_options=None, pad_id=None,
           dtype="float32", masked="zero"):
    lstm = li.LSTM(weights, batch_first=batch_first, layer_options=layer_options, dtype=dtype)
    emb = None if table is None else Embedding(table, pad_id)
    return SequenceModel(lstm, embedding=emb, head=[Dense(w, b, a) for w, b, a in head],
                         head_on=head_on, masked_outputs=masked)


def damaged_copies(data: bytes, n: int, seed: int):
    """`n` damaged versions of a file's bytes: a few truncations, then 1-4 flipped bits
    (for the parity files' damaged-file tests)."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        b = bytearray(data)
        if k < n // 5:
            b = b[:int(len(b) * rng.uniform(0.05, 0.95))]
        else:
            for i in rng.integers(0, len(b), 1 + k % 4):
                b[i] ^= 1 << int(rng.integers(0, 8))
        yield bytes(b)


def _ids(rng, B, T, pad_id=None, lengths=None):
    ids = rng.integers(0 if pad_id is None else 1, V, (B, T))
    if lengths is not None:
        for b, n in enumerate(lengths):
            ids[b, n:] = pad_id
    return ids


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tm"])
@pytest.mark.parametrize("bidirectional,merge", [(False, "concat"), (True, "concat"),
                                                 (True, "sum"), (True, "mul"), (True, "ave")],
                         ids=["uni", "bi", "bi-sum", "bi-mul", "bi-ave"])
@pytest.mark.parametrize("head_on", ["steps", "last", "last_step"])
def test_matches_oracle(head_on, bidirectional, merge, batch_first):
    rng = np.random.default_rng(1)
    w = random_weights(E, H, 2, bidirectional=bidirectional, rng=rng)
    opts = [{}, {"merge": merge}] if bidirectional else None
    F = 2 * H if bidirectional and merge == "concat" else H
    table = rng.uniform(-1, 1, (V, E))
    head = _head(rng, [F, 7, C], ["relu", "softmax"])
    m = _model(w, table, head, head_on, batch_first, opts)
    ids = _ids(rng, 3, 8)
    lengths = np.array([8, 5, 1])
    for lens in (None, lengths):
        x = ids if batch_first else ids.T
        want = oracle(w, opts, table, head, head_on, x, lens, batch_first)
        got = m(x, lengths=lens)
        assert got.dtype == np.float32
        assert_close(got, want, TOL["float32"], f"{head_on} lengths={lens}")


@pytest.mark.parametrize("act", ["linear", "relu", "sigmoid", "tanh", "softmax", "log_softmax"])
def test_activations(act):
    rng = np.random.default_rng(2)
    w = random_weights(E, H, 1, rng=rng)
    table = rng.uniform(-1, 1, (V, E))
    head = _head(rng, [H, C], [act])
    m = _model(w, table, head, "steps", True)
    ids = _ids(rng, 4, 6)
    assert_close(m(ids), oracle(w, None, table, head, "steps", ids, None, True),
                 TOL["float32"], act)


def test_float64_model():
    rng = np.random.default_rng(3)
    w = random_weights(E, H, 2, bidirectional=True, rng=rng)
    table = rng.uniform(-1, 1, (V, E))
    head = _head(rng, [2 * H, C], ["softmax"])
    m = _model(w, table, head, "last", True, dtype="float64")
    ids = _ids(rng, 3, 9)
    got = m(ids)
    assert got.dtype == np.float64
    assert_close(got, oracle(w, None, table, head, "last", ids, None, True), TOL["float64"])


def test_features_input_and_no_head():
    """Without an embedding the input is features; without a head y is the pooled LSTM."""
    rng = np.random.default_rng(4)
    w = random_weights(E, H, 1, bidirectional=True, rng=rng)
    x = rng.uniform(-1, 1, (2, 7, E))
    for on in ("steps", "last", "last_step"):
        m = _model(w, None, [], on, True)
        assert_close(m(x), oracle(w, None, None, [], on, x, None, True), TOL["float32"], on)
    assert _model(w, None, [], "steps", True).is_bare
    assert not _model(w, None, [], "last", True).is_bare


# ----------------------------------------------------------------------------- lengths
def test_pad_id_gives_lengths():
    rng = np.random.default_rng(5)
    w = random_weights(E, H, 2, rng=rng)
    table = rng.uniform(-1, 1, (V, E))
    head = _head(rng, [H, C], ["softmax"])
    lengths = np.array([6, 3, 0, 1])
    ids = _ids(rng, 4, 6, pad_id=0, lengths=lengths)
    for on in ("steps", "last"):
        m = _model(w, table, head, on, True, pad_id=0)
        want = oracle(w, None, table, head, on, ids, lengths, True)
        assert_close(m(ids), want, TOL["float32"], on)
        np.testing.assert_array_equal(m(ids), m(ids, lengths=lengths))
        # time-major token ids: padding along axis 0
        mt = _model(w, table, head, on, False, pad_id=0)
        np.testing.assert_array_equal(mt(ids.T), m(ids).transpose(1, 0, 2) if on == "steps"
                                      else m(ids))
    m = _model(w, table, head, "last", True, pad_id=0)
    gap = ids.copy()
    gap[0, 2] = 0  # a pad token before a real one: lengths cannot express it
    with pytest.raises(ValueError, match="post-padding"):
        m(gap)


def test_repeat_last_at_padded_steps():
    rng = np.random.default_rng(6)
    w = random_weights(E, H, 1, rng=rng)
    table = rng.uniform(-1, 1, (V, E))
    head = _head(rng, [H, C], ["sigmoid"])
    lengths = np.array([5, 2, 0])
    ids = _ids(rng, 3, 5, pad_id=0, lengths=lengths)
    for bf in (True, False):
        m = _model(w, table, head, "steps", bf, pad_id=0, masked="repeat_last")
        x = ids if bf else ids.T
        want = oracle(w, None, table, head, "steps", x, lengths, bf, masked="repeat_last")
        assert_close(m(x), want, TOL["float32"], f"bf={bf}")
    y = m(ids.T)
    np.testing.assert_array_equal(y[2:, 1], np.broadcast_to(y[1, 1], (3, C)))


def test_mask_value_on_features():
    rng = np.random.default_rng(7)
    w = random_weights(E, H, 1, rng=rng)
    x = rng.uniform(-1, 1, (3, 6, E))
    x[1, 4:] = -1.0
    x[2, :] = -1.0
    lstm = li.LSTM(w, batch_first=True)
    m = SequenceModel(lstm, head_on="last", mask_value=-1.0)
    want = oracle(w, None, None, [], "last", x, [6, 4, 0], True)
    assert_close(m(x), want, TOL["float32"])


def test_unbatched():
    rng = np.random.default_rng(8)
    w = random_weights(E, H, 1, bidirectional=True, rng=rng)
    table = rng.uniform(-1, 1, (V, E))
    head = _head(rng, [2 * H, C], ["softmax"])
    ids = _ids(rng, 2, 7)
    for on in ("steps", "last", "last_step"):
        for bf in (True, False):
            m = _model(w, table, head, on, bf)
            batched = m(ids if bf else ids.T)
            row = batched[0] if (bf or on != "steps") else batched[:, 0]
            np.testing.assert_array_equal(m(ids[0]), row)
            assert m(ids[0], lengths=4).shape == row.shape


# ----------------------------------------------------------------------------- validation
def test_token_id_checks():
    rng = np.random.default_rng(9)
    m = _model(random_weights(E, H, 1, rng=rng), rng.uniform(-1, 1, (V, E)), [], "last", True)
    ok = _ids(rng, 2, 3)
    np.testing.assert_array_equal(m(ok.astype(np.float32)), m(ok))  # integral floats
    with pytest.raises(ValueError, match=r"\[0, 13\)"):
        m(np.array([[1, 13]]))
    with pytest.raises(ValueError, match="min -1"):
        m(np.array([[1, -1]]))
    with pytest.raises(TypeError, match="integers"):
        m(np.array([[1.5, 2.0]]))
    with pytest.raises(TypeError, match="token ids"):
        m(np.array([["a"]]))
    with pytest.raises(ValueError, match="2-D"):
        m(np.zeros((2, 3, 4), dtype=int))
    with pytest.raises(ValueError, match="lengths"):
        m(ok, lengths=[3, 4])


def test_constructor_checks():
    rng = np.random.default_rng(10)
    lstm = li.LSTM(random_weights(E, H, 1, rng=rng))
    with pytest.raises(ValueError, match="input_size"):
        SequenceModel(lstm, embedding=Embedding(np.zeros((V, E + 1))))
    with pytest.raises(ValueError, match="takes 5 features but gets 6"):
        SequenceModel(lstm, head=[Dense(np.zeros((5, 2)), np.zeros(2))])
    with pytest.raises(ValueError, match="activation"):
        SequenceModel(lstm, head=[Dense(np.zeros((H, 2)), np.zeros(2), "gelu")])
    with pytest.raises(ValueError, match="head_on"):
        SequenceModel(lstm, head_on="mean")
    with pytest.raises(ValueError, match="pad_id"):
        SequenceModel(lstm, embedding=Embedding(np.zeros((V, E)), pad_id=V))
    with pytest.raises(ValueError, match="NaN"):
        SequenceModel(lstm, head=[Dense(np.full((H, 2), np.nan), np.zeros(2))])
    with pytest.raises(TypeError, match="LSTM"):
        SequenceModel("lstm")


def test_immutable_parts():
    rng = np.random.default_rng(11)
    table = rng.uniform(-1, 1, (V, E))
    m = _model(random_weights(E, H, 1, rng=rng), table, _head(rng, [H, C], ["relu"]),
               "last", True)
    for a in (m.embedding.table, m.head[0].weight, m.head[0].bias):
        assert not a.flags.writeable
    table[:] = 0  # the caller's array is copied
    assert np.any(m.embedding.table)


# ----------------------------------------------------------------------------- variants
def _classifier(rng, pad_id=None):
    w = random_weights(E, 16, 2, bidirectional=True, rng=rng)
    return _model(w, rng.uniform(-1, 1, (V, E)), _head(rng, [32, 8, C], ["tanh", "softmax"]),
                  "last", True, pad_id=pad_id)


@pytest.mark.parametrize("mode", ["int8", "int8-weights", "float16", "bfloat16"])
def test_quantize(mode):
    rng = np.random.default_rng(12)
    m = _classifier(rng)
    q = m.quantize(mode)
    assert isinstance(q, SequenceModel)
    assert q.lstm.config.quantization == m.lstm.quantize(mode).config.quantization
    assert m.lstm.config.quantization is None  # the original is unchanged
    ids = _ids(rng, 5, 12)
    # the head and embedding are the float ones around the quantized LSTM
    out, (h_n, _) = q.lstm(np.take(m.embedding.table, ids, axis=0))
    z = np.concatenate([h_n[-2], h_n[-1]], -1)
    for w, b, act in [(d.weight, d.bias, d.activation) for d in m.head]:
        z = _act(act, z.astype(np.float64) @ w + b)
    assert_close(q(ids), z, TOL["float32"], mode)
    assert np.max(np.abs(q(ids) - m(ids))) < 0.05  # and close to float32


def test_pickle_roundtrip():
    rng = np.random.default_rng(13)
    m = _classifier(rng, pad_id=0)
    m2 = pickle.loads(pickle.dumps(m))
    ids = _ids(rng, 3, 7, pad_id=0, lengths=[7, 2, 4])
    np.testing.assert_array_equal(m2(ids), m(ids))
    assert m2.parts == m.parts


@pytest.mark.parametrize("mode", [None, "int8", "bfloat16"])
def test_native_save_load(tmp_path, mode):
    rng = np.random.default_rng(14)
    m = _classifier(rng, pad_id=0)
    if mode:
        m = m.quantize(mode)
    path = tmp_path / "whole.safetensors"
    m.save(path)
    m2 = li.load_model(path)
    ids = _ids(rng, 3, 7, pad_id=0, lengths=[7, 2, 0])
    np.testing.assert_array_equal(m2(ids), m(ids))
    assert m2.parts == m.parts
    with pytest.raises(li.FormatError, match="embedding.table|head"):
        li.load(path)  # li.load reads an LSTM alone
    # a plain native LSTM file is a bare whole model
    m.lstm.save(tmp_path / "lstm.safetensors")
    bare = li.load_model(tmp_path / "lstm.safetensors")
    assert bare.is_bare and bare.lstm.config == m.lstm.config


def test_native_bad_whole_file(tmp_path):
    from lstm_infer.formats import safetensors_io as st

    rng = np.random.default_rng(15)
    m = _classifier(rng)
    path = tmp_path / "whole.safetensors"
    m.save(path)
    tensors, meta = st.load(path, mmap=False)
    for change in ("drop_bias", "extra", "bad_meta"):
        t, md = dict(tensors), dict(meta)
        if change == "drop_bias":
            del t["head.1.bias"]
        elif change == "extra":
            t["junk"] = np.zeros(2, np.float32)
        else:
            md["sequence_model"] = "{not json"
        bad = tmp_path / f"{change}.safetensors"
        st.save(bad, t, md)
        with pytest.raises(li.FormatError):
            li.load_model(bad)


def test_threads_give_serial_results():
    rng = np.random.default_rng(16)
    m = _classifier(rng, pad_id=0)
    batches = [_ids(rng, 4, 10, pad_id=0, lengths=rng.integers(0, 11, 4)) for _ in range(8)]
    serial = [m(b, num_threads=1) for b in batches]
    results = [None] * (4 * len(batches))
    errors = []

    def work(i):
        try:
            results[i] = m(batches[i % len(batches)], num_threads=1)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r, serial[i % len(batches)])


@pytest.mark.parametrize("head_on", ["steps", "last", "last_step"])
def test_batch_independent_bits(simd_level, head_on):
    """A sequence's result is bit-identical whatever batch it shares and wherever it sits
    in it, head included (odd sizes: rows at every alignment); where the LSTM itself is
    (tests/test_determinism.py)."""
    if simd_level == "avx512":
        pytest.xfail("AVX-512 LSTM tiles are not batch-independent yet (issue 10 item 1)")
    rng = np.random.default_rng(18)
    w = random_weights(E, 9, 2, bidirectional=True, rng=rng)
    m = _model(w, rng.uniform(-1, 1, (V, E)), _head(rng, [18, 11, 7], ["relu", "softmax"]),
               head_on, True, pad_id=0)
    lengths = rng.integers(1, 14, 33)
    ids = _ids(rng, 33, 13, pad_id=0, lengths=lengths)
    full = m(ids)
    for i in range(33):
        np.testing.assert_array_equal(m(ids[i]), full[i], err_msg=f"row {i} alone")
    for a, b in ((3, 10), (17, 33), (0, 2)):
        np.testing.assert_array_equal(m(ids[a:b]), full[a:b], err_msg=f"rows {a}:{b}")
    np.testing.assert_array_equal(m(ids[::-1])[::-1], full, err_msg="reversed batch")


def test_parts_and_repr():
    rng = np.random.default_rng(17)
    m = _classifier(rng, pad_id=0)
    kinds = [p["part"] for p in m.parts]
    assert kinds == ["embedding", "lstm", "pool", "dense", "dense"]
    assert m.parts[0]["pad_id"] == 0 and m.parts[2]["head_on"] == "last"
    assert m.config.output_size == C and m.config.input == "tokens"
    assert m.config.to_dict()["head"] == [[32, 8, "tanh"], [8, C, "softmax"]]
    assert "Embedding(13, 5, pad_id=0)" in repr(m) and "[last]" in repr(m)
