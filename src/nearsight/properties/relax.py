"""Relaxation of atomic positions and of the cell, and committees of any crystal property.

:func:`relax` minimises the enthalpy H = E + pV over the positions R_i and, with ``cell=True``, the
cell h (rows a, b, c) with ASE's ``FrechetCellFilter``: the cell enters through the logarithm of the
deformation gradient F = h h₀⁻¹, whose generalised force is the virial W = −V(σ + p I) divided by
the number of atoms N (ASE sign: σ > 0 in tension). At a minimum

    F_i = −∂E/∂R_i = 0          and          σ = −p I,

so one ``fmax`` (eV/Å) bounds both the largest force and (V/N)·|σ + p I| row by row: a residual
stress of about fmax·N/V (fmax = 1e-3 eV/Å leaves ≤ 8.5e-5 eV/Å³ = 0.014 GPa in fcc Cu). With
``hydrostatic=True`` only the volume changes (the cell keeps its shape); with ``cell=False`` only the
positions move (a molecule, or a crystal at a fixed cell).

:func:`committee` computes a property once per committee member (each on its own calculator, from
the same input structure) and gives the mean and standard deviation of every number the members'
``summary()`` returns (:func:`nearsight.properties.common.committee_spread`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa

from .common import ModelLike, as_calculators, committee_spread, over_members, require_periodic

OPTIMIZERS = ("BFGS", "FIRE", "LBFGS")


@dataclass
class RelaxResult:
    """A relaxed structure.

    ``atoms`` is a relaxed copy whose calculator holds the final energy, forces and (periodic) stress;
    ``energy`` (eV) is E, not the enthalpy; ``max_force`` (eV/Å) is the largest |F_i|; ``stress``
    (Voigt xx yy zz yz xz xy, eV/Å³) and ``max_stress`` = max |σ + p I| (eV/Å³) are None without a
    cell; ``lattice_parameters`` are a, b, c (Å) and α, β, γ (°) of the relaxed cell.
    """

    atoms: Atoms
    energy: float
    converged: bool
    n_steps: int
    max_force: float
    stress: np.ndarray | None
    max_stress: float | None
    volume: float
    lattice_parameters: np.ndarray
    pressure_GPa: float
    fmax: float
    steps: int
    cell_relaxed: bool

    def summary(self) -> dict[str, Any]:
        """Plain numbers (JSON, :func:`committee_spread`): energies in eV, lengths in Å, stress in GPa."""
        return {
            "energy": self.energy,
            "energy_per_atom": self.energy / max(len(self.atoms), 1),
            "volume": self.volume,
            "volume_per_atom": self.volume / max(len(self.atoms), 1),
            "lattice_parameters": self.lattice_parameters.tolist(),
            "max_force": self.max_force,
            "max_stress_GPa": None if self.max_stress is None else self.max_stress / GPa,
            "converged": self.converged,
            "n_steps": self.n_steps,
        }

    def require_converged(self, where: str = "the structure") -> None:
        """Raise a ``ValueError`` naming the step limit and ``fmax`` when the optimiser did not converge."""
        if self.converged:
            return
        stress = "" if self.max_stress is None else f", a stress residual of {self.max_stress / GPa:.3g} GPa"
        raise ValueError(
            f"{where}: the relaxation did not converge in {self.steps} steps to fmax = {self.fmax:g} eV/Å "
            f"(largest force {self.max_force:.3g} eV/Å{stress}); allow more steps, loosen fmax or start "
            "from a better structure"
        )


def make_optimizer(name: str, target: Any, logfile: str | None = None) -> Any:
    """An ASE optimiser (BFGS, FIRE or LBFGS) on ``target`` (atoms or a cell filter)."""
    from ase import optimize

    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r}: must be one of {', '.join(OPTIMIZERS)}")
    return getattr(optimize, name)(target, logfile=logfile)


def relax(
    atoms: Atoms,
    calc: Calculator,
    fmax: float = 1e-3,
    cell: bool = True,
    hydrostatic: bool = False,
    pressure_GPa: float = 0.0,
    steps: int = 500,
    optimizer: str = "BFGS",
    trajectory: str | None = None,
    logfile: str | None = None,
    where: str = "the structure",
) -> RelaxResult:
    """Relax the positions (and with ``cell`` the cell, under ``pressure_GPa``) of a copy of ``atoms``
    until every force is below ``fmax`` (eV/Å); see the module docstring for the cell criterion.

    ``trajectory`` (an ASE .traj file) records every step, ``logfile`` the optimiser's log ("-":
    stdout). A relaxation that reaches ``steps`` returns with ``converged=False``
    (:meth:`RelaxResult.require_converged` turns that into an error). ``where`` names the structure in
    error messages.
    """
    if not fmax > 0:
        raise ValueError(f"fmax = {fmax!r}: must be > 0 (eV/Å)")
    if steps < 0:
        raise ValueError(f"steps = {steps!r}: must be ≥ 0")
    if cell:
        require_periodic(atoms, "a cell relaxation (cell=False relaxes the positions only)", where)
    elif hydrostatic or pressure_GPa:
        raise ValueError("hydrostatic and pressure_GPa act on the cell: they need cell=True")
    work = atoms.copy()
    work.calc = calc
    target: Any = work
    if cell:
        from ase.filters import FrechetCellFilter

        target = FrechetCellFilter(work, hydrostatic_strain=hydrostatic, scalar_pressure=pressure_GPa * GPa)
    opt = make_optimizer(optimizer, target, logfile)
    traj = None
    if trajectory is not None:
        from ase.io.trajectory import Trajectory

        traj = Trajectory(trajectory, "w", work)  # the atoms, not the filter (ASE's advice)
        opt.attach(traj.write)
    try:
        converged = bool(opt.run(fmax=fmax, steps=steps))
    finally:
        if traj is not None:
            traj.close()
    return _result(work, converged, int(opt.nsteps), fmax, steps, pressure_GPa, cell)


def _result(
    work: Atoms, converged: bool, n_steps: int, fmax: float, steps: int, pressure_GPa: float, cell: bool
) -> RelaxResult:
    """The result of a finished relaxation: a detached copy holding the final calculator results."""
    energy = float(work.get_potential_energy())
    forces = work.get_forces()
    periodic = bool(np.all(work.pbc)) and abs(work.cell.volume) > 1e-9
    stress = np.asarray(work.get_stress(voigt=True), dtype=float) if periodic else None
    max_stress = None
    if stress is not None:
        residual = stress.copy()
        residual[:3] += pressure_GPa * GPa  # σ + p I
        max_stress = float(np.abs(residual).max())
    final = work.copy()
    final.calc = SinglePointCalculator(final, energy=energy, free_energy=energy, forces=forces, stress=stress)
    return RelaxResult(
        atoms=final,
        energy=energy,
        converged=converged,
        n_steps=n_steps,
        max_force=float(np.linalg.norm(forces, axis=1).max()) if len(work) else 0.0,
        stress=stress,
        max_stress=max_stress,
        volume=float(abs(work.cell.volume)) if periodic else 0.0,
        lattice_parameters=np.asarray(work.cell.cellpar(), dtype=float),
        pressure_GPa=float(pressure_GPa),
        fmax=float(fmax),
        steps=int(steps),
        cell_relaxed=cell,
    )


R = TypeVar("R")


@dataclass
class CommitteeResult(Generic[R]):
    """One result per committee member and, for every number of their ``summary()``, the committee's
    mean and standard deviation σ (ddof = 0): ``spread[key] = {"mean": ..., "std": ...}``."""

    members: list[R]
    spread: dict[str, dict[str, Any]]

    def mean(self, key: str) -> Any:
        return self.spread[key]["mean"]

    def std(self, key: str) -> Any:
        return self.spread[key]["std"]

    def summary(self) -> dict[str, Any]:
        """``{"members": [each member's summary], "mean": {...}, "std": {...}}`` for JSON."""
        return {
            "members": [m.summary() for m in self.members],  # type: ignore[attr-defined]
            "mean": {k: v["mean"] for k, v in self.spread.items()},
            "std": {k: v["std"] for k, v in self.spread.items()},
        }


def committee(
    compute: Callable[..., R],
    atoms: Atoms,
    models: ModelLike | list[ModelLike],
    dtype: str = "float64",
    device: str = "cpu",
    **kwargs: Any,
) -> CommitteeResult[R]:
    """``compute(atoms, calc, **kwargs)`` (e.g. :func:`relax`, ``equation_of_state``,
    ``elastic_constants``) for each model of a committee (model files, modules or ASE calculators;
    one model gives σ = 0), with the members' mean ± σ of each number of their summaries."""
    calcs = as_calculators(models, dtype=dtype, device=device)
    members = over_members(compute, atoms, calcs, **kwargs)
    summaries = [m.summary() for m in members]  # type: ignore[attr-defined]
    return CommitteeResult(members, committee_spread(summaries))


def committee_relax(atoms: Atoms, models: ModelLike | list[ModelLike], **kwargs: Any) -> CommitteeResult:
    """:func:`relax` with each committee member; keyword arguments as for :func:`relax`."""
    return committee(relax, atoms, models, **kwargs)
