"""Shared pieces of the physics checks: the result record and a float64 evaluator.

Every check evaluates a model through :class:`Evaluator`, which wraps a
*copy* of the model in :class:`~nearsight.models.forcefield.ForceField` in
float64 (the caller's model is never converted, frozen or moved), or uses an
ASE calculator as it is.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from torch import nn

from .. import keys
from ..data.neighbours import atoms_to_graph
from ..models.forcefield import ForceField

#: Smallest scale (eV, eV/Å, eV/Å³) a relative error is taken against, so that a
#: reference that is (nearly) zero does not turn round-off into a large relative error.
SCALE_FLOOR = 1e-3


@dataclass
class CheckResult:
    """Outcome of one physics check.

    ``error`` and ``tolerance`` are in the units the check documents (relative,
    eV, eV/Å, eV/Å³ or eV/atom/ps); ``passed`` is ``error <= tolerance`` (and
    every value finite).  ``skipped`` checks did not apply to the structure and
    count as passed.
    """

    name: str
    passed: bool
    error: float
    tolerance: float
    detail: str = ""
    skipped: bool = False

    def assert_ok(self) -> CheckResult:
        """Raise ``AssertionError`` with the detail if the check failed; return self."""
        if not self.passed:
            raise AssertionError(
                f"physics check {self.name!r} failed: error {self.error:.3e} > tolerance "
                f"{self.tolerance:.3e}\n{self.detail}"
            )
        return self

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else ("PASS" if self.passed else "FAIL")


def make_result(name: str, error: float, tolerance: float, detail: str = "") -> CheckResult:
    """A result that passes when ``error`` is finite and at most ``tolerance``."""
    error = float(error)
    passed = bool(np.isfinite(error) and error <= tolerance)
    return CheckResult(name, passed, error, float(tolerance), detail)


def skipped(name: str, tolerance: float, why: str) -> CheckResult:
    return CheckResult(name, True, 0.0, float(tolerance), f"skipped: {why}", skipped=True)


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """``None`` gives a fixed seed (0) so that checks are reproducible."""
    return np.random.default_rng(0 if rng is None else rng)


@dataclass
class Evaluation:
    """Energy (eV), forces (eV/Å), stress (3×3, eV/Å³, ASE sign, or None) and per-atom energies."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None = None
    energies: np.ndarray | None = None

    @property
    def energy_scale(self) -> float:
        """Magnitude against which round-off in the energy is judged: max(|E|, Σ|ε_i|)."""
        scale = abs(self.energy)
        if self.energies is not None and len(self.energies):
            scale = max(scale, float(np.abs(self.energies).sum()))
        return scale


def has_volume(atoms: Atoms) -> bool:
    return bool(np.any(atoms.pbc)) and abs(float(np.linalg.det(atoms.cell.array))) > 1e-12


class Evaluator:
    """Evaluate energies, forces and stress of a model in float64.

    ``model`` may be a per-atom energy ``nn.Module`` (with ``cutoff`` and
    ``species``), a :class:`ForceField`, a model file path, a
    :class:`~nearsight.calculator.NearsightCalculator` (its model is used in
    float64), any other ASE calculator (used as it is; ``cutoff`` then comes
    from ``calc.cutoff`` or the argument) or an :class:`Evaluator`.
    """

    def __init__(self, model, cutoff: float | None = None) -> None:
        from ..calculator import NearsightCalculator

        self.calculator: Calculator | None = None
        self.forcefield: ForceField | None = None
        if isinstance(model, (str, os.PathLike)):
            from ..models.io import load_model

            model = load_model(model)
        if isinstance(model, NearsightCalculator):
            model = model.forcefield.model
        if isinstance(model, ForceField):
            model = model.model
        if isinstance(model, Calculator):
            self.calculator = model
            self.cutoff = cutoff if cutoff is not None else getattr(model, "cutoff", None)
            self.species = list(getattr(model, "species", []) or [])
            self.module = None
            return
        if not isinstance(model, nn.Module):
            raise TypeError(f"expected a model, ForceField, model path or ASE calculator, got {type(model)}")
        module = copy.deepcopy(model).to(torch.float64).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module
        self.forcefield = ForceField(module)
        self.cutoff = float(cutoff if cutoff is not None else module.cutoff)
        self.species = [int(z) for z in module.species]

    @classmethod
    def wrap(cls, model, cutoff: float | None = None) -> Evaluator:
        if isinstance(model, Evaluator):
            return model
        return cls(model, cutoff)

    def need_cutoff(self) -> float:
        if self.cutoff is None:
            raise ValueError(
                "this check needs the model cutoff: pass cutoff=... or a calculator with .cutoff"
            )
        return float(self.cutoff)

    def ase_calculator(self) -> Calculator:
        """An ASE calculator for the model (float64 NearsightCalculator of the copy)."""
        if self.calculator is not None:
            return self.calculator
        from ..calculator import NearsightCalculator

        return NearsightCalculator(self.module, dtype="float64")

    def __call__(self, atoms: Atoms, stress: bool | None = None) -> Evaluation:
        """Energy, forces and, if ``stress`` (default: when the cell has a volume), stress."""
        if stress is None:
            stress = has_volume(atoms)
        if self.calculator is not None:
            return self._calc(atoms, forces=True, stress=stress)
        graph = atoms_to_graph(atoms, self.cutoff, torch.float64)
        with torch.enable_grad():
            out = self.forcefield(graph, forces=True, stress=bool(stress))
        return Evaluation(
            energy=float(out[keys.ENERGY].detach().sum()),
            forces=out[keys.FORCES].detach().numpy().copy(),
            stress=out[keys.STRESS][0].detach().numpy().copy() if stress else None,
            energies=out[keys.ATOMIC_ENERGIES].detach().numpy().copy(),
        )

    def energy(self, atoms: Atoms) -> float:
        """Energy only (no derivatives)."""
        if self.calculator is not None:
            return self._calc(atoms, forces=False, stress=False).energy
        graph = atoms_to_graph(atoms, self.cutoff, torch.float64)
        with torch.no_grad():
            out = self.forcefield(graph, forces=False, stress=False)
        return float(out[keys.ENERGY].sum())

    def _calc(self, atoms: Atoms, forces: bool, stress: bool) -> Evaluation:
        calc = self.calculator
        atoms = atoms.copy()
        calc.reset()
        atoms.calc = calc
        energy = float(atoms.get_potential_energy())
        f = np.asarray(atoms.get_forces(), dtype=np.float64) if forces else np.zeros((len(atoms), 3))
        s = None
        if stress:
            try:
                s = np.asarray(atoms.get_stress(voigt=False), dtype=np.float64)
            except PropertyNotImplementedError:
                s = None
        try:
            energies = np.asarray(atoms.get_potential_energies(), dtype=np.float64)
        except (PropertyNotImplementedError, NotImplementedError):
            energies = None
        return Evaluation(energy, f, s, energies)


# ------------------------------------------------------------------ geometry
def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix (det +1)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_reflection(rng: np.random.Generator) -> np.ndarray:
    """A random improper orthogonal matrix (det -1): a mirror plane times a rotation."""
    n = rng.standard_normal(3)
    n /= np.linalg.norm(n)
    return (np.eye(3) - 2.0 * np.outer(n, n)) @ random_rotation(rng)


def transform(atoms: Atoms, q: np.ndarray) -> Atoms:
    """Apply the orthogonal map ``x -> q x`` to positions and cell (rows are vectors)."""
    out = atoms.copy()
    out.calc = None
    out.set_cell(atoms.cell.array @ q.T, scale_atoms=False)
    out.positions = atoms.positions @ q.T
    return out


def max_abs(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.max(np.abs(a))) if a.size else 0.0


def relative(diff, ref, floor: float = SCALE_FLOOR) -> float:
    """max|diff| / max(max|ref|, floor)."""
    return max_abs(diff) / max(max_abs(ref), floor)


def compare(
    ref: Evaluation,
    new: Evaluation,
    *,
    energy: float | None = None,
    forces: np.ndarray | None = None,
    stress: np.ndarray | None = None,
) -> tuple[float, str]:
    """Largest relative deviation of ``new`` from the expected values, and a description.

    ``energy``/``forces``/``stress`` are the values ``new`` should have (default:
    those of ``ref``).  Energies are judged against ``ref.energy_scale``.
    """
    e_exp = ref.energy if energy is None else energy
    f_exp = ref.forces if forces is None else forces
    s_exp = ref.stress if stress is None else stress
    errs = {"energy": abs(new.energy - e_exp) / max(ref.energy_scale, SCALE_FLOOR)}
    if f_exp is not None and np.size(f_exp):
        errs["forces"] = relative(new.forces - f_exp, f_exp)
    if s_exp is not None and new.stress is not None:
        errs["stress"] = relative(new.stress - s_exp, s_exp)
    worst = max(errs.values())
    if not all(np.isfinite(v) for v in errs.values()):
        worst = float("inf")
    detail = ", ".join(f"{k} {v:.2e}" for k, v in errs.items())
    return worst, f"relative errors: {detail} (E = {e_exp:.10g} eV)"
