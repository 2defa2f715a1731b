"""`lstm-infer run` / `inspect` on whole models: token ids in, the head's output out,
the parts listed; the LSTM alone with --lstm-only or when the parts cannot run; clear
errors for features given to a token model. torch files (vs torch's forward) and native
whole-model files (vs the in-memory model)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import lstm_infer as li
from conftest import TOL_FRAMEWORK, assert_close
from lstm_infer.cli import main
from lstm_infer.sequence_model import Dense, Embedding, SequenceModel

TOL = TOL_FRAMEWORK["float32"]
V, E, H, C = 30, 6, 8, 4
SPEC = {"batch_first": True, "head_on": "last", "activation": "softmax"}


@pytest.fixture
def torch_file(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Clf(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, E)
            self.rnn = nn.LSTM(E, H, num_layers=2, batch_first=True)
            self.fc = nn.Linear(H, C)

        def forward(self, x):
            _, (h, _) = self.rnn(self.emb(x))
            return torch.softmax(self.fc(h[-1]), -1)

    torch.manual_seed(0)
    model = Clf().eval()
    path = tmp_path / "clf.pt"
    torch.save(model.state_dict(), path)
    ids = np.random.default_rng(0).integers(0, V, (5, 9))
    np.save(tmp_path / "ids.npy", ids)
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).numpy()
    return path, tmp_path / "ids.npy", want


def test_run_torch_file_with_spec(torch_file, tmp_path, capsys):
    path, ids, want = torch_file
    out = tmp_path / "y.npy"
    assert main(["run", str(path), "--input", str(ids), "--output", str(out),
                 "--spec", json.dumps(SPEC)]) == 0
    assert_close(np.load(out), want, TOL)
    assert "SequenceModel" in capsys.readouterr().out
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    assert main(["run", str(path), "--input", str(ids), "--output", str(out),
                 "--spec", "@" + str(tmp_path / "spec.json"), "--threads", "1"]) == 0
    assert_close(np.load(out), want, TOL)


def test_inspect_lists_the_parts(torch_file, capsys):
    path = torch_file[0]
    assert main(["inspect", str(path), "--spec", json.dumps(SPEC)]) == 0
    text = capsys.readouterr().out
    for line in ("whole model", "embedding emb: 30 tokens x 6", "lstm rnn:",
                 "head on last", "dense fc: 8 -> 4, softmax"):
        assert line in text, (line, text)
    assert main(["inspect", str(path), "--json", "--spec", json.dumps(SPEC)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [p["part"] for p in info["whole_model"]["parts"]] == \
        ["embedding", "lstm", "pool", "dense"]


def test_lstm_only_and_errors(torch_file, tmp_path, capsys):
    path, ids, _ = torch_file
    feats = tmp_path / "x.npy"
    np.save(feats, np.random.default_rng(1).uniform(-1, 1, (5, 9, E)).astype(np.float32))
    out = tmp_path / "y.npy"
    # features to a token model: a clear error pointing at --lstm-only
    assert main(["run", str(path), "--input", str(feats), "--output", str(out),
                 "--spec", json.dumps(SPEC)]) == 2
    assert "--lstm-only" in capsys.readouterr().err
    assert main(["run", str(path), "--input", str(feats), "--output", str(out),
                 "--lstm-only", "--batch-first", "--state-output", str(tmp_path / "s.npz")]) == 0
    lstm = li.from_torch(str(path), batch_first=True)
    np.testing.assert_array_equal(np.load(out), lstm(np.load(feats))[0])
    assert main(["run", str(path), "--input", str(ids), "--output", str(out),
                 "--spec", json.dumps(SPEC), "--state-output", str(tmp_path / "s.npz")]) == 2
    assert "--state-output" in capsys.readouterr().err
    assert main(["run", str(path), "--input", str(ids), "--output", str(out),
                 "--spec", '{"head_on": "mean"}']) == 2
    assert main(["run", str(path), "--input", str(ids), "--output", str(out),
                 "--spec", "[1]"]) == 2


def test_parts_that_cannot_run_fall_back_to_the_lstm(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    sd = nn.ModuleDict({"rnn": nn.LSTM(E, H), "norm": nn.LayerNorm(H)}).state_dict()
    path = tmp_path / "odd.pt"
    torch.save(sd, path)
    x = np.random.default_rng(2).uniform(-1, 1, (7, 3, E)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ids.npy", np.zeros((3, 7), dtype=np.int64))
    out = tmp_path / "y.npy"
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--output",
                 str(out)]) == 0
    assert "running the LSTM alone" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(out), li.load(path)(x)[0])
    assert main(["run", str(path), "--input", str(tmp_path / "ids.npy"), "--output",
                 str(out)]) == 2
    assert "norm" in capsys.readouterr().err
    assert main(["inspect", str(path)]) == 0
    assert "whole model: no" in capsys.readouterr().out


def test_native_whole_model_file(tmp_path, capsys):
    rng = np.random.default_rng(3)
    lstm = li.LSTM.random(E, H, num_layers=2, bidirectional=True, batch_first=True)
    m = SequenceModel(lstm, embedding=Embedding(rng.uniform(-1, 1, (V, E)), pad_id=0),
                      head=[Dense(rng.uniform(-1, 1, (2 * H, C)), np.zeros(C), "softmax")],
                      head_on="steps")
    path = tmp_path / "whole.safetensors"
    m.save(path)
    ids = rng.integers(1, V, (3, 6))
    ids[1, 3:] = 0
    np.save(tmp_path / "ids.npy", ids)
    out = tmp_path / "y.npy"
    assert main(["run", str(path), "--input", str(tmp_path / "ids.npy"), "--output",
                 str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), m(ids))
    assert main(["inspect", str(path)]) == 0
    assert "embedding" in capsys.readouterr().out
    # and a plain LSTM file runs as before: out (and the state) of the LSTM
    lstm.save(tmp_path / "lstm.safetensors")
    x = rng.uniform(-1, 1, (3, 6, E)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(tmp_path / "lstm.safetensors"), "--input", str(tmp_path / "x.npy"),
                 "--output", str(out), "--state-output", str(tmp_path / "s.npz")]) == 0
    np.testing.assert_array_equal(np.load(out), lstm(x)[0])
