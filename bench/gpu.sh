#!/usr/bin/env bash
# Runs alignflow's stage benchmarks on an NVIDIA GPU through GoMLX's XLA
# backend, and the PyTorch reference on the same GPU, on the same fixtures,
# and prints them side by side (bench/README.md, "GPU").
#
#   bench/gpu.sh --build                  # here, with Go and a C compiler: build the harness with -tags xla
#   bench/gpu.sh [--quick] [--json FILE]  # on the GPU machine: run both and compare
#
#   --build         build bench/bin/harness-xla (cgo, -tags xla) and stop; the GPU machine
#                   needs no Go: carry bench/bin there
#   --quick         few steps per stage
#   --json FILE     also write the comparison as JSON
#   --dir DIR       keep fixtures and results in DIR (default: a temporary directory)
#   --plugin PATH   the PJRT plugin (default: the one Python's jax-cuda13-pjrt ships)
#
# Environment: PYTHON names a python3 with a CUDA build of torch (default python3).
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/bench/bin/harness-xla"
BUILD=0
QUICK=0
JSON=""
DIR=""
PLUGIN=""
while [[ $# -gt 0 ]]; do
	case "$1" in
	--build) BUILD=1 ;;
	--quick) QUICK=1 ;;
	--json) JSON="${2:?--json needs a file}"; shift ;;
	--dir) DIR="${2:?--dir needs a directory}"; shift ;;
	--plugin) PLUGIN="${2:?--plugin needs a path}"; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "gpu.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

if [[ $BUILD -eq 1 ]]; then
	mkdir -p "$(dirname "$BIN")"
	(cd "$ROOT" && CGO_ENABLED=1 go build -tags xla -o "$BIN" ./bench/harness)
	echo "built $BIN (run bench/gpu.sh on the GPU machine with bench/bin carried along)"
	exit 0
fi

if [[ ! -x "$BIN" ]]; then
	if command -v go >/dev/null 2>&1; then
		(cd "$ROOT" && mkdir -p bench/bin && CGO_ENABLED=1 go build -tags xla -o "$BIN" ./bench/harness)
	else
		echo "gpu.sh: $BIN is missing and there is no Go here: run 'bench/gpu.sh --build' where Go is and bring bench/bin along" >&2
		exit 1
	fi
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
	echo "gpu.sh: $PY has no CUDA-enabled torch, or no GPU is visible (nvidia-smi)" >&2
	exit 1
fi
if [[ -z "$PLUGIN" ]]; then
	PLUGIN="$("$PY" - <<'EOF' 2>/dev/null || true
import glob, os
import jax_plugins
for d in jax_plugins.__path__:
    for p in sorted(glob.glob(os.path.join(d, "xla_cuda*", "xla_cuda_plugin.so"))):
        print(p)
        raise SystemExit
EOF
)"
fi
if [[ -z "$PLUGIN" || ! -f "$PLUGIN" ]]; then
	echo "gpu.sh: no PJRT CUDA plugin found (pip's jax-cuda13-pjrt ships jax_plugins/xla_cuda13/xla_cuda_plugin.so); give one with --plugin" >&2
	exit 1
fi
# go-xla's CUDA checks look for an XLA_FLAGS path of its own; the plugin from
# the Python wheel finds CUDA's libraries through the wheel's nvidia packages.
export GOPJRT_CUDA_CHECKS=0
SITE="$(dirname "$(dirname "$(dirname "$PLUGIN")")")"
for lib in "$SITE"/nvidia/*/lib; do
	[[ -d "$lib" ]] && LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"

CLEAN=()
if [[ -n "$DIR" ]]; then
	DIR="$(abspath "$DIR")"
	mkdir -p "$DIR"
else
	DIR="$(mktemp -d "${TMPDIR:-/tmp}/alignflow-gpu.XXXXXX")"
	CLEAN+=("$DIR")
fi
trap '[[ ${#CLEAN[@]} -eq 0 ]] || rm -rf "${CLEAN[@]}"' EXIT

quick_flag=()
[[ $QUICK -eq 1 ]] && quick_flag=(-quick)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "== alignflow (GoMLX XLA backend, plugin $PLUGIN)"
"$BIN" -backend "xla:$PLUGIN" -out "$DIR" "${quick_flag[@]}"
echo "== pytorch ($PY, cuda)"
"$PY" "$ROOT/bench/pytorch/reference.py" --dir "$DIR" --device cuda
json_flag=()
[[ -n "$JSON" ]] && json_flag=(--json "$(abspath "$JSON")")
"$PY" "$ROOT/bench/compare.py" --dir "$DIR" "${json_flag[@]}"
