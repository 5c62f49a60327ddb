"""Derivative checks: forces against finite differences of the energy, stress against finite strain.

Both use the fourth-order central stencil

    f'(x) ≈ [f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)] / (12 h),

whose truncation error is h⁴ f⁽⁵⁾/30 and round-off about 1.5 ε_mach |E| / h.
The default steps (1e-4 Å for positions, 1e-4 for strain) keep both far
below 1e-6 eV/Å (eV/Å³) in float64 even for stiff networks (standardised
features with tiny spread amplify high derivatives, which defeats larger
steps) and for total energies up to ~10⁵ eV.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms

from ._common import CheckResult, Evaluator, as_rng, has_volume, make_result, skipped

_STENCIL = ((-2.0, 1.0), (-1.0, -8.0), (1.0, 8.0), (2.0, -1.0))  # (offset in h, weight / 12)


def central_difference(f: Callable[[float], float], h: float) -> float:
    """Fourth-order central estimate of f'(0)."""
    return sum(w * f(k * h) for k, w in _STENCIL) / (12.0 * h)


def check_forces(
    model,
    atoms: Atoms,
    *,
    tol: float = 1e-6,
    rng: np.random.Generator | None = None,
    step: float = 1e-4,
    max_components: int = 36,
) -> CheckResult:
    """Forces equal −dE/dR from finite differences (absolute error, eV/Å).

    For structures with more than ``max_components`` Cartesian components a
    random subset of (atom, direction) pairs is checked (always including the
    atom with the largest force).
    """
    rng = as_rng(rng)
    ev = Evaluator.wrap(model)
    ref = ev(atoms, stress=False)
    n = len(atoms)
    comps = [(i, a) for i in range(n) for a in range(3)]
    if len(comps) > max_components:
        top = int(np.argmax(np.abs(ref.forces).max(axis=1))) if n else 0
        chosen = rng.choice(len(comps), size=max_components, replace=False)
        picked = {comps[c] for c in chosen}
        picked.update((top, a) for a in range(3))
        comps = sorted(picked)
    work = atoms.copy()
    work.calc = None
    base = atoms.positions.copy()

    def energy_at(i: int, a: int) -> Callable[[float], float]:
        def f(dx: float) -> float:
            pos = base.copy()
            pos[i, a] += dx
            work.positions = pos
            return ev.energy(work)

        return f

    worst, where, fd_worst = -1.0, (0, 0), 0.0
    for i, a in comps:
        fd = -central_difference(energy_at(i, a), step)
        err = abs(fd - ref.forces[i, a])
        if not np.isfinite(err):
            worst, where, fd_worst = float("inf"), (i, a), fd
            break
        if err > worst:
            worst, where, fd_worst = err, (i, a), fd
    i, a = where
    detail = (
        f"{len(comps)} of {3 * n} components, step {step:g} Å; worst atom {i} ({atoms[i].symbol}) "
        f"axis {'xyz'[a]}: model {ref.forces[i, a]:.10g}, finite difference {fd_worst:.10g} eV/Å"
        if comps
        else "no atoms"
    )
    return make_result("forces_fd", max(worst, 0.0), tol, detail)


def strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    """Positions and cell deformed as ``x -> x (I + ε)`` (rows are vectors)."""
    out = atoms.copy()
    out.calc = None
    m = np.eye(3) + eps
    out.set_cell(atoms.cell.array @ m, scale_atoms=False)
    out.positions = atoms.positions @ m
    return out


def check_stress(
    model,
    atoms: Atoms,
    *,
    tol: float = 1e-6,
    rng: np.random.Generator | None = None,
    step: float = 1e-4,
) -> CheckResult:
    """Stress equals (1/V) dE/dε from finite symmetric strains (absolute error, eV/Å³).

    All six independent strain components are probed (a shear strain sets
    ε_ij = ε_ji = t, so dE/dt = 2 V σ_ij) and the full 3×3 model stress is
    compared, which also checks its symmetry.  Skipped without a periodic cell.
    """
    del rng  # deterministic; accepted for a uniform signature
    ev = Evaluator.wrap(model)
    if not has_volume(atoms):
        return skipped("stress_fd", tol, "no periodic cell with a volume")
    ref = ev(atoms, stress=True)
    if ref.stress is None:
        return skipped("stress_fd", tol, "the calculator gives no stress for this cell")
    volume = abs(float(np.linalg.det(atoms.cell.array)))
    fd = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):

            def f(t: float, i: int = i, j: int = j) -> float:
                eps = np.zeros((3, 3))
                eps[i, j] = t
                eps[j, i] = t
                return ev.energy(strained(atoms, eps))

            d = central_difference(f, step)
            fd[i, j] = fd[j, i] = d / volume / (1.0 if i == j else 2.0)
    diff = np.abs(ref.stress - fd)
    err = float(diff.max()) if np.all(np.isfinite(diff)) else float("inf")
    i, j = np.unravel_index(int(np.argmax(np.nan_to_num(diff, nan=np.inf))), (3, 3))
    detail = (
        f"strain step {step:g}, V = {volume:.6g} Å³; worst component {'xyz'[i]}{'xyz'[j]}: "
        f"model {ref.stress[i, j]:.10g}, finite strain {fd[i, j]:.10g} eV/Å³; "
        f"asymmetry of model stress {np.abs(ref.stress - ref.stress.T).max():.2e}"
    )
    return make_result("stress_fd", err, tol, detail)
