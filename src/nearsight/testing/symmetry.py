"""Symmetry checks: rotation, reflection, translation and permutation.

The energy must be invariant; forces transform as vectors (``F -> F Qᵀ``),
stress as a rank-2 tensor (``σ -> Q σ Qᵀ``), and under a permutation the
forces are permuted with the atoms.  Errors are relative: the largest
deviation divided by ``max(|reference|, SCALE_FLOOR)`` (energy against
``max(|E|, Σ|ε_i|)``).  Periodic cells are transformed together with the atoms.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ._common import (
    CheckResult,
    Evaluator,
    as_rng,
    compare,
    make_result,
    random_reflection,
    random_rotation,
    transform,
)


def _orthogonal_check(name, model, atoms, matrices, tol) -> CheckResult:
    ev = Evaluator.wrap(model)
    ref = ev(atoms)
    worst, worst_detail = 0.0, "no transformation"
    for k, q in enumerate(matrices):
        new = ev(transform(atoms, q))
        stress = None if ref.stress is None else q @ ref.stress @ q.T
        err, detail = compare(ref, new, forces=ref.forces @ q.T, stress=stress)
        if err >= worst or not np.isfinite(err):
            worst, worst_detail = err, f"transformation {k} (det {np.linalg.det(q):+.0f}): {detail}"
        if not np.isfinite(err):
            break
    return make_result(name, worst, tol, f"{len(matrices)} transformations; worst: {worst_detail}")


def check_rotation(
    model,
    atoms: Atoms,
    *,
    tol: float = 1e-10,
    rng: np.random.Generator | None = None,
    n_rotations: int = 3,
) -> CheckResult:
    """Random proper rotations (cell rotated too): E invariant, F and σ covariant (relative error)."""
    rng = as_rng(rng)
    mats = [random_rotation(rng) for _ in range(n_rotations)]
    return _orthogonal_check("rotation", model, atoms, mats, tol)


def check_reflection(
    model,
    atoms: Atoms,
    *,
    tol: float = 1e-10,
    rng: np.random.Generator | None = None,
    n_reflections: int = 2,
) -> CheckResult:
    """Random improper orthogonal maps (det -1): E invariant, F and σ covariant (relative error).

    A chiral model (one using a pseudoscalar such as a triple product) passes
    the rotation check and fails this one.
    """
    rng = as_rng(rng)
    mats = [random_reflection(rng) for _ in range(n_reflections)]
    return _orthogonal_check("reflection", model, atoms, mats, tol)


def check_translation(
    model,
    atoms: Atoms,
    *,
    tol: float = 1e-10,
    rng: np.random.Generator | None = None,
    n_translations: int = 3,
    distance: float = 7.3,
) -> CheckResult:
    """Rigid translations by random vectors of length ``distance`` Å (no wrapping):
    E, F and σ invariant (relative error)."""
    rng = as_rng(rng)
    ev = Evaluator.wrap(model)
    ref = ev(atoms)
    worst, worst_detail = 0.0, ""
    for _ in range(n_translations):
        shift = rng.standard_normal(3)
        shift *= distance / np.linalg.norm(shift)
        moved = atoms.copy()
        moved.calc = None
        moved.positions = atoms.positions + shift
        err, detail = compare(ref, ev(moved))
        if err >= worst or not np.isfinite(err):
            worst = err
            worst_detail = f"shift {np.array2string(shift, precision=3)} Å: {detail}"
    return make_result("translation", worst, tol, f"{n_translations} translations; worst: {worst_detail}")


def random_permutation(numbers: np.ndarray, rng: np.random.Generator, same_element_only: bool = True):
    """A random permutation of atom indices, within each element if ``same_element_only``.

    Every group of two or more interchangeable atoms is really permuted (an
    identity draw is replaced by a cyclic shift).
    """
    n = len(numbers)
    groups = (
        [np.arange(n)]
        if not same_element_only
        else [np.flatnonzero(numbers == z) for z in np.unique(numbers)]
    )
    perm = np.arange(n)
    for idx in groups:
        if len(idx) < 2:
            continue
        order = rng.permutation(len(idx))
        if np.all(order == np.arange(len(idx))):
            order = np.roll(order, 1)
        perm[idx] = idx[order]
    return perm


def check_permutation(
    model,
    atoms: Atoms,
    *,
    tol: float = 1e-10,
    rng: np.random.Generator | None = None,
    n_permutations: int = 2,
    same_element_only: bool = True,
) -> CheckResult:
    """Relabel atoms by random permutations: E and σ invariant, forces permuted (relative error).

    With ``same_element_only`` (default) only atoms of the same element swap
    labels (the list of atomic numbers is unchanged); otherwise the whole atom
    order is shuffled.
    """
    rng = as_rng(rng)
    ev = Evaluator.wrap(model)
    ref = ev(atoms)
    worst, worst_detail = 0.0, ""
    n_moved = 0
    for _ in range(n_permutations):
        perm = random_permutation(atoms.numbers, rng, same_element_only)
        n_moved = max(n_moved, int(np.sum(perm != np.arange(len(perm)))))
        new = ev(atoms[perm])
        err, detail = compare(ref, new, forces=ref.forces[perm])
        if err >= worst or not np.isfinite(err):
            worst, worst_detail = err, detail
    note = "" if n_moved else " (no two atoms of one element: permutations are trivial)"
    return make_result(
        "permutation",
        worst,
        tol,
        f"{n_permutations} permutations, up to {n_moved} atoms relabelled{note}; worst: {worst_detail}",
    )
