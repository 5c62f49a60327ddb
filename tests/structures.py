"""Test structures shared by the descriptor tests: a molecule, a periodic water box and a
periodic Si cell smaller than twice the cutoff."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule

ROOT = Path(__file__).resolve().parents[1]


def ethanol() -> Atoms:
    """The first held-out ethanol frame of the bundled data (a real MD geometry)."""
    import ase.io

    return ase.io.read(ROOT / "examples" / "data" / "ethanol_test200.xyz", 0)


def water_box(n_side: int = 4, density: float = 1.0, seed: int = 0) -> Atoms:
    """``n_side³`` randomly oriented H2O on a cubic lattice at ``density`` g/cm³, periodic."""
    rng = np.random.default_rng(seed)
    n = n_side**3
    length = (n * 18.015 / 0.602214 / density) ** (1.0 / 3.0)
    spacing = length / n_side
    h2o = molecule("H2O")
    h2o.positions -= h2o.positions[0]
    atoms = Atoms(cell=[length] * 3, pbc=True)
    for idx in np.ndindex(n_side, n_side, n_side):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        rot = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        centre = (np.array(idx) + 0.5) * spacing + rng.uniform(-0.2, 0.2, 3)
        atoms += Atoms(h2o.numbers, positions=h2o.positions @ rot.T + centre)
    return atoms


def si_small_cell(seed: int = 0) -> Atoms:
    """A rattled 2-atom diamond Si primitive cell (edges 3.84 Å, far below 2·r_cut)."""
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=seed)
    return atoms
