"""How closely nearsight's SOAP matches DScribe's, per structure and radial basis (float64).

    python benchmarks/dscribe_equality.py

Prints the largest absolute difference relative to each row's maximum, and the largest
relative difference over entries above 1e-6 of their row's maximum.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from dscribe.descriptors import SOAP as DScribeSOAP

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nearsight.descriptors import SOAP  # noqa: E402
from structures import ethanol, si_small_cell, water_box  # noqa: E402


def main() -> None:
    cases = [
        ("ethanol", ethanol, ["H", "C", "O"], False, 5.0),
        ("water192", water_box, ["H", "O"], True, 5.0),
        ("Si2", si_small_cell, ["Si"], True, 6.0),
    ]
    print(f"{'structure':10s} {'rbf':11s} {'max|d|/row max':>15s} {'max rel (>1e-6 row max)':>24s}")
    for name, build, species, periodic, r_cut in cases:
        atoms = build()
        for rbf in ("gto", "polynomial"):
            kw = dict(r_cut=r_cut, n_max=8, l_max=6, sigma=1.0, rbf=rbf, periodic=periodic)
            ours = SOAP(species, **kw).compute(atoms)
            ref = DScribeSOAP(species=species, **kw).create(atoms)
            scale = np.abs(ref).max(1, keepdims=True)
            diff = np.abs(ours - ref)
            big = np.abs(ref) > 1e-6 * scale
            print(
                f"{name:10s} {rbf:11s} {np.max(diff / scale):15.1e} {np.max(diff[big] / np.abs(ref[big])):24.1e}"
            )


if __name__ == "__main__":
    main()
