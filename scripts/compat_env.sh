#!/usr/bin/env bash
# A second, small environment with Colab's widget stack (ipywidgets 7.7 on ipykernel 6) for the compatibility
# tests of the form code: tests/test_colab_compat.py creates it on first use and reuses it afterwards.
#
#   bash scripts/compat_env.sh [TARGET]     # default TARGET: .venv-compat; prints TARGET/bin/python
#
# It holds only what `helpers.ui` and the toy task's Generate path import (no torch, no diffusers), plus the
# project itself (editable, --no-deps). Packages come through uv, so a second run copies from uv's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN=${VENV:-.venv}
TARGET=${1:-.venv-compat}
UV="$MAIN/bin/uv"
[ -x "$UV" ] || UV=$(command -v uv || true)
if [ -z "$UV" ]; then
  echo "uv not found (it comes with scripts/install.sh)" >&2
  exit 1
fi
PYTHON="$MAIN/bin/python"
PACKAGES=("ipywidgets==7.7.*" "ipykernel<7" numpy pillow mediapy tqdm)

# One builder at a time (two test sessions may start together); the lock lives in the main environment.
exec 9>"$MAIN/.compat-env.lock"
flock 9

# Rebuild only when this recipe or the Python it is built on changed.
want="$(sha256sum "$0" | cut -c1-16) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [ -x "$TARGET/bin/python" ] && [ "$(cat "$TARGET/.compat-stamp" 2>/dev/null)" = "$want" ]; then
  echo "$TARGET/bin/python"
  exit 0
fi
rm -rf "$TARGET"
"$UV" venv --quiet --python "$PYTHON" "$TARGET" >&2
"$UV" pip install --quiet --python "$TARGET/bin/python" "${PACKAGES[@]}" >&2
"$UV" pip install --quiet --python "$TARGET/bin/python" --no-deps -e . >&2
echo "$want" > "$TARGET/.compat-stamp"
echo "$TARGET/bin/python"
