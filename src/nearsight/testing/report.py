"""Run every applicable check on a model and print a table."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from ase import Atoms

from ._common import CheckResult, Evaluator, as_rng, has_volume
from .derivatives import check_forces, check_stress
from .dynamics import check_nve
from .locality import check_additivity, check_isolated_atom, check_supercell, check_wrapped
from .longrange import check_long_range_additivity, long_range_terms
from .smoothness import check_smoothness
from .symmetry import check_permutation, check_reflection, check_rotation, check_translation

_STRUCTURE_CHECKS = {
    "rotation": check_rotation,
    "reflection": check_reflection,
    "translation": check_translation,
    "permutation": check_permutation,
    "forces_fd": check_forces,
}
_PERIODIC_CHECKS = {"stress_fd": check_stress, "supercell": check_supercell, "wrapped": check_wrapped}


def _kwargs(name: str, tolerances: Mapping[str, float] | None) -> dict:
    return {"tol": float(tolerances[name])} if tolerances and name in tolerances else {}


def _named(result: CheckResult, label: str) -> CheckResult:
    return dataclasses.replace(result, name=f"{result.name}[{label}]")


def run_all_checks(
    model,
    molecule: Atoms | None = None,
    periodic: Atoms | Sequence[Atoms] | None = None,
    *,
    rng: np.random.Generator | int | None = None,
    tolerances: Mapping[str, float] | None = None,
    isolated_energies: Mapping[int, float] | None = None,
    nve: bool = False,
    nve_steps: int = 200,
    nve_temperature_K: float = 300.0,
    nve_timestep_fs: float = 0.5,
    skip: Sequence[str] = (),
) -> list[CheckResult]:
    """Run the checks that apply to the given structures.

    Every structure gets rotation, reflection, translation, permutation and
    finite-difference forces; periodic ones also stress, supercell and
    wrapped positions; the molecule also far-apart additivity: exact beyond the cutoff for a
    short-range model, the decay of the interaction that its Coulomb and/or D3 terms imply for a
    long-range one (:func:`~.longrange.check_long_range_additivity`, with the molecule's
    ``info['charge']``; ``skip`` of either ``"additivity"`` or ``"longrange_additivity"`` skips
    it) (and, with ``nve=True``, an NVE run).  Isolated atoms are checked for every species
    of the model and the cutoff smoothness for every pair of elements present.
    ``tolerances`` overrides a check's default tolerance by base name
    (``{"forces_fd": 1e-5}``); ``skip`` lists base names not to run.
    Result names carry the structure in brackets, e.g. ``rotation[molecule]``.
    """
    rng = as_rng(rng)
    ev = Evaluator.wrap(model)
    if periodic is None:
        periodic_list: list[Atoms] = []
    elif isinstance(periodic, Atoms):
        periodic_list = [periodic]
    else:
        periodic_list = list(periodic)
    structures: list[tuple[str, Atoms]] = []
    if molecule is not None:
        structures.append(("molecule", molecule))
    for k, atoms in enumerate(periodic_list):
        structures.append(("periodic" if len(periodic_list) == 1 else f"periodic{k}", atoms))

    results: list[CheckResult] = []
    for label, atoms in structures:
        checks = dict(_STRUCTURE_CHECKS)
        if np.any(atoms.pbc):
            checks.update(_PERIODIC_CHECKS)
            if not has_volume(atoms):
                checks.pop("stress_fd")
        for name, check in checks.items():
            if name in skip:
                continue
            results.append(_named(check(ev, atoms, rng=rng, **_kwargs(name, tolerances)), label))
    if molecule is not None and not {"additivity", "longrange_additivity"} & set(skip):
        if long_range_terms(ev):
            result = check_long_range_additivity(
                ev, molecule, rng=rng, **_kwargs("longrange_additivity", tolerances)
            )
        else:
            result = check_additivity(ev, molecule, rng=rng, **_kwargs("additivity", tolerances))
        results.append(_named(result, "molecule"))
    elements = sorted({int(z) for _, a in structures for z in a.numbers}) or list(ev.species)
    if "isolated_atom" not in skip and (ev.species or elements):
        results.append(
            check_isolated_atom(
                ev,
                ev.species or elements,
                rng=rng,
                expected=isolated_energies,
                **_kwargs("isolated_atom", tolerances),
            )
        )
    if "smoothness" not in skip and elements:
        results.append(check_smoothness(ev, elements, rng=rng, **_kwargs("smoothness", tolerances)))
    if nve and "nve_drift" not in skip and structures:
        label, atoms = structures[0]
        result = check_nve(
            ev,
            atoms,
            rng=rng,
            n_steps=nve_steps,
            temperature_K=nve_temperature_K,
            timestep_fs=nve_timestep_fs,
            **_kwargs("nve_drift", tolerances),
        )
        results.append(_named(result, label))
    return results


def format_report(results: Sequence[CheckResult], detail_width: int | None = 100) -> str:
    """A plain-text table: check, status, error, tolerance, detail (cut to ``detail_width``)."""
    name_w = max([len("check")] + [len(r.name) for r in results])
    lines = [f"{'check':<{name_w}}  status  {'error':>9}  {'tolerance':>9}  detail"]
    lines.append("-" * len(lines[0]))
    for r in results:
        detail = r.detail.replace("\n", " ")
        if detail_width is not None and len(detail) > detail_width:
            detail = detail[: detail_width - 3] + "..."
        lines.append(f"{r.name:<{name_w}}  {r.status:<6}  {r.error:9.2e}  {r.tolerance:9.2e}  {detail}")
    n_fail = sum(not r.passed for r in results)
    n_skip = sum(r.skipped for r in results)
    lines.append(f"{len(results) - n_fail - n_skip} passed, {n_fail} failed, {n_skip} skipped")
    return "\n".join(lines)
