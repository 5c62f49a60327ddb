"""Validate a model in one call: every physics check of :mod:`nearsight.testing` that applies to it.

:func:`check_model` takes a model, a model file, a ForceField, a NearsightCalculator or any ASE
calculator, and structures (or builds a compact random molecule and a small periodic cell of the
model's elements), and returns a :class:`ModelCheck` report; ``nearsight check`` is its command.

Every structure is checked for rotation, reflection, translation and permutation invariance and for
forces equal to −∇E by finite differences; periodic ones also for the stress (finite strain),
supercell extensivity and wrapped positions; molecules for far-apart additivity (for a model with
Coulomb or D3 terms: the decay of the long-range interaction instead).  Isolated atoms of every
element of the model and the smoothness of E and F as a neighbour crosses each cutoff radius are
checked once; ``nve=True`` adds the energy drift of a short NVE run.  A diabatic model (several
electronic states) is checked on its adiabatic ground state, and its excited states on the
molecules and for smoothness; far-apart additivity does not apply to it.

A long-range model (Coulomb, D3) has its isolated atoms and cutoff smoothness checked on its
short-range part, and the supercell tolerance of a Coulomb model is 1e-6 (Ewald sums are converged
to their accuracy, not to round-off).  ``dtype="float32"`` evaluates the symmetry, supercell,
wrapped-position, additivity and isolated-atom checks (and NVE) in single precision, with
tolerances for its round-off; finite differences and smoothness stay in float64.

    from nearsight.testing.model_check import check_model
    report = check_model(model, [atoms], seed=0)
    print(report.table()); assert report.passed, report.summary()

This module imports torch only when a check runs (``nearsight check --help`` stays light).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .structures import MIN_DISTANCE_A, default_structures, read_structures  # noqa: F401 (re-exported)

#: base names of the checks (``--skip``, ``--tolerance``), in the order they run
CHECK_NAMES = (
    "rotation", "reflection", "translation", "permutation", "forces_fd", "stress_fd", "supercell",
    "wrapped", "additivity", "longrange_additivity", "isolated_atom", "smoothness", "nve_drift",
)  # fmt: skip

#: default tolerances for ``dtype="float32"`` (round-off of single precision instead of double)
FLOAT32_TOLERANCES = {
    "rotation": 1e-3, "reflection": 1e-3, "translation": 1e-3, "permutation": 1e-3, "supercell": 1e-3,
    "wrapped": 1e-3, "additivity": 1e-3, "isolated_atom": 1e-4,
}  # fmt: skip


# --------------------------------------------------------------------------- the report
@dataclasses.dataclass
class ModelCheck:
    """The results of :func:`check_model`, the structures checked and what was not checked."""

    results: list  # [CheckResult]
    structures: list[dict[str, Any]]  # {"label", "formula", "n_atoms", "periodic": [3 bools]}
    notes: list[str]

    @property
    def failed(self) -> list[str]:
        """Names of the failed checks, e.g. ``["smoothness", "forces_fd[molecule]"]``."""
        return [r.name for r in self.results if not r.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """``N passed, M failed: names`` (skipped checks are not counted as passed)."""
        n_pass = sum(r.passed and not r.skipped for r in self.results)
        line = f"{n_pass} passed, {len(self.failed)} failed"
        n_skip = sum(r.skipped for r in self.results)
        line += f" ({n_skip} skipped)" if n_skip else ""
        return line + (f": {', '.join(self.failed)}" if self.failed else "")

    def table(self, detail_width: int | None = 100) -> str:
        from ..testing import format_report

        return format_report(self.results, detail_width).rsplit("\n", 1)[0]  # summary() ends it

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; a non-finite error is written as null (and the check failed)."""

        def number(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "passed": self.passed,
            "summary": self.summary(),
            "failed": self.failed,
            "structures": self.structures,
            "notes": self.notes,
            "results": [
                {
                    "name": r.name,
                    **_name_parts(r.name),
                    "status": r.status,
                    "passed": r.passed,
                    "skipped": r.skipped,
                    "error": number(r.error),
                    "tolerance": number(r.tolerance),
                    "detail": r.detail,
                }
                for r in self.results
            ],
        }


def _name_parts(name: str) -> dict[str, Any]:
    """``check``, ``structure``, ``state`` and ``part`` of a result name such as
    ``rotation[cell.xyz:0,S1]``, ``smoothness[S1]`` or ``smoothness[short-range]``."""
    check, _, rest = name.partition("[")
    parts = [p for chunk in rest.rstrip("]").split("][") for p in chunk.split(",") if p]
    out: dict[str, Any] = {"check": check, "structure": None, "state": None, "part": None}
    for p in parts:
        if p[:1] == "S" and p[1:].isdigit():
            out["state"] = int(p[1:])
        elif p == "short-range":
            out["part"] = p
        else:
            out["structure"] = p if out["structure"] is None else f"{out['structure']},{p}"
    return out


# --------------------------------------------------------------------------- the checks
def _state_calculator(module, dtype: str, state: int | None):
    """An ASE calculator of one electronic state of ``module`` in ``dtype``, seen by the checks as a
    plain calculator (with ``cutoff`` and ``species``)."""
    from ase.calculators.calculator import Calculator, all_changes

    from ..calculator import NearsightCalculator

    inner = NearsightCalculator(module, dtype=dtype, state=state)

    class StateCalculator(Calculator):
        implemented_properties = ["energy", "free_energy", "forces", "stress"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
            super().calculate(atoms, properties, system_changes)
            atoms = self.atoms.copy()
            inner.reset()
            atoms.calc = inner
            energy = float(atoms.get_potential_energy())
            self.results = {"energy": energy, "free_energy": energy, "forces": atoms.get_forces()}
            if "stress" in properties:
                self.results["stress"] = atoms.get_stress()

    calc = StateCalculator()
    calc.cutoff, calc.species = float(module.cutoff), [int(z) for z in module.species]
    return calc


def _evaluators(module, calculator, dtype: str) -> list:
    """One evaluator per electronic state checked (one for a single-state model)."""
    from ..testing import Evaluator

    if calculator is not None:
        return [Evaluator(calculator)]
    n_states = int(getattr(module, "n_states", 1))
    if n_states == 1 and dtype == "float64":
        return [Evaluator(module)]
    if n_states == 1:
        return [Evaluator(_state_calculator(module, dtype, None))]
    return [Evaluator(_state_calculator(module, dtype, state)) for state in range(n_states)]


def _relabel(results: Sequence, old: str, new: str) -> list:
    return [dataclasses.replace(r, name=r.name.replace(f"[{old}]", f"[{new}]")) for r in results]


def _frames(structures: Sequence | None, species: list[int], seed: int, max_structures: int | None):
    """(molecules, periodic frames, a note) with labels, their elements checked against the model's."""
    import numpy as np

    note = None
    if structures is None:
        frames = default_structures(species, seed)
        note = f"structures built from the model's elements {species} (seed {seed})"
    else:
        frames = [a.copy() for a in structures]
        for k, atoms in enumerate(frames):
            atoms.info["label"] = str(atoms.info.get("label") or f"structure{k}")
    n = len(frames) if max_structures is None else max_structures
    molecules = [a for a in frames if not np.any(a.pbc)]
    periodic = [a for a in frames if np.any(a.pbc)]
    if len(molecules) > n or len(periodic) > n:
        note = (
            f"checked the first {min(n, len(molecules))} of {len(molecules)} molecules and "
            f"{min(n, len(periodic))} of {len(periodic)} periodic frames (--max-structures {n})"
        )
    molecules, periodic = molecules[:n], periodic[:n]
    for atoms in molecules + periodic:
        missing = sorted(set(atoms.numbers.tolist()) - set(species)) if species else []
        if missing:
            raise ValueError(
                f"structure {atoms.info['label']}: element(s) {missing} are not among the model's "
                f"species {species}"
            )
    return molecules, periodic, note


def _notes(module, n_states: int, long_range: list[str], dtype: str, calculator, skip: set[str]) -> list[str]:
    notes = []
    if n_states > 1:
        if getattr(module, "couplings", None) == "both":
            notes.append(
                "couplings: both (a scalar s plus a pseudoscalar p): the adiabatic energies depend on "
                "(s + p)^2, which a reflection turns into (s - p)^2, so they are reflection invariant "
                "only where s or p vanishes; couplings: scalar or pseudoscalar, or a state_parity, are"
            )
        notes.append(
            f"diabatic model with {n_states} states: the checks run on the adiabatic ground state S0; "
            f"symmetry and finite-difference forces of the molecules and the cutoff smoothness also on "
            f"{'S1' if n_states == 2 else f'S1..S{n_states - 1}'}; not checked: far-apart additivity (the adiabatic energies of a "
            "diabatic matrix summed over fragments are not additive) and the couplings"
        )
    if long_range:
        notes.append(
            f"long-range model ({', '.join(long_range)}): far-apart additivity is replaced by the decay "
            "of the long-range interaction (longrange_additivity); isolated atoms and the cutoff "
            "smoothness are checked on the short-range part (the long-range terms reach beyond the "
            "cutoff and the periodic images of an isolated atom)"
            + ("; supercell tolerance 1e-6: Ewald sums are converged to their accuracy" if "coulomb" in
               long_range else "")
        )  # fmt: skip
    if dtype == "float32":
        notes.append(
            "float32: symmetry, supercell, wrapped-position, additivity, isolated-atom checks (and NVE) "
            "evaluate the model in float32, with tolerances for single-precision round-off; the "
            "finite-difference, smoothness and long-range checks need float64 and use the float64 model"
        )
    if calculator is not None:
        notes.append(f"ASE calculator {type(calculator).__name__}: evaluated as it is (dtype not applied)")
    return notes


def check_model(
    model,
    structures: Sequence | None = None,
    *,
    seed: int = 0,
    max_structures: int | None = None,
    tolerances: Mapping[str, float] | None = None,
    skip: Sequence[str] = (),
    nve: bool = False,
    nve_steps: int = 200,
    dtype: str = "float64",
    isolated_energies: Mapping[int, float] | None = None,
) -> ModelCheck:
    """Run every applicable physics check of :mod:`nearsight.testing` on ``model``.

    ``model``: a per-atom energy module, a model file, a ForceField, a NearsightCalculator or any
    ASE calculator (with ``cutoff`` and, without ``structures``, ``species`` attributes).
    ``structures``: ``ase.Atoms`` (periodic ones get the periodic checks, the others the molecular
    ones; ``info['label']`` names them in the results); default: :func:`default_structures`.
    ``max_structures`` keeps the first N of each kind (default all).  ``tolerances`` overrides
    default tolerances by base name (:data:`CHECK_NAMES`), ``skip`` lists base names not to run.
    ``dtype="float32"`` evaluates a nearsight model in single precision (default tolerances
    :data:`FLOAT32_TOLERANCES`).  ``isolated_energies``: expected energies of isolated atoms (eV).
    """
    import numpy as np

    from . import Evaluator, check_isolated_atom, check_nve, check_smoothness, run_all_checks
    from ._common import skipped

    unknown = sorted(set(skip) - set(CHECK_NAMES)) + sorted(set(tolerances or {}) - set(CHECK_NAMES))
    if unknown:
        raise ValueError(f"unknown check name(s) {unknown}; valid: {', '.join(CHECK_NAMES)}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    wrapped = Evaluator.wrap(model)  # a float64 module, or the ASE calculator as it is
    module, calculator = wrapped.module, wrapped.calculator
    exact = _evaluators(module, calculator, dtype)  # equalities: symmetry, locality, isolated atoms
    smooth = _evaluators(module, calculator, "float64") if dtype != "float64" else exact  # derivatives
    ev, n_states, skip_all = exact[0], len(exact), set(skip)
    species = list(ev.species)
    molecules, periodic, note = _frames(structures, species, seed, max_structures)
    long_range = [name for name in ("coulomb", "dispersion") if getattr(module, name, None) is not None]
    notes = ([note] if note else []) + _notes(module, n_states, long_range, dtype, calculator, skip_all)
    tol = dict(FLOAT32_TOLERANCES) if dtype == "float32" and module is not None else {}
    if "coulomb" in long_range:  # Ewald sums are converged to their accuracy, not to round-off
        tol["supercell"] = max(tol.get("supercell", 0.0), 1e-2 if dtype == "float32" else 1e-6)
    tol.update(tolerances or {})
    once = {"isolated_atom", "smoothness", "nve_drift"}  # run once, below
    # the checks that need float64 (finite differences, the decay of the long-range terms)
    in_float64 = {"forces_fd", "stress_fd"} | (
        {"additivity", "longrange_additivity"} if long_range else set()
    )
    if n_states > 1:
        once |= {"additivity", "longrange_additivity"}

    def tol_of(name: str) -> dict:
        return {"tol": tol[name]} if name in tol else {}

    rng = np.random.default_rng(seed)
    results: list = []
    for state in range(n_states):
        suffix = f",S{state}" if n_states > 1 else ""
        for atoms in molecules + periodic if state == 0 else molecules:
            label, kind = atoms.info["label"], "molecule" if not np.any(atoms.pbc) else "periodic"
            if smooth is exact:
                passes = [(exact[state], skip_all | once)]
            else:
                passes = [
                    (exact[state], skip_all | once | in_float64),
                    (smooth[state], skip_all | once | (set(CHECK_NAMES) - in_float64)),
                ]
            got = []
            for evs, skip_here in passes:
                got += run_all_checks(evs, **{kind: atoms}, rng=rng, tolerances=tol, skip=sorted(skip_here))
            got.sort(key=lambda r: CHECK_NAMES.index(r.name.split("[")[0]))
            results += _relabel(got, kind, label + suffix)
            if n_states > 1 and state == 0 and kind == "molecule" and "additivity" not in skip_all:
                results.append(skipped(f"additivity[{label}]", 0.0, "a diabatic model is not additive"))
    # isolated atoms and smoothness: of the short-range part of a long-range model
    if long_range:
        exact, smooth = _evaluators(module.short, None, dtype), _evaluators(module.short, None, "float64")
    where = "[short-range]" if long_range else ""
    elements = species or sorted({int(z) for a in molecules + periodic for z in a.numbers})
    if "isolated_atom" not in skip_all:
        result = check_isolated_atom(
            exact[0], elements, rng=rng, expected=isolated_energies, **tol_of("isolated_atom")
        )
        results.append(dataclasses.replace(result, name=result.name + where))
    if "smoothness" not in skip_all:
        for state, evs in enumerate(smooth):
            result = check_smoothness(evs, elements, rng=rng, **tol_of("smoothness"))
            name = result.name + where + (f"[S{state}]" if state else "")
            results.append(dataclasses.replace(result, name=name))
    if nve and "nve_drift" not in skip_all and molecules + periodic:
        atoms = (molecules + periodic)[0]  # in the dtype asked for: MD runs in it
        result = check_nve(ev, atoms, rng=rng, n_steps=nve_steps, **tol_of("nve_drift"))
        results.append(dataclasses.replace(result, name=f"nve_drift[{atoms.info['label']}]"))
    described = [
        {
            "label": a.info["label"],
            "formula": a.get_chemical_formula(),
            "n_atoms": len(a),
            "periodic": [bool(p) for p in a.pbc],
        }
        for a in molecules + periodic
    ]
    return ModelCheck(results, described, notes)
