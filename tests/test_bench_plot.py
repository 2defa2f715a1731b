"""`lstm-infer bench --plot FILE.png`: a PNG when matplotlib is installed, a clear
error (before any timing) when it is not."""
import sys

import pytest

from lstm_infer.cli import main


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    assert main(["bench", "--workloads", "6x1x4x8,6x2x4x8-bi", "--no-peers", "--rounds", "2",
                 "--block-calls", "2", "--budget", "0.01", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {path}" in capsys.readouterr().err


def test_plot_without_matplotlib_fails_clearly_before_timing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    ran = []
    monkeypatch.setattr("lstm_infer.bench.run_benchmarks", lambda *a, **k: ran.append(1))
    path = tmp_path / "bench.png"
    assert main(["bench", "--workloads", "kws", "--no-peers", "--plot", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and "lstm_infer[plot]" in err
    assert not ran and not path.exists()
