"""Oracles for the active-learning tests (imported by worker processes: keep imports light)."""

from __future__ import annotations

import os
import time

from nearsight.qm.oracles import Oracle, OracleError, geometry_hash


class InjectingOracle(Oracle):
    """Pair-spring labels, except for some geometries (chosen by hash) that fail.

    ``int(hash, 16) % modulus``: 0 -> exception, 1 -> timeout (sleeps 60 s), 2 -> a real
    unconverged PySCF SCF (HF/STO-3G, max_cycle=1).  ``log``: one line per call.
    """

    method = "springs"

    def __init__(self, log: str | None = None, modulus: int = 0, sleep_s: float = 0.0):
        self.log, self.modulus, self.sleep_s = log, modulus, sleep_s

    def settings(self):
        return {"oracle": "InjectingOracle", "modulus": self.modulus}

    def compute(self, atoms):
        from qm_helpers import springs

        key = geometry_hash(atoms)
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write(key + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        time.sleep(self.sleep_s)
        mode = int(key, 16) % self.modulus if self.modulus else -1
        if mode == 0:
            raise RuntimeError("injected exception")
        if mode == 1:
            time.sleep(60)
        if mode == 2:
            from nearsight.qm import PySCFOracle

            label = PySCFOracle(method="hf", basis="sto-3g", max_cycle=1, conv_tol=1e-12).label(atoms)
            if not label.ok:
                raise OracleError(label.error)
        energy, forces = springs(atoms.positions)
        return energy, forces, {}
