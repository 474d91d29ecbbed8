#!/usr/bin/env bash
# Runs alignflow's benchmark harness and the PyTorch reference on the same
# fixtures and prints them side by side. See bench/README.md.
#
#   bench/compare.sh [--quick] [--model M] [--backend B] [--json FILE] [--repeat N] [--dir DIR] [--threads N] [--blas-threads N]
#   bench/compare.sh --matmul [--json FILE] [--dir DIR] [--threads N] [--blas-threads N]
#
#   --quick           few steps per stage (under 3 minutes on 2 cores)
#   --model M         smollm2-135m: a model of SmolLM2-135M's shape instead of the bundled one (minutes per run)
#   --backend B       alignflow's GoMLX backend: go (the default: matrix products on model/matmul) or go-stock (GoMLX's pure-Go backend)
#   --matmul          time model/matmul's Mul next to torch.matmul at the 135M model's shapes instead (about a minute)
#   --json FILE       also write {"<stage>": {"alignflow_s", "pytorch_s", "ratio", ...}, ...}
#   --repeat N        run both N times, alternating; report medians over the runs (default 1)
#   --dir DIR         keep fixtures and results in DIR (DIR/runK with --repeat; default: a temporary directory, removed)
#   --threads N       torch intra-op threads (default 1)
#   --blas-threads N  OpenBLAS threads (default 2); keep threads x blas-threads = cores
#
# Environment: PYTHON names a python3 with torch (default: /usr/bin/python3, then python3).
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
MODEL=""
MATMUL=0
BACKEND=go
REPEAT=1
JSON=""
DIR=""
THREADS=1
BLAS_THREADS=2
while [[ $# -gt 0 ]]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--model) MODEL="${2:?--model needs a name}"; shift ;;
	--model=*) MODEL="${1#--model=}" ;;
	--matmul) MATMUL=1 ;;
	--backend) BACKEND="${2:?--backend needs a name}"; shift ;;
	--backend=*) BACKEND="${1#--backend=}" ;;
	--json) JSON="${2:?--json needs a file}"; shift ;;
	--json=*) JSON="${1#--json=}" ;;
	--repeat) REPEAT="${2:?--repeat needs a number}"; shift ;;
	--dir) DIR="${2:?--dir needs a directory}"; shift ;;
	--dir=*) DIR="${1#--dir=}" ;;
	--threads) THREADS="${2:?--threads needs a number}"; shift ;;
	--blas-threads) BLAS_THREADS="${2:?--blas-threads needs a number}"; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "compare.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
if ! [[ "$REPEAT" =~ ^[1-9][0-9]*$ ]]; then
	echo "compare.sh: --repeat needs a positive number, got $REPEAT" >&2
	exit 2
fi
# Paths given relative to the caller's directory.
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[[ -n "$JSON" ]] && JSON="$(abspath "$JSON")"

# A python3 that has torch.
PY=""
for cand in ${PYTHON:-} /usr/bin/python3 python3; do
	if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import torch' >/dev/null 2>&1; then
		PY="$cand"
		break
	fi
done
if [[ -z "$PY" ]]; then
	cat >&2 <<'EOF'
compare.sh: PyTorch is missing (no python3 here can `import torch`).
Install it (Debian/Ubuntu), with OpenBLAS so matrix products are not ~20x slower:
    apt-get install python3-torch libopenblas0-pthread
or point PYTHON at a python3 that has torch.
EOF
	exit 1
fi

CLEAN=()
if [[ -n "$DIR" ]]; then
	DIR="$(abspath "$DIR")"
	mkdir -p "$DIR"
else
	DIR="$(mktemp -d "${TMPDIR:-/tmp}/alignflow-bench.XXXXXX")"
	CLEAN+=("$DIR")
fi
BIN="$(mktemp -d "${TMPDIR:-/tmp}/alignflow-harness.XXXXXX")"
CLEAN+=("$BIN")
trap 'rm -rf "${CLEAN[@]}"' EXIT

# CPU other processes use right now (cores, over one second): on 2 cores any
# other load skews the timings. Each stage also records it (other_cpu_cores).
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat 2>/dev/null || echo 0; }
b0="$(busy)"
sleep 1
b1="$(busy)"
if awk -v a="$b0" -v b="$b1" 'BEGIN { exit !((b - a) / 100 > 0.2) }'; then
	echo "compare.sh: warning: other processes are using $(awk -v a="$b0" -v b="$b1" 'BEGIN { printf "%.1f", (b - a) / 100 }') cores; the timings will be skewed" >&2
fi

if [[ $MATMUL -eq 1 ]]; then
	echo "== alignflow matmul"
	(cd "$ROOT" && go run ./bench/matmul -out "$DIR")
	echo "== pytorch matmul ($PY, $THREADS torch thread(s) x $BLAS_THREADS OpenBLAS thread(s))"
	"$PY" "$ROOT/bench/pytorch/matmul.py" --dir "$DIR" --threads "$THREADS" --blas-threads "$BLAS_THREADS"
	json_flag=()
	[[ -n "$JSON" ]] && json_flag=(--json "$JSON")
	"$PY" "$ROOT/bench/matmul_table.py" --dir "$DIR" "${json_flag[@]}"
	exit 0
fi

echo "== building bench/harness"
(cd "$ROOT" && go build -o "$BIN/harness" ./bench/harness)

harness_flags=(-backend "$BACKEND")
[[ $QUICK -eq 1 ]] && harness_flags+=(-quick)
[[ -n "$MODEL" ]] && harness_flags+=(-model "$MODEL")
dirs=()
for ((run = 1; run <= REPEAT; run++)); do
	out="$DIR"
	if [[ $REPEAT -gt 1 ]]; then
		out="$DIR/run$run"
		echo "== run $run of $REPEAT"
	fi
	echo "== alignflow (backend $BACKEND)"
	"$BIN/harness" -out "$out" "${harness_flags[@]}"
	echo "== pytorch ($PY, $THREADS torch thread(s) x $BLAS_THREADS OpenBLAS thread(s))"
	"$PY" "$ROOT/bench/pytorch/reference.py" --dir "$out" --threads "$THREADS" --blas-threads "$BLAS_THREADS"
	dirs+=(--dir "$out")
done

json_flag=()
[[ -n "$JSON" ]] && json_flag=(--json "$JSON")
"$PY" "$ROOT/bench/compare.py" "${dirs[@]}" "${json_flag[@]}"
