"""Baseline calculators for Δ-learning: E = E_baseline + ΔE_ML.

A Δ-model file records the baseline it was trained on top of (``model.baseline`` in the
training config).  :func:`make_baseline` turns that record into an ASE calculator:

* ``{"calculator": "pyscf", "method": "hf", "basis": "6-31g*", ...}``: a PySCF
  calculation (keyword arguments of :class:`nearsight.qm.PySCFOracle`);
* ``{"calculator": "emt"}``: ASE's EMT;
* ``{"calculator": "lj", "sigma": ..., "epsilon": ..., "rc": ...}``: ASE's Lennard-Jones;
* ``{"calculator": "zero"}``: no baseline (energy and forces 0), for tests and for
  models whose baseline labels were zero.

Any other ASE calculator can be passed to :class:`~nearsight.NearsightCalculator` as
``baseline=`` directly.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes


class ZeroCalculator(Calculator):
    """Energy, forces and stress identically zero."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        n = len(self.atoms)
        self.results = {"energy": 0.0, "free_energy": 0.0, "forces": np.zeros((n, 3)), "stress": np.zeros(6)}


class OracleCalculator(Calculator):
    """An ASE calculator around a :mod:`nearsight.qm` oracle (raises if a label fails)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, oracle, **kwargs) -> None:
        super().__init__(**kwargs)
        self.oracle = oracle

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        label = self.oracle(self.atoms)
        if not label.ok:
            raise RuntimeError(f"baseline calculation failed: {label.error}")
        self.results = {"energy": label.energy, "free_energy": label.energy}
        if label.forces is not None:
            self.results["forces"] = np.asarray(label.forces)


def make_baseline(spec: dict) -> Calculator:
    """An ASE calculator from a baseline record (see the module docstring)."""
    if not isinstance(spec, dict) or "calculator" not in spec:
        raise ValueError(f"a baseline must be a mapping with a 'calculator' key, got {spec!r}")
    kind, kwargs = spec["calculator"], {k: v for k, v in spec.items() if k != "calculator"}
    if kind == "zero":
        return ZeroCalculator()
    if kind == "emt":
        from ase.calculators.emt import EMT

        return EMT(**kwargs)
    if kind == "lj":
        from ase.calculators.lj import LennardJones

        return LennardJones(**kwargs)
    if kind == "pyscf":
        from .qm import PySCFOracle

        return OracleCalculator(PySCFOracle(**kwargs))
    raise ValueError(f"unknown baseline calculator {kind!r}; known: emt, lj, pyscf, zero (or pass baseline=)")
