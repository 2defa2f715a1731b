"""batch_first everywhere: ``li.load(..., batch_first=)``, ``--batch-first`` /
``--time-major`` on the command line, what each format records, and the errors that
catch (B, T, I) data fed to a time-major model (or the reverse) when the shapes give it
away -- ``lengths`` or a state whose batch size is x's other axis. Each message names
batch_first.

The case behind the issue: a ``batch_first=True`` torch classifier saved as a state
dict, loaded with ``li.load("m.pt")`` (time-major: a state dict cannot say), fed
batch-first data with lengths.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import lstm_infer as li
from conftest import assert_close
from lstm_infer.cli import main
from lstm_infer.tolerances import TOL_FRAMEWORK

TOL = TOL_FRAMEWORK["float32"]
B, T, I, H = 3, 7, 5, 6


def _x(batch_first, seed=0, b=B, t=T):
    shape = (b, t, I) if batch_first else (t, b, I)
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.fixture
def classifier(tmp_path):
    """A torch classifier with a batch_first LSTM, saved as its state dict."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(I, H, num_layers=2, batch_first=True)
            self.fc = torch.nn.Linear(H, 2)

    net = Net().eval()
    path = tmp_path / "m.pt"
    torch.save(net.state_dict(), path)
    return torch, net, path


# ---------------------------------------------------------------------------- errors
def test_the_issue_batch_first_input_to_a_time_major_load_is_an_error(classifier):
    torch, net, path = classifier
    m = li.load(path)  # the state dict cannot say: time-major, and inspect says so
    assert not m.config.batch_first
    x = _x(True)  # (B, T, I), as the classifier was trained
    lengths = [7, 5, 2]
    with pytest.raises(ValueError, match=r"lengths must have shape \(B,\) = \(7,\); got "
                                         r"\(3,\); this model is time-major") as e:
        m(x, lengths=lengths)
    assert "batch_first=True" in str(e.value) and "x.transpose(1, 0, 2)" in str(e.value)
    h0 = np.zeros((2, B, H), np.float32)
    with pytest.raises(ValueError, match="h0 must have shape .*; got \\(2, 3, 6\\); this "
                                         "model is time-major.*batch_first=True"):
        m(x, state=(h0, h0))
    # loaded as it was built, it computes what torch does
    m = li.load(path, prefix="rnn", batch_first=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), lengths,
                                                     batch_first=True)
    with torch.inference_mode():
        y, (h, c) = net.rnn(packed)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=T)
    out, (h_n, c_n) = m(x, lengths=lengths)
    assert_close(out, y.numpy(), TOL, "out")
    assert_close(h_n, h.numpy(), TOL, "h_n")
    assert_close(c_n, c.numpy(), TOL, "c_n")


def test_time_major_input_to_a_batch_first_model_is_an_error():
    m = li.LSTM.random(I, H, batch_first=True)
    x = _x(False)  # (T, B, I): read as B=7 sequences of T=3 steps
    with pytest.raises(ValueError, match="this model is batch_first.*batch_first=False"):
        m(x, lengths=[7, 7, 7])
    with pytest.raises(ValueError, match="c0 must have shape.*this model is batch_first"):
        m(x, state=(np.zeros((1, T, H), np.float32), np.zeros((1, B, H), np.float32)))


def test_layer_lists_of_a_stack_of_other_sizes_say_it_too():
    m = li.LSTM([li.LSTM.random(I, 6).weights[0], li.LSTM.random(6, 4).weights[0]])
    x = _x(True)
    h0 = [np.zeros((1, B, 6), np.float32), np.zeros((1, B, 4), np.float32)]
    with pytest.raises(ValueError, match=r"h0\[0\] must have shape.*this model is time-major"):
        m(x, state=(h0, h0))


@pytest.mark.parametrize("lengths,state_b", [([1, 2, 3, 4], None), (None, 4)])
def test_no_hint_when_the_size_is_not_the_other_axis(lengths, state_b):
    m = li.LSTM.random(I, H)
    state = None if state_b is None else (np.zeros((1, state_b, H), np.float32),) * 2
    with pytest.raises(ValueError) as e:
        m(_x(True), lengths=lengths, state=state)
    assert "batch_first" not in str(e.value)


def test_square_inputs_cannot_be_told_apart():
    # T == B: every shape fits both readings; the layout is the caller's to get right
    m = li.LSTM.random(I, H)
    x = _x(True, b=4, t=4)
    m(x, lengths=[4, 3, 2, 1])


# ---------------------------------------------------------------------------- li.load
def _same_outputs(a, b, x):
    """a (layout of x) and b (the other layout) compute the same thing."""
    out_a = a(x)[0]
    out_b = b(x.transpose(1, 0, 2))[0].transpose(1, 0, 2)
    np.testing.assert_array_equal(out_a, out_b)


def test_load_batch_first_on_every_format(tmp_path):
    m = li.LSTM.random(I, H, num_layers=2, bidirectional=True)
    files = {"native": tmp_path / "m.safetensors", "pytorch": tmp_path / "m.pt",
             "pytorch-safetensors": tmp_path / "t.safetensors"}
    m.save(files["native"])
    m.to_torch(files["pytorch"])
    m.to_torch(files["pytorch-safetensors"])
    for fmt, p in files.items():
        assert li.detect_format(p) == fmt
        assert li.load(p).config.batch_first is False
        bf = li.load(p, batch_first=True)
        assert bf.config.batch_first is True
        _same_outputs(bf, m, _x(True))
        assert li.load(p, batch_first=False).config == m.config


def test_load_follows_what_onnx_and_keras_record_unless_told(tmp_path):
    pytest.importorskip("onnx")
    m = li.LSTM.random(I, H, num_layers=2, batch_first=True)
    m.to_onnx(tmp_path / "m1.onnx", layout=1)  # ONNX layout attribute = 1
    assert li.load(tmp_path / "m1.onnx").config.batch_first is True
    tm = li.load(tmp_path / "m1.onnx", batch_first=False)
    assert tm.config.batch_first is False
    _same_outputs(m, tm, _x(True))


def test_load_keras_batch_first_override(tmp_path):
    pytest.importorskip("h5py")
    m = li.LSTM.random(I, H, bidirectional=True, seed=4)
    m.to_keras(tmp_path / "m.keras")
    k = li.load(tmp_path / "m.keras")
    assert k.config.batch_first is True  # Keras models are batch-first
    tm = li.load(tmp_path / "m.keras", batch_first=False)
    assert tm.config == m.config
    _same_outputs(k, tm, _x(True))


def test_isolated_load_takes_batch_first(tmp_path):
    m = li.LSTM.random(I, H)
    m.to_torch(tmp_path / "m.pt")
    bf = li.load(tmp_path / "m.pt", batch_first=True, isolated=True)
    assert bf.config.batch_first is True
    _same_outputs(bf, m, _x(True))


@pytest.mark.parametrize("bad", ["yes", 1, 0.0])
def test_load_batch_first_must_be_a_bool(tmp_path, bad):
    li.LSTM.random(I, H).save(tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="batch_first must be True, False or None"):
        li.load(tmp_path / "m.safetensors", batch_first=bad)


# ---------------------------------------------------------------------------- CLI
def test_cli_run_batch_first(classifier, tmp_path, capsys):
    torch, net, path = classifier
    x = _x(True)
    np.save(tmp_path / "x.npy", x)
    whole = ["run", str(path), "--input", str(tmp_path / "x.npy"), "--output",
             str(tmp_path / "y.npy"), "--lengths", "7,5,2"]
    args = whole[:2] + ["--lstm-only"] + whole[2:]
    for a in (whole, args):  # time-major by default: the lengths give it away
        assert main(a) == 2
        err = capsys.readouterr().err
        assert "this model is time-major" in err and "--batch-first" in err
    assert main(args + ["--batch-first"]) == 0
    m = li.load(path, batch_first=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), m(x, lengths=[7, 5, 2])[0])
    with torch.inference_mode():
        y, _ = net.rnn(torch.from_numpy(x))
    assert main(args[:-2] + ["--batch-first"]) == 0
    assert_close(np.load(tmp_path / "y.npy"), y.numpy(), TOL, "out vs torch")


def test_cli_time_major_overrides_keras(tmp_path, capsys):
    pytest.importorskip("h5py")
    m = li.LSTM.random(I, H, seed=2)
    m.to_keras(tmp_path / "m.keras")
    x = _x(False)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(tmp_path / "m.keras"), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "y.npy"), "--time-major"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), m(x)[0])


def test_cli_convert_batch_first_is_recorded(classifier, tmp_path, capsys):
    _, _, path = classifier
    out = tmp_path / "m.safetensors"
    assert main(["convert", str(path), "-o", str(out), "--prefix", "rnn",
                 "--batch-first"]) == 0
    assert li.load(out).config.batch_first is True  # the native format records it
    # back to torch: the layout is lost again, and convert says so
    assert main(["convert", str(out), "-o", str(tmp_path / "back.pt")]) == 0
    assert "do not record batch_first" in capsys.readouterr().err


def test_cli_inspect_says_when_the_layout_is_not_recorded(classifier, tmp_path, capsys):
    _, _, path = classifier
    assert main(["inspect", str(path), "--prefix", "rnn"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"layout: not recorded .*loaded time-major .*--batch-first", out)
    assert main(["inspect", str(path), "--prefix", "rnn", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout_recorded"] is False and info["batch_first"] is False
    assert main(["inspect", str(path), "--prefix", "rnn", "--batch-first"]) == 0
    assert "loaded as batch_first" in capsys.readouterr().out
    native = tmp_path / "m.safetensors"
    li.LSTM.random(I, H, batch_first=True).save(native)
    assert main(["inspect", str(native), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout_recorded"] is True and info["batch_first"] is True
    assert main(["inspect", str(native)]) == 0
    assert "not recorded" not in capsys.readouterr().out
