#!/usr/bin/env bash
# Builds the llama-cpp-python wheel once, with the fast CPU flags, into a cache that every
# checkout on this machine shares. PyPI has only the sdist, so each install would otherwise
# compile llama.cpp again (about 6.5 minutes on 2 cores; about 2 with these flags).
set -euo pipefail
version="${LLAMA_CPP_VERSION:-0.3.36}"
wheels="${CHATLANE_WHEELS:-$HOME/.cache/chatlane/wheels}"
python="${1:-python3}"
mkdir -p "$wheels"
if ls "$wheels"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
  exit 0
fi
here="$(cd "$(dirname "$0")" && pwd)"
export CMAKE_ARGS="-DCMAKE_PROJECT_llama.cpp_INCLUDE=$here/llama_no_common.cmake -DLLAVA_BUILD=OFF \
 -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
 -DLLAMA_OPENSSL=OFF"
echo "building llama-cpp-python $version (compiles llama.cpp, a few minutes)..." >&2
"$python" -m pip wheel --quiet --no-deps "llama-cpp-python==$version" -w "$wheels"
