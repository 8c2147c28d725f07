#!/usr/bin/env bash
# Regenerates the Python stubs under authsvc/v1 from protos/ (or into $1, for the drift check).
set -euo pipefail
out=${1:-.}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
"$py" -m grpc_tools.protoc -Iprotos \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" --mypy_grpc_out="$out" \
  --plugin=protoc-gen-mypy_grpc="$(dirname "$py")/protoc-gen-mypy_grpc" \
  protos/authsvc/v1/*.proto
touch "$out/authsvc/v1/__init__.py"
