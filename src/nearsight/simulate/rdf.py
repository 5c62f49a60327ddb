"""Radial distribution functions of periodic frames (classical MD, or PIMD beads and centroids).

For species A and B, frames f with volume Ω_f, N_A and N_B atoms,

    g_AB(r) = ⟨ Ω_f / (N_A N_B') · n_AB,f(r, r+Δr) / (4π/3 [(r+Δr)³ − r³]) ⟩_f,

n_AB the number of (ordered) pairs i∈A, j∈B, j≠i (any periodic image of j, but none of i itself),
at a distance in the shell; N_B' = N_B − 1 when A = B and N_B otherwise, so that an ideal gas gives
g = 1 at every r.  Distances come from vesin's neighbour list (every periodic image within r_max):
correct for any cell shape and for r_max beyond half the cell (unlike the minimum-image convention).

PIMD: the quantum g(r) is the average over beads of the g(r) of each bead's configuration (the
pairs are taken within one bead, i.e. at the same imaginary time); give every bead's frames.  The
centroid g(r) (frames of centroids) is sharper and is not the quantum g(r).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase import Atoms
from vesin import NeighborList


def radial_distribution(
    frames: Atoms | Iterable[Atoms],
    pair: tuple[str, str] = ("O", "H"),
    r_max: float = 6.0,
    bins: int = 120,
) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres in Å, g_AB(r)) averaged over ``frames`` (see the module docstring).

    Frames must be periodic in all three directions (g(r) needs a density); every frame must hold
    at least one atom of A and one of B (two of A when A = B).
    """
    if isinstance(frames, Atoms):
        frames = [frames]
    if not (r_max > 0 and bins >= 1):
        raise ValueError(f"need r_max > 0 and bins >= 1, got r_max={r_max}, bins={bins}")
    a, b = pair
    edges = np.linspace(0.0, float(r_max), int(bins) + 1)
    shell = 4.0 * np.pi / 3.0 * (edges[1:] ** 3 - edges[:-1] ** 3)  # [bins] Å³
    total = np.zeros(int(bins))
    count = 0
    for index, atoms in enumerate(frames):
        if not np.all(atoms.pbc):
            raise ValueError(
                f"frame {index}: g(r) needs a cell periodic in all three directions, got pbc={atoms.pbc.tolist()}"
            )
        symbols = np.asarray(atoms.get_chemical_symbols())
        is_a, is_b = symbols == a, symbols == b
        n_a, n_b = int(is_a.sum()), int(is_b.sum())
        n_b_other = n_b - 1 if a == b else n_b
        if n_a == 0 or n_b_other <= 0:
            raise ValueError(
                f"frame {index}: pair {a}-{b} needs atoms of both species (has {n_a} {a}, {n_b} {b})"
            )
        i, j, d = NeighborList(cutoff=float(r_max), full_list=True).compute(
            points=atoms.positions, box=atoms.cell.array, periodic=True, quantities="ijd"
        )
        keep = is_a[i] & is_b[j] & (i != j)  # an atom's own images are not counted (A = B)
        hist, _ = np.histogram(d[keep], bins=edges)
        total += hist * atoms.get_volume() / (n_a * n_b_other) / shell
        count += 1
    if count == 0:
        raise ValueError("radial_distribution: no frames")
    return 0.5 * (edges[1:] + edges[:-1]), total / count
