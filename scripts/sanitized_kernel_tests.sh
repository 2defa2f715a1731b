#!/usr/bin/env bash
# Build the extension twice more, with Cython bounds checks (LSTM_INFER_DEBUG=1) and with
# AddressSanitizer (LSTM_INFER_ASAN=1), each in a scratch copy of the tree, and run the
# kernel tests against each build. Run from the repository root inside a venv that has
# the test extra (`pip install -e ".[test]"`); .ci/run calls it.
#   scripts/sanitized_kernel_tests.sh [debug|asan ...]   (default: both)
set -euo pipefail
root=$(pwd)
# the tests that drive the kernels (every ISA path, dtype, layout, split and quantized mode);
# the loader tests run Python only and stay in the main run
kernel_tests="tests/test_model.py tests/test_layer_options.py tests/test_split.py
  tests/test_strides.py tests/test_stream.py tests/test_threads.py tests/test_quantize.py
  tests/test_invariants.py tests/test_hostile_inputs.py tests/test_unbiased_gates.py
  tests/test_kernels.py tests/test_determinism.py"
python -m pip install -q "Cython>=3.0" "setuptools>=64" >/dev/null

for variant in "${@:-debug asan}"; do
  for v in $variant; do
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cp -r "$root/lstm_infer" "$root/tests" "$root/setup.py" "$root/pyproject.toml" "$work/"
    rm -f "$work"/lstm_infer/*.so "$work"/lstm_infer/_kernels.c
    cd "$work"
    env=()
    case $v in
      debug) export LSTM_INFER_DEBUG=1 ;;
      asan)  export LSTM_INFER_ASAN=1
             env=(LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
                  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1") ;;
      *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
    echo "== $v build"
    python setup.py -q build_ext --inplace >build.log 2>&1 || { cat build.log; exit 1; }
    unset LSTM_INFER_DEBUG LSTM_INFER_ASAN
    # the scratch copy must be the lstm_infer the tests import, not the installed one
    env "${env[@]}" PYTHONPATH="$work" python -c \
      "import lstm_infer._kernels as k, sys; assert k.__file__.startswith('$work'), k.__file__"
    if [ "$v" = asan ]; then  # the runtime is really there (else the run proves nothing)
      env "${env[@]}" python -c "import ctypes; ctypes.CDLL(None)['__asan_init']"
      nm -D "$work"/lstm_infer/_kernels*.so | grep -q __asan_report || { echo "not instrumented"; exit 1; }
    fi
    echo "== $v kernel tests"
    # shellcheck disable=SC2086
    env "${env[@]}" PYTHONPATH="$work" python -m pytest $kernel_tests -q -p no:cacheprovider -x
    cd "$root"
    rm -rf "$work"
    trap - EXIT
  done
done
