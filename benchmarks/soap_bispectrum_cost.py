"""What the four-body bispectrum costs beside SOAP's power spectrum: energy + forces of a SOAP-BPNN.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/soap_bispectrum_cost.py [--cells 3] [--repeats 5]

The silicon recipe's descriptor (SOAP n_max 8, l_max 6, σ 0.5 Å, r_c 5 Å, poly weighting; 32-32
network) without and with ``bispectrum`` {n_max: 4, l_max: 3} and {4, 4}, on a rattled diamond
supercell, float32 as in MD, one thread, all in this process; CPU seconds per energy + forces call
(median of ``--repeats``) and the ratio to the power spectrum alone.  The networks' weights are
random: the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=3, help="conventional cells per side (3: 216 atoms)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    import torch
    from ase.build import bulk

    from nearsight.calculator import NearsightCalculator
    from nearsight.models.bpnn import BehlerParrinello

    torch.set_num_threads(1)
    atoms = bulk("Si", "diamond", 5.43, cubic=True) * ((args.cells,) * 3)
    atoms.rattle(0.05, seed=0)
    weighting = {"function": "poly", "r0": 5.0, "c": 1.0, "m": 2.0}
    rows = []
    for label, bispectrum in (("power spectrum", None), ("+ bispectrum (4, 3)", {"n_max": 4, "l_max": 3}),
                              ("+ bispectrum (4, 4)", {"n_max": 4, "l_max": 4})):  # fmt: skip
        torch.manual_seed(0)
        desc = {"type": "soap", "r_cut": 5.0, "n_max": 8, "l_max": 6, "sigma": 0.5, "weighting": weighting,
                "bispectrum": bispectrum}  # fmt: skip
        model = BehlerParrinello([14], desc, hidden=(32, 32))
        calc = NearsightCalculator(model, dtype="float32", on_extrapolation="ignore")
        calc.get_forces(atoms)  # warm-up
        times = []
        for k in range(args.repeats):
            moved = atoms.copy()
            moved.positions[0, 0] += 1e-3 * (k + 1)  # a new geometry: no cached result
            t0 = time.process_time()
            calc.get_forces(moved)
            times.append(time.process_time() - t0)
        rows.append((label, model.descriptor.n_features, statistics.median(times)))
    base = rows[0][2]
    print(
        f"{len(atoms)} silicon atoms, energy + forces, float32, one thread (CPU s per call, median of {args.repeats})"
    )
    for label, n_features, seconds in rows:
        print(f"{label:22s} {n_features:4d} features  {1e3 * seconds:7.1f} ms  {seconds / base:4.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
