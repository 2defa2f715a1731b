"""lstm-infer inspect / convert / run on native files (the loaders' own tests cover
their formats through the same code path)."""
import json

import numpy as np
import pytest

import lstm_infer as li
from lstm_infer.cli import main


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "m.safetensors"
    li.LSTM.random(4, 6, num_layers=2, bidirectional=True, proj_size=3, peephole=True,
                   clip=2.0).save(p)
    return p


def test_inspect_text_and_json(model_file, capsys):
    assert main(["inspect", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "native" in out and "2 layer(s)" in out and "bidirectional" in out
    assert "proj 3" in out and "peephole" in out and "clip=2" in out
    assert main(["inspect", str(model_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    m = li.load(model_file)
    assert info["parameters"] == sum(a.size for l in m.weights for d in l for a in d.values())
    assert [l["direction"] for l in info["layers"]] == ["bidirectional"] * 2


def test_convert_and_run(model_file, tmp_path, capsys):
    out_file = tmp_path / "copy.safetensors"
    assert main(["convert", str(model_file), "-o", str(out_file)]) == 0
    m = li.load(out_file)
    x = np.random.default_rng(0).uniform(-1, 1, (7, 3, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(out_file), "--input", str(tmp_path / "x.npy"), "--output",
                 str(tmp_path / "y.npy"), "--lengths", "7,3,0",
                 "--state-output", str(tmp_path / "s.npz")]) == 0
    want, (h, c) = m(x, lengths=[7, 3, 0])
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["h_n"], h)


def test_errors_are_one_line_with_status_2(tmp_path, model_file, capsys):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 10)
    assert main(["inspect", str(bad)]) == 2
    assert "unknown format" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.zeros((5, 2, 9), np.float32))
    assert main(["run", str(model_file), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "y.npy")]) == 2
    assert "4 features" in capsys.readouterr().err
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["run", str(model_file), "--input", str(tmp_path / "obj.npy"),
                 "--output", str(tmp_path / "y.npy")]) == 2
    assert "pickle" in capsys.readouterr().err.lower()


@pytest.mark.parametrize("mode", ["int8", "bf16", "int8-weights", "float16-weights", "bfloat16-weights"])
def test_convert_quantize(model_file, tmp_path, capsys, mode):
    out_file = tmp_path / "q.safetensors"
    assert main(["convert", str(model_file), "-o", str(out_file), "--quantize", mode]) == 0
    q = li.load(out_file)
    assert q.config.quantization == mode
    x = np.random.default_rng(0).uniform(-1, 1, (5, 2, 4)).astype(np.float32)
    np.testing.assert_array_equal(q(x)[0], li.load(model_file).quantize(mode)(x)[0])
    assert main(["inspect", str(out_file)]) == 0
    assert f"quantized {mode}" in capsys.readouterr().out
