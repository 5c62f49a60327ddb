#!/usr/bin/env bash
# Set up and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"  # cmake, mpirun and lmp of the environment
.venv/bin/python -m pytest -q -n 2 --dist loadgroup "$@"
