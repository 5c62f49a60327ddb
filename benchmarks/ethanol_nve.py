"""NVE energy conservation of a trained model: ethanol at 300 K, 0.5 fs steps, float64.

    .venv/bin/python benchmarks/ethanol_nve.py MODEL.pt [--ps 5] [--start ../shared/data/ethanol/test_MD.xyz]

Prints the drift (slope of a linear fit of the total energy, eV/atom/ps), the RMS
fluctuation of the total energy and the wall time.  Target: |drift| < 1e-4 eV/atom/ps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase.io import read

from nearsight import NearsightCalculator
from nearsight.simulate.md import run_md

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--start", default=str(ROOT.parent / "shared" / "data" / "ethanol" / "test_MD.xyz"))
    parser.add_argument("--ps", type=float, default=5.0)
    parser.add_argument("--timestep-fs", type=float, default=0.5)
    parser.add_argument("--temperature-K", type=float, default=300.0)
    parser.add_argument("--trajectory", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    atoms = read(args.start, index=0)
    atoms.calc = None
    steps = int(round(args.ps * 1000 / args.timestep_fs))
    calc = NearsightCalculator(args.model, dtype="float64")
    res = run_md(
        atoms,
        calc,
        steps=steps,
        timestep_fs=args.timestep_fs,
        temperature_K=args.temperature_K,
        trajectory=args.trajectory,
        interval=100,
    )
    summary = {
        "steps": steps,
        "time_ps": float(res.time_ps[-1]),
        "drift_ev_per_atom_ps": res.drift_ev_per_atom_ps,
        "fluctuation_ev_per_atom": res.fluctuation_ev_per_atom,
        "mean_temperature_K": float(res.temperature.mean()),
        "wall_time_s": res.wall_time_s,
        "steps_per_s": steps / res.wall_time_s,
    }
    print(json.dumps(summary, indent=2))
    ok = abs(summary["drift_ev_per_atom_ps"]) < 1e-4
    print(
        f"NVE drift {summary['drift_ev_per_atom_ps']:.2e} eV/atom/ps over {summary['time_ps']:.2f} ps: "
        f"{'below' if ok else 'ABOVE'} the 1e-4 target"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
