#!/usr/bin/env bash
# One-command install of sparx-mm and its OpenMMLab stack into a virtual environment.
#
#   bash install.sh [VENV_DIR]            (default: .venv in the repository root)
#
# Environment variables:
#   SPARX_MMCV_WHEEL_DIR  a folder holding a prebuilt mmcv-2.1.0 wheel for this Python and torch 2.14.1;
#                         installed instead of compiling mmcv's ops (which takes ~8 min on 2 cores).
#   MAX_JOBS              parallel compile jobs for mmcv (default: number of cores).
#
# Why the pins (each measured on a fresh 2-core CPU machine, Python 3.11):
#   torch 2.14.1 + torchvision 0.29.1  mmpretrain needs torchvision; PyPI's torchvision does not load beside
#                                      the CPU torch 2.13.0, so both come from the machine's local wheel store.
#   mmcv 2.1.0 built with its ops      mmdet 3.3.0 / mmseg 1.2.2 require mmcv < 2.2; mmcv-lite lacks RoIAlign / NMS.
#   setuptools<82                      82 dropped pkg_resources, used by mmcv's setup.py and mmengine's `pkg::` scopes.
#   numpy<2.4                          2.4 removed np.in1d, used by mmpretrain's metrics.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${1:-$root/.venv}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
start=$(date +%s)
step() { echo "[install +$(( $(date +%s) - start ))s] $*"; }

if [ ! -x "$venv/bin/python" ]; then
  step "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip install --disable-pip-version-check)

step "torch 2.14.1, torchvision 0.29.1 and build tools"
"${pip[@]}" -r "$root/requirements/torch.txt"

if "$py" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  step "mmcv 2.1.0 with ops already installed"
else
  wheel=""
  if [ -n "${SPARX_MMCV_WHEEL_DIR:-}" ]; then
    tag=$("$py" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
    wheel=$(ls "$SPARX_MMCV_WHEEL_DIR"/mmcv-2.1.0-"$tag"-*.whl 2>/dev/null | head -n 1 || true)
    [ -n "$wheel" ] || step "no mmcv-2.1.0 wheel for $tag in $SPARX_MMCV_WHEEL_DIR: building from source"
  fi
  if [ -n "$wheel" ]; then
    step "installing prebuilt $wheel"
    "${pip[@]}" --no-deps "$wheel"
  else
    step "building mmcv 2.1.0 with its C++ ops (MAX_JOBS=$MAX_JOBS)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$py" -m pip download --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
      mmcv==2.1.0 -d "$work"
    tar xzf "$work"/mmcv-2.1.0.tar.gz -C "$work"
    # torch 2.14's headers require C++20; mmcv hard-codes -std=c++17 last on the command line.
    sed -i "s/'-std=c++17'/'-std=c++20'/" "$work"/mmcv-2.1.0/setup.py
    "$py" -m pip wheel --disable-pip-version-check --no-deps --no-build-isolation -w "$work/dist" "$work"/mmcv-2.1.0
    "${pip[@]}" --no-deps "$work"/dist/mmcv-*.whl
  fi
fi

step "OpenMMLab packages and sparx-mm (editable)"
"${pip[@]}" -r "$root/requirements/runtime.txt" -r "$root/requirements/tests.txt"
"${pip[@]}" --no-deps --no-build-isolation -e "$root"

step "checking the stack"
"$py" - <<'PY'
import warnings
warnings.filterwarnings('ignore')
import torch, torchvision, mmcv, mmcv.ops, mmengine, mmdet.models, mmseg.models, mmpretrain.models
import sparx_mm
print('torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmengine', mmengine.__version__,
      '| mmdet', mmdet.__version__, '| mmseg', __import__('mmseg').__version__,
      '| mmpretrain', __import__('mmpretrain').__version__, '| sparx_mm', sparx_mm.__version__)
PY
step "done: activate with  source $venv/bin/activate"
