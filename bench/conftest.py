"""Options for the benchmark suite (run with `python -m pytest bench --benchmark-only`).

--bench-all      also run the large workloads (lat1024, tput512, asr-bi; minutes)
--bench-threads  threads per forward call for every runner (default 1)

The installed lstm_infer is the one benchmarked. ``python -m pytest`` from the
repository root puts the root on sys.path, where the source tree's
``lstm_infer/`` (without a built extension, or with a stale one) would shadow
the installed package; so the root is taken off sys.path when an lstm_infer is
importable without it (an editable install still finds this tree through its
own finder), and kept when it is not (an in-place build of this checkout).
"""
import importlib.util
import os
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _prefer_installed_lstm_infer():
    if "lstm_infer" in sys.modules:
        return

    def is_root(p):
        return os.path.abspath(p or os.curdir) == _ROOT
    if not any(is_root(p) for p in sys.path):
        return
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if not is_root(p)]
    if importlib.util.find_spec("lstm_infer") is None:
        sys.path[:] = saved  # not installed: the in-place build of this checkout


_prefer_installed_lstm_infer()


def pytest_addoption(parser):
    group = parser.getgroup("lstm_infer bench")
    group.addoption("--bench-all", action="store_true", default=False,
                    help="also run the large workloads (lat1024, tput512, asr-bi)")
    group.addoption("--bench-threads", type=int, default=1, metavar="N",
                    help="threads per forward call, for ours and the peers (default 1)")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: a large workload, run only with --bench-all")


def pytest_report_header(config):
    import lstm_infer
    return f"lstm_infer: {os.path.dirname(lstm_infer.__file__)}"


def pytest_collection_modifyitems(config, items):
    if config.getoption("--bench-all"):
        return
    skip = pytest.mark.skip(reason="large workload: run with --bench-all")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bench_threads(request):
    n = request.config.getoption("--bench-threads")
    if n < 1:
        raise pytest.UsageError(f"--bench-threads must be >= 1; got {n}")
    return n
