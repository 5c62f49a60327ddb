"""Locality and periodicity checks: supercell extensivity, wrapped positions,
additivity of far-apart fragments and the isolated atom.

Errors are relative (largest deviation over ``max(|reference|, SCALE_FLOOR)``)
unless a check says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from ase import Atoms

from ._common import (
    SCALE_FLOOR,
    CheckResult,
    Evaluation,
    Evaluator,
    as_rng,
    compare,
    make_result,
    max_abs,
    random_rotation,
    skipped,
)


def check_supercell(
    model,
    atoms: Atoms,
    *,
    tol: float = 1e-10,
    rng: np.random.Generator | None = None,
    repeats: tuple[int, int, int] = (2, 2, 2),
) -> CheckResult:
    """E(n1×n2×n3 supercell) = n1 n2 n3 E(cell), forces tile, stress unchanged (relative error).

    Repeats apply to periodic directions only.  This is the test that a cell
    smaller than twice the cutoff (an atom seeing several images of a
    neighbour, or itself) is handled exactly.
    """
    del rng
    if not np.any(atoms.pbc):
        return skipped("supercell", tol, "structure is not periodic")
    reps = tuple(int(n) if p else 1 for n, p in zip(repeats, atoms.pbc, strict=True))
    m = int(np.prod(reps))
    ev = Evaluator.wrap(model)
    ref = ev(atoms)
    big = atoms.repeat(reps)
    new = ev(big)
    scaled = Evaluation(
        m * ref.energy,
        np.tile(ref.forces, (m, 1)),
        ref.stress,
        np.tile(ref.energies, m) if ref.energies is not None else None,
    )
    err, detail = compare(scaled, new)
    return make_result(
        "supercell", err, tol, f"{reps[0]}×{reps[1]}×{reps[2]} supercell ({len(big)} atoms): {detail}"
    )


def check_wrapped(
    model,
    atoms: Atoms,
    *,
    tol: float = 1e-10,
    rng: np.random.Generator | None = None,
    max_shift: int = 2,
) -> CheckResult:
    """Atoms moved by random lattice vectors (and wrapped into the cell) give identical
    E, F and σ (relative error).  Only periodic directions are shifted."""
    if not np.any(atoms.pbc):
        return skipped("wrapped", tol, "structure is not periodic")
    rng = as_rng(rng)
    ev = Evaluator.wrap(model)
    ref = ev(atoms)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(atoms), 3)) * atoms.pbc
    unwrapped = atoms.copy()
    unwrapped.calc = None
    unwrapped.positions = atoms.positions + shifts @ atoms.cell.array
    wrapped = atoms.copy()
    wrapped.calc = None
    wrapped.wrap()
    e1, d1 = compare(ref, ev(unwrapped))
    e2, d2 = compare(ref, ev(wrapped))
    err = max(e1, e2) if np.isfinite(e1) and np.isfinite(e2) else float("inf")
    return make_result(
        "wrapped", err, tol, f"lattice shifts up to ±{max_shift}: {d1}; wrapped into cell: {d2}"
    )


def _radius(atoms: Atoms) -> float:
    if len(atoms) == 0:
        return 0.0
    c = atoms.positions.mean(axis=0)
    return float(np.linalg.norm(atoms.positions - c, axis=1).max())


def check_additivity(
    model,
    atoms: Atoms,
    other: Atoms | None = None,
    *,
    tol: float = 1e-10,
    rng: np.random.Generator | None = None,
    gap: float = 1.0,
    cutoff: float | None = None,
) -> CheckResult:
    """Two fragments further apart than the cutoff: E(A+B) = E(A) + E(B) and forces are
    those of the separate fragments (relative error).  Exact for short-range models only: a model
    with Coulomb or D3 terms interacts at any distance (:func:`~.longrange.check_long_range_additivity`
    checks how that interaction decays; :func:`~.report.run_all_checks` picks it for such models).

    ``atoms`` (A) and ``other`` (B; default a randomly rotated copy of A) are
    treated as isolated clusters (periodicity switched off) and B is placed
    at least ``cutoff + gap`` Å from every atom of A.
    """
    rng = as_rng(rng)
    ev = Evaluator.wrap(model, cutoff)
    r_cut = ev.need_cutoff()

    def cluster(a: Atoms) -> Atoms:
        a = a.copy()
        a.calc = None
        a.pbc = False
        a.cell = np.zeros((3, 3))
        return a

    frag_a = cluster(atoms)
    if other is None:
        frag_b = cluster(atoms)
        centre = frag_b.positions.mean(axis=0)
        frag_b.positions = (frag_b.positions - centre) @ random_rotation(rng).T + centre
    else:
        frag_b = cluster(other)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    distance = _radius(frag_a) + _radius(frag_b) + r_cut + gap
    frag_b.positions += frag_a.positions.mean(axis=0) - frag_b.positions.mean(axis=0) + distance * direction
    both = frag_a + frag_b
    ea, eb, eab = ev(frag_a, stress=False), ev(frag_b, stress=False), ev(both, stress=False)
    energies = None
    if ea.energies is not None and eb.energies is not None:
        energies = np.concatenate([ea.energies, eb.energies])
    expected = Evaluation(ea.energy + eb.energy, np.concatenate([ea.forces, eb.forces]), None, energies)
    err, detail = compare(expected, eab)
    terms = [name for name in ("coulomb", "dispersion") if getattr(ev.module, name, None) is not None]
    if terms and not err <= tol:
        detail += f"; the model has long-range terms ({', '.join(terms)}): see check_long_range_additivity"
    return make_result(
        "additivity",
        err,
        tol,
        f"fragments of {len(frag_a)} and {len(frag_b)} atoms {distance:.3g} Å apart (centres): "
        f"E(A) + E(B) = {expected.energy:.10g}, E(A+B) = {eab.energy:.10g} eV; {detail}",
    )


def _species_of(atoms, ev: Evaluator) -> list[int]:
    if atoms is None:
        if not ev.species:
            raise ValueError("give the elements to test: the model/calculator lists no species")
        return list(ev.species)
    if isinstance(atoms, Atoms):
        return sorted({int(z) for z in atoms.numbers})
    if isinstance(atoms, (int, np.integer)):
        return [int(atoms)]
    return sorted({int(z) for z in atoms})


def check_isolated_atom(
    model,
    atoms: Atoms | int | Iterable[int] | None = None,
    *,
    tol: float = 1e-10,
    rng: np.random.Generator | None = None,
    expected: Mapping[int, float] | float | None = None,
    cutoff: float | None = None,
) -> CheckResult:
    """A single atom without neighbours has a finite, constant energy and zero force.

    For each element (those of ``atoms``, an atomic number or a list of them;
    default: all of the model's species) the atom is evaluated at random
    positions in vacuum and in a periodic cubic box larger than the cutoff;
    every energy must agree with the first (relative error), forces must be
    zero (counted in eV/Å) and, if ``expected`` (eV, per element or one value)
    is given, the energy must equal it (relative error).
    """
    rng = as_rng(rng)
    ev = Evaluator.wrap(model, cutoff)
    r_cut = ev.need_cutoff()
    species = _species_of(atoms, ev)
    worst, lines = 0.0, []
    for z in species:
        box = 1.5 * r_cut + 1.0
        configs = [Atoms(numbers=[z], positions=[[0.0, 0.0, 0.0]])]
        configs.append(Atoms(numbers=[z], positions=[rng.uniform(-10, 10, 3)]))
        configs.append(Atoms(numbers=[z], positions=[rng.uniform(0, box, 3)], cell=np.eye(3) * box, pbc=True))
        results = [ev(c, stress=False) for c in configs]
        e0 = results[0].energy
        scale = max(abs(e0), SCALE_FLOOR)
        err_e = max(abs(r.energy - e0) / scale for r in results)
        err_f = max(max_abs(r.forces) for r in results)
        err = max(err_e, err_f)
        note = ""
        if expected is not None:
            want = float(expected[z] if isinstance(expected, Mapping) else expected)
            err_x = abs(e0 - want) / max(abs(want), SCALE_FLOOR)
            err = max(err, err_x)
            note = f", expected {want:.10g} (rel. error {err_x:.2e})"
        if not all(np.isfinite([r.energy for r in results])) or not np.isfinite(err):
            err = float("inf")
        worst = max(worst, err)
        lines.append(f"Z={z}: E = {e0:.10g} eV, spread {err_e:.2e} (rel.), max |F| {err_f:.2e} eV/Å{note}")
    return make_result("isolated_atom", worst, tol, "; ".join(lines))
