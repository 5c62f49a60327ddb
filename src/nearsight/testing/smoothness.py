"""Smoothness at the cutoff: energy and forces continuous as a neighbour crosses r_c.

For every element pair a dimer (and a trimer, so that angular terms see the
crossing too) is evaluated just inside and just outside each cutoff radius of
the model, ``r_c ∓ δ``; the jumps of E and F must vanish (a cutoff function
whose value and slope go to zero gives jumps of O(δ²) and O(δ)).  Beyond the
outer cutoff the dimer energy must be constant and its force zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
from ase import Atoms

from ._common import CheckResult, Evaluator, as_rng, make_result, max_abs

_RADIUS_NAMES = ("cutoff", "r_cut", "r_cut_angular", "r_cut_radial")


def model_radii(ev: Evaluator) -> list[float]:
    """The outer cutoff and any inner cutoff radii (attributes such as ``r_cut_angular``)
    found on the model or its submodules, descending."""
    r_cut = ev.need_cutoff()
    radii = {round(r_cut, 12)}
    if ev.module is not None:
        for sub in ev.module.modules():
            for name in _RADIUS_NAMES:
                value = getattr(sub, name, None)
                if isinstance(value, (int, float)) and 0 < float(value) <= r_cut:
                    radii.add(round(float(value), 12))
    return sorted(radii, reverse=True)


def _pairs(elements: Sequence[int]) -> list[tuple[int, int]]:
    el = sorted(set(int(z) for z in elements))
    return [(a, b) for i, a in enumerate(el) for b in el[i:]]


def _unit_vectors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    d = rng.standard_normal(3)
    d /= np.linalg.norm(d)
    u = rng.standard_normal(3)
    u -= d * (u @ d)
    u /= np.linalg.norm(u)
    return d, u


def check_smoothness(
    model,
    atoms: Atoms | Iterable[int] | None = None,
    *,
    tol: float = 1e-6,
    rng: np.random.Generator | None = None,
    radii: Sequence[float] | None = None,
    delta: float = 1e-9,
    beyond: float = 1.0,
    n_beyond: int = 8,
    bond: float = 1.2,
    cutoff: float | None = None,
) -> CheckResult:
    """Jumps of E (eV) and F (eV/Å) as a neighbour crosses each cutoff radius.

    Elements come from ``atoms`` (a structure or a list of atomic numbers;
    default: the model's species) and every unordered pair is scanned.  The
    error is the largest of: |E(r_c-δ) - E(r_c+δ)|, max|F(r_c-δ) - F(r_c+δ)|
    (dimer and trimer, whose third atom sits ``bond`` Å from the centre at
    60° to the moving one), the spread of the dimer energy over
    ``r_c < r ≤ r_c + beyond`` and the largest dimer force there.
    """
    rng = as_rng(rng)
    ev = Evaluator.wrap(model, cutoff)
    r_cut = ev.need_cutoff()
    if radii is None:
        radii = model_radii(ev)
    if atoms is None:
        elements = ev.species
    elif isinstance(atoms, Atoms):
        elements = atoms.numbers.tolist()
    else:
        elements = list(atoms)
    if not elements:
        raise ValueError("give the elements to scan: the model/calculator lists no species")
    worst, worst_detail = 0.0, ""

    def record(err: float, what: str) -> None:
        nonlocal worst, worst_detail
        if not np.isfinite(err):
            err = float("inf")
        if err > worst or (err == worst and not worst_detail):
            worst, worst_detail = err, what

    for za, zb in _pairs(elements):
        d, u = _unit_vectors(rng)
        third = bond * (0.5 * d + np.sqrt(0.75) * u)

        def dimer(r: float, za: int = za, zb: int = zb, d: np.ndarray = d) -> Atoms:
            return Atoms(numbers=[za, zb], positions=[np.zeros(3), r * d])

        def trimer(r: float, za: int = za, zb: int = zb, d: np.ndarray = d, t: np.ndarray = third) -> Atoms:
            return Atoms(numbers=[za, za, zb], positions=[np.zeros(3), t, r * d])

        builders: list[tuple[str, Callable[[float], Atoms]]] = [("dimer", dimer), ("trimer", trimer)]
        for rc in radii:
            for label, build in builders:
                inside, outside = ev(build(rc - delta), stress=False), ev(build(rc + delta), stress=False)
                jump_e = abs(inside.energy - outside.energy)
                jump_f = max_abs(inside.forces - outside.forces)
                record(jump_e, f"{label} Z=({za},{zb}) at r={rc:g} Å: energy jump {jump_e:.3e} eV")
                record(jump_f, f"{label} Z=({za},{zb}) at r={rc:g} Å: force jump {jump_f:.3e} eV/Å")
        # beyond the outer cutoff: constant energy, zero force
        far = [ev(dimer(r), stress=False) for r in r_cut + np.linspace(delta, beyond, n_beyond)]
        energies = np.array([f.energy for f in far])
        spread = float(energies.max() - energies.min())
        f_far = max(max_abs(f.forces) for f in far)
        record(spread, f"dimer Z=({za},{zb}) beyond r_c: energy varies by {spread:.3e} eV")
        record(f_far, f"dimer Z=({za},{zb}) beyond r_c: force {f_far:.3e} eV/Å")
    detail = (
        f"{len(_pairs(elements))} element pairs, radii {', '.join(f'{r:g}' for r in radii)} Å, "
        f"δ = {delta:g} Å; worst: {worst_detail or 'all zero'}"
    )
    return make_result("smoothness", worst, tol, detail)
