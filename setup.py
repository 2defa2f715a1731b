"""Build the Cython/C kernels.

Environment switches (read at build time):
  LSTM_INFER_DEBUG=1   Cython bounds/wraparound checks on, -O0 -g (for hunting segfaults).
  LSTM_INFER_ASAN=1    AddressSanitizer (-fsanitize=address, -O1 -g); run the tests with
                       LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0
                       (.ci/run does, on the kernel tests).
  LSTM_INFER_NATIVE=1  add -march=native (NOT the default: wheels must run on any x86-64;
                       the SIMD kernels are compiled per ISA with target attributes and
                       picked at run time from the CPU features).
"""
import glob
import os
import sys

import numpy

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("LSTM_INFER_DEBUG", "") not in ("", "0")
native = os.environ.get("LSTM_INFER_NATIVE", "") not in ("", "0")
asan = os.environ.get("LSTM_INFER_ASAN", "") not in ("", "0")

compile_args = ["-O0", "-g"] if debug else ["-O1", "-g"] if asan else ["-O3"]
# No -ffast-math: it would let the compiler break the NaN checks and the exp range reduction.
compile_args += ["-fopenmp", "-fno-math-errno", "-Wno-unused-function"]
if native:
    compile_args.append("-march=native")
link_args = ["-fopenmp"]
if asan:
    compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer"]
    link_args += ["-fsanitize=address"]
if sys.platform == "darwin":  # Apple clang has no -fopenmp; the library then runs one thread per call
    compile_args = [a for a in compile_args if a != "-fopenmp"]
    link_args = []

ext = Extension(
    "lstm_infer._kernels",
    ["lstm_infer/_kernels.pyx"],
    include_dirs=["lstm_infer/_simd", numpy.get_include()],
    # the C kernels live in headers: changing them must rebuild the extension
    depends=sorted(glob.glob("lstm_infer/_simd/*.h")) + ["lstm_infer/_kernels.pxd"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": True,
}

setup(ext_modules=cythonize([ext], compiler_directives=directives))
