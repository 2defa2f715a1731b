"""Options for the benchmark suite (run with `python -m pytest bench --benchmark-only`).

--bench-all      also run the large workloads (lat1024, tput512, asr-bi; minutes)
--bench-threads  threads per forward call for every runner (default 1)
"""
import pytest


def pytest_addoption(parser):
    group = parser.getgroup("lstm_infer bench")
    group.addoption("--bench-all", action="store_true", default=False,
                    help="also run the large workloads (lat1024, tput512, asr-bi)")
    group.addoption("--bench-threads", type=int, default=1, metavar="N",
                    help="threads per forward call, for ours and the peers (default 1)")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: a large workload, run only with --bench-all")


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
