"""Oracles for tests of nearsight.qm, in a small module that worker processes import quickly."""

from __future__ import annotations

import os
import time

import numpy as np
from ase import Atoms

from nearsight.qm.oracles import Oracle, geometry_hash


class CountingOracle(Oracle):
    """Pair-spring labels (numpy only: quick to import in workers); counts calls in this process and appends each call to ``log`` (if given)."""

    method = "springs"

    def __init__(self, log: str | None = None, sleep_s: float = 0.0, fail_on: str | None = None):
        self.log = log
        self.sleep_s = sleep_s
        self.fail_on = fail_on  # for structures with info["bad"]: "raise", "nan", "exit" or "sleep" (60 s)
        self.calls = 0

    def settings(self):
        return {"oracle": "CountingOracle"}

    def compute(self, atoms):
        self.calls += 1
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write(geometry_hash(atoms) + "\n")
        time.sleep(self.sleep_s)
        if self.fail_on == "raise" and atoms.info.get("bad"):
            raise ValueError("injected failure")
        if self.fail_on == "exit" and atoms.info.get("bad"):
            os._exit(3)  # the worker process dies (as if killed by the OOM killer)
        if self.fail_on == "sleep" and atoms.info.get("bad"):
            time.sleep(60)
        energy, forces = springs(atoms.positions)
        if self.fail_on == "nan" and atoms.info.get("bad"):
            energy = float("nan")
        return energy, forces, {}


def springs(positions: np.ndarray, k: float = 2.0, r0: float = 1.2) -> tuple[float, np.ndarray]:
    """E = Σ_pairs k/2 (r - r0)², F = -dE/dx."""
    d = positions[:, None, :] - positions[None, :, :]
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, r0)
    energy = 0.25 * k * float(np.sum((r - r0) ** 2))  # each pair counted twice
    coeff = k * (r - r0) / r
    np.fill_diagonal(coeff, 0.0)
    forces = -np.sum(coeff[:, :, None] * d, axis=1)
    return energy, forces


def raising_calculator():
    raise RuntimeError("calculator factory exploded")


def water(seed: int) -> Atoms:
    """H2O with every position moved by N(0, 0.05 Å) (seeded)."""
    from ase.build import molecule  # imported here: worker processes need not import ase.build

    atoms = molecule("H2O")
    atoms.positions += 0.05 * np.random.default_rng(seed).normal(size=atoms.positions.shape)
    return atoms


def waters(n: int, start: int = 0) -> list[Atoms]:
    return [water(seed) for seed in range(start, start + n)]


def label_waters(db: str, log: str, n: int, sleep_s: float) -> None:
    """Label ``waters(n)`` into ``db`` in this process (the kill -9 test kills it)."""
    from nearsight.qm import label_structures

    label_structures(waters(n), CountingOracle(log=log, sleep_s=sleep_s), db, n_workers=0)
