"""Choosing a diverse batch of uncertain structures to label."""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms


def _fingerprint(atoms: Atoms) -> np.ndarray:
    """Sorted interatomic distances per element pair (permutation and rigid-motion invariant)."""
    z = atoms.numbers
    d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
    parts = []
    for a in sorted(set(z)):
        for b in sorted(set(z)):
            if b < a:
                continue
            block = d[np.ix_(z == a, z == b)]
            vals = block[np.triu_indices_from(block, k=1)] if a == b else block.ravel()
            parts.append(np.sort(vals))
    return np.concatenate(parts) if parts else np.zeros(0)


def select_diverse(candidates: list[Atoms], sigmas: np.ndarray, n: int) -> list[int]:
    """Farthest-point sampling (sorted-distance fingerprints), starting from the largest σ.

    Candidates whose fingerprints differ in length (other compositions) are infinitely far apart.
    """
    if not candidates:
        return []
    fps = [_fingerprint(a) for a in candidates]

    def dist(i: int, j: int) -> float:
        if fps[i].shape != fps[j].shape:
            return math.inf
        return float(np.linalg.norm(fps[i] - fps[j]))

    chosen = [int(np.argmax(sigmas))]
    best = np.array([dist(i, chosen[0]) for i in range(len(candidates))])
    while len(chosen) < min(n, len(candidates)):
        best[chosen] = -1.0
        nxt = int(np.argmax(best))
        if best[nxt] <= 0:  # the rest are identical to chosen ones
            break
        chosen.append(nxt)
        best = np.minimum(best, [dist(i, nxt) for i in range(len(candidates))])
    return chosen
