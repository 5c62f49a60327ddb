"""A model trained on one molecule, run on what it never saw: eight of its molecules close together.

    python benchmarks/out_of_distribution.py [MODEL] [--steps 200] [--spacing 7.0]

MODEL defaults to the demo's model (``bash scripts/demo.sh`` writes
``outputs/demo/training/best_model.pt``, trained on single ethanol molecules).  Eight ethanol
molecules on a 2×2×2 grid ``--spacing`` Å apart (centre to centre; the cutoff is 5 Å, so
neighbouring molecules interact, which no training frame shows) run NVE MD at 300 K for 0.1 ps.
Printed: the largest temperature, whether energies and forces stayed finite, the steps with
extrapolating atoms (the calculator's per-atom count of descriptor components outside the
training range), the energy of a C–O pair of two molecules approaching each other, and the
model's physics checks (``nearsight.testing.run_all_checks``: symmetry, finite-difference forces,
additivity, isolated atoms, smoothness at the cutoff).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from ase.build import molecule

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nearsight import NearsightCalculator  # noqa: E402
from nearsight.models.io import load_model  # noqa: E402
from nearsight.simulate.md import run_md  # noqa: E402
from nearsight.testing import format_report, run_all_checks  # noqa: E402


def eight_ethanols(spacing: float):
    single = molecule("CH3CH2OH")
    single.positions -= single.positions.mean(0)
    out = single.copy()
    out = out[[]]
    for i in range(2):
        for j in range(2):
            for k in range(2):
                m = single.copy()
                m.positions += spacing * np.array([i, j, k])
                out += m
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(ROOT / "outputs/demo/training/best_model.pt"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--spacing", type=float, default=7.0)
    args = parser.parse_args()
    model = load_model(args.model, dtype="float64")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calc = NearsightCalculator(model, dtype="float64")
        result = run_md(eight_ethanols(args.spacing), calc, steps=args.steps, timestep_fs=0.5,
                        temperature_K=300.0, ensemble="nve", seed=0)  # fmt: skip
    finite = bool(np.isfinite(result.total_energy).all())
    steps_extrapolating = (
        int((result.extrapolating_atoms > 0).sum()) if result.extrapolating_atoms is not None else 0
    )
    print(f"eight ethanols {args.spacing} Å apart, NVE {args.steps} x 0.5 fs: max T {result.temperature.max():.0f} K, "
          f"energies finite: {finite}, drift {result.drift_ev_per_atom_ps:.2e} eV/atom/ps, "
          f"steps with extrapolating atoms: {steps_extrapolating} of {len(result.temperature)}, "
          f"most extrapolating atoms at one step: {int(result.extrapolating_atoms.max()) if result.extrapolating_atoms is not None else 0}, "
          f"warnings: {sum('extrapolat' in str(w.message) for w in caught)}")  # fmt: skip
    pair = molecule("CH3CH2OH")
    calc = NearsightCalculator(model, dtype="float64", on_extrapolation="ignore")
    e_single = calc.get_potential_energy(pair)
    for d in (3.0, 4.0, 4.5, 5.0, 6.0, 8.0):
        two = pair.copy() + pair.copy()
        two.positions[9:] += [d, 0.0, 0.0]
        e = calc.get_potential_energy(two)
        f = np.abs(calc.get_forces(two)).max()
        n = calc.results.get("extrapolating_atoms", "-")
        print(f"two ethanols {d:3.1f} Å apart: E - 2 E(one) = {e - 2 * e_single:+9.3f} eV, max |F| {f:7.2f} eV/Å, "
              f"extrapolating atoms {n}")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_all_checks(model, molecule=molecule("CH3CH2OH"), rng=0)
    print(format_report(results))
    return 0 if finite and all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
