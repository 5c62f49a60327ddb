#!/usr/bin/env bash
# The main job: set up, train a Behler-Parrinello model on the bundled ethanol frames,
# evaluate it on held-out frames, run a short NVE MD, print a metrics table and write a parity plot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/nearsight demo examples/ethanol_bpnn.yaml --output-dir outputs/demo "$@"
