#!/usr/bin/env bash
# Compiles the TensorRT shim (src/backend/tensorrt/shim.cpp) against one TensorRT's headers,
# with the flags the `tensorrt` cargo feature uses (src/backend/tensorrt/cxxflags), and checks
# that the object needs no TensorRT or CUDA symbol at link time (they are found with dlopen).
#
#   scripts/check-tensorrt.sh TRT_INCLUDE_DIR CUDA_INCLUDE_DIR
#
# TRT_INCLUDE_DIR holds NvInfer.h and NvOnnxParser.h (for 8.x, NvOnnxParser.h comes from
# onnx/onnx-tensorrt at the matching branch); CUDA_INCLUDE_DIR holds cuda_runtime_api.h, cuda.h
# and crt/ (PyPI nvidia-cuda-runtime-cu12 plus crt/ from nvidia-cuda-nvcc-cu12 will do).
# Exit 0 when the shim compiles clean and links nothing of TensorRT or CUDA.
set -euo pipefail
if [ $# -ne 2 ]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
trt_include=$1
cuda_include=$2
here=$(cd "$(dirname "$0")/.." && pwd)
for f in "$trt_include/NvInfer.h" "$trt_include/NvOnnxParser.h" "$cuda_include/cuda_runtime_api.h" "$cuda_include/cuda.h"; do
  [ -f "$f" ] || { echo "check-tensorrt: $f not found" >&2; exit 2; }
done
cxx=${CXX:-c++}
mapfile -t flags < "$here/src/backend/tensorrt/cxxflags"
# "10.3" or "11.1" (11.x spells the numbers TRT_MAJOR_ENTERPRISE...).
version=$(printf '#include <NvInferVersion.h>\nNV_TENSORRT_MAJOR.NV_TENSORRT_MINOR\n' |
  "${CXX:-c++}" -E -P -isystem "$trt_include" -x c++ - 2>/dev/null | tail -n 1 | tr -d ' ')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$cxx" "${flags[@]}" -isystem "$trt_include" -isystem "$cuda_include" -c "$here/src/backend/tensorrt/shim.cpp" -o "$out/shim.o"
# Undefined symbols must be the C/C++ runtime's and dlopen's, never TensorRT's or CUDA's.
if nm -u -C "$out/shim.o" | grep -E 'nvinfer1::|nvonnxparser::|_INTERNAL|getInferLibVersion|(^|[^a-z])cuda[A-Z]|(^|[^a-z])cu[A-Z][a-zA-Z]+' >&2; then
  echo "check-tensorrt: the shim links TensorRT or CUDA symbols (above); call them through dlsym" >&2
  exit 1
fi
echo "shim.cpp compiles against TensorRT ${version:-?} headers ($trt_include) with: $cxx ${flags[*]}"
