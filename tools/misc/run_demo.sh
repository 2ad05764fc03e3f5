#!/usr/bin/env bash
# One command for the demo: bash tools/misc/run_demo.sh [detection|segmentation|classification] [options]
# Makes data/demo if missing, trains the demo config on the CPU, tests it and prints the metrics
# (see tools/misc/run_demo.py --help). Uses the repository's .venv when there is one.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
cd "$ROOT" && PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" tools/misc/run_demo.py "$@"
