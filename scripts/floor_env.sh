#!/usr/bin/env bash
# A fresh environment at this project's version floors: every `name>=X` line of requirements.txt installed as
# exactly `name==X` (diffusers, transformers, huggingface_hub, accelerate, safetensors, peft, numpy, ipywidgets...).
# torch/torchvision come at requirements-dev.txt's versions (Colab brings its own; they are never replaced).
#
#   bash scripts/floor_env.sh full  [TARGET]   # default .venv-floor: also every other requirement (latest) and the
#                                              # test tools, for the fast suite (PYTHONPATH=. pytest)
#   bash scripts/floor_env.sh colab [TARGET]   # default .venv-floor-colab: only what a Colab runtime already has
#                                              # (the bounded packages Colab ships at their floors, torch, pillow, tqdm, gdown,
#                                              # ipykernel 6), no helpers: the notebooks' install cell adds the rest
#
# Always built from scratch (a few seconds: packages come from uv's cache); prints TARGET/bin/python last.
# tests/test_floor.py calls it once per test session; `make test-floor` runs those tests alone.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}
case "$MODE" in
  full) TARGET=${2:-.venv-floor} ;;
  colab) TARGET=${2:-.venv-floor-colab} ;;
  *) echo "usage: $0 full|colab [TARGET]" >&2; exit 2 ;;
esac
MAIN=${VENV:-.venv}
UV="$MAIN/bin/uv"
[ -x "$UV" ] || UV=$(command -v uv || true)
[ -n "$UV" ] || { echo "uv not found (it comes with scripts/install.sh)" >&2; exit 1; }
PYTHON="$MAIN/bin/python"

floors=$(sed -nE 's/^([A-Za-z0-9_.-]+)>=([^,;[:space:]]+)[[:space:]]*$/\1==\2/p' requirements.txt)
# bounded requirements a Colab runtime does not ship: the colab environment leaves them to the install cell
colab_lacks='^(controlnet-aux)=='
colab_floors=$(printf '%s\n' "$floors" | grep -vE "$colab_lacks" || true)
colab_pins=$(grep -E '^(torch|torchvision)==' requirements-dev.txt)
# the unbounded requirements, for the full environment (the install cell fetches these on Colab)
others=$(grep -vE '^\s*(#|$)|>=|^(torch|torchvision)\s*$' requirements.txt || true)
tools=(pytest pytest-timeout nbformat nbclient papermill "ipykernel<7")

exec 9>"$(dirname "$TARGET")/.floor-env.lock"
flock 9
rm -rf "$TARGET"
"$UV" venv --quiet --seed --python "$PYTHON" "$TARGET" >&2  # --seed: pip, as on Colab (the install cell uses it)
if [ "$MODE" = full ]; then
  # shellcheck disable=SC2086
  "$UV" pip install --quiet --python "$TARGET/bin/python" $floors $colab_pins $others "${tools[@]}" >&2
else
  # shellcheck disable=SC2086
  "$UV" pip install --quiet --python "$TARGET/bin/python" $colab_floors $colab_pins pillow tqdm gdown packaging \
    "ipykernel<7" >&2
fi
echo "$TARGET/bin/python"
